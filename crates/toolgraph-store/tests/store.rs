//! The store on both backends: SQLite in a temporary file, and the local PostgreSQL from
//! `TOOLGRAPH_TEST_PG_URL` (each test in a schema of its own). Without the URL the
//! PostgreSQL half is skipped with a message — unless `TOOLGRAPH_REQUIRE_SERVICES` is set,
//! as CI sets it, where a missing service fails the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use sqlx::Connection;
use toolgraph_core::{
    CallStatus, FnTool, ParallelExecutorConfig, ToolCall, ToolError, ToolSet, ToolSpec,
};
use toolgraph_engine::{ParallelExecutor, RunOptions};
use toolgraph_store::{Backend, ExecutionStore, Store};
use toolgraph_test_support::{Probe, ScriptedTool};

/// Every store this test should run against: SQLite always, PostgreSQL when configured.
async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("toolgraph.db").display());
    let mut out = vec![(Store::open(&url).await.expect("sqlite store"), Some(dir))];
    if let Some(pg) = postgres().await {
        out.push((pg, None));
    }
    out
}

async fn postgres() -> Option<Store> {
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        assert!(
            std::env::var_os("TOOLGRAPH_REQUIRE_SERVICES").is_none(),
            "TOOLGRAPH_TEST_PG_URL is unset but TOOLGRAPH_REQUIRE_SERVICES demands PostgreSQL"
        );
        eprintln!("SKIPPED the PostgreSQL half: TOOLGRAPH_TEST_PG_URL is unset");
        return None;
    };
    let schema = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(
        Store::open(&format!("{url}{sep}options[search_path]={schema}"))
            .await
            .expect("postgres store"),
    )
}

fn tools(probe: &Arc<Probe>) -> ToolSet {
    let mut set = ToolSet::new();
    set.register(ScriptedTool::with_spec(
        ToolSpec::new("t").idempotent(),
        probe,
    ))
    .expect("t");
    set
}

async fn record(
    store: &Store,
    executor: &ParallelExecutor,
    calls: Vec<ToolCall>,
) -> (String, toolgraph_core::ParallelExecutionResult) {
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
                sink: Some(&recorder),
                ..Default::default()
            },
        )
        .await;
    recorder.close().await.expect("recorder drained");
    store.finish_execution(&id).await.expect("finish");
    (id, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_round_trips_through_the_store() {
    for (store, _dir) in stores().await {
        let probe = Probe::new();
        let executor = ParallelExecutor::new(tools(&probe), ParallelExecutorConfig::default())
            .expect("config");
        let calls = vec![
            ToolCall::new("a", "t", json!({"ms": 20, "v": [1, 2]})),
            ToolCall::new("b", "t", json!({"x": "${a.args.v.1}"})),
            ToolCall::new("bad", "t", json!({"fail": "nope"})),
            ToolCall::new("after_bad", "t", json!({})).depends_on(["bad"]),
        ];
        let (id, live) = record(&store, &executor, calls.clone()).await;
        let stored = store.load(&id).await.expect("load");
        assert_eq!(stored.calls, calls, "{:?}", store.backend());
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
        let seq = stored.result.sequential_time_estimate_ms;
        assert!(
            (seq - live.sequential_time_estimate_ms).abs() < 1.0,
            "{seq} vs {}",
            live.sequential_time_estimate_ms
        );
        assert!(stored.result.critical_path_ms >= 20.0);
        let counts = store.row_counts(&id).await.expect("counts");
        assert_eq!(counts["tool_calls"], 4);
        assert_eq!(counts["tool_results"], 2);
        assert_eq!(counts["dependency_edges"], 2);
        assert_eq!(counts["batches"], 2);
        assert_eq!(counts["performance_metrics"], 6);
        let history = store.history(10).await.expect("history");
        assert_eq!(history.first().map(|h| h.id.as_str()), Some(id.as_str()));
        let stats = store.performance_stats(0, None).await.expect("stats");
        assert_eq!(stats.total_executions, 1);
        assert_eq!(stats.tools["t"].count, 3, "skipped calls are not counted");
        assert_eq!(stats.tools["t"].errors, 1);
        assert!((stats.avg_success_rate - 0.5).abs() < 1e-9);
        let only = store
            .performance_stats(0, Some("nope"))
            .await
            .expect("stats");
        assert!(only.tools.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_must_not_run_twice_is_durably_running_before_its_tool_starts() {
    for (store, _dir) in stores().await {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let id_slot: Arc<std::sync::Mutex<String>> = Arc::default();
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
        let executor =
            ParallelExecutor::new(set, ParallelExecutorConfig::default()).expect("config");
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
                    sink: Some(&recorder),
                    ..Default::default()
                },
            )
            .await;
        recorder.close().await.expect("drained");
        assert!(r.success, "{:?}", r.errors);
        assert_eq!(
            seen.lock().map(|s| s.clone()).unwrap_or_default(),
            ["running", "running"],
            "{:?}",
            store.backend()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executions_recording_into_one_store_lose_no_row() {
    for (store, _dir) in stores().await {
        let probe = Probe::new();
        let executor = Arc::new(
            ParallelExecutor::new(
                tools(&probe),
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
                record(&store, &executor, calls).await.0
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
                "{:?}",
                store.backend()
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_old_executions_and_everything_they_own() {
    for (store, _dir) in stores().await {
        let probe = Probe::new();
        let executor = ParallelExecutor::new(tools(&probe), ParallelExecutorConfig::default())
            .expect("config");
        let (id, _) = record(&store, &executor, vec![ToolCall::new("a", "t", json!({}))]).await;
        assert_eq!(
            store.prune(0).await.expect("prune"),
            0,
            "nothing is older than the epoch"
        );
        assert_eq!(store.history(10).await.expect("history").len(), 1);
        let future = i64::MAX / 2;
        assert_eq!(store.prune(future).await.expect("prune"), 1);
        assert!(store.history(10).await.expect("history").is_empty());
        let counts = store.row_counts(&id).await.expect("counts");
        assert!(counts.values().all(|n| *n == 0), "{counts:?}");
        assert!(matches!(
            store.load(&id).await,
            Err(toolgraph_store::StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn urls_name_their_backend_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    let store = Store::open(&url).await.expect("created on first use");
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(dir.path().join("new.db").exists());
    let again = Store::open(&url).await.expect("migrations are idempotent");
    assert!(again.history(1).await.expect("history").is_empty());
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(toolgraph_store::StoreError::Url(_))
    ));
    let _ = AtomicUsize::new(0).fetch_add(1, Ordering::SeqCst);
    let _ = CallStatus::Ok;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_opening_a_new_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await
            .expect("joined")
            .expect("every open succeeds despite the migration race");
    }
}
