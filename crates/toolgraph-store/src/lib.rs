//! toolgraph's recorder: every execution, its calls, results, dependency edges, level
//! timings and metrics, in SQLite (default, a file created on first use, WAL mode) or
//! PostgreSQL (a `postgres://` URL) — same schema and behaviour on both, versioned
//! migrations applied on open. Reads give history, a stored execution, statistics across
//! process lifetimes, pruning, and what `resume` needs after a crash.
//!
//! Writes during an execution go through a [`Recorder`]: an `EventSink` that queues rows
//! and lets a background task write them in batched transactions, off the scheduler's hot
//! path. For a call whose tool is not idempotent, the recorder makes the "running" row
//! durable *before* the tool runs (write-ahead), so a crash never leaves a call that may
//! have acted without a trace.
//!
//! Invariant: the engine never sees SQL; this crate never runs a tool.

mod read;
mod recorder;
mod sql;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, AssertSqlSafe, Executor};
use toolgraph_core::ParallelExecutorConfig;
use toolgraph_engine::Plan;

pub use read::{ExecutionSummary, ResumePoint, StoredExecution};

use std::future::Future;

use toolgraph_engine::PerformanceStats;

/// What toolgraph needs from a place that records executions. [`Store`] implements it for
/// SQLite and PostgreSQL.
pub trait ExecutionStore: Send + Sync {
    /// Records a planned execution before it runs: the execution, every call (pending) and
    /// every edge. Returns the new execution's id.
    fn begin_execution(
        &self,
        plan: &Plan,
        config: &ParallelExecutorConfig,
        session: Option<&str>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// A recorder for execution `id` of `calls` calls, whose run begins now. `skip` marks
    /// positions whose outcome is already stored (a resumed execution's finished calls);
    /// `offset_ms` is how long after the execution's creation this run begins.
    fn recorder(&self, id: &str, calls: usize, skip: Vec<bool>, offset_ms: f64) -> Recorder;

    /// Marks execution `id` finished, computing its figures from the stored calls (so a
    /// resumed execution's figures cover every run), and writes level timings and metrics.
    fn finish_execution(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;

    /// One stored execution, rebuilt.
    fn load(&self, id: &str) -> impl Future<Output = Result<StoredExecution, StoreError>> + Send;

    /// The newest executions first.
    fn history(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ExecutionSummary>, StoreError>> + Send;

    /// Statistics over executions created since `since_ms` (epoch ms), optionally for one
    /// tool: the seed's `get_performance_stats`, across process lifetimes.
    fn performance_stats(
        &self,
        since_ms: i64,
        tool: Option<&str>,
    ) -> impl Future<Output = Result<PerformanceStats, StoreError>> + Send;

    /// What `resume` needs for execution `id`.
    fn resume_point(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ResumePoint, StoreError>> + Send;

    /// Marks execution `id` as being resumed once more.
    fn mark_resumed(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes executions created before `cutoff_ms` (epoch ms) and everything they own.
    /// Returns how many executions went.
    fn prune(&self, cutoff_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
pub use recorder::Recorder;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?} (expected sqlite:// or postgres://)")]
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

/// A connection pool to the store, with the schema migrated.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (and for SQLite creates) the store at `url`, applying migrations.
    ///
    /// `sqlite://toolgraph.db` is a file relative to the current directory;
    /// `postgres://user@host/db` a server.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut url = format!("sqlite:{rest}");
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        let mut options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        // A new SQLite file opened by several processes at once races on switching to WAL
        // and on migrating (SQLite has no migration lock); the loser's step fails or rolls
        // back, and on retry finds the work done.
        let mut attempt = 0u64;
        let pool = loop {
            match Store::prepare(&options, &url, backend).await {
                Ok(pool) => break pool,
                Err(_) if backend == Backend::Sqlite && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Store { pool, backend })
    }

    async fn prepare(
        options: &AnyPoolOptions,
        url: &str,
        backend: Backend,
    ) -> Result<AnyPool, StoreError> {
        let pool = options.clone().connect(url).await?;
        match backend {
            Backend::Sqlite => {
                pool.execute("PRAGMA journal_mode = WAL").await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            }
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(pool)
    }

    /// Records an execution that already ran (a chat turn): its plan, then every call's
    /// outcome from `result`, then its figures. Not write-ahead: for runs that were not
    /// recorded as they went. Returns the execution's id.
    pub async fn record_completed(
        &self,
        plan: &Plan,
        config: &ParallelExecutorConfig,
        session: Option<&str>,
        result: &toolgraph_core::ParallelExecutionResult,
    ) -> Result<String, StoreError> {
        use toolgraph_core::{CallOutcome, EventSink};
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
    }

    /// A new unique id (for sessions).
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// The database behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

impl ExecutionStore for Store {
    /// Records a planned execution before it runs: the execution, every call (pending)
    /// and every edge. Returns the new execution's id.
    async fn begin_execution(
        &self,
        plan: &Plan,
        config: &ParallelExecutorConfig,
        session: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let created = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(session) = session {
            sqlx::query(
                "INSERT INTO sessions (id, created_at, label) VALUES ($1, $2, NULL) ON CONFLICT (id) DO NOTHING",
            )
            .bind(session)
            .bind(created)
            .execute(&mut *tx)
            .await?;
        }
        let config_json = serde_json::to_string(config).unwrap_or_else(|_| "{}".into());
        // NULL is written as a literal: the any-driver's NULL parameters are not portable.
        let insert = if session.is_some() {
            "INSERT INTO executions (id, session_id, created_at, status, config, call_count) VALUES ($1, $5, $2, 'running', $3, $4)"
        } else {
            "INSERT INTO executions (id, session_id, created_at, status, config, call_count) VALUES ($1, NULL, $2, 'running', $3, $4)"
        };
        let mut q = sqlx::query(insert)
            .bind(&id)
            .bind(created)
            .bind(config_json)
            .bind(plan.len() as i64);
        if let Some(session) = session {
            q = q.bind(session);
        }
        q.execute(&mut *tx).await?;
        let levels = plan.levels();
        let rows: Vec<Vec<sql::Param>> = plan
            .calls()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let call = &c.call;
                vec![
                    sql::Param::Text(id.clone()),
                    sql::Param::Int(i as i64),
                    sql::Param::Text(call.id.clone()),
                    sql::Param::Text(call.name.clone()),
                    sql::Param::Text(call.arguments.to_string()),
                    sql::Param::Text(Value::from(call.depends_on.clone()).to_string()),
                    sql::Param::Int(call.priority),
                    sql::Param::OptInt(call.timeout_ms.map(|t| t as i64)),
                    sql::Param::Int(i64::from(levels[i])),
                ]
            })
            .collect();
        sql::insert_rows(
            &mut tx,
            "INSERT INTO tool_calls (execution_id, position, call_id, tool, arguments, depends_on, priority, timeout_ms, level, status) VALUES ",
            &rows,
            "'pending'",
            "",
        )
        .await?;
        let edges: Vec<Vec<sql::Param>> = plan
            .edges()
            .iter()
            .map(|e| {
                vec![
                    sql::Param::Text(id.clone()),
                    sql::Param::Int(e.from as i64),
                    sql::Param::Int(e.to as i64),
                    sql::Param::Text(e.reason.to_string()),
                ]
            })
            .collect();
        sql::insert_rows(
            &mut tx,
            "INSERT INTO dependency_edges (execution_id, from_position, to_position, reason) VALUES ",
            &edges,
            "",
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A recorder for execution `id` of `calls` calls, whose run begins now. `skip` marks
    /// positions whose outcome is already stored (a resumed execution's finished calls);
    /// `offset_ms` is how long after the execution's creation this run begins.
    fn recorder(&self, id: &str, calls: usize, skip: Vec<bool>, offset_ms: f64) -> Recorder {
        Recorder::start(self.clone(), id.to_owned(), calls, skip, offset_ms)
    }

    /// Marks execution `id` finished, computing its figures from the stored calls (so a
    /// resumed execution's figures cover every run), and writes level timings and metrics.
    async fn finish_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let stored = self.fetch_execution(id).await?;
        let r = &stored.result;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE executions SET status = 'finished', finished_at = $2, success = $3, makespan_ms = $4, sequential_ms = $5, speedup = $6, critical_path_ms = $7, efficiency = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(i64::from(r.success))
        .bind(r.total_time_ms)
        .bind(r.sequential_time_estimate_ms)
        .bind(r.speedup)
        .bind(r.critical_path_ms)
        .bind(r.efficiency)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM batches WHERE execution_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let batches: Vec<Vec<sql::Param>> = r
            .batches
            .iter()
            .map(|b| {
                vec![
                    sql::Param::Text(id.to_owned()),
                    sql::Param::Int(i64::from(b.level)),
                    sql::Param::Int(b.call_ids.len() as i64),
                    sql::Param::OptReal(b.started_ms),
                    sql::Param::OptReal(b.finished_ms),
                ]
            })
            .collect();
        sql::insert_rows(
            &mut tx,
            "INSERT INTO batches (execution_id, level, call_count, started_ms, finished_ms) VALUES ",
            &batches,
            "",
            "",
        )
        .await?;
        let ok = r.results.iter().filter(|c| c.is_ok()).count() as f64;
        let n = r.results.len().max(1) as f64;
        let metrics = [
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
        ];
        sqlx::query("DELETE FROM performance_metrics WHERE execution_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<Vec<sql::Param>> = metrics
            .iter()
            .map(|(name, value, unit)| {
                let meta =
                    serde_json::json!({"calls": r.results.len(), "edges": r.metadata.get("edges")});
                vec![
                    sql::Param::Text(id.to_owned()),
                    sql::Param::Text((*name).to_owned()),
                    sql::Param::Real(*value),
                    sql::Param::Text((*unit).to_owned()),
                    sql::Param::Text(meta.to_string()),
                    sql::Param::Int(now),
                ]
            })
            .collect();
        sql::insert_rows(
            &mut tx,
            "INSERT INTO performance_metrics (execution_id, name, value, unit, metadata, recorded_at) VALUES ",
            &rows,
            "",
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Deletes executions created before `cutoff_ms` (epoch ms) and everything they own.
    /// Returns how many executions went.
    async fn prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let old = "(SELECT id FROM executions WHERE created_at < $1)";
        for table in [
            "tool_results",
            "tool_calls",
            "dependency_edges",
            "batches",
            "performance_metrics",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE execution_id IN {old}"
            )))
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        }
        let gone = sqlx::query("DELETE FROM executions WHERE created_at < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone.rows_affected())
    }

    async fn load(&self, id: &str) -> Result<StoredExecution, StoreError> {
        self.fetch_execution(id).await
    }

    async fn history(&self, limit: i64) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.fetch_history(limit).await
    }

    async fn performance_stats(
        &self,
        since_ms: i64,
        tool: Option<&str>,
    ) -> Result<PerformanceStats, StoreError> {
        self.fetch_stats(since_ms, tool).await
    }

    async fn resume_point(&self, id: &str) -> Result<ResumePoint, StoreError> {
        self.fetch_resume_point(id).await
    }

    async fn mark_resumed(&self, id: &str) -> Result<(), StoreError> {
        self.set_resumed(id).await
    }
}
