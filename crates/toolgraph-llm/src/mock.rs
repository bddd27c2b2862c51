//! A scripted model server: a real HTTP server on 127.0.0.1 that speaks the OpenAI Chat
//! Completions and the Anthropic Messages wire protocols, plain and streamed (SSE), and
//! answers each request with the next entry of a script. No model runs.
//!
//! It serves two kinds of entries, in order, one per request:
//! - a [`ScriptTurn`] — text and/or tool calls, provider-neutral: rendered in the protocol of
//!   the request's path (`…/chat/completions` or `…/messages`), as SSE when the request
//!   asks for a stream (tool-call arguments split across chunks, as real servers do);
//! - a raw [`Reply`] — a status, a JSON body or SSE payloads, a `retry-after`: for tests of
//!   the client's edge cases.
//!
//! `toolgraph chat --mock SCRIPT` runs the agent loop against it, so the loop can be seen
//! working offline; the tests of the client, the orchestrator and the CLI use it too. It
//! records every request. Built only with the crate's `mock` feature; it listens on loopback
//! only and never panics on what a client sends (a script that has run out answers 400).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{LlmConfig, Provider};
use crate::wire::wire_name;

/// One raw reply: a status with a JSON body, or SSE `data:` payloads.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// A `retry-after` header.
    pub retry_after: Option<String>,
    /// A JSON body (when set, `events` are not sent).
    pub body: Option<Value>,
    /// SSE `data:` payloads, one per chunk, with `delay` before each but the first.
    pub events: Vec<String>,
    /// The wait between two chunks.
    pub delay: Duration,
}

impl Reply {
    /// `200` with this JSON body.
    pub fn json(body: Value) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: Some(body),
            events: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// An error status with a body and, optionally, a `retry-after` header.
    pub fn status(status: u16, retry_after: Option<&str>, body: Value) -> Self {
        Reply {
            status,
            retry_after: retry_after.map(str::to_owned),
            ..Reply::json(body)
        }
    }

    /// A stream of these events, `delay` apart.
    pub fn sse(events: Vec<Value>, delay: Duration) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: None,
            events: events.iter().map(Value::to_string).collect(),
            delay,
        }
    }

    /// An OpenAI stream: these events, then `[DONE]`.
    pub fn openai_sse(events: Vec<Value>, delay: Duration) -> Self {
        let mut reply = Reply::sse(events, delay);
        reply.events.push("[DONE]".into());
        reply
    }
}

/// One tool call of a scripted turn.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCall {
    /// The call id (`${id}` references name it).
    pub id: String,
    /// The tool, as toolgraph names it (`file_read`, `fs.read_file`).
    pub name: String,
    /// The arguments: an object (or a JSON string, sent as it is).
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// One scripted model turn: what the model says and the tools it calls.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptTurn {
    /// The text of the reply (the answer, when there are no tool calls).
    pub text: Option<String>,
    /// The tools it calls, all in this one turn.
    pub tool_calls: Vec<ScriptCall>,
    /// When streamed, the wait between two chunks, in ms.
    pub delay_ms: u64,
    /// Texts the request's messages must contain — to check that a conversation's history
    /// is sent. A request missing one is answered 400, naming it, instead of this turn.
    pub expect: Vec<String>,
}

/// A script: the model's turns, in order (`{"turns": [...]}` or a bare array).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// The turns.
    pub turns: Vec<ScriptTurn>,
}

impl Script {
    /// Reads a script from JSON; says what is wrong, with the line, when it cannot.
    pub fn from_json(text: &str) -> Result<Script, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            turns: Vec<ScriptTurn>,
        }
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        // Each form alone, so that an error names the field at fault.
        let turns = if value.is_array() {
            serde_json::from_value::<Vec<ScriptTurn>>(value).map_err(|e| e.to_string())?
        } else {
            serde_json::from_value::<Object>(value)
                .map_err(|e| e.to_string())?
                .turns
        };
        if turns.is_empty() {
            return Err("the script has no turns".into());
        }
        for (n, turn) in turns.iter().enumerate() {
            if turn.text.is_none() && turn.tool_calls.is_empty() {
                return Err(format!("turn {}: neither text nor tool_calls", n + 1));
            }
        }
        Ok(Script { turns })
    }
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The path (`/v1/chat/completions`).
    pub path: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (`null` when it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Clone, Debug)]
enum Entry {
    Raw(Reply),
    Turn(ScriptTurn),
}

