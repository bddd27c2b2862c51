//! What a store holds, independent of where: the shapes it hands back (a history line, a
//! rebuilt execution, a resume point, what a prune took), the per-call record every backend
//! keeps, and the one place that turns stored calls into results and figures — so the SQL
//! store and the memory store cannot drift apart.
//!
//! Nothing here does I/O: backends read their rows, build [`CallRecord`]s, and call
//! [`rebuild`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use toolgraph_core::{
    CallError, CallOutcome, CallResult, CallStatus, ErrorKind, ParallelExecutionResult,
    ParallelExecutorConfig, ToolCall,
};
use toolgraph_engine::stats::percentile;
use toolgraph_engine::{Preset, ToolStats};

use crate::StoreError;

/// One line of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionSummary {
    /// The execution's id.
    pub id: String,
    /// When it was created, ms since the Unix epoch.
    pub created_at: i64,
    /// `running` (or interrupted, if nobody runs it), `finished`, or `cancelled` (stopped on
    /// request; `resume` finishes it).
    pub status: String,
    /// Calls in the batch.
    pub calls: i64,
    /// Every call succeeded (once finished).
    pub success: Option<bool>,
    /// Makespan.
    pub makespan_ms: Option<f64>,
    /// Speedup.
    pub speedup: Option<f64>,
    /// Efficiency.
    pub efficiency: Option<f64>,
    /// How many times it was resumed.
    pub resumed: i64,
    /// The process running it now, if any (see [`crate::Claim`]).
    pub owner: Option<String>,
    /// That owner's last heartbeat, ms since the Unix epoch.
    pub heartbeat_at: Option<i64>,
}

impl ExecutionSummary {
    /// True when it is `running` but nobody is: no owner, or its owner's heartbeat is
    /// older than `stale_ms` — the process running it crashed (`resume` finishes it).
    pub fn is_abandoned(&self, now_ms: i64, stale_ms: i64) -> bool {
        self.status == "running"
            && (self.owner.is_none()
                || self
                    .heartbeat_at
                    .is_none_or(|beat| now_ms.saturating_sub(beat) > stale_ms))
    }
}

impl ExecutionSummary {
    /// True when a process holds its lease and beat within `stale_ms`: that process may be
    /// running it now (whatever the status says), so nothing may delete it.
    pub fn is_live(&self, now_ms: i64, stale_ms: i64) -> bool {
        self.owner.is_some()
            && self
                .heartbeat_at
                .is_some_and(|beat| beat >= now_ms.saturating_sub(stale_ms))
    }
}

/// What [`ExecutionStore::prune`](crate::ExecutionStore::prune) deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRequest {
    /// Executions created before this (ms since the Unix epoch); `i64::MAX` for any age.
    pub created_before_ms: i64,
    /// Only these executions (whole ids, as [`resolve_id`](crate::ExecutionStore::resolve_id)
    /// gives them), when given; `None` for any. An id no execution has selects nothing.
    pub ids: Option<Vec<String>>,
    /// Executions that never finished go too (`resume` could have finished them).
    pub include_unfinished: bool,
    /// A lease whose heartbeat is younger than this (ms) is held by a live process: its
    /// execution stays, always. (A negative value counts every lease stale.)
    pub lease_timeout_ms: i64,
    /// Say what would go; delete nothing.
    pub dry_run: bool,
}

/// What a prune took and what it left among the executions old enough.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// Deleted (with `dry_run`: would be), oldest first.
    pub deleted: Vec<ExecutionSummary>,
    /// Kept: a live process holds the lease.
    pub kept_live: Vec<ExecutionSummary>,
    /// Kept: it never finished, and the request did not include those.
    pub kept_unfinished: Vec<ExecutionSummary>,
}

impl PruneRequest {
    /// Executions created before `created_before_ms`, any id, under the default rules:
    /// unfinished ones kept, live leases (younger than `lease_timeout_ms`) kept, deleted.
    pub fn older_than(created_before_ms: i64, lease_timeout_ms: i64) -> PruneRequest {
        PruneRequest {
            created_before_ms,
            ids: None,
            include_unfinished: false,
            lease_timeout_ms,
            dry_run: false,
        }
    }

