//! The batch parser on arbitrary bytes: `parse_tool_calls_str`, what `toolgraph run` and
//! every front end call on a batch.
//!
//! It must never panic. A batch it accepts must come back unchanged when written out again in
//! every accepted shape — a bare array, `{"tool_calls": [...]}`, an OpenAI assistant message,
//! a chat-completion response, an Anthropic message — and each call keeps its extensions
//! (`depends_on`, `priority`, `timeout_ms`). Ids are unique and arguments are objects.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use toolgraph_core::{ToolCall, parse_tool_calls, parse_tool_calls_str};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(calls) = parse_tool_calls_str(&text) else {
        return;
    };
    let mut ids = HashSet::new();
    for call in &calls {
        assert!(!call.id.is_empty(), "an accepted call has an id");
        assert!(
            ids.insert(call.id.as_str()),
            "duplicate id {:?} accepted",
            call.id
        );
        assert!(!call.name.is_empty(), "an accepted call names its tool");
        assert!(
            call.arguments.is_object(),
            "accepted arguments are an object: {:?}",
            call.arguments
        );
    }
    for shape in shapes(&calls) {
        let again = parse_tool_calls(&shape)
            .unwrap_or_else(|e| panic!("a batch we accepted, written as {shape}, is refused: {e}"));
        assert_eq!(again, calls, "round trip through {shape}");
        let text = shape.to_string();
        assert_eq!(
            parse_tool_calls_str(&text).ok(),
            Some(again),
            "parsing text and value agree"
        );
    }
});

/// The calls, written out in every accepted wire shape.
fn shapes(calls: &[ToolCall]) -> Vec<Value> {
    let openai: Vec<Value> = calls.iter().map(openai_call).collect();
    let mut out = vec![
        Value::Array(openai.clone()),
        json!({"tool_calls": openai.clone()}),
        json!({"role": "assistant", "content": null, "tool_calls": openai.clone()}),
        json!({"id": "chatcmpl-fuzz", "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": openai}}]}),
    ];
    let blocks: Vec<Value> = std::iter::once(json!({"type": "text", "text": "working on it"}))
        .chain(calls.iter().map(anthropic_block))
        .collect();
    out.push(json!({"role": "assistant", "content": blocks}));
    out
}

fn extensions(call: &ToolCall, into: &mut Value) {
    if !call.depends_on.is_empty() {
        into["depends_on"] = json!(call.depends_on);
    }
    if call.priority != 0 {
        into["priority"] = json!(call.priority);
    }
    if let Some(ms) = call.timeout_ms {
        into["timeout_ms"] = json!(ms);
    }
}

fn openai_call(call: &ToolCall) -> Value {
    let mut v = json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    });
    extensions(call, &mut v);
    v
}

fn anthropic_block(call: &ToolCall) -> Value {
    let mut v =
        json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments});
    extensions(call, &mut v);
    v
}
