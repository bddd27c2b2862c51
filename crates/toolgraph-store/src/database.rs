//! [`Store`]: the [`ExecutionStore`] over SQLite or PostgreSQL (sqlx's any-driver) — the
//! writes that bracket an execution (begin, finish, prune). Opening and migrating are in
//! `open`, reads in `read`, the per-call writes of a running execution in `recorder`.
//!
//! This is the only module family of the workspace that speaks SQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{AnyPool, AssertSqlSafe};
use toolgraph_core::{ParallelExecutionResult, ParallelExecutorConfig};
use toolgraph_engine::{PerformanceStats, Plan};

use crate::read::{self, SUMMARY_COLUMNS};
use crate::recorder::Recorder;
use crate::stored::{
    self, ADAPTIVE_LIMIT_PREFIX, ExecutionSummary, PruneRequest, Pruned, ResumePoint,
    StoredExecution,
};
use crate::{
    ExecutionRecorder, ExecutionStore, SessionHead, SessionSummary, SessionTurn, StoreError,
    StoreOptions, StoredSession, now_ms, record_results, sql,
};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The head of the multi-row insert of `performance_metrics` rows (figures and adaptive
/// limits alike).
const INSERT_METRICS: &str = "INSERT INTO performance_metrics (execution_id, name, value, unit, metadata, recorded_at) VALUES ";

impl Backend {
    /// `WHERE` terms (and order) for the executions whose id is `$1` or after it in byte
    /// order: the ids that start with a prefix come first, together.
    pub(crate) fn ids_from(self) -> &'static str {
        match self {
            Backend::Sqlite => "id >= $1 ORDER BY id",
            Backend::Postgres => r#"id COLLATE "C" >= $1 ORDER BY id COLLATE "C""#,
        }
    }
}

/// A connection pool to a SQLite or PostgreSQL store, with the schema migrated.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL it was opened with, any password hidden.
    shown: Arc<str>,
    options: StoreOptions,
}

