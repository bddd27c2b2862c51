//! Anthropic Messages: the request body, the plain response and the stream events.
//!
//! Pure data transformation; never panics on a server's reply.

use serde_json::{Value, json};
use toolgraph_core::ToolSpec;

use super::{TurnBuilder, wire_name};
use crate::config::LlmConfig;
use crate::error::LlmError;
use crate::turn::{Conversation, FinishReason, StreamEvent};

/// The `anthropic-version` header value.
pub(crate) const VERSION: &str = "2023-06-01";

/// The request body.
pub(crate) fn request(
    config: &LlmConfig,
    conversation: &Conversation,
    tools: &[ToolSpec],
) -> Value {
    let mut body = json!({
        "model": config.model,
        "max_tokens": config.max_tokens,
        "messages": conversation.messages,
    });
    if let Some(system) = &conversation.system {
        body["system"] = json!(system);
    }
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                json!({
                    "name": wire_name(&t.name),
                    "description": t.description,
                    "input_schema": t.parameters,
                })
            })
            .collect();
    }
    if config.stream {
        body["stream"] = json!(true);
    }
    body
}

/// Reads a whole (non-streamed) response into `builder`.
pub(crate) fn read_response(
    body: &Value,
    builder: &mut TurnBuilder<'_>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<(), LlmError> {
    let blocks = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Protocol("response has no content array".into()))?;
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    builder.text(text, on_event);
                }
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                builder.call_with_input(i as u64, id, name, input);
            }
            _ => {}
        }
    }
    if let Some(reason) = body.get("stop_reason").and_then(Value::as_str) {
        builder.finish(FinishReason::from_wire(reason));
    }
    read_usage(body.get("usage"), builder);
    Ok(())
}

fn read_usage(usage: Option<&Value>, builder: &mut TurnBuilder<'_>) {
    if let Some(usage) = usage.filter(|u| u.is_object()) {
        builder.usage_input(usage.get("input_tokens").and_then(Value::as_u64));
        builder.usage_output(usage.get("output_tokens").and_then(Value::as_u64));
    }
}

/// Reads one stream event (the `data:` payload; its `type` names the event).
pub(crate) fn read_event(
    event: &Value,
    builder: &mut TurnBuilder<'_>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<(), LlmError> {
    let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
    match event.get("type").and_then(Value::as_str) {
        Some("message_start") => read_usage(event.pointer("/message/usage"), builder),
        Some("content_block_start") => {
            let block = event.get("content_block");
            let kind = block.and_then(|b| b.get("type")).and_then(Value::as_str);
            match kind {
                Some("tool_use") => {
                    let b = block.unwrap_or(&Value::Null);
                    builder.call_delta(
                        index,
                        b.get("id").and_then(Value::as_str),
                        b.get("name").and_then(Value::as_str),
                        None,
                    );
                }
                Some("text") => {
                    if let Some(text) = block.and_then(|b| b.get("text")).and_then(Value::as_str) {
                        builder.text(text, on_event);
                    }
                }
                _ => {}
            }
        }
        Some("content_block_delta") => {
            let delta = event.get("delta").unwrap_or(&Value::Null);
            match delta.get("type").and_then(Value::as_str) {
                Some("text_delta") => {
                    if let Some(text) = delta.get("text").and_then(Value::as_str) {
                        builder.text(text, on_event);
                    }
                }
                Some("input_json_delta") => {
                    let fragment = delta.get("partial_json").and_then(Value::as_str);
                    if builder.has_call(index) {
                        builder.call_delta(index, None, None, fragment);
                    }
                }
                _ => {}
            }
        }
        Some("content_block_stop") => builder.complete_index(index, on_event),
        Some("message_delta") => {
            if let Some(reason) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                builder.finish(FinishReason::from_wire(reason));
            }
            if let Some(n) = event
                .pointer("/usage/output_tokens")
                .and_then(Value::as_u64)
            {
                builder.usage_output(Some(n));
            }
            if let Some(n) = event.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                builder.usage_input(Some(n));
            }
        }
        Some("error") => {
            let message = event
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("stream error")
                .to_owned();
            builder.finish(FinishReason::Error(message));
        }
        _ => {}
    }
    Ok(())
}

/// The assistant message to append to the conversation.
pub(crate) fn assistant_message(text: &str, calls: &[(String, String, String, Value)]) -> Value {
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (id, name, _, input) in calls {
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    json!({"role": "assistant", "content": blocks})
}
