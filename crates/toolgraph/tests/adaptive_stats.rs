//! With adaptive concurrency on, each recorded execution stores the limits in force when it
//! ended, and the store's statistics (what `toolgraph stats` prints) show the latest per key
//! — in a real SQLite file and in the memory store alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use toolgraph::{ExecuteOptions, Runtime};
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_store::{ExecutionStore, MemoryStore};
use toolgraph_test_support::{Probe, ScriptedTool};

fn runtime(store: Arc<dyn ExecutionStore>, adaptive: bool) -> Runtime {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    let mut config = ParallelExecutorConfig::default();
    config.adaptive.enabled = adaptive;
    let executor = ParallelExecutor::new(tools, config).expect("config");
    Runtime::new(executor, Some(store))
}

fn live(runtime: &Runtime) -> BTreeMap<String, usize> {
    runtime
        .executor()
        .throttle()
        .map(|t| t.limits().into_iter().map(|l| (l.key, l.limit)).collect())
        .unwrap_or_default()
}

async fn check(store: Arc<dyn ExecutionStore>) {
    let calls = || {
        (0..6)
            .map(|i| ToolCall::new(format!("c{i}"), "t", json!({ "i": i })))
            .collect::<Vec<_>>()
    };
    let off = runtime(store.clone(), false);
    off.execute_calls(calls(), ExecuteOptions::default())
        .await
        .expect("runs");
    let stats = store.performance_stats(0, None).await.expect("stats");
    assert!(
        stats.adaptive_limits.is_empty(),
        "nothing recorded when off"
    );

    let on = runtime(store.clone(), true);
    for _ in 0..2 {
        let execution = on
            .execute_calls(calls(), ExecuteOptions::default())
            .await
            .expect("runs");
        assert!(execution.recording_error.is_none());
        let stats = store.performance_stats(0, None).await.expect("stats");
        let now = live(&on);
        assert!(now.contains_key("tool:t"), "{now:?}");
        assert_eq!(stats.adaptive_limits, now, "the latest execution's limits");
    }
}

#[tokio::test]
async fn stats_show_the_adaptive_limits_the_latest_execution_ended_with_in_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("toolgraph.db").display());
    let store = toolgraph_store::open(&url).await.expect("sqlite");
    check(store).await;
}

#[tokio::test]
async fn stats_show_the_adaptive_limits_the_latest_execution_ended_with_in_memory() {
    check(Arc::new(MemoryStore::new())).await;
}
