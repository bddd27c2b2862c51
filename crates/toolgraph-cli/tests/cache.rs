//! The cache through the binary: a batch of `http_fetch` calls against a local server, run
//! twice with the SQLite cache (the second run sends no request and says so in its JSON and
//! its table), an entry that expires, a corrupt entry that is a miss and is overwritten, and
//! two processes sharing a Redis cache (one request between them).
//!
//! The Redis half needs `TOOLGRAPH_TEST_REDIS_URL`; without it, it is skipped with a
//! message, unless `TOOLGRAPH_REQUIRE_SERVICES` is set (CI), where that is a failure.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use toolgraph_test_support::CountingServer;

fn toolgraph(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"));
    cmd.current_dir(dir)
        .args(args)
        .env("TOOLGRAPH_HTTP_ALLOW_PRIVATE", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    toolgraph(dir, args, env).output().expect("toolgraph runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn cached(v: &Value) -> Vec<bool> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["cached"].as_bool().unwrap_or(false))
        .collect()
}

/// A batch of `n` GETs of distinct paths on `server`.
fn batch(dir: &Path, name: &str, server: &CountingServer, n: usize) -> String {
    let calls: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("get{i}"), "name": "http_fetch",
                   "arguments": {"url": format!("{}/page/{i}", server.url())}})
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&calls).expect("json")).expect("write batch");
    path.to_string_lossy().into_owned()
}

#[test]
fn a_batch_run_twice_with_the_sqlite_cache_sends_no_request_the_second_time_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CountingServer::start(Duration::ZERO);
    let file = batch(dir.path(), "batch.json", &server, 3);
    let db = format!("sqlite://{}", dir.path().join("store.db").display());
    let args = ["run", "--cache", "--json", "--quiet", "--db", &db, &file];

    let first = json_of(&run(dir.path(), &args, &[]));
    assert_eq!(server.hits(), 3);
    assert_eq!(cached(&first), [false, false, false]);

    let second = json_of(&run(dir.path(), &args, &[]));
    assert_eq!(server.hits(), 3, "no request the second time");
    assert_eq!(cached(&second), [true, true, true]);
    assert_eq!(second["results"][0]["attempts"], 0);
    assert_eq!(
        second["results"][1]["output"], first["results"][1]["output"],
        "the same output"
    );

    // The table says so too.
    let table = run(
        dir.path(),
        &["run", "--cache", "--quiet", "--db", &db, &file],
        &[],
    );
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text.lines().next().unwrap_or_default();
    assert!(header.split_whitespace().any(|c| c == "cached"), "{text}");
    assert!(
        text.contains("3 of 3 calls answered from the cache (no tool ran)"),
        "{text}"
    );
    assert_eq!(server.hits(), 3);

    // Without --cache, the tool runs.
    let off = json_of(&run(
        dir.path(),
        &["run", "--json", "--quiet", "--db", &db, &file],
        &[],
    ));
    assert_eq!(cached(&off), [false, false, false]);
    assert_eq!(server.hits(), 6);

    // The stats report the hit rate: 6 of the 12 recorded calls were hits.
    let stats = run(dir.path(), &["stats", "--db", &db], &[]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("cached"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("http_fetch"))
        .unwrap_or_default();
    assert!(line.contains("50.0%"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_entry_expires_and_a_corrupt_one_is_a_miss_that_is_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CountingServer::start(Duration::ZERO);
    let file = batch(dir.path(), "batch.json", &server, 1);
    let db_path = dir.path().join("store.db");
    let db = format!("sqlite://{}", db_path.display());
    let args = ["run", "--cache", "--json", "--quiet", "--db", &db, &file];
    let short = [("TOOLGRAPH_CACHE_TTL_MS", "1000")];

    json_of(&run(dir.path(), &args, &short));
    assert_eq!(cached(&json_of(&run(dir.path(), &args, &short))), [true]);
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        cached(&json_of(&run(dir.path(), &args, &short))),
        [false],
        "expired"
    );
    assert_eq!(server.hits(), 2);

    // Garbage in the entry's row: a miss, a fresh result, and the row written again.
    let mut conn = sqlx::SqliteConnection::connect(&db)
        .await
        .expect("the store");
    sqlx::query("UPDATE tool_cache SET value = '{broken'")
        .execute(&mut conn)
        .await
        .expect("corrupt it");
    let out = run(dir.path(), &args, &[]);
    let fresh = json_of(&out);
    assert_eq!(cached(&fresh), [false]);
    assert_eq!(fresh["results"][0]["status"], "ok");
    assert_eq!(server.hits(), 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("treated as a miss"),
        "warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: String = sqlx::query_scalar("SELECT value FROM tool_cache")
        .fetch_one(&mut conn)
        .await
        .expect("the row");
    assert!(value.starts_with("{\"ok\":"), "overwritten: {value}");
    assert_eq!(cached(&json_of(&run(dir.path(), &args, &[]))), [true]);
    assert_eq!(server.hits(), 3);
}

#[test]
fn two_processes_share_a_redis_cache_and_run_an_identical_call_once() {
    let Ok(redis) = std::env::var("TOOLGRAPH_TEST_REDIS_URL") else {
        toolgraph_test_support::skip(
            "TOOLGRAPH_TEST_REDIS_URL is unset (no Redis to test against)",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Slow enough that both processes ask while the first request is in flight.
    let server = CountingServer::start(Duration::from_millis(1500));
    let file = batch(dir.path(), "batch.json", &server, 1);
    let prefix = format!(
        "toolgraph-test:{}:{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let env = [
        ("TOOLGRAPH_CACHE_BACKEND", "redis"),
        ("TOOLGRAPH_CACHE_REDIS_URL", redis.as_str()),
        ("TOOLGRAPH_CACHE_KEY_PREFIX", prefix.as_str()),
    ];
    let args = ["run", "--cache", "--json", "--quiet", "--no-record", &file];
    let spawn = || {
        toolgraph(dir.path(), &args, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("toolgraph starts")
    };
    let (a, b) = (spawn(), spawn());
    let a = json_of(&a.wait_with_output().expect("a ends"));
    let b = json_of(&b.wait_with_output().expect("b ends"));
    assert_eq!(server.hits(), 1, "one request between two processes");
    assert_eq!(a["results"][0]["output"], b["results"][0]["output"]);
    let marks = [cached(&a)[0], cached(&b)[0]];
    assert_eq!(
        marks.iter().filter(|c| **c).count(),
        1,
        "the process that waited says cached: {marks:?}"
    );
    // A third process finds the entry.
    let c = json_of(&run(dir.path(), &args, &env));
    assert_eq!(cached(&c), [true]);
    assert_eq!(server.hits(), 1);
}
