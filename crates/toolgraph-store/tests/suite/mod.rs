//! What every [`ExecutionStore`] must do, written once against the trait object: each
//! function is one behaviour, run by `tests/store.rs` on the memory store, SQLite and
//! PostgreSQL. Executions run through the real [`ParallelExecutor`] with scripted tools.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use toolgraph_core::{
    FnTool, ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolError, ToolSet, ToolSpec,
};
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Layer};
use toolgraph_engine::{ParallelExecutor, Plan, RunOptions};
use toolgraph_store::{ExecutionStore, PruneRequest, Pruned, StoreError, now_ms};
use toolgraph_test_support::{Gate, Probe, ScriptedTool, Step};

/// An idempotent scripted tool `t`, a second one `u`, and a gated (not idempotent) `gate`.
fn tools(probe: &Arc<Probe>) -> (ToolSet, Arc<tokio::sync::Semaphore>) {
    let mut set = ToolSet::new();
    set.register(ScriptedTool::with_spec(
        ToolSpec::new("t").idempotent(),
        probe,
    ))
    .expect("t");
    set.register(ScriptedTool::with_spec(
        ToolSpec::new("u").idempotent(),
        probe,
    ))
    .expect("u");
    let (gate, permits) = Gate::new("gate", probe);
    set.register(gate).expect("gate");
    (set, permits)
}

fn executor(probe: &Arc<Probe>) -> ParallelExecutor {
    ParallelExecutor::new(tools(probe).0, ParallelExecutorConfig::default()).expect("config")
}

/// Plans, records and runs `calls`, then finishes the execution.
async fn record(
    store: &dyn ExecutionStore,
    executor: &ParallelExecutor,
    calls: Vec<ToolCall>,
) -> (String, ParallelExecutionResult) {
    let plan = executor.plan(calls).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), Some("session-1"))
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
    recorder.close().await.expect("recorder drained");
    store.finish_execution(&id).await.expect("finish");
    (id, result)
}

/// Executions created before `cutoff_ms` that finished, none whose lease is younger than a
/// minute, for real.
fn older_than(cutoff_ms: i64) -> PruneRequest {
    PruneRequest::older_than(cutoff_ms, 60_000)
}

/// Waits until call `position` of execution `id` is stored in `state`.
async fn stored_state(store: &dyn ExecutionStore, id: &str, position: usize, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = store.load(id).await.expect("load");
        if stored.states[position] == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "call {position} never became {state}: {:?}",
            stored.states
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An execution that stopped as a crash stops it: `a` (30 ms) ended ok, `g` (gated, not
/// idempotent) was running, `after` (depends on `g`) was pending. Returns the execution,
/// its plan, the executor and the gate's permits.
async fn crashed(
    store: &dyn ExecutionStore,
    probe: &Arc<Probe>,
) -> (String, Plan, ParallelExecutor, Arc<tokio::sync::Semaphore>) {
    let (set, permits) = tools(probe);
    let executor = ParallelExecutor::new(set, ParallelExecutorConfig::default()).expect("config");
    let plan = executor
        .plan(vec![
            ToolCall::new("a", "t", json!({"ms": 30, "v": 7})),
            ToolCall::new("g", "gate", json!({"from": "${a.args.v}"})),
            ToolCall::new("after", "t", json!({})).depends_on(["g"]),
        ])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let run = executor.execute_plan_with(
        &plan,
        RunOptions {
            sink: Some(recorder.as_sink()),
            ..Default::default()
        },
    );
    // The process "dies" once g is recorded running: the run is dropped mid-way.
    tokio::select! {
        _ = run => panic!("the gated call cannot end while the gate is shut"),
        () = stored_state(store, &id, 1, "running") => {}
    }
    recorder.close().await.expect("drained");
    (id, plan, executor, permits)
}

pub async fn an_execution_round_trips_through_the_store(store: Arc<dyn ExecutionStore>) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let calls = vec![
        ToolCall::new("a", "t", json!({"ms": 20, "v": [1, 2]})),
        ToolCall::new("b", "t", json!({"x": "${a.args.v.1}"})),
        ToolCall::new("bad", "t", json!({"fail": "nope"})),
        ToolCall::new("after_bad", "t", json!({})).depends_on(["bad"]),
    ];
    let (id, live) = record(&*store, &executor, calls.clone()).await;
    let stored = store.load(&id).await.expect("load");
    assert_eq!(stored.calls, calls, "{}", store.describe());
    assert_eq!(
        stored.result.metadata.execution_id.as_deref(),
        Some(id.as_str()),
        "a stored result names its execution"
    );
    assert_eq!(stored.config, *executor.config());
    assert_eq!(stored.states, ["ok", "ok", "error", "skipped"]);
    for (s, l) in stored.result.results.iter().zip(&live.results) {
        assert_eq!(
            (&s.id, s.status, &s.output, s.attempts, s.level),
            (&l.id, l.status, &l.output, l.attempts, l.level)
        );
        assert_eq!(
            s.error.as_ref().map(|e| (&e.message, e.kind)),
            l.error.as_ref().map(|e| (&e.message, e.kind))
        );
    }
    assert_eq!(stored.edges.len(), 2);
    assert!(
        stored
            .edges
            .iter()
            .any(|(f, t, r)| (*f, *t, r.as_str()) == (0, 1, "reference ${a.args.v.1}"))
    );
    assert_eq!(stored.summary.status, "finished");
    assert_eq!(stored.summary.success, Some(false));
    assert_eq!(
        stored.summary.makespan_ms,
        Some(stored.result.total_time_ms)
    );
    let seq = stored.result.sequential_time_estimate_ms;
    assert!(
        (seq - live.sequential_time_estimate_ms).abs() < 1.0,
        "{seq} vs {}",
        live.sequential_time_estimate_ms
    );
    assert!(stored.result.critical_path_ms >= 20.0);
    assert_eq!(stored.critical.first(), Some(&0), "the chain starts at a");
    assert_eq!(stored.result.batches.len(), 2, "level timings");
    let counts = store.row_counts(&id).await.expect("counts");
    assert_eq!(counts["tool_calls"], 4);
    assert_eq!(counts["tool_results"], 2);
    assert_eq!(counts["dependency_edges"], 2);
    assert_eq!(counts["batches"], 2);
    assert_eq!(counts["performance_metrics"], 6);
    let history = store.history(10).await.expect("history");
    assert_eq!(history.first(), Some(&stored.summary));
    let stats = store.performance_stats(0, None).await.expect("stats");
    assert_eq!(stats.total_executions, 1);
    assert_eq!(stats.total_calls, 4);
    assert_eq!(stats.tools["t"].count, 3, "skipped calls are not counted");
    assert_eq!(stats.tools["t"].errors, 1);
    assert!((stats.avg_success_rate - 0.5).abs() < 1e-9);
    let only = store
        .performance_stats(0, Some("nope"))
        .await
        .expect("stats");
    assert!(only.tools.is_empty());
}

/// Four readers of a folder and three writes into it: the plan joins the two groups, the
/// store keeps the join's edges (positions from the number of calls on), and the figures read
/// back through it are the ones measured live.
pub async fn an_execution_with_a_join_reads_back_with_its_figures(store: Arc<dyn ExecutionStore>) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let mut calls: Vec<ToolCall> = [10, 40, 20, 30]
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            ToolCall::new(
                format!("list{i}"),
                "t",
                json!({"ms": ms, "reads": ["dir:a"]}),
            )
        })
        .collect();
    calls.extend((0..3).map(|i| {
        ToolCall::new(
            format!("put{i}"),
            "t",
            json!({"ms": 5, "inside": ["dir:a"]}),
        )
    }));
    let (id, live) = record(&*store, &executor, calls).await;
    let stored = store.load(&id).await.expect("load");
    assert_eq!(
        stored.edges.len(),
        7,
        "{}: 4 into the join, 3 out",
        store.describe()
    );
    assert!(stored.edges.iter().all(|(f, t, _)| *f == 7 || *t == 7));
    assert_eq!(stored.states, vec!["ok"; 7]);
    assert!(
        (stored.result.critical_path_ms - live.critical_path_ms).abs() < 1.0,
        "{} vs {}",
        stored.result.critical_path_ms,
        live.critical_path_ms
    );
    assert!(live.critical_path_ms >= 45.0);
    assert_eq!(
        stored.critical.first(),
        Some(&1),
        "the chain runs through list1 (40 ms)"
    );
    assert_eq!(
        stored.critical.len(),
        2,
        "a call after the join; the join is not listed"
    );
    assert!(stored.critical[1] >= 4);
    let counts = store.row_counts(&id).await.expect("counts");
    assert_eq!(counts["dependency_edges"], 7);
}

