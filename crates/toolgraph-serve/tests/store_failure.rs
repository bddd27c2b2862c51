//! A store that fails answers 500 with its own text — before anything runs for a new
//! execution, and on every read — never a panic, never a half-run batch.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::json;
use toolgraph_core::ParallelExecutorConfig;
use toolgraph_engine::{PerformanceStats, Plan};
use toolgraph_store::{
    Claim, ExecutionRecorder, ExecutionStore, ExecutionSummary, MemoryStore, PruneRequest, Pruned,
    ResumePoint, StoreError, StoredExecution,
};

/// A store whose database is down: every call fails as a refused connection does.
struct DownStore {
    memory: MemoryStore,
}

fn down<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(async {
        Err(StoreError::Open {
            step: "connecting to",
            url: "postgres://db.example:5432/toolgraph".to_owned(),
            cause: "Connection refused (os error 111)".to_owned(),
        })
    })
}

impl ExecutionStore for DownStore {
    fn describe(&self) -> String {
        "postgres://db.example:5432/toolgraph".to_owned()
    }
    fn begin_execution<'a>(
        &'a self,
        _: &'a Plan,
        _: &'a ParallelExecutorConfig,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        down()
    }
    fn recorder(
        &self,
        id: &str,
        calls: usize,
        skip: Vec<bool>,
        offset: f64,
    ) -> Arc<dyn ExecutionRecorder> {
        self.memory.recorder(id, calls, skip, offset)
    }
    fn finish_execution<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        down()
    }
    fn load<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        down()
    }
    fn history(&self, _: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>> {
        down()
    }
    fn executions_by_prefix<'a>(
        &'a self,
        _: &'a str,
        _: usize,
    ) -> BoxFuture<'a, Result<Vec<ExecutionSummary>, StoreError>> {
        down()
    }
    fn performance_stats<'a>(
        &'a self,
        _: i64,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>> {
        down()
    }
    fn resume_point<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>> {
        down()
    }
    fn mark_resumed<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        down()
    }
    fn mark_cancelled<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        down()
    }
    fn claim<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: i64,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        down()
    }
    fn heartbeat<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        down()
    }
    fn release<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        down()
    }
    fn prune<'a>(&'a self, _: &'a PruneRequest) -> BoxFuture<'a, Result<Pruned, StoreError>> {
        down()
    }
    fn row_counts<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, StoreError>> {
        down()
    }
}

#[tokio::test]
async fn a_store_that_is_down_answers_500_with_its_text_and_nothing_runs() {
    let store: Arc<dyn ExecutionStore> = Arc::new(DownStore {
        memory: MemoryStore::new(),
    });
    let server = common::start_with_store(4, Some(store), tempfile::tempdir().expect("dir")).await;
    let expected = "connecting to postgres://db.example:5432/toolgraph: Connection refused";
    for wait in ["", "?wait=true"] {
        let (status, problem) = server
            .post(
                &format!("/v1/executions{wait}"),
                &json!([common::work("a", json!({}))]),
            )
            .await;
        assert_eq!(status, 500, "{problem}");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(expected), "{detail}");
    }
    assert_eq!(server.probe.invocations(), 0, "nothing ran");
    assert_eq!(server.state.live.running(), 0);
    for path in [
        "/v1/executions",
        "/v1/executions/abcdef12",
        "/v1/executions/abcdef12/events",
        "/v1/stats",
    ] {
        let (status, problem) = server.get(path).await;
        assert_eq!(status, 500, "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains(expected),
            "{path}: {problem}"
        );
    }
    // Unrecorded executions still run.
    let (status, result) = server
        .post(
            "/v1/executions?wait=true",
            &json!({"tool_calls": [common::work("a", json!({}))], "options": {"record": false}}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["success"], true);
}
