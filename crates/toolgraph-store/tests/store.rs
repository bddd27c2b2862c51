//! The store suite (`suite/`) on every store: the memory store, SQLite in a temporary
//! file, and the local PostgreSQL from `TOOLGRAPH_TEST_PG_URL` (each test in a schema of
//! its own) — test names read `backend::behaviour`. Without the URL the PostgreSQL tests
//! are skipped with a message — unless `TOOLGRAPH_REQUIRE_SERVICES` is set, as CI sets it,
//! where a missing service fails the test.
//!
//! Then what only the SQL store does: URLs, a new file opened by many at once, and a
//! database of the previous version upgraded on open.

mod suite;

use std::sync::Arc;

use sqlx::Connection;
use toolgraph_store::{Backend, ExecutionStore, MemoryStore, Store, StoreError};

/// A store under test, and the temporary directory its file lives in (if any).
struct Opened {
    store: Arc<dyn ExecutionStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Option<Opened> {
    Some(Opened {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    })
}

async fn sqlite() -> Option<Opened> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("toolgraph.db").display());
    Some(Opened {
        store: toolgraph_store::open(&url).await.expect("sqlite store"),
        _dir: Some(dir),
    })
}

/// A fresh, empty schema on the test PostgreSQL: the URL that works in it, its name, and a
/// connection (skips when there is no PostgreSQL to test against).
async fn fresh_postgres_schema() -> Option<(String, String, sqlx::PgConnection)> {
    let Ok(url) = std::env::var("TOOLGRAPH_TEST_PG_URL") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
        );
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
    Some((
        format!("{url}{sep}options[search_path]={schema}"),
        schema,
        conn,
    ))
}

async fn postgres() -> Option<Opened> {
    let (in_schema, _, _) = fresh_postgres_schema().await?;
    Some(Opened {
        store: toolgraph_store::open(&in_schema)
            .await
            .expect("postgres store"),
        _dir: None,
    })
}

/// One test per behaviour of the suite, in one module per store.
macro_rules! on_every_store {
    ($($behaviour:ident),* $(,)?) => {
        on_every_store!(@on memory; $($behaviour),*);
        on_every_store!(@on sqlite; $($behaviour),*);
        on_every_store!(@on postgres; $($behaviour),*);
    };
    (@on $backend:ident; $($behaviour:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let Some(opened) = super::$backend().await else {
                        return;
                    };
                    super::suite::$behaviour(opened.store.clone()).await;
                }
            )*
        }
    };
}

on_every_store!(
    an_execution_round_trips_through_the_store,
    an_execution_with_a_join_reads_back_with_its_figures,
    finishing_returns_the_execution_as_now_stored,
    a_call_that_must_not_run_twice_is_durably_running_before_its_tool_starts,
    concurrent_executions_recording_into_one_store_lose_no_row,
    pruning_removes_old_executions_and_everything_they_own,
    resume_point_keeps_ended_calls_and_leaves_running_and_pending_ones_to_run,
    a_resumed_execution_keeps_earlier_outcomes_and_is_measured_over_every_run,
    a_cancelled_execution_is_resumable_and_runs_its_cancelled_calls_again,
    history_lists_the_newest_executions_first_up_to_the_limit,
    every_execution_gets_a_fresh_uuid_v4_id,
    statistics_cover_finished_executions_since_the_cutoff_and_the_named_tool,
    a_run_recorded_after_it_completed_reads_back_as_it_ran,
    an_unknown_execution_is_not_found,
    an_execution_is_leased_to_one_owner_at_a_time,
    pruning_an_execution_while_it_runs_stops_its_recording_and_the_run_finishes,
    statistics_count_nothing_while_only_unfinished_executions_exist,
    a_prefix_finds_the_executions_whose_id_starts_so_in_id_order_up_to_the_limit,
    an_id_resolves_from_a_unique_prefix_and_an_ambiguous_one_lists_candidates,
    pruning_keeps_unfinished_executions_unless_asked_and_never_a_live_one,
    pruning_named_executions_deletes_only_those_under_the_same_rules,
    the_worker_that_ran_a_call_reads_back_with_it,
    cache_entries_answer_until_they_expire_and_are_replaced_deleted_or_pruned,
    a_cached_call_reads_back_cached_and_counts_as_a_hit_in_the_statistics,
    a_session_keeps_its_turns_in_order_with_totals_and_resolves_by_prefix,
);

