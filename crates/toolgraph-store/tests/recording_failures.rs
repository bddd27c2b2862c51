//! Recording while the database fails under a running execution: SQLite locked by another
//! connection, PostgreSQL backends terminated, a PostgreSQL table locked. Each run must
//! finish within a bound, every call running, and `close` must say what was not recorded.
//! A full disk is tested in `src/recorder/tests.rs` (it needs the pool), pruning an
//! execution while it runs in the shared suite (every store).
//!
//! Opening a store that cannot be opened — a file that is not a database, a port where
//! nothing listens — must fail at once with its own error.
//!
//! The PostgreSQL tests need `TOOLGRAPH_TEST_PG_URL` and skip with a message without it
//! (unless `TOOLGRAPH_REQUIRE_SERVICES` is set).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, Executor};
use toolgraph_core::{
    ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec,
};
use toolgraph_engine::{ParallelExecutor, Plan, RunOptions};
use toolgraph_store::{ExecutionStore, Store, StoreError, StoreOptions};
use toolgraph_test_support::{Probe, ScriptedTool};

/// Short waits, so a failing store is given up on in about a second.
fn quick() -> StoreOptions {
    StoreOptions {
        durable_timeout_ms: 500,
        write_timeout_ms: 500,
        write_retries: 1,
        ..StoreOptions::default()
    }
}

/// `t` (idempotent) and `write` (not: its start is made durable before it runs).
fn executor(probe: &Arc<Probe>) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("t").idempotent(),
            probe,
        ))
        .expect("t");
    tools
        .register(ScriptedTool::new("write", probe))
        .expect("write");
    ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config")
}

/// Ten quick calls, then a chain of `writes` calls that must not run twice, `ms` each:
/// their starts come while (and after) the store fails.
fn calls(writes: usize, ms: u64) -> Vec<ToolCall> {
    let mut calls: Vec<ToolCall> = (0..10)
        .map(|i| ToolCall::new(format!("a{i}"), "t", json!({"v": i})))
        .collect();
    for k in 0..writes {
        let call = ToolCall::new(format!("w{k}"), "write", json!({"ms": ms}));
        calls.push(if k == 0 {
            call.depends_on(["a9"])
        } else {
            call.depends_on([format!("w{}", k - 1)])
        });
    }
    calls
}

/// Runs `plan` recorded into execution `id` and closes the recorder, failing the test if
/// that takes longer than `bound`. Returns the result, what `close` said, and how long it
/// all took.
async fn run_recorded(
    store: &dyn ExecutionStore,
    executor: &ParallelExecutor,
    plan: &Plan,
    id: &str,
    bound: Duration,
) -> (ParallelExecutionResult, Result<u64, StoreError>, Duration) {
    let started = Instant::now();
    let recorder = store.recorder(id, plan.len(), Vec::new(), 0.0);
    let run = async {
        let result = executor
            .execute_plan_with(
                plan,
                RunOptions {
                    sink: Some(recorder.as_sink()),
                    ..Default::default()
                },
            )
            .await;
        (result, recorder.close().await)
    };
    let (result, closed) = tokio::time::timeout(bound, run)
        .await
        .unwrap_or_else(|_| panic!("the run and its recording did not end within {bound:?}"));
    (result, closed, started.elapsed())
}

async fn sqlite(dir: &tempfile::TempDir, options: StoreOptions) -> (String, Store) {
    let url = format!("sqlite://{}", dir.path().join("toolgraph.db").display());
    let store = Store::open_with(&url, options).await.expect("sqlite store");
    (url, store)
}

