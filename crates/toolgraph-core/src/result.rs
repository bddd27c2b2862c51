//! What an execution returns: one [`CallResult`] per call, in input order, and the
//! measurements of the whole ([`ParallelExecutionResult`]).
//!
//! Results convert to the messages providers expect back: OpenAI `role: tool` messages and
//! an Anthropic user message of `tool_result` blocks.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// The tool returned an output.
    Ok,
    /// The tool failed, panicked, or its arguments could not be built.
    Error,
    /// The call ran past its timeout and was cancelled.
    Timeout,
    /// Not run: a call it depends on did not succeed.
    Skipped,
    /// Not finished: the execution was cancelled (fail-fast or by the caller).
    Cancelled,
    /// Was running when the process died, and its tool is not safe to run twice: what it
    /// did is unknown (set by `resume`).
    Interrupted,
}

impl CallStatus {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        self.name()
    }

    /// Every status, for exhaustive reports.
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Ok,
        CallStatus::Error,
        CallStatus::Timeout,
        CallStatus::Skipped,
        CallStatus::Cancelled,
        CallStatus::Interrupted,
    ];

    /// The status named `name` (`ok`, `error`, ...).
    pub fn parse(name: &str) -> Option<CallStatus> {
        CallStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    const fn name(self) -> &'static str {
        match self {
            CallStatus::Ok => "ok",
            CallStatus::Error => "error",
            CallStatus::Timeout => "timeout",
            CallStatus::Skipped => "skipped",
            CallStatus::Cancelled => "cancelled",
            CallStatus::Interrupted => "interrupted",
        }
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The tool returned an error it called transient.
    Transient,
    /// The tool returned an error it called permanent.
    Permanent,
    /// The tool panicked.
    Panic,
    /// The call timed out.
    Timeout,
    /// A `${...}` reference did not resolve.
    Reference,
    /// The arguments (after references resolved) break the tool's schema.
    Schema,
    /// A dependency did not succeed.
    Dependency,
    /// The execution was cancelled.
    Cancelled,
    /// The call can never fit the configured limits.
    Unschedulable,
    /// The process died while the call ran.
    Interrupted,
    /// Resolved arguments, an output, or the outputs an execution holds would pass a size
    /// limit (`max_argument_bytes`, `max_output_bytes`, `output_budget_bytes`).
    TooLarge,
    /// The approval policy or the person asked refused the call (see [`crate::approval`]).
    Denied,
}

/// A call's error: its kind and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// The kind.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResult {
    /// The call's id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// How it ended.
    pub status: CallStatus,
    /// The tool's output (when `ok`), shared with the recorders that hold it: never
    /// deep-cloned between the tool, the dependants that reference it, the sinks and here.
    pub output: Option<Arc<Value>>,
    /// The error (when not `ok`).
    pub error: Option<CallError>,
    /// Attempts made (0 when the call never ran).
    pub attempts: u32,
    /// Time from ready (all dependencies done) to start, in ms.
    pub queued_ms: f64,
    /// Start, in ms since the execution began (absent when it never ran).
    pub started_ms: Option<f64>,
    /// End, in ms since the execution began.
    pub finished_ms: Option<f64>,
    /// Measured run time (all attempts), in ms.
    pub duration_ms: f64,
    /// Dependency level (0 = no dependencies).
    pub level: u32,
    /// The worker process that ran the call (distributed execution); absent when it ran in
    /// this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// True when the result came from the cache (or from an identical call in flight at
    /// the same time): no tool ran for this call. Absent from JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The arguments the call ran with when the person approving it edited them; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_arguments: Option<Arc<Value>>,
}

impl CallResult {
    /// True when the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == CallStatus::Ok
    }

    /// The tool's output, when `ok`.
    pub fn output(&self) -> Option<&Value> {
        self.output.as_deref()
    }

    /// The text a model should read for this call.
    pub fn content_text(&self) -> String {
        match (&self.status, &self.output, &self.error) {
            (CallStatus::Ok, Some(v), _) => match &**v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            },
            (CallStatus::Ok, None, _) => String::new(),
            (status, _, Some(e)) => format!("{}: {}", status.as_str(), e.message),
            (status, _, None) => status.as_str().to_owned(),
        }
    }
}

