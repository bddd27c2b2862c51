//! `/v1/executions`: run a batch (waiting for it or not), list executions, read one while
//! it runs or after, cancel one, resume one.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use toolgraph_core::ParallelExecutionResult;
use toolgraph_store::ExecutionSummary;
use utoipa::{IntoParams, ToSchema};

use super::{
    BatchRequest, Found, execution_config, find_execution, live_summary, query_problem, read_batch,
    schema,
};
use crate::AppState;
use crate::live::{Launch, LiveStatus};
use crate::problem::Problem;
use crate::problem::store_problem;

/// How many recorded executions a filtered list scans, newest first, at most.
const LIST_SCAN: i64 = 10_000;

/// How many stored executions a `tool` filter reads the calls of, at most.
const TOOL_SCAN: usize = 500;

/// How long `DELETE` waits for a cancelled execution to end before answering 202.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// `?wait=true`: answer when the execution ended.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer 200 with the result once the execution ended, instead of 202 at once.
    wait: Option<bool>,
}

/// An execution started, not waited for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Its id (the store's, when recorded): `GET /v1/executions/{id}` and `…/events` follow it.
    id: String,
    /// `running`.
    status: String,
    /// Calls in the batch.
    calls: usize,
}

/// The list of executions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    /// Newest first.
    #[schema(value_type = Vec<schema::ExecutionSummary>)]
    executions: Vec<ExecutionSummary>,
}

/// One call of an execution, as given.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    /// Its id.
    id: String,
    /// Its tool.
    name: String,
    /// Its arguments, as given (references unresolved).
    arguments: Value,
}

/// One execution: its calls, its graph, and its result (so far, while it runs).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionDetail {
    /// Its id.
    id: String,
    /// `running`, `finished`, `cancelled` (or `failed`).
    status: String,
    /// Its calls, in input order.
    calls: Vec<CallView>,
    /// Its edges: `[from, to, reason]` by position.
    #[schema(value_type = Vec<Vec<Value>>)]
    edges: Vec<(usize, usize, String)>,
    /// Positions on the measured critical path, in order (empty while it runs).
    critical: Vec<usize>,
    /// The result; while it runs, calls not ended yet are `cancelled` with the error
    /// `pending` or `running`.
    #[schema(value_type = schema::ParallelExecutionResult)]
    result: ParallelExecutionResult,
}

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only executions created before this instant, ms since the Unix epoch.
    before: Option<i64>,
    /// Only executions in this status (`running`, `finished`, `cancelled`, `failed`).
    status: Option<String>,
    /// Only executions with a call of this tool.
    tool: Option<String>,
}

/// Runs a batch.
#[utoipa::path(
    post,
    path = "/v1/executions",
    params(WaitQuery),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Ended (with `wait=true`)", body = schema::ParallelExecutionResult),
        (status = 202, description = "Started", body = Accepted),
        (status = 400, description = "The batch is rejected; nothing ran", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The store failed before anything ran", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_execution(
    State(state): State<AppState>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(query_problem)?;
    let (calls, options) = read_batch(&body)?;
    let config = execution_config(&state, &options)?;
    let plan = state
        .runtime
        .plan(calls)
        .map_err(|e| crate::problem::input_rejected(&e))?;
    // An empty batch runs nothing, so nothing is recorded (as `toolgraph run`).
    let runtime = if options.record == Some(false) || plan.is_empty() {
        state.runtime.with_store(None)
    } else {
        state.runtime.clone()
    };
    let calls = plan.len();
    let launched = state
        .live
        .launch(runtime, plan, config, Launch::Execute)
        .await?;
    if query.wait == Some(true) {
        let result = launched.execution.wait().await?;
        let mut result = (*result).clone();
        if result.metadata.execution_id.is_none() {
            result.metadata.execution_id = Some(launched.id);
        }
        return Ok(Json(result).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: launched.id,
            status: "running".to_owned(),
            calls,
        }),
    )
        .into_response())
}

