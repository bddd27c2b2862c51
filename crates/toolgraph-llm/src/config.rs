//! [`LlmConfig`]: which provider, where, which model, and how patiently to ask.
//!
//! Configuration is data, validated at the edge (`deny_unknown_fields`); this module never
//! talks to the network.

use serde::{Deserialize, Serialize};

/// The wire protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI Chat Completions (`POST {base_url}/chat/completions`) and compatible servers.
    #[default]
    OpenAi,
    /// Anthropic Messages (`POST {base_url}/messages`).
    Anthropic,
}

/// How to reach one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// The wire protocol.
    pub provider: Provider,
    /// The API root, e.g. `https://api.openai.com/v1` (the endpoint path is appended).
    pub base_url: String,
    /// The API key; `None` sends no credentials (local servers).
    pub api_key: Option<String>,
    /// The model name.
    pub model: String,
    /// Ask for a server-sent-event stream.
    pub stream: bool,
    /// Timeout of one HTTP request (including a streamed body), in ms.
    pub timeout_ms: u64,
    /// Retries after a 429, a 5xx or a connection error.
    pub max_retries: u32,
    /// The most tokens the model may produce in one turn.
    pub max_tokens: u32,
    /// The largest reply body read, plain or streamed, in bytes; a larger one fails the
    /// turn rather than fill memory.
    pub max_response_bytes: usize,
    /// The largest server-sent event (and line within it) of a streamed reply, in bytes.
    pub max_event_bytes: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: Provider::OpenAi,
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            model: "gpt-4o-mini".into(),
            stream: false,
            timeout_ms: 120_000,
            max_retries: 3,
            max_tokens: 4096,
            max_response_bytes: 64 * 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
        }
    }
}

impl LlmConfig {
    /// The defaults for `provider` (its public endpoint and a small model).
    pub fn for_provider(provider: Provider) -> Self {
        match provider {
            Provider::OpenAi => LlmConfig::default(),
            Provider::Anthropic => LlmConfig {
                provider,
                base_url: "https://api.anthropic.com/v1".into(),
                model: "claude-3-5-haiku-latest".into(),
                ..LlmConfig::default()
            },
        }
    }

    /// The defaults for `provider`, overridden by `OPENAI_BASE_URL` / `OPENAI_API_KEY` /
    /// `OPENAI_MODEL` or `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` / `ANTHROPIC_MODEL`.
    pub fn from_env(provider: Provider) -> Self {
        let prefix = match provider {
            Provider::OpenAi => "OPENAI",
            Provider::Anthropic => "ANTHROPIC",
        };
        let var = |name: &str| {
            std::env::var(format!("{prefix}_{name}"))
                .ok()
                .filter(|v| !v.trim().is_empty())
        };
        let mut config = LlmConfig::for_provider(provider);
        if let Some(url) = var("BASE_URL") {
            config.base_url = url;
        }
        if let Some(key) = var("API_KEY") {
            config.api_key = Some(key);
        }
        if let Some(model) = var("MODEL") {
            config.model = model;
        }
        config
    }
}
