//! How `http_fetch` treats servers that ask too much, on 127.0.0.1: a `Retry-After` of an
//! hour is capped (in the hint and in the engine's wait), and a response head larger than
//! the client accepts is a permanent failure, never retried. No assertions on durations:
//! a wait the cap failed to shorten would outlast the generous timeouts here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toolgraph_core::{
    CallContext, CallStatus, ParallelExecutorConfig, RetryPolicy, Tool, ToolCall, ToolError,
    ToolSet,
};
use toolgraph_engine::ParallelExecutor;
use toolgraph_tools::http::{HttpConfig, HttpFetch};

/// Longer than any capped wait here, far shorter than an hour.
const GUARD: Duration = Duration::from_secs(60);

fn config() -> HttpConfig {
    HttpConfig {
        allow_networks: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    }
}

async fn fetch(tool: &HttpFetch, url: String) -> Result<Value, ToolError> {
    tool.call(
        Arc::new(json!({ "url": url })),
        CallContext::detached("test"),
    )
    .await
}

fn executor(tool: HttpFetch) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools.register(tool).expect("register http_fetch");
    let config = ParallelExecutorConfig {
        retry: RetryPolicy {
            base_delay_ms: 5,
            jitter: false,
            ..RetryPolicy::default()
        },
        ..ParallelExecutorConfig::default()
    };
    ParallelExecutor::new(tools, config).expect("valid config")
}

/// Answers 429 and then 503, each with `Retry-After: 3600`, then 200; counts requests.
async fn start_overloaded() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/later",
            get(|State(hits): State<Arc<AtomicUsize>>| async move {
                let status = match hits.fetch_add(1, SeqCst) {
                    0 => StatusCode::TOO_MANY_REQUESTS,
                    1 => StatusCode::SERVICE_UNAVAILABLE,
                    _ => return "at last".into_response(),
                };
                (status, [("retry-after", "3600")], "come back in an hour").into_response()
            }),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://127.0.0.1:{port}/later"), hits)
}

#[tokio::test]
async fn an_hour_of_retry_after_becomes_the_configured_cap() {
    let (url, _) = start_overloaded().await;
    let default = HttpFetch::new(config()).expect("config");
    let err = fetch(&default, url.clone()).await.expect_err("429");
    assert!(err.is_transient(), "{}", err.message);
    assert_eq!(err.retry_after_ms, Some(5_000), "the default cap");
    let capped = HttpFetch::new(HttpConfig {
        max_retry_after_ms: 250,
        ..config()
    })
    .expect("config");
    let err = fetch(&capped, url).await.expect_err("503");
    assert!(err.message.contains("HTTP 503"), "{}", err.message);
    assert_eq!(err.retry_after_ms, Some(250));
}

#[tokio::test]
async fn the_engine_retries_after_the_cap_not_after_an_hour() {
    let (url, hits) = start_overloaded().await;
    let tool = HttpFetch::new(HttpConfig {
        max_retry_after_ms: 20,
        ..config()
    })
    .expect("config");
    let calls = vec![ToolCall::new("g", "http_fetch", json!({ "url": url }))];
    let executor = executor(tool);
    let r = tokio::time::timeout(GUARD, executor.execute_parallel(calls))
        .await
        .expect("waited for Retry-After: 3600")
        .expect("valid batch");
    let g = r.get("g").expect("result");
    assert_eq!((g.status, g.attempts), (CallStatus::Ok, 3), "{:?}", g.error);
    assert_eq!(
        g.output.as_ref().map(|o| o["body"].clone()),
        Some(json!("at last"))
    );
    assert_eq!(hits.load(SeqCst), 3);
}

/// A raw HTTP/1.1 server whose every response carries one header of `header_bytes` bytes;
/// counts connections.
async fn start_huge_head(header_bytes: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nx-huge: ").await;
                let chunk = vec![b'a'; 64 * 1024];
                let mut sent = 0;
                while sent < header_bytes {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                let _ = socket.write_all(b"\r\ncontent-length: 2\r\n\r\nok").await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/"), connections)
}

#[tokio::test]
async fn an_oversized_response_head_is_permanent_and_not_retried() {
    let (url, connections) = start_huge_head(2 * 1024 * 1024).await;
    let tool = HttpFetch::new(config()).expect("config");
    let err = fetch(&tool, url.clone()).await.expect_err("head too large");
    assert!(!err.is_transient(), "{}", err.message);
    assert!(
        err.message.starts_with(&format!("GET {url}")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("message head is too large"),
        "{}",
        err.message
    );

    let calls = vec![ToolCall::new("g", "http_fetch", json!({ "url": url }))];
    let executor = executor(HttpFetch::new(config()).expect("config"));
    let r = tokio::time::timeout(GUARD, executor.execute_parallel(calls))
        .await
        .expect("finished")
        .expect("valid batch");
    let g = r.get("g").expect("result");
    assert_eq!(
        (g.status, g.attempts),
        (CallStatus::Error, 1),
        "{:?}",
        g.error
    );
    assert_eq!(
        connections.load(SeqCst),
        2,
        "one request per call, no retry"
    );
}