    /// Whether an execution with this id, created then, is among those it selects (before
    /// the keep rules).
    pub(crate) fn selects(&self, id: &str, created_at: i64) -> bool {
        created_at < self.created_before_ms
            && self
                .ids
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|wanted| wanted == id))
    }

    /// The ids to select in bounded slices (a statement binds at most [`IDS_PER_STATEMENT`]
    /// of them), sorted and without duplicates: `[None]` when any id goes, no slice at all
    /// when the list is empty.
    pub(crate) fn id_slices(&self) -> Vec<Option<Vec<String>>> {
        match &self.ids {
            None => vec![None],
            Some(ids) => {
                let mut ids = ids.clone();
                ids.sort();
                ids.dedup();
                ids.chunks(IDS_PER_STATEMENT)
                    .map(|slice| Some(slice.to_vec()))
                    .collect()
            }
        }
    }
}

/// How many ids one prune statement binds at most (SQLite allows 32,766 parameters,
/// PostgreSQL 65,535); more are deleted slice by slice in one transaction.
pub(crate) const IDS_PER_STATEMENT: usize = 500;

impl Pruned {
    /// Sorts `old` (executions created before the cutoff) into what `request` deletes and
    /// what it keeps, at `now_ms` — the rule every store applies (the SQL store in its
    /// `DELETE`, with the same terms).
    pub(crate) fn sort(old: Vec<ExecutionSummary>, request: &PruneRequest, now_ms: i64) -> Pruned {
        let mut pruned = Pruned::default();
        for s in old {
            if s.is_live(now_ms, request.lease_timeout_ms) {
                pruned.kept_live.push(s);
            } else if s.status != "finished" && !request.include_unfinished {
                pruned.kept_unfinished.push(s);
            } else {
                pruned.deleted.push(s);
            }
        }
        pruned.order();
        pruned
    }

    /// Oldest first, ties by id, in every list.
    pub(crate) fn order(&mut self) {
        for list in [
            &mut self.deleted,
            &mut self.kept_live,
            &mut self.kept_unfinished,
        ] {
            list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        }
    }
}

/// A stored execution, rebuilt.
#[derive(Debug, Clone)]
pub struct StoredExecution {
    /// Its summary row.
    pub summary: ExecutionSummary,
    /// The calls as given.
    pub calls: Vec<ToolCall>,
    /// The executor configuration it ran with.
    pub config: ParallelExecutorConfig,
    /// Results and figures, computed from the stored calls. Calls that never ended appear
    /// with status `cancelled` and an error saying they are pending or were running.
    pub result: ParallelExecutionResult,
    /// Per position: the stored state (`pending`, `running`, or a final status).
    pub states: Vec<String>,
    /// Edges as `(from, to, reason)` positions.
    pub edges: Vec<(usize, usize, String)>,
    /// Positions on the measured critical path, in order.
    pub critical: Vec<usize>,
}

/// What `resume` needs: the calls, the configuration, and per call either an outcome to
/// keep or nothing (run it).
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// The calls as given.
    pub calls: Vec<ToolCall>,
    /// The configuration it ran with.
    pub config: ParallelExecutorConfig,
    /// Per position: the stored state.
    pub states: Vec<String>,
    /// Per position: outputs and errors of calls that ended.
    pub ended: Vec<Option<Preset>>,
    /// When the execution was created, ms since the Unix epoch.
    pub created_at: i64,
}

/// One call as a store keeps it: the call, its level, its state, and what is known of its
/// end (nothing until it ended).
#[derive(Debug, Clone)]
pub(crate) struct CallRecord {
    pub(crate) call: ToolCall,
    pub(crate) level: u32,
    /// `pending`, `running`, or a final status.
    pub(crate) state: String,
    pub(crate) attempts: u32,
    pub(crate) queued_ms: Option<f64>,
    pub(crate) started_ms: Option<f64>,
    pub(crate) finished_ms: Option<f64>,
    pub(crate) duration_ms: Option<f64>,
    pub(crate) error: Option<CallError>,
    pub(crate) output: Option<Arc<Value>>,
    /// The worker process that ran it, when another process did.
    pub(crate) worker: Option<String>,
    /// Answered by the cache: no tool ran.
    pub(crate) cached: bool,
}

