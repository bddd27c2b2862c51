//! `toolgraph bench --nats URL`: the cluster's figures, measured with real worker processes.
//!
//! A fresh namespace (`bench-<8 hex>`), `--workers` processes of this same binary
//! (`toolgraph worker … --concurrency 256 --tools echo,sleep`), and an in-process
//! coordinator: the executor with a [`RemoteLayer`](toolgraph::cluster::RemoteLayer) on top.
//! The same batches also run locally (the same executor without the layer), for comparison:
//!
//! - throughput: one execution of `min(--calls, 20000)` independent `echo` calls (the default
//!   `--calls`, 100,000, would make this figure alone take many seconds);
//! - added latency per call: a chain of 200 `echo` calls, through the cluster against locally,
//!   and the distribution of each call's duration through the cluster;
//! - a fan-out of 100 × `sleep 50 ms` with a limit of 10 on `sleep` (ideal 500 ms);
//! - the skewed layered DAG: makespan − critical path, through the cluster and locally;
//! - the limited fan-out again, the limit held by the broker instead of the coordinator: as
//!   many workers again, started with `[cluster] tool_limits` `sleep = 10` (the `sleep`
//!   consumer's `max_ack_pending`), and no limit in the coordinator.
//!
//! The worker processes are killed (and waited for) and the namespace's stream and worker
//! bucket deleted at the end, however the measurement ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use toolgraph::cluster::{ClusterOptions, Namespace, RemoteLayer};
use toolgraph_core::{ParallelExecutionResult, ParallelExecutorConfig, ToolCall};
use toolgraph_engine::{ParallelExecutor, workload};

use crate::bench::{Figure, median};
use crate::out::errln;

/// Most calls in the throughput figure.
const MAX_THROUGHPUT_CALLS: usize = 20_000;
/// Calls in the latency chain.
const CHAIN: usize = 200;
/// How long the workers may take to show up in the namespace's bucket.
const WORKERS_WAIT: Duration = Duration::from_secs(20);

