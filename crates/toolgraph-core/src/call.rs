//! Tool calls as an LLM emits them, and the parser for every wire shape we accept.
//!
//! Accepted inputs: a bare array of calls; `{"tool_calls": [...]}`; an OpenAI assistant
//! message; a whole chat-completion response (`choices[0].message.tool_calls`); an Anthropic
//! message whose `content` holds `tool_use` blocks; LangChain's tool calls (`args` for
//! `arguments`). Each call may carry the extensions
//! `depends_on`, `priority` and `timeout_ms` beside `function`.
//!
//! Parsing reports every problem at once, each naming the call id; it never panics.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{InputError, Problem};

/// One tool call: what to run, with which arguments, after what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the model gave the call; unique within a batch.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, a JSON object; strings may hold `${call_id...}` references.
    pub arguments: Value,
    /// Ids of calls that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Higher runs first among ready calls.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// A timeout for this call alone, overriding the tool's and the executor's; 0 = none
    /// (as `default_timeout_ms = 0` means).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl ToolCall {
    /// A call of tool `name` with `arguments` (an object).
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
            depends_on: Vec::new(),
            priority: 0,
            timeout_ms: None,
        }
    }

    /// Adds explicit dependencies.
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    /// Sets a per-call timeout.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }
}

/// Parses tool calls from text holding any accepted wire shape.
pub fn parse_tool_calls_str(text: &str) -> Result<Vec<ToolCall>, InputError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InputError::single(Problem::input(format!("not valid JSON: {e}"))))?;
    parse_tool_calls(&value)
}

/// Parses tool calls from any accepted wire shape (see the module docs).
pub fn parse_tool_calls(input: &Value) -> Result<Vec<ToolCall>, InputError> {
    let items = locate_calls(input).map_err(|m| InputError::single(Problem::input(m)))?;
    let mut problems = Vec::new();
    let mut calls = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    for (position, item) in items.into_iter().enumerate() {
        // Keyed as `parse_one` reads ids: a number is its text, so `1` and `"1"` collide.
        let id = match item.get("id") {
            Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            Some(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            _ => None,
        };
        if let Some(id) = id
            && !seen.insert(id.clone())
        {
            problems.push(Problem::call(position, &*id, "duplicate call id"));
        }
        match parse_one(position, item) {
            Ok(call) => calls.push(call),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(calls)
    } else {
        Err(InputError { problems })
    }
}

/// Finds the list of call objects inside any accepted wrapper.
fn locate_calls(input: &Value) -> Result<Vec<&Value>, String> {
    match input {
        Value::Array(items) => Ok(items.iter().collect()),
        Value::Object(obj) => {
            if let Some(tc) = obj.get("tool_calls") {
                return match tc {
                    Value::Array(items) => Ok(items.iter().collect()),
                    Value::Null => Ok(Vec::new()),
                    _ => Err("\"tool_calls\" is not an array".into()),
                };
            }
            if let Some(choices) = obj.get("choices") {
                let message = choices
                    .get(0)
                    .and_then(|c| c.get("message"))
                    .ok_or("\"choices\" has no first element with a \"message\"")?;
                return locate_calls(message);
            }
            if let Some(Value::Array(blocks)) = obj.get("content") {
                return Ok(blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                    .collect());
            }
            if obj.get("role").is_some() {
                // A message without tool calls: nothing to run.
                return Ok(Vec::new());
            }
            Err(
                "expected an array of tool calls, {\"tool_calls\": [...]}, an assistant \
                 message, a chat-completion response or an Anthropic message"
                    .into(),
            )
        }
        _ => Err("expected a JSON array or object of tool calls".into()),
    }
}

fn parse_one(position: usize, item: &Value) -> Result<ToolCall, Vec<Problem>> {
    let Some(obj) = item.as_object() else {
        return Err(vec![Problem::position(
            position,
            "a tool call must be a JSON object",
        )]);
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(vec![Problem::position(
                position,
                "\"id\" must be a non-empty string",
            )]);
        }
        None => return Err(vec![Problem::position(position, "missing \"id\"")]),
    };
    let mut problems = Vec::new();
    let anthropic = obj.get("type").and_then(Value::as_str) == Some("tool_use");
    let function = obj.get("function").and_then(Value::as_object);
    let source: &Map<String, Value> = function.unwrap_or(obj);

    let name = match source.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            problems.push(Problem::call(position, &id, "missing tool name"));
            String::new()
        }
    };
    // LangChain's tool calls (`{"name", "args", "id", "type": "tool_call"}`) name them `args`.
    let raw_args = if anthropic {
        obj.get("input")
    } else {
        source.get("arguments").or_else(|| source.get("args"))
    };
    let arguments = match raw_args {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem::call(
                    position,
                    &id,
                    format!("arguments are not valid JSON: {e}"),
                ));
                // Reported already: a placeholder, so the check below adds nothing.
                Value::Object(Map::new())
            }
        },
        Some(v) => v.clone(),
    };
    if !arguments.is_object() {
        problems.push(Problem::call(
            position,
            &id,
            format!(
                "arguments must be a JSON object, got {}",
                json_type(&arguments)
            ),
        ));
    }
    let depends_on = match obj.get("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(ids)) => {
            let mut out = Vec::with_capacity(ids.len());
            for dep in ids {
                match dep.as_str() {
                    Some(s) => out.push(s.to_owned()),
                    None => problems.push(Problem::call(
                        position,
                        &id,
                        "\"depends_on\" must hold call ids (strings)",
                    )),
                }
            }
            out
        }
        Some(_) => {
            problems.push(Problem::call(
                position,
                &id,
                "\"depends_on\" must be an array of call ids",
            ));
            Vec::new()
        }
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().unwrap_or_else(|| {
            problems.push(Problem::call(
                position,
                &id,
                "\"priority\" must be an integer",
            ));
            0
        }),
    };
    let timeout_ms = match obj.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(ms) => Some(ms),
            None => {
                problems.push(Problem::call(
                    position,
                    &id,
                    "\"timeout_ms\" must be a non-negative integer",
                ));
                None
            }
        },
    };
    if problems.is_empty() {
        Ok(ToolCall {
            id,
            name,
            arguments,
            depends_on,
            priority,
            timeout_ms,
        })
    } else {
        Err(problems)
    }
}

