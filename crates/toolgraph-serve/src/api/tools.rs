//! `GET /v1/tools`: the registered tools — schemas, scheduling traits, classes and why
//! (`toolgraph tools --json`).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use toolgraph::ToolDescription;
use utoipa::ToSchema;

use super::schema;
use crate::AppState;

/// The registered tools.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    /// In registration order.
    #[schema(value_type = Vec<schema::ToolDescription>)]
    tools: Vec<ToolDescription>,
}

/// Lists the tools.
#[utoipa::path(get, path = "/v1/tools", responses((status = 200, body = ToolList)))]
pub async fn list_tools(State(state): State<AppState>) -> Json<ToolList> {
    Json(ToolList {
        tools: toolgraph::describe_tools(state.runtime.executor().tools()),
    })
}
