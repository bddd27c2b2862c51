//! Shared by the integration tests: where the reference MCP servers are (installed by
//! `npm ci --prefix crates/toolgraph-mcp/tests/servers`), configurations that start them,
//! and a skip rule for machines without them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toolgraph_core::{ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_mcp::McpServerConfig;

/// The entry script of a reference server (`mcp-server-everything`, …), or None after
/// printing why the test is skipped. Panics instead when `TOOLGRAPH_REQUIRE_SERVICES` is set.
pub fn server_script(bin: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers/node_modules/.bin")
        .join(bin);
    if path.exists() {
        return Some(path);
    }
    toolgraph_test_support::skip(&format!(
        "{bin} is not installed: run npm ci --prefix crates/toolgraph-mcp/tests/servers"
    ));
    None
}

fn node(name: &str, script: PathBuf, args: &[&str]) -> McpServerConfig {
    let mut all = vec![script.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    McpServerConfig {
        name: name.into(),
        command: Some("node".into()),
        args: all,
        ..Default::default()
    }
}

/// `@modelcontextprotocol/server-everything` over stdio.
pub fn everything(name: &str) -> Option<McpServerConfig> {
    Some(node(name, server_script("mcp-server-everything")?, &[]))
}

/// `@modelcontextprotocol/server-filesystem` over stdio, allowed to touch `root` only.
pub fn filesystem(name: &str, root: &Path) -> Option<McpServerConfig> {
    let root = root.to_string_lossy().into_owned();
    Some(node(
        name,
        server_script("mcp-server-filesystem")?,
        &[&root],
    ))
}

/// `@modelcontextprotocol/server-memory` over stdio, keeping its graph in `file`.
pub fn memory(name: &str, file: &Path) -> Option<McpServerConfig> {
    let mut config = node(name, server_script("mcp-server-memory")?, &[]);
    config.env.insert(
        "MEMORY_FILE_PATH".into(),
        file.to_string_lossy().into_owned(),
    );
    Some(config)
}

/// An executor over `tools` with `config`.
pub fn executor(tools: ToolSet, config: ParallelExecutorConfig) -> Arc<ParallelExecutor> {
    Arc::new(ParallelExecutor::new(tools, config).expect("valid config"))
}

/// Runs a batch that must be valid input.
pub async fn run(executor: &ParallelExecutor, calls: Vec<ToolCall>) -> ParallelExecutionResult {
    executor.execute_parallel(calls).await.expect("valid batch")
}

/// The `[started, finished]` interval of a call that ran.
pub fn interval(result: &ParallelExecutionResult, id: &str) -> (f64, f64) {
    let call = result.get(id).expect("call present");
    (
        call.started_ms.expect("started"),
        call.finished_ms.expect("finished"),
    )
}
