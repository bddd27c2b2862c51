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
//! [`open`] picks one by URL: `sqlite:…`, `postgres://…` / `postgresql://…`, or `memory:`;
//! [`open_with`] takes [`StoreOptions`] too (timeouts, retries, queue size). Opening makes
//! one connection first, with a short timeout, so a wrong port or a file that is not a
//! database fails at once with its own error. [`open_existing`] opens a store only if it
//! already holds toolgraph's schema, creating nothing — for commands that only read.
//! [`sqlite_url`] writes a path as a URL (the configuration's default store is one, in the
//! user's data directory).
//!
//! Executions are named by UUIDs; [`ExecutionStore::resolve_id`] also takes a unique
//! prefix of one (at least [`MIN_ID_PREFIX`] characters), found with one bounded, indexed
//! range read ([`ExecutionStore::executions_by_prefix`]).
//!
//! Chat sessions are kept too ([`SessionTurn`]s, one per turn, written as each ends):
//! [`ExecutionStore::sessions`] lists them, [`ExecutionStore::load_session`] reads one
//! back, and [`ExecutionStore::resolve_session`] takes a unique prefix as executions do.
//!
//! Writes during an execution go through an [`ExecutionRecorder`], an `EventSink` the
//! scheduler takes as a sink. The SQL store's recorder queues rows (a bounded queue) and
//! lets a background task write them in batched transactions, off the scheduler's hot
//! path. For a call whose tool is not idempotent, the recorder makes the "running" state
//! durable *before* the tool runs (write-ahead), so a crash never leaves a call that may
//! have acted without a trace. Recording never stops the work: a failed write is tried
//! again a bounded number of times, then recording stops and the calls run on (see
//! [`StoreError::RecordingStopped`]); a call waits for durability for a bounded time (see
//! [`StoreError::NotDurable`]).
//! Figures are computed from the stored calls (module `stored`, shared by both stores), so
//! a resumed execution is measured over every run.
//!
//! Invariant: the engine never sees SQL; this crate never runs a tool.

mod cache;
mod database;
mod lease;
mod memory;
mod open;
mod options;
mod read;
mod recorder;
mod session;
mod sql;
mod stored;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use toolgraph_core::{
    CallOutcome, CallResult, EventSink, ParallelExecutionResult, ParallelExecutorConfig,
};
use toolgraph_engine::{PerformanceStats, Plan};

pub use database::{Backend, Store};
pub use lease::Claim;
pub use memory::MemoryStore;
pub use open::hide_password;
pub use options::StoreOptions;
pub use session::{SessionHead, SessionSummary, SessionTurn, StoredSession, title_of};
pub use stored::{ExecutionSummary, PruneRequest, Pruned, ResumePoint, StoredExecution};

/// The fewest characters of an execution id [`ExecutionStore::resolve_id`] takes as a
/// prefix (a whole id is 36).
pub const MIN_ID_PREFIX: usize = 4;

