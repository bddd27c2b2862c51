//! `toolgraph bench`: many executions at once through one executor — what a service or a
//! worker does — and what the shared limiter costs there.
//!
//! `executions` executions of `calls` no-op calls each start together, each as its own task
//! on the multi-threaded runtime, on clones of one executor whose global limit is `limit`;
//! the no-op yields once, so calls of different executions overlap and compete for the
//! shared slots. The figure is the wall time until the last ends, per call, with the peak
//! number of calls the limiter saw running at once (which must not exceed `limit`: the run
//! fails otherwise).

use std::time::Instant;

use anyhow::{Result, ensure};
use futures_util::future::join_all;
use serde_json::json;
use toolgraph_core::ParallelExecutorConfig;
use toolgraph_engine::workload;

use crate::bench::{Figure, executor};

/// The concurrent-executions figures (median of `runs`).
pub(crate) async fn figures(
    executions: usize,
    calls: usize,
    limit: usize,
    runs: usize,
) -> Result<Vec<Figure>> {
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs.max(1) {
        // A fresh executor per run, so the peak is this run's.
        let ex = executor(ParallelExecutorConfig {
            max_parallel_calls: limit,
            ..Default::default()
        })?;
        let batches: Vec<_> = (0..executions)
            .map(|_| workload::fan_out(calls, "noop_yield", json!({})))
            .collect();
        let start = Instant::now();
        let results = join_all(batches.into_iter().map(|batch| {
            let ex = ex.clone();
            tokio::spawn(async move { ex.execute_parallel(batch).await })
        }))
        .await;
        times.push(start.elapsed().as_secs_f64());
        for r in results {
            let r = r?.map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(r.success, "a concurrent execution failed: {:?}", r.errors);
        }
        let peaks = ex.limiter().peaks();
        ensure!(
            peaks.global <= limit,
            "the shared limit was exceeded: {} in flight, limit {limit}",
            peaks.global
        );
        ensure!(ex.limiter().in_flight() == 0, "slots were not given back");
        peak = peak.max(peaks.global);
    }
    times.sort_by(f64::total_cmp);
    let total = times[times.len() / 2];
    let n = (executions * calls) as f64;
    Ok(vec![
        Figure {
            name: format!(
                "{executions} concurrent executions × {calls} no-op calls, one executor: total"
            ),
            value: total * 1e3,
            unit: "ms",
            target: None,
            note: format!("shared global limit {limit}; peak in flight {peak}"),
        },
        Figure {
            name: format!("{executions} concurrent executions: overhead per call"),
            value: total * 1e6 / n,
            unit: "µs",
            target: None,
            note: "planning, scheduling, shared limiter, result assembly; median of runs".into(),
        },
    ])
}
