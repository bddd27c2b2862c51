//! What an MCP server's answer to `tools/call` becomes: arbitrary bytes read the way rmcp
//! reads a message (a JSON-RPC message from the server, or the bare `CallToolResult`), then
//! `toolgraph_mcp::output_of`, the mapping every MCP call's result goes through.
//!
//! Checked: nothing panics; an error result is a permanent tool error with a message that
//! is not blank; otherwise the output is the structured content when there is one, else the
//! text (blocks joined by newlines) when every block is text, else one JSON element per block.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp::model::{CallToolResult, ServerJsonRpcMessage, ServerResult};
use serde_json::Value;
use toolgraph_mcp::output_of;

fn check(result: CallToolResult) {
    let is_error = result.is_error == Some(true);
    let structured = result.structured_content.clone();
    let texts: Option<Vec<String>> = result
        .content
        .iter()
        .map(|b| b.as_text().map(|t| t.text.clone()))
        .collect();
    let blocks = result.content.len();
    match output_of(result) {
        Err(e) => {
            assert!(is_error, "a result that is not an error failed: {e}");
            assert!(!e.is_transient(), "an error result is permanent");
            assert!(!e.message.trim().is_empty(), "an error without a message");
        }
        Ok(output) => {
            assert!(!is_error, "an error result became an output");
            match (structured, texts) {
                (Some(s), _) => assert_eq!(output, s, "structured content wins"),
                (None, Some(t)) => assert_eq!(output, Value::String(t.join("\n"))),
                (None, None) => assert_eq!(
                    output.as_array().map(Vec::len),
                    Some(blocks),
                    "one element per block"
                ),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(result) = serde_json::from_slice::<CallToolResult>(data) {
        check(result);
    }
    if let Ok(ServerJsonRpcMessage::Response(response)) =
        serde_json::from_slice::<ServerJsonRpcMessage>(data)
        && let ServerResult::CallToolResult(result) = response.result
    {
        check(result);
    }
});
