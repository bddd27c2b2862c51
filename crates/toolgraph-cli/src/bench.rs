//! `toolgraph bench`: the engine's own figures, on deterministic workloads.
//!
//! - a bare tokio spawn + join per task, the floor any executor stands on;
//! - planning time and executor overhead per no-op call for a 100,000-call fan-out;
//! - overhead per dependency edge on a 10,000-call chain;
//! - sleep-based DAGs: makespan against the measured critical path, and the skewed layered
//!   DAG run level by level (as a barrier-per-level executor would) for comparison;
//! - sleep-bound batches against their ideal makespan, the asked-for durations (`sleep`);
//! - peak memory of one no-op execution at several sizes, each in a fresh process
//!   (`bench_memory`).
//!
//! With `--nats URL` it measures the cluster instead, and only the cluster: worker
//! processes of this binary serving a fresh namespace, and a coordinator here
//! (`bench/cluster.rs`).
//!
//! Each timing is the median of several runs. Nothing here asserts: it prints figures.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::{ParallelExecutor, RunOptions, workload};
use toolgraph_store::ExecutionStore;

use crate::Outcome;
use crate::out::outln;

mod cluster;
mod sleep;

#[derive(Args)]
pub struct BenchArgs {
    /// Calls in the no-op fan-out.
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    pub calls: usize,
    /// Calls in the chain.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    pub chain: usize,
    /// Executions run at once, 10 no-op calls each, through one executor (shared limit 64).
    #[arg(long, default_value_t = 1_000, value_parser = at_least_one)]
    pub concurrent_executions: usize,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub runs: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also measure recording into these stores (`sqlite://…`, `postgres://…`; repeatable).
    /// Default: a SQLite file in a temporary directory.
    #[arg(long = "record-into", value_name = "URL")]
    pub record_into: Vec<String>,
    /// Write the sleep-based benchmark DAGs as batches into this directory and stop.
    #[arg(long, value_name = "DIR")]
    pub write_workloads: Option<std::path::PathBuf>,
    /// Sizes of the no-op executions whose peak memory is measured, each in a fresh process.
    #[arg(
        long,
        value_name = "N,N,…",
        value_delimiter = ',',
        default_value = "10000,100000,1000000",
        value_parser = at_least_one
    )]
    pub memory_calls: Vec<usize>,
    /// Leave out the peak-memory figures.
    #[arg(long)]
    pub no_memory: bool,
    /// Measure the cluster on this NATS server instead of the engine: throughput, added
    /// latency, a limited fan-out and the skewed DAG through worker processes of this binary
    /// (a fresh namespace, deleted at the end).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Worker processes started for `--nats`.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one)]
    pub workers: usize,
    /// Internal: run one execution of N no-op calls and print its peak memory as JSON.
    #[arg(long, value_name = "N", hide = true)]
    pub memory_probe: Option<usize>,
}

/// A size of 1 or more: 0 calls (or runs) measures nothing, so clap refuses it.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1: 0 measures nothing".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// The sleep-based DAGs the benchmark runs, by file name.
fn sleep_dags() -> Vec<(&'static str, &'static str, Vec<ToolCall>)> {
    vec![
        (
            "skewed-layers.json",
            "skewed layered DAG (8 pairs, 100/1 ms)",
            workload::skewed_layers(8, 100, 1),
        ),
        (
            "random-dag.json",
            "random DAG (300 calls, ≤3 deps, 1–20 ms)",
            workload::random_dag(300, 3, 1..=20, 7),
        ),
        (
            "fan-out.json",
            "fan-out (200 × sleep 50 ms)",
            workload::fan_out(200, "sleep", json!({"ms": 50})),
        ),
    ]
}

#[derive(Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: Option<String>,
    pub(crate) note: String,
}

