//! Prometheus metrics (`GET /metrics`, every name `toolgraph_…`) fed by a per-execution
//! event sink, and the probes `GET /healthz` (the process answers) and `GET /readyz` (the
//! store answers a cheap query within [`READY_TIMEOUT`]).
//!
//! The text exposition format is written by hand: a dozen series, no registry to keep in
//! step, no dependency. Sinks run on the scheduler's loop, so what they touch per call is
//! atomics only: each execution resolves its calls' tools to their series once, in
//! `on_plan` (a read lock, a write lock the first time a tool is seen), and every outcome
//! then adds to atomic counters and histogram buckets. The limiter's in-flight counts are
//! read when `/metrics` is scraped (one short lock), not pushed.
//!
//! This module never blocks a sink and never fails a scrape: a poisoned lock is taken over.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use toolgraph::SinkFactory;
use toolgraph_core::{CallOutcome, CallStatus, Event, EventSink, ToolCall};

use crate::{AppState, Problem};

/// How long `/readyz` waits for the store before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds of the histogram buckets, in seconds (then `+Inf`): from half a
/// millisecond (a no-op call) to two minutes.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];

/// The ways an execution ends, as `toolgraph_executions_total{status}` names them.
const EXECUTION_STATUSES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// A histogram with atomic buckets (not cumulative: summed when rendered).
#[derive(Default)]
struct Histogram {
    /// One count per bucket of [`BUCKETS`], then the overflow (`+Inf` only).
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of observations, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6).round() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Everything counted for one tool.
#[derive(Default)]
struct ToolSeries {
    /// Calls ended, per status (indexed like [`CallStatus::ALL`]).
    calls: [AtomicU64; CallStatus::ALL.len()],
    /// Run time of the calls that ran.
    duration: Histogram,
    /// Time from ready (every dependency done) to start, for the calls that ran.
    queue_wait: Histogram,
}

