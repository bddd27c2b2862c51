//! Turns what the scheduler measured into a [`ParallelExecutionResult`]: per-call timing,
//! makespan, sequential time (sum of measured durations), the measured critical path,
//! speedup, efficiency, level timings and error lines.
//!
//! Invariant: every figure is derived from measured instants; nothing is estimated.

use tokio::time::Instant;

use toolgraph_core::result::round_ms;
use toolgraph_core::{CallResult, ExecutionMetadata, ParallelExecutionResult};

use crate::plan::Plan;
use crate::schedule::RunReport;

fn ms_since(origin: Instant, t: Instant) -> f64 {
    round_ms(t.saturating_duration_since(origin).as_secs_f64() * 1e3)
}

/// Assembles the result; `origin` is when the execution began (before planning).
pub(crate) fn assemble(
    plan: &Plan,
    run: RunReport,
    origin: Instant,
    planned_at: Instant,
    ended: Instant,
) -> ParallelExecutionResult {
    let levels = plan.levels();
    let results: Vec<CallResult> = plan
        .calls()
        .iter()
        .zip(run.records)
        .enumerate()
        .map(|(i, (planned, r))| {
            let duration_ms = r.started.map_or(0.0, |s| ms_since(s, r.finished));
            let queued_ms = match (r.ready_at, r.started) {
                (Some(ready), Some(start)) => ms_since(ready, start),
                (Some(ready), None) => ms_since(ready, r.finished),
                _ => 0.0,
            };
            CallResult {
                id: planned.call.id.clone(),
                name: planned.call.name.clone(),
                status: r.status,
                output: r.output,
                error: r.error,
                attempts: r.attempts,
                queued_ms,
                started_ms: r.started.map(|s| ms_since(origin, s)),
                finished_ms: r.started.map(|_| ms_since(origin, r.finished)),
                duration_ms,
                level: levels[i],
            }
        })
        .collect();

    let critical_path_ms = plan.critical_path(|i| results[i].duration_ms);
    let metadata = ExecutionMetadata {
        edges: plan.edges().len(),
        max_parallel_calls: run.config.max_parallel_calls,
        peak_in_flight: Some(run.peak_in_flight),
        retries: Some(run.retries),
        planning_ms: Some(ms_since(origin, planned_at)),
        ..ExecutionMetadata::default()
    };
    ParallelExecutionResult::from_calls(
        results,
        ms_since(origin, ended),
        critical_path_ms,
        !run.config.enable_parallel,
        metadata,
    )
}
