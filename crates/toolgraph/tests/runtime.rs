//! The runtime owns recording: an execution is written ahead and finished from what was
//! stored, a chat's batches are recorded ahead with their real plan, resume classifies what
//! a crash left, and every clone shares one set of limits. A store that fails mid-run
//! never stops the run: the failure is reported, and the record completed when it can be.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::json;
use toolgraph::{ExecuteOptions, Runtime, RuntimeError, classify_resume};
use toolgraph_core::{
    CallOutcome, CallStatus, Event, EventSink, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec,
};
use toolgraph_engine::{ParallelExecutor, PerformanceStats, Plan, Preset};
use toolgraph_store::{
    ExecutionRecorder, ExecutionStore, ExecutionSummary, MemoryStore, ResumePoint, StoreError,
    StoreOptions, StoredExecution,
};
use toolgraph_test_support::{Gate, Probe, ScriptedTool};

fn tools(probe: &Arc<Probe>) -> (ToolSet, Arc<tokio::sync::Semaphore>) {
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", probe)).expect("t");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("read").idempotent(),
            probe,
        ))
        .expect("read");
    let (gate, permits) = Gate::new("gate", probe);
    tools.register(gate).expect("gate");
    (tools, permits)
}

fn runtime(
    config: ParallelExecutorConfig,
) -> (
    Runtime,
    Arc<MemoryStore>,
    Arc<Probe>,
    Arc<tokio::sync::Semaphore>,
) {
    let probe = Probe::new();
    let (tools, permits) = tools(&probe);
    let store = Arc::new(MemoryStore::new());
    let executor = ParallelExecutor::new(tools, config).expect("config");
    let runtime = Runtime::new(executor, Some(store.clone() as Arc<dyn ExecutionStore>));
    (runtime, store, probe, permits)
}