/// Lists executions, newest first: the store's (a bounded scan of its newest
/// [`LIST_SCAN`]) and this server's unrecorded ones.
#[utoipa::path(
    get,
    path = "/v1/executions",
    params(ListQuery),
    responses(
        (status = 200, body = ExecutionList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_executions(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ExecutionList>, Problem> {
    let Query(query) = query.map_err(query_problem)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit {limit}: give a number from 1 to 1000"
        )));
    }
    let keep = |s: &ExecutionSummary| {
        query.before.is_none_or(|b| s.created_at < b)
            && query.status.as_deref().is_none_or(|st| s.status == st)
    };
    let mut candidates: Vec<(ExecutionSummary, Option<Vec<String>>)> = Vec::new();
    let store = state.runtime.store();
    if let Some(store) = store {
        let scan = if query.before.is_some() || query.status.is_some() || query.tool.is_some() {
            LIST_SCAN
        } else {
            limit
        };
        for summary in store.history(scan).await.map_err(store_problem)? {
            if keep(&summary) {
                candidates.push((summary, None));
            }
        }
    }
    for (id, live) in state.live.all() {
        if live.recorded && store.is_some() {
            continue; // listed from the store
        }
        let summary = live_summary(&id, &live);
        if keep(&summary) {
            let names = live.calls.iter().map(|c| c.name.clone()).collect();
            candidates.push((summary, Some(names)));
        }
    }
    // As the store orders its history: newest first, ties by id.
    candidates.sort_by(|a, b| {
        b.0.created_at
            .cmp(&a.0.created_at)
            .then(a.0.id.cmp(&b.0.id))
    });
    let mut executions = Vec::new();
    let mut loads = 0;
    for (summary, names) in candidates {
        if executions.len() as i64 >= limit {
            break;
        }
        if let Some(tool) = &query.tool {
            let names = match names {
                Some(names) => names,
                None => {
                    let (Some(store), true) = (store, loads < TOOL_SCAN) else {
                        break;
                    };
                    loads += 1;
                    match store.load(&summary.id).await {
                        Ok(stored) => stored.calls.into_iter().map(|c| c.name).collect(),
                        // Pruned meanwhile.
                        Err(toolgraph_store::StoreError::NotFound { .. }) => continue,
                        Err(e) => return Err(store_problem(e)),
                    }
                }
            };
            if !names.iter().any(|n| n == tool) {
                continue;
            }
        }
        executions.push(summary);
    }
    Ok(Json(ExecutionList { executions }))
}

/// One execution by id or unique prefix (4+ characters): while it runs, what is known so far.
#[utoipa::path(
    get,
    path = "/v1/executions/{id}",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one (4+ characters)")),
    responses(
        (status = 200, body = ExecutionDetail),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The prefix is ambiguous", body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ExecutionDetail>, Problem> {
    let detail = match find_execution(&state, &id).await? {
        Found::Live(id, live) => ExecutionDetail {
            status: live.status().as_str().to_owned(),
            calls: views(&live.calls),
            edges: live.edges.clone(),
            critical: live.critical(),
            result: (*live.result_so_far()).clone(),
            id,
        },
        Found::Stored(summary) => {
            let store = state
                .runtime
                .store()
                .ok_or_else(|| Problem::internal("no store"))?;
            let stored = store.load(&summary.id).await.map_err(store_problem)?;
            ExecutionDetail {
                id: summary.id,
                status: stored.summary.status,
                calls: views(&stored.calls),
                edges: stored.edges,
                critical: stored.critical,
                result: stored.result,
            }
        }
    };
    Ok(Json(detail))
}

fn views(calls: &[toolgraph_core::ToolCall]) -> Vec<CallView> {
    calls
        .iter()
        .map(|c| CallView {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
        })
        .collect()
}

