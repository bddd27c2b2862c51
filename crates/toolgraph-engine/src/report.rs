//! Turns what the scheduler measured into a [`ParallelExecutionResult`]: per-call timing,
//! makespan, sequential time (sum of measured durations), the measured critical path,
//! speedup, efficiency, level timings and error lines.
//!
//! The records are consumed a block at a time, and each block's memory is handed back as the
//! results grow, so an execution's records and its results are never all held at once (a
//! record is 112 bytes: 112 MB at a million calls).
//!
//! Invariant: every figure is derived from measured instants; nothing is estimated.

use tokio::time::Instant;

use toolgraph_core::result::round_ms;
use toolgraph_core::{
    CallResult, ExecutionMetadata, ParallelExecutionResult, ParallelExecutorConfig, ToolCall,
};

use crate::plan::{Plan, PlannedCall};
use crate::schedule::{Record, RunReport};

/// Records turned into results between two returns of their memory (about 1 MiB of them).
const BLOCK: usize = (1 << 20) / std::mem::size_of::<Record>();

fn ms_since(origin: Instant, t: Instant) -> f64 {
    round_ms(t.saturating_duration_since(origin).as_secs_f64() * 1e3)
}

/// One call's result, from its plan entry and its record.
fn call_result(planned: &PlannedCall, level: u32, r: Record, origin: Instant) -> CallResult {
    let (id, name) = (planned.call.id.clone(), planned.call.name.clone());
    call_result_named(id, name, level, r, origin)
}

/// One call's result, given its id and name.
fn call_result_named(
    id: String,
    name: String,
    level: u32,
    r: Record,
    origin: Instant,
) -> CallResult {
    let duration_ms = r.started.map_or(0.0, |s| ms_since(s, r.finished));
    let queued_ms = match (r.ready_at, r.started) {
        (Some(ready), Some(start)) => ms_since(ready, start),
        (Some(ready), None) => ms_since(ready, r.finished),
        _ => 0.0,
    };
    CallResult {
        id,
        name,
        status: r.status,
        output: r.output,
        error: r.error,
        attempts: r.attempts,
        queued_ms,
        started_ms: r.started.map(|s| ms_since(origin, s)),
        finished_ms: r.started.map(|_| ms_since(origin, r.finished)),
        duration_ms,
        level,
        worker: r.worker.as_deref().map(str::to_owned),
        cached: r.cached,
        edited_arguments: r.edited,
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

/// The results of `records`, moving each call's id and name out of `calls`; both are
/// consumed from the back a block at a time, their memory returned as the results grow.
fn results_owned(
    mut calls: Vec<PlannedCall>,
    levels: &[u32],
    mut records: Vec<Record>,
    origin: Instant,
) -> Vec<CallResult> {
    let n = calls.len().min(records.len());
    calls.truncate(n);
    records.truncate(n);
    calls.reverse();
    records.reverse();
    let mut results = Vec::with_capacity(n);
    while !records.is_empty() {
        let from = records.len().saturating_sub(BLOCK);
        let block = calls.drain(from..).rev().zip(records.drain(from..).rev());
        for (planned, r) in block {
            let i = results.len();
            let ToolCall { id, name, .. } = planned.call;
            results.push(call_result_named(id, name, levels[i], r, origin));
        }
        calls.shrink_to_fit();
        records.shrink_to_fit();
    }
    results
}

/// Assembles the result of an execution that owns its plan (see [`assemble`]).
pub(crate) fn assemble_owned(
    mut plan: Plan,
    run: RunReport,
    origin: Instant,
    planned_at: Instant,
    ended: Instant,
) -> ParallelExecutionResult {
    let calls = plan.take_calls();
    let RunReport {
        records,
        peak_in_flight,
        retries,
        config,
    } = run;
    let results = results_owned(calls, plan.levels(), records, origin);
    let figures = (peak_in_flight, retries, config);
    finish(&plan, results, figures, origin, planned_at, ended)
}

/// Assembles the result; `origin` is when the execution began (before planning).
pub(crate) fn assemble(
    plan: &Plan,
    run: RunReport,
    origin: Instant,
    planned_at: Instant,
    ended: Instant,
) -> ParallelExecutionResult {
    let RunReport {
        records,
        peak_in_flight,
        retries,
        config,
    } = run;
    let results = results(plan, records, origin);
    finish(
        plan,
        results,
        (peak_in_flight, retries, config),
        origin,
        planned_at,
        ended,
    )
}

/// The figures over the results: critical path, metadata, and everything `from_calls`
/// derives.
fn finish(
    plan: &Plan,
    results: Vec<CallResult>,
    (peak_in_flight, retries, config): (usize, u32, std::sync::Arc<ParallelExecutorConfig>),
    origin: Instant,
    planned_at: Instant,
    ended: Instant,
) -> ParallelExecutionResult {
    let critical_path_ms = plan.critical_path(|i| results[i].duration_ms);
    let metadata = ExecutionMetadata {
        edges: plan.edges().len(),
        max_parallel_calls: config.max_parallel_calls,
        peak_in_flight: Some(peak_in_flight),
        retries: Some(retries),
        planning_ms: Some(ms_since(origin, planned_at)),
        ..ExecutionMetadata::default()
    };
    ParallelExecutionResult::from_calls(
        results,
        ms_since(origin, ended),
        critical_path_ms,
        !config.enable_parallel,
        metadata,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                status: CallStatus::Ok,
                output: Some(Arc::new(json!(i))),
                error: None,
                attempts: 1,
                ready_at: Some(now),
                started: Some(now),
                finished: now,
                worker: (i % 2 == 0).then(|| Arc::from("w-0")),
                cached: false,
                edited: None,
            })
            .collect();
        let borrowed = results(&plan, records.clone(), now);
        let mut plan = plan;
        let levels = plan.levels().to_vec();
        let owned = results_owned(plan.take_calls(), &levels, records, now);
        for results in [borrowed, owned] {
            assert_eq!(results.len(), n);
            for (i, r) in results.iter().enumerate() {
                assert_eq!(
                    (r.id.as_str(), r.name.as_str(), r.output()),
                    (format!("c{i}").as_str(), "t", Some(&json!(i)))
                );
                assert_eq!(r.worker.as_deref(), (i % 2 == 0).then_some("w-0"));
            }
        }
    }
}
