//! `toolgraph mcp-serve`: toolgraph as an MCP server — the configured tools (built-ins and
//! the MCP servers' tools, proxied) and `run_batch`, over standard input/output (default)
//! or streamable HTTP (`--bind`), through toolgraph-mcp's `serve` over the runtime's
//! [`toolgraph::RuntimeHost`].
//!
//! Approvals: the MCP client asks its user before each tool call (`run_batch` shows the
//! whole batch); `[approvals]` / `--approval` apply on top as for `run` (`auto` without
//! them), with no person to ask: a call the policy says to ask about is denied, its result
//! saying how to allow it.
//!
//! On stdio, standard output carries JSON-RPC only: the start line and every log go to
//! standard error. The server ends when the client closes standard input, and — HTTP and
//! stdio alike — at the first Ctrl-C / SIGTERM: running calls are cancelled and recorded
//! `cancelled` (resumable), then the process exits 0. A second signal exits at once.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use toolgraph::RuntimeHost;
use toolgraph::mcp::serve::{self, HttpServer, ToolHost};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::input::ExecutorFlags;
use crate::out::errln;

#[derive(Args)]
pub struct McpServeArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of standard input/output, e.g.
    /// 127.0.0.1:7879 (port 0 picks a free one). Loopback only: the endpoint has no
    /// authentication.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    #[command(flatten)]
    pub approval: crate::input::ApprovalFlag,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: McpServeArgs, stop: CancellationToken) -> Result<Outcome> {
    let config = args.flags.config()?;
    // The address is checked (and taken) before any tool server or store is started.
    let http = match args.bind {
        Some(addr) => Some(HttpServer::bind(addr).await?),
        None => None,
    };
    let mut runtime = toolgraph::Runtime::start(&config).await?;
    // The client asks its user before each tool call (run_batch with the whole batch in its
    // arguments); toolgraph's own policy applies on top, with no person to ask: `ask` is
    // refused, saying how to allow it.
    let policy = args
        .approval
        .policy(&config, toolgraph_core::ApprovalPreset::Auto);
    if !policy.is_auto() {
        runtime = runtime.with_approvals(policy, None);
    }
    let host = RuntimeHost::new(runtime.clone());
    let store = runtime.store().map_or_else(
        || "no store: recording is off".to_owned(),
        |s| format!("store {}", s.describe()),
    );
    let tools = host.tools().len();
    let shared: Arc<dyn ToolHost> = Arc::new(host.clone());
    let served = match http {
        Some(http) => {
            errln!(
                "toolgraph mcp-serve: streamable HTTP at {} ({tools} tools and run_batch, {store})",
                http.url()
            );
            http.run(shared, stop.clone()).await
        }
        None => {
            errln!(
                "toolgraph mcp-serve: MCP on standard input/output ({tools} tools and run_batch, {store})"
            );
            serve::serve_stdio(shared, stop.clone()).await
        }
    };
    // Whatever ended the server, what still runs is cancelled and its record finished.
    stop.cancel();
    let finished = host.finish(toolgraph::FINISH_WAIT).await;
    runtime.settle().await;
    served?;
    if !finished {
        errln!(
            "toolgraph mcp-serve: some executions were still being recorded after {} s",
            toolgraph::FINISH_WAIT.as_secs()
        );
    }
    errln!("toolgraph mcp-serve: stopped");
    Ok(Outcome::Success)
}