pub async fn finishing_returns_the_execution_as_now_stored(store: Arc<dyn ExecutionStore>) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({"ms": 5}))])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let before = store.load(&id).await.expect("load");
    assert_eq!(before.summary.status, "running");
    assert_eq!(before.summary.success, None);
    assert_eq!(before.states, ["pending"]);
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        recorder.close().await.expect("drained"),
        2,
        "a start and an end"
    );
    let finished = store.finish_execution(&id).await.expect("finish");
    let loaded = store.load(&id).await.expect("load");
    assert_eq!(finished.summary, loaded.summary);
    assert_eq!(finished.summary.status, "finished");
    assert_eq!(finished.summary.success, Some(true));
    assert_eq!(finished.result, loaded.result);
}

pub async fn a_call_that_must_not_run_twice_is_durably_running_before_its_tool_starts(
    store: Arc<dyn ExecutionStore>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let id_slot: Arc<Mutex<String>> = Arc::default();
    let (s2, seen2, slot2) = (store.clone(), seen.clone(), id_slot.clone());
    let mut set = ToolSet::new();
    let once = FnTool::new(ToolSpec::new("once"), move |_, ctx| {
        let (store, seen, slot) = (s2.clone(), seen2.clone(), slot2.clone());
        async move {
            let id = slot.lock().map(|s| s.clone()).unwrap_or_default();
            let stored = store
                .load(&id)
                .await
                .map_err(|e| ToolError::permanent(e.to_string()))?;
            let pos = stored
                .calls
                .iter()
                .position(|c| c.id == *ctx.call_id)
                .unwrap_or(0);
            if let Ok(mut s) = seen.lock() {
                s.push(stored.states[pos].clone());
            }
            Ok(json!(null))
        }
    });
    set.register(once).expect("once");
    let executor = ParallelExecutor::new(set, ParallelExecutorConfig::default()).expect("config");
    let plan = executor
        .plan(vec![
            ToolCall::new("x", "once", json!({})),
            ToolCall::new("y", "once", json!({})),
        ])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    if let Ok(mut s) = id_slot.lock() {
        *s = id.clone();
    }
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let r = executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    recorder.close().await.expect("drained");
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(
        seen.lock().map(|s| s.clone()).unwrap_or_default(),
        ["running", "running"],
        "{}",
        store.describe()
    );
}

pub async fn concurrent_executions_recording_into_one_store_lose_no_row(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = Arc::new(
        ParallelExecutor::new(
            tools(&probe).0,
            ParallelExecutorConfig {
                max_parallel_calls: 64,
                ..Default::default()
            },
        )
        .expect("config"),
    );
    let mut runs = Vec::new();
    for k in 0..4 {
        let (store, executor) = (store.clone(), executor.clone());
        runs.push(tokio::spawn(async move {
            let calls: Vec<ToolCall> = (0..300)
                .map(|i| {
                    let c = ToolCall::new(format!("r{k}_{i}"), "t", json!({"ms": i % 3}));
                    if i % 10 == 9 {
                        c.depends_on([format!("r{k}_{}", i - 1)])
                    } else {
                        c
                    }
                })
                .collect();
            record(&*store, &executor, calls).await.0
        }));
    }
    let mut ids = Vec::new();
    for r in runs {
        ids.push(r.await.expect("joined"));
    }
    for id in &ids {
        let counts = store.row_counts(id).await.expect("counts");
        assert_eq!(
            (
                counts["tool_calls"],
                counts["tool_results"],
                counts["dependency_edges"]
            ),
            (300, 300, 30),
            "{}",
            store.describe()
        );
        let stored = store.load(id).await.expect("load");
        assert!(
            stored.states.iter().all(|s| s == "ok"),
            "every call ended ok in the store"
        );
    }
    assert_eq!(store.history(100).await.expect("history").len(), 4);
    assert_eq!(probe.invocations(), 1200);
}

