//! The recorder under pressure: a full disk, and a full queue. SQLite's `max_page_count`,
//! set on every pooled connection, stands in for a full disk (the database cannot grow:
//! `database or disk is full`); these tests are here, not in `tests/`, because only this
//! crate reaches the pool and the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{AssertSqlSafe, Row as _};
use toolgraph_core::{
    CallOutcome, CallStatus, EventSink, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec,
};
use toolgraph_engine::{ParallelExecutor, RunOptions};
use toolgraph_test_support::{Probe, ScriptedTool};

use super::Recorder;
use crate::{ExecutionRecorder, ExecutionStore, Store, StoreError, StoreOptions};

fn quick() -> StoreOptions {
    StoreOptions {
        durable_timeout_ms: 1_000,
        write_timeout_ms: 1_000,
        write_retries: 1,
        ..StoreOptions::default()
    }
}

/// Caps the database at its current size on every connection of the pool.
async fn fill_the_disk(store: &Store) {
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(store.pool().acquire().await.expect("a connection"));
    }
    for conn in &mut conns {
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&mut **conn)
            .await
            .and_then(|r| r.try_get(0))
            .expect("page count");
        sqlx::query(AssertSqlSafe(format!("PRAGMA max_page_count = {pages}")))
            .execute(&mut **conn)
            .await
            .expect("capped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_recording_stops_and_the_run_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("full.db").display());
    let store = Store::open_with(&url, quick()).await.expect("store");
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            &probe,
        ))
        .expect("t");
    // Not idempotent: its start must be durable before it runs.
    tools
        .register(ScriptedTool::new("write", &probe))
        .expect("write");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    // Outputs that need new pages, then a call that starts once writing failed.
    let pad = "x".repeat(4_000);
    let mut calls: Vec<ToolCall> = (0..20)
        .map(|i| ToolCall::new(format!("a{i}"), "t", json!({"pad": pad})))
        .collect();
    calls.push(
        ToolCall::new("slow", "t", json!({"ms": 300}))
            .depends_on((0..20).map(|i| format!("a{i}")).collect::<Vec<_>>()),
    );
    calls.push(ToolCall::new("w", "write", json!({})).depends_on(["slow"]));
    calls.push(ToolCall::new("w2", "write", json!({})).depends_on(["w"]));
    let plan = executor.plan(calls).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    fill_the_disk(&store).await;
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let started = Instant::now();
    let run = executor.execute_plan_with(
        &plan,
        RunOptions {
            sink: Some(recorder.as_sink()),
            ..Default::default()
        },
    );
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the run finishes although the disk is full");
    let closed = recorder.close().await;
    let took = started.elapsed();
    assert!(result.success, "{:?}", result.errors);
    assert_eq!(probe.invocations(), 23, "every call ran");
    match closed {
        Err(StoreError::RecordingStopped {
            id: stopped, cause, ..
        }) => {
            assert_eq!(stopped, id);
            assert!(cause.contains("full"), "{cause}");
        }
        other => panic!("expected RecordingStopped, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let stored = store.load(&id).await.expect("still readable");
    assert_eq!(
        stored.summary.status, "running",
        "the record stops where it failed"
    );
}

/// A store whose recorders queue at most `queue_rows` rows, and an execution of `calls`
/// calls of an idempotent `t` and a not idempotent `write` (every seventh call).
async fn small_queue(
    dir: &tempfile::TempDir,
    queue_rows: usize,
    calls: usize,
) -> (Store, ParallelExecutor, toolgraph_engine::Plan, String) {
    let url = format!("sqlite://{}", dir.path().join("small.db").display());
    let options = StoreOptions {
        queue_rows,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&url, options).await.expect("store");
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            &probe,
        ))
        .expect("t");
    tools
        .register(ScriptedTool::new("write", &probe))
        .expect("write");
    let executor = ParallelExecutor::new(
        tools,
        ParallelExecutorConfig {
            max_parallel_calls: 64,
            ..Default::default()
        },
    )
    .expect("ok");
    let calls: Vec<ToolCall> = (0..calls)
        .map(|i| {
            let tool = if i % 7 == 0 { "write" } else { "t" };
            ToolCall::new(format!("c{i}"), tool, json!({}))
        })
        .collect();
    let plan = executor.plan(calls).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    (store, executor, plan, id)
}

fn ended() -> CallOutcome<'static> {
    CallOutcome {
        status: CallStatus::Ok,
        output: None,
        error: None,
        attempts: 1,
        queued_ms: 0.0,
        started_ms: Some(0.0),
        finished_ms: 1.0,
        worker: None,
        cached: false,
    }
}

// The current-thread runtime: the writer runs only when the test awaits.
#[tokio::test]
async fn a_start_waits_for_room_in_a_full_queue_without_holding_up_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _, _, id) = small_queue(&dir, 8, 6).await;
    let recorder = Recorder::start(store.clone(), id.clone(), 6, Vec::new(), 0.0);
    // Four starts take the eight places (a start and an end each).
    for position in 1..5 {
        assert!(recorder.before_start(position, true).is_none(), "room left");
    }
    let waiting = recorder
        .before_start(5, true)
        .expect("no room: the call gets a future to wait on");
    assert_eq!(recorder.shared.lock().rows.len(), 4);
    // Ends of started calls use the places their starts reserved.
    for position in 1..5 {
        recorder.on_outcome(position, &ended());
    }
    assert_eq!(
        recorder.shared.lock().rows.len(),
        8,
        "never more than the bound"
    );
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room is made as the writer takes rows");
    recorder.on_outcome(5, &ended());
    // A call that never started cannot wait: its end is queued all the same.
    recorder.on_outcome(0, &ended());
    assert_eq!(recorder.close().await.expect("recorded"), 11);
    let stored = store.load(&id).await.expect("load");
    assert!(
        stored.states.iter().all(|s| s == "ok"),
        "{:?}",
        stored.states
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_a_tiny_queue_records_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, executor, plan, id) = small_queue(&dir, 8, 400).await;
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let result = executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    assert!(result.success);
    assert_eq!(recorder.close().await.expect("recorded"), 800);
    let stored = store.load(&id).await.expect("load");
    assert!(stored.states.iter().all(|s| s == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_dropped_without_close_writes_what_is_queued_and_its_writer_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _, _, id) = small_queue(&dir, 64, 3).await;
    let recorder = Recorder::start(store.clone(), id.clone(), 3, Vec::new(), 0.0);
    assert!(recorder.before_start(1, true).is_none());
    let shared = recorder.shared.clone();
    drop(recorder);
    let deadline = Instant::now() + Duration::from_secs(5);
    // The writer holds the other reference until it stops.
    while Arc::strong_count(&shared) > 1 {
        assert!(Instant::now() < deadline, "the writer never stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = store.load(&id).await.expect("load");
    assert_eq!(stored.states[1], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_options_are_taken_as_they_come_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("extreme.db").display());
    let options = StoreOptions {
        connect_timeout_ms: u64::MAX,
        durable_timeout_ms: u64::MAX,
        write_timeout_ms: u64::MAX,
        write_retries: u32::MAX,
        queue_rows: usize::MAX,
    };
    let store = Store::open_with(&url, options).await.expect("store");
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::new("write", &probe))
        .expect("write");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let plan = executor
        .plan(vec![ToolCall::new("w", "write", json!({}))])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let result = executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    assert!(result.success);
    assert_eq!(recorder.close().await.expect("recorded"), 2);
}
