//! toolgraph's recorder: every execution, its calls, results, dependency edges, level
//! timings and metrics, kept by an [`ExecutionStore`]. Reads give history, a stored
//! execution, statistics across executions, pruning, and what `resume` needs after a crash.
//!
//! [`ExecutionStore`] is the seam: a dyn-compatible trait (`Arc<dyn ExecutionStore>`)
//! whose methods return boxed futures. Two stores implement it, with the same observable
//! behaviour (one shared test suite runs against both):
//! - [`Store`]: SQLite (default, a file created on first use, WAL mode) or PostgreSQL (a
//!   `postgres://` URL) — same schema on both, versioned migrations applied on open;
//! - [`MemoryStore`]: everything in this process, for tests and embedders without a
//!   database.
//!
//! [`open`] picks one by URL: `sqlite:…`, `postgres://…` / `postgresql://…`, or `memory:`.
//!
//! Writes during an execution go through an [`ExecutionRecorder`], an `EventSink` the
//! scheduler takes as a sink. The SQL store's recorder queues rows and lets a background
//! task write them in batched transactions, off the scheduler's hot path. For a call whose
//! tool is not idempotent, the recorder makes the "running" state durable *before* the tool
//! runs (write-ahead), so a crash never leaves a call that may have acted without a trace.
//! Figures are computed from the stored calls (module `stored`, shared by both stores), so
//! a resumed execution is measured over every run.
//!
//! Invariant: the engine never sees SQL; this crate never runs a tool.

mod database;
mod lease;
mod memory;
mod read;
mod recorder;
mod sql;
mod stored;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use toolgraph_core::{CallOutcome, EventSink, ParallelExecutionResult, ParallelExecutorConfig};
use toolgraph_engine::{PerformanceStats, Plan};

pub use database::{Backend, Store};
pub use lease::Claim;
pub use memory::MemoryStore;
pub use stored::{ExecutionSummary, ResumePoint, StoredExecution};

/// What toolgraph needs from a place that records executions. [`Store`] implements it for
/// SQLite and PostgreSQL, [`MemoryStore`] in memory; [`open`] picks one by URL.
///
/// Dyn-compatible: hold a store as `Arc<dyn ExecutionStore>`.
///
/// ```
/// use std::sync::Arc;
/// use serde_json::json;
/// use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet};
/// use toolgraph_engine::{ParallelExecutor, RunOptions};
/// use toolgraph_store::ExecutionStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn ExecutionStore> = toolgraph_store::open("memory:").await.unwrap();
/// let mut tools = ToolSet::new();
/// tools.register_fn("echo", |args, _ctx| async move { Ok(args) }).unwrap();
/// let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).unwrap();
/// let plan = executor.plan(vec![ToolCall::new("a", "echo", json!({"x": 1}))]).unwrap();
///
/// let id = store.begin_execution(&plan, &executor.config(), None).await.unwrap();
/// let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
/// let options = RunOptions { sink: Some(recorder.as_sink()), ..Default::default() };
/// executor.execute_plan_with(&plan, options).await;
/// recorder.close().await.unwrap();
/// let stored = store.finish_execution(&id).await.unwrap();
/// assert_eq!(stored.states, ["ok"]);
/// assert_eq!(stored.summary.status, "finished");
/// # });
/// ```
pub trait ExecutionStore: Send + Sync {
    /// Where this store keeps its record, for messages: its URL (any password hidden),
    /// or `memory:`.
    fn describe(&self) -> String;

    /// Records a planned execution before it runs: the execution, every call (pending) and
    /// every edge. Returns the new execution's id (a UUID v4).
    fn begin_execution<'a>(
        &'a self,
        plan: &'a Plan,
        config: &'a ParallelExecutorConfig,
        session: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>>;

