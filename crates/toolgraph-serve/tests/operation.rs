//! Running the service, over real HTTP on loopback: the token, the body limit, request ids,
//! errors as problem+json, `/metrics` after an execution, the probes, and a store that
//! stops answering (PostgreSQL behind a proxy the test cuts, when `TOOLGRAPH_TEST_PG_URL`
//! is set).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use toolgraph::{Config, ExecuteOptions, Runtime};
use toolgraph_core::ToolCall;
use toolgraph_serve::{AppState, ServeOptions, Server, Shutdown};

/// A server on 127.0.0.1:0 and the means to stop it.
struct Running {
    base: String,
    state: AppState,
    stop: CancellationToken,
    task: JoinHandle<Result<Shutdown, toolgraph_serve::ServeError>>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the server answers")
    }

    async fn stop(self) -> Shutdown {
        self.stop.cancel();
        self.task
            .await
            .expect("the server task")
            .expect("a clean shutdown")
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client")
}

/// Starts a server with `options` (bound to 127.0.0.1:0) over a runtime with the built-in
/// tools recording into `store_url` (a fresh SQLite file when `None`).
async fn start_with(options: ServeOptions, store_url: Option<String>) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.files.root = dir.path().to_path_buf();
    config.store.url =
        store_url.unwrap_or_else(|| toolgraph::store::sqlite_url(&dir.path().join("toolgraph.db")));
    let runtime = Runtime::start(&config).await.expect("a runtime");
    let state = AppState::new(runtime);
    let server = Server::bind(ServeOptions {
        bind: "127.0.0.1:0".parse().expect("an address"),
        ..options
    })
    .await
    .expect("bound");
    let base = format!("http://{}", server.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(state.clone(), stop.clone().cancelled_owned()));
    Running {
        base,
        state,
        stop,
        task,
        client: client(),
        _dir: dir,
    }
}

async fn start(options: ServeOptions) -> Running {
    start_with(options, None).await
}

fn with_token(token: &str) -> ServeOptions {
    ServeOptions {
        token: Some(token.to_owned()),
        ..ServeOptions::default()
    }
}

async fn problem(response: reqwest::Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.expect("a problem")
}