#[tokio::test]
async fn every_store_is_a_trait_object_shared_across_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("dyn.db").display());
    let stores: Vec<Arc<dyn ExecutionStore>> = vec![
        Arc::new(MemoryStore::new()),
        Arc::new(Store::open(&url).await.expect("sqlite store")),
    ];
    for store in stores {
        let shared = store.clone();
        let history = tokio::spawn(async move { shared.history(1).await })
            .await
            .expect("joined")
            .expect("history");
        assert!(history.is_empty(), "{}", store.describe());
    }
}

#[tokio::test]
async fn open_picks_the_store_a_url_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("opened.db").display());
    let sqlite = toolgraph_store::open(&url).await.expect("sqlite");
    assert_eq!(sqlite.describe(), url);
    assert!(dir.path().join("opened.db").exists());
    let memory = toolgraph_store::open("memory:").await.expect("memory");
    assert_eq!(memory.describe(), "memory:");
    let other = toolgraph_store::open("memory:").await.expect("memory");
    let probe = toolgraph_test_support::Probe::new();
    let mut tools = toolgraph_core::ToolSet::new();
    tools
        .register(toolgraph_test_support::ScriptedTool::new("t", &probe))
        .expect("t");
    let executor =
        toolgraph_engine::ParallelExecutor::new(tools, Default::default()).expect("executor");
    let plan = executor
        .plan(vec![toolgraph_core::ToolCall::new(
            "a",
            "t",
            serde_json::json!({}),
        )])
        .expect("valid");
    memory
        .begin_execution(&plan, &executor.config(), None)
        .await
        .expect("begin");
    assert!(
        other.history(1).await.expect("history").is_empty(),
        "each memory: URL opens a fresh store"
    );
    for bad in ["mysql://x", "memory:shared", "toolgraph.db"] {
        assert!(
            matches!(toolgraph_store::open(bad).await, Err(StoreError::Url(_))),
            "{bad}"
        );
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
        Err(StoreError::Url(_))
    ));
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

#[tokio::test]
async fn opening_an_existing_sqlite_store_creates_nothing_and_finds_none_where_none_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A data directory may hold characters a URL reads otherwise (macOS's has a space).
    let data = dir.path().join("my data 100%?#");
    let file = data.join("toolgraph").join("toolgraph.db");
    let url = toolgraph_store::sqlite_url(&file);
    assert!(
        toolgraph_store::open_existing(&url)
            .await
            .expect("no error")
            .is_none()
    );
    assert!(
        !data.exists(),
        "neither the file nor its directory was created"
    );
    // A file that is a database without toolgraph's tables has nothing recorded either,
    // and stays as it was.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("empty file");
    assert!(
        toolgraph_store::open_existing(&toolgraph_store::sqlite_url(&empty))
            .await
            .expect("no error")
            .is_none()
    );
    assert_eq!(std::fs::metadata(&empty).expect("still there").len(), 0);
    // A file that is not a database is an error naming it.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 4096]).expect("garbage");
    let err = match toolgraph_store::open_existing(&toolgraph_store::sqlite_url(&garbage)).await {
        Err(e) => e.to_string(),
        Ok(found) => panic!("a garbage file opened: {}", found.is_some()),
    };
    assert!(err.contains("garbage.db"), "{err}");
    assert!(
        toolgraph_store::open_existing("memory:")
            .await
            .expect("no error")
            .is_none(),
        "a memory store never exists before it is opened"
    );
    // Opening to record creates the directory and the file; then it exists.
    let created = toolgraph_store::open(&url).await.expect("created");
    assert!(file.exists());
    drop(created);
    let found = toolgraph_store::open_existing(&url)
        .await
        .expect("no error")
        .expect("exists now");
    assert_eq!(found.describe(), url);
}

