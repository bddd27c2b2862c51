//! The cache as `Runtime::start` wires it from a configuration: 100 identical `http_fetch`
//! calls in one batch reach a local server once; two executions at once on one runtime
//! share one run; a runtime without `[cache] enabled` caches nothing; a redis backend
//! without a URL is refused by name.

use std::time::Duration;

use serde_json::json;
use toolgraph::{CacheBackendKind, Config, ExecuteOptions, Runtime};
use toolgraph_core::{CallStatus, ToolCall};
use toolgraph_test_support::CountingServer;

fn config(backend: CacheBackendKind, enabled: bool) -> Config {
    let mut config = Config::default();
    config.store.record = false;
    config.http.allow_private = true;
    config.cache.enabled = enabled;
    config.cache.backend = backend;
    config
}

fn fetches(server: &CountingServer, n: usize, path: &str) -> Vec<ToolCall> {
    (0..n)
        .map(|i| {
            ToolCall::new(
                format!("f{i}"),
                "http_fetch",
                json!({"url": format!("{}{path}", server.url())}),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_fetches_in_one_batch_send_one_request() {
    let server = CountingServer::start(Duration::from_millis(50));
    let runtime = Runtime::start(&config(CacheBackendKind::Memory, true))
        .await
        .expect("runtime");
    let run = runtime
        .execute_calls(fetches(&server, 100, "/same"), ExecuteOptions::default())
        .await
        .expect("runs");
    let results = &run.result.results;
    assert!(
        results.iter().all(|r| r.status == CallStatus::Ok),
        "{:?}",
        results.iter().find(|r| r.status != CallStatus::Ok)
    );
    assert_eq!(server.hits(), 1, "the server saw exactly one request");
    assert_eq!(results.iter().filter(|r| !r.cached).count(), 1);
    assert!(results.iter().all(|r| r.output == results[0].output));
    let counts = runtime.cache().expect("a cache").counts();
    assert_eq!(counts.misses, 1);
    assert_eq!(counts.joined + counts.hits, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executions_on_one_runtime_share_one_request() {
    let server = CountingServer::start(Duration::from_millis(300));
    let runtime = Runtime::start(&config(CacheBackendKind::Memory, true))
        .await
        .expect("runtime");
    let (a, b) = tokio::join!(
        runtime.execute_calls(fetches(&server, 1, "/slow"), ExecuteOptions::default()),
        runtime.execute_calls(fetches(&server, 1, "/slow"), ExecuteOptions::default()),
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(server.hits(), 1);
    assert_eq!(a.result.results[0].output, b.result.results[0].output);
    assert_ne!(a.result.results[0].cached, b.result.results[0].cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_call_runs_and_a_redis_backend_needs_its_url() {
    let server = CountingServer::start(Duration::ZERO);
    let runtime = Runtime::start(&config(CacheBackendKind::Memory, false))
        .await
        .expect("runtime");
    assert!(runtime.cache().is_none());
    let run = runtime
        .execute_calls(fetches(&server, 3, "/x"), ExecuteOptions::default())
        .await
        .expect("runs");
    assert!(run.result.results.iter().all(|r| !r.cached));
    assert_eq!(server.hits(), 3);

    let err = Runtime::start(&config(CacheBackendKind::Redis, true))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("redis_url"), "{err}");
}