    /// A recorder for execution `id` of `calls` calls, whose run begins now. `skip` marks
    /// positions whose outcome is already stored (a resumed execution's finished calls);
    /// `offset_ms` is how long after the execution's creation this run begins.
    fn recorder(
        &self,
        id: &str,
        calls: usize,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> Arc<dyn ExecutionRecorder>;

    /// Marks execution `id` finished, computing its figures from the stored calls (so a
    /// resumed execution's figures cover every run), and writes level timings and metrics.
    /// Returns the execution as now stored.
    fn finish_execution<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<StoredExecution, StoreError>>;

    /// One stored execution, rebuilt.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>>;

    /// The newest executions first, at most `limit`.
    fn history(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>>;

    /// Statistics over executions created since `since_ms` (epoch ms), optionally for one
    /// tool: the seed's `get_performance_stats`, across process lifetimes.
    fn performance_stats<'a>(
        &'a self,
        since_ms: i64,
        tool: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>>;

    /// What `resume` needs for execution `id`.
    fn resume_point<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>>;

    /// Marks execution `id` as being resumed once more.
    fn mark_resumed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Takes the lease on execution `id` for `owner` (an execution is run by one process at
    /// a time): granted when nobody holds it, `owner` already does, the holder's last
    /// heartbeat is older than `stale_ms` (it crashed), or the holder is `dead` (a holder
    /// known to have died, e.g. a process of this host that no longer exists); otherwise
    /// says who holds it.
    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        stale_ms: i64,
        dead: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Renews `owner`'s lease on `id`; false when the lease is not `owner`'s any more.
    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives up `owner`'s lease on `id` (nothing happens when it is not `owner`'s).
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes executions created before `cutoff_ms` (epoch ms) and everything they own.
    /// Returns how many executions went.
    fn prune(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// What is stored for execution `id`, counted per kind of record and named as the SQL
    /// tables are: `tool_calls`, `tool_results`, `dependency_edges`, `batches` (level
    /// timings) and `performance_metrics`; zeros for an unknown id. For integrity checks
    /// and tests.
    fn row_counts<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, StoreError>>;

    /// Records an execution that already ran (a chat turn): its plan, then every call's
    /// outcome from `result`, then its figures. Not write-ahead: for runs that were not
    /// recorded as they went. Returns the execution's id.
    fn record_completed<'a>(
        &'a self,
        plan: &'a Plan,
        config: &'a ParallelExecutorConfig,
        session: Option<&'a str>,
        result: &'a ParallelExecutionResult,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let id = self.begin_execution(plan, config, session).await?;
            let recorder = self.recorder(&id, plan.len(), Vec::new(), 0.0);
            for (i, r) in result.results.iter().enumerate() {
                let outcome = CallOutcome {
                    status: r.status,
                    output: r.output.as_ref(),
                    error: r.error.as_ref(),
                    attempts: r.attempts,
                    queued_ms: r.queued_ms,
                    started_ms: r.started_ms,
                    finished_ms: r.finished_ms.unwrap_or(0.0),
                };
                recorder.on_outcome(i, &outcome);
            }
            recorder.close().await?;
            self.finish_execution(&id).await?;
            Ok(id)
        })
    }
}

/// Records one execution's calls as they start and end: an [`EventSink`] to hand the
/// scheduler (through [`as_sink`](ExecutionRecorder::as_sink)), then
/// [`close`](ExecutionRecorder::close)d before the execution is finished.
///
/// `before_start` keeps the write-ahead promise: when it returns a future, the call's
/// "running" state is durable once that future resolves; when it returns `None`, it is
/// already recorded.
pub trait ExecutionRecorder: EventSink {
    /// This recorder as the sink the scheduler takes (`RunOptions::sink`).
    fn as_sink(&self) -> &dyn EventSink;

    /// Records everything still queued and stops. Returns how many starts and ends were
    /// recorded.
    fn close(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

// Both traits must stay dyn-compatible: naming their trait objects checks it.
const _: Option<(&dyn ExecutionStore, &dyn ExecutionRecorder)> = None;

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported store.
    #[error("unsupported store URL {0:?} (expected sqlite:, postgres:// or memory:)")]
    Url(String),
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No execution has that id.
    #[error("no execution {0} in the store")]
    NotFound(String),
    /// The stored data cannot be read back.
    #[error("stored execution {id}: {message}")]
    Corrupt {
        /// The execution.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The recorder's writer stopped.
    #[error("the recorder stopped: {0}")]
    Recorder(String),
}

/// Opens the store `url` names: `sqlite:…` (a file, created on first use),
/// `postgres://…` or `postgresql://…` (a server), or `memory:` (a fresh, empty
/// [`MemoryStore`]). SQL stores are migrated on open.
pub async fn open(url: &str) -> Result<Arc<dyn ExecutionStore>, StoreError> {
    if url == "memory:" || url == "memory://" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Ok(Arc::new(Store::open(url).await?))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
