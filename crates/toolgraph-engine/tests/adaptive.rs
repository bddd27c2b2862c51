//! Adaptive concurrency and rate limits through the executor, on the paused clock: off by
//! default (no layer at all), a `Retry-After` shared by two executions, waiting for a token
//! counted as queue time and ended by the call's timeout or cancellation, and limit changes
//! told to the events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use toolgraph_core::{
    CallStatus, Event, EventSink, FnTool, ParallelExecutorConfig, RateLimit, RetryPolicy, ToolCall,
    ToolError, ToolSet, ToolSpec,
};
use toolgraph_engine::{CancellationToken, ParallelExecutor};

/// When each call of tool `api` began, by call id; the first `refuse` invocations answer a
/// transient error with a retry-after of `retry_after_ms`.
struct Api {
    starts: Arc<Mutex<Vec<(String, Instant)>>>,
    invoked: Arc<AtomicUsize>,
}

fn api(refuse: usize, retry_after_ms: u64, work_ms: u64) -> (ToolSet, Api) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let invoked = Arc::new(AtomicUsize::new(0));
    let (s, n) = (starts.clone(), invoked.clone());
    let tool = FnTool::new(
        ToolSpec::new("api").idempotent(),
        move |args: serde_json::Value, _| {
            let n = n.fetch_add(1, Ordering::SeqCst);
            let id = args["id"].as_str().unwrap_or("?").to_owned();
            s.lock().expect("lock").push((id, Instant::now()));
            async move {
                if n < refuse {
                    return Err(ToolError::transient("429 Too Many Requests")
                        .retry_after_ms(retry_after_ms));
                }
                tokio::time::sleep(Duration::from_millis(work_ms)).await;
                Ok(json!("ok"))
            }
        },
    );
    let mut tools = ToolSet::new();
    tools.register(tool).expect("register");
    (tools, Api { starts, invoked })
}

fn call(id: &str) -> ToolCall {
    ToolCall::new(id, "api", json!({ "id": id }))
}

fn rate_limited(rps: f64, burst: u32) -> ParallelExecutorConfig {
    let mut c = ParallelExecutorConfig::default();
    c.per_tool_rate_limits.insert(
        "api".into(),
        RateLimit {
            requests_per_second: rps,
            burst,
        },
    );
    c
}

#[tokio::test(start_paused = true)]
async fn with_adaptive_off_and_no_rate_limit_no_throttle_is_in_the_stack() {
    let (tools, probe) = api(0, 0, 10);
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    assert!(executor.throttle().is_none(), "off by default: no layer");
    let origin = Instant::now();
    let result = executor
        .execute_parallel((0..8).map(|i| call(&format!("c{i}"))).collect())
        .await
        .expect("runs");
    assert!(result.success);
    assert_eq!(probe.invoked.load(Ordering::SeqCst), 8);
    assert!(
        probe
            .starts
            .lock()
            .expect("lock")
            .iter()
            .all(|(_, at)| *at == origin),
        "all eight start at once, as without the feature"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_delays_the_key_for_another_execution_too() {
    let (tools, probe) = api(1, 400, 10);
    let mut config = ParallelExecutorConfig::default();
    config.adaptive.enabled = true;
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay_ms: 10,
        max_delay_ms: 5_000,
        jitter: false,
    };
    let executor = ParallelExecutor::new(tools, config).expect("ok");
    let origin = Instant::now();
    let first = executor.execute_parallel(vec![call("a")]);
    let other = executor.clone();
    let second = async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        other.execute_parallel(vec![call("b")]).await
    };
    let (a, b) = tokio::join!(first, second);
    assert!(a.expect("runs").success && b.expect("runs").success);
    let starts = probe.starts.lock().expect("lock").clone();
    let b_start = starts
        .iter()
        .find(|(id, _)| id == "b")
        .map(|(_, at)| *at - origin);
    assert_eq!(
        b_start,
        Some(Duration::from_millis(400)),
        "the other execution's call waits out the pause the first one's 429 asked for"
    );
}

#[tokio::test(start_paused = true)]
async fn n_calls_at_r_per_second_take_n_over_r_and_the_wait_is_queue_time() {
    let (tools, probe) = api(0, 0, 0);
    let executor = ParallelExecutor::new(tools, rate_limited(4.0, 1)).expect("ok");
    let origin = Instant::now();
    let result = executor
        .execute_parallel((0..9).map(|i| call(&format!("c{i}"))).collect())
        .await
        .expect("runs");
    assert!(result.success);
    let mut at: Vec<u128> = probe
        .starts
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, t)| (*t - origin).as_millis())
        .collect();
    at.sort_unstable();
    assert_eq!(at, (0..9).map(|i| i * 250).collect::<Vec<u128>>());
    let mut queued: Vec<f64> = result.results.iter().map(|r| r.queued_ms).collect();
    queued.sort_by(f64::total_cmp);
    assert_eq!(queued.last().copied(), Some(2000.0), "8 × 250 ms waited");
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_token_ends_at_the_calls_timeout_or_its_cancellation() {
    let (tools, probe) = api(0, 0, 0);
    let executor = ParallelExecutor::new(tools, rate_limited(1.0, 1)).expect("ok");
    let mut late = call("late");
    late.timeout_ms = Some(300);
    let result = executor
        .execute_parallel(vec![call("first"), late])
        .await
        .expect("runs");
    assert_eq!(result.results[0].status, CallStatus::Ok);
    assert_eq!(result.results[1].status, CallStatus::Timeout);
    assert_eq!(probe.invoked.load(Ordering::SeqCst), 1, "no token, no call");

    // The bucket is empty again for 1 s: a cancelled execution stops waiting.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let result = executor
        .execute_with_cancel(vec![call("waits")], cancel)
        .await
        .expect("runs");
    assert_eq!(result.results[0].status, CallStatus::Cancelled);
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(probe.invoked.load(Ordering::SeqCst), 1);
}

#[derive(Default)]
struct Limits(Mutex<Vec<(String, usize)>>);

impl EventSink for Limits {
    fn on_event(&self, event: &Event) {
        if let Event::LimitChanged { key, limit } = event {
            self.0.lock().expect("lock").push((key.clone(), *limit));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn limit_changes_are_told_to_the_events() {
    let (tools, _) = api(1, 0, 10);
    let mut config = ParallelExecutorConfig::default();
    config.adaptive.enabled = true;
    config.retry.jitter = false;
    let sink = Arc::new(Limits::default());
    let executor = ParallelExecutor::new(tools, config)
        .expect("ok")
        .with_sink(sink.clone());
    let result = executor
        .execute_parallel((0..4).map(|i| call(&format!("c{i}"))).collect())
        .await
        .expect("runs");
    assert!(result.success);
    let seen = sink.0.lock().expect("lock").clone();
    // Changes are told at each call's end: the first says the 429 cut the starting 4
    // (to 2.8, grown back towards 3 by the three successes that ended with it).
    assert!(
        matches!(seen.first(), Some((key, limit)) if key == "tool:api" && *limit < 4),
        "{seen:?}"
    );
    let limits = executor.throttle().expect("on").limits();
    assert_eq!(
        seen.last().map(|(_, l)| *l),
        Some(limits[0].limit),
        "the last event tells the limit in force"
    );
}
