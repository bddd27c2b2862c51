//! Reading the SQL store back: rows decoded into [`CallRecord`]s and handed to
//! [`stored::rebuild`](crate::stored::rebuild), the history, statistics across executions,
//! and row counts.
//!
//! Figures of a stored execution are computed from its stored calls (in `stored`, shared
//! with the memory store), so an execution that was resumed is measured over every run
//! that contributed to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use toolgraph_core::{CallError, ErrorKind, ParallelExecutorConfig, ToolCall};
use toolgraph_engine::PerformanceStats;

use crate::StoreError;
use crate::database::{Backend, Store};
use crate::stored::{
    CallRecord, ExecutionSummary, StoredExecution, TOOL_STATS_STATES, ToolTally, corrupt, rebuild,
};

/// The tables that hold an execution's rows, as `row_counts` names them. (Deleting an
/// execution deletes its rows in all of them: the schema cascades.)
pub(crate) const TABLES: [&str; 5] = [
    "tool_results",
    "tool_calls",
    "dependency_edges",
    "batches",
    "performance_metrics",
];

fn opt_f64(row: &AnyRow, col: &str) -> Option<f64> {
    row.try_get::<Option<f64>, _>(col).ok().flatten()
}

pub(crate) fn summary(row: &AnyRow) -> Result<ExecutionSummary, sqlx::Error> {
    Ok(ExecutionSummary {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        status: row.try_get("status")?,
        calls: row.try_get("call_count")?,
        success: row.try_get::<Option<i64>, _>("success")?.map(|s| s != 0),
        makespan_ms: opt_f64(row, "makespan_ms"),
        speedup: opt_f64(row, "speedup"),
        efficiency: opt_f64(row, "efficiency"),
        resumed: row.try_get("resumed_count")?,
        owner: row.try_get("owner")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
    })
}

pub(crate) const SUMMARY_COLUMNS: &str = "id, created_at, status, call_count, success, makespan_ms, speedup, efficiency, resumed_count, owner, heartbeat_at";

/// The statement of [`Store::fetch_by_prefix`]: `$1` the prefix, `$2` the limit.
fn by_prefix_sql(backend: Backend) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM executions WHERE {from} LIMIT $2",
        from = backend.ids_from()
    )
}

/// One `tool_calls` row joined with its result, decoded.
fn call_record(id: &str, row: &AnyRow) -> Result<CallRecord, StoreError> {
    let call_id: String = row.try_get("call_id")?;
    let parse = |col: &str| -> Result<Value, StoreError> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| corrupt(id, format!("call {call_id}: {col}: {e}")))
    };
    let arguments = parse("arguments")?;
    let depends_on: Vec<String> = serde_json::from_value(parse("depends_on")?)
        .map_err(|e| corrupt(id, format!("call {call_id}: depends_on: {e}")))?;
    let timeout: Option<i64> = row.try_get("timeout_ms")?;
    let output: Option<String> = row.try_get("output")?;
    let kind: Option<String> = row.try_get("error_kind")?;
    let message: Option<String> = row.try_get("error_message")?;
    let attempts: i64 = row.try_get("attempts")?;
    let level: i64 = row.try_get("level")?;
    Ok(CallRecord {
        call: ToolCall {
            id: call_id.clone(),
            name: row.try_get("tool")?,
            arguments,
            depends_on,
            priority: row.try_get("priority")?,
            timeout_ms: timeout.map(|t| t as u64),
        },
        level: level as u32,
        state: row.try_get("status")?,
        attempts: attempts as u32,
        queued_ms: opt_f64(row, "queued_ms"),
        started_ms: opt_f64(row, "started_ms"),
        finished_ms: opt_f64(row, "finished_ms"),
        duration_ms: opt_f64(row, "duration_ms"),
        error: message.map(|m| CallError {
            kind: kind
                .and_then(|k| serde_json::from_value(Value::String(k)).ok())
                .unwrap_or(ErrorKind::Permanent),
            message: m,
        }),
        output: output
            .and_then(|o| serde_json::from_str(&o).ok())
            .map(Arc::new),
        worker: row.try_get("worker")?,
        cached: row.try_get::<i64, _>("cached")? != 0,
    })
}