/// Another connection to the SQLite file holding its write lock until dropped.
async fn lock_sqlite(url: &str) -> sqlx::SqliteConnection {
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("second connection");
    conn.execute("BEGIN EXCLUSIVE").await.expect("locked");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_connection_stops_recording_and_the_run_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, store) = sqlite(&dir, quick()).await;
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor.plan(calls(3, 100)).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let lock = lock_sqlite(&url).await;
    let (result, closed, took) =
        run_recorded(&store, &executor, &plan, &id, Duration::from_secs(30)).await;
    assert!(result.success, "{:?}", result.errors);
    assert_eq!(probe.invocations(), 13, "every call ran");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    match closed {
        Err(StoreError::RecordingStopped {
            id: stopped, cause, ..
        }) => {
            assert_eq!(stopped, id);
            assert!(cause.contains("took longer than 500 ms"), "{cause}");
        }
        other => panic!("expected RecordingStopped, got {other:?}"),
    }
    // Once the lock is gone, the record can be completed from the result.
    drop(lock);
    store
        .record_outcomes(&id, &result, Vec::new(), 0.0)
        .await
        .expect("completed");
    let stored = store.finish_execution(&id).await.expect("finished");
    assert!(
        stored.states.iter().all(|s| s == "ok"),
        "{:?}",
        stored.states
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_ahead_when_its_start_is_not_durable_in_time_and_close_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        durable_timeout_ms: 200,
        ..StoreOptions::default()
    };
    let (url, store) = sqlite(&dir, options).await;
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor.plan(calls(1, 0)).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    // The lock goes after a second: the writer's first attempt waits it out (SQLite's own
    // busy timeout) and succeeds, long after the call went ahead.
    let lock = lock_sqlite(&url).await;
    let unlock = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(lock);
    });
    let (result, closed, _) =
        run_recorded(&store, &executor, &plan, &id, Duration::from_secs(30)).await;
    unlock.await.expect("unlocked");
    assert!(result.success, "{:?}", result.errors);
    let w0 = &result.results[10];
    assert!(
        w0.started_ms.is_some_and(|s| s < 900.0),
        "the call went ahead after 200 ms, not when the lock went: {w0:?}"
    );
    match closed {
        Err(StoreError::NotDurable {
            calls, timeout_ms, ..
        }) => {
            assert_eq!((calls, timeout_ms), (1, 200));
        }
        other => panic!("expected NotDurable, got {other:?}"),
    }
    let stored = store.finish_execution(&id).await.expect("finished");
    assert!(
        stored.states.iter().all(|s| s == "ok"),
        "the record is complete: {:?}",
        stored.states
    );
}

/// A PostgreSQL store in a schema of its own, its connections named by an application
/// name of their own: the server's URL, the store, the application name and the schema.
async fn postgres(options: StoreOptions) -> Option<(String, Store, String, String)> {
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
        );
        return None;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("tg_test_{suffix}");
    let app = format!("tg_app_{suffix}");
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("PostgreSQL reachable");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = Store::open_with(
        &format!("{url}{sep}options[search_path]={schema}&application_name={app}"),
        options,
    )
    .await
    .expect("postgres store");
    Some((url, store, app, schema))
}