/// Starts the workers, measures, stops them and deletes the namespace; every figure goes
/// to `say` as soon as it is measured.
pub(crate) async fn figures(
    url: &str,
    workers: usize,
    calls: usize,
    runs: usize,
    say: &mut dyn FnMut(Figure) -> Result<()>,
) -> Result<()> {
    let mut options = ClusterOptions::new(url);
    options.namespace = Namespace::new(&format!("bench-{}", random_hex()))?;
    let ns = options.namespace.as_str().to_owned();
    let mut processes = WorkerProcesses::start(url, &ns, workers)?;
    errln!(
        "cluster bench: namespace {ns} at {url}, {workers} worker process(es) (pids {})",
        processes
            .pids()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let measured = async {
        processes.wait_until_live(&options, workers).await?;
        measure(&options, &mut processes, calls, runs, say).await
    }
    .await;
    processes.stop();
    let deleted = toolgraph::cluster::delete_namespace(&options).await;
    measured?;
    deleted.with_context(|| format!("deleting the namespace {ns}"))?;
    errln!("cluster bench: workers stopped, namespace {ns} deleted");
    Ok(())
}

/// 8 random hex digits (std's randomly keyed hasher over the time and process id).
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// The worker processes; killed and waited for when dropped.
struct WorkerProcesses {
    url: String,
    ns: String,
    children: Vec<Child>,
    /// Their logs (standard error) and configuration files, removed at the end.
    files: Vec<PathBuf>,
}

impl WorkerProcesses {
    fn start(url: &str, ns: &str, n: usize) -> Result<WorkerProcesses> {
        let mut processes = WorkerProcesses {
            url: url.to_owned(),
            ns: ns.to_owned(),
            children: Vec::with_capacity(n),
            files: Vec::with_capacity(n),
        };
        processes.add(n, None)?;
        Ok(processes)
    }

    /// Starts `n` more workers, with the configuration `toml` when given.
    fn add(&mut self, n: usize, toml: Option<&str>) -> Result<Vec<u32>> {
        let exe = std::env::current_exe().context("finding this binary to start workers")?;
        let ns = self.ns.clone();
        let config = match toml {
            Some(text) => {
                let path = std::env::temp_dir()
                    .join(format!("toolgraph-{ns}-{}.toml", self.children.len()));
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                self.files.push(path.clone());
                Some(path)
            }
            None => None,
        };
        let mut pids = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.children.len();
            let log = std::env::temp_dir().join(format!("toolgraph-{ns}-w{i}.log"));
            let stderr = std::fs::File::create(&log)
                .with_context(|| format!("creating the worker log {}", log.display()))?;
            self.files.push(log);
            let mut command = Command::new(&exe);
            command
                .args(["worker", "--nats", &self.url, "--namespace", &ns])
                .args(["--concurrency", "256", "--tools", "echo,sleep"])
                .args(["--id", &format!("bench-w{i}")]);
            if let Some(path) = &config {
                command.arg("--config").arg(path);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting worker {i} ({})", exe.display()))?;
            pids.push(child.id());
            self.children.push(child);
        }
        Ok(pids)
    }

    /// How many workers were started.
    fn workers(&self) -> usize {
        self.children.len()
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Waits until `n` workers heartbeat in the namespace; fails when one exits first or
    /// after [`WORKERS_WAIT`].
    async fn wait_until_live(&mut self, options: &ClusterOptions, n: usize) -> Result<()> {
        let give_up = Instant::now() + WORKERS_WAIT;
        loop {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(status) = child.try_wait()? {
                    let log = self
                        .files
                        .iter()
                        .find(|p| p.to_string_lossy().ends_with(&format!("-w{i}.log")))
                        .and_then(|p| std::fs::read_to_string(p).ok())
                        .unwrap_or_default();
                    anyhow::bail!(
                        "worker bench-w{i} exited ({status}) before serving: {}",
                        log.trim()
                    );
                }
            }
            let live = toolgraph::cluster::list_workers(options).await?;
            if live.len() >= n {
                return Ok(());
            }
            ensure!(
                Instant::now() < give_up,
                "{} of {n} workers showed up in namespace {} within {} s",
                live.len(),
                options.namespace.as_str(),
                WORKERS_WAIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every worker, waits for it and removes its files.
    fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for file in self.files.drain(..) {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One execution, timed by the wall clock; it must succeed.
async fn timed(
    ex: &ParallelExecutor,
    calls: &[ToolCall],
) -> Result<(f64, ParallelExecutionResult)> {
    let start = Instant::now();
    let result = ex
        .execute_parallel(calls.to_vec())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(
        result.success,
        "the batch failed: {:?}",
        result.errors.first()
    );
    Ok((ms, result))
}

/// The value at `q` (0..=1) of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    xs.get(i.min(xs.len() - 1)).copied().unwrap_or(0.0)
}

async fn measure(
    options: &ClusterOptions,
    processes: &mut WorkerProcesses,
    calls: usize,
    runs: usize,
    say: &mut dyn FnMut(Figure) -> Result<()>,
) -> Result<()> {
    let remote = RemoteLayer::connect(options).await?;
    let config = ParallelExecutorConfig {
        max_parallel_calls: 4096,
        ..Default::default()
    };
    let executors =
        |config: &ParallelExecutorConfig| -> Result<(ParallelExecutor, ParallelExecutor)> {
            let cluster = ParallelExecutor::new(toolgraph_tools::builtins(), config.clone())?
                .layer(Arc::new(remote.clone()));
            let local = ParallelExecutor::new(toolgraph_tools::builtins(), config.clone())?;
            Ok((cluster, local))
        };
    let (cluster, local) = executors(&config)?;

    // Warm up: connections, consumers, the first pulls.
    timed(&cluster, &workload::fan_out(500, "echo", json!({}))).await?;
    timed(&cluster, &workload::chain(20, "echo", json!({}))).await?;

    // 1. Throughput.
    let n = calls.min(MAX_THROUGHPUT_CALLS);
    let fan = workload::fan_out(n, "echo", json!({}));
    let mut makespans = Vec::new();
    for _ in 0..runs {
        makespans.push(timed(&cluster, &fan).await?.0);
    }
    let makespan = median(makespans);
    say(Figure {
        name: format!("cluster: throughput, {n} echo calls"),
        value: n as f64 / (makespan / 1e3),
        unit: "c/s",
        target: Some("≥ 10,000 c/s".into()),
        note: format!("makespan {makespan:.1} ms, one execution, max_parallel_calls 4096"),
    })?;

    // 2. Added latency per call: a chain, through the cluster and locally.
    let chain = workload::chain(CHAIN, "echo", json!({}));
    let (mut remote_ms, mut local_ms) = (Vec::new(), Vec::new());
    let (mut remote_calls, mut local_calls) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (ms, r) = timed(&cluster, &chain).await?;
        remote_ms.push(ms);
        remote_calls.extend(r.results.iter().map(|c| c.duration_ms));
        let (ms, r) = timed(&local, &chain).await?;
        local_ms.push(ms);
        local_calls.extend(r.results.iter().map(|c| c.duration_ms));
    }
    let (remote_chain, local_chain) = (median(remote_ms), median(local_ms));
    say(Figure {
        name: format!("cluster: added latency per call, {CHAIN}-chain"),
        value: (remote_chain - local_chain) / CHAIN as f64,
        unit: "ms",
        target: Some("≤ 0.5 ms".into()),
        note: format!(
            "chain {remote_chain:.1} ms through the cluster vs {local_chain:.1} ms locally"
        ),
    })?;
    let local_mean = local_calls.iter().sum::<f64>() / local_calls.len().max(1) as f64;
    let mut added: Vec<f64> = remote_calls.iter().map(|d| d - local_mean).collect();
    added.sort_by(f64::total_cmp);
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        say(Figure {
            name: format!("cluster: per-call time added, {label}"),
            value: quantile(&added, q),
            unit: "ms",
            target: (label == "p50").then(|| "≤ 0.5 ms".into()),
            note: format!(
                "each chained call's duration through the cluster − the local mean ({:.3} ms), {} calls",
                local_mean,
                added.len()
            ),
        })?;
    }

    // 3. A fan-out of 100 × sleep 50 ms with a limit of 10 on `sleep`.
    let limited = ParallelExecutorConfig {
        per_tool_parallel_limits: [("sleep".to_owned(), 10)].into_iter().collect(),
        ..config.clone()
    };
    let (cluster_limited, local_limited) = executors(&limited)?;
    let sleeps = workload::fan_out(100, "sleep", json!({"ms": 50}));
    let (mut remote_ms, mut local_ms) = (Vec::new(), Vec::new());
    let (mut remote_call_ms, mut local_call_ms) = (Vec::new(), Vec::new());
    let mean_call = |r: &ParallelExecutionResult| {
        r.results.iter().map(|c| c.duration_ms).sum::<f64>() / r.results.len().max(1) as f64
    };
    for _ in 0..runs {
        let (ms, r) = timed(&cluster_limited, &sleeps).await?;
        remote_ms.push(ms);
        remote_call_ms.push(mean_call(&r));
        let (ms, r) = timed(&local_limited, &sleeps).await?;
        local_ms.push(ms);
        local_call_ms.push(mean_call(&r));
    }
    let (remote_fan, local_fan) = (median(remote_ms), median(local_ms));
    let (remote_call, local_call) = (median(remote_call_ms), median(local_call_ms));
    say(Figure {
        name: "cluster: 100 × sleep 50 ms, limit 10: − local".into(),
        value: remote_fan - local_fan,
        unit: "ms",
        target: Some("≤ 10 ms".into()),
        note: format!(
            "makespan {remote_fan:.1} ms through the cluster vs {local_fan:.1} ms locally (ideal 500 ms); \
             a call {remote_call:.2} ms vs {local_call:.2} ms"
        ),
    })?;

    // 4. The skewed layered DAG: makespan − critical path.
    let skewed = workload::skewed_layers(8, 100, 1);
    for (place, ex) in [("cluster", &cluster), ("local", &local)] {
        let (mut gaps, mut spans, mut paths) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs.min(3) {
            let (_, r) = timed(ex, &skewed).await?;
            gaps.push(r.total_time_ms - r.critical_path_ms);
            spans.push(r.total_time_ms);
            paths.push(r.critical_path_ms);
        }
        say(Figure {
            name: format!("{place}: skewed DAG, makespan − critical path"),
            value: median(gaps),
            unit: "ms",
            target: None,
            note: format!(
                "makespan {:.1} ms, critical path {:.1} ms (ideal 101 ms)",
                median(spans),
                median(paths)
            ),
        })?;
    }

    // 5. The same fan-out with the limit held by the broker instead: workers started with
    // `[cluster] tool_limits` set the `sleep` consumer's `max_ack_pending` to 10 (the last
    // worker started sets it), the coordinator publishes all 100 calls at once, and
    // JetStream hands out the next call when a worker acknowledges one (no round trip
    // through the coordinator between one call and the next).
    let limit_workers = processes.workers();
    let pids = processes.add(limit_workers, Some("[cluster.tool_limits]\nsleep = 10\n"))?;
    errln!(
        "cluster bench: {limit_workers} more worker process(es) with a cluster-wide limit of 10 on sleep (pids {})",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    processes
        .wait_until_live(options, processes.workers())
        .await?;
    let mut remote_ms = Vec::new();
    for _ in 0..runs {
        remote_ms.push(timed(&cluster, &sleeps).await?.0);
    }
    let remote_fan = median(remote_ms);
    ensure!(
        remote_fan >= 490.0,
        "100 × sleep 50 ms with a cluster-wide limit of 10 took {remote_fan:.1} ms: \
         more than 10 ran at once"
    );
    say(Figure {
        name: "cluster: the same, cluster-wide limit 10: − local".into(),
        value: remote_fan - local_fan,
        unit: "ms",
        target: Some("≤ 10 ms".into()),
        note: format!(
            "max_ack_pending 10 on the tool's consumer, no limit in the coordinator: \
             makespan {remote_fan:.1} ms vs {local_fan:.1} ms locally (limit 10 there)"
        ),
    })?;
    Ok(())
}
