//! A scripted LLM server for tests: speaks both wire protocols over real HTTP on
//! 127.0.0.1, replays a script of replies (JSON or SSE, statuses, retry-after, delays
//! between chunks) and records every request. Never used outside tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use toolgraph_core::{FnTool, ParallelExecutorConfig, ToolError, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_llm::{LlmClient, LlmConfig, Provider, ToolOrchestrator};

/// One scripted reply.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Option<Value>,
    /// SSE `data:` payloads, sent one per chunk with `delay` before each but the first.
    pub events: Vec<String>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(body: Value) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: Some(body),
            events: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, retry_after: Option<&str>, body: Value) -> Self {
        Reply {
            status,
            retry_after: retry_after.map(str::to_owned),
            ..Reply::json(body)
        }
    }
    pub fn sse(events: Vec<Value>, delay: Duration) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: None,
            events: events.iter().map(Value::to_string).collect(),
            delay,
        }
    }
    pub fn openai_sse(events: Vec<Value>, delay: Duration) -> Self {
        let mut r = Reply::sse(events, delay);
        r.events.push("[DONE]".into());
        r
    }
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    last_chunk_at: Mutex<Option<Instant>>,
}

pub struct ScriptedServer {
    pub url: String,
    inner: Arc<Inner>,
}

impl ScriptedServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let inner = Arc::new(Inner::default());
        *inner.replies.lock().expect("lock") = replies.into();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptedServer {
            url: format!("http://{addr}/v1"),
            inner,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("lock").clone()
    }

    pub fn last_chunk_at(&self) -> Option<Instant> {
        *self.inner.last_chunk_at.lock().expect("lock")
    }

    pub fn config(&self, provider: Provider, stream: bool) -> LlmConfig {
        LlmConfig {
            provider,
            base_url: self.url.clone(),
            api_key: Some("test-key".into()),
            model: "scripted".into(),
            stream,
            timeout_ms: 10_000,
            max_retries: 3,
            max_tokens: 512,
            ..LlmConfig::default()
        }
    }

    pub fn client(&self, provider: Provider, stream: bool) -> LlmClient {
        LlmClient::new(self.config(provider, stream)).expect("client")
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.requests.lock().expect("lock").push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = inner.replies.lock().expect("lock").pop_front();
    let Some(reply) = reply else {
        return Response::builder()
            .status(500)
            .body(Body::from(r#"{"error":{"message":"script exhausted"}}"#))
            .expect("response");
    };
    let mut builder =
        Response::builder().status(StatusCode::from_u16(reply.status).expect("status"));
    if let Some(ra) = &reply.retry_after {
        builder = builder.header("retry-after", ra.as_str());
    }
    if let Some(body) = reply.body {
        return builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("response");
    }
    let n = reply.events.len();
    let delay = reply.delay;
    let events = reply.events;
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let events = events.clone();
        let inner = inner.clone();
        async move {
            if i >= n {
                return None;
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i + 1 == n {
                *inner.last_chunk_at.lock().expect("lock") = Some(Instant::now());
            }
            let chunk = Bytes::from(format!("data: {}\n\n", events[i]));
            Some((Ok::<_, std::convert::Infallible>(chunk), i + 1))
        }
    });
    builder
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

// ---- reply builders ----

pub fn openai_text(text: &str) -> Value {
    json!({"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
}

/// `(id, name, raw arguments)`.
pub fn openai_calls(calls: &[(&str, &str, &str)]) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    json!({"id": "chatcmpl-x", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "tool_calls": tool_calls},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7}})
}

pub fn anthropic_text(text: &str) -> Value {
    json!({"id": "msg_x", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5}})
}

/// `(id, name, input)`.
pub fn anthropic_calls(calls: &[(&str, &str, Value)]) -> Value {
    let mut content = vec![json!({"type": "text", "text": "Let me use tools."})];
    for (id, name, input) in calls {
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    json!({"id": "msg_x", "type": "message", "role": "assistant", "content": content,
        "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 7}})
}

// ---- tools ----

/// Start instants of every `read` call, for ordering assertions.
pub type Starts = Arc<Mutex<Vec<(String, Instant)>>>;

/// `add` (a+b), `fail` (always errors), `upper` (text upper-cased), `read` (idempotent,
/// sleeps `ms`, records its start), `fs.read_file` (a dotted name).
pub fn executor() -> (Arc<ParallelExecutor>, Starts) {
    let starts: Starts = Arc::new(Mutex::new(Vec::new()));
    let mut tools = ToolSet::new();
    tools
        .register(FnTool::new(
            ToolSpec::new("add")
                .description("Adds a and b.")
                .parameters(json!({
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]
                })),
            |args: Value, _ctx| async move {
                Ok(json!(
                    args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)
                ))
            },
        ))
        .expect("add");
    tools
        .register_fn("fail", |_args, _ctx| async move {
            Err(ToolError::permanent("disk on fire"))
        })
        .expect("fail");
    tools
        .register_fn("upper", |args, _ctx| async move {
            Ok(json!(
                args["text"].as_str().unwrap_or_default().to_uppercase()
            ))
        })
        .expect("upper");
    let s = starts.clone();
    tools
        .register(FnTool::new(
            ToolSpec::new("read")
                .description("Reads a key.")
                .idempotent(),
            move |args: Value, _ctx| {
                let s = s.clone();
                async move {
                    let key = args["key"].as_str().unwrap_or_default().to_owned();
                    s.lock().expect("lock").push((key.clone(), Instant::now()));
                    let ms = args["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(json!(format!("value of {key}")))
                }
            },
        ))
        .expect("read");
    tools
        .register_fn("fs.read_file", |args, _ctx| async move {
            Ok(json!(format!(
                "contents of {}",
                args["path"].as_str().unwrap_or("?")
            )))
        })
        .expect("fs.read_file");
    let executor =
        ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("executor");
    (Arc::new(executor), starts)
}

pub fn orchestrator(
    server: &ScriptedServer,
    provider: Provider,
    stream: bool,
) -> (ToolOrchestrator, Starts) {
    let (executor, starts) = executor();
    (
        ToolOrchestrator::new(server.client(provider, stream), executor),
        starts,
    )
}
