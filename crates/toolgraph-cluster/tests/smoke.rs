//! In-process: a coordinator and a worker on the real NATS server.
#![allow(missing_docs)]

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use toolgraph_cluster::{ClusterOptions, Namespace, RemoteLayer, Worker, WorkerOptions};
use toolgraph_core::{ParallelExecutorConfig, parse_tool_calls};
use toolgraph_engine::ParallelExecutor;

fn nats() -> Option<String> {
    match std::env::var("TOOLGRAPH_TEST_NATS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            toolgraph_test_support::skip("TOOLGRAPH_TEST_NATS_URL is not set");
            None
        }
    }
}

fn options(url: &str) -> ClusterOptions {
    let mut o = ClusterOptions::new(url);
    o.namespace = Namespace::new(&format!("t{}", uuid::Uuid::new_v4().simple())).expect("ns");
    o.no_worker_wait = Duration::from_secs(2);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_on_a_worker() {
    let Some(url) = nats() else { return };
    let options = options(&url);
    let worker = Worker::start(
        WorkerOptions::new(options.clone()),
        toolgraph_tools::builtins(),
    )
    .await
    .expect("worker");
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let layer = RemoteLayer::connect(&options).await.expect("coordinator");
    let executor = ParallelExecutor::new(
        toolgraph_tools::builtins(),
        ParallelExecutorConfig::default(),
    )
    .expect("executor")
    .layer(std::sync::Arc::new(layer));
    let calls = parse_tool_calls(&json!([
        {"id": "a", "name": "echo", "arguments": {"x": 1}},
        {"id": "b", "name": "sleep", "arguments": {"ms": 50}},
        {"id": "c", "name": "echo", "arguments": {"from": "${a.x}"}},
        {"id": "d", "name": "fail", "arguments": {"message": "no"}}
    ]))
    .expect("calls");
    let result = executor.execute_parallel(calls).await.expect("run");
    for r in &result.results {
        eprintln!("{} {:?} {:?} {:?}", r.id, r.status, r.output, r.error);
    }
    assert_eq!(
        result.results[2].output.as_deref(),
        Some(&json!({"from": 1}))
    );
    stop.cancel();
    let summary = running.await.expect("join").expect("worker");
    assert!(summary.completed >= 4, "{summary:?}");
    toolgraph_cluster::delete_namespace(&options)
        .await
        .expect("the namespace is deleted");
}
