//! Adaptive concurrency against a real HTTP server on 127.0.0.1 that serves at most `C`
//! requests at once and answers 429 above that (once with `Retry-After`, once without):
//! 500 `http_fetch` calls under a ceiling of 64 all succeed, the 429s stay few, and the
//! host's limit settles near `C`. And a host's token bucket never lets real requests reach
//! the server faster than its rate.
//!
//! The limit is sampled every 10 ms. With `TOOLGRAPH_TEST_PLOT=FILE.svg` set, the trace of
//! both runs is drawn into that file (the README's plot, `docs/adaptive-limit.svg`):
//! `TOOLGRAPH_TEST_PLOT=$PWD/docs/adaptive-limit.svg cargo test -p toolgraph-tools --test
//! http_adaptive -- --nocapture` (the figures are printed too).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, RetryPolicy, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_tools::http::{HttpConfig, HttpFetch};

/// Requests the server serves at once.
const CAPACITY: usize = 8;
/// The executor's ceiling.
const CEILING: usize = 64;
const CALLS: usize = 500;

/// A server of capacity [`CAPACITY`]: requests above it get 429 at once.
struct Server {
    running: AtomicUsize,
    refused: AtomicUsize,
    peak: AtomicUsize,
    retry_after: bool,
}

async fn serve(State(s): State<Arc<Server>>) -> Response {
    let now = s.running.fetch_add(1, SeqCst) + 1;
    if now > CAPACITY {
        s.running.fetch_sub(1, SeqCst);
        s.refused.fetch_add(1, SeqCst);
        return if s.retry_after {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response()
        } else {
            (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response()
        };
    }
    s.peak.fetch_max(now, SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.running.fetch_sub(1, SeqCst);
    "ok".into_response()
}

/// Serves `router` on a loopback port; the URL of its `/item`.
async fn serve_on_loopback(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://127.0.0.1:{port}/item")
}

async fn start(retry_after: bool) -> (String, Arc<Server>) {
    let server = Arc::new(Server {
        running: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        retry_after,
    });
    let router = Router::new()
        .route("/item", get(serve))
        .with_state(server.clone());
    (serve_on_loopback(router).await, server)
}

/// What one run measured.
struct Run {
    refused: usize,
    /// (seconds since start, the host's limit), every 10 ms.
    trace: Vec<(f64, usize)>,
    /// Mean limit over the second half of the run.
    settled: f64,
    elapsed: Duration,
}

async fn run(retry_after: bool) -> Run {
    let (url, server) = start(retry_after).await;
    let tool = HttpFetch::new(HttpConfig {
        allow_networks: vec!["127.0.0.1".into()],
        // `Retry-After: 1` becomes 50 ms, so the test stays short.
        max_retry_after_ms: 50,
        ..HttpConfig::default()
    })
    .expect("config");
    let mut tools = ToolSet::new();
    tools.register(tool).expect("register http_fetch");
    let mut config = ParallelExecutorConfig {
        max_parallel_calls: CEILING,
        retry: RetryPolicy {
            max_attempts: 50,
            base_delay_ms: 10,
            max_delay_ms: 200,
            jitter: true,
        },
        ..ParallelExecutorConfig::default()
    };
    config.adaptive.enabled = true;
    let executor = ParallelExecutor::new(tools, config).expect("valid config");
    let throttle = executor.throttle().expect("adaptive is on").clone();
    let host = format!(
        "host:{}",
        url.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
    );
    let calls: Vec<ToolCall> = (0..CALLS)
        .map(|i| ToolCall::new(format!("c{i}"), "http_fetch", json!({ "url": url })))
        .collect();

    let origin = Instant::now();
    let trace = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (host, trace) = (host.clone(), trace.clone());
        tokio::spawn(async move {
            loop {
                let limit = throttle
                    .limits()
                    .into_iter()
                    .find(|l| l.key == host)
                    .map_or(0, |l| l.limit);
                assert!(limit <= CEILING, "the limit stays under the ceiling");
                let at = origin.elapsed().as_secs_f64();
                trace.lock().expect("lock").push((at, limit));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(60), executor.execute_parallel(calls))
        .await
        .expect("the batch ends")
        .expect("valid batch");
    let elapsed = origin.elapsed();
    sampler.abort();
    let failed: Vec<String> = result
        .results
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| format!("{}: {:?}", r.id, r.error))
        .take(3)
        .collect();
    assert!(result.success, "every call succeeds eventually: {failed:?}");
    assert!(
        server.peak.load(SeqCst) <= CAPACITY,
        "the server never served more than its capacity"
    );
    let trace = trace.lock().expect("lock").clone();
    let half = elapsed.as_secs_f64() / 2.0;
    let late: Vec<f64> = trace
        .iter()
        .filter(|(at, l)| *at >= half && *l > 0)
        .map(|(_, l)| *l as f64)
        .collect();
    let settled = late.iter().sum::<f64>() / late.len().max(1) as f64;
    Run {
        refused: server.refused.load(SeqCst),
        trace,
        settled,
        elapsed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_fetches_settle_near_the_servers_capacity_with_few_429s() {
    let mut runs = Vec::new();
    for retry_after in [false, true] {
        let r = run(retry_after).await;
        let what = if retry_after {
            "with Retry-After"
        } else {
            "without Retry-After"
        };
        println!(
            "{CALLS} calls, capacity {CAPACITY}, ceiling {CEILING}, {what}: {} × 429, limit settled at {:.1} (mean over the second half), {:.2} s",
            r.refused,
            r.settled,
            r.elapsed.as_secs_f64()
        );
        assert!(
            r.refused <= CALLS / 4,
            "{what}: {} 429s for {CALLS} calls",
            r.refused
        );
        assert!(
            (CAPACITY as f64 / 2.0..=CAPACITY as f64 * 1.5).contains(&r.settled),
            "{what}: settled at {:.1} for a capacity of {CAPACITY}",
            r.settled
        );
        runs.push((what, r));
    }
    if let Some(path) = std::env::var_os("TOOLGRAPH_TEST_PLOT") {
        let series: Vec<(&str, &[(f64, usize)])> =
            runs.iter().map(|(w, r)| (*w, r.trace.as_slice())).collect();
        std::fs::write(&path, plot(&series)).expect("write the plot");
    }
}

/// Counts requests and when each arrived.
async fn start_recording() -> (String, Arc<Mutex<Vec<Instant>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new()
        .route(
            "/item",
            get(|State(a): State<Arc<Mutex<Vec<Instant>>>>| async move {
                a.lock().expect("lock").push(Instant::now());
                "ok"
            }),
        )
        .with_state(arrivals.clone());
    (serve_on_loopback(router).await, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_token_bucket_spaces_real_requests_at_its_rate() {
    const N: usize = 41;
    const RATE: f64 = 20.0;
    let (url, arrivals) = start_recording().await;
    let tool = HttpFetch::new(HttpConfig {
        allow_networks: vec!["127.0.0.1".into()],
        ..HttpConfig::default()
    })
    .expect("config");
    let mut tools = ToolSet::new();
    tools.register(tool).expect("register http_fetch");
    let mut config = ParallelExecutorConfig {
        max_parallel_calls: CEILING,
        ..ParallelExecutorConfig::default()
    };
    // Every host gets a bucket of its own: 20 per second, one at a time.
    config.per_resource_rate_limits.insert(
        "host".into(),
        toolgraph_core::RateLimit {
            requests_per_second: RATE,
            burst: 1,
        },
    );
    let executor = ParallelExecutor::new(tools, config).expect("valid config");
    let calls: Vec<ToolCall> = (0..N)
        .map(|i| ToolCall::new(format!("c{i}"), "http_fetch", json!({ "url": url })))
        .collect();
    let result = executor.execute_parallel(calls).await.expect("valid batch");
    assert!(result.success);
    let mut at = arrivals.lock().expect("lock").clone();
    at.sort();
    assert_eq!(at.len(), N, "one request per call");
    let span = at[N - 1].duration_since(at[0]).as_secs_f64();
    let ideal = (N - 1) as f64 / RATE;
    println!(
        "{N} requests at {RATE}/s (burst 1): first to last {span:.3} s, ideal {ideal:.3} s ({:+.1}%)",
        (span / ideal - 1.0) * 100.0
    );
    // Never faster than the rate (the bucket's tokens arrive every 50 ms; a request may
    // reach the server a little sooner or later than its token, hence the 10 % margin).
    assert!(span >= ideal * 0.9, "{span} s for {N} requests at {RATE}/s");
}

/// A small SVG line plot of limit over time, one line per series, with the capacity
/// marked.
fn plot(series: &[(&str, &[(f64, usize)])]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 300.0, 50.0, 20.0, 30.0, 40.0);
    let t_max = series
        .iter()
        .flat_map(|(_, t)| t.iter().map(|(at, _)| *at))
        .fold(0.1_f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, t)| t.iter().map(|(_, l)| *l as f64))
        .fold(CAPACITY as f64 * 2.0, f64::max);
    let x = |t: f64| left + t / t_max * (w - left - right);
    let y = |l: f64| h - bottom - l / y_max * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\">adaptive limit of host:127.0.0.1 — {CALLS} http_fetch calls, ceiling {CEILING}, server capacity {CAPACITY}</text>\n"
    );
    let step = if y_max > 20.0 { 8.0 } else { 2.0 };
    let mut tick = 0.0;
    while tick <= y_max {
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{tick}</text>\n",
            w - right,
            y(tick),
            left - 6.0,
            y(tick) + 4.0
        );
        tick += step;
    }
    svg += &format!(
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\" fill=\"#555\">capacity</text>\n",
        w - right,
        y(CAPACITY as f64),
        w - right - 4.0,
        y(CAPACITY as f64) - 4.0
    );
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">time (s), 0 – {t_max:.2}</text>\n",
        (left + w - right) / 2.0,
        h - 10.0
    );
    for (i, (name, trace)) in series.iter().enumerate() {
        let colour = ["#1f77b4", "#d62728"][i % 2];
        let points: Vec<String> = trace
            .iter()
            .map(|(t, l)| format!("{:.1},{:.1}", x(*t), y(*l as f64)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
            points.join(" "),
            w - right - 150.0,
            top + 14.0 + 16.0 * i as f64
        );
    }
    svg + "</svg>\n"
}