pub async fn pruning_removes_old_executions_and_everything_they_own(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let (id, _) = record(&*store, &executor, vec![ToolCall::new("a", "t", json!({}))]).await;
    assert_eq!(
        store.prune(&older_than(0)).await.expect("prune"),
        Pruned::default(),
        "nothing is older than the epoch"
    );
    assert_eq!(store.history(10).await.expect("history").len(), 1);
    let future = i64::MAX / 2;
    let pruned = store.prune(&older_than(future)).await.expect("prune");
    assert_eq!(
        pruned.deleted.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&id]
    );
    assert!(store.history(10).await.expect("history").is_empty());
    let counts = store.row_counts(&id).await.expect("counts");
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");
    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn resume_point_keeps_ended_calls_and_leaves_running_and_pending_ones_to_run(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let (id, plan, executor, _permits) = crashed(&*store, &probe).await;
    let point = store.resume_point(&id).await.expect("resume point");
    assert_eq!(point.states, ["ok", "running", "pending"]);
    let calls: Vec<ToolCall> = plan.calls().iter().map(|c| c.call.clone()).collect();
    assert_eq!(point.calls, calls);
    assert_eq!(point.config, *executor.config());
    let kept = point.ended[0].as_ref().expect("a ended");
    assert_eq!(kept.status, toolgraph_core::CallStatus::Ok);
    assert_eq!(
        kept.output.as_ref().map(|o| &o["args"]["v"]),
        Some(&json!(7))
    );
    assert!(
        point.ended[1].is_none() && point.ended[2].is_none(),
        "running and pending calls have no outcome to keep"
    );
    let summary = store.load(&id).await.expect("load").summary;
    assert_eq!(point.created_at, summary.created_at);
    assert_eq!(summary.status, "running", "nobody finished it");
    let stored = store.load(&id).await.expect("load");
    assert_eq!(
        stored.result.results[1].error.as_ref().map(|e| e.kind),
        Some(toolgraph_core::ErrorKind::Interrupted),
        "a call that never ended reads back as interrupted work"
    );
}

pub async fn a_resumed_execution_keeps_earlier_outcomes_and_is_measured_over_every_run(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let (id, plan, executor, permits) = crashed(&*store, &probe).await;
    let point = store.resume_point(&id).await.expect("resume point");
    store.mark_resumed(&id).await.expect("marked");
    permits.add_permits(1);
    let skip: Vec<bool> = point.ended.iter().map(Option::is_some).collect();
    let offset_ms = (now_ms() - point.created_at).max(0) as f64;
    let recorder = store.recorder(&id, plan.len(), skip, offset_ms);
    let r = executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                preset: point.ended.clone(),
                ..Default::default()
            },
        )
        .await;
    recorder.close().await.expect("drained");
    assert!(r.success, "{:?}", r.errors);
    let stored = store.finish_execution(&id).await.expect("finish");
    assert_eq!(stored.states, ["ok", "ok", "ok"]);
    assert_eq!(
        probe
            .log()
            .iter()
            .filter(|s| **s == Step::Start("a".into()))
            .count(),
        1,
        "a ended before the crash and did not run again"
    );
    assert_eq!(
        stored.result.results[0].output,
        point.ended[0].as_ref().and_then(|p| p.output.clone())
    );
    assert_eq!(
        stored.result.results[1].output(),
        Some(&json!({"from": 7})),
        "the re-run call got its input from the kept output"
    );
    assert!(
        stored.result.sequential_time_estimate_ms >= 30.0,
        "the first run's 30 ms count: {}",
        stored.result.sequential_time_estimate_ms
    );
    assert!(
        stored.result.total_time_ms >= offset_ms,
        "the makespan spans both runs: {} < {offset_ms}",
        stored.result.total_time_ms
    );
    let summary = &store.history(1).await.expect("history")[0];
    assert_eq!((summary.status.as_str(), summary.resumed), ("finished", 1));
    assert_eq!(stored.result.metadata.resumed, Some(1));
}

pub async fn a_cancelled_execution_is_resumable_and_runs_its_cancelled_calls_again(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![
            ToolCall::new("a", "t", json!({"v": 1})),
            ToolCall::new("slow", "t", json!({"ms": 60_000})),
            ToolCall::new("later", "u", json!({})).depends_on(["slow"]),
        ])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let cancel = toolgraph_engine::CancellationToken::new();
    let run = executor.execute_plan_with(
        &plan,
        RunOptions {
            sink: Some(recorder.as_sink()),
            cancel: cancel.clone(),
            ..Default::default()
        },
    );
    let stop = async {
        stored_state(&*store, &id, 1, "running").await;
        cancel.cancel();
    };
    let (r, ()) = tokio::join!(run, stop);
    let statuses: Vec<&str> = r.results.iter().map(|c| c.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "cancelled", "cancelled"]);
    recorder.close().await.expect("drained");
    store.finish_execution(&id).await.expect("finish");
    store.mark_cancelled(&id).await.expect("cancelled");
    let summary = &store.history(1).await.expect("history")[0];
    assert_eq!(summary.status, "cancelled");
    assert!(
        !summary.is_abandoned(now_ms(), 10_000),
        "nobody must resume it at once"
    );

    let point = store.resume_point(&id).await.expect("resume point");
    assert_eq!(
        point.states,
        ["ok", "running", "pending"],
        "cancelled calls read as a crash would have left them"
    );
    assert!(point.ended[0].is_some() && point.ended[1].is_none() && point.ended[2].is_none());
    store.mark_resumed(&id).await.expect("marked");
    let reopened = store.load(&id).await.expect("load");
    assert_eq!(reopened.states, ["ok", "running", "pending"]);
    assert_eq!(reopened.summary.status, "running");

    let skip: Vec<bool> = point.ended.iter().map(Option::is_some).collect();
    let offset_ms = (now_ms() - point.created_at).max(0) as f64;
    let recorder = store.recorder(&id, plan.len(), skip, offset_ms);
    let quick = executor
        .plan(vec![
            ToolCall::new("a", "t", json!({"v": 1})),
            ToolCall::new("slow", "t", json!({})),
            ToolCall::new("later", "u", json!({})).depends_on(["slow"]),
        ])
        .expect("valid");
    let r = executor
        .execute_plan_with(
            &quick,
            RunOptions {
                sink: Some(recorder.as_sink()),
                preset: point.ended.clone(),
                ..Default::default()
            },
        )
        .await;
    assert!(r.success, "{:?}", r.errors);
    recorder.close().await.expect("drained");
    let stored = store.finish_execution(&id).await.expect("finish");
    assert_eq!(stored.states, ["ok", "ok", "ok"]);
    assert_eq!(stored.summary.status, "finished");
    assert_eq!(
        probe
            .log()
            .iter()
            .filter(|s| **s == Step::Start("a".into()))
            .count(),
        1,
        "a ended before the cancel and did not run again"
    );
}

