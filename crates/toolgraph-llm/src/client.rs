//! [`LlmClient`]: one model endpoint over HTTP — request, retries, plain or SSE response.
//!
//! Retries 429, 5xx and connection failures with exponential backoff, honouring
//! `retry-after` / `retry-after-ms` (each wait capped at [`MAX_WAIT`]); other statuses fail
//! with the body's error message. Every body read is bounded: a reply by
//! [`LlmConfig::max_response_bytes`], a stream event by [`LlmConfig::max_event_bytes`], an
//! error body by [`ERROR_BODY_BYTES`]. It must never retry once a streamed body has begun
//! (events already reached the caller), never buffer more than those limits, and never
//! panic on what a server sends.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use toolgraph_core::ToolSpec;

use crate::config::{LlmConfig, Provider};
use crate::error::LlmError;
use crate::sse::{EventTooLarge, SseDecoder};
use crate::turn::{Conversation, StreamEvent, Turn};
use crate::wire::{self, NameMap, TurnBuilder, anthropic, openai};

/// The longest wait between two attempts, whatever the server asks.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The first backoff step (doubled per attempt, with jitter) when the server names none.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Bytes read at most from an error response's body: enough for its message.
pub const ERROR_BODY_BYTES: usize = 64 * 1024;
/// Characters of a stream event quoted in an error about it.
const QUOTED_EVENT_CHARS: usize = 200;

