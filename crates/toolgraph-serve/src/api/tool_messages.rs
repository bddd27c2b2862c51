//! `POST /v1/tool-messages`: an agent's round trip in one request — an OpenAI assistant
//! message (or a whole chat-completion response) or an Anthropic message in, its calls run,
//! the answers out in that provider's shape: `role: tool` messages, or one `user` message
//! of `tool_result` blocks (`is_error` on failures); one per call id, in call order.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::live::Launch;
use crate::problem::{Problem, input_rejected};

/// The answers to a message's tool calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolMessages {
    /// `openai` or `anthropic`: the shape of `messages`.
    provider: String,
    /// OpenAI: one `role: tool` message per call. Anthropic: one `user` message of
    /// `tool_result` blocks.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<Value>,
    /// The execution that ran them (its events and record stay available).
    execution_id: String,
    /// Every call succeeded.
    success: bool,
}

/// The provider whose shape a message has: Anthropic when its `content` holds blocks.
fn provider_of(message: &Value) -> &'static str {
    let content_blocks = message.get("content").is_some_and(Value::is_array);
    if content_blocks && message.get("tool_calls").is_none() && message.get("choices").is_none() {
        "anthropic"
    } else {
        "openai"
    }
}

/// Runs a model message's tool calls and answers them in the provider's shape.
#[utoipa::path(
    post,
    path = "/v1/tool-messages",
    request_body(content = Object, content_type = "application/json", description = "An OpenAI assistant message or chat-completion response, or an Anthropic message"),
    responses(
        (status = 200, body = ToolMessages),
        (status = 400, description = "The calls are rejected; nothing ran", body = Problem, content_type = "application/problem+json"),
        (status = 500, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn tool_messages(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<ToolMessages>, Problem> {
    let (calls, _options) = super::read_batch(&body)?;
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let provider = provider_of(&message);
    let plan = state.runtime.plan(calls).map_err(|e| input_rejected(&e))?;
    let runtime = if plan.is_empty() {
        state.runtime.with_store(None)
    } else {
        state.runtime.clone()
    };
    let launched = state
        .live
        .launch(runtime, plan, None, Launch::Execute)
        .await?;
    let result = launched.execution.wait().await?;
    let messages = match provider {
        "anthropic" => vec![result.to_anthropic_message()],
        _ => result.to_openai_messages(),
    };
    Ok(Json(ToolMessages {
        provider: provider.to_owned(),
        messages,
        execution_id: launched.id,
        success: result.success,
    }))
}