pub async fn history_lists_the_newest_executions_first_up_to_the_limit(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let mut ids = Vec::new();
    for k in 0..3 {
        let plan = executor
            .plan(vec![ToolCall::new(format!("c{k}"), "t", json!({}))])
            .expect("valid");
        ids.push(
            store
                .begin_execution(&plan, &executor.config(), None)
                .await
                .expect("begin"),
        );
        // Creation times are in ms: keep them apart.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let newest: Vec<String> = store
        .history(2)
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(newest, [ids[2].clone(), ids[1].clone()]);
    let all = store.history(10).await.expect("history");
    assert_eq!(all.len(), 3);
    assert!(
        all.iter()
            .all(|h| h.status == "running" && h.calls == 1 && h.success.is_none())
    );
}

pub async fn every_execution_gets_a_fresh_uuid_v4_id(store: Arc<dyn ExecutionStore>) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({}))])
        .expect("valid");
    let first = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let second = store
        .begin_execution(&plan, &executor.config(), Some("session-1"))
        .await
        .expect("begin");
    assert_ne!(first, second);
    for id in [&first, &second] {
        let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4, "{id}");
    }
}

pub async fn statistics_cover_finished_executions_since_the_cutoff_and_the_named_tool(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    record(
        &*store,
        &executor,
        vec![
            ToolCall::new("a", "t", json!({"ms": 4})),
            ToolCall::new("b", "u", json!({"ms": 8})),
            ToolCall::new("c", "u", json!({"fail": "no"})),
        ],
    )
    .await;
    // Begun, never finished: not an execution the averages cover.
    let plan = executor
        .plan(vec![ToolCall::new("x", "t", json!({}))])
        .expect("valid");
    store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let all = store.performance_stats(0, None).await.expect("stats");
    assert_eq!((all.total_executions, all.total_calls), (1, 3));
    assert!((all.avg_success_rate - 2.0 / 3.0).abs() < 1e-9);
    assert!(all.avg_speedup > 0.0 && all.avg_execution_time_ms > 0.0);
    assert_eq!(
        all.tools.keys().map(String::as_str).collect::<Vec<_>>(),
        ["t", "u"]
    );
    let u = &all.tools["u"];
    assert_eq!((u.count, u.errors), (2, 1));
    assert!((u.error_rate - 0.5).abs() < 1e-9);
    assert!(u.p99_ms >= 8.0, "{u:?}");
    let only_u = store.performance_stats(0, Some("u")).await.expect("stats");
    assert_eq!(
        only_u.tools.keys().map(String::as_str).collect::<Vec<_>>(),
        ["u"]
    );
    let later = store
        .performance_stats(now_ms() + 60_000, None)
        .await
        .expect("stats");
    assert_eq!((later.total_executions, later.total_calls), (0, 0));
    assert!(later.tools.is_empty());
}

pub async fn a_run_recorded_after_it_completed_reads_back_as_it_ran(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![
            ToolCall::new("a", "t", json!({"v": 1})),
            ToolCall::new("b", "u", json!({"fail": "no"})),
        ])
        .expect("valid");
    let result = executor
        .execute_plan_with(&plan, RunOptions::default())
        .await;
    let id = store
        .record_completed(&plan, &executor.config(), Some("chat-1"), &result)
        .await
        .expect("recorded");
    let stored = store.load(&id).await.expect("load");
    assert_eq!(stored.states, ["ok", "error"]);
    assert_eq!(stored.summary.status, "finished");
    for (s, l) in stored.result.results.iter().zip(&result.results) {
        assert_eq!((&s.id, s.status, &s.output), (&l.id, l.status, &l.output));
    }
}