#[tokio::test]
async fn an_execution_is_written_ahead_and_finished_from_the_store() {
    let (runtime, store, _probe, permits) = runtime(ParallelExecutorConfig::default());
    let calls = vec![
        ToolCall::new("a", "t", json!({"x": 1})),
        ToolCall::new("g", "gate", json!({})),
        ToolCall::new("b", "t", json!({"in": "${a}"})),
    ];
    let running = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .execute_calls(calls, ExecuteOptions::default())
                .await
        }
    });
    // While the gated call is held, the execution is already on record, the gated call
    // durably running (its tool is not idempotent: written ahead).
    let id = loop {
        let history = store.history(10).await.expect("history");
        if let Some(h) = history.first() {
            let stored = store.load(&h.id).await.expect("load");
            if stored.states[1] == "running" {
                break h.id.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    permits.add_permits(1);
    let execution = running.await.expect("joined").expect("ran");
    assert_eq!(execution.id.as_deref(), Some(id.as_str()));
    assert_eq!(
        execution.result.metadata.execution_id.as_deref(),
        Some(id.as_str())
    );
    assert!(execution.recording_error.is_none());
    let stored = store.load(&id).await.expect("load");
    assert_eq!(stored.summary.status, "finished");
    assert_eq!(stored.states, ["ok", "ok", "ok"]);
    assert_eq!(stored.edges.len(), 1, "the reference a → b is on record");
}

#[tokio::test]
async fn a_chats_batches_are_recorded_ahead_with_their_real_plan() {
    let (runtime, store, _probe, permits) = runtime(ParallelExecutorConfig::default());
    let session = Runtime::new_session_id();
    let runner = runtime.batch_runner(Some(session));
    let turn = vec![
        ToolCall::new("c1", "read", json!({"k": 1})).priority(3),
        ToolCall::new("c2", "gate", json!({}))
            .depends_on(["c1"])
            .timeout_ms(9_000),
    ];
    let running = tokio::spawn(runner.run_batch(turn, Default::default()));
    // Held at the gate: the turn is already recorded, its plan intact.
    let stored = loop {
        if let Some(h) = store.history(1).await.expect("history").first() {
            let stored = store.load(&h.id).await.expect("load");
            if stored.states[1] == "running" {
                break stored;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(stored.calls[0].priority, 3);
    assert_eq!(stored.calls[1].depends_on, ["c1"]);
    assert_eq!(stored.calls[1].timeout_ms, Some(9_000));
    assert_eq!(stored.edges.len(), 1);
    permits.add_permits(1);
    let result = running.await.expect("joined").expect("valid");
    assert!(result.success);
    assert!(result.metadata.execution_id.is_some());
    assert!(result.metadata.recording_error.is_none());
}

#[tokio::test]
async fn without_a_store_executions_run_unrecorded() {
    let probe = Probe::new();
    let (tools, _) = tools(&probe);
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let runtime = Runtime::new(executor, None);
    let execution = runtime
        .execute_calls(
            vec![ToolCall::new("a", "t", json!({}))],
            ExecuteOptions::default(),
        )
        .await
        .expect("ran");
    assert!(execution.result.success);
    assert!(execution.id.is_none());
    assert!(execution.result.metadata.execution_id.is_none());
    assert!(matches!(
        runtime.resume("x", ExecuteOptions::default()).await,
        Err(RuntimeError::NoStore)
    ));
}

#[test]
fn resume_keeps_ended_calls_reruns_idempotent_ones_and_interrupts_the_rest() {
    let probe = Probe::new();
    let (tools, _) = tools(&probe);
    let kept = Preset {
        status: CallStatus::Ok,
        output: Some(std::sync::Arc::new(json!(1))),
        error: None,
        attempts: 1,
    };
    let point = ResumePoint {
        calls: vec![
            ToolCall::new("done", "t", json!({})),
            ToolCall::new("read", "read", json!({})),
            ToolCall::new("write", "t", json!({})),
            ToolCall::new("later", "t", json!({})),
        ],
        config: ParallelExecutorConfig::default(),
        states: vec![
            "ok".into(),
            "running".into(),
            "running".into(),
            "pending".into(),
        ],
        ended: vec![Some(kept.clone()), None, None, None],
        created_at: 0,
    };
    let (preset, counts) = classify_resume(&point, &tools);
    assert_eq!((counts.kept, counts.rerun, counts.interrupted), (1, 1, 1));
    assert_eq!(preset[0], Some(kept));
    assert_eq!(preset[1], None, "idempotent: run again");
    assert_eq!(
        preset[2].as_ref().map(|p| p.status),
        Some(CallStatus::Interrupted),
        "may have acted: not run twice"
    );
    assert_eq!(preset[3], None, "never started: runs");
}

#[tokio::test]
async fn a_resumed_execution_is_finished_with_its_counts() {
    let (runtime, store, probe, permits) = runtime(ParallelExecutorConfig::default());
    // A crash: the recorded execution's gated call never ends.
    let calls = vec![
        ToolCall::new("a", "t", json!({})),
        ToolCall::new("g", "gate", json!({})),
        ToolCall::new("r", "read", json!({"after": "${g}"})),
    ];
    let crashed = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .execute_calls(calls, ExecuteOptions::default())
                .await
        }
    });
    let id = loop {
        if let Some(h) = store.history(1).await.expect("history").first() {
            let stored = store.load(&h.id).await.expect("load");
            if stored.states[1] == "running" && stored.states[0] == "ok" {
                break h.id.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    crashed.abort();
    let _ = crashed.await;
    drop(permits);
    let resumed = runtime
        .resume(&id, ExecuteOptions::default())
        .await
        .expect("resumed");
    assert_eq!(
        (
            resumed.counts.kept,
            resumed.counts.rerun,
            resumed.counts.interrupted
        ),
        (1, 0, 1)
    );
    assert_eq!(resumed.stored.states, ["ok", "interrupted", "skipped"]);
    let meta = &resumed.stored.result.metadata;
    assert_eq!(meta.execution_id.as_deref(), Some(id.as_str()));
    assert_eq!(meta.resume.map(|r| r.interrupted), Some(1));
    assert_eq!(
        probe.invocations(),
        2,
        "the interrupted call was not run again"
    );
    assert!(matches!(
        runtime.resume(&id, ExecuteOptions::default()).await,
        Err(RuntimeError::NothingToResume(_))
    ));
}

#[tokio::test]
async fn clones_of_a_runtime_share_one_limit() {
    let (runtime, _store, probe, _) = runtime(ParallelExecutorConfig {
        max_parallel_calls: 2,
        ..ParallelExecutorConfig::default()
    });
    let batch = |k: usize| -> Vec<ToolCall> {
        (0..4)
            .map(|j| ToolCall::new(format!("c{k}_{j}"), "read", json!({"ms": 20})))
            .collect()
    };
    let runs = (0..3).map(|k| {
        let runtime = runtime.clone();
        let calls = batch(k);
        async move {
            runtime
                .execute_calls(calls, ExecuteOptions::default())
                .await
        }
    });
    for r in futures_util::future::join_all(runs).await {
        assert!(r.expect("ran").result.success);
    }
    assert_eq!(probe.peak(), 2);
    assert_eq!(runtime.executor().limiter().peaks().global, 2);
}

#[tokio::test]
async fn an_output_is_shared_with_the_store_not_copied() {
    let (runtime, store, _probe, _permits) = runtime(ParallelExecutorConfig::default());
    let big: Vec<u32> = (0..10_000).collect();
    let calls = vec![ToolCall::new("a", "t", json!({ "big": big }))];
    let execution = runtime
        .execute_calls(calls, ExecuteOptions::default())
        .await
        .expect("ran");
    let id = execution.id.expect("recorded");
    let stored = store.load(&id).await.expect("load");
    let ran = execution.result.results[0].output.as_ref().expect("output");
    let kept = stored.result.results[0].output.as_ref().expect("output");
    assert_eq!(ran, kept);
    assert!(
        Arc::ptr_eq(ran, kept),
        "the result and the in-memory store hold one output, not two copies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_for_good_mid_run_is_reported_and_the_run_finishes_in_bounded_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("toolgraph.db").display());
    let options = StoreOptions {
        durable_timeout_ms: 500,
        write_timeout_ms: 500,
        write_retries: 1,
        ..StoreOptions::default()
    };
    let store = toolgraph_store::open_with(&url, options)
        .await
        .expect("sqlite");
    let probe = Probe::new();
    let (tools, permits) = tools(&probe);
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let runtime = Runtime::new(executor, Some(store.clone()));
    // `g2` must not run twice: its start comes after the record is gone.
    let calls = vec![
        ToolCall::new("g", "gate", json!({})),
        ToolCall::new("b", "t", json!({"ms": 200})).depends_on(["g"]),
        ToolCall::new("g2", "gate", json!({})).depends_on(["b"]),
    ];
    let running = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .execute_calls(calls, ExecuteOptions::default())
                .await
        }
    });
    loop {
        if let Some(h) = store.history(1).await.expect("history").first()
            && store.load(&h.id).await.expect("load").states[0] == "running"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The record goes while the execution runs (as a disk that fills up, a lock held by
    // another process, or a server that dies take the rest of it).
    // A negative lease timeout counts every lease stale: even this live run's record goes.
    let everything = toolgraph_store::PruneRequest {
        created_before_ms: i64::MAX / 2,
        ids: None,
        include_unfinished: true,
        lease_timeout_ms: -1,
        dry_run: false,
    };
    assert_eq!(
        store
            .prune(&everything)
            .await
            .expect("pruned")
            .deleted
            .len(),
        1
    );
    let from = Instant::now();
    permits.add_permits(2);
    let execution = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run finishes although the store failed")
        .expect("joined")
        .expect("ran");
    assert!(
        from.elapsed() < Duration::from_secs(10),
        "{:?}",
        from.elapsed()
    );
    assert!(execution.result.success, "{:?}", execution.result.errors);
    assert_eq!(probe.invocations(), 3, "every call ran");
    let error = execution.recording_error.expect("the failure is reported");
    assert!(error.contains("stopped"), "{error}");
    assert!(error.contains("the stored record is incomplete"), "{error}");
    assert_eq!(
        execution.result.metadata.recording_error.as_deref(),
        Some(error.as_str())
    );
    assert!(execution.id.is_some());
}

#[tokio::test]
async fn a_recording_that_stopped_is_completed_from_the_results_after_the_run() {
    let probe = Probe::new();
    let (tools, _permits) = tools(&probe);
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let store = Arc::new(FlakyStore::default());
    let runtime = Runtime::new(executor, Some(store.clone() as Arc<dyn ExecutionStore>));
    let calls: Vec<ToolCall> = (0..5)
        .map(|i| ToolCall::new(format!("c{i}"), "t", json!({"v": i})))
        .collect();
    let execution = runtime
        .execute_calls(calls, ExecuteOptions::default())
        .await
        .expect("ran");
    let error = execution.recording_error.expect("reported");
    assert!(
        error.contains("the record was completed from the results"),
        "{error}"
    );
    let id = execution.id.expect("recorded");
    let stored = store.load(&id).await.expect("load");
    assert_eq!(stored.summary.status, "finished");
    assert_eq!(stored.states, ["ok"; 5], "complete after all");
    for (s, r) in stored.result.results.iter().zip(&execution.result.results) {
        assert_eq!(s.output, r.output);
    }
}

/// A memory store whose first recorder records two rows and then stops, as the SQL
/// recorder does when its store fails for good; the store is fine again afterwards.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    failed: AtomicBool,
}

/// The first recorder of a [`FlakyStore`].
struct Stopping {
    inner: Arc<dyn ExecutionRecorder>,
    id: String,
    rows: AtomicU64,
}

impl Stopping {
    fn admit(&self) -> bool {
        self.rows.fetch_add(1, Ordering::SeqCst) < 2
    }
}

impl EventSink for Stopping {
    fn on_event(&self, event: &Event) {
        self.inner.on_event(event);
    }

    fn before_start(&self, position: usize, idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        if self.admit() {
            return self.inner.before_start(position, idempotent);
        }
        None
    }

    fn on_outcome(&self, position: usize, outcome: &CallOutcome<'_>) {
        if self.admit() {
            self.inner.on_outcome(position, outcome);
        }
    }
}

impl ExecutionRecorder for Stopping {
    fn as_sink(&self) -> &dyn EventSink {
        self
    }

    fn close(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let written = self.inner.close().await?;
            Err(StoreError::RecordingStopped {
                id: self.id.clone(),
                written,
                cause: "database or disk is full".into(),
            })
        })
    }
}

impl ExecutionStore for FlakyStore {
    fn describe(&self) -> String {
        "flaky memory".into()
    }

    fn begin_execution<'a>(
        &'a self,
        plan: &'a Plan,
        config: &'a ParallelExecutorConfig,
        session: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        self.inner.begin_execution(plan, config, session)
    }

    fn recorder(
        &self,
        id: &str,
        calls: usize,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> Arc<dyn ExecutionRecorder> {
        let inner = self.inner.recorder(id, calls, skip, offset_ms);
        if self.failed.swap(true, Ordering::SeqCst) {
            return inner;
        }
        Arc::new(Stopping {
            inner,
            id: id.to_owned(),
            rows: AtomicU64::new(0),
        })
    }

    fn finish_execution<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        self.inner.finish_execution(id)
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        self.inner.load(id)
    }

    fn history(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>> {
        self.inner.history(limit)
    }

    fn performance_stats<'a>(
        &'a self,
        since_ms: i64,
        tool: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>> {
        self.inner.performance_stats(since_ms, tool)
    }

    fn resume_point<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>> {
        self.inner.resume_point(id)
    }

    fn mark_resumed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.mark_resumed(id)
    }

    fn mark_cancelled<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.mark_cancelled(id)
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        stale_ms: i64,
        dead: Option<&'a str>,
    ) -> BoxFuture<'a, Result<toolgraph_store::Claim, StoreError>> {
        self.inner.claim(id, owner, stale_ms, dead)
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.heartbeat(id, owner)
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, owner)
    }

    fn executions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ExecutionSummary>, StoreError>> {
        self.inner.executions_by_prefix(prefix, limit)
    }

    fn prune<'a>(
        &'a self,
        request: &'a toolgraph_store::PruneRequest,
    ) -> BoxFuture<'a, Result<toolgraph_store::Pruned, StoreError>> {
        self.inner.prune(request)
    }

    fn row_counts<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, StoreError>> {
        self.inner.row_counts(id)
    }
}