/// Counters and histograms over every execution of the server.
#[derive(Default)]
pub struct Metrics {
    /// Per tool name (as the calls name it).
    tools: RwLock<HashMap<String, Arc<ToolSeries>>>,
    /// Executions ended, per [`EXECUTION_STATUSES`].
    executions: [AtomicU64; EXECUTION_STATUSES.len()],
    /// Executions between their plan and their end.
    running: AtomicU64,
    /// HTTP answers per route (the matched path) and status.
    requests: Mutex<HashMap<String, HashMap<u16, u64>>>,
}

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
                metrics: metrics.clone(),
                tools: OnceLock::new(),
                started: AtomicBool::new(false),
                ended: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
            }) as Arc<dyn EventSink>
        })
    }

    /// Counts one HTTP answer: `route` is the matched path (`/v1/executions/{id}`), so the
    /// series stay few whatever the ids.
    pub fn count_request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        match requests.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_insert(0) += 1,
            None => {
                requests.insert(route.to_owned(), HashMap::from([(status, 1)]));
            }
        }
    }

    /// The series of `tool`, made on first use.
    fn tool(&self, tool: &str) -> Arc<ToolSeries> {
        if let Some(series) = self
            .tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
        {
            return series.clone();
        }
        self.tools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tool.to_owned())
            .or_default()
            .clone()
    }

    fn execution_ended(&self, status: &str) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        if let Some(i) = EXECUTION_STATUSES.iter().position(|s| *s == status) {
            self.executions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of everything, with the limiter's `usage` (what runs
    /// under each limit) and the number of calls `waiting` for a slot.
    pub fn render(&self, usage: &[toolgraph_engine::LimitUsage], waiting: usize) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut tools: Vec<(String, Arc<ToolSeries>)> = self
            .tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, series)| (name.clone(), series.clone()))
            .collect();
        tools.sort_by(|a, b| a.0.cmp(&b.0));

        header(
            &mut out,
            "toolgraph_calls_total",
            "counter",
            "Calls ended, by tool and status.",
        );
        for (tool, series) in &tools {
            for (status, count) in CallStatus::ALL.iter().zip(&series.calls) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "toolgraph_calls_total{{tool=\"{}\",status=\"{}\"}} {count}",
                        escape(tool),
                        status.as_str()
                    );
                }
            }
        }
        header(
            &mut out,
            "toolgraph_call_duration_seconds",
            "histogram",
            "Run time of the calls that ran, by tool.",
        );
        for (tool, series) in &tools {
            let labels = format!("tool=\"{}\"", escape(tool));
            series
                .duration
                .render(&mut out, "toolgraph_call_duration_seconds", &labels);
        }
        header(
            &mut out,
            "toolgraph_call_queue_wait_seconds",
            "histogram",
            "Time from ready (every dependency done) to start, by tool.",
        );
        for (tool, series) in &tools {
            let labels = format!("tool=\"{}\"", escape(tool));
            series
                .queue_wait
                .render(&mut out, "toolgraph_call_queue_wait_seconds", &labels);
        }
        header(
            &mut out,
            "toolgraph_executions_total",
            "counter",
            "Executions ended, by status.",
        );
        for (status, count) in EXECUTION_STATUSES.iter().zip(&self.executions) {
            let _ = writeln!(
                out,
                "toolgraph_executions_total{{status=\"{status}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "toolgraph_executions_running",
            "gauge",
            "Executions running now.",
        );
        let _ = writeln!(
            out,
            "toolgraph_executions_running {}",
            self.running.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "toolgraph_calls_in_flight",
            "gauge",
            "Calls holding a slot of each limit now (global, tool:NAME, resource keys).",
        );
        for u in usage {
            let _ = writeln!(
                out,
                "toolgraph_calls_in_flight{{limit=\"{}\"}} {}",
                escape(&u.key),
                u.in_flight
            );
        }
        header(
            &mut out,
            "toolgraph_limit",
            "gauge",
            "The size of each limit.",
        );
        for u in usage {
            let _ = writeln!(
                out,
                "toolgraph_limit{{limit=\"{}\"}} {}",
                escape(&u.key),
                u.limit
            );
        }
        header(
            &mut out,
            "toolgraph_calls_waiting",
            "gauge",
            "Calls admitted by their execution, waiting for a slot of a shared limit.",
        );
        let _ = writeln!(out, "toolgraph_calls_waiting {waiting}");
        header(
            &mut out,
            "toolgraph_http_requests_total",
            "counter",
            "HTTP answers, by route and status.",
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut routes: Vec<(&String, &HashMap<u16, u64>)> = requests.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        for (route, by_status) in routes {
            let mut statuses: Vec<(&u16, &u64)> = by_status.iter().collect();
            statuses.sort();
            for (status, count) in statuses {
                let _ = writeln!(
                    out,
                    "toolgraph_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    escape(route)
                );
            }
        }
        out
    }
}

/// `# HELP` and `# TYPE` of a metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One execution's view onto the metrics.
struct ExecutionMetrics {
    metrics: Arc<Metrics>,
    /// Each call's tool series, by position (set by `on_plan`).
    tools: OnceLock<Vec<Arc<ToolSeries>>>,
    /// Counted as running.
    started: AtomicBool,
    /// Counted as ended.
    ended: AtomicBool,
    /// Some call ended `cancelled`.
    cancelled: AtomicBool,
}