/// The timing of one dependency level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    /// The level.
    pub level: u32,
    /// Its calls' ids.
    pub call_ids: Vec<String>,
    /// First start among its calls that ran, in ms since the execution began.
    pub started_ms: Option<f64>,
    /// Last end among them.
    pub finished_ms: Option<f64>,
    /// `finished_ms - started_ms`.
    pub duration_ms: f64,
}

/// Everything an execution returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParallelExecutionResult {
    /// True when every call succeeded.
    pub success: bool,
    /// One result per call, in input order.
    pub results: Vec<CallResult>,
    /// Makespan of the whole execution (planning included), in ms.
    pub total_time_ms: f64,
    /// From the first call's start to the last call's end, in ms.
    pub parallel_time_ms: f64,
    /// Sum of the measured durations: what one-at-a-time would have cost.
    pub sequential_time_estimate_ms: f64,
    /// `sequential_time_estimate_ms / parallel_time_ms` (1.0 in sequential mode).
    pub speedup: f64,
    /// Measured durations along the longest dependency chain: no schedule can beat it.
    pub critical_path_ms: f64,
    /// `critical_path_ms / total_time_ms`: 1.0 means the schedule was optimal.
    pub efficiency: f64,
    /// Dependency levels with their timing.
    pub batches: Vec<BatchReport>,
    /// One line per call that did not succeed.
    pub errors: Vec<String>,
    /// Execution mode, limits, counts, peak concurrency, and where it was recorded.
    pub metadata: ExecutionMetadata,
}

/// Whether calls ran in parallel or one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Under the limits, as dependencies allow.
    #[default]
    Parallel,
    /// One call at a time (`enable_parallel = false`).
    Sequential,
}

/// Calls per final status, in [`CallStatus::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Succeeded.
    pub ok: usize,
    /// Failed.
    pub error: usize,
    /// Ran out of time.
    pub timeout: usize,
    /// Not run: a dependency did not succeed.
    pub skipped: usize,
    /// Not finished: the execution was cancelled.
    pub cancelled: usize,
    /// Running when the process stopped; not run again (not idempotent).
    pub interrupted: usize,
}

impl StatusCounts {
    /// Counts `results` by status.
    pub fn of(results: &[CallResult]) -> Self {
        let mut counts = StatusCounts::default();
        for r in results {
            *match r.status {
                CallStatus::Ok => &mut counts.ok,
                CallStatus::Error => &mut counts.error,
                CallStatus::Timeout => &mut counts.timeout,
                CallStatus::Skipped => &mut counts.skipped,
                CallStatus::Cancelled => &mut counts.cancelled,
                CallStatus::Interrupted => &mut counts.interrupted,
            } += 1;
        }
        counts
    }
}

/// What a resume did with the calls a crash left (see `toolgraph resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResumeMetadata {
    /// Calls whose recorded outcome was kept.
    pub kept: usize,
    /// Calls running at the crash, idempotent, run again.
    pub rerun: usize,
    /// Calls running at the crash, not idempotent, reported `interrupted`.
    pub interrupted: usize,
}

/// The `metadata` of a [`ParallelExecutionResult`]: typed, serialised to the same JSON
/// object as always. The engine fills the run's figures, [`ParallelExecutionResult::from_calls`]
/// the counts, the runtime where it was recorded; fields a source does not know are left
/// out of the JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecutionMetadata {
    /// Dependency edges in the plan.
    pub edges: usize,
    /// The global limit the execution ran under.
    pub max_parallel_calls: usize,
    /// The most calls of this execution running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_in_flight: Option<usize>,
    /// Retries made (attempts beyond each call's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Time spent planning, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning_ms: Option<f64>,
    /// How many times the stored execution was resumed (results read back from a store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<i64>,
    /// Parallel or sequential.
    pub execution_mode: ExecutionMode,
    /// Calls in the batch.
    pub calls: usize,
    /// Dependency levels.
    pub levels: u32,
    /// Calls per final status.
    pub status_counts: StatusCounts,
    /// The id of the stored execution, when it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// What a resume did, for a resumed execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeMetadata>,
    /// Why recording failed, when it did (the calls ran and their results are complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_error: Option<String>,
}