pub async fn an_unknown_execution_is_not_found(store: Arc<dyn ExecutionStore>) {
    let id = "00000000-0000-4000-8000-000000000000";
    let missing = store.load(id).await.expect_err("unknown");
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
    assert_eq!(
        missing.to_string(),
        format!("no execution {id} in the store {}", store.describe()),
        "the message names the store searched"
    );
    assert!(matches!(
        store.resume_point(id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.finish_execution(id).await,
        Err(StoreError::NotFound { .. })
    ));
    let counts = store.row_counts(id).await.expect("counts");
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");
}

pub async fn pruning_an_execution_while_it_runs_stops_its_recording_and_the_run_finishes(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let (set, permits) = tools(&probe);
    let executor = ParallelExecutor::new(set, ParallelExecutorConfig::default()).expect("config");
    // `g2` must not run twice: its start waits to be durable, after the record went (`b`
    // takes long enough for the writer to have met the loss by then).
    let plan = executor
        .plan(vec![
            ToolCall::new("g", "gate", json!({"v": 1})),
            ToolCall::new("b", "t", json!({"ms": 200})).depends_on(["g"]),
            ToolCall::new("g2", "gate", json!({})).depends_on(["b"]),
        ])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let run = executor.execute_plan_with(
        &plan,
        RunOptions {
            sink: Some(recorder.as_sink()),
            ..Default::default()
        },
    );
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => panic!("the gated call cannot end while the gate is shut"),
        () = stored_state(&*store, &id, 0, "running") => {}
    }
    let pruned = store
        .prune(&PruneRequest {
            include_unfinished: true,
            ..older_than(i64::MAX / 2)
        })
        .await
        .expect("pruned");
    assert_eq!(pruned.deleted.len(), 1, "nobody holds its lease: it goes");
    permits.add_permits(2);
    let result = tokio::time::timeout(Duration::from_secs(20), &mut run)
        .await
        .expect("the run finishes although its record is gone");
    assert!(result.success, "{:?}", result.errors);
    let closed = recorder.close().await;
    assert!(
        matches!(closed, Err(StoreError::RecordingStopped { .. })),
        "{}: {closed:?}",
        store.describe()
    );
    assert!(matches!(
        store.load(&id).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn statistics_count_nothing_while_only_unfinished_executions_exist(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![
            ToolCall::new("a", "t", json!({"ms": 2})),
            ToolCall::new("b", "u", json!({"fail": "no"})),
        ])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    recorder.close().await.expect("recorded");
    // Recorded, never finished (a crash, or a recording that stopped).
    let stats = store.performance_stats(0, None).await.expect("stats");
    assert_eq!((stats.total_executions, stats.total_calls), (0, 0));
    assert!(
        stats.tools.is_empty(),
        "per-tool counts agree with the totals: {:?}",
        stats.tools
    );
    store.finish_execution(&id).await.expect("finish");
    let stats = store.performance_stats(0, None).await.expect("stats");
    assert_eq!((stats.total_executions, stats.total_calls), (1, 2));
    let counted: u64 = stats.tools.values().map(|t| t.count).sum();
    assert_eq!(counted, 2);
}

pub async fn an_execution_is_leased_to_one_owner_at_a_time(store: Arc<dyn ExecutionStore>) {
    use toolgraph_store::Claim;
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({}))])
        .expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let minute = 60_000;
    assert_eq!(
        store
            .claim(&id, "alpha", minute, None)
            .await
            .expect("claim"),
        Claim::Granted
    );
    assert_eq!(
        store
            .claim(&id, "alpha", minute, None)
            .await
            .expect("again"),
        Claim::Granted,
        "the holder may claim again"
    );
    match store.claim(&id, "beta", minute, None).await.expect("claim") {
        Claim::Held {
            owner,
            heartbeat_age_ms,
        } => {
            assert_eq!(owner, "alpha");
            assert!(
                (0..minute).contains(&heartbeat_age_ms),
                "{heartbeat_age_ms}"
            );
        }
        other => panic!("beta took a live lease: {other:?}"),
    }
    let summary = &store.history(10).await.expect("history")[0];
    assert_eq!(summary.owner.as_deref(), Some("alpha"));
    assert!(!summary.is_abandoned(now_ms(), minute), "alpha is alive");
    assert!(store.heartbeat(&id, "alpha").await.expect("beat"));
    assert!(
        !store.heartbeat(&id, "beta").await.expect("beat"),
        "not beta's"
    );
    // A holder whose heartbeat is older than the claimant's patience has crashed.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(store.history(10).await.expect("history")[0].is_abandoned(now_ms(), 10));
    assert_eq!(
        store.claim(&id, "beta", 10, None).await.expect("claim"),
        Claim::Granted
    );
    assert!(
        !store.heartbeat(&id, "alpha").await.expect("beat"),
        "alpha lost it"
    );
    store.release(&id, "alpha").await.expect("release");
    assert_eq!(
        store.history(10).await.expect("history")[0]
            .owner
            .as_deref(),
        Some("beta"),
        "releasing someone else's lease changes nothing"
    );
    store.release(&id, "beta").await.expect("release");
    assert_eq!(
        store
            .claim(&id, "gamma", minute, None)
            .await
            .expect("claim"),
        Claim::Granted
    );
    // A holder known dead is replaced at once, by one claimant only.
    assert_eq!(
        store
            .claim(&id, "delta", minute, Some("gamma"))
            .await
            .expect("claim"),
        Claim::Granted
    );
    assert!(matches!(
        store.claim(&id, "epsilon", minute, Some("gamma")).await.expect("claim"),
        Claim::Held { ref owner, .. } if owner == "delta"
    ));
    store.release(&id, "delta").await.expect("release");
    assert!(matches!(
        store
            .claim("no-such-execution", "gamma", minute, None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    // Racing claimants: exactly one wins.
    let racers = (0..8).map(|i| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move { store.claim(&id, &format!("racer{i}"), minute, None).await })
    });
    let mut granted = 0;
    for racer in racers {
        if racer.await.expect("joined").expect("claim") == Claim::Granted {
            granted += 1;
        }
    }
    assert_eq!(granted, 1, "one racer holds the lease");
}

/// Begins `n` executions of one call each (never run, nobody holds them); their ids.
async fn begun(store: &dyn ExecutionStore, n: usize) -> Vec<String> {
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({}))])
        .expect("valid");
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            store
                .begin_execution(&plan, &executor.config(), None)
                .await
                .expect("begin"),
        );
    }
    ids
}

pub async fn a_prefix_finds_the_executions_whose_id_starts_so_in_id_order_up_to_the_limit(
    store: Arc<dyn ExecutionStore>,
) {
    // 40 ids over 16 first characters: some first character is shared by 3 or more.
    let mut ids = begun(&*store, 40).await;
    ids.sort();
    // Prefixes of every length, among them ones ending in the dash (which a linguistic
    // collation orders apart) and the whole id.
    for id in &ids {
        for len in [1, 2, 4, 8, 9, 13, 14, 36] {
            let prefix = &id[..len];
            let expected: Vec<&String> = ids.iter().filter(|i| i.starts_with(prefix)).collect();
            let found = store
                .executions_by_prefix(prefix, 100)
                .await
                .expect("by prefix");
            assert_eq!(
                found.iter().map(|s| &s.id).collect::<Vec<_>>(),
                expected,
                "{prefix} in {}",
                store.describe()
            );
        }
    }
    let (first, many) = ids
        .iter()
        .map(|i| (&i[..1], ids.iter().filter(|j| j[..1] == i[..1]).count()))
        .max_by_key(|(_, n)| *n)
        .expect("ids");
    assert!(many >= 3, "pigeonhole: {many}");
    let two = store
        .executions_by_prefix(first, 2)
        .await
        .expect("by prefix");
    let expected: Vec<&String> = ids
        .iter()
        .filter(|i| i.starts_with(first))
        .take(2)
        .collect();
    assert_eq!(two.iter().map(|s| &s.id).collect::<Vec<_>>(), expected);
    assert!(
        store
            .executions_by_prefix("ffffffff-ffff-4fff-bfff-fffffffffffg", 5)
            .await
            .expect("by prefix")
            .iter()
            .all(|s| s.id.starts_with("ffffffff-ffff-4fff-bfff-fffffffffffg")),
        "past the last id: nothing"
    );
    let summary = &two[0];
    assert_eq!(
        (summary.status.as_str(), summary.calls),
        ("running", 1),
        "a whole summary line"
    );
}

