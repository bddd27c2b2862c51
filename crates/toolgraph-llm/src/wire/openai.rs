//! OpenAI Chat Completions: the request body, the plain response and the stream chunks.
//!
//! Pure data transformation; never panics on a server's reply.

use serde_json::{Value, json};
use toolgraph_core::ToolSpec;

use super::{TurnBuilder, wire_name};
use crate::config::LlmConfig;
use crate::error::LlmError;
use crate::turn::{Conversation, FinishReason, StreamEvent};

/// The request body.
pub(crate) fn request(
    config: &LlmConfig,
    conversation: &Conversation,
    tools: &[ToolSpec],
) -> Value {
    let mut messages = Vec::with_capacity(conversation.messages.len() + 1);
    if let Some(system) = &conversation.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.extend(conversation.messages.iter().cloned());
    let mut body = json!({
        "model": config.model,
        "messages": messages,
        "max_tokens": config.max_tokens,
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": wire_name(&t.name),
                    "description": t.description,
                    "parameters": t.parameters,
                }})
            })
            .collect();
    }
    if config.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Reads a whole (non-streamed) response into `builder`.
pub(crate) fn read_response(
    body: &Value,
    builder: &mut TurnBuilder<'_>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<(), LlmError> {
    let choice = body
        .pointer("/choices/0")
        .ok_or_else(|| LlmError::Protocol("response has no choices[0]".into()))?;
    let message = choice
        .get("message")
        .ok_or_else(|| LlmError::Protocol("choices[0] has no message".into()))?;
    if let Some(text) = message.get("content").and_then(Value::as_str) {
        builder.text(text, on_event);
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (i, call) in calls.iter().enumerate() {
            let arguments = match call.pointer("/function/arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            builder.call_delta(
                i as u64,
                call.get("id").and_then(Value::as_str),
                call.pointer("/function/name").and_then(Value::as_str),
                Some(&arguments),
            );
        }
    }
    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
        builder.finish(FinishReason::from_wire(reason));
    }
    read_usage(body, builder);
    Ok(())
}

fn read_usage(body: &Value, builder: &mut TurnBuilder<'_>) {
    if let Some(usage) = body.get("usage").filter(|u| u.is_object()) {
        builder.usage_input(usage.get("prompt_tokens").and_then(Value::as_u64));
        builder.usage_output(usage.get("completion_tokens").and_then(Value::as_u64));
    }
}

/// Reads one stream chunk (`data:` payload other than `[DONE]`).
pub(crate) fn read_chunk(
    chunk: &Value,
    builder: &mut TurnBuilder<'_>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<(), LlmError> {
    if let Some(err) = chunk.get("error") {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_owned);
        builder.finish(FinishReason::Error(message));
        return Ok(());
    }
    read_usage(chunk, builder);
    let Some(choice) = chunk.pointer("/choices/0") else {
        return Ok(());
    };
    let delta = choice.get("delta");
    if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
        builder.text(text, on_event);
    }
    if let Some(calls) = delta
        .and_then(|d| d.get("tool_calls"))
        .and_then(Value::as_array)
    {
        for call in calls {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if !builder.has_call(index) {
                // A new call starts: the ones before it are whole.
                builder.complete_others(index, on_event);
            }
            builder.call_delta(
                index,
                call.get("id").and_then(Value::as_str),
                call.pointer("/function/name").and_then(Value::as_str),
                call.pointer("/function/arguments").and_then(Value::as_str),
            );
        }
    }
    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
        builder.finish(FinishReason::from_wire(reason));
    }
    Ok(())
}

/// The assistant message to append to the conversation.
pub(crate) fn assistant_message(text: &str, calls: &[(String, String, String, Value)]) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { json!(text) },
    });
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .map(|(id, name, args, _)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
            })
            .collect();
    }
    message
}
