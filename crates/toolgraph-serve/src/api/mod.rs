//! The `/v1` API: every handler is annotated for the OpenAPI document, collected here.

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// Every `/v1` route, with its OpenAPI description.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
