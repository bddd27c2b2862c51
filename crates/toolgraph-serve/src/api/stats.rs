//! `GET /v1/stats`: statistics over the stored executions (`toolgraph stats --json`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use toolgraph::engine::PerformanceStats;
use utoipa::IntoParams;

use super::{query_problem, schema};
use crate::AppState;
use crate::problem::Problem;
use crate::problem::store_problem;

/// Which executions count.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Only executions created within this long before now (`30m`, `12h`, `7d`).
    since: Option<String>,
    /// Only this tool's calls.
    tool: Option<String>,
}

/// Statistics across the stored executions (zeros without a store).
#[utoipa::path(
    get,
    path = "/v1/stats",
    params(StatsQuery),
    responses(
        (status = 200, body = schema::PerformanceStats),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_stats(
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<PerformanceStats>, Problem> {
    let Query(query) = query.map_err(query_problem)?;
    let since = match &query.since {
        None => 0,
        Some(ago) => {
            let d = humantime::parse_duration(ago).map_err(|_| {
                Problem::bad_request(format!("{ago:?} is not a duration (try 30m, 12h, 7d)"))
            })?;
            let now = toolgraph_store::now_ms();
            now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
    };
    match state.runtime.store() {
        Some(store) => Ok(Json(
            store
                .performance_stats(since, query.tool.as_deref())
                .await
                .map_err(store_problem)?,
        )),
        None => Ok(Json(PerformanceStats::default())),
    }
}