#[tokio::test]
async fn opening_an_existing_postgres_store_creates_no_table_where_none_is() {
    let Some((in_schema, schema, mut conn)) = fresh_postgres_schema().await else {
        return;
    };
    assert!(
        toolgraph_store::open_existing(&in_schema)
            .await
            .expect("no error")
            .is_none()
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await
    .expect("count");
    assert_eq!(tables, 0, "no table was created in {schema}");
    toolgraph_store::open(&in_schema).await.expect("created");
    assert!(
        toolgraph_store::open_existing(&in_schema)
            .await
            .expect("no error")
            .is_some()
    );
}

#[test]
fn a_sqlite_url_keeps_the_characters_of_its_path() {
    let path = std::path::Path::new("/home/a b/100% sure?#/toolgraph.db");
    assert_eq!(
        toolgraph_store::sqlite_url(path),
        "sqlite:///home/a b/100%25 sure%3F%23/toolgraph.db"
    );
}

/// The migrations of the version before calls named their worker: every file of
/// `backend`'s folder but `newest`, copied as they are (their checksums are what a database
/// of that version recorded).
fn previous_migrations(backend: &str, newest: &str) -> tempfile::TempDir {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut copied = 0;
    for entry in std::fs::read_dir(&from).expect("migrations") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != newest) {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("named")))
                .expect("copied");
            copied += 1;
        }
    }
    assert!(copied > 0, "no migration before {newest}");
    dir
}

/// The id of the execution [`old_execution`] writes.
const OLD_ID: &str = "00000000-0000-4000-8000-00000000a11d";

/// One finished execution with one call that succeeded, as the previous version wrote it.
fn old_execution() -> [String; 2] {
    let config = serde_json::to_string(&toolgraph_core::ParallelExecutorConfig::default())
        .expect("config")
        .replace('\'', "''");
    [
        format!(
            "INSERT INTO executions (id, created_at, finished_at, status, config, call_count, success) \
             VALUES ('{OLD_ID}', 1000, 2000, 'finished', '{config}', 1, 1)"
        ),
        format!(
            "INSERT INTO tool_calls (execution_id, position, call_id, tool, arguments, depends_on, \
             priority, level, status, attempts, queued_ms, started_ms, finished_ms, duration_ms) \
             VALUES ('{OLD_ID}', 0, 'a', 't', '{{}}', '[]', 0, 0, 'ok', 1, 0.0, 1.0, 3.0, 2.0)"
        ),
    ]
}

/// A store of the previous version at `url`, upgraded by opening it: its execution reads
/// back (no worker), and the store records and reads workers from then on.
async fn upgraded_store_keeps_old_executions_and_records_workers(url: &str) {
    let store = Store::open(url)
        .await
        .expect("the previous version's store opens");
    let old = store
        .load(OLD_ID)
        .await
        .expect("the old execution reads back");
    let call = &old.result.results[0];
    assert_eq!(
        (call.id.as_str(), call.status, call.worker.as_deref()),
        ("a", toolgraph_core::CallStatus::Ok, None)
    );
    suite::the_worker_that_ran_a_call_reads_back_with_it(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_of_the_previous_version_gains_the_worker_column_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("old.db");
    let old = previous_migrations("sqlite", "0003_worker.sql");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("sqlite");
        sqlx::migrate::Migrator::new(old.path())
            .await
            .expect("migrations")
            .run(&mut conn)
            .await
            .expect("the previous schema");
        for statement in old_execution() {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .expect("an old row");
        }
        conn.close().await.expect("closed");
    }
    upgraded_store_keeps_old_executions_and_records_workers(&toolgraph_store::sqlite_url(&file))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_of_the_previous_version_gains_the_worker_column_on_open() {
    let Some((in_schema, _, _)) = fresh_postgres_schema().await else {
        return;
    };
    let old = previous_migrations("postgres", "0004_worker.sql");
    let mut conn = sqlx::PgConnection::connect(&in_schema)
        .await
        .expect("PostgreSQL reachable");
    sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("migrations")
        .run(&mut conn)
        .await
        .expect("the previous schema");
    for statement in old_execution() {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .expect("an old row");
    }
    conn.close().await.expect("closed");
    upgraded_store_keeps_old_executions_and_records_workers(&in_schema).await;
}
