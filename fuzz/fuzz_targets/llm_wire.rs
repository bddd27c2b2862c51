//! The OpenAI and Anthropic wire decoding of `toolgraph-llm` on arbitrary bytes: each input
//! is read four ways — as a plain response body and as a server-sent-event stream, for each
//! provider — exactly as `LlmClient::complete` reads a reply once HTTP has delivered it.
//!
//! The decoding is private to its crate and its only public entry is `LlmClient::complete`,
//! which needs an HTTP server; so the `wire` module and the SSE decoder are compiled into this
//! target from their source files (`#[path]`), with the crate-level modules they import
//! (`config`, `error`, `turn`, all public) re-exported under the same names. The loop below
//! mirrors `LlmClient::read_stream` and the plain branch of `complete`.
//!
//! Checked: nothing panics; every completed call is reported once, in order, with an object
//! as arguments and a non-empty id; every call the model began is either
//! a tool call or a malformed one; the text deltas add up to the text; one finish is
//! reported, and it is the turn's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgraph_core::ToolSpec;

#[allow(dead_code, unused_imports)]
mod config {
    pub(crate) use toolgraph_llm::config::*;
}
#[allow(dead_code, unused_imports)]
mod error {
    pub(crate) use toolgraph_llm::error::*;
}
#[allow(dead_code, unused_imports)]
mod turn {
    pub(crate) use toolgraph_llm::turn::*;
}
#[allow(dead_code)]
#[path = "../../crates/toolgraph-llm/src/sse.rs"]
mod sse;
#[allow(dead_code)]
#[path = "../../crates/toolgraph-llm/src/wire/mod.rs"]
mod wire;

use error::LlmError;
use sse::SseDecoder;
use turn::{StreamEvent, Turn};
use wire::{NameMap, TurnBuilder, anthropic, openai};

const MAX_EVENT_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
enum Provider {
    OpenAi,
    Anthropic,
}

/// A plain reply body, as `complete` reads it.
fn plain(
    provider: Provider,
    body: &[u8],
    names: &NameMap,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<Turn, LlmError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| LlmError::Protocol(format!("response is not JSON: {e}")))?;
    let mut builder = TurnBuilder::new(names);
    match provider {
        Provider::OpenAi => openai::read_response(&value, &mut builder, on_event)?,
        Provider::Anthropic => anthropic::read_response(&value, &mut builder, on_event)?,
    }
    Ok(build(provider, builder, on_event))
}

/// A streamed reply arriving in `chunk`-byte pieces, as `read_stream` reads it.
fn streamed(
    provider: Provider,
    body: &[u8],
    chunk: usize,
    names: &NameMap,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Result<Turn, LlmError> {
    let mut builder = TurnBuilder::new(names);
    let mut decoder = SseDecoder::new(MAX_EVENT_BYTES);
    let mut pieces = body.chunks(chunk);
    let mut ended = false;
    while !ended {
        let (events, last) = match pieces.next() {
            Some(piece) => (decoder.feed(piece), false),
            None => (decoder.finish(), true),
        };
        let events = events.map_err(|_| LlmError::Protocol("event too large".into()))?;
        for data in events {
            if data.trim() == "[DONE]" {
                ended = true;
                break;
            }
            if data.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data)
                .map_err(|e| LlmError::Protocol(format!("stream event is not JSON ({e})")))?;
            match provider {
                Provider::OpenAi => openai::read_chunk(&value, &mut builder, on_event)?,
                Provider::Anthropic => {
                    anthropic::read_event(&value, &mut builder, on_event)?;
                    if value.get("type").and_then(Value::as_str) == Some("message_stop") {
                        ended = true;
                        break;
                    }
                }
            }
        }
        ended |= last;
    }
    Ok(build(provider, builder, on_event))
}

fn build(
    provider: Provider,
    builder: TurnBuilder<'_>,
    on_event: &mut dyn FnMut(StreamEvent),
) -> Turn {
    match provider {
        Provider::OpenAi => builder.build(on_event, openai::assistant_message),
        Provider::Anthropic => builder.build(on_event, anthropic::assistant_message),
    }
}

/// How many calls the assistant message carries back to the model.
fn calls_in_message(provider: Provider, message: &Value) -> usize {
    match provider {
        Provider::OpenAi => message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        Provider::Anthropic => {
            message
                .get("content")
                .and_then(Value::as_array)
                .map_or(0, |blocks| {
                    blocks
                        .iter()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                        .count()
                })
        }
    }
}

fn check(
    provider: Provider,
    read: impl FnOnce(&mut dyn FnMut(StreamEvent)) -> Result<Turn, LlmError>,
) {
    let mut events = Vec::new();
    let Ok(turn) = read(&mut |e| events.push(e)) else {
        return;
    };
    let mut text = String::new();
    let mut completed = Vec::new();
    let mut finishes = Vec::new();
    for e in events {
        match e {
            StreamEvent::TextDelta(t) => {
                assert!(!t.is_empty(), "an empty text delta");
                text.push_str(&t);
            }
            StreamEvent::ToolCallComplete(c) => completed.push(c),
            StreamEvent::Finish(f) => finishes.push(f),
        }
    }
    assert_eq!(text, turn.text, "the deltas add up to the text");
    assert_eq!(
        completed, turn.tool_calls,
        "each completed call is reported once, in order"
    );
    assert_eq!(
        finishes,
        std::slice::from_ref(&turn.finish_reason),
        "one finish, the turn's"
    );
    for c in &turn.tool_calls {
        assert!(!c.id.is_empty(), "a call without an id");
        assert!(
            c.arguments.is_object(),
            "arguments of {} are not an object",
            c.id
        );
    }
    assert_eq!(
        turn.tool_calls.len() + turn.malformed.len(),
        calls_in_message(provider, &turn.assistant_message),
        "every call begun is a tool call or a malformed one ({provider:?})"
    );
    assert!(serde_json::to_string(&turn.assistant_message).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let tools = [
        ToolSpec::new("echo"),
        ToolSpec::new("fs.read_file"),
        ToolSpec::new("a.b.c"),
    ];
    let names = NameMap::new(&tools);
    let chunk = 1 + data.len() % 13;
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        check(provider, |on| plain(provider, data, &names, on));
        check(provider, |on| streamed(provider, data, chunk, &names, on));
    }
});
