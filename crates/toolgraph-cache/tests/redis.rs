//! The Redis backend against a real server (`TOOLGRAPH_TEST_REDIS_URL`; skipped with a
//! message when unset, a failure under `TOOLGRAPH_REQUIRE_SERVICES`): entries expire, a
//! corrupt one is a miss the next result overwrites, the lock is its holder's, two
//! "processes" (two layers, each with its own connection) run an identical call once and
//! share its failure, and a server that is down costs the calls nothing. Each test uses a
//! key prefix of its own.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toolgraph_cache::{
    CacheBackend, CacheError, CacheLayer, CachePolicy, Entry, RedisBackend, cache_key,
};
use toolgraph_core::{CallStatus, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_test_support::{Probe, ScriptedTool};

fn redis_url() -> Option<String> {
    match std::env::var("TOOLGRAPH_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            toolgraph_test_support::skip(
                "TOOLGRAPH_TEST_REDIS_URL is unset (no Redis to test against)",
            );
            None
        }
    }
}

fn prefix() -> String {
    format!("toolgraph-test:{}:", uuid::Uuid::new_v4().simple())
}

fn executor(probe: &Arc<Probe>, backend: Arc<dyn CacheBackend>) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            probe,
        ))
        .expect("t");
    let mut config = ParallelExecutorConfig::default();
    config.retry.max_attempts = 1;
    ParallelExecutor::new(tools, config)
        .expect("config")
        .layer(Arc::new(CacheLayer::new(backend, CachePolicy::default())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_expire_and_a_corrupt_one_is_a_miss_the_next_result_overwrites() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let backend = Arc::new(RedisBackend::new(&url, &prefix).expect("url"));
    let entry = Entry::Output(Arc::new(json!({"a": 1})));
    backend
        .put("k", "t", &entry, Duration::from_millis(300))
        .await
        .expect("put");
    assert_eq!(backend.get("k").await.expect("get"), Some(entry));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(backend.get("k").await.expect("get"), None, "expired");

    // Garbage under a call's key.
    let args = json!({"q": "corrupt"});
    let key = cache_key("t", "", &args);
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("SET")
        .arg(format!("{prefix}{key}"))
        .arg("{broken")
        .query_async::<()>(&mut conn)
        .await
        .expect("set garbage");
    assert!(matches!(
        backend.get(&key).await,
        Err(CacheError::Corrupt(_))
    ));
    let probe = Probe::new();
    let ex = executor(&probe, backend.clone());
    let r = ex
        .execute_parallel(vec![ToolCall::new("a", "t", args.clone())])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Ok);
    assert!(!r.results[0].cached);
    assert_eq!(probe.invocations(), 1);
    assert_eq!(
        backend.get(&key).await.expect("readable again"),
        r.results[0].output.clone().map(Entry::Output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_lock_is_its_holders_until_it_gives_it_back_or_it_expires() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let one = RedisBackend::new(&url, &prefix).expect("url");
    let two = RedisBackend::new(&url, &prefix).expect("url");
    let lease = Duration::from_millis(500);
    assert!(one.try_lock("k", lease).await.expect("lock"));
    assert!(!two.try_lock("k", lease).await.expect("lock"), "held");
    two.unlock("k").await.expect("not two's to give back");
    assert!(!two.try_lock("k", lease).await.expect("lock"), "still held");
    one.unlock("k").await.expect("unlock");
    assert!(two.try_lock("k", lease).await.expect("lock"), "given back");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(one.try_lock("k", lease).await.expect("lock"), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_redis_run_an_identical_call_once_and_share_its_failure() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    // Two processes: each its own layer, flights and connection.
    let probe = Probe::new();
    let a = executor(
        &probe,
        Arc::new(RedisBackend::new(&url, &prefix).expect("url")),
    );
    let b = executor(
        &probe,
        Arc::new(RedisBackend::new(&url, &prefix).expect("url")),
    );
    let slow = || vec![ToolCall::new("c", "t", json!({"ms": 400, "q": 1}))];
    let (ra, rb) = tokio::join!(a.execute_parallel(slow()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.execute_parallel(slow()).await
    });
    let (ra, rb) = (ra.expect("valid"), rb.expect("valid"));
    assert_eq!(probe.invocations(), 1);
    assert!(!ra.results[0].cached);
    assert!(rb.results[0].cached, "b waited for a's run");
    assert_eq!(ra.results[0].output, rb.results[0].output);

    // A failure is not cached, but the process waiting for the run hears of it.
    let failing = || vec![ToolCall::new("c", "t", json!({"ms": 400, "fail": "gone"}))];
    let (ra, rb) = tokio::join!(a.execute_parallel(failing()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.execute_parallel(failing()).await
    });
    let (ra, rb) = (ra.expect("valid"), rb.expect("valid"));
    assert_eq!(probe.invocations(), 2);
    assert_eq!(ra.results[0].status, CallStatus::Error);
    assert_eq!(rb.results[0].status, CallStatus::Error);
    assert!(
        rb.results[0]
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("gone")),
        "{:?}",
        rb.results[0].error
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = a.execute_parallel(failing()).await.expect("valid");
    assert!(!again.results[0].cached, "errors are not cached");
    assert_eq!(probe.invocations(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_costs_the_calls_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let backend =
        Arc::new(RedisBackend::new(&format!("redis://127.0.0.1:{port}"), &prefix()).expect("url"));
    let probe = Probe::new();
    let ex = executor(&probe, backend);
    for _ in 0..2 {
        let r = ex
            .execute_parallel(vec![ToolCall::new("a", "t", json!({"q": 1}))])
            .await
            .expect("valid");
        assert_eq!(r.results[0].status, CallStatus::Ok);
        assert!(!r.results[0].cached);
    }
    assert_eq!(probe.invocations(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_lock_lease_keeps_its_lock_and_runs_once() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let probe = Probe::new();
    let policy = CachePolicy {
        lock_lease: Duration::from_millis(200),
        ..CachePolicy::default()
    };
    let layer = |backend: RedisBackend| {
        let mut tools = ToolSet::new();
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new("t").idempotent(),
                &probe,
            ))
            .expect("t");
        ParallelExecutor::new(tools, ParallelExecutorConfig::default())
            .expect("config")
            .layer(Arc::new(CacheLayer::new(Arc::new(backend), policy.clone())))
    };
    let a = layer(RedisBackend::new(&url, &prefix).expect("url"));
    let b = layer(RedisBackend::new(&url, &prefix).expect("url"));
    let long = || vec![ToolCall::new("c", "t", json!({"ms": 1000}))];
    let (ra, rb) = tokio::join!(a.execute_parallel(long()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.execute_parallel(long()).await
    });
    assert_eq!(probe.invocations(), 1, "the lock outlived its first lease");
    assert!(rb.expect("valid").results[0].cached);
    assert!(!ra.expect("valid").results[0].cached);
}