/// Cancels a running execution: running calls are cancelled, calls not started end
/// `cancelled`, dependants are skipped; recorded `cancelled` (resumable).
#[utoipa::path(
    delete,
    path = "/v1/executions/{id}",
    params(("id" = String, Path, description = "An execution id or a unique prefix of one (4+ characters)")),
    responses(
        (status = 200, description = "Cancelled and ended", body = schema::ExecutionSummary),
        (status = 202, description = "Cancelled, still ending", body = schema::ExecutionSummary),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already ended, run by another process, or an ambiguous prefix", body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let (id, live) = match find_execution(&state, &id).await? {
        Found::Live(id, live) => (id, live),
        Found::Stored(summary) if summary.status == "running" => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!(
                    "execution {} is not run by this server (its owner: {}); it cannot be cancelled here",
                    summary.id,
                    summary
                        .owner
                        .as_deref()
                        .unwrap_or("none — it was interrupted; resume it")
                ),
            ));
        }
        Found::Stored(summary) => return Err(already_ended(&summary.id, &summary.status)),
    };
    let status = live.status();
    if status != LiveStatus::Running {
        return Err(already_ended(&id, status.as_str()));
    }
    live.cancel.cancel();
    let ended = tokio::time::timeout(CANCEL_WAIT, live.wait()).await.is_ok();
    let summary = summary_of(&state, &id, &live).await?;
    let code = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(summary)).into_response())
}

fn already_ended(id: &str, status: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        format!("execution {id} already ended ({status}): nothing to cancel"),
    )
}

/// The store's history line for a recorded execution, the server's otherwise.
async fn summary_of(
    state: &AppState,
    id: &str,
    live: &crate::live::LiveExecution,
) -> Result<ExecutionSummary, Problem> {
    if let (true, Some(store)) = (live.recorded, state.runtime.store()) {
        let mut found = store
            .executions_by_prefix(id, 1)
            .await
            .map_err(store_problem)?;
        if let Some(summary) = found.pop().filter(|s| s.id == id) {
            return Ok(summary);
        }
    }
    Ok(live_summary(id, live))
}

/// Resumes a recorded execution that a crash, a shutdown or a cancel left unfinished:
/// ended calls keep their outcome, the rest run (see `toolgraph resume`).
#[utoipa::path(
    post,
    path = "/v1/executions/{id}/resume",
    params(
        ("id" = String, Path, description = "An execution id or a unique prefix of one (4+ characters)"),
        WaitQuery,
    ),
    responses(
        (status = 200, description = "Resumed and ended (with `wait=true`)", body = schema::ParallelExecutionResult),
        (status = 202, description = "Resuming", body = Accepted),
        (status = 400, description = "Today's tools reject the stored batch, or not an id", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to resume, running, or no store", body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(query_problem)?;
    let found = find_execution(&state, &id).await?;
    let id = found.id().to_owned();
    if let Found::Live(_, live) = &found {
        if live.status() == LiveStatus::Running {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!("execution {id} is running in this server: nothing to resume"),
            ));
        }
        if !live.recorded {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                format!("execution {id} was not recorded: it cannot be resumed"),
            ));
        }
    }
    let store = state.runtime.store().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "no store is configured (recording is off): nothing can be resumed",
        )
    })?;
    let point = store.resume_point(&id).await.map_err(store_problem)?;
    if point.ended.iter().all(Option::is_some) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("execution {id} has no call left to run: nothing to resume"),
        ));
    }
    let plan = state
        .runtime
        .plan(point.calls)
        .map_err(|e| crate::problem::input_rejected(&e))?;
    let calls = plan.len();
    let launched = state
        .live
        .launch(state.runtime.clone(), plan, None, Launch::Resume(id))
        .await?;
    if query.wait == Some(true) {
        let result = launched.execution.wait().await?;
        return Ok(Json((*result).clone()).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: launched.id,
            status: "running".to_owned(),
            calls,
        }),
    )
        .into_response())
}