#[derive(Default)]
struct Inner {
    entries: Mutex<VecDeque<Entry>>,
    requests: Mutex<Vec<Recorded>>,
    last_chunk_at: Mutex<Option<Instant>>,
}

/// Locks, whatever a panicking holder left: the data are plain values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running server; dropping it stops it.
pub struct MockServer {
    root: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts a server answering with `replies`, in order.
    pub async fn start(replies: Vec<Reply>) -> std::io::Result<MockServer> {
        Self::serve(replies.into_iter().map(Entry::Raw).collect()).await
    }

    /// Starts a server playing `script`, one turn per request.
    pub async fn start_script(script: Script) -> std::io::Result<MockServer> {
        Self::serve(script.turns.into_iter().map(Entry::Turn).collect()).await
    }

    async fn serve(entries: VecDeque<Entry>) -> std::io::Result<MockServer> {
        let inner = Arc::new(Inner {
            entries: Mutex::new(entries),
            ..Inner::default()
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockServer {
            root: format!("http://{addr}"),
            inner,
            task,
        })
    }

    /// The server's root, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.root
    }

    /// The base URL a client of `provider` takes: the root + `/v1` for OpenAI, the root
    /// for Anthropic (as their SDKs do).
    pub fn base_url(&self, provider: Provider) -> String {
        match provider {
            Provider::OpenAi => format!("{}/v1", self.root),
            Provider::Anthropic => self.root.clone(),
        }
    }

    /// A client configuration for this server (model `mock`, no API key: it is local).
    pub fn config(&self, provider: Provider, stream: bool) -> LlmConfig {
        LlmConfig {
            provider,
            base_url: self.base_url(provider),
            api_key: None,
            model: "mock".into(),
            stream,
            ..LlmConfig::for_provider(provider)
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.requests).clone()
    }

    /// When the last chunk of the last stream was sent.
    pub fn last_chunk_at(&self) -> Option<Instant> {
        *lock(&self.inner.last_chunk_at)
    }

    /// Entries not served yet.
    pub fn remaining(&self) -> usize {
        lock(&self.inner.entries).len()
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let anthropic = uri.path().ends_with("/messages");
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let input_tokens = tokens(&body.to_string());
    let messages = body
        .get("messages")
        .map(Value::to_string)
        .unwrap_or_default();
    let served = {
        let mut requests = lock(&inner.requests);
        requests.push(Recorded {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
        });
        requests.len() - 1
    };
    let entry = lock(&inner.entries).pop_front();
    let reply = match entry {
        Some(Entry::Raw(reply)) => reply,
        Some(Entry::Turn(turn)) => {
            match turn.expect.iter().find(|t| !messages.contains(t.as_str())) {
                Some(missing) => {
                    let message = format!(
                        "the mock model expected request {} to carry {missing:?} in its messages \
                     (the conversation so far), and it does not",
                        served + 1
                    );
                    Reply::status(
                        400,
                        None,
                        json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
                    )
                }
                None => render(&turn, anthropic, stream, input_tokens),
            }
        }
        None => {
            let message = format!(
                "the mock model's script has run out: it answered {served} request(s) and has \
                 no reply for this one"
            );
            Reply::status(
                400,
                None,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
            )
        }
    };
    respond(reply, inner)
}

fn respond(reply: Reply, inner: Arc<Inner>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    if let Some(ra) = &reply.retry_after {
        builder = builder.header("retry-after", ra.as_str());
    }
    if let Some(body) = reply.body {
        return builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap_or_default();
    }
    let n = reply.events.len();
    let delay = reply.delay;
    let events = Arc::new(reply.events);
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let events = events.clone();
        let inner = inner.clone();
        async move {
            let event = events.get(i)?;
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i + 1 == n {
                *lock(&inner.last_chunk_at) = Some(Instant::now());
            }
            let chunk = Bytes::from(format!("data: {event}\n\n"));
            Some((Ok::<_, std::convert::Infallible>(chunk), i + 1))
        }
    });
    builder
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// A rough token count (a token is about four bytes of English).
fn tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

