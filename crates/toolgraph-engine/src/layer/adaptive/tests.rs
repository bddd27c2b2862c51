//! The AIMD arithmetic, and the layer's slots, pauses and buckets on the paused clock.

use super::*;
use crate::layer::{Invoke, stack_with};
use serde_json::json;
use std::sync::atomic::AtomicUsize;
use toolgraph_core::{FnTool, RetryPolicy, ToolError, ToolSpec};

#[test]
fn aimd_slow_starts_then_adds_one_per_limits_worth_of_successes() {
    let mut a = Aimd::new(2, 64, 0.5);
    assert_eq!(a.limit(), 2);
    // Slow start: one more per success while the limit is in use.
    a.on_success(2);
    a.on_success(3);
    assert_eq!(a.limit(), 4);
    assert!(a.on_overload(a.epoch()));
    assert_eq!(a.limit(), 2, "halved");
    // Congestion avoidance: about one per limit's worth of successes (1/limit each).
    for _ in 0..3 {
        a.on_success(2);
    }
    assert_eq!(a.limit(), 3);
    for _ in 0..3 {
        a.on_success(3);
    }
    assert_eq!(a.limit(), 4);
}

#[test]
fn aimd_cuts_once_per_round_and_stays_within_one_and_the_ceiling() {
    let mut a = Aimd::new(8, 8, 0.5);
    let began = a.epoch();
    assert!(a.on_overload(began));
    assert!(
        !a.on_overload(began),
        "a second overload from an attempt sent before the cut is ignored"
    );
    assert_eq!(a.limit(), 4);
    for _ in 0..20 {
        let now = a.epoch();
        a.on_overload(now);
    }
    assert_eq!(a.limit(), 1, "never below one");
    for _ in 0..1_000 {
        let l = a.limit();
        a.on_success(l);
    }
    assert_eq!(a.limit(), 8, "never above the ceiling");
    a.set_ceiling(3);
    assert_eq!(a.limit(), 3, "a lower ceiling lowers the limit");
}

#[test]
fn an_idle_limit_does_not_grow() {
    let mut a = Aimd::new(8, 64, 0.5);
    for _ in 0..100 {
        a.on_success(1);
    }
    assert_eq!(a.limit(), 8, "one call at a time proves nothing about 9");
}

fn config(adaptive: bool) -> ParallelExecutorConfig {
    let mut c = ParallelExecutorConfig::default();
    c.adaptive.enabled = adaptive;
    c.max_parallel_calls = 64;
    c
}

/// A tool that answers 429 (transient, with an optional retry-after) when more than `cap`
/// attempts run at once, else succeeds after 10 ms; counts its 429s.
fn service_of_capacity(
    cap: usize,
    retry_after_ms: Option<u64>,
) -> (Arc<dyn Tool>, Arc<AtomicUsize>) {
    let running = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let r = refused.clone();
    let tool = FnTool::new(ToolSpec::new("api").idempotent(), move |_, _| {
        let running = running.clone();
        let refused = r.clone();
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            let out = if now > cap {
                refused.fetch_add(1, Ordering::SeqCst);
                let e = ToolError::transient("429 Too Many Requests");
                Err(match retry_after_ms {
                    Some(ms) => e.retry_after_ms(ms),
                    None => e,
                })
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(json!("ok"))
            };
            running.fetch_sub(1, Ordering::SeqCst);
            out
        }
    });
    (Arc::new(tool), refused)
}

fn request(tool: &Arc<dyn Tool>, id: usize) -> CallRequest {
    let mut r = CallRequest::new(tool.clone(), json!({}), &format!("c{id}"));
    r.policy.retry = RetryPolicy {
        max_attempts: 20,
        base_delay_ms: 10,
        max_delay_ms: 200,
        jitter: true,
    };
    r
}

