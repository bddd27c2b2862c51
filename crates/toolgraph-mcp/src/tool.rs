//! [`McpTool`]: one tool of an MCP server as a [`toolgraph_core::Tool`] — its spec (named
//! `<server>.<tool>`, the server's input schema as parameters), the resources a call
//! touches, and the conversion of an MCP result into a toolgraph output or error.
//!
//! Every call reads the server's resource key ([`crate::server_resource`]), so a
//! per-resource limit caps the server; a Writer writes that key instead, and a tool with
//! resource mappings touches the mapped keys. The tool holds no lock and spawns nothing:
//! dropping a call's future drops rmcp's request future, which sends the server
//! `notifications/cancelled`. It must never panic on a result a server sends.

use std::fmt;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value};
use toolgraph_core::{CallContext, ResourceAccess, Tool, ToolError, ToolFuture, ToolSpec};

use crate::classify::{Classification, Hints, classify};
use crate::config::{McpToolOverride, ResourceMapping, SafetyClass};
use crate::server::McpServer;
use crate::server_resource;

/// One tool of a connected MCP server.
pub struct McpTool {
    server: Arc<McpServer>,
    remote_name: String,
    spec: ToolSpec,
    class: SafetyClass,
    why: String,
    hints: Hints,
    mappings: Vec<ResourceMapping>,
    server_key: String,
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.spec.name)
            .field("class", &self.class)
            .field("why", &self.why)
            .finish()
    }
}

impl McpTool {
    pub(crate) fn new(
        server: Arc<McpServer>,
        tool: &rmcp::model::Tool,
        overrides: Option<&McpToolOverride>,
    ) -> McpTool {
        let hints = Hints::of(tool.annotations.as_ref());
        let Classification {
            class,
            idempotent,
            max_concurrency,
            resources,
            why,
        } = classify(hints, overrides);
        let description = tool
            .description
            .as_deref()
            .or(tool.title.as_deref())
            .unwrap_or_default();
        let mut spec = ToolSpec::new(format!("{}.{}", server.name(), tool.name))
            .description(description)
            .parameters(Value::Object((*tool.input_schema).clone()));
        spec.traits.parallel_safe = class != SafetyClass::Exclusive;
        spec.traits.approval_class = Some(class.approval_class());
        spec.traits.idempotent = idempotent;
        spec.traits.max_concurrency = max_concurrency;
        let server_key = server_resource(server.name());
        McpTool {
            server,
            remote_name: tool.name.to_string(),
            spec,
            class,
            why,
            hints: hints.unwrap_or_default(),
            mappings: resources,
            server_key,
        }
    }

    /// The safety class the annotations (or the operator) gave the tool.
    pub fn class(&self) -> SafetyClass {
        self.class
    }

    /// Why it has that class and retry policy, e.g. `readOnlyHint=true`,
    /// `no hints: conservative`, `operator override: class=writer`.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// The annotation hints its server sent, as sent (each `None` when absent).
    pub fn hints(&self) -> Hints {
        self.hints
    }

    /// The tool's name on its server (without the namespace).
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }

    /// The server the tool belongs to.
    pub fn server(&self) -> &Arc<McpServer> {
        &self.server
    }
}

impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        if self.mappings.is_empty() {
            return vec![match self.class {
                SafetyClass::Writer => ResourceAccess::write(&self.server_key),
                SafetyClass::Reader | SafetyClass::Exclusive => {
                    ResourceAccess::read(&self.server_key)
                }
            }];
        }
        let mut out = vec![ResourceAccess::read(&self.server_key)];
        for m in &self.mappings {
            let values = match args.get(&m.arg) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(v) => vec![v],
            };
            if values.is_empty() {
                // Unknown target: order the call against everything on this server.
                out[0] = ResourceAccess::write(&self.server_key);
                continue;
            }
            for v in values {
                let name = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push(ResourceAccess {
                    key: format!("{}:{name}", m.kind),
                    access: m.access,
                });
            }
        }
        out
    }

    fn traits_reason(&self) -> Option<String> {
        Some(format!("{}: {}", self.class, self.why))
    }

    fn call<'a>(&'a self, args: std::sync::Arc<Value>, _ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let arguments = match std::sync::Arc::unwrap_or_clone(args) {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                other => {
                    return Err(ToolError::permanent(format!(
                        "arguments of {} must be a JSON object, got {other}",
                        self.spec.name
                    )));
                }
            };
            self.server.call_tool(&self.remote_name, arguments).await
        })
    }
}

/// An MCP result as a call's output: an error result is a permanent tool error with the
/// content's text; otherwise the structured content when present, else the text (one JSON
/// string) when every block is text, else the blocks as a JSON array.
pub fn output_of(result: CallToolResult) -> Result<Value, ToolError> {
    if result.is_error == Some(true) {
        let mut text = text_of(&result.content).unwrap_or_default();
        if text.trim().is_empty() {
            text = match &result.structured_content {
                Some(v) => v.to_string(),
                None => "the tool reported an error without a message".into(),
            };
        }
        return Err(ToolError::permanent(text));
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    if let Some(text) = text_of(&result.content) {
        return Ok(Value::String(text));
    }
    serde_json::to_value(&result.content)
        .map_err(|e| ToolError::permanent(format!("cannot represent the tool's content: {e}")))
}

/// The blocks' text joined by newlines, when every block is text.
fn text_of(content: &[ContentBlock]) -> Option<String> {
    let texts: Option<Vec<&str>> = content
        .iter()
        .map(|b| b.as_text().map(|t| t.text.as_str()))
        .collect();
    texts.map(|t| t.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(value: Value) -> CallToolResult {
        serde_json::from_value(value).expect("a CallToolResult")
    }

    #[test]
    fn error_results_are_permanent_tool_errors_with_their_text() {
        let r =
            result(json!({"content": [{"type": "text", "text": "no such file"}], "isError": true}));
        let e = output_of(r).expect_err("error result");
        assert_eq!(e, ToolError::permanent("no such file"));
        let r = result(json!({"content": [], "isError": true}));
        assert!(
            output_of(r)
                .expect_err("error")
                .message
                .contains("without a message")
        );
    }

    #[test]
    fn structured_content_wins_then_text_then_blocks() {
        let r = result(json!({
            "content": [{"type": "text", "text": "{\"n\":3}"}],
            "structuredContent": {"n": 3}
        }));
        assert_eq!(output_of(r), Ok(json!({"n": 3})));
        let r = result(json!({"content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}
        ]}));
        assert_eq!(output_of(r), Ok(json!("a\nb")));
        let r = result(json!({"content": [
            {"type": "text", "text": "a"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"}
        ]}));
        let out = output_of(r).expect("ok");
        assert_eq!(out[0]["text"], "a");
        assert_eq!(out[1]["type"], "image");
        assert_eq!(out[1]["mimeType"], "image/png");
    }
}