impl Store {
    /// A store over `pool`, opened from a URL shown as `shown`.
    pub(crate) fn from_parts(
        pool: AnyPool,
        backend: Backend,
        shown: Arc<str>,
        options: StoreOptions,
    ) -> Store {
        Store {
            pool,
            backend,
            shown,
            options,
        }
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

    /// The URL it was opened with, any password hidden.
    pub(crate) fn shown(&self) -> String {
        self.shown.to_string()
    }

    pub(crate) fn options(&self) -> StoreOptions {
        self.options
    }

    async fn insert_execution(
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

    /// Computes execution `id`'s figures from its stored calls and writes them. Reading
    /// takes as long as the execution is large; the write, a handful of rows, is tried as
    /// every write of the store is ([`StoreOptions::retrying`]).
    async fn store_figures(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let mut stored = self.fetch_execution(id).await?;
        self.options
            .retrying("finishing the execution", || {
                self.write_figures(id, &stored)
            })
            .await?;
        stored::mark_finished(&mut stored);
        Ok(stored)
    }

    /// Replaces execution `id`'s `adaptive_limit:KEY` metrics with `limits`.
    async fn write_adaptive_limits(
        &self,
        id: &str,
        limits: &BTreeMap<String, usize>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM performance_metrics WHERE execution_id = $1 AND substr(name, 1, 15) = 'adaptive_limit:'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<Vec<sql::Param>> = limits
            .iter()
            .map(|(key, limit)| {
                vec![
                    sql::Param::Text(id.to_owned()),
                    sql::Param::Text(format!("{ADAPTIVE_LIMIT_PREFIX}{key}")),
                    sql::Param::Real(*limit as f64),
                    sql::Param::Text("calls".to_owned()),
                    sql::Param::Text(serde_json::json!({ "key": key }).to_string()),
                    sql::Param::Int(now),
                ]
            })
            .collect();
        if !rows.is_empty() {
            sql::insert_rows(&mut tx, INSERT_METRICS, &rows, "", "").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn write_figures(&self, id: &str, stored: &StoredExecution) -> Result<(), StoreError> {
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
        sqlx::query("DELETE FROM performance_metrics WHERE execution_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let meta =
            serde_json::json!({"calls": r.results.len(), "edges": r.metadata.edges}).to_string();
        let rows: Vec<Vec<sql::Param>> = stored::metrics(r)
            .iter()
            .map(|(name, value, unit)| {
                vec![
                    sql::Param::Text(id.to_owned()),
                    sql::Param::Text((*name).to_owned()),
                    sql::Param::Real(*value),
                    sql::Param::Text((*unit).to_owned()),
                    sql::Param::Text(meta.clone()),
                    sql::Param::Int(now),
                ]
            })
            .collect();
        sql::insert_rows(&mut tx, INSERT_METRICS, &rows, "", "").await?;
        tx.commit().await?;
        Ok(())
    }

    /// What `request` deletes, chosen and deleted by one `DELETE … RETURNING` (so a lease
    /// taken meanwhile keeps its execution; a long list of ids takes one per slice, in one
    /// transaction); the rows an execution owns go with it by the schema's cascades. Then
    /// the selected executions left are read, to say why they stayed.
    async fn delete_old(&self, request: &PruneRequest) -> Result<Pruned, StoreError> {
        let now = now_ms();
        let live_after = now.saturating_sub(request.lease_timeout_ms);
        let mut tx = self.pool.begin().await?;
        let mut deleted = Vec::new();
        let mut left = Vec::new();
        for ids in request.id_slices() {
            if !request.dry_run {
                // The terms of `Pruned::sort`, in SQL.
                let sql = format!(
                    "DELETE FROM executions WHERE {} \
                     AND NOT (owner IS NOT NULL AND heartbeat_at IS NOT NULL AND heartbeat_at >= $2) \
                     AND (status = 'finished' OR $3 = 1) RETURNING {SUMMARY_COLUMNS}",
                    selection(ids.as_deref(), 4)
                );
                let mut query = sqlx::query(AssertSqlSafe(sql))
                    .bind(request.created_before_ms)
                    .bind(live_after)
                    .bind(i64::from(request.include_unfinished));
                for id in ids.iter().flatten() {
                    query = query.bind(id.as_str());
                }
                deleted.extend(query.fetch_all(&mut *tx).await?);
            }
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM executions WHERE {}",
                selection(ids.as_deref(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(request.created_before_ms);
            for id in ids.iter().flatten() {
                query = query.bind(id.as_str());
            }
            left.extend(query.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        let left = left.iter().map(read::summary).collect::<Result<_, _>>()?;
        if request.dry_run {
            return Ok(Pruned::sort(left, request, now));
        }
        // What stayed, sorted by the same rules: nothing it holds is deletable any more.
        let mut pruned = Pruned::sort(
            left,
            &PruneRequest {
                include_unfinished: false,
                ..request.clone()
            },
            now,
        );
        pruned.deleted = deleted
            .iter()
            .map(read::summary)
            .collect::<Result<_, _>>()?;
        pruned.order();
        Ok(pruned)
    }
}

/// The `WHERE` terms choosing a prune's executions: created before `$1`, and, when `ids`
/// are given, one of them, bound from `$first` on.
fn selection(ids: Option<&[String]>, first: usize) -> String {
    match ids {
        None => "created_at < $1".to_owned(),
        Some(ids) => {
            let marks: Vec<String> = (first..first + ids.len())
                .map(|i| format!("${i}"))
                .collect();
            format!("created_at < $1 AND id IN ({})", marks.join(", "))
        }
    }
}

impl ExecutionStore for Store {
    fn describe(&self) -> String {
        self.shown.to_string()
    }

    fn begin_execution<'a>(
        &'a self,
        plan: &'a Plan,
        config: &'a ParallelExecutorConfig,
        session: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(self.insert_execution(plan, config, session))
    }

    fn recorder(
        &self,
        id: &str,
        calls: usize,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> Arc<dyn ExecutionRecorder> {
        Arc::new(Recorder::start(
            self.clone(),
            id.to_owned(),
            calls,
            skip,
            offset_ms,
        ))
    }

    fn finish_execution<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        Box::pin(self.store_figures(id))
    }

    fn record_adaptive_limits<'a>(
        &'a self,
        id: &'a str,
        limits: &'a BTreeMap<String, usize>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.options
                .retrying("recording adaptive limits", || {
                    self.write_adaptive_limits(id, limits)
                })
                .await
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        Box::pin(self.fetch_execution(id))
    }

    fn history(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>> {
        Box::pin(self.fetch_history(limit))
    }

    fn executions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ExecutionSummary>, StoreError>> {
        Box::pin(self.fetch_by_prefix(prefix, limit))
    }

    fn record_session_turn<'a>(
        &'a self,
        head: &'a SessionHead,
        turn: &'a SessionTurn,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(self.insert_session_turn(head, turn))
    }

    fn sessions(&self, limit: i64) -> BoxFuture<'_, Result<Vec<SessionSummary>, StoreError>> {
        Box::pin(self.fetch_sessions(limit))
    }

    fn sessions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SessionSummary>, StoreError>> {
        Box::pin(self.fetch_sessions_by_prefix(prefix, limit))
    }

    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredSession, StoreError>> {
        Box::pin(self.fetch_session(id))
    }

    fn performance_stats<'a>(
        &'a self,
        since_ms: i64,
        tool: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>> {
        Box::pin(self.fetch_stats(since_ms, tool))
    }

    fn resume_point<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>> {
        Box::pin(async move { Ok(stored::resume_point(self.fetch_execution(id).await?)) })
    }

    fn mark_resumed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.set_resumed(id))
    }

    fn mark_cancelled<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.set_cancelled(id))
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        stale_ms: i64,
        dead: Option<&'a str>,
    ) -> BoxFuture<'a, Result<crate::Claim, StoreError>> {
        Box::pin(self.claim_lease(id, owner, stale_ms, dead))
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.renew_lease(id, owner))
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.release_lease(id, owner))
    }

    fn prune<'a>(&'a self, request: &'a PruneRequest) -> BoxFuture<'a, Result<Pruned, StoreError>> {
        Box::pin(self.delete_old(request))
    }

    fn row_counts<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, StoreError>> {
        Box::pin(self.count_rows(id))
    }

    fn cache_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(self.cache_read(key))
    }

    fn cache_put<'a>(
        &'a self,
        key: &'a str,
        tool: &'a str,
        value: &'a str,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.cache_write(key, tool, value, ttl_ms))
    }

    fn cache_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.cache_remove(key))
    }

    fn cache_prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.cache_remove_expired())
    }

    fn record_outcomes<'a>(
        &'a self,
        id: &'a str,
        result: &'a ParallelExecutionResult,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        // One more try after the recorder gave up: no retries.
        let once = Store {
            options: StoreOptions {
                write_retries: 0,
                ..self.options
            },
            ..self.clone()
        };
        Box::pin(async move {
            let recorder = once.recorder(id, result.results.len(), skip, offset_ms);
            record_results(&*recorder, &result.results);
            recorder.close().await
        })
    }
}