#[tokio::test]
async fn a_token_guards_everything_but_healthz_and_is_checked_exactly() {
    let server = start(with_token("s3cret")).await;

    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK, "healthz is open");
    assert_eq!(health.text().await.expect("text"), "ok");

    for path in ["/metrics", "/readyz", "/v1/executions", "/v1/tools"] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"toolgraph\""),
            "{path}"
        );
        let body = problem(response).await;
        assert_eq!(body["status"], 401);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Authorization: Bearer")),
            "{body}"
        );
    }
    let posted = server
        .client
        .post(server.url("/v1/executions"))
        .json(&json!([{"id": "a", "name": "echo", "arguments": {}}]))
        .send()
        .await
        .expect("answer");
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED, "writes too");

    for wrong in ["s3cre", "s3cretx", "S3CRET", ""] {
        let response = server
            .client
            .get(server.url("/metrics"))
            .bearer_auth(wrong)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    let response = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .client
        .get(server.url("/metrics"))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK, "the scheme in any case");

    // An event stream takes the token from its query too (EventSource sends no headers).
    let events = "/v1/executions/00000000-0000-0000-0000-000000000000/events";
    let response = server.get(&format!("{events}?token=nope")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server.get(events).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server.get(&format!("{events}?token=s3cret")).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "past the token: no such execution"
    );
    let response = server.get("/v1/executions?token=s3cret").await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "elsewhere the API takes the header only"
    );

    // The dashboard's page takes the token from its address once; a wrong one is refused
    // there at once. Its pages and assets hold no data and load without it.
    let response = server.get("/?token=nope").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server.get("/?token=s3cret").await;
    assert_ne!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server.get("/").await;
    assert_ne!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_as_a_problem() {
    let server = start(ServeOptions {
        body_limit_bytes: 1024,
        ..ServeOptions::default()
    })
    .await;
    let big: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("call-{i}"), "name": "echo", "arguments": {"pad": "x".repeat(40)}}))
        .collect();
    for path in ["/v1/executions", "/v1/plan"] {
        let response = server
            .client
            .post(server.url(path))
            .json(&big)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body = problem(response).await;
        assert_eq!(body["status"], 413);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("1024 bytes")),
            "{body}"
        );
    }
    assert_eq!(
        server.state.live.running(),
        0,
        "nothing was started by a refused body"
    );
    server.stop().await;
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_errors_are_problems() {
    let server = start(ServeOptions::default()).await;
    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42"),
        "an incoming id is propagated"
    );
    let response = server.get("/no/such/page/here.json").await;
    let made = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID is made: {made:?}");
    let status = response.status();
    if status.is_client_error() {
        let body = problem(response).await;
        assert_eq!(body["status"], status.as_u16());
    }
    let response = server
        .client
        .delete(server.url("/metrics"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = problem(response).await;
    assert_eq!(body["status"], 405);
    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_and_count_the_calls_of_an_execution() {
    let server = start(ServeOptions::default()).await;
    let batch = json!([
        {"id": "a", "name": "echo", "arguments": {"x": 1}},
        {"id": "b", "name": "echo", "arguments": {"x": 2}},
        {"id": "c", "name": "sleep", "arguments": {"ms": 5}},
        {"id": "d", "name": "fail", "arguments": {"message": "no"}},
    ]);
    let done = server
        .client
        .post(server.url("/v1/executions?wait=true"))
        .json(&batch)
        .send()
        .await
        .expect("answer");
    assert_eq!(done.status(), StatusCode::OK);
    let done: Value = done.json().await.expect("a result");
    assert_eq!(done["success"], false);
    // A second execution straight through the runtime the handlers use: its per-execution
    // sink feeds the same metrics.
    let direct = server
        .state
        .runtime
        .execute_calls(
            vec![ToolCall::new("e", "echo", json!({}))],
            ExecuteOptions::default(),
        )
        .await
        .expect("ran");
    assert!(direct.result.success);

    let response = server.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
    );
    let text = response.text().await.expect("text");
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        assert!(
            line.starts_with("toolgraph_") || line.starts_with("# "),
            "not a toolgraph metric: {line}"
        );
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        let value: f64 = value.parse().expect("a number");
        samples.insert(series.to_owned(), value);
    }
    let sample = |series: &str| samples.get(series).copied();
    assert_eq!(
        sample("toolgraph_calls_total{tool=\"echo\",status=\"ok\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample("toolgraph_calls_total{tool=\"sleep\",status=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("toolgraph_calls_total{tool=\"fail\",status=\"error\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("toolgraph_call_duration_seconds_count{tool=\"echo\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample("toolgraph_call_duration_seconds_bucket{tool=\"sleep\",le=\"0.001\"}"),
        Some(0.0),
        "a 5 ms sleep is not under a millisecond"
    );
    assert_eq!(
        sample("toolgraph_call_duration_seconds_bucket{tool=\"sleep\",le=\"+Inf\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("toolgraph_call_queue_wait_seconds_count{tool=\"echo\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample("toolgraph_executions_total{status=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("toolgraph_executions_total{status=\"succeeded\"}"),
        Some(1.0)
    );
    assert_eq!(sample("toolgraph_executions_running"), Some(0.0));
    assert_eq!(
        sample("toolgraph_calls_in_flight{limit=\"global\"}"),
        Some(0.0)
    );
    let global = server.state.runtime.executor().config().max_parallel_calls as f64;
    assert_eq!(sample("toolgraph_limit{limit=\"global\"}"), Some(global));

    // The first scrape is counted under its route, seen by the next.
    let text = server.get("/metrics").await.text().await.expect("text");
    for line in [
        "toolgraph_http_requests_total{route=\"/metrics\",status=\"200\"} 1\n",
        "toolgraph_http_requests_total{route=\"/v1/executions\",status=\"200\"} 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn readyz_answers_ok_while_the_store_answers() {
    let server = start(ServeOptions::default()).await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("text"), "ok");
    server.stop().await;
}

/// Forwards 127.0.0.1:(its port) to `target` until `cut` fires; then every proxied
/// connection is closed and no new one is accepted.
async fn proxy(target: String, cut: CancellationToken) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = cut.cancelled() => return,
            };
            let Ok((mut inbound, _)) = accepted else {
                return;
            };
            let target = target.clone();
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = cut.cancelled() => {}
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn postgres_readyz_answers_503_naming_a_store_that_stopped_answering() {
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        toolgraph_test_support::skip("TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to cut off)");
        return;
    };
    // postgres://user@host:port/db → the same through the proxy.
    let Some((scheme_user, rest)) = url.split_once('@') else {
        panic!("TOOLGRAPH_TEST_PG_URL has no user@host: {url}");
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let cut = CancellationToken::new();
    let port = proxy(host, cut.clone()).await;
    let proxied = format!("{scheme_user}@127.0.0.1:{port}/{path}");
    let server = start_with(ServeOptions::default(), Some(proxied)).await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK, "reachable at first");

    cut.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = problem(response).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("the store postgres://")
            && detail.contains(&format!("127.0.0.1:{port}")),
        "names the store: {detail}"
    );
    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK, "the process is still up");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_returns_with_no_execution_running() {
    let server = start(ServeOptions {
        shutdown_grace: Duration::from_secs(5),
        ..ServeOptions::default()
    })
    .await;
    assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
    let base = server.base.clone();
    let report = server.stop().await;
    assert_eq!(report.running_at_signal, 0);
    assert!(!report.connections_dropped);
    let refused = client().get(format!("{base}/healthz")).send().await;
    assert!(refused.is_err(), "no longer accepting: {refused:?}");
}

/// Serves `app` under the operational layers of `options` on 127.0.0.1:0.
async fn serve_layered(app: axum::Router, options: ServeOptions) -> (String, Running) {
    let running = start(ServeOptions::default()).await;
    let layered = toolgraph_serve::layered(app, &options, &running.state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, layered).await });
    (base, running)
}

#[tokio::test]
async fn the_request_timeout_cuts_slow_requests_but_not_waits_and_event_streams() {
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        "done"
    };
    let app = axum::Router::new()
        .route("/v1/slow", axum::routing::get(slow))
        .route("/v1/executions/{id}/events", axum::routing::get(slow));
    let (base, running) = serve_layered(
        app,
        ServeOptions {
            request_timeout: Some(Duration::from_millis(100)),
            ..ServeOptions::default()
        },
    )
    .await;
    let http = client();
    let cut = http
        .get(format!("{base}/v1/slow"))
        .send()
        .await
        .expect("answer");
    assert_eq!(cut.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = problem(cut).await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("request timeout (100 ms")),
        "{body}"
    );
    for exempt in ["/v1/slow?wait=true", "/v1/executions/abc/events"] {
        let answer = http
            .get(format!("{base}{exempt}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), StatusCode::OK, "{exempt}");
        assert_eq!(answer.text().await.expect("text"), "done");
    }
    running.stop().await;
}

#[tokio::test]
async fn the_concurrency_limit_holds_requests_beyond_it_until_a_slot_frees() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (now, peak) = (now.clone(), peak.clone());
        move || {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }
    };
    let app = axum::Router::new().route("/v1/work", axum::routing::get(handler));
    let (base, running) = serve_layered(
        app,
        ServeOptions {
            concurrency_limit: 2,
            ..ServeOptions::default()
        },
    )
    .await;
    let http = client();
    let answers = futures_util::future::join_all((0..8).map(|_| {
        let http = http.clone();
        let url = format!("{base}/v1/work");
        async move { http.get(url).send().await.map(|r| r.status()) }
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|s| *s == StatusCode::OK)),
        "every request is answered, none refused: {answers:?}"
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "at most 2 at once: {peak}");
    running.stop().await;
}