pub async fn an_id_resolves_from_a_unique_prefix_and_an_ambiguous_one_lists_candidates(
    store: Arc<dyn ExecutionStore>,
) {
    // Begin executions until two share their first MIN_ID_PREFIX characters (a birthday
    // over 16 bits: about 300 on average; 4,000 leave a chance of 1 in e^120 of none).
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({}))])
        .expect("valid");
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    let mut ids = Vec::new();
    let (one, other) = loop {
        assert!(ids.len() < 4000, "no two ids share 4 characters");
        let id = store
            .begin_execution(&plan, &executor.config(), None)
            .await
            .expect("begin");
        ids.push(id.clone());
        if let Some(earlier) =
            seen.insert(id[..toolgraph_store::MIN_ID_PREFIX].to_owned(), id.clone())
        {
            break (earlier, id);
        }
    };
    let shared = &one[..toolgraph_store::MIN_ID_PREFIX];
    let err = store.resolve_id(shared).await.expect_err("ambiguous");
    match &err {
        StoreError::Ambiguous {
            prefix,
            store: searched,
            candidates,
            more,
        } => {
            assert_eq!(prefix, shared);
            assert_eq!(searched, &store.describe());
            let both = [one.clone(), other.clone()];
            let listed: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
            let expected: Vec<String> = {
                let mut all: Vec<String> = ids
                    .iter()
                    .filter(|i| i.starts_with(shared))
                    .cloned()
                    .collect();
                all.sort();
                all
            };
            assert_eq!(
                listed, expected,
                "every execution sharing the prefix, in id order"
            );
            assert!(both.iter().all(|b| listed.contains(b)));
            assert!(!more);
            assert!(candidates.iter().all(|c| c.status == "running"));
        }
        other => panic!("not ambiguous: {other}"),
    }
    assert!(
        err.to_string().contains(&one) && err.to_string().contains(&other),
        "{err}"
    );
    // The shortest prefix no other id starts with names `one`; upper case works too.
    let unique = (toolgraph_store::MIN_ID_PREFIX..=one.len())
        .map(|n| &one[..n])
        .find(|p| ids.iter().filter(|i| i.starts_with(p)).count() == 1)
        .expect("the whole id is unique");
    for given in [unique.to_owned(), unique.to_uppercase(), one.clone()] {
        assert_eq!(
            store.resolve_id(&given).await.expect("resolved").id,
            one,
            "{given}"
        );
    }
    let unknown = ["0000", "ffff", "abcd-"]
        .into_iter()
        .find(|p| !ids.iter().any(|i| i.starts_with(p)))
        .expect("one of them matches nothing");
    let missing = store.resolve_id(unknown).await.expect_err("no match");
    assert!(
        matches!(&missing, StoreError::NotFound { id, store: s } if id == unknown && *s == store.describe()),
        "{missing}"
    );
    for bad in ["3f2", "", "3f2c1a8e-zz", "../etc"] {
        let refused = store.resolve_id(bad).await.expect_err("bad id");
        assert!(
            matches!(refused, StoreError::BadId { .. }),
            "{bad}: {refused}"
        );
    }
}

pub async fn pruning_keeps_unfinished_executions_unless_asked_and_never_a_live_one(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let (finished, _) = record(&*store, &executor, vec![ToolCall::new("a", "t", json!({}))]).await;
    let ids = begun(&*store, 3).await;
    let (abandoned, live, live_finished) = (&ids[0], &ids[1], &ids[2]);
    let minute = 60_000;
    // `live` runs in a process that beats; `live_finished` is finished but its runner
    // still holds the lease (it has not released it yet).
    store
        .claim(live, "alpha", minute, None)
        .await
        .expect("claim");
    store
        .claim(live_finished, "beta", minute, None)
        .await
        .expect("claim");
    store.finish_execution(live_finished).await.expect("finish");
    let ids_of = |list: &[toolgraph_store::ExecutionSummary]| {
        let mut ids: Vec<String> = list.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = older_than(i64::MAX / 2);

    let dry = store
        .prune(&PruneRequest {
            dry_run: true,
            ..all.clone()
        })
        .await
        .expect("dry run");
    assert_eq!(
        ids_of(&dry.deleted),
        [finished.as_str()],
        "{}",
        store.describe()
    );
    assert_eq!(ids_of(&dry.kept_unfinished), [abandoned.as_str()]);
    assert_eq!(
        ids_of(&dry.kept_live),
        sorted(vec![live.clone(), live_finished.clone()])
    );
    assert_eq!(
        store.history(10).await.expect("history").len(),
        4,
        "a dry run deletes nothing"
    );

    let pruned = store.prune(&all).await.expect("prune");
    assert_eq!(
        (
            pruned.deleted.clone(),
            pruned.kept_unfinished.clone(),
            pruned.kept_live.len()
        ),
        (dry.deleted.clone(), dry.kept_unfinished.clone(), 2),
        "the dry run said what goes"
    );
    assert!(matches!(
        store.load(&finished).await,
        Err(StoreError::NotFound { .. })
    ));
    let counts = store.row_counts(&finished).await.expect("counts");
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");

    let with_unfinished = PruneRequest {
        include_unfinished: true,
        ..all.clone()
    };
    let pruned = store.prune(&with_unfinished).await.expect("prune");
    assert_eq!(ids_of(&pruned.deleted), [abandoned.as_str()]);
    assert!(pruned.kept_unfinished.is_empty());
    assert_eq!(
        ids_of(&pruned.kept_live),
        sorted(vec![live.clone(), live_finished.clone()]),
        "a live process's execution stays, whatever is included"
    );
    assert_eq!(store.history(10).await.expect("history").len(), 2);

    // Once its owner stops beating (here: the lease older than the timeout), it may go.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let pruned = store
        .prune(&PruneRequest {
            lease_timeout_ms: 10,
            ..with_unfinished.clone()
        })
        .await
        .expect("prune");
    assert_eq!(
        ids_of(&pruned.deleted),
        sorted(vec![live.clone(), live_finished.clone()])
    );
    assert!(store.history(10).await.expect("history").is_empty());
}

pub async fn pruning_named_executions_deletes_only_those_under_the_same_rules(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let mut finished = Vec::new();
    for _ in 0..3 {
        let (id, _) = record(&*store, &executor, vec![ToolCall::new("a", "t", json!({}))]).await;
        finished.push(id);
    }
    let unfinished = begun(&*store, 2).await;
    let (abandoned, live) = (&unfinished[0], &unfinished[1]);
    store
        .claim(live, "alpha", 60_000, None)
        .await
        .expect("claim");
    let any_age = i64::MAX;
    let named = |ids: &[&String]| PruneRequest {
        ids: Some(ids.iter().map(|id| (*id).clone()).collect()),
        ..older_than(any_age)
    };
    let ids_of = |list: &[toolgraph_store::ExecutionSummary]| -> Vec<String> {
        list.iter().map(|s| s.id.clone()).collect()
    };

    // A dry run over two named ones (one twice, one unknown) deletes nothing.
    let unknown = "00000000-0000-4000-8000-000000000000".to_owned();
    let dry = store
        .prune(&PruneRequest {
            dry_run: true,
            ..named(&[&finished[0], &finished[1], &finished[0], &unknown])
        })
        .await
        .expect("dry run");
    let mut want = vec![finished[0].clone(), finished[1].clone()];
    want.sort();
    let mut got = ids_of(&dry.deleted);
    got.sort();
    assert_eq!(got, want, "{}", store.describe());
    assert_eq!(store.history(10).await.expect("history").len(), 5);

    // Named: only that one goes, the other finished ones stay.
    let pruned = store.prune(&named(&[&finished[1]])).await.expect("prune");
    assert_eq!(ids_of(&pruned.deleted), [finished[1].clone()]);
    assert!(pruned.kept_live.is_empty() && pruned.kept_unfinished.is_empty());
    assert!(matches!(
        store.load(&finished[1]).await,
        Err(StoreError::NotFound { .. })
    ));
    store.load(&finished[0]).await.expect("not named: kept");
    store.load(&finished[2]).await.expect("not named: kept");

    // A named unfinished execution stays unless included; a named live one stays always.
    let pruned = store
        .prune(&named(&[abandoned, live]))
        .await
        .expect("prune");
    assert!(pruned.deleted.is_empty());
    assert_eq!(ids_of(&pruned.kept_unfinished), [abandoned.as_str()]);
    assert_eq!(ids_of(&pruned.kept_live), [live.as_str()]);
    let pruned = store
        .prune(&PruneRequest {
            include_unfinished: true,
            ..named(&[abandoned, live])
        })
        .await
        .expect("prune");
    assert_eq!(ids_of(&pruned.deleted), [abandoned.as_str()]);
    assert_eq!(ids_of(&pruned.kept_live), [live.as_str()]);

    // Named and old enough: a cutoff before they were made selects none of them.
    let pruned = store
        .prune(&PruneRequest {
            created_before_ms: 0,
            ..named(&[&finished[0], &finished[2]])
        })
        .await
        .expect("prune");
    assert_eq!(pruned, Default::default(), "too young: not selected");

    // An empty list names nothing; more ids than one statement binds go slice by slice.
    assert_eq!(
        store.prune(&named(&[])).await.expect("prune"),
        Default::default()
    );
    let mut many: Vec<String> = (0..1_200)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .collect();
    many.push(finished[2].clone());
    let pruned = store
        .prune(&PruneRequest {
            ids: Some(many),
            ..older_than(any_age)
        })
        .await
        .expect("prune");
    assert_eq!(ids_of(&pruned.deleted), [finished[2].clone()]);
    let left: Vec<String> = ids_of(&store.history(10).await.expect("history"));
    let mut left = left;
    left.sort();
    let mut want = vec![finished[0].clone(), live.clone()];
    want.sort();
    assert_eq!(left, want);
}

/// Plays a remote-dispatch layer: a call whose arguments name a `worker` reports it (and
/// `attempts` attempts) through its meter, as a layer that ran it elsewhere would.
struct ReportsWorker;
struct ReportsWorkerService(Arc<dyn CallService>);

impl Layer for ReportsWorker {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(ReportsWorkerService(inner))
    }
}