/// How many executions an ambiguous prefix lists, at most ([`StoreError::Ambiguous`]).
pub const MAX_CANDIDATES: usize = 10;

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

    /// Records the adaptive concurrency limits in force when execution `id` ended (key →
    /// limit; `toolgraph stats` shows the latest per key), replacing what was recorded for
    /// it. Call it after [`finish_execution`](ExecutionStore::finish_execution), which
    /// rewrites the execution's metrics. A store that keeps no statistics does nothing.
    fn record_adaptive_limits<'a>(
        &'a self,
        _id: &'a str,
        _limits: &'a BTreeMap<String, usize>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// One stored execution, rebuilt.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>>;

    /// The newest executions first, at most `limit`.
    fn history(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>>;

    /// The executions whose id starts with `prefix`, in id order, at most `limit`: one
    /// range read on the indexed id column. `prefix` is taken as given (no case folding,
    /// no checks); [`resolve_id`](ExecutionStore::resolve_id) is what front ends call.
    fn executions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ExecutionSummary>, StoreError>>;

    /// The execution `given` names: its whole id, or a prefix of one (at least
    /// [`MIN_ID_PREFIX`] characters, any case) that no other execution's id starts with.
    /// Errors say why not, naming this store: [`StoreError::BadId`] (too short, or not
    /// hexadecimal digits and dashes), [`StoreError::NotFound`] (no execution's id starts
    /// so), [`StoreError::Ambiguous`] (several do; up to [`MAX_CANDIDATES`] are listed).
    fn resolve_id<'a>(
        &'a self,
        given: &'a str,
    ) -> BoxFuture<'a, Result<ExecutionSummary, StoreError>> {
        Box::pin(async move {
            let prefix = id_prefix(given)?;
            let mut found = self
                .executions_by_prefix(&prefix, MAX_CANDIDATES + 1)
                .await?;
            if let Some(exact) = found.iter().position(|s| s.id == prefix) {
                return Ok(found.swap_remove(exact));
            }
            match found.len() {
                0 => Err(StoreError::not_found(given, &self.describe())),
                1 => Ok(found.swap_remove(0)),
                _ => {
                    let more = found.len() > MAX_CANDIDATES;
                    found.truncate(MAX_CANDIDATES);
                    Err(StoreError::Ambiguous {
                        prefix,
                        store: self.describe(),
                        candidates: found,
                        more,
                    })
                }
            }
        })
    }

    /// Writes `turn` as the next turn of session `head.id` — creating the session with its
    /// first turn (or completing one an execution created), keeping its title, updating its
    /// provider, model, totals and last activity — and returns the turn's number (1, 2, …).
    ///
    /// A store that keeps no sessions says so ([`StoreError::Unsupported`], the default).
    fn record_session_turn<'a>(
        &'a self,
        head: &'a SessionHead,
        turn: &'a SessionTurn,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        let _ = (head, turn);
        Box::pin(async { Err(StoreError::Unsupported("chat sessions")) })
    }

    /// The sessions, latest activity first, at most `limit`.
    fn sessions(&self, limit: i64) -> BoxFuture<'_, Result<Vec<SessionSummary>, StoreError>> {
        let _ = limit;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The sessions whose id starts with `prefix`, in id order, at most `limit` (as
    /// [`executions_by_prefix`](ExecutionStore::executions_by_prefix)).
    fn sessions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SessionSummary>, StoreError>> {
        let _ = (prefix, limit);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Session `id` (a whole id), with its turns and executions.
    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredSession, StoreError>> {
        Box::pin(async move {
            Err(StoreError::SessionNotFound {
                id: id.to_owned(),
                store: self.describe(),
            })
        })
    }

    /// The session `given` names: its whole id or a unique prefix of one, under the rules
    /// of [`resolve_id`](ExecutionStore::resolve_id); [`StoreError::SessionNotFound`] and
    /// [`StoreError::SessionAmbiguous`] say why not.
    fn resolve_session<'a>(
        &'a self,
        given: &'a str,
    ) -> BoxFuture<'a, Result<SessionSummary, StoreError>> {
        Box::pin(async move {
            let prefix = id_prefix(given)?;
            let mut found = self.sessions_by_prefix(&prefix, MAX_CANDIDATES + 1).await?;
            if let Some(exact) = found.iter().position(|s| s.id == prefix) {
                return Ok(found.swap_remove(exact));
            }
            match found.len() {
                0 => Err(StoreError::SessionNotFound {
                    id: given.to_owned(),
                    store: self.describe(),
                }),
                1 => Ok(found.swap_remove(0)),
                _ => {
                    let more = found.len() > MAX_CANDIDATES;
                    found.truncate(MAX_CANDIDATES);
                    Err(StoreError::SessionAmbiguous {
                        prefix,
                        store: self.describe(),
                        candidates: found,
                        more,
                    })
                }
            }
        })
    }

    /// Statistics over the finished executions created since `since_ms` (epoch ms),
    /// optionally for one tool: the seed's `get_performance_stats`, across process
    /// lifetimes. Executions that never finished (interrupted, or whose recording stopped)
    /// count nowhere, so the totals and the per-tool counts agree.
    fn performance_stats<'a>(
        &'a self,
        since_ms: i64,
        tool: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>>;

    /// What `resume` needs for execution `id`.
    fn resume_point<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>>;

    /// Marks execution `id` as being resumed once more. A cancelled execution's cancelled
    /// calls are reopened as a crash would have left them: `pending`, or `running` when
    /// they had started.
    fn mark_resumed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks finished execution `id` as `cancelled`: its run was stopped on request
    /// (Ctrl-C) and the calls it did not finish ended `cancelled`. Unlike a finished
    /// execution, it can be resumed: [`resume_point`](ExecutionStore::resume_point) counts
    /// its cancelled calls as not ended. It counts nowhere in the statistics until then.
    fn mark_cancelled<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

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

    /// Deletes the executions `request` selects, and everything they own: those created
    /// before its cutoff (and among its ids, when it names some) — except any whose lease is held by a live owner (a heartbeat
    /// younger than the request's lease timeout), and, unless the request includes them,
    /// those that never finished (`resume` could finish them). Returns what went (with
    /// `dry_run`, what would go; nothing is deleted) and what was kept, and why. The choice
    /// and the deletion are one statement: an execution claimed meanwhile is not deleted.
    fn prune<'a>(&'a self, request: &'a PruneRequest) -> BoxFuture<'a, Result<Pruned, StoreError>>;

    /// The cached value under `key` (`tool_cache`), unless there is none or it expired. The
    /// `store` backend of toolgraph's call cache; the value is whatever text was put.
    /// A store without a cache answers `None` (the default).
    fn cache_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let _ = key;
        Box::pin(async { Ok(None) })
    }

    /// Keeps `value` under `key` for `ttl_ms` from now, replacing what was there (a corrupt
    /// or expired entry included). `tool` names the tool, for inspection and pruning by hand.
    /// A store without a cache keeps nothing (the default).
    fn cache_put<'a>(
        &'a self,
        key: &'a str,
        tool: &'a str,
        value: &'a str,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (key, tool, value, ttl_ms);
        Box::pin(async { Ok(()) })
    }

    /// Removes the entry under `key`; true when there was one.
    fn cache_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = key;
        Box::pin(async { Ok(false) })
    }

    /// Removes every expired cache entry; returns how many went.
    fn cache_prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

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
            record_results(&*recorder, &result.results);
            recorder.close().await?;
            self.finish_execution(&id).await?;
            Ok(id)
        })
    }

    /// Writes the outcome of every call of `result` into execution `id`, except at the
    /// positions `skip` marks: how a record whose recorder stopped part-way
    /// ([`StoreError::RecordingStopped`]) is completed once the run is over. `offset_ms` is
    /// as for [`recorder`](ExecutionStore::recorder). Returns how many rows were written.
    ///
    /// The SQL store tries this once (no retries): the recorder already tried hard.
    fn record_outcomes<'a>(
        &'a self,
        id: &'a str,
        result: &'a ParallelExecutionResult,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let recorder = self.recorder(id, result.results.len(), skip, offset_ms);
            record_results(&*recorder, &result.results);
            recorder.close().await
        })
    }
}