/// Throughput of `n` no-op calls with a recorder attached, against the same without.
async fn recording(url: &str, n: usize, runs: usize) -> Result<Vec<Figure>> {
    let store = toolgraph_store::Store::open(url).await?;
    let backend = match store.backend() {
        toolgraph_store::Backend::Sqlite => "SQLite",
        toolgraph_store::Backend::Postgres => "PostgreSQL",
    };
    let ex = executor(ParallelExecutorConfig {
        max_parallel_calls: 1024,
        ..Default::default()
    })?;
    let plan = ex
        .plan(workload::fan_out(n, "noop", json!({})))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut bare, mut hot, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        ex.execute_plan_with(&plan, RunOptions::default()).await;
        bare.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let id = store.begin_execution(&plan, &ex.config(), None).await?;
        let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
        // Let the database finish with the pre-run rows (its threads otherwise share the two
        // cores with the first milliseconds of the run); their cost is in the figure below.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let run_start = Instant::now();
        let r = ex
            .execute_plan_with(
                &plan,
                RunOptions {
                    sink: Some(recorder.as_sink()),
                    ..Default::default()
                },
            )
            .await;
        hot.push(run_start.elapsed().as_secs_f64());
        recorder.close().await?;
        store.finish_execution(&id).await?;
        whole.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(r.success, "recorded run failed");
    }
    let (bare, hot, whole) = (median(bare), median(hot), median(whole));
    Ok(vec![
        Figure {
            name: format!("recording into {backend}, {n} no-op calls: throughput kept"),
            value: 100.0 * bare / hot,
            unit: "%",
            target: Some("≥ 80 %".into()),
            note: format!(
                "execution {:.1} ms recorded vs {:.1} ms bare",
                hot * 1e3,
                bare * 1e3
            ),
        },
        Figure {
            name: format!("recording into {backend}, {n} calls: durable end to end"),
            value: n as f64 / whole,
            unit: "c/s",
            target: None,
            note: format!(
                "{:.1} ms from first row to last commit, pre-run rows and figures included",
                whole * 1e3
            ),
        },
    ])
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn tools() -> ToolSet {
    let mut set = toolgraph_tools::builtins();
    // A no-op tool: what remains is the engine's own cost.
    let noop = toolgraph_core::FnTool::new(
        toolgraph_core::ToolSpec::new("noop").idempotent(),
        |_, _| async { Ok(Value::Null) },
    );
    let _ = set.register(noop);
    // A no-op that yields once: calls of many executions overlap, as real ones do.
    let yielding = toolgraph_core::FnTool::new(
        toolgraph_core::ToolSpec::new("noop_yield").idempotent(),
        |_, _| async {
            tokio::task::yield_now().await;
            Ok(Value::Null)
        },
    );
    let _ = set.register(yielding);
    set
}

pub(crate) fn executor(config: ParallelExecutorConfig) -> Result<ParallelExecutor> {
    Ok(ParallelExecutor::new(tools(), config)?)
}

async fn time_execution(
    ex: &ParallelExecutor,
    calls: &[ToolCall],
) -> Result<(f64, toolgraph_core::ParallelExecutionResult)> {
    let batch = calls.to_vec();
    let start = Instant::now();
    let result = ex
        .execute_parallel(batch)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((start.elapsed().as_secs_f64(), result))
}

