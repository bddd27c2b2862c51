//! The web dashboard: pages and assets embedded in the binary, served at `/`.

use axum::Router;

use crate::AppState;

/// `/` and the assets.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
}