/// The JSON type of a value, in words, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(calls: &[ToolCall]) -> Vec<&str> {
        calls.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn accepts_every_wrapper() {
        let call = json!({"id": "a", "type": "function", "function": {"name": "echo", "arguments": "{\"x\":1}"}});
        let shapes = [
            json!([call.clone()]),
            json!({"tool_calls": [call.clone()]}),
            json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [call.clone()]}}]}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "a", "name": "echo", "input": {"x": 1}}]}),
            json!([{"name": "echo", "args": {"x": 1}, "id": "a", "type": "tool_call"}]),
        ];
        for shape in shapes {
            let calls = parse_tool_calls(&shape).expect("shape accepted");
            assert_eq!(ids(&calls), ["a"], "{shape}");
            assert_eq!(calls[0].name, "echo");
            assert_eq!(calls[0].arguments, json!({"x": 1}));
        }
    }

    #[test]
    fn reads_extensions_and_object_arguments() {
        let calls = parse_tool_calls(&json!([
            {"id": "a", "function": {"name": "echo", "arguments": {"k": "v"}}, "priority": 5, "timeout_ms": 10},
            {"id": "b", "function": {"name": "echo", "arguments": ""}, "depends_on": ["a"]},
        ]))
        .expect("valid");
        assert_eq!(calls[0].priority, 5);
        assert_eq!(calls[0].timeout_ms, Some(10));
        assert_eq!(calls[0].arguments, json!({"k": "v"}));
        assert_eq!(calls[1].depends_on, ["a"]);
        assert_eq!(calls[1].arguments, json!({}));
    }

    #[test]
    fn reports_every_problem_with_the_call_id() {
        let err = parse_tool_calls(&json!([
            {"id": "a", "function": {"name": "echo", "arguments": "{oops"}},
            {"id": "b", "function": {"name": "echo", "arguments": "[1,2]"}},
            {"function": {"name": "echo", "arguments": "{}"}},
            {"id": "a", "function": {"name": "echo", "arguments": "{}"}},
            {"id": "c", "function": {"arguments": "{}"}, "depends_on": 3},
        ]))
        .expect_err("rejected");
        let text = err.to_string();
        assert!(
            text.contains("call a: arguments are not valid JSON"),
            "{text}"
        );
        assert!(
            text.contains("call b: arguments must be a JSON object, got an array"),
            "{text}"
        );
        assert!(text.contains("call #2: missing \"id\""), "{text}");
        assert!(text.contains("call a: duplicate call id"), "{text}");
        assert!(text.contains("call c: missing tool name"), "{text}");
        assert!(
            text.contains("call c: \"depends_on\" must be an array"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 6);
    }

    #[test]
    fn numeric_ids_collide_with_their_text_and_null_arguments_are_refused() {
        let err = parse_tool_calls(&json!([
            {"id": 1, "function": {"name": "echo"}},
            {"id": "1", "function": {"name": "echo"}},
            {"id": "n", "function": {"name": "echo", "arguments": "null"}},
        ]))
        .expect_err("rejected");
        let text = err.to_string();
        assert!(text.contains("call 1: duplicate call id"), "{text}");
        assert!(
            text.contains("call n: arguments must be a JSON object, got null"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 2);
    }

    #[test]
    fn rejects_non_call_input() {
        assert!(parse_tool_calls(&json!(42)).is_err());
        assert!(parse_tool_calls(&json!({"foo": 1})).is_err());
        assert!(parse_tool_calls_str("{nope").is_err());
        assert_eq!(
            parse_tool_calls(&json!({"role": "assistant", "content": "done"})).map(|c| c.len()),
            Ok(0)
        );
    }
}
