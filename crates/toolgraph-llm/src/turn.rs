//! What one model turn is made of: the conversation sent, the [`Turn`] received, and the
//! [`StreamEvent`]s seen while a streamed turn arrives.
//!
//! Plain data: this module does no I/O and knows nothing of HTTP.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toolgraph_core::ToolCall;

/// The messages sent to the model, already in the provider's shape, and the system prompt
/// (sent as a first `system` message to OpenAI, as the `system` field to Anthropic).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The system prompt.
    pub system: Option<String>,
    /// Provider-shaped messages (`{"role": ..., "content": ...}`), oldest first.
    pub messages: Vec<Value>,
}

impl Conversation {
    /// A conversation opening with one user message.
    pub fn user(system: Option<String>, prompt: &str) -> Self {
        Conversation {
            system,
            messages: vec![serde_json::json!({"role": "user", "content": prompt})],
        }
    }
}

/// Token counts of one turn (or summed over a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Adds another turn's counts.
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// A natural end (`stop`, `end_turn`, `stop_sequence`).
    Stop,
    /// The model wants tools run (`tool_calls`, `tool_use`).
    ToolCalls,
    /// Cut off by the token limit (`length`, `max_tokens`): arguments may be truncated.
    Length,
    /// Cut off by a content filter (`content_filter`, `refusal`).
    ContentFilter,
    /// The server reported an error mid-stream.
    Error(String),
    /// Anything else, as the server named it.
    Other(String),
}

impl FinishReason {
    /// Maps an OpenAI `finish_reason` or an Anthropic `stop_reason`.
    pub fn from_wire(reason: &str) -> Self {
        match reason {
            "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "tool_calls" | "tool_use" | "function_call" => FinishReason::ToolCalls,
            "length" | "max_tokens" => FinishReason::Length,
            "content_filter" | "refusal" => FinishReason::ContentFilter,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    /// True when the turn was cut short: its tool calls must not run.
    pub fn is_cut_short(&self) -> bool {
        matches!(
            self,
            FinishReason::Length | FinishReason::ContentFilter | FinishReason::Error(_)
        )
    }
}

/// One model reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The text the model wrote.
    pub text: String,
    /// The tool calls with valid JSON arguments, ids as the model gave them, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Calls whose arguments were not valid JSON: `(id, name, error)`.
    pub malformed: Vec<(String, String, String)>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Tokens used.
    pub usage: Usage,
    /// Time spent on HTTP for this turn (retries and waits included), in ms.
    pub model_ms: f64,
    /// The assistant message to append to the conversation, in the provider's shape.
    pub assistant_message: Value,
}

/// What a streamed turn reports as it arrives (a plain turn reports the same at its end).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A piece of text.
    TextDelta(String),
    /// A tool call whose arguments are complete and valid JSON.
    ToolCallComplete(ToolCall),
    /// The model stopped.
    Finish(FinishReason),
}