#[tokio::test]
async fn an_execution_is_run_by_one_process_at_a_time() {
    let (runtime, store, probe, permits) = runtime(ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..Default::default()
    });
    let other = || {
        Runtime::new(
            runtime.executor().clone(),
            Some(store.clone() as Arc<dyn ExecutionStore>),
        )
        .with_lease_timeout(Duration::from_millis(300))
    };
    // `a` ends, the gate holds `g` (not idempotent) running, `w` (not idempotent) waits.
    let calls = vec![
        ToolCall::new("a", "t", json!({})),
        ToolCall::new("g", "gate", json!({})),
        ToolCall::new("w", "t", json!({})),
    ];
    let live = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .execute_calls(calls, ExecuteOptions::default())
                .await
        }
    });
    let id = loop {
        if let Some(h) = store.history(1).await.expect("history").first()
            && store.load(&h.id).await.expect("load").states[1] == "running"
        {
            break h.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // While its owner lives, another process may not resume it.
    match other().resume(&id, ExecuteOptions::default()).await {
        Err(RuntimeError::Owned { owner, .. }) => assert_eq!(owner, runtime.owner()),
        other => panic!(
            "a live execution was resumed: {:?}",
            other.map(|r| r.counts)
        ),
    }
    let summary = &store.history(1).await.expect("history")[0];
    assert_eq!(summary.owner.as_deref(), Some(runtime.owner()));
    assert!(!summary.is_abandoned(toolgraph_store::now_ms(), 10_000));

    // The owner crashes; once its heartbeat is stale, two processes race to resume: one
    // runs the rest, the other is refused, and no call runs twice.
    live.abort();
    let _ = live.await;
    drop(permits);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (one, two) = (other(), other());
    let (r1, r2) = tokio::join!(
        one.resume(&id, ExecuteOptions::default()),
        two.resume(&id, ExecuteOptions::default())
    );
    let (won, lost) = match (r1, r2) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        (a, b) => panic!(
            "exactly one resume must run: {:?} / {:?}",
            a.map(|r| r.counts),
            b.map(|r| r.counts)
        ),
    };
    assert!(
        matches!(
            lost,
            RuntimeError::Owned { .. } | RuntimeError::NothingToResume(_)
        ),
        "{lost}"
    );
    assert_eq!(won.stored.states, ["ok", "interrupted", "ok"]);
    assert_eq!(
        probe.invocations(),
        3,
        "a, g and w each ran once: g was interrupted, w ran by one resumer"
    );
    let summary = &store.history(1).await.expect("history")[0];
    assert_eq!(
        summary.owner, None,
        "the lease is released when the run ends"
    );
}

