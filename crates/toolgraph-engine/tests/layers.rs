//! A layer added to an executor sees each call once, after admission, and can carry it out
//! itself (here: answer from a table, as a cache would) or hand it on; the standard layers
//! still apply below it. A layer that runs calls elsewhere reports the worker and its
//! attempts through the call's meter, and they reach the results and the events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use toolgraph_core::{
    CallError, CallOutcome, CallStatus, ErrorKind, Event, EventSink, ParallelExecutorConfig,
    ToolCall, ToolSet, ToolSpec,
};
use toolgraph_engine::ParallelExecutor;
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Failure, Layer};
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

/// Plays a remote-dispatch layer, as its arguments say: `worker` names the worker that
/// "ran" the call, `attempts` the attempts it made there, `lost` fails the call as a worker
/// that died while running it would. Otherwise the call runs here, beneath it.
struct Remote;
struct RemoteService(Arc<dyn CallService>);

impl Layer for Remote {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(RemoteService(inner))
    }
}

impl CallService for RemoteService {
    fn call(&self, request: CallRequest) -> CallFuture {
        let meter = request.meter.clone();
        let worker = request.args.get("worker").and_then(Value::as_str);
        if let Some(worker) = worker {
            meter.set_worker(worker);
        }
        if request.args.get("lost").is_some() {
            meter.begin_attempt();
            return Box::pin(async move {
                Err(Failure::Call(CallError {
                    kind: ErrorKind::Interrupted,
                    message: "the worker stopped while the call ran".into(),
                }))
            });
        }
        let attempts = request.args.get("attempts").and_then(Value::as_u64);
        let work = self.0.call(request);
        Box::pin(async move {
            let out = work.await;
            if let Some(n) = attempts {
                meter.note_attempts(u32::try_from(n).unwrap_or(u32::MAX));
            }
            out
        })
    }
}

/// Each call's finished event and recorded outcome, by what they say of the worker.
#[derive(Default)]
struct Workers {
    events: Mutex<Vec<(usize, CallStatus, Option<String>)>>,
    outcomes: Mutex<Vec<(usize, Option<String>)>>,
}

impl EventSink for Workers {
    fn on_event(&self, event: &Event) {
        if let Event::CallFinished {
            position,
            status,
            worker,
            ..
        } = event
            && let Ok(mut v) = self.events.lock()
        {
            v.push((*position, *status, worker.clone()));
        }
    }

    fn on_outcome(&self, position: usize, outcome: &CallOutcome<'_>) {
        if let Ok(mut v) = self.outcomes.lock() {
            v.push((position, outcome.worker.map(str::to_owned)));
        }
    }
}

fn remote_executor(sink: Arc<Workers>) -> ParallelExecutor {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .layer(Arc::new(Remote))
        .with_sink(sink)
}

#[tokio::test(start_paused = true)]
async fn a_call_a_worker_lost_is_interrupted_and_names_the_worker() {
    let sink = Arc::new(Workers::default());
    let r = remote_executor(sink.clone())
        .execute_parallel(vec![
            ToolCall::new("lost", "t", json!({"worker": "w-9", "lost": true})),
            ToolCall::new("after", "t", json!({"x": "${lost}"})),
        ])
        .await
        .expect("valid");
    let lost = &r.results[0];
    assert_eq!(lost.status, CallStatus::Interrupted);
    assert_eq!(
        lost.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Interrupted)
    );
    assert_eq!(lost.worker.as_deref(), Some("w-9"));
    assert_eq!(lost.attempts, 1);
    assert_eq!(r.results[1].status, CallStatus::Skipped, "its dependant");
    assert_eq!(r.results[1].worker, None, "a skipped call ran nowhere");
    assert_eq!(r.metadata.status_counts.interrupted, 1);
    let events = sink.events.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        events.contains(&(0, CallStatus::Interrupted, Some("w-9".into()))),
        "{events:?}"
    );
    let outcomes = sink.outcomes.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(outcomes.contains(&(0, Some("w-9".into()))), "{outcomes:?}");
    assert!(outcomes.contains(&(1, None)), "{outcomes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_call_run_by_a_worker_reports_the_worker_and_its_attempts() {
    let sink = Arc::new(Workers::default());
    let r = remote_executor(sink.clone())
        .execute_parallel(vec![
            ToolCall::new(
                "remote",
                "t",
                json!({"ms": 10, "worker": "w-1", "attempts": 3}),
            ),
            ToolCall::new("local", "t", json!({"ms": 10})),
        ])
        .await
        .expect("valid");
    let remote = &r.results[0];
    assert_eq!(remote.status, CallStatus::Ok);
    assert_eq!(remote.worker.as_deref(), Some("w-1"));
    assert_eq!(remote.attempts, 3);
    assert_eq!(r.results[1].worker, None, "ran in this process");
    assert_eq!(r.results[1].attempts, 1);
    let events = sink.events.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        events.contains(&(0, CallStatus::Ok, Some("w-1".into()))),
        "{events:?}"
    );
    assert!(events.contains(&(1, CallStatus::Ok, None)), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_the_rest_when_a_worker_loses_a_call() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    let config = ParallelExecutorConfig {
        fail_fast: true,
        ..ParallelExecutorConfig::default()
    };
    let r = ParallelExecutor::new(tools, config)
        .expect("config")
        .layer(Arc::new(Remote))
        .execute_parallel(vec![
            ToolCall::new("lost", "t", json!({"lost": true})),
            ToolCall::new("slow", "t", json!({"ms": 1000})),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Interrupted);
    assert_eq!(r.results[1].status, CallStatus::Cancelled);
}
