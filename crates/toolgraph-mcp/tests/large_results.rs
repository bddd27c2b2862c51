//! A result larger than the biggest message a server may send fails its own call at once,
//! with an error naming the size and the limit — it is not dropped while the call waits
//! forever — and the session goes on serving the other calls.

mod common;

use std::time::Duration;

use serde_json::json;
use toolgraph_core::ToolError;
use toolgraph_mcp::{McpServer, McpServerConfig};

/// A tiny stdio MCP server (no SDK): tool `big` answers with `bytes` bytes of text. Like
/// the TypeScript SDK, it writes the response's `id` after the result.
const BIG_SERVER: &str = r#"
const rl = require("readline").createInterface({ input: process.stdin });
const reply = (id, result) => process.stdout.write(JSON.stringify({ result, jsonrpc: "2.0", id }) + "\n");
rl.on("line", (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === "initialize") {
    reply(m.id, { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "big", version: "1" } });
  } else if (m.method === "tools/list") {
    reply(m.id, { tools: [{ name: "big", inputSchema: { type: "object", properties: { bytes: { type: "integer" } } } }] });
  } else if (m.method === "tools/call") {
    reply(m.id, { content: [{ type: "text", text: "x".repeat(m.params.arguments.bytes) }] });
  } else {
    process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: "no such method" } }) + "\n");
  }
});
"#;

fn big_server() -> Option<McpServerConfig> {
    // Only node is needed; the reference servers' presence says node is set up.
    common::server_script("mcp-server-everything")?;
    Some(McpServerConfig {
        name: "big".into(),
        command: Some("node".into()),
        args: vec!["-e".into(), BIG_SERVER.into()],
        ..Default::default()
    })
}

fn arguments(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Calls `tool`, failing the test instead of waiting forever.
async fn call(
    server: &McpServer,
    tool: &str,
    args: serde_json::Value,
) -> Result<serde_json::Value, ToolError> {
    let call = server.call_tool(tool, arguments(args));
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call ends instead of hanging")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_default_16_mib_fails_its_call_instead_of_hanging() {
    let Some(config) = big_server() else {
        return;
    };
    let server = McpServer::connect(&config).await.expect("starts");
    let error = call(&server, "big", json!({"bytes": 17 << 20}))
        .await
        .expect_err("too large");
    println!("{}", error.message);
    assert!(!error.is_transient(), "{}", error.message);
    assert!(
        error.message.contains("16777216 bytes") && error.message.contains("max_frame_bytes"),
        "names the limit and its key: {}",
        error.message
    );
    assert_eq!(
        call(&server, "big", json!({"bytes": 3})).await,
        Ok(json!("xxx")),
        "the session still serves calls"
    );
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_a_configured_max_frame_bytes_fails_only_its_own_call() {
    let Some(mut config) = common::everything("ev") else {
        return;
    };
    // Room for the tool list (about 8 KB), not for a 40 KB echo.
    config.max_frame_bytes = Some(16 << 10);
    let server = McpServer::connect(&config).await.expect("starts");
    let big = call(&server, "echo", json!({"message": "y".repeat(40_000)}));
    let small = call(&server, "echo", json!({"message": "small"}));
    // Both in flight on the one session: only the big one fails.
    let (big, small) = tokio::join!(big, small);
    assert_eq!(small, Ok(json!("Echo: small")));
    let error = big.expect_err("over the limit");
    println!("{}", error.message);
    assert!(!error.is_transient(), "{}", error.message);
    assert!(
        error
            .message
            .starts_with("MCP server ev: its answer is 400")
            && error.message.contains("over the limit of 16384 bytes"),
        "{}",
        error.message
    );
    assert_eq!(server.pid().map(|_| ()), Some(()), "still the same session");
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_max_frame_bytes_lets_a_larger_result_through() {
    let Some(mut config) = big_server() else {
        return;
    };
    config.max_frame_bytes = Some(32 << 20);
    let server = McpServer::connect(&config).await.expect("starts");
    let out = call(&server, "big", json!({"bytes": 17 << 20}))
        .await
        .expect("within the raised limit");
    assert_eq!(out.as_str().map(str::len), Some(17 << 20));
    server.close().await;
}
