//! Turns what the scheduler measured into a [`ParallelExecutionResult`]: per-call timing,
//! makespan, sequential time (sum of measured durations), the measured critical path,
//! speedup, efficiency, level timings and error lines.
//!
//! Invariant: every figure is derived from measured instants; nothing is estimated.

use tokio::time::Instant;

use serde_json::{Map, Value, json};
use toolgraph_core::{BatchReport, CallResult, CallStatus, ParallelExecutionResult};

use crate::plan::Plan;
use crate::schedule::RunReport;

fn ms_since(origin: Instant, t: Instant) -> f64 {
    round3(t.saturating_duration_since(origin).as_secs_f64() * 1e3)
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
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

    let total_time_ms = ms_since(origin, ended);
    let first_start = results
        .iter()
        .filter_map(|r| r.started_ms)
        .fold(f64::INFINITY, f64::min);
    let last_end = results
        .iter()
        .filter_map(|r| r.finished_ms)
        .fold(0.0, f64::max);
    let parallel_time_ms = if first_start.is_finite() {
        round3(last_end - first_start)
    } else {
        0.0
    };
    let sequential_time_estimate_ms = round3(results.iter().map(|r| r.duration_ms).sum());
    let critical_path_ms = round3(plan.critical_path(|i| results[i].duration_ms));
    let sequential = !run.config.enable_parallel;
    let speedup = if sequential {
        1.0
    } else if total_time_ms > 0.0 {
        round3(sequential_time_estimate_ms / total_time_ms)
    } else {
        1.0
    };
    let efficiency = if total_time_ms > 0.0 {
        round3((critical_path_ms / total_time_ms).min(1.0))
    } else {
        1.0
    };

    let batches = plan
        .level_groups()
        .into_iter()
        .enumerate()
        .map(|(level, members)| {
            let started = members
                .iter()
                .filter_map(|&i| results[i].started_ms)
                .fold(f64::INFINITY, f64::min);
            let finished = members
                .iter()
                .filter_map(|&i| results[i].finished_ms)
                .fold(f64::NEG_INFINITY, f64::max);
            let (started_ms, finished_ms) = if started.is_finite() {
                (Some(started), Some(finished))
            } else {
                (None, None)
            };
            BatchReport {
                level: level as u32,
                call_ids: members.iter().map(|&i| results[i].id.clone()).collect(),
                started_ms,
                finished_ms,
                duration_ms: started_ms
                    .zip(finished_ms)
                    .map_or(0.0, |(s, f)| round3(f - s)),
            }
        })
        .collect();

    let errors = results
        .iter()
        .filter(|r| r.status != CallStatus::Ok)
        .map(|r| {
            let why = r.error.as_ref().map_or("", |e| e.message.as_str());
            format!("{} ({}): {}: {why}", r.id, r.name, r.status.as_str())
        })
        .collect();

    let mut counts = Map::new();
    for status in CallStatus::ALL {
        let n = results.iter().filter(|r| r.status == status).count();
        counts.insert(status.as_str().into(), json!(n));
    }
    let mut metadata = Map::new();
    metadata.insert(
        "execution_mode".into(),
        json!(if sequential { "sequential" } else { "parallel" }),
    );
    metadata.insert("calls".into(), json!(results.len()));
    metadata.insert("edges".into(), json!(plan.edges().len()));
    metadata.insert("levels".into(), json!(plan.level_groups().len()));
    metadata.insert(
        "max_parallel_calls".into(),
        json!(run.config.max_parallel_calls),
    );
    metadata.insert("peak_in_flight".into(), json!(run.peak_in_flight));
    metadata.insert("retries".into(), json!(run.retries));
    metadata.insert("planning_ms".into(), json!(ms_since(origin, planned_at)));
    metadata.insert("status_counts".into(), Value::Object(counts));

    ParallelExecutionResult {
        success: results.iter().all(CallResult::is_ok),
        results,
        total_time_ms,
        parallel_time_ms,
        sequential_time_estimate_ms,
        speedup,
        critical_path_ms,
        efficiency,
        batches,
        errors,
        metadata,
    }
}