/// Hands every call's outcome of `results` to `recorder`.
pub(crate) fn record_results(recorder: &dyn ExecutionRecorder, results: &[CallResult]) {
    for (i, r) in results.iter().enumerate() {
        let outcome = CallOutcome {
            status: r.status,
            output: r.output.as_ref(),
            error: r.error.as_ref(),
            attempts: r.attempts,
            queued_ms: r.queued_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms.unwrap_or(0.0),
            worker: r.worker.as_deref(),
            cached: r.cached,
        };
        recorder.on_outcome(i, &outcome);
    }
}

/// Records one execution's calls as they start and end: an [`EventSink`] to hand the
/// scheduler (through [`as_sink`](ExecutionRecorder::as_sink)), then
/// [`close`](ExecutionRecorder::close)d before the execution is finished.
///
/// `before_start` keeps the write-ahead promise for a call whose tool is not idempotent:
/// when it returns a future, the call's "running" state is durable once that future
/// resolves; when it returns `None`, it is already recorded. Two exceptions, both reported
/// by `close` and never stopping the call: recording stopped (a write failed for good), or
/// the store took longer than the durability timeout ([`StoreOptions`]). A recorder may
/// also return a future for an idempotent call, to make it wait for room in its queue.
pub trait ExecutionRecorder: EventSink {
    /// This recorder as the sink the scheduler takes (`RunOptions::sink`).
    fn as_sink(&self) -> &dyn EventSink;

