//! Turns what the scheduler measured into a [`ParallelExecutionResult`]: per-call timing,
//! makespan, sequential time (sum of measured durations), the measured critical path,
//! speedup, efficiency, level timings and error lines.
//!
//! The records are consumed a block at a time, and each block's memory is handed back as the
//! results grow, so an execution's records and its results are never all held at once (a
//! record is 160 bytes: 160 MB at a million calls).
//!
//! Invariant: every figure is derived from measured instants; nothing is estimated.

use tokio::time::Instant;

use toolgraph_core::result::round_ms;
use toolgraph_core::{CallResult, ExecutionMetadata, ParallelExecutionResult};

use crate::plan::{Plan, PlannedCall};
use crate::schedule::{Record, RunReport};

/// Records turned into results between two returns of their memory (about 1 MiB of them).
const BLOCK: usize = (1 << 20) / std::mem::size_of::<Record>();

fn ms_since(origin: Instant, t: Instant) -> f64 {
    round_ms(t.saturating_duration_since(origin).as_secs_f64() * 1e3)
}

/// One call's result, from its plan entry and its record.
fn call_result(planned: &PlannedCall, level: u32, r: Record, origin: Instant) -> CallResult {
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
        level,
    }
}

/// The results of `records` (one per call of `plan`, in input order), each record's memory
/// returned soon after it was read.
fn results(plan: &Plan, mut records: Vec<Record>, origin: Instant) -> Vec<CallResult> {
    let (calls, levels) = (plan.calls(), plan.levels());
    records.truncate(calls.len());
    // Last call first, so that each block read can be cut off the end of the allocation.
    records.reverse();
    let mut results = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let from = records.len().saturating_sub(BLOCK);
        for r in records.drain(from..).rev() {
            let i = results.len();
            results.push(call_result(&calls[i], levels[i], r, origin));
        }
        records.shrink_to_fit();
    }
    results
}

/// Assembles the result; `origin` is when the execution began (before planning).
pub(crate) fn assemble(
    plan: &Plan,
    run: RunReport,
    origin: Instant,
    planned_at: Instant,
    ended: Instant,
) -> ParallelExecutionResult {
    let results = results(plan, run.records, origin);
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use toolgraph_core::{CallStatus, ParallelExecutorConfig, ToolCall, ToolSet};

    use super::*;

    #[test]
    fn results_of_many_blocks_stay_in_input_order() {
        let mut tools = ToolSet::new();
        tools
            .register_fn("t", |_, _| async { Ok(Value::Null) })
            .expect("registers");
        let n = 2 * BLOCK + 3;
        let calls: Vec<ToolCall> = (0..n)
            .map(|i| ToolCall::new(format!("c{i}"), "t", json!({})))
            .collect();
        let plan = Plan::build(calls, &tools, &ParallelExecutorConfig::default()).expect("plans");
        let now = Instant::now();
        let records = (0..n)
            .map(|i| Record {
                status: CallStatus::Ok,
                output: Some(json!(i)),
                error: None,
                attempts: 1,
                ready_at: Some(now),
                started: Some(now),
                finished: now,
            })
            .collect();
        let results = results(&plan, records, now);
        assert_eq!(results.len(), n);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(
                (r.id.as_str(), &r.output),
                (format!("c{i}").as_str(), &Some(json!(i)))
            );
        }
    }
}
