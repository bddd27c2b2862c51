//! `POST /v1/plan`: a batch's dependency graph, without running it (`toolgraph plan --json`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{BatchRequest, execution_config, read_batch};
use crate::AppState;
use crate::problem::{Problem, input_rejected};

/// A batch's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    /// Call ids grouped by dependency level.
    levels: Vec<Vec<String>>,
    /// Every edge: `from` and `to` are call ids (or a join between groups of accesses to
    /// one resource: `{"join": n, "resource": key}`), `reason` in words.
    #[schema(value_type = Vec<Object>)]
    edges: Vec<Value>,
    /// Calls with no edge in or out.
    independent: Vec<String>,
    /// Calls with at least one edge.
    dependent: Vec<String>,
    /// The longest chain of calls (each counted by the mean duration the server has seen of
    /// its tool, 1 ms when none), in order.
    critical_path: Vec<String>,
}

/// Plans a batch without running it.
#[utoipa::path(
    post,
    path = "/v1/plan",
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, body = PlanView),
        (status = 400, description = "The batch is rejected", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn plan_batch(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<PlanView>, Problem> {
    let (calls, options) = read_batch(&body)?;
    // Options a run would refuse are refused here too.
    execution_config(&state, &options)?;
    let plan = state.runtime.plan(calls).map_err(|e| input_rejected(&e))?;
    let graph = toolgraph::engine::DependencyGraph::of(&plan);
    let stats = state.runtime.executor().get_performance_stats();
    let critical_path = plan
        .critical_path_calls(|i| {
            let name = &plan.calls()[i].call.name;
            stats
                .tools
                .get(name)
                .map_or(1.0, |t| t.mean_ms.max(f64::MIN_POSITIVE))
        })
        .into_iter()
        .map(|i| plan.calls()[i].call.id.clone())
        .collect();
    Ok(Json(PlanView {
        levels: graph.levels,
        edges: graph
            .edges
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect(),
        independent: graph.independent,
        dependent: graph.dependent,
        critical_path,
    }))
}
