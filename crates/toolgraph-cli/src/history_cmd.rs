//! `toolgraph history`, `show`, `stats` and `prune`: reading the store.

use anyhow::{Context, Result};
use clap::Args;

use crate::Outcome;
use crate::input::{StoreFlags, StoreLocation};
use crate::out::outln;
use crate::run_cmd::{print_result, write_timeline};

#[derive(Args)]
pub struct HistoryArgs {
    /// How many executions, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn history(args: HistoryArgs) -> Result<Outcome> {
    let rows = args.store.store().await?.history(args.limit).await?;
    if args.store.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(Outcome::Success);
    }
    outln!(
        "{:<36}  {:<19}  {:<11}  {:>6}  {:>7}  {:>11}  {:>8}",
        "id",
        "created (UTC)",
        "status",
        "calls",
        "success",
        "makespan",
        "speedup"
    )?;
    let now = toolgraph_store::now_ms();
    let timeout = toolgraph::LEASE_TIMEOUT.as_millis() as i64;
    for r in rows {
        // A running execution whose owner stopped beating crashed: `resume` finishes it.
        let status = if r.is_abandoned(now, timeout) {
            "interrupted"
        } else {
            r.status.as_str()
        };
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.created_at.max(0) as u64),
        );
        let when = when
            .to_string()
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned();
        outln!(
            "{:<36}  {:<19}  {:<11}  {:>6}  {:>7}  {:>11}  {:>8}",
            r.id,
            when,
            status,
            r.calls,
            r.success.map_or("-", |s| if s { "yes" } else { "no" }),
            r.makespan_ms
                .map_or_else(|| "-".into(), |m| format!("{m:.1} ms")),
            r.speedup.map_or_else(|| "-".into(), |s| format!("{s:.2}×")),
        )?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct ShowArgs {
    /// The execution.
    pub id: String,
    /// Draw it into this file (`.svg` or `.html`).
    #[arg(long, value_name = "FILE.svg", value_parser = crate::timeline::output_path)]
    pub timeline: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn show(args: ShowArgs) -> Result<Outcome> {
    let stored = args.store.store().await?.load(&args.id).await?;
    if !args.store.json {
        let s = &stored.summary;
        let timeout = toolgraph::LEASE_TIMEOUT.as_millis() as i64;
        let status = match &s.owner {
            _ if s.is_abandoned(toolgraph_store::now_ms(), timeout) => {
                "interrupted (nobody runs it: `toolgraph resume` finishes it)".to_owned()
            }
            Some(owner) if s.status == "running" => format!("running in {owner}"),
            _ => s.status.clone(),
        };
        outln!(
            "execution {} · {} · resumed {} time(s)",
            s.id,
            status,
            s.resumed
        )?;
    }
    print_result(&stored.result, args.store.json)?;
    if let Some(path) = &args.timeline {
        let edges: Vec<(usize, usize)> = stored.edges.iter().map(|(f, t, _)| (*f, *t)).collect();
        write_timeline(path, &stored.result, &edges, &stored.critical)?;
    }
    Ok(if stored.result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}

#[derive(Args)]
pub struct StatsArgs {
    /// Only executions created within this long (e.g. `1h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only this tool.
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    #[command(flatten)]
    pub store: StoreFlags,
}

fn cutoff(ago: &str) -> Result<i64> {
    let d = humantime::parse_duration(ago)
        .with_context(|| format!("{ago:?} is not a duration (try 30m, 12h, 7d)"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(now.saturating_sub(d).as_millis() as i64)
}

pub async fn stats(args: StatsArgs) -> Result<Outcome> {
    let since = args.since.as_deref().map(cutoff).transpose()?.unwrap_or(0);
    let s = args
        .store
        .store()
        .await?
        .performance_stats(since, args.tool.as_deref())
        .await?;
    if args.store.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(Outcome::Success);
    }
    outln!(
        "{} executions · {} calls · avg speedup {:.2}× · avg efficiency {:.0}% · success rate {:.1}% · avg makespan {:.1} ms",
        s.total_executions,
        s.total_calls,
        s.avg_speedup,
        s.avg_efficiency * 100.0,
        s.avg_success_rate * 100.0,
        s.avg_execution_time_ms
    )?;
    outln!(
        "{:<16}  {:>7}  {:>7}  {:>10}  {:>10}  {:>10}",
        "tool",
        "calls",
        "errors",
        "p50",
        "p95",
        "p99"
    )?;
    for (name, t) in &s.tools {
        outln!(
            "{:<16}  {:>7}  {:>6.1}%  {:>7.1} ms  {:>7.1} ms  {:>7.1} ms",
            name,
            t.count,
            t.error_rate * 100.0,
            t.p50_ms,
            t.p95_ms,
            t.p99_ms
        )?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct PruneArgs {
    /// Delete executions created longer ago than this (e.g. `30d`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: String,
    #[command(flatten)]
    pub store: StoreLocation,
}

pub async fn prune(args: PruneArgs) -> Result<Outcome> {
    let gone = args
        .store
        .store()
        .await?
        .prune(cutoff(&args.older_than)?)
        .await?;
    outln!("pruned {gone} execution(s) older than {}", args.older_than)?;
    Ok(Outcome::Success)
}
