//! The `/v1` API: one module per resource, each handler annotated for the OpenAPI
//! document, collected here; and what the handlers share — reading a batch from a request
//! body, finding an execution by id or prefix, problem+json for malformed queries.

pub(crate) mod approvals;
mod events;
mod executions;
mod plan;
pub(crate) mod schema;
mod stats;
mod tool_messages;
mod tools;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use serde::Deserialize;
use serde_json::Value;
use toolgraph_core::{InputError, ParallelExecutorConfig, ToolCall};
use toolgraph_store::{ExecutionSummary, MIN_ID_PREFIX, StoreError};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::live::LiveExecution;
use crate::problem::{Problem, input_rejected, store_problem};

/// The document's header: what the service is.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "toolgraph",
        description = "Runs the tool calls an LLM emits — in parallel where safe, under limits, recorded — over HTTP: executions, their live events (SSE), plans, tools and statistics. Errors are application/problem+json.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(schema::FinishedEvent))
)]
struct ApiDoc;

/// Every `/v1` route, with its OpenAPI description.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(
            executions::create_execution,
            executions::list_executions
        ))
        .routes(routes!(
            executions::get_execution,
            executions::cancel_execution
        ))
        .routes(routes!(executions::resume_execution))
        .routes(routes!(events::execution_events))
        .routes(routes!(plan::plan_batch))
        .routes(routes!(tools::list_tools))
        .routes(routes!(stats::get_stats))
        .routes(routes!(tool_messages::tool_messages))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::answer_approval))
}

/// The largest integer every JSON reader keeps exact (2^53 - 1).
const MAX_JSON_INTEGER: u64 = 9_007_199_254_740_991;

/// Per-execution choices, under `"options"` beside `"tool_calls"`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionOptions {
    /// At most this many calls of this execution at once (the server's global limit still
    /// holds across executions).
    #[schema(minimum = 1)]
    pub max_parallel: Option<usize>,
    /// At most this many calls of a tool at once, by tool name.
    pub tool_limits: Option<BTreeMap<String, usize>>,
    /// The default timeout of a call, ms (0: none).
    #[schema(maximum = 9007199254740991_u64)]
    pub timeout_ms: Option<u64>,
    /// One call at a time.
    pub sequential: Option<bool>,
    /// Cancel the rest at the first failure.
    pub fail_fast: Option<bool>,
    /// Record the execution in the store (default: when the server has one).
    pub record: Option<bool>,
}

/// A batch with options: any input `toolgraph run` accepts (a list of calls, an OpenAI or
/// Anthropic message, `{"tool_calls": [...]}`), optionally with `options`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchRequest {
    /// The calls.
    tool_calls: Vec<schema::CallInput>,
    /// Per-execution choices.
    options: Option<ExecutionOptions>,
}

/// A request body as a batch: its calls and options. Errors say what is wrong in the CLI's
/// words, naming call ids.
pub(crate) fn read_batch(body: &Bytes) -> Result<(Vec<ToolCall>, ExecutionOptions), Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        input_rejected(&InputError::single(toolgraph_core::Problem::input(
            format!("not valid JSON: {e}"),
        )))
    })?;
    let options = match value.get("options") {
        Some(options) if value.get("tool_calls").is_some() => {
            ExecutionOptions::deserialize(options)
                .map_err(|e| Problem::bad_request(format!("options: {e}\nnothing ran.")))?
        }
        _ => ExecutionOptions::default(),
    };
    let calls = toolgraph_core::parse_tool_calls(&value).map_err(|e| input_rejected(&e))?;
    Ok((calls, options))
}

/// The execution's own configuration when its options change any limit or policy.
pub(crate) fn execution_config(
    state: &AppState,
    options: &ExecutionOptions,
) -> Result<Option<Arc<ParallelExecutorConfig>>, Problem> {
    let ExecutionOptions {
        max_parallel,
        tool_limits,
        timeout_ms,
        sequential,
        fail_fast,
        record: _,
    } = options;
    if max_parallel.is_none()
        && tool_limits.is_none()
        && timeout_ms.is_none()
        && sequential.is_none()
        && fail_fast.is_none()
    {
        return Ok(None);
    }
    let mut config = (*state.runtime.executor().config()).clone();
    if let Some(n) = max_parallel {
        config.max_parallel_calls = *n;
    }
    if let Some(limits) = tool_limits {
        config.per_tool_parallel_limits.extend(limits.clone());
    }
    if let Some(ms) = timeout_ms {
        if *ms > MAX_JSON_INTEGER {
            return Err(Problem::bad_request(format!(
                "options: timeout_ms {ms} is larger than {MAX_JSON_INTEGER}\nnothing ran."
            )));
        }
        config.default_timeout_ms = *ms;
    }
    if let Some(sequential) = sequential {
        config.enable_parallel = !sequential;
    }
    if let Some(fail_fast) = fail_fast {
        config.fail_fast = *fail_fast;
    }
    config
        .validate()
        .map_err(|e| Problem::bad_request(format!("options: {e}\nnothing ran.")))?;
    toolgraph::check_tool_limits(state.runtime.executor().tools(), &config)
        .map_err(|e| Problem::bad_request(format!("options: {e}\nnothing ran.")))?;
    Ok(Some(Arc::new(config)))
}