impl EventSink for ExecutionMetrics {
    fn on_plan(&self, calls: &[&ToolCall]) {
        let series = calls.iter().map(|c| self.metrics.tool(&c.name)).collect();
        let _ = self.tools.set(series);
        if !self.started.swap(true, Ordering::Relaxed) {
            self.metrics.running.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_event(&self, event: &Event) {
        if let Event::ExecutionFinished { success } = event
            && self.started.load(Ordering::Relaxed)
            && !self.ended.swap(true, Ordering::Relaxed)
        {
            let status = if self.cancelled.load(Ordering::Relaxed) {
                "cancelled"
            } else if *success {
                "succeeded"
            } else {
                "failed"
            };
            self.metrics.execution_ended(status);
        }
    }

    fn on_outcome(&self, position: usize, outcome: &CallOutcome<'_>) {
        if outcome.status == CallStatus::Cancelled {
            self.cancelled.store(true, Ordering::Relaxed);
        }
        let Some(series) = self.tools.get().and_then(|t| t.get(position)) else {
            return;
        };
        if let Some(i) = CallStatus::ALL.iter().position(|s| *s == outcome.status) {
            series.calls[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(started) = outcome.started_ms {
            series
                .duration
                .observe((outcome.finished_ms - started) / 1e3);
            series.queue_wait.observe(outcome.queued_ms / 1e3);
        }
    }
}

impl Drop for ExecutionMetrics {
    /// An execution dropped before its end (its task aborted) no longer runs: it counts as
    /// cancelled.
    fn drop(&mut self) {
        if self.started.load(Ordering::Relaxed) && !self.ended.swap(true, Ordering::Relaxed) {
            self.metrics.execution_ended("cancelled");
        }
    }
}

/// The adaptive limits (`[executor.adaptive]`), read at scrape time: one gauge per key
/// for the limit in force, its ceiling and the attempts under it.
pub(crate) fn render_adaptive(
    out: &mut String,
    limits: &[toolgraph_engine::layer::adaptive::AdaptiveLimit],
) {
    for (name, help, value) in [
        (
            "toolgraph_adaptive_limit",
            "The adaptive concurrency limit in force, by key (tool:NAME, host:…).",
            (|l: &toolgraph_engine::layer::adaptive::AdaptiveLimit| l.limit) as fn(&_) -> usize,
        ),
        (
            "toolgraph_adaptive_ceiling",
            "The configured ceiling of each adaptive limit.",
            |l| l.ceiling,
        ),
        (
            "toolgraph_adaptive_in_flight",
            "Attempts running under each adaptive limit now.",
            |l| l.in_flight,
        ),
    ] {
        header(out, name, "gauge", help);
        for l in limits {
            let _ = writeln!(out, "{name}{{key=\"{}\"}} {}", escape(&l.key), value(l));
        }
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let executor = state.runtime.executor();
    let limiter = executor.limiter();
    let mut text = state.metrics.render(&limiter.usage(), limiter.waiting());
    if let Some(throttle) = executor.throttle() {
        render_adaptive(&mut text, &throttle.limits());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The store answers a cheap read (the newest execution) within [`READY_TIMEOUT`]; 503
/// naming the store and the error otherwise. Without a store (recording off) there is
/// nothing to wait for.
async fn readyz(State(state): State<AppState>) -> Response {
    let Some(store) = state.runtime.store() else {
        return "ok (recording is off: no store)".into_response();
    };
    let problem = match tokio::time::timeout(READY_TIMEOUT, store.history(1)).await {
        Ok(Ok(_)) => return "ok".into_response(),
        Ok(Err(e)) => format!("the store {} does not answer: {e}", store.describe()),
        Err(_) => format!(
            "the store {} did not answer within {} ms",
            store.describe(),
            READY_TIMEOUT.as_millis()
        ),
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, problem).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgraph_core::CallError;

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall::new(id, name, serde_json::json!({}))
    }

    fn outcome(status: CallStatus, started: Option<f64>, finished: f64) -> CallOutcome<'static> {
        CallOutcome {
            status,
            output: None,
            error: None::<&CallError>,
            attempts: 1,
            queued_ms: 2.0,
            started_ms: started,
            finished_ms: finished,
            worker: None,
            cached: false,
        }
    }

    #[test]
    fn an_execution_counts_its_calls_by_tool_and_status_and_its_end() {
        let metrics = Arc::new(Metrics::new());
        let sink = (metrics.sink_factory())();
        let (a, b, c) = (call("a", "echo"), call("b", "sleep"), call("c", "echo"));
        sink.on_plan(&[&a, &b, &c]);
        sink.on_event(&Event::ExecutionStarted { calls: 3, edges: 0 });
        assert!(
            metrics
                .render(&[], 0)
                .contains("toolgraph_executions_running 1\n")
        );
        sink.on_outcome(0, &outcome(CallStatus::Ok, Some(1.0), 1.4));
        sink.on_outcome(1, &outcome(CallStatus::Error, Some(1.0), 31.0));
        sink.on_outcome(2, &outcome(CallStatus::Skipped, None, 31.0));
        sink.on_event(&Event::ExecutionFinished { success: false });
        let text = metrics.render(&[], 0);
        for line in [
            "toolgraph_calls_total{tool=\"echo\",status=\"ok\"} 1\n",
            "toolgraph_calls_total{tool=\"echo\",status=\"skipped\"} 1\n",
            "toolgraph_calls_total{tool=\"sleep\",status=\"error\"} 1\n",
            // 0.4 ms falls in the first bucket; the skipped call never ran.
            "toolgraph_call_duration_seconds_bucket{tool=\"echo\",le=\"0.0005\"} 1\n",
            "toolgraph_call_duration_seconds_count{tool=\"echo\"} 1\n",
            "toolgraph_call_duration_seconds_bucket{tool=\"sleep\",le=\"0.025\"} 0\n",
            "toolgraph_call_duration_seconds_bucket{tool=\"sleep\",le=\"0.05\"} 1\n",
            "toolgraph_call_duration_seconds_sum{tool=\"sleep\"} 0.03\n",
            "toolgraph_call_queue_wait_seconds_bucket{tool=\"echo\",le=\"0.0025\"} 1\n",
            "toolgraph_executions_total{status=\"failed\"} 1\n",
            "toolgraph_executions_total{status=\"succeeded\"} 0\n",
            "toolgraph_executions_running 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        drop(sink);
        assert!(
            metrics
                .render(&[], 0)
                .contains("toolgraph_executions_running 0\n"),
            "an execution that ended is not counted again when dropped"
        );
    }

    #[test]
    fn an_execution_dropped_before_its_end_counts_as_cancelled() {
        let metrics = Arc::new(Metrics::new());
        let sink = (metrics.sink_factory())();
        let a = call("a", "sleep");
        sink.on_plan(&[&a]);
        drop(sink);
        let text = metrics.render(&[], 0);
        assert!(text.contains("toolgraph_executions_running 0\n"), "{text}");
        assert!(
            text.contains("toolgraph_executions_total{status=\"cancelled\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn adaptive_limits_are_one_gauge_per_key() {
        let mut text = String::new();
        render_adaptive(
            &mut text,
            &[toolgraph_engine::layer::adaptive::AdaptiveLimit {
                key: "host:api.test".into(),
                limit: 7,
                ceiling: 64,
                in_flight: 3,
            }],
        );
        for line in [
            "# TYPE toolgraph_adaptive_limit gauge\n",
            "toolgraph_adaptive_limit{key=\"host:api.test\"} 7\n",
            "toolgraph_adaptive_ceiling{key=\"host:api.test\"} 64\n",
            "toolgraph_adaptive_in_flight{key=\"host:api.test\"} 3\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn limits_requests_and_label_values_are_rendered_escaped() {
        let metrics = Metrics::new();
        metrics.count_request("/v1/executions", 202);
        metrics.count_request("/v1/executions", 202);
        metrics.count_request("/v1/executions/{id}", 404);
        let usage = [
            toolgraph_engine::LimitUsage {
                key: "global".into(),
                in_flight: 3,
                limit: 8,
            },
            toolgraph_engine::LimitUsage {
                key: "host:a\"b".into(),
                in_flight: 1,
                limit: 2,
            },
        ];
        let text = metrics.render(&usage, 5);
        for line in [
            "toolgraph_calls_in_flight{limit=\"global\"} 3\n",
            "toolgraph_limit{limit=\"global\"} 8\n",
            "toolgraph_calls_in_flight{limit=\"host:a\\\"b\"} 1\n",
            "toolgraph_calls_waiting 5\n",
            "toolgraph_http_requests_total{route=\"/v1/executions\",status=\"202\"} 2\n",
            "toolgraph_http_requests_total{route=\"/v1/executions/{id}\",status=\"404\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        for line in text.lines() {
            assert!(
                line.starts_with("toolgraph_") || line.starts_with("# "),
                "{line}"
            );
        }
    }
}
