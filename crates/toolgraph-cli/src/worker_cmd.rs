//! `toolgraph worker`: serve this configuration's tools to a NATS JetStream cluster until
//! SIGTERM / Ctrl-C; `toolgraph workers`: the live workers of a namespace.
//!
//! A worker builds its tools exactly as `run` does (built-ins, file tools in their sandbox,
//! `http_fetch`, `shell`, MCP servers, overrides) and never dispatches: it *is* where calls
//! run. The first signal stops it gracefully (no new calls; running ones get the drain
//! time; exit 0); a second exits at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use comfy_table::{CellAlignment, Table, presets::NOTHING};
use toolgraph::Config;
use toolgraph::cluster::{ClusterOptions, Worker, WorkerOptions};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::input::{ClusterFlags, ConfigFlag, ToolFlags};
use crate::out::outln;

/// Where the cluster is, over the configuration file.
#[derive(Args, Clone, Debug, Default)]
pub struct NatsFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub config: ConfigFlag,
}

impl NatsFlags {
    fn config(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        self.cluster.apply(&mut config);
        Ok(config)
    }

    fn options(config: &Config) -> Result<ClusterOptions> {
        toolgraph::cluster_options(config)?.context(
            "no NATS server: give --nats nats://HOST:PORT (or [cluster] nats_url, TOOLGRAPH_NATS_URL)",
        )
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    #[command(flatten)]
    pub tools: ToolFlags,
    /// Calls run at once, at most.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Serve only these tools (comma-separated; default: every tool of the configuration).
    #[arg(long = "tools", value_name = "A,B,…", value_delimiter = ',')]
    pub only: Vec<String>,
    /// This worker's id (default: HOST-PID-RANDOM).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// On stop, how long running calls may take to finish, in ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub drain_ms: u64,
    /// Append one JSON line per call start and end to FILE (what ran where, and when).
    #[arg(long, value_name = "FILE")]
    pub call_log: Option<PathBuf>,
}

pub async fn worker(args: WorkerArgs, stop: CancellationToken) -> Result<Outcome> {
    let mut config = args.nats.config()?;
    args.tools.apply(&mut config)?;
    let cluster = NatsFlags::options(&config)?;
    let (tools, _servers) = toolgraph::build_tools(&config).await?;
    let mut options = WorkerOptions::new(cluster.clone());
    options.id = args.id;
    options.concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    options.tools = (!args.only.is_empty()).then_some(args.only);
    options.drain = Duration::from_millis(args.drain_ms);
    options.call_log = args.call_log;
    let worker = Worker::start(options, tools).await?;
    outln!(
        "toolgraph worker {}: serving {} tool(s) ({}) from {} namespace {}, {} at once",
        worker.id(),
        worker.served().len(),
        worker.served().join(", "),
        cluster.url,
        cluster.namespace.as_str(),
        args.concurrency
    )?;
    let id = worker.id().to_owned();
    let summary = worker.run(stop).await?;
    let left = if summary.abandoned > 0 {
        format!(
            "; {} call(s) still running after the drain time were left to redelivery",
            summary.abandoned
        )
    } else {
        String::new()
    };
    outln!(
        "toolgraph worker {id}: stopped after answering {} call(s){left}",
        summary.completed
    )?;
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Print the workers as JSON.
    #[arg(long)]
    pub json: bool,
    /// Delete the namespace instead: its call stream (calls still queued are lost) and its
    /// worker bucket. Stop its workers first: they receive nothing more until restarted.
    #[arg(long)]
    pub delete_namespace: bool,
}

/// Right-aligns the numeric columns; the first column's left padding off.
fn align(table: &mut Table, numeric: std::ops::RangeInclusive<usize>) {
    for (n, column) in table.column_iter_mut().enumerate() {
        if numeric.contains(&n) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        if n == 0 {
            column.set_padding((0, 1));
        }
    }
}

pub async fn workers(args: WorkersArgs) -> Result<Outcome> {
    let config = args.nats.config()?;
    let cluster = NatsFlags::options(&config)?;
    if args.delete_namespace {
        toolgraph::cluster::delete_namespace(&cluster).await?;
        outln!(
            "deleted namespace {} at {}",
            cluster.namespace.as_str(),
            cluster.url
        )?;
        return Ok(Outcome::Success);
    }
    let state = toolgraph::cluster::cluster_state(&cluster).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&state)?)?;
        return Ok(Outcome::Success);
    }
    let workers = &state.workers;
    if workers.is_empty() {
        outln!(
            "no live worker in namespace {} at {}",
            cluster.namespace.as_str(),
            cluster.url
        )?;
    } else {
        let mut table = Table::new();
        table.load_preset(NOTHING);
        table.set_header(vec![
            "worker",
            "host",
            "pid",
            "load",
            "done",
            "heartbeat",
            "tools",
        ]);
        for w in workers {
            let i = &w.info;
            table.add_row(vec![
                i.id.clone(),
                i.host.clone(),
                i.pid.to_string(),
                format!("{}/{}", i.in_flight, i.concurrency),
                i.completed.to_string(),
                format!("{:.1} s ago", w.heartbeat_age_ms as f64 / 1000.0),
                i.tools.join(", "),
            ]);
        }
        align(&mut table, 2..=5);
        outln!("{}", table.trim_fmt())?;
        outln!(
            "{} worker(s) in namespace {} at {}",
            workers.len(),
            cluster.namespace.as_str(),
            cluster.url
        )?;
    }
    if !state.tools.is_empty() {
        let mut table = Table::new();
        table.load_preset(NOTHING);
        table.set_header(vec!["tool", "queued", "taken", "limit"]);
        for t in &state.tools {
            table.add_row(vec![
                t.tool.clone(),
                t.queued.to_string(),
                t.taken.to_string(),
                t.limit.map_or_else(|| "-".to_owned(), |l| l.to_string()),
            ]);
        }
        align(&mut table, 1..=3);
        outln!("\n{}", table.trim_fmt())?;
    }
    Ok(Outcome::Success)
}