/// An execution named by a request.
pub(crate) enum Found {
    /// Run (or being run) by this server.
    Live(String, Arc<LiveExecution>),
    /// Only in the store.
    Stored(ExecutionSummary),
}

impl Found {
    pub(crate) fn id(&self) -> &str {
        match self {
            Found::Live(id, _) => id,
            Found::Stored(summary) => &summary.id,
        }
    }
}

/// The execution `given` names: a whole id or a unique prefix (4+ characters) of one this
/// server runs or its store holds. 400 for what cannot be an id, 404 for none, 409 (the
/// candidates listed) for several.
pub(crate) async fn find_execution(state: &AppState, given: &str) -> Result<Found, Problem> {
    if let Some(live) = state.live.get(given) {
        return Ok(Found::Live(given.to_owned(), live));
    }
    let mut store_name = None;
    if let Some(store) = state.runtime.store() {
        match store.resolve_id(given).await {
            Ok(summary) => {
                return Ok(match state.live.get(&summary.id) {
                    Some(live) => Found::Live(summary.id, live),
                    None => Found::Stored(summary),
                });
            }
            Err(StoreError::NotFound { store, .. }) => store_name = Some(store),
            Err(e) => return Err(store_problem(e)),
        }
    }
    // Not in the store (or no store): an unrecorded execution of this server?
    let prefix = given.to_ascii_lowercase();
    if prefix.chars().count() < MIN_ID_PREFIX {
        return Err(Problem::bad_request(format!(
            "{given:?} is not an execution id: give at least {MIN_ID_PREFIX} characters of one"
        )));
    }
    let mut found = state.live.by_prefix(&prefix, 11);
    match found.len() {
        0 => Err(Problem::not_found(match store_name {
            Some(store) => format!("no execution {given} in the store {store} nor in this server"),
            None => format!("no execution {given} in this server (it records nothing)"),
        })),
        1 => {
            let (id, live) = found.swap_remove(0);
            Ok(Found::Live(id, live))
        }
        _ => {
            let ids: Vec<String> = found.iter().take(10).map(|(id, _)| id.clone()).collect();
            Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "{prefix} is ambiguous in this server: several executions start so ({}); give more of the id",
                    ids.join(", ")
                ),
            ))
        }
    }
}

/// A live execution's history line.
pub(crate) fn live_summary(id: &str, live: &LiveExecution) -> ExecutionSummary {
    let status = live.status();
    let ended = status != crate::live::LiveStatus::Running;
    let result = ended.then(|| live.result_so_far());
    ExecutionSummary {
        id: id.to_owned(),
        created_at: live.created_at,
        status: status.as_str().to_owned(),
        calls: live.calls.len() as i64,
        success: result.as_ref().map(|r| r.success),
        makespan_ms: result.as_ref().map(|r| r.total_time_ms),
        speedup: result.as_ref().map(|r| r.speedup),
        efficiency: result.as_ref().map(|r| r.efficiency),
        resumed: 0,
        owner: None,
        heartbeat_at: None,
    }
}

/// A malformed query string as problem+json (axum's own answer is plain text).
pub(crate) fn query_problem(e: QueryRejection) -> Problem {
    Problem::bad_request(e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgraph::Runtime;
    use toolgraph_core::ToolSet;
    use toolgraph_engine::ParallelExecutor;

    #[tokio::test]
    async fn a_prefix_several_executions_share_is_a_conflict_listing_them() {
        let executor = ParallelExecutor::new(ToolSet::new(), ParallelExecutorConfig::default())
            .expect("executor");
        let state = AppState::new(Runtime::new(executor, None));
        let plan = state.runtime.plan(Vec::new()).expect("plan");
        let ids = [
            "abcd1111-0000-4000-8000-000000000000",
            "abcd2222-0000-4000-8000-000000000000",
        ];
        for id in ids {
            state
                .live
                .insert(id.to_owned(), LiveExecution::new(&plan, false));
        }
        let Err(problem) = find_execution(&state, "ABCD").await else {
            panic!("abcd is ambiguous");
        };
        assert_eq!(problem.status, 409);
        assert!(problem.detail.contains(ids[0]), "{}", problem.detail);
        assert!(problem.detail.contains(ids[1]), "{}", problem.detail);
        let Ok(found) = find_execution(&state, "abcd2").await else {
            panic!("abcd2 is unique");
        };
        assert_eq!(found.id(), ids[1]);
        let Err(problem) = find_execution(&state, "abc").await else {
            panic!("too short");
        };
        assert_eq!(problem.status, 400);
        let Err(problem) = find_execution(&state, "ffff").await else {
            panic!("unknown");
        };
        assert_eq!(problem.status, 404);
        assert!(
            problem
                .detail
                .contains("in this server (it records nothing)")
        );
    }
}