/// Terminates every backend of `app`, every `every` until `stop` fires.
fn terminate_backends(
    url: String,
    app: String,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("PostgreSQL reachable");
        let mut killed = 0u64;
        while !*stop.borrow() {
            let rows = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app)
            .fetch_all(&mut conn)
            .await
            .expect("terminated");
            killed += rows.len() as u64;
            tokio::time::sleep(every).await;
        }
        killed
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backends_terminated_mid_run_are_replaced_and_every_row_is_recorded() {
    let options = StoreOptions {
        write_retries: 6,
        ..StoreOptions::default()
    };
    let Some((url, store, app, _)) = postgres(options).await else {
        return;
    };
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor.plan(calls(20, 25)).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    // Backends die every few milliseconds for the first half second of the run.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let killer = terminate_backends(url, app, Duration::from_millis(3), stopped);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop.send(true);
    });
    let (result, closed, took) =
        run_recorded(&store, &executor, &plan, &id, Duration::from_secs(60)).await;
    stopper.await.expect("stopped");
    let killed = killer.await.expect("killer");
    assert!(killed > 0, "no backend was terminated");
    assert!(result.success, "{:?}", result.errors);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The writes failed while backends died, and were tried again on new connections.
    match closed {
        Ok(_) | Err(StoreError::NotDurable { .. }) => {}
        Err(e) => panic!("recording should have survived the terminations: {e}"),
    }
    let stored = store.finish_execution(&id).await.expect("finished");
    assert!(
        stored.states.iter().all(|s| s == "ok"),
        "{:?}",
        stored.states
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backends_terminated_for_the_whole_run_stop_recording_and_the_run_finishes() {
    let Some((url, store, app, _)) = postgres(quick()).await else {
        return;
    };
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor.plan(calls(5, 50)).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let killer = terminate_backends(url, app, Duration::from_millis(1), stopped);
    let (result, closed, took) =
        run_recorded(&store, &executor, &plan, &id, Duration::from_secs(60)).await;
    let _ = stop.send(true);
    assert!(killer.await.expect("killer") > 0);
    assert!(result.success, "{:?}", result.errors);
    assert_eq!(probe.invocations(), 15, "every call ran");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // Whether a write slipped through between two terminations is luck; that the run
    // ended, and said what it could not record, is not.
    match closed {
        Ok(_) | Err(StoreError::NotDurable { .. } | StoreError::RecordingStopped { .. }) => {}
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_locked_by_another_session_stops_recording_and_the_run_finishes() {
    let Some((url, store, _, schema)) = postgres(quick()).await else {
        return;
    };
    let probe = Probe::new();
    let executor = executor(&probe);
    let plan = executor.plan(calls(3, 100)).expect("valid");
    let id = store
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    let mut locker = sqlx::PgConnection::connect(&url).await.expect("locker");
    locker.execute("BEGIN").await.expect("begin");
    locker
        .execute(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {schema}.tool_calls IN ACCESS EXCLUSIVE MODE"
        )))
        .await
        .expect("locked");
    let (result, closed, took) =
        run_recorded(&store, &executor, &plan, &id, Duration::from_secs(30)).await;
    assert!(result.success, "{:?}", result.errors);
    assert_eq!(probe.invocations(), 13, "every call ran");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        matches!(closed, Err(StoreError::RecordingStopped { .. })),
        "{closed:?}"
    );
    locker.execute("ROLLBACK").await.expect("unlocked");
}

#[tokio::test]
async fn opening_a_file_that_is_not_a_database_fails_at_once_with_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a_u8; 64 * 1024]).expect("garbage written");
    let url = format!("sqlite://{}", path.display());
    let started = Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(20), Store::open(&url))
        .await
        .expect("open gives up in seconds, not minutes");
    let Err(e) = opened else {
        panic!("a garbage file opened as a store");
    };
    let message = e.to_string();
    assert!(message.contains("not a database"), "{message}");
    assert!(message.contains(&url), "names the store: {message}");
    assert!(!message.contains("timed out"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn opening_a_port_where_nothing_listens_fails_at_once_with_the_cause() {
    // A loopback port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://tg:s3cret@127.0.0.1:{port}/tg");
    let started = Instant::now();
    let opened = tokio::time::timeout(Duration::from_secs(20), Store::open(&url))
        .await
        .expect("open gives up in seconds");
    let Err(e) = opened else {
        panic!("nothing listens there");
    };
    let message = e.to_string();
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        message.contains(&format!("postgres://tg:***@127.0.0.1:{port}/tg")),
        "names the store, password hidden: {message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!message.contains("timed out"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_that_never_answers_fails_after_the_connect_timeout() {
    // Accepts TCP connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let options = StoreOptions {
        connect_timeout_ms: 300,
        ..StoreOptions::default()
    };
    let started = Instant::now();
    let opened = Store::open_with(&format!("postgres://tg@127.0.0.1:{port}/tg"), options).await;
    let Err(e) = opened else {
        panic!("nothing answers there");
    };
    assert!(e.to_string().contains("no answer within 300 ms"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}
