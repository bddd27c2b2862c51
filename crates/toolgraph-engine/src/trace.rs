//! The `tracing` spans of an execution: `execution` → `call` → `attempt`, with the fields a
//! trace viewer or a JSON log needs (ids, tool, status, queue and run time, attempts, the
//! limit a call waited on, the worker that ran it).
//!
//! Field names follow the OpenTelemetry GenAI conventions where one applies: a call span is
//! named `execute_tool {tool}` for exporters (`otel.name`) and carries
//! `gen_ai.operation.name`, `gen_ai.tool.name` and `gen_ai.tool.call.id`; a call that did
//! not succeed sets `otel.status_code = "ERROR"` and `error.type`. Everything else is
//! toolgraph's own (`toolgraph.*` is not used: plain names read better in logs).
//!
//! Counts are recorded as `i64` (OpenTelemetry has no unsigned integers).
//!
//! Invariant: with no subscriber interested, nothing here allocates or formats — every span
//! is `Span::none()` and every `record_*` returns at its first check; the scheduler keeps
//! its per-call bookkeeping for the `limit` field only when the execution span is enabled.
//! This module never installs a subscriber (front ends do).

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use toolgraph_core::{CallError, CallStatus};
use tracing::Span;
use tracing::field::Empty;

use crate::layer::Failure;

/// The limit a call waited on before it started, as the `limit` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The execution's `max_concurrency`.
    Global,
    /// Its tool's concurrency limit.
    Tool,
    /// A resource key's limit.
    Resource,
    /// The CPU / memory budget.
    Budget,
    /// The limits every execution of the executor shares.
    Shared,
}

impl Waited {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Waited::Global => "global",
            Waited::Tool => "tool",
            Waited::Resource => "resource",
            Waited::Budget => "budget",
            Waited::Shared => "shared",
        }
    }
}

/// A count as a signed integer: OpenTelemetry's integers are i64, and the bridge exports
/// an unsigned value as text.
fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The span of one execution; ids are set by the caller ([`RunOptions`](crate::RunOptions)).
pub(crate) fn execution_span(
    calls: usize,
    edges: usize,
    execution_id: Option<&str>,
    session_id: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        "execution",
        execution.id = Empty,
        session.id = Empty,
        calls = int(calls),
        edges = int(edges),
        success = Empty,
        makespan_ms = Empty,
        speedup = Empty,
        otel.status_code = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(id) = execution_id {
        span.record("execution.id", id);
    }
    if let Some(id) = session_id {
        span.record("session.id", id);
    }
    span
}

/// Records how an execution ended on its span.
pub(crate) fn record_execution_end(span: &Span, success: bool, makespan_ms: f64, speedup: f64) {
    if span.is_disabled() {
        return;
    }
    span.record("success", success);
    span.record("makespan_ms", makespan_ms);
    span.record("speedup", speedup);
    if !success {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of call `position` (`call_id`, of `tool`), opened when it is dispatched (or when
/// it ends without running); `limit` is what it waited on, if anything.
pub(crate) fn call_span(call_id: &str, tool: &str, position: usize, limit: Option<Waited>) -> Span {
    let span = tracing::info_span!(
        "call",
        otel.name = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        gen_ai.tool.call.id = call_id,
        position = int(position),
        status = Empty,
        queue_ms = Empty,
        run_ms = Empty,
        attempts = Empty,
        cached = Empty,
        limit = Empty,
        worker = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("otel.name", format!("execute_tool {tool}"));
    if let Some(limit) = limit {
        span.record("limit", limit.as_str());
    }
    span
}

/// What a call's span records when it ends.
pub(crate) struct CallEnd<'a> {
    pub status: CallStatus,
    pub error: Option<&'a CallError>,
    pub attempts: u32,
    pub ready_at: Option<Instant>,
    pub started: Option<Instant>,
    pub finished: Instant,
    pub worker: Option<&'a str>,
    pub cached: bool,
}

/// Records how a call ended on its span.
pub(crate) fn record_call_end(span: &Span, end: CallEnd<'_>) {
    if span.is_disabled() {
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let start_or_end = end.started.unwrap_or(end.finished);
    if let Some(ready) = end.ready_at {
        span.record(
            "queue_ms",
            ms(start_or_end.saturating_duration_since(ready)),
        );
    }
    if let Some(started) = end.started {
        span.record(
            "run_ms",
            ms(end.finished.saturating_duration_since(started)),
        );
    }
    span.record("status", end.status.as_str());
    span.record("attempts", i64::from(end.attempts));
    span.record("cached", end.cached);
    if let Some(worker) = end.worker {
        span.record("worker", worker);
    }
    if end.status != CallStatus::Ok {
        span.record("otel.status_code", "ERROR");
        if let Some(e) = end.error {
            // The kind's wire name (`timeout`, `denied`), as results and the API spell it.
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", e.kind));
            span.record("error.type", kind.as_str());
            span.record("otel.status_description", e.message.as_str());
        }
    }
}

/// The span of one attempt of the current call.
pub(crate) fn attempt_span(number: u32) -> Span {
    tracing::info_span!(
        "attempt",
        number = i64::from(number),
        outcome = Empty,
        error.kind = Empty,
        otel.status_code = Empty,
    )
}

/// Records how an attempt ended on its span.
pub(crate) fn record_attempt_end(span: &Span, result: &Result<Value, Failure>) {
    if span.is_disabled() {
        return;
    }
    let (outcome, kind) = match result {
        Ok(_) => ("ok", None),
        Err(Failure::Tool(e)) if e.is_transient() => ("error", Some("transient")),
        Err(Failure::Tool(_)) => ("error", Some("permanent")),
        Err(Failure::Panic(_)) => ("error", Some("panic")),
        Err(Failure::Timeout(_)) => ("timeout", Some("timeout")),
        Err(Failure::Call(_)) => ("error", Some("call")),
    };
    span.record("outcome", outcome);
    if let Some(kind) = kind {
        span.record("error.kind", kind);
        span.record("otel.status_code", "ERROR");
    }
}

/// Tells the current call's span that it waited on `limit` (an adaptive limit, a
/// `Retry-After` pause or a token bucket, from the layer that waited).
pub(crate) fn note_wait(limit: &'static str) {
    let span = Span::current();
    if !span.is_disabled() {
        span.record("limit", limit);
    }
}
