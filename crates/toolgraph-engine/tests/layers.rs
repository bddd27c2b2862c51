//! A layer added to an executor sees each call once, after admission, and can carry it out
//! itself (here: answer from a table, as a cache would) or hand it on; the standard layers
//! still apply below it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use toolgraph_core::{CallStatus, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Layer};
use toolgraph_test_support::{Probe, ScriptedTool};

/// Answers calls whose arguments it has seen; records the others' outputs.
#[derive(Default)]
struct Memo {
    table: Mutex<HashMap<String, Value>>,
    seen: AtomicUsize,
}

struct MemoLayer(Arc<Memo>);

struct MemoService {
    memo: Arc<Memo>,
    inner: Arc<dyn CallService>,
}

impl Layer for MemoLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(MemoService {
            memo: self.0.clone(),
            inner,
        })
    }
}

impl CallService for MemoService {
    fn call(&self, request: CallRequest) -> CallFuture {
        self.memo.seen.fetch_add(1, Ordering::SeqCst);
        let key = request.args.to_string();
        let hit = self
            .memo
            .table
            .lock()
            .ok()
            .and_then(|t| t.get(&key).cloned());
        if let Some(value) = hit {
            return Box::pin(async move { Ok(value) });
        }
        let memo = self.memo.clone();
        let work = self.inner.call(request);
        Box::pin(async move {
            let out = work.await?;
            if let Ok(mut t) = memo.table.lock() {
                t.insert(key, out.clone());
            }
            Ok(out)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_layer_can_carry_out_calls_without_the_tool() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            &probe,
        ))
        .expect("t");
    let memo = Arc::new(Memo::default());
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .layer(Arc::new(MemoLayer(memo.clone())));
    let batch = || vec![ToolCall::new("a", "t", json!({"ms": 10, "x": 1}))];
    let first = executor.execute_parallel(batch()).await.expect("valid");
    let second = executor.execute_parallel(batch()).await.expect("valid");
    assert_eq!(
        probe.invocations(),
        1,
        "the second call never reached the tool"
    );
    assert_eq!(
        memo.seen.load(Ordering::SeqCst),
        2,
        "the layer saw both calls"
    );
    assert_eq!(first.results[0].output, second.results[0].output);
    assert_eq!(second.results[0].duration_ms, 0.0, "answered at once");
}

#[tokio::test(start_paused = true)]
async fn the_standard_layers_still_apply_beneath_an_added_one() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            &probe,
        ))
        .expect("t");
    let memo = Arc::new(Memo::default());
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .layer(Arc::new(MemoLayer(memo.clone())));
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("slow", "t", json!({"ms": 500})).timeout_ms(50),
            ToolCall::new("flaky", "t", json!({"fail_times": 1})),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Timeout);
    assert_eq!(r.results[1].status, CallStatus::Ok);
    assert_eq!(r.results[1].attempts, 2, "retried beneath the added layer");
    assert_eq!(
        memo.seen.load(Ordering::SeqCst),
        2,
        "one visit per call, not per attempt"
    );
}

struct Buggy;
struct BuggyService(Arc<dyn CallService>);

impl Layer for Buggy {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(BuggyService(inner))
    }
}

impl CallService for BuggyService {
    fn call(&self, request: CallRequest) -> CallFuture {
        if request.args.get("boom").is_some() {
            panic!("layer bug");
        }
        self.0.call(request)
    }
}

#[tokio::test]
async fn a_panic_in_an_added_layer_fails_only_its_call() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .layer(Arc::new(Buggy));
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("bad", "t", json!({"boom": true})),
            ToolCall::new("good", "t", json!({})),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Error);
    let message = r.results[0].error.as_ref().map(|e| e.message.clone());
    assert_eq!(message.as_deref(), Some("tool panicked: layer bug"));
    assert_eq!(r.results[1].status, CallStatus::Ok);
}
