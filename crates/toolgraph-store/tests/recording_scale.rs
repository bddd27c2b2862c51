//! Recording at scale: one fan-out of N no-op calls recorded into SQLite (a temporary file)
//! and PostgreSQL (`TOOLGRAPH_TEST_PG_URL`; skipped with a message without it, a failure
//! when `TOOLGRAPH_REQUIRE_SERVICES` is set). It checks that every call's row is recorded
//! and prints how long each size took; it asserts nothing about time. By default it runs
//! small sizes (2,000 and 4,000 calls) so every test run covers it; as the benchmark of how
//! recording time grows, run it in release with large sizes:
//!
//! ```text
//! TOOLGRAPH_RECORD_SCALE=100000,200000,400000 \
//!     cargo test --release -p toolgraph-store --test recording_scale -- --nocapture
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use toolgraph_core::{FnTool, ParallelExecutorConfig, ToolSet, ToolSpec};
use toolgraph_engine::{ParallelExecutor, RunOptions, workload};
use toolgraph_store::ExecutionStore;

fn executor() -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools
        .register(FnTool::new(
            ToolSpec::new("noop").idempotent(),
            |_, _| async { Ok(Value::Null) },
        ))
        .expect("noop");
    ParallelExecutor::new(
        tools,
        ParallelExecutorConfig {
            max_parallel_calls: 1024,
            ..Default::default()
        },
    )
    .expect("config")
}

/// Records one fan-out of `n` calls into `store`; returns (begin, run + close, finish).
async fn record(store: &dyn ExecutionStore, n: usize) -> (Duration, Duration, Duration) {
    let ex = executor();
    let plan = ex
        .plan(workload::fan_out(n, "noop", json!({})))
        .expect("valid");
    let start = Instant::now();
    let id = store
        .begin_execution(&plan, &ex.config(), None)
        .await
        .expect("begin");
    let begun = start.elapsed();
    let start = Instant::now();
    let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
    let r = ex
        .execute_plan_with(
            &plan,
            RunOptions {
                sink: Some(recorder.as_sink()),
                ..Default::default()
            },
        )
        .await;
    assert!(r.success);
    recorder.close().await.expect("recorded");
    let ran = start.elapsed();
    let start = Instant::now();
    let stored = store.finish_execution(&id).await.expect("finished");
    assert_eq!(stored.states.len(), n, "one row per call");
    assert!(stored.states.iter().all(|s| s == "ok"));
    (begun, ran, start.elapsed())
}

fn sizes() -> Vec<usize> {
    std::env::var("TOOLGRAPH_RECORD_SCALE")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2_000, 4_000])
}

async fn figures(name: &str, store: &dyn ExecutionStore, n: usize) {
    let (begin, run, finish) = record(store, n).await;
    let total = begin + run + finish;
    println!(
        "{name} {n:>7} calls: begin {:>7.2} s, run + record {:>7.2} s, finish {:>6.2} s, total {:>7.2} s ({:.0} calls/s)",
        begin.as_secs_f64(),
        run.as_secs_f64(),
        finish.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_at_scale_and_the_time_it_took_is_printed() {
    for n in sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("scale.db").display());
        let store = toolgraph_store::open(&url).await.expect("sqlite");
        figures("SQLite    ", &*store, n).await;
    }
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
        );
        return;
    };
    // A schema of its own, dropped afterwards.
    let schema = format!("tg_scale_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = toolgraph_store::open(&format!("{url}{sep}options[search_path]={schema}"))
        .await
        .expect("postgres");
    for n in sizes() {
        figures("PostgreSQL", &*store, n).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut conn)
        .await
        .expect("dropped");
}
