//! The two wire protocols: request bodies, plain responses and stream events, assembled
//! into a [`Turn`] by one [`TurnBuilder`].
//!
//! Pure data transformation: no I/O, no clock. It must never panic on what a server sends —
//! a malformed reply becomes an [`LlmError::Protocol`] or a malformed call in the turn.

pub(crate) mod anthropic;
pub(crate) mod openai;

use std::collections::HashMap;

use serde_json::{Map, Value};
use toolgraph_core::{ToolCall, ToolSpec};

use crate::turn::{FinishReason, StreamEvent, Turn, Usage};

/// Tool names as sent to the model and back: `.` (not allowed in function names) travels
/// as `__`.
#[derive(Debug, Default)]
pub(crate) struct NameMap {
    to_real: HashMap<String, String>,
}

impl NameMap {
    pub(crate) fn new(tools: &[ToolSpec]) -> Self {
        NameMap {
            to_real: tools
                .iter()
                .map(|t| (wire_name(&t.name), t.name.clone()))
                .collect(),
        }
    }

    /// The registered name for a name the model used.
    pub(crate) fn real(&self, wire: &str) -> String {
        match self.to_real.get(wire) {
            Some(real) => real.clone(),
            None => wire.to_owned(),
        }
    }
}

/// The name a tool travels under.
pub(crate) fn wire_name(name: &str) -> String {
    name.replace('.', "__")
}

/// One tool call as it arrives (whole or in fragments).
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
    /// Arguments that arrived as a JSON value (Anthropic plain responses).
    input: Option<Value>,
    done: bool,
}

/// Assembles a turn from a plain response or from stream events, reporting
/// [`StreamEvent`]s as parts complete.
pub(crate) struct TurnBuilder<'a> {
    names: &'a NameMap,
    text: String,
    calls: Vec<PartialCall>,
    /// Stream index (OpenAI `index`, Anthropic content-block index) → position in `calls`.
    by_index: HashMap<u64, usize>,
    finish: Option<FinishReason>,
    usage: Usage,
    tool_calls: Vec<ToolCall>,
    malformed: Vec<(String, String, String)>,
}

impl<'a> TurnBuilder<'a> {
    pub(crate) fn new(names: &'a NameMap) -> Self {
        TurnBuilder {
            names,
            text: String::new(),
            calls: Vec::new(),
            by_index: HashMap::new(),
            finish: None,
            usage: Usage::default(),
            tool_calls: Vec::new(),
            malformed: Vec::new(),
        }
    }

    pub(crate) fn text(&mut self, delta: &str, on_event: &mut dyn FnMut(StreamEvent)) {
        if delta.is_empty() {
            return;
        }
        self.text.push_str(delta);
        on_event(StreamEvent::TextDelta(delta.to_owned()));
    }

    /// Starts (or continues) the call at stream `index`; returns its position.
    fn call_at(&mut self, index: u64) -> usize {
        if let Some(&pos) = self.by_index.get(&index) {
            return pos;
        }
        self.calls.push(PartialCall::default());
        let pos = self.calls.len() - 1;
        self.by_index.insert(index, pos);
        pos
    }