/// The timing of each of `levels` levels, in two passes over the calls whatever the number
/// of levels (a chain has one per call); each level's id list is allocated once, to size.
fn level_reports(results: &[CallResult], levels: u32) -> Vec<BatchReport> {
    let mut sizes = vec![0usize; levels as usize];
    for r in results {
        sizes[r.level as usize] += 1;
    }
    let mut batches: Vec<BatchReport> = sizes
        .into_iter()
        .zip(0..)
        .map(|(size, level)| BatchReport {
            level,
            call_ids: Vec::with_capacity(size),
            started_ms: None,
            finished_ms: None,
            duration_ms: 0.0,
        })
        .collect();
    for r in results {
        let b = &mut batches[r.level as usize];
        b.call_ids.push(r.id.clone());
        if let Some(s) = r.started_ms {
            b.started_ms = Some(b.started_ms.map_or(s, |first| first.min(s)));
        }
        if let Some(f) = r.finished_ms {
            b.finished_ms = Some(b.finished_ms.map_or(f, |last| last.max(f)));
        }
    }
    for b in &mut batches {
        match (b.started_ms, b.finished_ms) {
            (Some(s), Some(f)) => b.duration_ms = round_ms(f - s),
            _ => (b.started_ms, b.finished_ms) = (None, None),
        }
    }
    batches
}

/// Rounds to a microsecond, for figures in ms. Never `-0.0` (the sum of no durations is
/// `-0.0` in Rust, and a figure must not print as `-0.0 ms`).
pub fn round_ms(x: f64) -> f64 {
    (x * 1e3).round() / 1e3 + 0.0
}