pub async fn run(args: BenchArgs) -> Result<Outcome> {
    if let Some(n) = args.memory_probe {
        return crate::bench_memory::probe(n).await;
    }
    if let Some(dir) = &args.write_workloads {
        std::fs::create_dir_all(dir)?;
        for (file, name, calls) in sleep_dags() {
            let path = dir.join(file);
            std::fs::write(&path, serde_json::to_string_pretty(&calls)? + "\n")?;
            outln!("{}: {name}, {} calls", path.display(), calls.len())?;
        }
        return Ok(Outcome::Success);
    }
    let runs = args.runs;
    let mut figures = Vec::new();
    let mut say = |f: Figure| -> Result<()> {
        if !args.json {
            let target = f
                .target
                .as_deref()
                .map(|t| format!("  (target {t})"))
                .unwrap_or_default();
            outln!(
                "{:<48} {:>10.3} {:<3}{target}  {}",
                f.name,
                f.value,
                f.unit,
                f.note
            )?;
        }
        figures.push(f);
        Ok(())
    };

    if let Some(url) = &args.nats {
        cluster::figures(url, args.workers, args.calls, runs, &mut say).await?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&figures)?)?;
        }
        return Ok(Outcome::Success);
    }

    // 1. The floor: spawn and join bare tasks.
    let n = args.calls;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(async {});
        }
        while set.join_next().await.is_some() {}
        samples.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    say(Figure {
        name: format!("tokio spawn + join, {n} bare tasks"),
        value: median(samples),
        unit: "µs",
        target: None,
        note: "per task: the floor".into(),
    })?;

    // 2. Planning and per-call overhead on a no-op fan-out.
    let fan = workload::fan_out(n, "noop", json!({}));
    let config = ParallelExecutorConfig {
        max_parallel_calls: 1024,
        ..Default::default()
    };
    let ex = executor(config.clone())?;
    let mut plan_ms = Vec::new();
    for _ in 0..runs {
        let batch = fan.clone();
        let start = Instant::now();
        let plan = ex.plan(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        plan_ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(plan);
    }
    say(Figure {
        name: format!("planning, {n} calls"),
        value: median(plan_ms),
        unit: "ms",
        target: Some("well under 100 ms".into()),
        note: "parse-free: ids, references, hazards, levels".into(),
    })?;
    let mut per_call = Vec::new();
    for _ in 0..runs {
        let (secs, result) = time_execution(&ex, &fan).await?;
        anyhow::ensure!(
            result.success,
            "no-op fan-out failed: {:?}",
            result.errors.first()
        );
        per_call.push(secs * 1e6 / n as f64);
    }
    say(Figure {
        name: format!("executor overhead per no-op call, {n} calls"),
        value: median(per_call),
        unit: "µs",
        target: Some("≤ 1.5 µs".into()),
        note: "end to end: plan, schedule, poll, layers, shared limiter, result (limit 1024)"
            .into(),
    })?;

    // 3. Per-edge overhead on a chain.
    let m = args.chain.max(2);
    let chain = workload::chain(m, "noop", json!({}));
    let mut per_edge = Vec::new();
    for _ in 0..runs {
        let (secs, result) = time_execution(&ex, &chain).await?;
        anyhow::ensure!(result.success, "chain failed");
        per_edge.push(secs * 1e6 / (m - 1) as f64);
    }
    say(Figure {
        name: format!("overhead per dependency edge, {m}-call chain"),
        value: median(per_edge),
        unit: "µs",
        target: Some("≤ 1.5 µs".into()),
        note: "each call waits for the one before".into(),
    })?;

    // 3b. Many executions at once through one executor (a service's or a worker's load).
    for f in crate::bench_concurrent::figures(args.concurrent_executions, 10, 64, runs).await? {
        say(f)?;
    }

    // 4. Sleep DAGs: makespan against the measured critical path.
    let open = executor(ParallelExecutorConfig {
        max_parallel_calls: 4096,
        ..Default::default()
    })?;
    let dags = sleep_dags();
    for (_, name, calls) in dags {
        let mut gaps = Vec::new();
        let mut last = None;
        for _ in 0..runs.min(3) {
            let (_, r) = time_execution(&open, &calls).await?;
            gaps.push(r.total_time_ms - r.critical_path_ms);
            last = Some(r);
        }
        let Some(r) = last else { continue };
        say(Figure {
            name: format!("{name}: makespan − critical path"),
            value: median(gaps),
            unit: "ms",
            target: Some("≤ 1 ms".into()),
            note: format!(
                "makespan {:.1} ms, critical path {:.1} ms, speedup {:.1}×",
                r.total_time_ms, r.critical_path_ms, r.speedup
            ),
        })?;
    }

    // 4b. Sleep-bound batches against the durations they asked for.
    for f in sleep::figures(runs).await? {
        say(f)?;
    }

    // 5. The same skewed DAG, level by level (a barrier per level).
    let skewed = workload::skewed_layers(8, 100, 1);
    let levels = open
        .topological_sort(&skewed)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    for level in &levels {
        let batch: Vec<ToolCall> = level
            .iter()
            .map(|&i| ToolCall {
                depends_on: Vec::new(),
                ..skewed[i].clone()
            })
            .collect();
        open.execute_parallel(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let barrier_ms = start.elapsed().as_secs_f64() * 1e3;
    let (_, ours) = time_execution(&open, &skewed).await?;
    say(Figure {
        name: "skewed layered DAG, level by level ÷ event-driven".into(),
        value: barrier_ms / ours.total_time_ms,
        unit: "×",
        target: None,
        note: format!(
            "barrier per level {:.1} ms vs toolgraph {:.1} ms",
            barrier_ms, ours.total_time_ms
        ),
    })?;

    // 6. Recording: the same no-op calls with a recorder attached.
    let temp = std::env::temp_dir().join(format!("toolgraph-bench-{}.db", std::process::id()));
    let urls = if args.record_into.is_empty() {
        vec![format!("sqlite://{}", temp.display())]
    } else {
        args.record_into.clone()
    };
    let m = n.min(10_000);
    for url in &urls {
        for f in recording(url, m, runs * 3).await? {
            say(f)?;
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", temp.display()));
    }

    // 7. Peak memory of one no-op execution per size, each in a fresh process.
    if !args.no_memory {
        for f in crate::bench_memory::figures(&args.memory_calls).await? {
            say(f)?;
        }
    }

    if args.json {
        outln!("{}", serde_json::to_string_pretty(&figures)?)?;
    }
    // Let blocking-pool threads wind down before the runtime stops.
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(Outcome::Success)
}