impl Store {
    /// Counts rows per table for one execution.
    pub(crate) async fn count_rows(&self, id: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for table in TABLES {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE execution_id = $1"
            )))
            .bind(id)
            .fetch_one(self.pool())
            .await?;
            out.insert(table.to_owned(), row.try_get::<i64, _>("n")?);
        }
        Ok(out)
    }

    /// The newest executions first.
    pub(crate) async fn fetch_history(
        &self,
        limit: i64,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM executions ORDER BY created_at DESC, id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(summary).collect::<Result<_, _>>()?)
    }

    /// The executions whose id starts with `prefix`, in id order, at most `limit`: the
    /// first `limit` ids from `prefix` on, in byte order, while they start with it — one
    /// bounded range read of an index. Byte order keeps the ids that start with a prefix
    /// together: SQLite's primary key has it; on PostgreSQL the comparison is made under
    /// the `C` collation, which the `executions_id_bytes` index has (a linguistic collation
    /// would order the dashes apart).
    pub(crate) async fn fetch_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(by_prefix_sql(self.backend())))
            .bind(prefix)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = summary(row)?;
            if !s.id.starts_with(prefix) {
                break;
            }
            found.push(s);
        }
        Ok(found)
    }

    /// One stored execution, rebuilt.
    pub(crate) async fn fetch_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let head = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS}, config FROM executions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found(id, &self.shown()))?;
        let summary = summary(&head)?;
        let config_text: String = head.try_get("config")?;
        let config: ParallelExecutorConfig = serde_json::from_str(&config_text)
            .map_err(|e| corrupt(id, format!("configuration: {e}")))?;
        let rows = sqlx::query(
            "SELECT c.position, c.call_id, c.tool, c.arguments, c.depends_on, c.priority, c.timeout_ms, c.level, c.status, \
             c.attempts, c.queued_ms, c.started_ms, c.finished_ms, c.duration_ms, c.error_kind, c.error_message, c.worker, c.cached, r.output \
             FROM tool_calls c LEFT JOIN tool_results r ON r.execution_id = c.execution_id AND r.position = c.position \
             WHERE c.execution_id = $1 ORDER BY c.position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let records = rows
            .iter()
            .map(|row| call_record(id, row))
            .collect::<Result<Vec<_>, _>>()?;
        let edge_rows =
            sqlx::query("SELECT from_position, to_position, reason FROM dependency_edges WHERE execution_id = $1")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        let mut edges = Vec::with_capacity(edge_rows.len());
        for r in &edge_rows {
            let from: i64 = r.try_get("from_position")?;
            let to: i64 = r.try_get("to_position")?;
            edges.push((from as usize, to as usize, r.try_get("reason")?));
        }
        rebuild(summary, config, records, edges)
    }

    /// Marks execution `id` as being resumed once more. When it was cancelled, its
    /// cancelled calls are reopened first, as a crash would have left them (`pending`, or
    /// `running` when they had started), in the same transaction.
    pub(crate) async fn set_resumed(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE tool_calls SET status = CASE WHEN started_ms IS NULL THEN 'pending' ELSE 'running' END \
             WHERE execution_id = $1 AND status = 'cancelled' \
             AND EXISTS (SELECT 1 FROM executions e WHERE e.id = $1 AND e.status = 'cancelled')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE executions SET status = 'running', resumed_count = resumed_count + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks finished execution `id` as cancelled (its run was stopped on request).
    pub(crate) async fn set_cancelled(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE executions SET status = 'cancelled' WHERE id = $1 AND status = 'finished'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Statistics over the finished executions created since `since_ms` (epoch ms),
    /// optionally for one tool: the seed's `get_performance_stats`, across process
    /// lifetimes.
    pub(crate) async fn fetch_stats(
        &self,
        since_ms: i64,
        tool: Option<&str>,
    ) -> Result<PerformanceStats, StoreError> {
        let head = sqlx::query(
            "SELECT COUNT(*) AS n, AVG(speedup) AS speedup, AVG(makespan_ms) AS makespan, AVG(efficiency) AS efficiency \
             FROM executions WHERE status = 'finished' AND created_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        let rate = sqlx::query(
            "SELECT COUNT(*) AS calls, SUM(CASE WHEN c.status = 'ok' THEN 1 ELSE 0 END) AS ok \
             FROM tool_calls c JOIN executions e ON e.id = c.execution_id WHERE e.status = 'finished' AND e.created_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        let calls: i64 = rate.try_get("calls")?;
        let ok: Option<i64> = rate.try_get("ok").ok().flatten();
        let states = TOOL_STATS_STATES
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT c.tool, c.status, c.duration_ms, c.cached FROM tool_calls c JOIN executions e ON e.id = c.execution_id \
             WHERE e.status = 'finished' AND e.created_at >= $1 AND c.status IN ({states})",
        );
        if tool.is_some() {
            sql.push_str(" AND c.tool = $2");
        }
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(since_ms);
        if let Some(t) = tool {
            q = q.bind(t);
        }
        let mut tally = ToolTally::default();
        for row in q.fetch_all(self.pool()).await? {
            let status: String = row.try_get("status")?;
            let cached = row.try_get::<i64, _>("cached")? != 0;
            tally.add(
                row.try_get("tool")?,
                &status,
                opt_f64(&row, "duration_ms"),
                cached,
            );
        }
        // Oldest first: the latest execution's limit wins for each key.
        let mut adaptive_limits = BTreeMap::new();
        let rows = sqlx::query(
            "SELECT m.name, m.value FROM performance_metrics m JOIN executions e ON e.id = m.execution_id \
             WHERE e.created_at >= $1 AND substr(m.name, 1, 15) = 'adaptive_limit:' ORDER BY m.recorded_at, e.created_at",
        )
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let name: String = row.try_get("name")?;
            let limit = opt_f64(&row, "value").unwrap_or(0.0);
            if let Some(key) = name.strip_prefix(crate::stored::ADAPTIVE_LIMIT_PREFIX) {
                adaptive_limits.insert(key.to_owned(), limit as usize);
            }
        }
        Ok(PerformanceStats {
            adaptive_limits,
            total_executions: head.try_get::<i64, _>("n")? as u64,
            avg_speedup: opt_f64(&head, "speedup").unwrap_or(0.0),
            avg_execution_time_ms: opt_f64(&head, "makespan").unwrap_or(0.0),
            avg_success_rate: if calls == 0 {
                0.0
            } else {
                ok.unwrap_or(0) as f64 / calls as f64
            },
            avg_efficiency: opt_f64(&head, "efficiency").unwrap_or(0.0),
            total_calls: calls as u64,
            tools: tally.finish(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! The prefix lookup reads a bounded range of an index, on both databases: checked in
    //! the plans the databases make for the very statement the store runs.

    use sqlx::{Connection, Executor};

    use super::*;

    async fn plan(store: &Store, explain: &str) -> String {
        let mut conn = store.pool().acquire().await.expect("connection");
        if store.backend() == Backend::Postgres {
            // With sequential scans priced out, the plan shows an index only if one fits.
            conn.execute("SET enable_seqscan = off").await.expect("set");
        }
        let sql = format!("{explain} {}", by_prefix_sql(store.backend()));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind("3f2c")
            .bind(11i64)
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
        let column = if store.backend() == Backend::Postgres {
            "QUERY PLAN"
        } else {
            "detail"
        };
        rows.iter()
            .map(|r| r.try_get::<String, _>(column).expect("plan text"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_prefix_is_looked_up_in_the_id_index_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::open(&url).await.expect("store");
        let plan = plan(&store, "EXPLAIN QUERY PLAN").await;
        assert!(plan.contains("SEARCH executions USING INDEX"), "{plan}");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "the index gives the order: {plan}"
        );
    }

    #[tokio::test]
    async fn a_prefix_is_looked_up_in_the_byte_ordered_id_index_on_postgres() {
        let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
            toolgraph_test_support::skip(
                "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
            );
            return;
        };
        let schema = format!("tg_plan_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("PostgreSQL reachable");
        conn.execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = Store::open(&format!("{url}{sep}options[search_path]={schema}"))
            .await
            .expect("store");
        let plan = plan(&store, "EXPLAIN").await;
        assert!(
            plan.contains("Index Scan using executions_id_bytes"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "the index gives the order: {plan}");
    }
}