impl CallRecord {
    /// A call recorded before anything ran.
    pub(crate) fn pending(call: ToolCall, level: u32) -> CallRecord {
        CallRecord {
            call,
            level,
            state: "pending".to_owned(),
            attempts: 0,
            queued_ms: None,
            started_ms: None,
            finished_ms: None,
            duration_ms: None,
            error: None,
            output: None,
            worker: None,
            cached: false,
        }
    }

    /// The call started: `running`, unless its end is already recorded.
    pub(crate) fn start(&mut self) {
        if self.state == "pending" || self.state == "running" {
            self.state = "running".to_owned();
        }
    }

    /// A call its cancelled execution's resume runs again: back to how a crash would have
    /// left it — `pending`, or `running` when it had started.
    pub(crate) fn reopen_cancelled(&mut self) {
        if self.state == "cancelled" {
            self.state = if self.started_ms.is_some() {
                "running"
            } else {
                "pending"
            }
            .to_owned();
        }
    }

    /// The call ended. An end without output keeps an output recorded earlier, as the SQL
    /// store's results table does.
    pub(crate) fn end(&mut self, ended: Ended) {
        self.duration_ms = ended.duration_ms();
        self.state = ended.status.as_str().to_owned();
        self.attempts = ended.attempts;
        self.queued_ms = Some(ended.queued_ms);
        self.started_ms = ended.started_ms;
        self.finished_ms = Some(ended.finished_ms);
        self.error = ended.error;
        self.worker = ended.worker;
        self.cached = ended.cached;
        if ended.output.is_some() {
            self.output = ended.output;
        }
    }
}

/// A call's end as a recorder receives it, shifted onto the execution's own clock.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) position: usize,
    pub(crate) status: CallStatus,
    pub(crate) output: Option<Arc<Value>>,
    pub(crate) error: Option<CallError>,
    pub(crate) attempts: u32,
    pub(crate) queued_ms: f64,
    /// Since the execution was created (this run's start plus the run's offset).
    pub(crate) started_ms: Option<f64>,
    pub(crate) finished_ms: f64,
    /// Epoch ms.
    pub(crate) finished_at: i64,
    /// The worker process that ran it, when another process did.
    pub(crate) worker: Option<String>,
    /// Answered by the cache: no tool ran.
    pub(crate) cached: bool,
}

impl Ended {
    /// The end of the call at `position` in a run that began `offset_ms` after the
    /// execution was created, at `base_ms` (epoch ms).
    pub(crate) fn new(position: usize, o: &CallOutcome<'_>, offset_ms: f64, base_ms: i64) -> Ended {
        Ended {
            position,
            status: o.status,
            output: o.output.cloned(),
            error: o.error.cloned(),
            attempts: o.attempts,
            queued_ms: o.queued_ms,
            started_ms: o.started_ms.map(|s| s + offset_ms),
            finished_ms: o.finished_ms + offset_ms,
            finished_at: base_ms + o.finished_ms as i64,
            worker: o.worker.map(str::to_owned),
            cached: o.cached,
        }
    }

    /// How long the call ran, when it started.
    pub(crate) fn duration_ms(&self) -> Option<f64> {
        self.started_ms.map(|s| (self.finished_ms - s).max(0.0))
    }
}

pub(crate) fn corrupt(id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.into(),
    }
}

