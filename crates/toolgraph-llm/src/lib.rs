//! toolgraph's LLM side: provider clients and the tool-calling loop.
//!
//! [`LlmClient`] speaks the OpenAI Chat Completions wire protocol (and every server that
//! copies it) and the Anthropic Messages protocol, plain or streamed (SSE), with retries on
//! 429 and 5xx. [`ToolOrchestrator`] runs the loop: ask the model, run the tool calls it
//! emits through a [`toolgraph_engine::ParallelExecutor`] (one execution per turn), answer
//! every call id, repeat until the model answers in text.
//!
//! Invariant: this crate is the only one that talks to model servers; it never runs a tool
//! itself — every call goes through the engine.

pub mod client;
pub mod config;
pub mod error;
#[cfg(feature = "mock")]
pub mod mock;
pub mod orchestrator;
mod sse;
pub mod turn;
mod wire;

pub use client::LlmClient;
pub use config::{LlmConfig, Provider, provider_env};
pub use error::LlmError;
pub use orchestrator::{BatchRunner, OrchestratorResult, ToolOrchestrator};
pub use turn::{Conversation, FinishReason, StreamEvent, Turn, Usage};