    /// Records everything still queued and stops. Returns how many starts and ends were
    /// recorded, or why the record is not what it promised: [`StoreError::RecordingStopped`]
    /// (the record stops where a write failed for good; the run went on) or
    /// [`StoreError::NotDurable`] (the record is complete, but some calls went ahead before
    /// their start was durable).
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
    /// Opening the store failed: what was being done, the store (its URL, any password
    /// hidden), and the database's own error.
    #[error("{step} {url}: {cause}")]
    Open {
        /// What failed: `connecting to`, `reading`, `migrating the schema of`.
        step: &'static str,
        /// The store's URL, any password hidden.
        url: String,
        /// The database's error.
        cause: String,
    },
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A write took longer than its timeout ([`StoreOptions::write_timeout_ms`]).
    #[error("{what} took longer than {after_ms} ms")]
    TimedOut {
        /// The write.
        what: &'static str,
        /// The timeout.
        after_ms: u64,
    },
    /// No execution has that id (or an id starting so).
    #[error("no execution {id} in the store {store}")]
    NotFound {
        /// The id or prefix asked for.
        id: String,
        /// The store searched, as [`ExecutionStore::describe`] says it.
        store: String,
    },
    /// Several executions' ids start with the prefix given.
    #[error(
        "{prefix} is ambiguous in the store {store}: {} of its executions start so ({}{}); give more of the id",
        if *more { format!("more than {}", candidates.len()) } else { candidates.len().to_string() },
        candidates.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "),
        if *more { ", …" } else { "" }
    )]
    Ambiguous {
        /// The prefix, as searched (lower case).
        prefix: String,
        /// The store searched.
        store: String,
        /// The first executions in id order, at most [`MAX_CANDIDATES`].
        candidates: Vec<ExecutionSummary>,
        /// More executions match than are listed.
        more: bool,
    },
    /// The store does not keep this kind of record.
    #[error("this store keeps no {0}")]
    Unsupported(&'static str),
    /// No session has that id (or an id starting so).
    #[error("no session {id} in the store {store}")]
    SessionNotFound {
        /// The id or prefix asked for.
        id: String,
        /// The store searched.
        store: String,
    },
    /// Several sessions' ids start with the prefix given.
    #[error(
        "{prefix} is ambiguous in the store {store}: {} of its sessions start so ({}{}); give more of the id",
        if *more { format!("more than {}", candidates.len()) } else { candidates.len().to_string() },
        candidates.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "),
        if *more { ", …" } else { "" }
    )]
    SessionAmbiguous {
        /// The prefix, as searched (lower case).
        prefix: String,
        /// The store searched.
        store: String,
        /// The first sessions in id order, at most [`MAX_CANDIDATES`].
        candidates: Vec<SessionSummary>,
        /// More sessions match than are listed.
        more: bool,
    },
    /// What was given cannot be an execution id or a prefix of one.
    #[error("{given:?} is not an execution id: {reason}")]
    BadId {
        /// What was given.
        given: String,
        /// Why not.
        reason: String,
    },
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
    /// A write failed for good while the execution ran, so recording stopped there: the
    /// calls ran on, their results are complete, but the store holds only what was written
    /// before (later calls are still `pending` or `running` in it).
    #[error("recording execution {id} stopped after {written} row(s): {cause}")]
    RecordingStopped {
        /// The execution.
        id: String,
        /// Starts and ends written before recording stopped.
        written: u64,
        /// The last failure.
        cause: String,
    },
    /// Calls whose tool is not idempotent went ahead before their start was durable (the
    /// store took longer than [`StoreOptions::durable_timeout_ms`]). The record is
    /// complete; a crash at that time could have left those calls without a trace.
    #[error(
        "execution {id}: {calls} call(s) that must not run twice started before their start was durable (the store took longer than {timeout_ms} ms)"
    )]
    NotDurable {
        /// The execution.
        id: String,
        /// How many calls.
        calls: u64,
        /// The durability timeout.
        timeout_ms: u64,
    },
}