/// An execution rebuilt from its stored calls and edges: results in input order and the
/// figures computed from them.
pub(crate) fn rebuild(
    summary: ExecutionSummary,
    config: ParallelExecutorConfig,
    records: Vec<CallRecord>,
    edges: Vec<(usize, usize, String)>,
) -> Result<StoredExecution, StoreError> {
    let n = records.len();
    // Positions from n on are the plan's joins (nodes between two groups of accesses to one
    // resource); a join sits between calls, and there are fewer joins than edges.
    let nodes = n + edges.len();
    let bad = |e: &&(usize, usize, String)| {
        let (f, t) = (e.0, e.1);
        f >= nodes || t >= nodes || (f >= n && t >= n)
    };
    if let Some((from, to, _)) = edges.iter().find(bad) {
        return Err(corrupt(
            &summary.id,
            format!("edge {from} → {to} names no call"),
        ));
    }
    let mut calls = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    for r in records {
        let (status, error) = match CallStatus::parse(&r.state) {
            Some(s) => (s, r.error),
            None => (
                CallStatus::Cancelled,
                Some(CallError {
                    kind: ErrorKind::Interrupted,
                    message: format!("never ended: {} when the record stops", r.state),
                }),
            ),
        };
        results.push(CallResult {
            id: r.call.id.clone(),
            name: r.call.name.clone(),
            status,
            output: r.output,
            error,
            attempts: r.attempts,
            queued_ms: r.queued_ms.unwrap_or(0.0),
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            duration_ms: r.duration_ms.unwrap_or(0.0),
            level: r.level,
            worker: r.worker,
            cached: r.cached,
            edited_arguments: None,
        });
        calls.push(r.call);
        states.push(r.state);
    }
    let (mut result, critical) = figures(results, &edges, &config, summary.resumed);
    result.metadata.execution_id = Some(summary.id.clone());
    Ok(StoredExecution {
        summary,
        calls,
        config,
        result,
        states,
        edges,
        critical,
    })
}

/// What `resume` needs from a stored execution. In a cancelled execution, a cancelled call
/// has not ended: it counts as a crash would have left it (`pending`, or `running` when it
/// had started), so resume runs it (again, if idempotent) like any interrupted call.
pub(crate) fn resume_point(stored: StoredExecution) -> ResumePoint {
    let cancelled = stored.summary.status == "cancelled";
    let mut states = stored.states;
    let ended = stored
        .result
        .results
        .iter()
        .zip(&mut states)
        .map(|(r, state)| {
            if cancelled && state == "cancelled" {
                *state = if r.started_ms.is_some() {
                    "running"
                } else {
                    "pending"
                }
                .to_owned();
            }
            CallStatus::parse(state).map(|status| Preset {
                status,
                output: r.output.clone(),
                error: r.error.clone(),
                attempts: r.attempts,
            })
        })
        .collect();
    ResumePoint {
        calls: stored.calls,
        config: stored.config,
        states,
        ended,
        created_at: stored.summary.created_at,
    }
}

/// The summary line once `finish_execution` stored the figures of `stored`.
pub(crate) fn mark_finished(stored: &mut StoredExecution) {
    let r = &stored.result;
    let s = &mut stored.summary;
    s.status = "finished".to_owned();
    s.success = Some(r.success);
    s.makespan_ms = Some(r.total_time_ms);
    s.speedup = Some(r.speedup);
    s.efficiency = Some(r.efficiency);
}

/// The metrics stored with a finished execution: name, value, unit.
pub(crate) fn metrics(r: &ParallelExecutionResult) -> [(&'static str, f64, &'static str); 6] {
    let ok = r.results.iter().filter(|c| c.is_ok()).count() as f64;
    let n = r.results.len().max(1) as f64;
    [
        ("parallel_speedup", r.speedup, "ratio"),
        ("parallel_execution_time_ms", r.total_time_ms, "ms"),
        (
            "sequential_time_estimate_ms",
            r.sequential_time_estimate_ms,
            "ms",
        ),
        ("critical_path_ms", r.critical_path_ms, "ms"),
        ("parallel_efficiency", r.efficiency, "ratio"),
        ("success_rate", ok / n, "ratio"),
    ]
}

/// The name of an adaptive limit's metric is this prefix and its key (`adaptive_limit:host:a.example`).
pub(crate) const ADAPTIVE_LIMIT_PREFIX: &str = "adaptive_limit:";

/// The states of calls that count in per-tool statistics: those that ran and ended.
pub(crate) const TOOL_STATS_STATES: [&str; 4] = ["ok", "error", "timeout", "interrupted"];

/// Per-tool statistics gathered one stored call at a time.
#[derive(Default)]
pub(crate) struct ToolTally {
    /// Per tool: calls, errors, cache hits, run times of the calls that ran the tool.
    per_tool: BTreeMap<String, (u64, u64, u64, Vec<f64>)>,
}