impl CallService for ReportsWorkerService {
    fn call(&self, request: CallRequest) -> CallFuture {
        if let Some(worker) = request.args.get("worker").and_then(|w| w.as_str()) {
            request.meter.set_worker(worker);
        }
        let attempts = request.args.get("attempts").and_then(|a| a.as_u64());
        let meter = request.meter.clone();
        let work = self.0.call(request);
        Box::pin(async move {
            let out = work.await;
            if let Some(n) = attempts.and_then(|n| u32::try_from(n).ok()) {
                meter.note_attempts(n);
            }
            out
        })
    }
}

pub async fn the_worker_that_ran_a_call_reads_back_with_it(store: Arc<dyn ExecutionStore>) {
    let probe = Probe::new();
    let executor = executor(&probe).layer(Arc::new(ReportsWorker));
    let calls = || {
        vec![
            ToolCall::new("remote", "t", json!({"worker": "w-1", "attempts": 3})),
            ToolCall::new("failed", "u", json!({"worker": "w-2", "fail": "no"})),
            ToolCall::new("local", "t", json!({})),
        ]
    };
    let workers = |r: &ParallelExecutionResult| {
        r.results
            .iter()
            .map(|c| c.worker.clone())
            .collect::<Vec<_>>()
    };
    let want = [Some("w-1".to_owned()), Some("w-2".to_owned()), None];
    // Recorded as it runs.
    let (id, ran) = record(&*store, &executor, calls()).await;
    assert_eq!(workers(&ran), want);
    let stored = store.load(&id).await.expect("load");
    assert_eq!(workers(&stored.result), want);
    assert_eq!(stored.result.results[0].attempts, 3);
    assert_eq!(stored.states, ["ok", "error", "ok"]);
    // Recorded after it completed.
    let plan = executor.plan(calls()).expect("valid");
    let result = executor
        .execute_plan_with(&plan, RunOptions::default())
        .await;
    let id = store
        .record_completed(&plan, &executor.config(), None, &result)
        .await
        .expect("recorded");
    let stored = store.load(&id).await.expect("load");
    assert_eq!(workers(&stored.result), want);
}