/// Keeps what an execution's own sink sees.
#[derive(Default)]
struct OwnSink {
    seen: std::sync::Mutex<Vec<String>>,
}

impl EventSink for OwnSink {
    fn on_event(&self, event: &Event) {
        let line = match event {
            Event::CallStarted { position } => format!("started {position}"),
            Event::ExecutionFinished { success } => format!("finished {success}"),
            _ => return,
        };
        self.seen.lock().expect("seen").push(line);
    }

    fn on_plan(&self, calls: &[&ToolCall]) {
        self.seen
            .lock()
            .expect("seen")
            .push(format!("plan {}", calls.len()));
    }

    fn on_outcome(&self, position: usize, outcome: &CallOutcome<'_>) {
        self.seen
            .lock()
            .expect("seen")
            .push(format!("outcome {position} {}", outcome.status.as_str()));
    }
}

#[tokio::test]
async fn an_executions_own_sink_sees_it_and_on_begin_names_it_before_any_call_runs() {
    let (runtime, store, probe, _permits) = runtime(ParallelExecutorConfig::default());
    let sink = Arc::new(OwnSink::default());
    let begun = Arc::new(std::sync::Mutex::new(Vec::<(String, usize)>::new()));
    let on_begin: toolgraph::OnBegin = {
        let begun = begun.clone();
        let probe = probe.clone();
        Arc::new(move |id: &str| {
            begun
                .lock()
                .expect("begun")
                .push((id.to_owned(), probe.invocations()))
        })
    };
    let options = ExecuteOptions {
        sink: Some(sink.clone()),
        on_begin: Some(on_begin),
        ..ExecuteOptions::default()
    };
    let execution = runtime
        .execute_calls(
            vec![
                ToolCall::new("a", "t", json!({})),
                ToolCall::new("b", "t", json!({"fail": "no"})),
            ],
            options,
        )
        .await
        .expect("ran");
    let id = execution.id.expect("recorded");
    assert_eq!(*begun.lock().expect("begun"), [(id.clone(), 0)]);
    let mut seen = sink.seen.lock().expect("seen").clone();
    assert_eq!(seen.remove(0), "plan 2");
    assert_eq!(seen.pop().as_deref(), Some("finished false"));
    seen.sort();
    assert_eq!(
        seen,
        ["outcome 0 ok", "outcome 1 error", "started 0", "started 1"]
    );
    // The recorder saw the same execution (the own sink is beside it, not instead).
    assert_eq!(
        store.load(&id).await.expect("stored").states,
        ["ok", "error"]
    );

    // Unrecorded: the sink still sees everything, on_begin is not called.
    let sink = Arc::new(OwnSink::default());
    let called = Arc::new(AtomicBool::new(false));
    let options = ExecuteOptions {
        sink: Some(sink.clone()),
        on_begin: Some({
            let called = called.clone();
            Arc::new(move |_: &str| called.store(true, Ordering::SeqCst))
        }),
        ..ExecuteOptions::default()
    };
    runtime
        .with_store(None)
        .execute_calls(vec![ToolCall::new("a", "t", json!({}))], options)
        .await
        .expect("ran");
    assert!(!called.load(Ordering::SeqCst));
    assert!(
        sink.seen
            .lock()
            .expect("seen")
            .contains(&"outcome 0 ok".to_owned())
    );
}
