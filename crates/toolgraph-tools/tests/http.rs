//! `http_fetch` against axum servers on 127.0.0.1 that each test starts for itself: what a
//! call returns, how failures are classified, what is refused before any request, and how
//! the engine schedules and retries it. Loopback is not public, so every tool here opts in
//! to 127.0.0.1 (`allow_networks`); the default refusal is tested in `http_addresses.rs`.
//! Real time, no assertions on durations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use toolgraph_core::{
    Access, CallContext, CallStatus, ParallelExecutorConfig, ResourceAccess, RetryPolicy, Tool,
    ToolCall, ToolError, ToolSet,
};
use toolgraph_engine::ParallelExecutor;
use toolgraph_tools::http::{HttpConfig, HttpFetch};

/// What the test server saw.
#[derive(Default)]
struct Seen {
    /// Every request's `METHOD /path`, in arrival order.
    requests: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    flaky: Mutex<HashMap<String, usize>>,
    /// `(method, x-custom, content-type, body)` of each request to `/echo`.
    echoed: Mutex<Vec<(String, String, String, String)>>,
}

impl Seen {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

struct Server {
    base: String,
    port: u16,
    seen: Arc<Seen>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn record(State(seen): State<Arc<Seen>>, request: Request, next: Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    seen.requests.lock().expect("requests lock").push(line);
    next.run(request).await
}

async fn slow(State(seen): State<Arc<Seen>>) -> &'static str {
    let now = seen.in_flight.fetch_add(1, SeqCst) + 1;
    seen.peak.fetch_max(now, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    seen.in_flight.fetch_sub(1, SeqCst);
    "done"
}

/// Fails with 500 the first two times each key is asked for, then answers 200.
async fn flaky(State(seen): State<Arc<Seen>>, Path(key): Path<String>) -> Response {
    let n = {
        let mut counts = seen.flaky.lock().expect("flaky lock");
        let n = counts.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    if n <= 2 {
        (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
    } else {
        "recovered".into_response()
    }
}

async fn echo(
    State(seen): State<Arc<Seen>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    seen.echoed.lock().expect("echo lock").push((
        method.to_string(),
        header("x-custom"),
        header("content-type"),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    (StatusCode::CREATED, axum::Json(json!({"stored": true}))).into_response()
}

async fn start() -> Server {
    let seen = Arc::new(Seen::default());
    let router = Router::new()
        .route(
            "/hello",
            get(|| async { ([("x-test", "yes")], "hello world") }),
        )
        .route("/big", get(|| async { "a".repeat(100_000) }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such thing here") }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "overloaded, come back later",
                )
            }),
        )
        .route("/echo", post(echo))
        .route("/slow", get(slow))
        .route("/flaky/{key}", any(flaky))
        .route("/redirect", get(|| async { Redirect::temporary("/hello") }))
        .route(
            "/redirect-away/{port}",
            get(|Path(port): Path<u16>| async move {
                Redirect::temporary(&format!("http://localhost:{port}/hello"))
            }),
        )
        .layer(middleware::from_fn_with_state(seen.clone(), record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server {
        base: format!("http://127.0.0.1:{port}"),
        port,
        seen,
    }
}

/// The default configuration, opened to the test servers' address.
fn loopback() -> HttpConfig {
    HttpConfig {
        allow_networks: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    }
}

fn tool() -> HttpFetch {
    HttpFetch::new(loopback()).expect("loopback configuration")
}

async fn fetch(tool: &HttpFetch, args: Value) -> Result<Value, ToolError> {
    tool.call(std::sync::Arc::new(args), CallContext::detached("test"))
        .await
}

#[tokio::test]
async fn get_returns_status_final_url_headers_and_body() {
    let server = start().await;
    let out = fetch(&tool(), json!({"url": server.url("/hello")}))
        .await
        .expect("200");
    assert_eq!(out["status"], json!(200));
    assert_eq!(out["url"], json!(server.url("/hello")));
    assert_eq!(out["headers"]["x-test"], json!("yes"));
    assert_eq!(
        out["headers"]["content-type"],
        json!("text/plain; charset=utf-8")
    );
    assert_eq!(out["body"], json!("hello world"));
    assert_eq!(out["bytes"], json!(11));
    assert_eq!(out["truncated"], json!(false));
    assert_eq!(server.seen.requests(), ["GET /hello"]);
}

#[tokio::test]
async fn body_is_cut_at_the_smaller_of_max_bytes_and_the_configured_cap() {
    let server = start().await;
    let out = fetch(
        &tool(),
        json!({"url": server.url("/big"), "max_bytes": 100}),
    )
    .await
    .expect("200");
    assert_eq!(out["truncated"], json!(true));
    assert_eq!(out["bytes"], json!(100));
    assert_eq!(out["body"], json!("a".repeat(100)));

    let capped = HttpFetch::new(HttpConfig {
        max_body_bytes: 10,
        ..loopback()
    })
    .expect("config");
    let out = fetch(
        &capped,
        json!({"url": server.url("/big"), "max_bytes": 5_000}),
    )
    .await
    .expect("200");
    assert_eq!(
        (out["bytes"].clone(), out["truncated"].clone()),
        (json!(10), json!(true))
    );

    let exact = fetch(
        &tool(),
        json!({"url": server.url("/hello"), "max_bytes": 11}),
    )
    .await
    .expect("200");
    assert_eq!(
        exact["truncated"],
        json!(false),
        "a body of exactly the cap is whole"
    );
}

#[tokio::test]
async fn not_found_is_permanent_and_says_method_url_status_and_body() {
    let server = start().await;
    let err = fetch(&tool(), json!({"url": server.url("/missing")}))
        .await
        .expect_err("404");
    assert!(!err.is_transient());
    assert_eq!(err.retry_after_ms, None);
    let expected = format!(
        "GET {}: HTTP 404 Not Found: no such thing here",
        server.url("/missing")
    );
    assert_eq!(err.message, expected);
}

#[tokio::test]
async fn service_unavailable_is_transient_with_the_retry_after_hint() {
    let server = start().await;
    let err = fetch(&tool(), json!({"url": server.url("/busy")}))
        .await
        .expect_err("503");
    assert!(err.is_transient());
    assert_eq!(err.retry_after_ms, Some(1_000));
    assert!(err.message.contains("HTTP 503"), "{}", err.message);
    assert!(err.message.contains("overloaded"), "{}", err.message);
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/gone");
    let err = fetch(&tool(), json!({"url": url}))
        .await
        .expect_err("nothing listens");
    assert!(err.is_transient(), "{}", err.message);
    assert!(
        err.message.starts_with(&format!("GET {url}")),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn post_sends_its_body_and_headers() {
    let server = start().await;
    let out = fetch(
        &tool(),
        json!({
            "url": server.url("/echo"),
            "method": "post",
            "headers": {"Content-Type": "application/json", "X-Custom": "42"},
            "body": "{\"name\":\"toolgraph\"}"
        }),
    )
    .await
    .expect("201");
    assert_eq!(out["status"], json!(201));
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap_or_default())
        .expect("server answered JSON");
    assert_eq!(body, json!({"stored": true}));
    let echoed = server.seen.echoed.lock().expect("echo lock").clone();
    assert_eq!(
        echoed,
        [(
            "POST".to_owned(),
            "42".to_owned(),
            "application/json".to_owned(),
            "{\"name\":\"toolgraph\"}".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_host_outside_allow_hosts_is_refused_before_any_request() {
    let server = start().await;
    let strict = HttpFetch::new(HttpConfig {
        allow_hosts: vec!["Example.com".into()],
        ..loopback()
    })
    .expect("config");
    let err = fetch(&strict, json!({"url": server.url("/hello")}))
        .await
        .expect_err("not allowed");
    assert!(!err.is_transient());
    assert!(err.message.contains("\"127.0.0.1\""), "{}", err.message);
    assert!(err.message.contains("allow_hosts"), "{}", err.message);
    assert!(server.seen.requests().is_empty());

    let open = HttpFetch::new(HttpConfig {
        allow_hosts: vec![format!("127.0.0.1:{}", server.port)],
        ..loopback()
    })
    .expect("config");
    fetch(&open, json!({"url": server.url("/hello")}))
        .await
        .expect("host and port allowed");
}

#[tokio::test]
async fn redirects_are_followed_but_never_to_a_refused_host() {
    let server = start().await;
    let out = fetch(&tool(), json!({"url": server.url("/redirect")}))
        .await
        .expect("followed");
    assert_eq!(out["status"], json!(200));
    assert_eq!(out["url"], json!(server.url("/hello")));

    let strict = HttpFetch::new(HttpConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        ..loopback()
    })
    .expect("config");
    let away = server.url(&format!("/redirect-away/{}", server.port));
    let err = fetch(&strict, json!({"url": away}))
        .await
        .expect_err("redirect to localhost refused");
    assert!(!err.is_transient());
    assert!(err.message.contains("localhost"), "{}", err.message);
    assert_eq!(
        server.seen.requests(),
        [
            "GET /redirect".to_owned(),
            "GET /hello".to_owned(),
            format!("GET /redirect-away/{}", server.port)
        ]
    );
}

#[tokio::test]
async fn bad_schemes_urls_methods_and_headers_are_refused_before_any_request() {
    let server = start().await;
    let t = tool();
    let hello = server.url("/hello");
    let cases = [
        (json!({"url": "ftp://127.0.0.1/file"}), "scheme \"ftp\""),
        (json!({"url": "file:///etc/passwd"}), "scheme \"file\""),
        (
            json!({"url": "not a url"}),
            "cannot parse URL \"not a url\"",
        ),
        (
            json!({"url": hello, "method": "GE T"}),
            "invalid HTTP method",
        ),
        (
            json!({"url": hello, "headers": {"bad header": "x"}}),
            "invalid header name \"bad header\"",
        ),
        (
            json!({"url": hello, "headers": {"x-a": "line\nbreak"}}),
            "invalid value for header \"x-a\"",
        ),
        (
            json!({"url": hello, "headers": {"Host": "internal"}}),
            "header \"Host\"",
        ),
        (
            json!({"url": hello, "verb": "GET"}),
            "unknown argument `verb`",
        ),
        (json!({}), "`url` is required"),
    ];
    for (args, needle) in cases {
        let err = fetch(&t, args.clone()).await.expect_err("refused");
        assert!(!err.is_transient(), "{args}");
        assert!(err.message.contains(needle), "{args}: {}", err.message);
    }
    assert!(server.seen.requests().is_empty());
}

#[test]
fn resources_and_idempotency_follow_the_method() {
    let t = tool();
    let args = |method: Option<&str>, url: &str| match method {
        Some(m) => json!({"url": url, "method": m}),
        None => json!({"url": url}),
    };
    let url = "http://127.0.0.1:8080/x";
    for method in [None, Some("GET"), Some("head"), Some("OPTIONS")] {
        assert_eq!(
            t.resources(&args(method, url)),
            [ResourceAccess::read("host:127.0.0.1:8080")],
            "{method:?}"
        );
    }
    for method in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"] {
        let accesses = t.resources(&args(Some(method), url));
        assert_eq!(accesses.len(), 1);
        assert_eq!(accesses[0].key, "host:127.0.0.1:8080");
        assert_eq!(accesses[0].access, Access::Write, "{method}");
    }
    assert_eq!(
        t.resources(&args(None, "https://API.Example.com:443/v1")),
        [ResourceAccess::read("host:api.example.com")]
    );
    assert!(t.resources(&args(None, "nonsense")).is_empty());

    for (method, idempotent) in [
        (None, true),
        (Some("GET"), true),
        (Some("HEAD"), true),
        (Some("OPTIONS"), true),
        (Some("PUT"), true),
        (Some("delete"), true),
        (Some("POST"), false),
        (Some("PATCH"), false),
        (Some("PROPFIND"), false),
    ] {
        assert_eq!(
            t.is_idempotent(&args(method, url)),
            idempotent,
            "{method:?}"
        );
    }
    let traits = &t.spec().traits;
    assert!(traits.idempotent && traits.parallel_safe && !traits.blocking);
}

#[test]
fn the_spec_registers_and_its_schema_rejects_bad_arguments() {
    let mut set = ToolSet::new();
    set.register(tool()).expect("valid schema");
    let entry = set.get("http_fetch").expect("registered");
    assert!(!entry.tool.spec().description.is_empty());
    let ok = json!({"url": "http://a/", "method": "GET", "headers": {"a": "b"}, "body": "", "max_bytes": 0});
    assert!(entry.schema_violations(&ok).is_empty());
    for bad in [
        json!({}),
        json!({"url": "http://a/", "extra": 1}),
        json!({"url": "http://a/", "headers": {"a": 1}}),
        json!({"url": "http://a/", "max_bytes": -1}),
    ] {
        assert!(!entry.schema_violations(&bad).is_empty(), "{bad}");
    }
}

fn executor(config: ParallelExecutorConfig) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools.register(tool()).expect("register http_fetch");
    ParallelExecutor::new(tools, config).expect("valid config")
}

#[tokio::test]
async fn the_engine_caps_requests_per_host_with_a_host_kind_limit() {
    let server = start().await;
    let mut config = ParallelExecutorConfig::default();
    config.per_resource_parallel_limits.insert("host".into(), 2);
    let calls = (0..8)
        .map(|i| {
            ToolCall::new(
                format!("g{i}"),
                "http_fetch",
                json!({"url": server.url("/slow")}),
            )
        })
        .collect();
    let r = executor(config)
        .execute_parallel(calls)
        .await
        .expect("valid batch");
    assert!(r.success, "{:?}", r.errors);
    for c in &r.results {
        assert_eq!(c.status, CallStatus::Ok, "{}", c.id);
        assert_eq!(
            c.output.as_ref().map(|o| o["body"].clone()),
            Some(json!("done"))
        );
    }
    assert_eq!(server.seen.peak.load(SeqCst), 2);
    assert_eq!(server.seen.requests().len(), 8);
}

#[tokio::test]
async fn the_engine_retries_a_failing_get_but_not_a_post() {
    let server = start().await;
    let config = ParallelExecutorConfig {
        retry: RetryPolicy {
            base_delay_ms: 5,
            jitter: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let calls = vec![
        ToolCall::new(
            "get",
            "http_fetch",
            json!({"url": server.url("/flaky/get")}),
        ),
        ToolCall::new(
            "post",
            "http_fetch",
            json!({"url": server.url("/flaky/post"), "method": "POST", "body": "x"}),
        ),
    ];
    let r = executor(config)
        .execute_parallel(calls)
        .await
        .expect("valid batch");
    let get = r.get("get").expect("get result");
    assert_eq!((get.status, get.attempts), (CallStatus::Ok, 3));
    assert_eq!(
        get.output.as_ref().map(|o| o["body"].clone()),
        Some(json!("recovered"))
    );
    let post = r.get("post").expect("post result");
    assert_eq!((post.status, post.attempts), (CallStatus::Error, 1));
    assert!(
        post.error
            .as_ref()
            .is_some_and(|e| e.message.contains("HTTP 500")),
        "{:?}",
        post.error
    );
    let requests = server.seen.requests();
    let count = |line: &str| requests.iter().filter(|r| *r == line).count();
    assert_eq!(count("GET /flaky/get"), 3);
    assert_eq!(count("POST /flaky/post"), 1);
}