/// A client for one provider configuration.
///
/// ```
/// use toolgraph_llm::{LlmClient, LlmConfig, LlmError, Provider};
/// let mut config = LlmConfig::for_provider(Provider::Anthropic);
/// // No key for a remote server: refused before anything is sent.
/// assert!(matches!(LlmClient::new(config.clone()), Err(LlmError::MissingApiKey { .. })));
/// config.api_key = Some("sk-ant-…".into());
/// let client = LlmClient::new(config).unwrap();
/// assert_eq!(client.endpoint(), "https://api.anthropic.com/v1/messages");
/// ```
#[derive(Debug, Clone)]
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl LlmClient {
    /// A client for `config`; fails when the base URL is not a URL, a header value (the
    /// key) is not valid, a size limit is zero, or there is no API key while the server is
    /// not on this machine (see [`LlmConfig::api_key`]).
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        for (field, value) in [
            ("max_response_bytes", config.max_response_bytes),
            ("max_event_bytes", config.max_event_bytes),
        ] {
            if value == 0 {
                return Err(LlmError::Config(format!("{field} must be at least 1")));
            }
        }
        let base = reqwest::Url::parse(&config.base_url).map_err(|e| {
            LlmError::Config(format!("base_url {:?} is not a URL: {e}", config.base_url))
        })?;
        if config.api_key.is_none() && !is_local(&base) {
            return Err(LlmError::MissingApiKey {
                provider: config.provider,
                base_url: config.base_url.clone(),
                variable: config.provider.api_key_variable(),
            });
        }
        // Another provider may already be installed; either one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .build()
            .map_err(|e| LlmError::Config(e.to_string()))?;
        let base = config.base_url.trim_end_matches('/');
        let url = match config.provider {
            Provider::OpenAi => format!("{base}/chat/completions"),
            // Anthropic's SDKs take the root without the version, as `ANTHROPIC_BASE_URL`.
            Provider::Anthropic => format!("{base}/v1/messages"),
        };
        let mut headers = HeaderMap::new();
        let header = |v: &str| {
            HeaderValue::from_str(v).map_err(|e| LlmError::Config(format!("API key: {e}")))
        };
        // An empty key means: this server needs none.
        let key = config.api_key.as_deref().filter(|k| !k.is_empty());
        match (config.provider, key) {
            (Provider::OpenAi, Some(key)) => {
                headers.insert(
                    reqwest::header::AUTHORIZATION,
                    header(&format!("Bearer {key}"))?,
                );
            }
            (Provider::Anthropic, key) => {
                if let Some(key) = key {
                    headers.insert("x-api-key", header(key)?);
                }
                headers.insert(
                    "anthropic-version",
                    HeaderValue::from_static(anthropic::VERSION),
                );
            }
            (Provider::OpenAi, None) => {}
        }
        Ok(LlmClient {
            config,
            http,
            url,
            headers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.url
    }

    /// Sends `conversation` with `tools` and returns the model's turn; `on_event` sees text
    /// deltas, completed tool calls and the finish reason as they arrive.
    pub async fn complete(
        &self,
        conversation: &Conversation,
        tools: &[ToolSpec],
        mut on_event: impl FnMut(StreamEvent),
    ) -> Result<Turn, LlmError> {
        let started = Instant::now();
        let body = match self.config.provider {
            Provider::OpenAi => openai::request(&self.config, conversation, tools),
            Provider::Anthropic => anthropic::request(&self.config, conversation, tools),
        };
        let names = NameMap::new(tools);
        let response = self.send_with_retries(&body).await?;
        let mut builder = TurnBuilder::new(&names);
        if self.config.stream {
            self.read_stream(response, &mut builder, &mut on_event)
                .await?;
        } else {
            let body = self.read_body(response).await?;
            let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| LlmError::Protocol(format!("response is not JSON: {e}")))?;
            match self.config.provider {
                Provider::OpenAi => openai::read_response(&value, &mut builder, &mut on_event)?,
                Provider::Anthropic => {
                    anthropic::read_response(&value, &mut builder, &mut on_event)?
                }
            }
        }
        let mut turn = match self.config.provider {
            Provider::OpenAi => builder.build(&mut on_event, openai::assistant_message),
            Provider::Anthropic => builder.build(&mut on_event, anthropic::assistant_message),
        };
        turn.model_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(turn)
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        builder: &mut TurnBuilder<'_>,
        on_event: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), LlmError> {
        let limit = self.config.max_response_bytes;
        let mut decoder = SseDecoder::new(self.config.max_event_bytes);
        let mut bytes = response.bytes_stream();
        let mut read = 0usize;
        let mut ended = false;
        while !ended {
            let (events, last) = match bytes.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| self.transport(&e))?;
                    read = read.saturating_add(chunk.len());
                    if read > limit {
                        return Err(self.too_large(
                            "the streamed reply",
                            "max_response_bytes",
                            limit,
                        ));
                    }
                    (decoder.feed(&chunk), false)
                }
                None => (decoder.finish(), true),
            };
            let events = events.map_err(|EventTooLarge| {
                let limit = self.config.max_event_bytes;
                self.too_large("a stream event", "max_event_bytes", limit)
            })?;
            for data in events {
                if data.trim() == "[DONE]" {
                    ended = true;
                    break;
                }
                if data.trim().is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&data).map_err(|e| {
                    LlmError::Protocol(format!(
                        "stream event is not JSON ({e}): {}",
                        quote(&data, QUOTED_EVENT_CHARS)
                    ))
                })?;
                match self.config.provider {
                    Provider::OpenAi => openai::read_chunk(&value, builder, on_event)?,
                    Provider::Anthropic => {
                        anthropic::read_event(&value, builder, on_event)?;
                        if value.get("type").and_then(Value::as_str) == Some("message_stop") {
                            ended = true;
                            break;
                        }
                    }
                }
            }
            ended |= last;
        }
        Ok(())
    }

    /// Posts `body`, retrying 429, 5xx and connection failures.
    async fn send_with_retries(&self, body: &Value) -> Result<reqwest::Response, LlmError> {
        let mut attempt = 0u32;
        loop {
            tracing::info!(
                url = %self.url,
                model = %self.config.model,
                stream = self.config.stream,
                attempt = attempt + 1,
                "LLM request sent"
            );
            let started = Instant::now();
            let sent = self
                .http
                .post(&self.url)
                .headers(self.headers.clone())
                .json(body)
                .send()
                .await;
            let (error, wait) = match sent {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(
                        url = %self.url,
                        status = response.status().as_u16(),
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "LLM response headers received"
                    );
                    return Ok(response);
                }
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(response.headers());
                    let text = error_body(response).await;
                    let error = LlmError::Status {
                        url: self.url.clone(),
                        status: status.as_u16(),
                        message: wire::error_message(&text),
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(error);
                    }
                    (error, wait)
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    (self.transport(&e), None)
                }
                Err(e) => return Err(self.transport(&e)),
            };
            if attempt >= self.config.max_retries {
                return Err(error);
            }
            let wait = wait.unwrap_or_else(|| backoff(attempt)).min(MAX_WAIT);
            tracing::info!(
                url = %self.url,
                error = %error,
                retry_in_ms = wait.as_millis() as u64,
                "LLM request failed; trying again"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The whole body of a successful plain reply, at most `max_response_bytes`.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, LlmError> {
        let limit = self.config.max_response_bytes;
        let announced = response.content_length().unwrap_or(0);
        if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
            return Err(self.too_large("the reply body", "max_response_bytes", limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(self.too_large("the reply body", "max_response_bytes", limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn too_large(&self, what: &'static str, setting: &'static str, limit: usize) -> LlmError {
        LlmError::TooLarge {
            url: self.url.clone(),
            what,
            setting,
            limit,
        }
    }

    fn transport(&self, e: &reqwest::Error) -> LlmError {
        LlmError::Transport {
            url: self.url.clone(),
            message: error_chain(e),
        }
    }
}

/// The start of an error response's body (at most [`ERROR_BODY_BYTES`]), as text; what
/// could not be read is left out.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_BYTES.saturating_sub(body.len());
        if chunk.len() >= room {
            body.extend_from_slice(chunk.get(..room).unwrap_or_default());
            break;
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Whether `url` names this machine: `localhost` (or a name under it) or a loopback
/// address.
fn is_local(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The first `chars` characters of `text`, with `…` when there were more.
fn quote(text: &str, chars: usize) -> String {
    let mut quoted: String = text.chars().take(chars).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

/// The error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `retry-after-ms` (ms) or `retry-after` (seconds, possibly fractional).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = read("retry-after-ms") {
        return Some(Duration::from_secs_f64(
            (ms / 1e3).min(MAX_WAIT.as_secs_f64()),
        ));
    }
    read("retry-after").map(|s| Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())))
}

/// Exponential backoff with jitter for attempt `n` (0-based).
fn backoff(n: u32) -> Duration {
    let base = BASE_BACKOFF.saturating_mul(1u32 << n.min(8));
    let jitter = 0.5 + fastrand::f64() * 0.5;
    base.mul_f64(jitter).min(MAX_WAIT)
}
