//! Reading the store back: one execution rebuilt as a [`ParallelExecutionResult`] with its
//! edges, the history, statistics across executions, and what `resume` needs.
//!
//! Figures of a stored execution are computed from its stored calls, so an execution that
//! was resumed is measured over every run that contributed to it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use toolgraph_core::{
    CallError, CallResult, CallStatus, ErrorKind, ParallelExecutionResult, ParallelExecutorConfig,
    ToolCall,
};
use toolgraph_engine::stats::percentile;
use toolgraph_engine::{PerformanceStats, Preset, ToolStats};

use crate::{Store, StoreError};

/// One line of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionSummary {
    /// The execution's id.
    pub id: String,
    /// When it was created, ms since the Unix epoch.
    pub created_at: i64,
    /// `running` (or interrupted, if nobody runs it) or `finished`.
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

fn corrupt(id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        message: message.into(),
    }
}

fn opt_f64(row: &AnyRow, col: &str) -> Option<f64> {
    row.try_get::<Option<f64>, _>(col).ok().flatten()
}

fn summary(row: &AnyRow) -> Result<ExecutionSummary, sqlx::Error> {
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
    })
}

const SUMMARY_COLUMNS: &str =
    "id, created_at, status, call_count, success, makespan_ms, speedup, efficiency, resumed_count";

impl Store {
    /// Counts rows per table for one execution (tests and integrity checks).
    pub async fn row_counts(&self, id: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        for table in [
            "tool_calls",
            "tool_results",
            "dependency_edges",
            "batches",
            "performance_metrics",
        ] {
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
    // Longest chain of durations: Kahn's order over the stored edges.
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    for (f, t, _) in edges {
        out[*f].push(*t);
        indeg[*t] += 1;
    }
    let mut best = vec![0.0f64; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut head = 0;
    while head < queue.len() {
        let i = queue[head];
        head += 1;
        best[i] += results[i].duration_ms;
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
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (f, t, _) in edges {
        preds[*t].push(*f);
    }
    let mut path = Vec::new();
    let mut at = (0..n).max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a)));
    while let Some(i) = at {
        path.push(i);
        let want = best[i] - results[i].duration_ms;
        at = preds[i]
            .iter()
            .copied()
            .filter(|&p| (best[p] - want).abs() < 1e-6)
            .max_by(|&a, &b| best[a].total_cmp(&best[b]));
    }
    path.reverse();
    let mut metadata = Map::new();
    metadata.insert("edges".into(), json!(edges.len()));
    metadata.insert(
        "max_parallel_calls".into(),
        json!(config.max_parallel_calls),
    );
    metadata.insert("resumed".into(), json!(resumed));
    let result = ParallelExecutionResult::from_calls(
        results,
        total,
        critical,
        !config.enable_parallel,
        metadata,
    );
    (result, path)
}

impl Store {
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