pub async fn cache_entries_answer_until_they_expire_and_are_replaced_deleted_or_pruned(
    store: Arc<dyn ExecutionStore>,
) {
    let key = format!("k-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(store.cache_get(&key).await.expect("get"), None);
    store
        .cache_put(&key, "t", r#"{"ok":1}"#, 60_000)
        .await
        .expect("put");
    assert_eq!(
        store.cache_get(&key).await.expect("get").as_deref(),
        Some(r#"{"ok":1}"#)
    );
    // A second put replaces the entry (a corrupt one is overwritten this way).
    store
        .cache_put(&key, "t", r#"{"ok":2}"#, 60_000)
        .await
        .expect("put again");
    assert_eq!(
        store.cache_get(&key).await.expect("get").as_deref(),
        Some(r#"{"ok":2}"#)
    );
    assert!(store.cache_delete(&key).await.expect("delete"));
    assert!(!store.cache_delete(&key).await.expect("delete again"));
    assert_eq!(store.cache_get(&key).await.expect("get"), None);

    // A short ttl: the entry stops answering, and pruning removes it.
    let short = format!("{key}-short");
    store
        .cache_put(&short, "t", "{}", 1)
        .await
        .expect("put short");
    store
        .cache_put(&key, "t", "{}", 60_000)
        .await
        .expect("put long");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.cache_get(&short).await.expect("get"), None, "expired");
    assert!(store.cache_prune().await.expect("prune") >= 1);
    assert!(!store.cache_delete(&short).await.expect("gone"), "pruned");
    assert!(store.cache_get(&key).await.expect("get").is_some(), "kept");
    // Expired entries are replaced like any other.
    store
        .cache_put(&short, "t", "{}", 60_000)
        .await
        .expect("put again");
    assert!(store.cache_get(&short).await.expect("get").is_some());
}

/// Plays a cache: a call whose arguments say `"cached": true` is answered without its
/// tool and marked cached on its meter.
struct AnswersCached;
struct AnswersCachedService(Arc<dyn CallService>);

impl Layer for AnswersCached {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(AnswersCachedService(inner))
    }
}

impl CallService for AnswersCachedService {
    fn call(&self, request: CallRequest) -> CallFuture {
        if request.args.get("cached").is_some() {
            request.meter.set_cached(tokio::time::Instant::now());
            let out = (*request.args).clone();
            return Box::pin(async move { Ok(out) });
        }
        self.0.call(request)
    }
}

pub async fn a_cached_call_reads_back_cached_and_counts_as_a_hit_in_the_statistics(
    store: Arc<dyn ExecutionStore>,
) {
    let probe = Probe::new();
    let executor = executor(&probe).layer(Arc::new(AnswersCached));
    let since = now_ms() - 1;
    let (id, ran) = record(
        &*store,
        &executor,
        vec![
            ToolCall::new("fresh", "t", json!({"ms": 5})),
            ToolCall::new("hit", "t", json!({"cached": true})),
        ],
    )
    .await;
    assert_eq!(probe.invocations(), 1);
    let cached =
        |r: &ParallelExecutionResult| r.results.iter().map(|c| c.cached).collect::<Vec<_>>();
    assert_eq!(cached(&ran), [false, true]);
    let stored = store.load(&id).await.expect("load");
    assert_eq!(cached(&stored.result), [false, true]);
    assert_eq!(stored.result.results[1].attempts, 0);
    let stats = store
        .performance_stats(since, Some("t"))
        .await
        .expect("stats");
    let t = &stats.tools["t"];
    assert_eq!((t.count, t.cache_hits), (2, 1));
    assert_eq!(t.hit_rate, 0.5);
}

/// A turn of a chat session, as `toolgraph chat` writes it.
fn session_turn(
    prompt: &str,
    answer: &str,
    status: &str,
    tokens: i64,
) -> toolgraph_store::SessionTurn {
    let started_at = now_ms();
    toolgraph_store::SessionTurn {
        turn: 0,
        started_at,
        finished_at: started_at + 5,
        status: status.into(),
        model: "m1".into(),
        prompt: prompt.into(),
        answer: answer.into(),
        messages: vec![
            json!({"role": "user", "content": prompt}),
            json!({"role": "assistant", "content": answer}),
        ],
        input_tokens: tokens,
        output_tokens: tokens / 2,
    }
}

pub async fn a_session_keeps_its_turns_in_order_with_totals_and_resolves_by_prefix(
    store: Arc<dyn ExecutionStore>,
) {
    let one = "abcd0000-0000-4000-8000-000000000001";
    let other = "abcd1111-0000-4000-8000-000000000002";
    let head = |id: &str, title: &str| toolgraph_store::SessionHead {
        id: id.into(),
        title: title.into(),
        provider: "openai".into(),
        system: Some("be brief".into()),
    };
    // An execution of the first turn, recorded under the session before the turn ends.
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor
        .plan(vec![ToolCall::new("a", "t", json!({}))])
        .expect("valid");
    let first = session_turn("list my notes", "three notes", "answered", 100);
    let execution = store
        .begin_execution(&plan, &executor.config(), Some(one))
        .await
        .expect("begin");
    let n = store
        .record_session_turn(&head(one, "list my notes"), &first)
        .await
        .expect("first turn");
    assert_eq!(n, 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut second = session_turn(
        "and the TODOs?",
        "cancelled while the tools ran: no final answer",
        "cancelled",
        40,
    );
    second.model = "m2".into();
    let n = store
        .record_session_turn(&head(one, "not the title"), &second)
        .await
        .expect("second turn");
    assert_eq!(n, 2);
    tokio::time::sleep(Duration::from_millis(10)).await;
    store
        .record_session_turn(
            &head(other, "another"),
            &session_turn("hi", "hello", "answered", 10),
        )
        .await
        .expect("other session");

    let listed = store.sessions(10).await.expect("sessions");
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(&ids[..2], [other, one], "latest activity first: {ids:?}");
    assert_eq!(store.sessions(1).await.expect("limited").len(), 1);

    let stored = store.load_session(one).await.expect("load");
    let s = &stored.summary;
    assert_eq!(
        s.title.as_deref(),
        Some("list my notes"),
        "the first title stays"
    );
    assert_eq!((s.turns, s.input_tokens, s.output_tokens), (2, 140, 70));
    assert_eq!(s.model.as_deref(), Some("m2"), "the latest turn's model");
    assert_eq!(s.provider.as_deref(), Some("openai"));
    assert_eq!(stored.system.as_deref(), Some("be brief"));
    let numbers: Vec<i64> = stored.turns.iter().map(|t| t.turn).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(stored.turns[1].status, "cancelled");
    assert_eq!(stored.turns[0].messages, first.messages);
    let history = stored.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2]["content"], "and the TODOs?");
    let ran: Vec<&str> = stored.executions.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ran, [execution.as_str()]);

    // Prefixes: unique, any case, ambiguous (both listed), unknown, malformed.
    assert_eq!(
        store.resolve_session("ABCD0").await.expect("unique").id,
        one
    );
    assert_eq!(store.resolve_session(one).await.expect("whole").id, one);
    match store.resolve_session("abcd").await {
        Err(StoreError::SessionAmbiguous { candidates, .. }) => {
            let listed: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(listed, [one, other]);
        }
        other => panic!("expected an ambiguous prefix, got {other:?}"),
    }
    assert!(matches!(
        store.resolve_session("ffff0").await,
        Err(StoreError::SessionNotFound { .. })
    ));
    assert!(matches!(
        store.resolve_session("ab").await,
        Err(StoreError::BadId { .. })
    ));
    assert!(matches!(
        store
            .load_session("abcd2222-0000-4000-8000-000000000003")
            .await,
        Err(StoreError::SessionNotFound { .. })
    ));
}
