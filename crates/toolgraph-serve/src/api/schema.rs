//! OpenAPI schemas of the shapes the API sends that other crates define (results, history
//! lines, statistics, tool descriptions): hand-written mirrors of their serde form, used
//! only by the OpenAPI document — never constructed. schemathesis checks every answer
//! against them (`tests/schemathesis.rs`), so a field added to a core type without its
//! mirror here fails that test.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// How a call ended.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CallStatus {
    /// The tool returned an output.
    Ok,
    /// The tool failed, panicked, or its arguments could not be built.
    Error,
    /// The call ran past its timeout.
    Timeout,
    /// Not run: a call it depends on did not succeed.
    Skipped,
    /// Not finished: the execution was cancelled (or, while it runs, not ended yet).
    Cancelled,
    /// Running when the process died; not run again (not idempotent).
    Interrupted,
}

/// Why a call did not succeed.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A transient tool error.
    Transient,
    /// A permanent tool error.
    Permanent,
    /// The tool panicked.
    Panic,
    /// The call timed out.
    Timeout,
    /// A `${...}` reference did not resolve.
    Reference,
    /// The arguments break the tool's schema.
    Schema,
    /// A dependency did not succeed.
    Dependency,
    /// The execution was cancelled.
    Cancelled,
    /// The call can never fit the limits.
    Unschedulable,
    /// The process died while the call ran.
    Interrupted,
    /// A size limit would be passed.
    TooLarge,
    /// The approval policy or the person asked refused the call.
    Denied,
}

/// A call's error.
#[derive(ToSchema)]
pub struct CallError {
    /// The kind.
    kind: ErrorKind,
    /// The message.
    message: String,
}

/// The result of one call.
#[derive(ToSchema)]
pub struct CallResult {
    /// The call's id.
    id: String,
    /// The tool's name.
    name: String,
    /// How it ended.
    status: CallStatus,
    /// The tool's output (when ok): any JSON.
    output: Option<Value>,
    /// The error (when not ok).
    error: Option<CallError>,
    /// Attempts made.
    attempts: u32,
    /// Ready to start, ms.
    queued_ms: f64,
    /// Start, ms since the execution began.
    started_ms: Option<f64>,
    /// End, ms since the execution began.
    finished_ms: Option<f64>,
    /// Measured run time, ms.
    duration_ms: f64,
    /// Dependency level.
    level: u32,
    /// The worker process that ran the call (distributed execution); absent when it ran in
    /// this process.
    worker: Option<String>,
    /// True when the cache answered the call (no tool ran); absent otherwise.
    cached: Option<bool>,
}

/// The data of a `finished` event of an execution's event stream: how one call ended.
#[derive(ToSchema)]
pub struct FinishedEvent {
    /// The call's position in the batch.
    position: usize,
    /// The call's id.
    call_id: String,
    /// How it ended.
    status: CallStatus,
    /// Ready to start (or to the decision), ms.
    queued_ms: f64,
    /// Start, ms since the execution began (absent when it never ran).
    started_ms: Option<f64>,
    /// End, ms since the execution began.
    finished_ms: f64,
    /// Measured run time, ms.
    duration_ms: f64,
    /// Attempts made.
    attempts: u32,
    /// The tool's output (when ok): any JSON.
    output: Option<Value>,
    /// The error (when not ok).
    error: Option<CallError>,
    /// The worker process that ran the call (distributed execution); absent when it ran in
    /// this process.
    worker: Option<String>,
    /// True when the cache answered the call (no tool ran); absent otherwise.
    cached: Option<bool>,
}

/// The timing of one dependency level.
#[derive(ToSchema)]
pub struct BatchReport {
    /// The level.
    level: u32,
    /// Its calls' ids.
    call_ids: Vec<String>,
    /// First start, ms.
    started_ms: Option<f64>,
    /// Last end, ms.
    finished_ms: Option<f64>,
    /// Their span, ms.
    duration_ms: f64,
}

/// Parallel or sequential.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Under the limits, as dependencies allow.
    Parallel,
    /// One call at a time.
    Sequential,
}

/// Calls per final status.
#[derive(ToSchema)]
pub struct StatusCounts {
    /// Succeeded.
    ok: usize,
    /// Failed.
    error: usize,
    /// Timed out.
    timeout: usize,
    /// Skipped.
    skipped: usize,
    /// Cancelled.
    cancelled: usize,
    /// Interrupted.
    interrupted: usize,
}

/// What a resume did.
#[derive(ToSchema)]
pub struct ResumeMetadata {
    /// Outcomes kept.
    kept: usize,
    /// Calls run again.
    rerun: usize,
    /// Calls reported interrupted.
    interrupted: usize,
}

/// Mode, limits, counts, and where it was recorded.
#[derive(ToSchema)]
pub struct ExecutionMetadata {
    /// Edges in the plan.
    edges: usize,
    /// The global limit it ran under.
    max_parallel_calls: usize,
    /// Most calls at once.
    peak_in_flight: Option<usize>,
    /// Retries made.
    retries: Option<u32>,
    /// Planning time, ms.
    planning_ms: Option<f64>,
    /// Times resumed.
    resumed: Option<i64>,
    /// Parallel or sequential.
    execution_mode: ExecutionMode,
    /// Calls.
    calls: usize,
    /// Levels.
    levels: u32,
    /// Calls per status.
    status_counts: StatusCounts,
    /// The stored execution's id.
    execution_id: Option<String>,
    /// What a resume did.
    resume: Option<ResumeMetadata>,
    /// Why recording failed.
    recording_error: Option<String>,
}

