//! `toolgraph serve`: the HTTP service (toolgraph-serve) over one runtime — the configured
//! tools and limits, one store for every execution — until SIGTERM or Ctrl-C.
//!
//! The first signal shuts down gracefully (no new executions, the running ones get the
//! grace period, then are cancelled and recorded `cancelled`, resumable) and the process
//! exits 0: the service stopped as asked. A second signal exits at once, 130 / 143.

use std::net::SocketAddr;

use anyhow::Result;
use clap::Args;
use toolgraph_engine::CancellationToken;
use toolgraph_serve::{AppState, ServeOptions, Server};

use crate::Outcome;
use crate::input::ExecutorFlags;
use crate::out::{errln, outln};

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen, IP:PORT (default 127.0.0.1:7878; port 0 picks a free one). An
    /// address outside loopback needs a token.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// The bearer token every request but /healthz must carry. Prefer TOOLGRAPH_SERVE_TOKEN:
    /// other users of the machine can read a flag in the process list.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: ServeArgs, stop: CancellationToken) -> Result<Outcome> {
    let mut config = args.flags.config()?;
    if let Some(bind) = args.bind {
        config.serve.bind = bind;
    }
    if let Some(token) = args.token {
        config.serve.token = Some(token);
    }
    let options = ServeOptions::from_config(&config.serve);
    let grace = options.shutdown_grace;
    // The address is checked (and taken) before any tool server or store is started.
    let server = Server::bind(options).await?;
    let runtime = toolgraph::Runtime::start(&config).await?;
    let store = runtime.store().map_or_else(
        || "no store: recording is off".to_owned(),
        |s| format!("store {}", s.describe()),
    );
    let tools = runtime.executor().tools().len();
    let cluster = runtime.cluster().map_or_else(String::new, |c| {
        format!(
            "; calls run on the workers of namespace {} at {}",
            c.options().namespace.as_str(),
            c.options().url
        )
    });
    // No person by default: `[approvals]` opts in, and its questions wait at /v1/approvals.
    let approvals = config.approvals.clone();
    let state = AppState::new(runtime.clone())
        .with_approvals(approvals.or_preset(toolgraph_core::ApprovalPreset::Auto));
    outln!(
        "toolgraph serve: listening on http://{} ({store}, {tools} tools{cluster})",
        server.local_addr()
    )?;
    let shutdown = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    let report = server.run(state, shutdown).await;
    runtime.settle().await;
    let report = report?;
    errln!(
        "toolgraph serve: stopped ({} execution(s) were running; grace {} ms){}",
        report.running_at_signal,
        grace.as_millis(),
        if report.connections_dropped {
            "; connections still open were closed"
        } else {
            ""
        }
    );
    Ok(Outcome::Success)
}
