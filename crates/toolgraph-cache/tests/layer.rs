//! The cache layer in an executor, on tokio's paused clock with scripted tools: hits,
//! single-flight within a batch and across executions, expiry, corrupt entries and a dead
//! backend as misses, each waiter's own timeout and cancellation, and which errors are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use toolgraph_cache::{
    CacheBackend, CacheError, CacheLayer, CachePolicy, Entry, MemoryBackend, ToolCachePolicy,
    cache_key,
};
use toolgraph_core::{CallStatus, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::{CancellationToken, ParallelExecutor};
use toolgraph_test_support::{Probe, ScriptedTool};

fn executor(
    probe: &Arc<Probe>,
    backend: Arc<dyn CacheBackend>,
    policy: CachePolicy,
) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            probe,
        ))
        .expect("t");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("other").idempotent(),
            probe,
        ))
        .expect("other");
    tools
        .register(ScriptedTool::new("writer", probe))
        .expect("writer");
    ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .layer(Arc::new(CacheLayer::new(backend, policy)))
}

fn memory() -> Arc<dyn CacheBackend> {
    Arc::new(MemoryBackend::new(1000))
}

fn same(n: usize, args: serde_json::Value) -> Vec<ToolCall> {
    (0..n)
        .map(|i| ToolCall::new(format!("c{i}"), "t", args.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn identical_calls_in_one_batch_run_the_tool_once_and_the_others_are_marked_cached() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    let r = ex
        .execute_parallel(same(20, json!({"ms": 100, "q": "x"})))
        .await
        .expect("valid");
    assert_eq!(probe.invocations(), 1);
    assert!(r.results.iter().all(|c| c.status == CallStatus::Ok));
    let ran: Vec<_> = r.results.iter().filter(|c| !c.cached).collect();
    assert_eq!(ran.len(), 1, "one call ran the tool");
    assert_eq!(ran[0].attempts, 1);
    assert_eq!(ran[0].duration_ms, 100.0);
    for c in r.results.iter().filter(|c| c.cached) {
        assert_eq!(c.attempts, 0, "{} ran no attempt", c.id);
        assert_eq!(c.output, ran[0].output);
        assert_eq!(c.duration_ms, 0.0, "{} spent no tool time", c.id);
    }
    assert_eq!(
        r.sequential_time_estimate_ms, 100.0,
        "tool time counted once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_execution_is_answered_from_the_cache_and_the_stats_count_hits() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    let batch = || vec![ToolCall::new("a", "t", json!({"ms": 10, "x": 1, "y": 2}))];
    let first = ex.execute_parallel(batch()).await.expect("valid");
    // The same arguments in another key order: the same call.
    let second = ex
        .execute_parallel(vec![ToolCall::new(
            "a",
            "t",
            json!({"y": 2, "x": 1, "ms": 10}),
        )])
        .await
        .expect("valid");
    assert_eq!(probe.invocations(), 1);
    assert!(!first.results[0].cached);
    assert!(second.results[0].cached);
    assert_eq!(second.results[0].attempts, 0);
    assert_eq!(first.results[0].output, second.results[0].output);
    let stats = ex.get_performance_stats();
    let t = &stats.tools["t"];
    assert_eq!((t.count, t.cache_hits), (2, 1));
    assert_eq!(t.hit_rate, 0.5);
    assert_eq!(t.mean_ms, 10.0, "a hit is not a sample of the tool's time");
}

#[tokio::test(start_paused = true)]
async fn concurrent_executions_share_one_run_of_a_slow_call() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    let batch = || vec![ToolCall::new("a", "t", json!({"ms": 500}))];
    let (a, b) = tokio::join!(ex.execute_parallel(batch()), ex.execute_parallel(batch()));
    let (a, b) = (a.expect("valid"), b.expect("valid"));
    assert_eq!(probe.invocations(), 1);
    assert_eq!(a.results[0].output, b.results[0].output);
    assert_eq!(
        [a.results[0].cached, b.results[0].cached]
            .iter()
            .filter(|c| **c)
            .count(),
        1,
        "the one that waited is marked cached"
    );
}

#[tokio::test(start_paused = true)]
async fn an_entry_expires_after_its_tools_ttl() {
    let probe = Probe::new();
    let mut policy = CachePolicy {
        ttl: Duration::from_secs(3600),
        ..CachePolicy::default()
    };
    policy.tools.insert(
        "t".into(),
        ToolCachePolicy {
            enabled: true,
            ttl: Some(Duration::from_secs(60)),
            version: String::new(),
        },
    );
    let ex = executor(&probe, memory(), policy);
    let batch = || vec![ToolCall::new("a", "t", json!({"q": 1}))];
    ex.execute_parallel(batch()).await.expect("valid");
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(ex.execute_parallel(batch()).await.expect("valid").results[0].cached);
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = ex.execute_parallel(batch()).await.expect("valid");
    assert!(!r.results[0].cached, "expired");
    assert_eq!(probe.invocations(), 2);
}

#[tokio::test(start_paused = true)]
async fn tools_that_are_not_idempotent_or_opted_out_are_never_cached_and_versions_part_keys() {
    let probe = Probe::new();
    let mut policy = CachePolicy::default();
    policy.tools.insert(
        "other".into(),
        ToolCachePolicy {
            enabled: false,
            ..ToolCachePolicy::default()
        },
    );
    let ex = executor(&probe, memory(), policy);
    let batch = || {
        vec![
            ToolCall::new("w", "writer", json!({"ms": 5})),
            ToolCall::new("o", "other", json!({"ms": 5})),
        ]
    };
    ex.execute_parallel(batch()).await.expect("valid");
    let r = ex.execute_parallel(batch()).await.expect("valid");
    assert_eq!(probe.invocations(), 4);
    assert!(r.results.iter().all(|c| !c.cached));
    assert_ne!(
        cache_key("t", "1", &json!({})),
        cache_key("t", "2", &json!({})),
        "a bumped version is another key"
    );
}

/// Keeps entries as text, as the store and Redis do; `broken` makes every request fail.
#[derive(Default)]
struct TextBackend {
    rows: Mutex<HashMap<String, String>>,
    broken: bool,
}

impl CacheBackend for TextBackend {
    fn describe(&self) -> String {
        "text".into()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>> {
        let text = self.rows.lock().expect("rows").get(key).cloned();
        let broken = self.broken;
        Box::pin(async move {
            if broken {
                return Err(CacheError::Backend("down".into()));
            }
            text.map(|t| Entry::from_text(&t)).transpose()
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        _tool: &'a str,
        entry: &'a Entry,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        if !self.broken {
            self.rows
                .lock()
                .expect("rows")
                .insert(key.to_owned(), entry.to_text());
        }
        let broken = self.broken;
        Box::pin(async move {
            if broken {
                Err(CacheError::Backend("down".into()))
            } else {
                Ok(())
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        self.rows.lock().expect("rows").remove(key);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_entry_is_a_miss_and_is_overwritten() {
    let probe = Probe::new();
    let backend = Arc::new(TextBackend::default());
    let ex = executor(&probe, backend.clone(), CachePolicy::default());
    let args = json!({"q": "corrupt"});
    let key = cache_key("t", "", &args);
    backend
        .rows
        .lock()
        .expect("rows")
        .insert(key.clone(), "{not json".into());
    let r = ex
        .execute_parallel(vec![ToolCall::new("a", "t", args.clone())])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Ok);
    assert!(!r.results[0].cached);
    assert_eq!(probe.invocations(), 1);
    let text = backend.rows.lock().expect("rows").get(&key).cloned();
    assert_eq!(
        text.map(|t| Entry::from_text(&t))
            .transpose()
            .expect("readable now"),
        r.results[0].output.clone().map(Entry::Output),
        "the fresh result replaced the garbage"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_is_down_is_a_miss_and_never_fails_a_call() {
    let probe = Probe::new();
    let backend = Arc::new(TextBackend {
        broken: true,
        ..TextBackend::default()
    });
    let ex = executor(&probe, backend, CachePolicy::default());
    let r = ex
        .execute_parallel(same(3, json!({"ms": 10})))
        .await
        .expect("valid");
    assert!(r.results.iter().all(|c| c.status == CallStatus::Ok));
    assert_eq!(
        probe.invocations(),
        1,
        "still one flight for identical calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiters_own_timeout_ends_it_alone() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    // The first call starts the flight and has the short deadline.
    let r = ex
        .execute_parallel(vec![
            ToolCall::new("short", "t", json!({"ms": 200})).timeout_ms(50),
            ToolCall::new("long", "t", json!({"ms": 200})),
            ToolCall::new("short2", "t", json!({"ms": 200})).timeout_ms(80),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Timeout);
    assert_eq!(r.results[2].status, CallStatus::Timeout);
    assert_eq!(
        r.results[1].status,
        CallStatus::Ok,
        "the shared run went on"
    );
    assert_eq!(r.results[1].finished_ms, Some(200.0));
    assert_eq!(probe.invocations(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_leaves_the_shared_run_to_the_others_and_the_last_one_out_stops_it() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    let batch = || vec![ToolCall::new("a", "t", json!({"ms": 300}))];
    let cancel = CancellationToken::new();
    let first = {
        let ex = ex.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { ex.execute_with_cancel(batch(), cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = {
        let ex = ex.clone();
        tokio::spawn(async move { ex.execute_parallel(batch()).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    cancel.cancel();
    let first = first.await.expect("joins").expect("valid");
    let second = second.await.expect("joins").expect("valid");
    assert_eq!(first.results[0].status, CallStatus::Cancelled);
    assert_eq!(second.results[0].status, CallStatus::Ok);
    assert!(second.results[0].cached, "it waited for the other's run");
    assert_eq!(probe.invocations(), 1);

    // Alone, a cancelled caller stops the run: the tool's future is dropped.
    let cancel = CancellationToken::new();
    let run = {
        let ex = ex.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            ex.execute_with_cancel(vec![ToolCall::new("b", "t", json!({"ms": 10_000}))], cancel)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(probe.live(), 1);
    cancel.cancel();
    run.await.expect("joins").expect("valid");
    tokio::task::yield_now().await;
    assert_eq!(probe.live(), 0, "no caller left: the flight was aborted");
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached_but_every_waiter_gets_the_error() {
    let probe = Probe::new();
    let ex = executor(&probe, memory(), CachePolicy::default());
    let batch = || same(3, json!({"ms": 10, "fail": "no such page"}));
    let r = ex.execute_parallel(batch()).await.expect("valid");
    assert!(r.results.iter().all(|c| c.status == CallStatus::Error));
    assert!(r.results.iter().all(|c| {
        c.error
            .as_ref()
            .is_some_and(|e| e.message.contains("no such page"))
    }));
    assert_eq!(probe.invocations(), 1, "one flight");
    ex.execute_parallel(batch()).await.expect("valid");
    assert_eq!(probe.invocations(), 2, "not kept");
}

#[tokio::test(start_paused = true)]
async fn a_negative_ttl_keeps_permanent_errors_only() {
    let probe = Probe::new();
    let policy = CachePolicy {
        negative_ttl: Some(Duration::from_secs(60)),
        ..CachePolicy::default()
    };
    let ex = executor(&probe, memory(), policy);
    let permanent = || vec![ToolCall::new("p", "t", json!({"fail": "404"}))];
    let transient = || {
        vec![ToolCall::new(
            "q",
            "t",
            json!({"fail": "503", "transient": true}),
        )]
    };
    let mut no_retry = ParallelExecutorConfig::default();
    no_retry.retry.max_attempts = 1;
    ex.update_config(no_retry).expect("valid");
    ex.execute_parallel(permanent()).await.expect("valid");
    let again = ex.execute_parallel(permanent()).await.expect("valid");
    assert_eq!(again.results[0].status, CallStatus::Error);
    assert!(again.results[0].cached, "the permanent error was kept");
    assert_eq!(probe.invocations(), 1);
    ex.execute_parallel(transient()).await.expect("valid");
    let again = ex.execute_parallel(transient()).await.expect("valid");
    assert!(!again.results[0].cached, "a transient error is never kept");
    assert_eq!(probe.invocations(), 3);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        !ex.execute_parallel(permanent())
            .await
            .expect("valid")
            .results[0]
            .cached
    );
}

/// A service below the cache that panics (a layer's bug, a tool's `resources` raising).
struct Panicking;

impl toolgraph_engine::layer::CallService for Panicking {
    fn call(
        &self,
        _request: toolgraph_engine::layer::CallRequest,
    ) -> toolgraph_engine::layer::CallFuture {
        Box::pin(async { panic!("a layer below the cache panicked") })
    }
}

#[tokio::test(start_paused = true)]
async fn a_flight_that_panics_answers_every_waiter_and_the_next_identical_call_runs_anew() {
    use toolgraph_engine::layer::{CallRequest, Failure, Layer};
    let probe = Probe::new();
    let layer = CacheLayer::new(memory(), CachePolicy::default());
    let service = layer.layer(Arc::new(Panicking));
    let tool: Arc<dyn toolgraph_core::Tool> = Arc::new(ScriptedTool::with_spec(
        ToolSpec::new("t").idempotent(),
        &probe,
    ));
    let request = |id: &str| CallRequest::new(tool.clone(), json!({"q": 1}), id);
    let both = futures_util::future::join(service.call(request("a")), service.call(request("b")));
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("no waiter hangs on a flight that panicked");
    assert!(matches!(a, Err(Failure::Panic(_))), "{a:?}");
    assert!(matches!(b, Err(Failure::Panic(_))), "{b:?}");
    assert_eq!(layer.flights(), 0, "the dead flight is gone");
    let again = tokio::time::timeout(Duration::from_secs(60), service.call(request("c")))
        .await
        .expect("a later identical call does not join a dead flight");
    assert!(matches!(again, Err(Failure::Panic(_))), "{again:?}");
}
