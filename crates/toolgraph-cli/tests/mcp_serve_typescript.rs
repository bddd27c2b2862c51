//! `toolgraph mcp-serve` driven by the official MCP TypeScript SDK client
//! (`@modelcontextprotocol/sdk`, pinned in `tests/mcp_client/package-lock.json`):
//! `tests/mcp_client/client.mjs` connects over stdio (`StdioClientTransport`), lists the
//! tools, runs a dependent batch and a malformed one through `run_batch`, and prints what it
//! saw as JSON. Skips when node or the npm install is missing
//! (`npm ci --prefix crates/toolgraph-cli/tests/mcp_client`; `cargo test-all` runs it).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use toolgraph_test_support::{isolated, skip};

#[test]
fn the_typescript_sdk_client_lists_tools_and_runs_batches_over_stdio() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client");
    if Command::new("node").arg("--version").output().is_err() {
        return skip("node is not installed");
    }
    if !project
        .join("node_modules/@modelcontextprotocol/sdk")
        .is_dir()
    {
        return skip(
            "the MCP TypeScript SDK is not installed: run npm ci --prefix crates/toolgraph-cli/tests/mcp_client",
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("runs.db").display());
    // The client spawns the binary with its own environment: the isolated one.
    let mut node = isolated("node");
    node.current_dir(&project)
        .arg("client.mjs")
        .arg(env!("CARGO_BIN_EXE_toolgraph"))
        .args(["--db", &db]);
    let out = node.output().expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client.mjs failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.mjs prints JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    assert_eq!(seen["server"]["name"], "toolgraph");
    let tools = seen["tools"].as_array().expect("tools");
    assert_eq!(tools[0]["name"], "run_batch");
    let echo = tools
        .iter()
        .find(|t| t["name"] == "echo")
        .expect("echo listed");
    assert_eq!(echo["annotations"]["readOnlyHint"], json!(true));
    assert_eq!(echo["annotations"]["idempotentHint"], json!(true));

    let batch = &seen["batch"];
    assert_eq!(batch["isError"], json!(false), "{batch}");
    let answer = &batch["structuredContent"];
    let results = answer["results"].as_array().expect("results");
    let ids: Vec<&str> = results.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "s1", "s2"]);
    assert_eq!(results[1]["output"], json!({"said": "sdk!"}));
    let (s1, e1) = (&results[2]["started_ms"], &results[2]["finished_ms"]);
    let (s2, e2) = (&results[3]["started_ms"], &results[3]["finished_ms"]);
    let f = |v: &Value| v.as_f64().expect("a time");
    assert!(
        f(s1) < f(e2) && f(s2) < f(e1),
        "the sleeps overlap: {results:?}"
    );
    assert!(answer["execution_id"].is_string(), "recorded: {answer}");
    assert!(answer["speedup"].as_f64().is_some());
    let text = batch["content"][0]["text"].as_str().expect("text content");
    assert!(text.contains("makespan"), "{text}");

    let malformed = &seen["malformed"];
    assert_eq!(malformed["isError"], json!(true), "{malformed}");
    let text = malformed["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("call y") && text.contains("no_such_tool"),
        "{text}"
    );
}