impl ToolTally {
    /// Counts one call of `tool` that ended in `state` after `duration_ms`; a `cached` one
    /// is a hit, not a sample of the tool's run time.
    pub(crate) fn add(
        &mut self,
        tool: String,
        state: &str,
        duration_ms: Option<f64>,
        cached: bool,
    ) {
        let entry = self.per_tool.entry(tool).or_default();
        entry.0 += 1;
        if state != "ok" {
            entry.1 += 1;
        }
        if cached {
            entry.2 += 1;
        } else {
            entry.3.push(duration_ms.unwrap_or(0.0));
        }
    }

    /// Counts, error rates and latency percentiles per tool.
    pub(crate) fn finish(self) -> BTreeMap<String, ToolStats> {
        self.per_tool
            .into_iter()
            .map(|(name, (count, errors, hits, mut d))| {
                d.sort_by(f64::total_cmp);
                let mean = if d.is_empty() {
                    0.0
                } else {
                    d.iter().sum::<f64>() / d.len() as f64
                };
                let stats = ToolStats {
                    count,
                    errors,
                    error_rate: if count == 0 {
                        0.0
                    } else {
                        errors as f64 / count as f64
                    },
                    cache_hits: hits,
                    hit_rate: if count == 0 {
                        0.0
                    } else {
                        hits as f64 / count as f64
                    },
                    mean_ms: mean,
                    p50_ms: percentile(&d, 50.0),
                    p95_ms: percentile(&d, 95.0),
                    p99_ms: percentile(&d, 99.0),
                };
                (name, stats)
            })
            .collect()
    }
}

/// The figures of a stored execution, from its calls and edges.
fn figures(
    results: Vec<CallResult>,
    edges: &[(usize, usize, String)],
    config: &ParallelExecutorConfig,
    resumed: i64,
) -> (ParallelExecutionResult, Vec<usize>) {
    let n = results.len();
    let total = results
        .iter()
        .filter_map(|r| r.finished_ms)
        .fold(0.0, f64::max);
    // Longest chain of durations: Kahn's order over the stored edges. Nodes from n on are
    // joins: they take no time and are not on the reported path.
    let nodes = edges
        .iter()
        .map(|(f, t, _)| f.max(t) + 1)
        .fold(n, usize::max);
    let duration = |i: usize| results.get(i).map_or(0.0, |r| r.duration_ms);
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    let mut indeg = vec![0usize; nodes];
    for (f, t, _) in edges {
        out[*f].push(*t);
        indeg[*t] += 1;
    }
    let mut best = vec![0.0f64; nodes];
    let mut queue: Vec<usize> = (0..nodes).filter(|&i| indeg[i] == 0).collect();
    let mut head = 0;
    while head < queue.len() {
        let i = queue[head];
        head += 1;
        best[i] += duration(i);
        for &t in &out[i] {
            best[t] = best[t].max(best[i]);
            indeg[t] -= 1;
            if indeg[t] == 0 {
                queue.push(t);
            }
        }
    }
    let critical = best.iter().copied().fold(0.0, f64::max);
    // Walk back from the call where the longest chain ends.
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for (f, t, _) in edges {
        preds[*t].push(*f);
    }
    let mut path = Vec::new();
    let mut at = (0..n).max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a)));
    while let Some(i) = at {
        if i < n {
            path.push(i);
        }
        let want = best[i] - duration(i);
        at = preds[i]
            .iter()
            .copied()
            .filter(|&p| (best[p] - want).abs() < 1e-6)
            .max_by(|&a, &b| best[a].total_cmp(&best[b]));
    }
    path.reverse();
    let metadata = toolgraph_core::ExecutionMetadata {
        edges: edges.len(),
        max_parallel_calls: config.max_parallel_calls,
        resumed: Some(resumed),
        ..toolgraph_core::ExecutionMetadata::default()
    };
    let result = ParallelExecutionResult::from_calls(
        results,
        total,
        critical,
        !config.enable_parallel,
        metadata,
    );
    (result, path)
}
