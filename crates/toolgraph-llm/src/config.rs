//! [`LlmConfig`]: which provider, where, which model, and how patiently to ask.
//!
//! Configuration is data, validated at the edge (`deny_unknown_fields`); this module never
//! talks to the network.

use serde::{Deserialize, Serialize};

/// The wire protocol a server speaks. Written `openai` or `anthropic`, as on the command
/// line (`open_ai`, the spelling of earlier releases, is read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Provider {
    /// OpenAI Chat Completions (`POST {base_url}/chat/completions`, the base URL ending in
    /// `/v1` as in OpenAI's SDKs) and compatible servers.
    #[default]
    #[serde(rename = "openai", alias = "open_ai")]
    OpenAi,
    /// Anthropic Messages (`POST {base_url}/v1/messages`, the base URL without `/v1` as in
    /// Anthropic's SDKs).
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl Provider {
    /// How it is written in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The prefix of its conventional environment variables: `OPENAI` (`OPENAI_API_KEY`,
    /// `OPENAI_BASE_URL`, `OPENAI_MODEL`) or `ANTHROPIC`.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI",
            Provider::Anthropic => "ANTHROPIC",
        }
    }

    /// The variable that holds its API key.
    pub fn api_key_variable(self) -> String {
        format!("{}_API_KEY", self.env_prefix())
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields the conventional variables set, by variable suffix: `{PREFIX}_BASE_URL` →
/// `base_url`, `{PREFIX}_API_KEY` → `api_key`, `{PREFIX}_MODEL` → `model`.
pub const ENV_FIELDS: [(&str, &str); 3] = [
    ("BASE_URL", "base_url"),
    ("API_KEY", "api_key"),
    ("MODEL", "model"),
];

/// How to reach one model. Read from a configuration, the fields left out take the
/// defaults of its `provider` ([`LlmConfig::for_provider`]): `provider = "anthropic"` alone
/// means Anthropic's endpoint and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LlmSection")]
pub struct LlmConfig {
    /// The wire protocol.
    pub provider: Provider,
    /// The API root as the provider's SDKs take it: `https://api.openai.com/v1` (the
    /// client appends `/chat/completions`), `https://api.anthropic.com` (the client appends
    /// `/v1/messages`).
    pub base_url: String,
    /// The API key. `None` is refused unless the server is on this machine (a loopback
    /// address or `localhost`); `Some("")` sends no credentials on purpose (a server that
    /// needs none).
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

/// [`LlmConfig`] as written: only what was said.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmSection {
    #[serde(default)]
    provider: Provider,
    base_url: Option<String>,
    api_key: Option<String>,
    model: Option<String>,
    stream: Option<bool>,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
    max_tokens: Option<u32>,
    max_response_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
}

impl From<LlmSection> for LlmConfig {
    fn from(s: LlmSection) -> Self {
        let d = LlmConfig::for_provider(s.provider);
        LlmConfig {
            provider: s.provider,
            base_url: s.base_url.unwrap_or(d.base_url),
            api_key: s.api_key.or(d.api_key),
            model: s.model.unwrap_or(d.model),
            stream: s.stream.unwrap_or(d.stream),
            timeout_ms: s.timeout_ms.unwrap_or(d.timeout_ms),
            max_retries: s.max_retries.unwrap_or(d.max_retries),
            max_tokens: s.max_tokens.unwrap_or(d.max_tokens),
            max_response_bytes: s.max_response_bytes.unwrap_or(d.max_response_bytes),
            max_event_bytes: s.max_event_bytes.unwrap_or(d.max_event_bytes),
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
                base_url: "https://api.anthropic.com".into(),
                model: "claude-3-5-haiku-latest".into(),
                ..LlmConfig::default()
            },
        }
    }

    /// The defaults for `provider`, overridden by `OPENAI_BASE_URL` / `OPENAI_API_KEY` /
    /// `OPENAI_MODEL` or `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` / `ANTHROPIC_MODEL`.
    pub fn from_env(provider: Provider) -> Self {
        LlmConfig::for_provider(provider).with_env(std::env::vars())
    }

    /// This configuration with its provider's conventional variables among `env` applied
    /// (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL`, or the `ANTHROPIC_` ones); empty
    /// values are ignored.
    pub fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        for (field, value) in provider_env(self.provider, env) {
            match field {
                "base_url" => self.base_url = value,
                "api_key" => self.api_key = Some(value),
                "model" => self.model = value,
                _ => {}
            }
        }
        self
    }
}

/// The conventional variables of `provider` among `env`, as `(field, value)`: see
/// [`ENV_FIELDS`]. Empty values are left out.
pub fn provider_env(
    provider: Provider,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(&'static str, String)> {
    let prefix = provider.env_prefix();
    let mut found = Vec::new();
    for (name, value) in env {
        let Some(suffix) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
        else {
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        if let Some((_, field)) = ENV_FIELDS.iter().find(|(s, _)| *s == suffix) {
            found.push((*field, value));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn providers_are_written_as_on_the_command_line_and_the_old_spelling_still_reads() {
        for (text, want) in [
            ("openai", Provider::OpenAi),
            ("open_ai", Provider::OpenAi),
            ("anthropic", Provider::Anthropic),
        ] {
            let read = serde_json::from_value::<Provider>(serde_json::json!(text));
            assert_eq!(read.ok(), Some(want), "{text}");
        }
        assert_eq!(
            serde_json::to_value(Provider::OpenAi).ok(),
            Some(serde_json::json!("openai"))
        );
        let wrong = serde_json::from_value::<Provider>(serde_json::json!("open-ai"))
            .expect_err("not a provider")
            .to_string();
        assert!(
            wrong.contains("openai") && wrong.contains("anthropic"),
            "{wrong}"
        );
    }

    #[test]
    fn fields_left_out_take_the_defaults_of_the_provider_named() {
        let anthropic: LlmConfig =
            serde_json::from_value(serde_json::json!({"provider": "anthropic", "max_tokens": 9}))
                .expect("reads");
        assert_eq!(anthropic.base_url, "https://api.anthropic.com");
        assert_eq!(
            anthropic.model,
            LlmConfig::for_provider(Provider::Anthropic).model
        );
        assert_eq!(anthropic.max_tokens, 9);
        let openai: LlmConfig = serde_json::from_value(serde_json::json!({})).expect("reads");
        assert_eq!(openai, LlmConfig::default());
        let typo = serde_json::from_value::<LlmConfig>(serde_json::json!({"modle": "x"}))
            .expect_err("unknown field")
            .to_string();
        assert!(typo.contains("unknown field `modle`"), "{typo}");
    }

    #[test]
    fn only_the_chosen_providers_non_empty_variables_apply() {
        let vars = env(&[
            ("OPENAI_MODEL", "gpt-test"),
            ("OPENAI_API_KEY", " "),
            ("OPENAI_BASE_URLS", "ignored: not a field"),
            ("ANTHROPIC_MODEL", "claude-test"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
        ]);
        let openai = LlmConfig::for_provider(Provider::OpenAi).with_env(vars.clone());
        assert_eq!(openai.model, "gpt-test");
        assert_eq!(openai.api_key, None, "an empty key is no key");
        assert_eq!(openai.base_url, "https://api.openai.com/v1");
        let anthropic = LlmConfig::for_provider(Provider::Anthropic).with_env(vars);
        assert_eq!(anthropic.model, "claude-test");
        assert_eq!(anthropic.base_url, "http://127.0.0.1:9/");
    }
}
