//! `GET /v1/executions/{id}/events`: an execution's events as Server-Sent Events — the
//! past first (a late subscriber misses nothing), then live ones, ending after `summary`;
//! `Last-Event-ID: n` resumes after event `n`. An execution only in the store (it ended
//! before this server started, or long ago) replays `plan`, a `finished` per ended call
//! and `summary`, rebuilt from its record.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use toolgraph_store::StoredExecution;

use super::{Found, find_execution};
use crate::AppState;
use crate::live::{FinishedData, LiveEvent, LiveExecution, plan_data};
use crate::problem::Problem;
use crate::problem::store_problem;

/// One Server-Sent Event of an execution (each event of the stream has this form).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// Its number: 0, 1, 2, … (`Last-Event-ID` resumes after one).
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// What happened.
    event: SseKind,
    /// The event's JSON (see the README for each kind's fields).
    data: String,
}

/// The kinds of events, in the order an execution emits them.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SseKind {
    /// The calls and edges (first).
    Plan,
    /// A call's dependencies are done; it waits for a slot.
    Queued,
    /// A call started.
    Started,
    /// A call ended: status, timings, attempts, output or error, and the worker that ran it
    /// when another process did (its data is a `FinishedEvent`).
    Finished,
    /// The figures (last).
    Summary,
}

/// The execution's events.
#[utoipa::path(
    get,
    path = "/v1/executions/{id}/events",
    params(
        ("id" = String, Path, description = "An execution id or a unique prefix of one (4+ characters)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event number"),
    ),
    responses(
        (status = 200, description = "`id: <seq>`, `event: plan|queued|started|finished|summary`, `data: <json>`", body = SseEvent, content_type = "text/event-stream"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn execution_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let from = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| n.saturating_add(1))
            // Not one of ours: start from the beginning.
            .unwrap_or(0),
    };
    match find_execution(&state, &id).await? {
        Found::Live(_, live) => Ok(sse(follow(live, from)).into_response()),
        Found::Stored(summary) => {
            let store = state
                .runtime
                .store()
                .ok_or_else(|| Problem::internal("no store"))?;
            let stored = store.load(&summary.id).await.map_err(store_problem)?;
            let events = replay(&stored);
            let start = usize::try_from(from)
                .unwrap_or(usize::MAX)
                .min(events.len());
            let events: Vec<Arc<LiveEvent>> = events[start..].to_vec();
            Ok(sse(stream::iter(events)).into_response())
        }
    }
}

fn sse(
    events: impl Stream<Item = Arc<LiveEvent>> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(events.map(|e| {
        Ok(Event::default()
            .id(e.seq.to_string())
            .event(e.kind)
            .data(e.data.as_str()))
    }))
    .keep_alive(KeepAlive::default())
}

/// A live execution's events from `from` on: the log, then each new event, until the end.
fn follow(live: Arc<LiveExecution>, from: u64) -> impl Stream<Item = Arc<LiveEvent>> + Send {
    let changes = live.subscribe();
    stream::unfold(
        (live, changes, from, false),
        |(live, mut changes, next, done)| async move {
            if done {
                return None;
            }
            loop {
                let (events, complete) = live.events_from(next);
                if !events.is_empty() {
                    let next = next + events.len() as u64;
                    // Complete and read to its end: this batch is the last.
                    let last = complete && live.events_from(next).0.is_empty();
                    return Some((stream::iter(events), (live, changes, next, last)));
                }
                if complete || changes.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
    .flatten()
}

/// A stored execution's events: `plan`, a `finished` per ended call, `summary`.
fn replay(stored: &StoredExecution) -> Vec<Arc<LiveEvent>> {
    let mut events = Vec::new();
    let mut push = |kind: &'static str, data: String| {
        let seq = events.len() as u64;
        events.push(Arc::new(LiveEvent { seq, kind, data }));
    };
    push("plan", plan_data(&stored.calls, &stored.edges).to_string());
    for (position, r) in stored.result.results.iter().enumerate() {
        let state = stored.states.get(position).map(String::as_str);
        if matches!(state, Some("pending" | "running") | None) {
            continue;
        }
        let data = FinishedData {
            position,
            call_id: &r.id,
            status: r.status,
            queued_ms: r.queued_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms.unwrap_or(0.0),
            duration_ms: r.duration_ms,
            attempts: r.attempts,
            output: r.output.as_deref(),
            error: r.error.as_ref(),
            worker: r.worker.as_deref(),
            cached: r.cached,
        };
        push(
            "finished",
            serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned()),
        );
    }
    let result = &stored.result;
    let status = stored.summary.status.as_str();
    push(
        "summary",
        json!({
            "success": result.success,
            "total_time_ms": result.total_time_ms,
            "sequential_time_estimate_ms": result.sequential_time_estimate_ms,
            "critical_path_ms": result.critical_path_ms,
            "speedup": result.speedup,
            "efficiency": result.efficiency,
            "critical": stored.critical,
            "status": status,
        })
        .to_string(),
    );
    events
}