impl ParallelExecutionResult {
    /// The whole result from per-call results and the two figures that need more than
    /// them — the makespan (a clock) and the critical path (the graph): sequential time
    /// (sum of durations), first start to last end, speedup, efficiency, level timings,
    /// error lines, and `execution_mode` / `calls` / `levels` / `status_counts` filled in
    /// `metadata`. In sequential mode the speedup is 1 by definition.
    pub fn from_calls(
        results: Vec<CallResult>,
        total_time_ms: f64,
        critical_path_ms: f64,
        sequential_mode: bool,
        mut metadata: ExecutionMetadata,
    ) -> Self {
        let total_time_ms = round_ms(total_time_ms);
        let critical_path_ms = round_ms(critical_path_ms);
        let first_start = results
            .iter()
            .filter_map(|r| r.started_ms)
            .fold(f64::INFINITY, f64::min);
        let last_end = results
            .iter()
            .filter_map(|r| r.finished_ms)
            .fold(0.0, f64::max);
        let parallel_time_ms = if first_start.is_finite() {
            round_ms(last_end - first_start)
        } else {
            0.0
        };
        let sequential_time_estimate_ms = round_ms(results.iter().map(|r| r.duration_ms).sum());
        let speedup = if sequential_mode || total_time_ms <= 0.0 {
            1.0
        } else {
            round_ms(sequential_time_estimate_ms / total_time_ms)
        };
        let efficiency = if total_time_ms > 0.0 {
            round_ms((critical_path_ms / total_time_ms).min(1.0))
        } else {
            1.0
        };
        let levels = results.iter().map(|r| r.level + 1).max().unwrap_or(0);
        let batches = level_reports(&results, levels);
        let errors = results
            .iter()
            .filter(|r| !r.is_ok())
            .map(|r| {
                let why = r.error.as_ref().map_or("", |e| e.message.as_str());
                format!("{} ({}): {}: {why}", r.id, r.name, r.status.as_str())
            })
            .collect();
        metadata.execution_mode = if sequential_mode {
            ExecutionMode::Sequential
        } else {
            ExecutionMode::Parallel
        };
        metadata.calls = results.len();
        metadata.levels = levels;
        metadata.status_counts = StatusCounts::of(&results);
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

    /// OpenAI Chat Completions `role: tool` messages, one per call, in call order.
    pub fn to_openai_messages(&self) -> Vec<Value> {
        self.results
            .iter()
            .map(|r| json!({"role": "tool", "tool_call_id": r.id, "content": r.content_text()}))
            .collect()
    }

    /// One Anthropic `user` message holding a `tool_result` block per call, in call order.
    pub fn to_anthropic_message(&self) -> Value {
        let blocks: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let mut block = json!({"type": "tool_result", "tool_use_id": r.id, "content": r.content_text()});
                if !r.is_ok() {
                    block["is_error"] = Value::Bool(true);
                }
                block
            })
            .collect();
        json!({"role": "user", "content": blocks})
    }

    /// The result of one call, by id.
    pub fn get(&self, id: &str) -> Option<&CallResult> {
        self.results.iter().find(|r| r.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_rounded_and_never_negative_zero() {
        let none: f64 = [0.0f64; 0].iter().sum();
        assert!(none.is_sign_negative(), "Rust sums nothing to -0.0");
        assert!(round_ms(none).is_sign_positive());
        assert_eq!(round_ms(1.23456), 1.235);
    }

    fn ran(id: &str, level: u32, span: Option<(f64, f64)>) -> CallResult {
        CallResult {
            id: id.into(),
            name: "t".into(),
            status: if span.is_some() {
                CallStatus::Ok
            } else {
                CallStatus::Skipped
            },
            output: None,
            error: None,
            attempts: u32::from(span.is_some()),
            queued_ms: 0.0,
            started_ms: span.map(|s| s.0),
            finished_ms: span.map(|s| s.1),
            duration_ms: span.map_or(0.0, |(s, f)| f - s),
            level,
            worker: None,
            cached: false,
            edited_arguments: None,
        }
    }

    #[test]
    fn a_result_says_cached_only_when_it_came_from_the_cache() {
        let mut r = ran("a", 0, Some((0.0, 1.0)));
        let fresh = serde_json::to_value(&r).expect("serializes");
        assert!(fresh.get("cached").is_none(), "no cached key: {fresh}");
        r.cached = true;
        let hit = serde_json::to_value(&r).expect("serializes");
        assert_eq!(hit["cached"], true);
        let back: CallResult = serde_json::from_value(hit).expect("reads back");
        assert!(back.cached);
        let old: CallResult = serde_json::from_value(fresh).expect("JSON without the field");
        assert!(!old.cached);
    }

    #[test]
    fn a_result_names_its_worker_only_when_one_ran_it() {
        let mut r = ran("a", 0, Some((0.0, 1.0)));
        let local = serde_json::to_value(&r).expect("serializes");
        assert!(local.get("worker").is_none(), "no worker key: {local}");
        r.worker = Some("w-1".into());
        let remote = serde_json::to_value(&r).expect("serializes");
        assert_eq!(remote["worker"], "w-1");
        let back: CallResult = serde_json::from_value(remote).expect("reads back");
        assert_eq!(back.worker.as_deref(), Some("w-1"));
        let old: CallResult = serde_json::from_value(local).expect("JSON without the field");
        assert_eq!(old.worker, None);
    }

    #[test]
    fn levels_list_their_calls_in_input_order_with_first_start_and_last_end() {
        let results = vec![
            ran("a", 0, Some((0.5, 5.0))),
            ran("b", 1, None),
            ran("c", 0, Some((0.25, 7.0))),
            ran("d", 2, Some((10.0, 12.5))),
        ];
        let r = ParallelExecutionResult::from_calls(
            results,
            13.0,
            12.5,
            false,
            ExecutionMetadata::default(),
        );
        type Row<'a> = (u32, Vec<&'a str>, Option<f64>, Option<f64>, f64);
        let summary: Vec<Row> = r
            .batches
            .iter()
            .map(|b| {
                let ids = b.call_ids.iter().map(String::as_str).collect();
                (b.level, ids, b.started_ms, b.finished_ms, b.duration_ms)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, vec!["a", "c"], Some(0.25), Some(7.0), 6.75),
                (1, vec!["b"], None, None, 0.0),
                (2, vec!["d"], Some(10.0), Some(12.5), 2.5),
            ]
        );
        assert_eq!(r.metadata.levels, 3);
    }
}