/// A call's arguments as the wire's JSON string.
fn arguments_text(call: &ScriptCall) -> String {
    match &call.arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// `text` in pieces of about `size` characters (at least one piece).
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// A scripted turn as a reply of the protocol asked for.
fn render(turn: &ScriptTurn, anthropic: bool, stream: bool, input_tokens: u64) -> Reply {
    let text = turn.text.as_deref();
    let output_tokens = tokens(text.unwrap_or_default())
        + turn
            .tool_calls
            .iter()
            .map(|c| tokens(&arguments_text(c)))
            .sum::<u64>();
    let delay = Duration::from_millis(turn.delay_ms);
    match (anthropic, stream) {
        (false, false) => Reply::json(openai_message(
            text,
            &wire_calls(&turn.tool_calls),
            input_tokens,
            output_tokens,
        )),
        (true, false) => Reply::json(anthropic_message(
            text,
            &turn.tool_calls,
            input_tokens,
            output_tokens,
        )),
        (false, true) => Reply::openai_sse(openai_stream(turn, input_tokens, output_tokens), delay),
        (true, true) => Reply::sse(anthropic_stream(turn, input_tokens, output_tokens), delay),
    }
}

fn wire_calls(calls: &[ScriptCall]) -> Vec<(String, String, String)> {
    calls
        .iter()
        .map(|c| (c.id.clone(), wire_name(&c.name), arguments_text(c)))
        .collect()
}

fn openai_stream(turn: &ScriptTurn, input_tokens: u64, output_tokens: u64) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(text) = &turn.text {
        for piece in pieces(text, 24) {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
    }
    for (index, (id, name, arguments)) in wire_calls(&turn.tool_calls).into_iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(&arguments, 32) {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    let finish = if turn.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(chunk(json!({}), json!(finish)));
    events.push(
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}}),
    );
    events
}

fn anthropic_stream(turn: &ScriptTurn, input_tokens: u64, output_tokens: u64) -> Vec<Value> {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_mock",
        "type": "message", "role": "assistant", "model": "mock", "content": [],
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    ];
    let mut index = 0;
    if let Some(text) = &turn.text {
        events.push(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}));
        for piece in pieces(text, 24) {
            events.push(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    for call in &turn.tool_calls {
        events.push(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id,
                "name": wire_name(&call.name), "input": {}}}));
        for piece in pieces(&arguments_text(call), 32) {
            events.push(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    let stop = if turn.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop},
        "usage": {"output_tokens": output_tokens}}),
    );
    events.push(json!({"type": "message_stop"}));
    events
}

/// An OpenAI chat completion: `text` and/or `(id, wire name, raw arguments)` calls.
pub fn openai_message(
    text: Option<&str>,
    calls: &[(String, String, String)],
    input_tokens: u64,
    output_tokens: u64,
) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    let finish = if calls.is_empty() {
        "stop"
    } else {
        message["tool_calls"] = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
            })
            .collect();
        "tool_calls"
    };
    json!({"id": "chatcmpl-mock", "object": "chat.completion", "model": "mock",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}})
}

/// An OpenAI reply that answers `text`.
pub fn openai_text(text: &str) -> Value {
    openai_message(Some(text), &[], 10, 5)
}

/// An OpenAI reply calling tools: `(id, wire name, raw arguments)`.
pub fn openai_calls(calls: &[(&str, &str, &str)]) -> Value {
    let calls: Vec<(String, String, String)> = calls
        .iter()
        .map(|(id, name, args)| ((*id).to_owned(), (*name).to_owned(), (*args).to_owned()))
        .collect();
    openai_message(None, &calls, 20, 7)
}

/// An Anthropic message: `text` and/or tool uses.
fn anthropic_message(
    text: Option<&str>,
    calls: &[ScriptCall],
    input_tokens: u64,
    output_tokens: u64,
) -> Value {
    let mut content = Vec::new();
    if let Some(text) = text {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in calls {
        let input = match &call.arguments {
            Value::String(raw) => serde_json::from_str(raw).unwrap_or_else(|_| json!({})),
            other => other.clone(),
        };
        content.push(
            json!({"type": "tool_use", "id": call.id, "name": wire_name(&call.name), "input": input}),
        );
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": "mock",
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}})
}

/// An Anthropic reply that answers `text`.
pub fn anthropic_text(text: &str) -> Value {
    anthropic_message(Some(text), &[], 10, 5)
}

/// An Anthropic reply calling tools, after a short text: `(id, wire name, input)`.
pub fn anthropic_calls(calls: &[(&str, &str, Value)]) -> Value {
    let calls: Vec<ScriptCall> = calls
        .iter()
        .map(|(id, name, input)| ScriptCall {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
            arguments: input.clone(),
        })
        .collect();
    anthropic_message(Some("Let me use tools."), &calls, 20, 7)
}
