//! Errors as `application/problem+json` (RFC 9457): a status, a short title, and the same
//! precise text the CLI prints (naming the call ids), so any client can show it as is.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use toolgraph::RuntimeError;
use toolgraph_store::StoreError;

/// An error answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The HTTP status, repeated.
    pub status: u16,
    /// The kind of problem (the status's reason phrase, or a short name).
    pub title: String,
    /// What went wrong, in words: the CLI's message.
    pub detail: String,
    /// For a rejected batch: each problem, naming the call (id and position) it is about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::api::schema::InputProblem>)]
    pub problems: Vec<toolgraph_core::Problem>,
}

impl Problem {
    /// A problem with `status`, titled by the status's reason phrase.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail: detail.into(),
            problems: Vec::new(),
        }
    }

    /// 400: the request cannot be run as given.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404: nothing by that name.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    /// 500: the server failed (the store, mostly).
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

/// 400 for a rejected batch: the CLI's text (`input rejected (N problems)` and one line per
/// problem naming its call id) and the problems one by one; nothing ran.
pub fn input_rejected(e: &toolgraph_core::InputError) -> Problem {
    Problem {
        problems: e.problems.clone(),
        ..Problem::bad_request(format!("{e}\nnothing ran."))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

/// A runtime error as an answer: the batch's problems are 400, an unknown execution 404,
/// an execution that cannot be resumed now 409, the store's failures 500.
pub fn runtime_problem(e: RuntimeError) -> Problem {
    use axum::http::StatusCode;
    match e {
        RuntimeError::Input(e) => input_rejected(&e),
        RuntimeError::Store(e) => store_problem(e),
        RuntimeError::NoStore => Problem::new(StatusCode::CONFLICT, e.to_string()),
        RuntimeError::NothingToResume(_) | RuntimeError::Owned { .. } => {
            Problem::new(StatusCode::CONFLICT, e.to_string())
        }
    }
}

/// A store error as an answer: 404 for an unknown id, 400 for something that is no id,
/// 409 for an ambiguous prefix (the candidates are in the text), 500 otherwise.
pub fn store_problem(e: StoreError) -> Problem {
    use axum::http::StatusCode;
    let status = match &e {
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::BadId { .. } => StatusCode::BAD_REQUEST,
        StoreError::Ambiguous { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Problem::new(status, e.to_string())
}
