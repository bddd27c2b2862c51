//! `GET /v1/approvals` and `POST /v1/approvals/{id}`: calls waiting for a person, and the
//! answer to one.
//!
//! [`PendingApprovals`] is the service's [`Approver`]: a call whose approval policy says
//! `ask` (`[approvals]` in the server's configuration) is listed here, with its execution,
//! call id, tool, arguments, class and the resources it would touch, until a client answers
//! `approve`, `deny` (with an optional `reason`) or `edit` (with `arguments`). Meanwhile the
//! call holds no slot and the rest of its execution goes on; its live events show
//! `awaiting_approval`. A question whose execution is cancelled is withdrawn (it leaves the
//! list). `approve_always` is not offered over HTTP: it would approve the tool for every
//! client of the server.
//!
//! Invariant: the registry's lock is never held across an await.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use toolgraph_core::{ApprovalDecision, ApprovalRequest, Approver};
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::Problem;

/// Calls waiting for an answer, by approval id.
#[derive(Clone, Default)]
pub struct PendingApprovals {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Waiting>>,
}

struct Waiting {
    request: ApprovalRequest,
    answer: oneshot::Sender<ApprovalDecision>,
}

impl Inner {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a question from the list when its call stops waiting (answered or withdrawn).
struct Withdraw {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.inner.waiting().remove(&self.id);
    }
}

impl Approver for PendingApprovals {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> {
        let inner = self.inner.clone();
        let id = inner.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (answer, decision) = oneshot::channel();
        inner.waiting().insert(id, Waiting { request, answer });
        let withdraw = Withdraw { inner, id };
        Box::pin(async move {
            let _withdraw = withdraw;
            decision.await.unwrap_or(ApprovalDecision::Deny {
                reason: Some("the question was dropped by the server".into()),
            })
        })
    }
}

/// One call waiting for an answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingApproval {
    /// The approval's id: answer it at `POST /v1/approvals/{id}`.
    id: String,
    /// The call, its tool, the arguments it would run with, its class (`read_only`,
    /// `write`, `network_write`, `shell`, `destructive`) and the resources it would touch.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    request: ApprovalRequest,
}

/// The calls waiting for an answer, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingList {
    /// Oldest first.
    approvals: Vec<PendingApproval>,
}

/// Lists the calls waiting for an answer.
#[utoipa::path(get, path = "/v1/approvals", responses((status = 200, body = PendingList)))]
pub async fn list_approvals(State(state): State<AppState>) -> Json<PendingList> {
    let approvals = state
        .approvals
        .inner
        .waiting()
        .iter()
        .map(|(id, w)| PendingApproval {
            id: id.to_string(),
            request: w.request.clone(),
        })
        .collect();
    Json(PendingList { approvals })
}

/// What was decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct Answered {
    /// The approval's id.
    id: String,
    /// The call it was about.
    call_id: String,
    /// `approve`, `deny` or `edit`.
    decision: &'static str,
}

/// Answers a waiting call: `{"decision": "approve"}`, `{"decision": "deny", "reason": "…"}`
/// or `{"decision": "edit", "arguments": {…}}` (checked against the tool's schema before it
/// runs).
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}",
    params(("id" = String, Path, description = "The approval's id, from GET /v1/approvals")),
    request_body(content = Object, description = "{\"decision\": \"approve\" | \"deny\" | \"edit\", \"reason\"?: string, \"arguments\"?: object}"),
    responses(
        (status = 200, body = Answered),
        (status = 400, description = "Not a decision"),
        (status = 404, description = "No call waits under this id"),
        (status = 415, description = "Not sent as application/json")
    )
)]
pub async fn answer_approval(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Json<Answered>, Problem> {
    // Only JSON: a web page can send a form or `text/plain` to a loopback service without
    // the browser asking first (no CORS preflight), and must not answer a question.
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an answer is sent as application/json (Content-Type: application/json)",
        ));
    }
    let decision = read_decision(&body)?;
    let not_waiting = || {
        Problem::not_found(format!(
            "no call waits for approval under id {id:?} (answered, withdrawn, or never asked; \
             GET /v1/approvals lists them)"
        ))
    };
    let key: u64 = id.trim().parse().map_err(|_| not_waiting())?;
    let Some(waiting) = state.approvals.inner.waiting().remove(&key) else {
        return Err(not_waiting());
    };
    let name = match decision {
        ApprovalDecision::Deny { .. } => "deny",
        ApprovalDecision::Edit { .. } => "edit",
        _ => "approve",
    };
    let call_id = waiting.request.call_id.clone();
    // The call may have been withdrawn a moment ago: then nobody hears the answer.
    let _ = waiting.answer.send(decision);
    Ok(Json(Answered {
        id,
        call_id,
        decision: name,
    }))
}

fn read_decision(body: &Bytes) -> Result<ApprovalDecision, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("not valid JSON: {e}")))?;
    let how = "write {\"decision\": \"approve\"}, {\"decision\": \"deny\", \"reason\": \"…\"} or \
               {\"decision\": \"edit\", \"arguments\": {…}}";
    let decision: ApprovalDecision = serde_json::from_value(value)
        .map_err(|e| Problem::bad_request(format!("not a decision ({e}); {how}")))?;
    match decision {
        ApprovalDecision::ApproveAlways => Err(Problem::bad_request(format!(
            "approve_always is not offered over HTTP (it would approve the tool for every \
             client); {how}"
        ))),
        ApprovalDecision::Edit { arguments } if !arguments.is_object() => Err(
            Problem::bad_request(format!("the edited arguments must be a JSON object; {how}")),
        ),
        decision => Ok(decision),
    }
}