#[tokio::test(start_paused = true)]
async fn the_limit_shrinks_on_429_and_settles_near_the_services_capacity() {
    let throttle = Throttle::new(Arc::new(config(true)));
    let layer: Arc<dyn Layer> = Arc::new(AdaptiveLayer::new(throttle.clone()));
    let service = stack_with(&[], &[layer]);
    let (tool, refused) = service_of_capacity(6, None);
    let calls = (0..300).map(|i| service.call(request(&tool, i)));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "every call succeeds");
    let limits = throttle.limits();
    let limit = limits[0].limit;
    assert_eq!(limits[0].key, "tool:api");
    assert!(
        (3..=8).contains(&limit),
        "settled at {limit} for capacity 6"
    );
    let refused = refused.load(Ordering::SeqCst);
    assert!(refused < 60, "{refused} refusals for 300 calls");
    assert_eq!(limits[0].in_flight, 0, "every slot came back");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_pauses_the_key_for_every_later_attempt() {
    let throttle = Throttle::new(Arc::new(config(true)));
    let layer: Arc<dyn Layer> = Arc::new(AdaptiveLayer::new(throttle.clone()));
    let service = stack_with(&[], &[layer]);
    // Capacity 0: the first attempt is refused with Retry-After 300 ms.
    let (tool, _) = service_of_capacity(0, Some(300));
    let mut first = CallRequest::new(tool.clone(), json!({}), "first");
    first.policy.retry.max_attempts = 1;
    assert!(service.call(first).await.is_err());
    // Another call of the same key waits out the pause before its attempt begins.
    let (ok_tool, _) = service_of_capacity(10, None);
    let started = Instant::now();
    let mut later = CallRequest::new(ok_tool, json!({}), "later");
    // Same key: the tool is named "api" too.
    later.policy.retry.max_attempts = 1;
    let meter = later.meter.clone();
    assert!(service.call(later).await.is_ok());
    let waited = meter.first_start().map(|s| s - started);
    assert_eq!(waited, Some(Duration::from_millis(300)));
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_spaces_attempts_at_its_rate_after_its_burst() {
    let mut c = config(false);
    c.per_tool_rate_limits.insert(
        "api".into(),
        RateLimit {
            requests_per_second: 5.0,
            burst: 3,
        },
    );
    let throttle = Throttle::new(Arc::new(c));
    let service = AdaptiveLayer::new(throttle).layer(Arc::new(Invoke));
    let (tool, _) = service_of_capacity(100, None);
    let origin = Instant::now();
    let meters: Vec<Arc<Meter>> = (0..10)
        .map(|i| request(&tool, i))
        .map(|r| {
            let m = r.meter.clone();
            (r, m)
        })
        .map(|(r, m)| {
            tokio::spawn(service.call(r));
            m
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut starts: Vec<u128> = meters
        .iter()
        .filter_map(|m| m.first_start())
        .map(|s| (s - origin).as_millis())
        .collect();
    starts.sort_unstable();
    // Three at once (the burst), then one every 200 ms: 10 calls at 5/s take 1.4 s.
    assert_eq!(starts, vec![0, 0, 0, 200, 400, 600, 800, 1000, 1200, 1400]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_while_holding_a_slot_counts_as_overload() {
    let throttle = Throttle::new(Arc::new(config(true)));
    let layer: Arc<dyn Layer> = Arc::new(AdaptiveLayer::new(throttle.clone()));
    let service = stack_with(&[], &[layer]);
    let slow: Arc<dyn Tool> = Arc::new(FnTool::new(ToolSpec::new("slow"), |_, _| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(json!(null))
    }));
    let mut r = CallRequest::new(slow, json!({}), "c1");
    r.policy.timeout = Some(Duration::from_millis(100));
    assert_eq!(
        service.call(r).await,
        Err(Failure::Timeout(Duration::from_millis(100)))
    );
    let limits = throttle.limits();
    assert_eq!(limits[0].limit, 2, "4 × 0.7, rounded down");
    assert_eq!(limits[0].in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_attempt_gives_its_slot_back_without_a_cut() {
    let throttle = Throttle::new(Arc::new(config(true)));
    let service = AdaptiveLayer::new(throttle.clone()).layer(Arc::new(Invoke));
    let slow: Arc<dyn Tool> = Arc::new(FnTool::new(ToolSpec::new("slow"), |_, _| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(json!(null))
    }));
    let work = service.call(CallRequest::new(slow, json!({}), "c1"));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), work)
            .await
            .is_err()
    );
    let limits = throttle.limits();
    assert_eq!((limits[0].limit, limits[0].in_flight), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn a_pause_set_from_outside_holds_the_keys_attempts_and_keeps_its_ceiling() {
    let throttle = Throttle::new(Arc::new(config(true)));
    throttle.pause("tool:api", 250);
    let service = AdaptiveLayer::new(throttle.clone()).layer(Arc::new(Invoke));
    let (tool, _) = service_of_capacity(10, None);
    let r = request(&tool, 1);
    let meter = r.meter.clone();
    let started = Instant::now();
    assert!(service.call(r).await.is_ok());
    assert_eq!(
        meter.first_start().map(|s| s - started),
        Some(Duration::from_millis(250))
    );
    let limits = throttle.limits();
    assert_eq!((limits[0].limit, limits[0].ceiling), (4, 64));
}