    /// Adds fragments to the call at stream `index`.
    pub(crate) fn call_delta(
        &mut self,
        index: u64,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) {
        let pos = self.call_at(index);
        let call = &mut self.calls[pos];
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            call.id = id.to_owned();
        }
        if let Some(name) = name {
            call.name.push_str(name);
        }
        if let Some(args) = arguments {
            call.arguments.push_str(args);
        }
    }

    /// A call that arrived whole with a JSON `input` (Anthropic).
    pub(crate) fn call_with_input(&mut self, index: u64, id: &str, name: &str, input: Value) {
        let pos = self.call_at(index);
        let call = &mut self.calls[pos];
        call.id = id.to_owned();
        call.name = name.to_owned();
        call.input = Some(input);
    }

    /// True when the call at stream `index` has been started.
    pub(crate) fn has_call(&self, index: u64) -> bool {
        self.by_index.contains_key(&index)
    }

    /// Finishes every started call not finished yet, in order.
    pub(crate) fn complete_all(&mut self, on_event: &mut dyn FnMut(StreamEvent)) {
        for pos in 0..self.calls.len() {
            self.complete_pos(pos, on_event);
        }
    }

    /// Finishes the calls at stream indexes other than `except` whose arguments already
    /// parse as JSON: a call whose fragments are still arriving (calls interleaved by
    /// index) stays open until they do or the stream ends.
    pub(crate) fn complete_others(&mut self, except: u64, on_event: &mut dyn FnMut(StreamEvent)) {
        let keep = self.by_index.get(&except).copied();
        for pos in 0..self.calls.len() {
            let whole = self
                .calls
                .get(pos)
                .is_some_and(|c| !c.done && serde_json::from_str::<Value>(&c.arguments).is_ok());
            if Some(pos) != keep && whole {
                self.complete_pos(pos, on_event);
            }
        }
    }

    /// Finishes the call at stream `index`: its arguments are whole.
    pub(crate) fn complete_index(&mut self, index: u64, on_event: &mut dyn FnMut(StreamEvent)) {
        if let Some(&pos) = self.by_index.get(&index) {
            self.complete_pos(pos, on_event);
        }
    }

    fn complete_pos(&mut self, pos: usize, on_event: &mut dyn FnMut(StreamEvent)) {
        let Some(call) = self.calls.get_mut(pos) else {
            return;
        };
        if call.done {
            return;
        }
        call.done = true;
        if call.id.is_empty() {
            call.id = format!("call_{pos}");
        }
        let name = self.names.real(&call.name);
        let parsed = match call.input.take() {
            Some(v) => Ok(v),
            None if call.arguments.trim().is_empty() => Ok(Value::Object(Map::new())),
            None => serde_json::from_str::<Value>(&call.arguments)
                .map_err(|e| format!("arguments are not valid JSON: {e}")),
        };
        let parsed = parsed.and_then(|v| match v {
            Value::Object(_) => Ok(v),
            other => Err(format!(
                "arguments must be a JSON object, got {}",
                toolgraph_core::call::json_type(&other)
            )),
        });
        match parsed {
            Ok(mut args) => {
                // Not part of any tool's schema: the call's explicit dependencies.
                let depends_on = take_depends_on(&mut args);
                if call.arguments.is_empty() {
                    call.arguments = args.to_string();
                }
                let tool_call = ToolCall::new(call.id.clone(), name, args).depends_on(depends_on);
                on_event(StreamEvent::ToolCallComplete(tool_call.clone()));
                self.tool_calls.push(tool_call);
            }
            Err(error) => self.malformed.push((call.id.clone(), name, error)),
        }
    }

    pub(crate) fn finish(&mut self, reason: FinishReason) {
        self.finish = Some(reason);
    }

    pub(crate) fn usage_input(&mut self, n: Option<u64>) {
        if let Some(n) = n {
            self.usage.input_tokens = n;
        }
    }

    pub(crate) fn usage_output(&mut self, n: Option<u64>) {
        if let Some(n) = n {
            self.usage.output_tokens = n;
        }
    }

    /// The turn, with the assistant message built by `assistant` from the text and the
    /// calls `(wire id, wire name, raw arguments, parsed input or {})`.
    pub(crate) fn build(
        mut self,
        on_event: &mut dyn FnMut(StreamEvent),
        assistant: impl FnOnce(&str, &[(String, String, String, Value)]) -> Value,
    ) -> Turn {
        let default = if self.calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        let finish = self.finish.take().unwrap_or(default);
        if finish.is_cut_short() {
            // Say so before the last calls complete, so nobody starts them.
            on_event(StreamEvent::Finish(finish.clone()));
            self.complete_all(on_event);
        } else {
            self.complete_all(on_event);
            on_event(StreamEvent::Finish(finish.clone()));
        }
        let wire_calls: Vec<(String, String, String, Value)> = self
            .calls
            .iter()
            .map(|c| {
                let input = serde_json::from_str::<Value>(&c.arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::Object(Map::new()));
                (c.id.clone(), c.name.clone(), c.arguments.clone(), input)
            })
            .collect();
        let assistant_message = assistant(&self.text, &wire_calls);
        Turn {
            text: self.text,
            tool_calls: self.tool_calls,
            malformed: self.malformed,
            finish_reason: finish,
            usage: self.usage,
            model_ms: 0.0,
            assistant_message,
        }
    }
}

/// Removes a `depends_on` list (ids) from a call's arguments, if the model put one there.
fn take_depends_on(args: &mut Value) -> Vec<String> {
    let Some(obj) = args.as_object_mut() else {
        return Vec::new();
    };
    match obj.get("depends_on") {
        Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => {}
        Some(Value::String(_)) => {}
        _ => return Vec::new(),
    }
    match obj.remove("depends_on") {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s],
        _ => Vec::new(),
    }
}

/// The error message inside an error body, or the body itself (shortened).
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let msg = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str);
        if let Some(m) = msg {
            return m.to_owned();
        }
    }
    let trimmed = body.trim();
    if trimmed.chars().count() > 500 {
        let cut: String = trimmed.chars().take(500).collect();
        format!("{cut}…")
    } else if trimmed.is_empty() {
        "(empty body)".to_owned()
    } else {
        trimmed.to_owned()
    }
}
