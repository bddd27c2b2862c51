//! toolgraph as an HTTP service (`toolgraph serve`): the executions API over one shared
//! [`Runtime`](toolgraph::Runtime), live events as Server-Sent Events, Prometheus metrics,
//! an OpenAPI document generated from the handlers, and the web dashboard — one binary,
//! assets embedded.
//!
//! Modules: `api` (the `/v1` handlers and the problem+json errors; `api::approvals`, the
//! calls waiting for a person), `live` (executions in
//! flight and their replayable event logs), `metrics` (`/metrics`, `/healthz`, `/readyz`),
//! `dashboard` (the embedded web pages), `server` (binding, auth, the tower-http layers,
//! graceful shutdown).

mod api;
mod dashboard;
mod live;
mod metrics;
mod problem;
mod server;

use std::sync::Arc;

use axum::Router;
use toolgraph::Runtime;

pub use api::approvals::PendingApprovals;
pub use problem::Problem;
pub use server::{ServeError, ServeOptions, Server, Shutdown, layered, serve};

/// What every handler shares: the runtime (tools, limits, store), the executions in flight,
/// and the metrics.
#[derive(Clone)]
pub struct AppState {
    /// The one runtime every execution runs on: its limits hold across executions.
    pub runtime: Runtime,
    /// Executions this server runs or ran recently, with their event logs.
    pub live: Arc<live::Registry>,
    /// Counters and histograms `/metrics` renders.
    pub metrics: Arc<metrics::Metrics>,
    /// Calls waiting for a person's answer (`/v1/approvals`), when the runtime asks.
    pub approvals: PendingApprovals,
}

impl AppState {
    /// A state over `runtime`: its executions report to fresh metrics.
    pub fn new(runtime: Runtime) -> AppState {
        let metrics = Arc::new(metrics::Metrics::new());
        let runtime = runtime.with_sink_per_execution(metrics.sink_factory());
        AppState {
            runtime,
            live: Arc::new(live::Registry::new()),
            metrics,
            approvals: PendingApprovals::default(),
        }
    }

    /// This state with its runtime asking or refusing calls under `policy`; the calls it
    /// asks about wait at `GET /v1/approvals` for an answer at `POST /v1/approvals/{id}`.
    pub fn with_approvals(mut self, policy: toolgraph_core::ApprovalPolicy) -> AppState {
        if !policy.is_auto() {
            let approver = Arc::new(self.approvals.clone());
            self.runtime = self.runtime.with_approvals(policy, Some(approver));
        }
        self
    }
}

/// The whole application: API, OpenAPI document, metrics, dashboard — without the
/// operational layers (auth, limits, timeouts), which [`serve`] adds.
pub fn app(state: AppState) -> Router {
    let (api, openapi) = api::router().split_for_parts();
    let openapi = Arc::new(openapi);
    api.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let openapi = openapi.clone();
            async move { axum::Json((*openapi).clone()) }
        }),
    )
    .merge(metrics::router())
    .merge(dashboard::router())
    .with_state(state)
}