impl StoreError {
    /// [`StoreError::NotFound`] for `id` in `store`.
    pub(crate) fn not_found(id: &str, store: &str) -> StoreError {
        StoreError::NotFound {
            id: id.to_owned(),
            store: store.to_owned(),
        }
    }

    /// Whether trying the same write again may succeed: not for a constraint the data
    /// breaks, an execution that is gone, or data that cannot be read.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => {
                matches!(e.kind(), sqlx::error::ErrorKind::Other)
            }
            StoreError::Database(sqlx::Error::PoolClosed) => false,
            StoreError::Database(_) | StoreError::TimedOut { .. } | StoreError::Recorder(_) => true,
            _ => false,
        }
    }
}

/// Opens the store `url` names: `sqlite:…` (a file, created on first use),
/// `postgres://…` or `postgresql://…` (a server), or `memory:` (a fresh, empty
/// [`MemoryStore`]). SQL stores are migrated on open. Default [`StoreOptions`].
pub async fn open(url: &str) -> Result<Arc<dyn ExecutionStore>, StoreError> {
    open_with(url, StoreOptions::default()).await
}

/// [`open`] with `options` (ignored by the memory store, which cannot fail).
pub async fn open_with(
    url: &str,
    options: StoreOptions,
) -> Result<Arc<dyn ExecutionStore>, StoreError> {
    if is_memory(url) {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Ok(Arc::new(Store::open_with(url, options).await?))
}

/// The store `url` names if it exists already — a SQLite file, or a PostgreSQL database,
/// holding toolgraph's schema — else `None`, having created nothing (no file, no
/// directory, no table). A `memory:` store never exists before it is opened: `None`.
/// Default [`StoreOptions`]. For commands that only read: a store that is not there has
/// nothing recorded.
pub async fn open_existing(url: &str) -> Result<Option<Arc<dyn ExecutionStore>>, StoreError> {
    if is_memory(url) {
        return Ok(None);
    }
    let store = Store::open_existing_with(url, StoreOptions::default()).await?;
    Ok(store.map(|s| Arc::new(s) as Arc<dyn ExecutionStore>))
}

fn is_memory(url: &str) -> bool {
    url == "memory:" || url == "memory://"
}

/// A `sqlite://` URL for `path`: the characters the URL parser would read otherwise
/// (`%`, `?`, `#`) percent-encoded.
pub fn sqlite_url(path: &std::path::Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// `given` as an id prefix to search: lower case, at least [`MIN_ID_PREFIX`] characters,
/// hexadecimal digits and dashes only (what ids are made of).
fn id_prefix(given: &str) -> Result<String, StoreError> {
    let bad = |reason: String| StoreError::BadId {
        given: given.to_owned(),
        reason,
    };
    let prefix = given.trim().to_ascii_lowercase();
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_hexdigit() || *c == '-'))
    {
        return Err(bad(format!(
            "{c:?} is not a hexadecimal digit or a dash (ids look like 3f2c1a8e-…, as `toolgraph history` shows them)"
        )));
    }
    if prefix.len() < MIN_ID_PREFIX {
        return Err(bad(format!(
            "give at least {MIN_ID_PREFIX} characters of the id"
        )));
    }
    Ok(prefix)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