    /// One stored execution, rebuilt.
    pub(crate) async fn fetch_execution(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let head = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS}, config FROM executions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let summary = summary(&head)?;
        let config_text: String = head.try_get("config")?;
        let config: ParallelExecutorConfig = serde_json::from_str(&config_text)
            .map_err(|e| corrupt(id, format!("configuration: {e}")))?;
        let rows = sqlx::query(
            "SELECT c.position, c.call_id, c.tool, c.arguments, c.depends_on, c.priority, c.timeout_ms, c.level, c.status, \
             c.attempts, c.queued_ms, c.started_ms, c.finished_ms, c.duration_ms, c.error_kind, c.error_message, r.output \
             FROM tool_calls c LEFT JOIN tool_results r ON r.execution_id = c.execution_id AND r.position = c.position \
             WHERE c.execution_id = $1 ORDER BY c.position",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let mut calls = Vec::with_capacity(rows.len());
        let mut results = Vec::with_capacity(rows.len());
        let mut states = Vec::with_capacity(rows.len());
        for row in &rows {
            let call_id: String = row.try_get("call_id")?;
            let tool: String = row.try_get("tool")?;
            let parse = |col: &str| -> Result<Value, StoreError> {
                let text: String = row.try_get(col)?;
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(id, format!("call {call_id}: {col}: {e}")))
            };
            let arguments = parse("arguments")?;
            let depends_on: Vec<String> = serde_json::from_value(parse("depends_on")?)
                .map_err(|e| corrupt(id, format!("call {call_id}: depends_on: {e}")))?;
            let timeout: Option<i64> = row.try_get("timeout_ms")?;
            calls.push(ToolCall {
                id: call_id.clone(),
                name: tool.clone(),
                arguments,
                depends_on,
                priority: row.try_get("priority")?,
                timeout_ms: timeout.map(|t| t as u64),
            });
            let state: String = row.try_get("status")?;
            let output: Option<String> = row.try_get("output")?;
            let output = output.and_then(|o| serde_json::from_str(&o).ok());
            let kind: Option<String> = row.try_get("error_kind")?;
            let message: Option<String> = row.try_get("error_message")?;
            let (status, error) = match CallStatus::parse(&state) {
                Some(s) => {
                    let error = message.map(|m| CallError {
                        kind: kind
                            .and_then(|k| serde_json::from_value(Value::String(k)).ok())
                            .unwrap_or(ErrorKind::Permanent),
                        message: m,
                    });
                    (s, error)
                }
                None => (
                    CallStatus::Cancelled,
                    Some(CallError {
                        kind: ErrorKind::Interrupted,
                        message: format!("never ended: {state} when the record stops"),
                    }),
                ),
            };
            let attempts: i64 = row.try_get("attempts")?;
            let level: i64 = row.try_get("level")?;
            results.push(CallResult {
                id: call_id,
                name: tool,
                status,
                output,
                error,
                attempts: attempts as u32,
                queued_ms: opt_f64(row, "queued_ms").unwrap_or(0.0),
                started_ms: opt_f64(row, "started_ms"),
                finished_ms: opt_f64(row, "finished_ms"),
                duration_ms: opt_f64(row, "duration_ms").unwrap_or(0.0),
                level: level as u32,
            });
            states.push(state);
        }
        let edge_rows =
            sqlx::query("SELECT from_position, to_position, reason FROM dependency_edges WHERE execution_id = $1")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        let mut edges = Vec::with_capacity(edge_rows.len());
        for r in &edge_rows {
            let from: i64 = r.try_get("from_position")?;
            let to: i64 = r.try_get("to_position")?;
            let (from, to) = (from as usize, to as usize);
            if from >= results.len() || to >= results.len() {
                return Err(corrupt(id, format!("edge {from} → {to} names no call")));
            }
            edges.push((from, to, r.try_get("reason")?));
        }
        let (result, critical) = figures(results, &edges, &config, summary.resumed);
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

    /// What `resume` needs for execution `id`.
    pub(crate) async fn fetch_resume_point(&self, id: &str) -> Result<ResumePoint, StoreError> {
        let stored = self.fetch_execution(id).await?;
        let ended = stored
            .result
            .results
            .iter()
            .zip(&stored.states)
            .map(|(r, state)| {
                CallStatus::parse(state).map(|status| Preset {
                    status,
                    output: r.output.clone(),
                    error: r.error.clone(),
                    attempts: r.attempts,
                })
            })
            .collect();
        Ok(ResumePoint {
            calls: stored.calls,
            config: stored.config,
            states: stored.states,
            ended,
            created_at: stored.summary.created_at,
        })
    }

    /// Marks execution `id` as being resumed once more.
    pub(crate) async fn set_resumed(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE executions SET status = 'running', resumed_count = resumed_count + 1 WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Statistics over executions created since `since_ms` (epoch ms), optionally for one
    /// tool: the seed's `get_performance_stats`, across process lifetimes.
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
        let mut stats = PerformanceStats {
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
            tools: BTreeMap::new(),
        };
        let mut sql = String::from(
            "SELECT c.tool, c.status, c.duration_ms FROM tool_calls c JOIN executions e ON e.id = c.execution_id \
             WHERE e.created_at >= $1 AND c.status IN ('ok', 'error', 'timeout', 'interrupted')",
        );
        if tool.is_some() {
            sql.push_str(" AND c.tool = $2");
        }
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(since_ms);
        if let Some(t) = tool {
            q = q.bind(t);
        }
        let mut per_tool: BTreeMap<String, (u64, u64, Vec<f64>)> = BTreeMap::new();
        for row in q.fetch_all(self.pool()).await? {
            let name: String = row.try_get("tool")?;
            let status: String = row.try_get("status")?;
            let entry = per_tool.entry(name).or_default();
            entry.0 += 1;
            if status != "ok" {
                entry.1 += 1;
            }
            entry.2.push(opt_f64(&row, "duration_ms").unwrap_or(0.0));
        }
        for (name, (count, errors, mut d)) in per_tool {
            d.sort_by(f64::total_cmp);
            let mean = if d.is_empty() {
                0.0
            } else {
                d.iter().sum::<f64>() / d.len() as f64
            };
            stats.tools.insert(
                name,
                ToolStats {
                    count,
                    errors,
                    error_rate: if count == 0 {
                        0.0
                    } else {
                        errors as f64 / count as f64
                    },
                    mean_ms: mean,
                    p50_ms: percentile(&d, 50.0),
                    p95_ms: percentile(&d, 95.0),
                    p99_ms: percentile(&d, 99.0),
                },
            );
        }
        Ok(stats)
    }
}