/// Everything an execution returns (`toolgraph run --json`).
#[derive(ToSchema)]
pub struct ParallelExecutionResult {
    /// Every call succeeded.
    success: bool,
    /// One per call, in input order.
    results: Vec<CallResult>,
    /// Makespan, ms.
    total_time_ms: f64,
    /// First start to last end, ms.
    parallel_time_ms: f64,
    /// Sum of durations, ms.
    sequential_time_estimate_ms: f64,
    /// Sequential estimate / makespan.
    speedup: f64,
    /// Measured critical path, ms.
    critical_path_ms: f64,
    /// Critical path / makespan.
    efficiency: f64,
    /// Dependency levels with their timing.
    batches: Vec<BatchReport>,
    /// One line per call that did not succeed.
    errors: Vec<String>,
    /// Mode, limits, counts.
    metadata: ExecutionMetadata,
}

/// One line of history (the store's).
#[derive(ToSchema)]
pub struct ExecutionSummary {
    /// The id.
    id: String,
    /// Created, ms since the Unix epoch.
    created_at: i64,
    /// `running`, `finished`, `cancelled` (or `failed`: the server could not record it).
    status: String,
    /// Calls.
    calls: i64,
    /// Every call succeeded (once finished).
    success: Option<bool>,
    /// Makespan, ms.
    makespan_ms: Option<f64>,
    /// Speedup.
    speedup: Option<f64>,
    /// Efficiency.
    efficiency: Option<f64>,
    /// Times resumed.
    resumed: i64,
    /// The process running it, if any.
    owner: Option<String>,
    /// Its last heartbeat, ms since the Unix epoch.
    heartbeat_at: Option<i64>,
}

/// One tool's statistics.
#[derive(ToSchema)]
pub struct ToolStats {
    /// Calls.
    count: u64,
    /// Errors and timeouts.
    errors: u64,
    /// errors / count.
    error_rate: f64,
    /// Calls the cache answered (no tool ran).
    cache_hits: u64,
    /// cache_hits / count.
    hit_rate: f64,
    /// Mean of the calls that ran the tool, ms.
    mean_ms: f64,
    /// Median, ms.
    p50_ms: f64,
    /// 95th percentile, ms.
    p95_ms: f64,
    /// 99th percentile, ms.
    p99_ms: f64,
}

/// Statistics across the stored executions.
#[derive(ToSchema)]
pub struct PerformanceStats {
    /// Executions.
    total_executions: u64,
    /// Mean speedup.
    avg_speedup: f64,
    /// Mean makespan, ms.
    avg_execution_time_ms: f64,
    /// Mean success rate.
    avg_success_rate: f64,
    /// Mean efficiency.
    avg_efficiency: f64,
    /// Calls.
    total_calls: u64,
    /// Per tool name.
    tools: BTreeMap<String, ToolStats>,
}

/// A call's declared cost.
#[derive(ToSchema)]
pub struct ResourceCost {
    /// CPU units.
    cpu: f64,
    /// Memory, MiB.
    memory_mb: u64,
}

/// What the scheduler may assume about a tool.
#[derive(ToSchema)]
pub struct ToolTraits {
    /// False for an exclusive tool.
    parallel_safe: bool,
    /// At most this many at once.
    max_concurrency: Option<usize>,
    /// Safe to run twice.
    idempotent: bool,
    /// Runs on the blocking pool.
    blocking: bool,
    /// Cost per call.
    cost: ResourceCost,
    /// Default timeout, ms.
    timeout_ms: Option<u64>,
    /// What its calls may do, for approvals (`read_only`, `write`, `network_write`, `shell`,
    /// `destructive`); absent: derived per call from the resources it touches.
    #[schema(value_type = Option<String>)]
    approval_class: Option<String>,
}

/// A registered tool (`toolgraph tools --json`).
#[derive(ToSchema)]
pub struct ToolDescription {
    /// Name.
    name: String,
    /// What it does.
    description: String,
    /// The JSON schema of its arguments.
    parameters: Value,
    /// Scheduling traits.
    traits: ToolTraits,
    /// Why it has that class, when known.
    traits_reason: Option<String>,
}

/// One defect of a rejected batch.
#[derive(ToSchema)]
pub struct InputProblem {
    /// The call's id, when it has one.
    call_id: Option<String>,
    /// Its position (0-based), when about one call.
    position: Option<usize>,
    /// What is wrong.
    message: String,
}

/// One tool call as `toolgraph run` takes it (OpenAI and Anthropic shapes are accepted too).
#[derive(ToSchema)]
pub struct CallInput {
    /// Unique in the batch.
    id: String,
    /// The tool's name.
    name: String,
    /// The arguments; strings may reference earlier outputs as `${id}` or `${id.path}`.
    arguments: Value,
    /// Ids of calls that must succeed first.
    depends_on: Option<Vec<String>>,
    /// Higher runs first among ready calls.
    priority: Option<i64>,
    /// This call's timeout, ms.
    timeout_ms: Option<u64>,
}
