//! Recording through the binary, on SQLite and on the local PostgreSQL: a run killed with
//! SIGKILL mid-way and resumed (every call ends exactly once, finished calls are not run
//! again, the final outputs are right), then history, show, stats and prune.
//!
//! The PostgreSQL half needs `TOOLGRAPH_TEST_PG_URL`; without it, it is skipped with a
//! message, unless `TOOLGRAPH_REQUIRE_SERVICES` is set (CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use toolgraph_store::{ExecutionStore, Store};

/// The binary; every call here names its store, and none may reach the user's data
/// directory.
fn toolgraph(args: &[&str]) -> Output {
    toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
        .args(args)
        .output()
        .expect("toolgraph runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Database URLs to test: a SQLite file, and a fresh PostgreSQL schema when configured.
async fn databases(dir: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("store.db").display())];
    match std::env::var("TOOLGRAPH_TEST_PG_URL") {
        Ok(url) => {
            let schema = format!("tg_cli_{}", uuid_like());
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .expect("PostgreSQL reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .expect("schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            urls.push(format!("{url}{sep}options[search_path]={schema}"));
        }
        Err(_) => {
            toolgraph_test_support::skip(
                "TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)",
            );
        }
    }
    urls
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}

fn call(id: &str, tool: &str, args: Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": tool, "arguments": args.to_string()}})
}

fn batch() -> Value {
    json!([
        call(
            "a",
            "file_write",
            json!({"path": "log.txt", "content": "a\n", "append": true})
        ),
        call(
            "b",
            "file_write",
            json!({"path": "log.txt", "content": "b\n", "append": true})
        ),
        call("slow", "sleep", json!({"ms": 2500})),
        call("sh", "shell", json!({"command": "sleep 20"})),
        call(
            "after_sh",
            "file_write",
            json!({"path": "log.txt", "content": "after_sh\n", "append": true})
        ),
        call(
            "c",
            "file_write",
            json!({"path": "log.txt", "content": "c\n", "append": true})
        ),
        call(
            "summary",
            "file_write",
            json!({"path": "out.txt", "content": "a=${a.bytes_written} slow=${slow.slept_ms} c=${c.path}"})
        ),
    ])
}

fn with_deps(mut batch: Value) -> Value {
    if let Some(calls) = batch.as_array_mut() {
        calls[4]["depends_on"] = json!(["sh"]);
        calls[5]["depends_on"] = json!(["slow"]);
    }
    batch
}

async fn states(store: &Store, id: &str) -> Vec<String> {
    store.load(id).await.map(|s| s.states).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_without_running_finished_calls_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (k, db) in databases(dir.path()).await.into_iter().enumerate() {
        let work = dir.path().join(format!("work{k}"));
        std::fs::create_dir_all(&work).expect("mkdir");
        let config = dir.path().join(format!("toolgraph{k}.toml"));
        std::fs::write(
            &config,
            format!(
                "[files]\nroot = {:?}\n[shell]\nenabled = true\nallow = [\"sleep\"]\n[tools.shell]\nparallel_safe = true\n",
                work.display().to_string()
            ),
        )
        .expect("config");
        let input = dir.path().join("batch.json");
        std::fs::write(&input, with_deps(batch()).to_string()).expect("batch");
        let store = Store::open(&db).await.expect("store");
        let (cfg, inp) = (
            config.to_string_lossy().into_owned(),
            input.to_string_lossy().into_owned(),
        );

        let mut child = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
            .args(["run", "--quiet", "--config", &cfg, "--db", &db, &inp])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn run");
        // Wait until a and b are recorded done while slow and sh are recorded running.
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = loop {
            assert!(
                Instant::now() < deadline,
                "the run never reached the crash point"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
            let Some(h) = store.history(1).await.expect("history").into_iter().next() else {
                continue;
            };
            let s = states(&store, &h.id).await;
            if s.len() == 7
                && s[0] == "ok"
                && s[1] == "ok"
                && s[2] == "running"
                && s[3] == "running"
            {
                break h.id;
            }
        };
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let before = states(&store, &id).await;
        assert_eq!(&before[..4], ["ok", "ok", "running", "running"], "{db}");
        assert_eq!(
            std::fs::read_to_string(work.join("log.txt"))
                .ok()
                .as_deref(),
            Some("a\nb\n")
        );

        let out = toolgraph(&[
            "resume", &id, "--json", "--quiet", "--config", &cfg, "--db", &db,
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "interrupted and skipped calls make it unsuccessful: {}",
            text(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("JSON result");
        assert_eq!(
            r["metadata"]["resume"],
            json!({"kept": 2, "rerun": 1, "interrupted": 1})
        );
        let after = states(&store, &id).await;
        assert_eq!(
            after,
            ["ok", "ok", "ok", "interrupted", "skipped", "ok", "ok"],
            "{db}"
        );
        assert_eq!(
            std::fs::read_to_string(work.join("log.txt"))
                .ok()
                .as_deref(),
            Some("a\nb\nc\n"),
            "a and b were not run again; after_sh never ran"
        );
        assert_eq!(
            std::fs::read_to_string(work.join("out.txt"))
                .ok()
                .as_deref(),
            Some("a=2 slow=2500 c=log.txt")
        );
        let sh = &r["results"][3];
        assert_eq!(sh["status"], "interrupted");
        assert!(
            sh["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not idempotent"))
        );
        let counts = store.row_counts(&id).await.expect("counts");
        assert_eq!(
            (counts["tool_calls"], counts["tool_results"]),
            (7, 5),
            "one row per call, one result per ok call"
        );
        let h = store.history(1).await.expect("history");
        assert_eq!((h[0].status.as_str(), h[0].resumed), ("finished", 1));
        let again = toolgraph(&["resume", &id, "--quiet", "--config", &cfg, "--db", &db]);
        assert_eq!(again.status.code(), Some(2));
        assert!(text(&again.stderr).contains("nothing to resume"));

        // The record reads back through history, show, stats, and goes with prune.
        let hist: Value =
            serde_json::from_slice(&toolgraph(&["history", "--json", "--db", &db]).stdout)
                .expect("json");
        assert_eq!(hist[0]["id"], json!(id));
        let timeline = dir.path().join(format!("shown{k}.svg"));
        let shown = toolgraph(&[
            "show",
            &id,
            "--db",
            &db,
            "--timeline",
            &timeline.to_string_lossy(),
        ]);
        assert!(
            text(&shown.stdout).contains("interrupted"),
            "{}",
            text(&shown.stdout)
        );
        let svg = std::fs::read_to_string(&timeline).expect("timeline from the store");
        assert_eq!(svg.matches(r#"<g class="row""#).count(), 7);
        let stats: Value =
            serde_json::from_slice(&toolgraph(&["stats", "--json", "--db", &db]).stdout)
                .expect("json");
        assert_eq!(stats["total_executions"], 1);
        assert_eq!(stats["tools"]["file_write"]["count"], 4);
        let tool_only: Value = serde_json::from_slice(
            &toolgraph(&[
                "stats", "--json", "--tool", "sleep", "--since", "1h", "--db", &db,
            ])
            .stdout,
        )
        .expect("json");
        assert_eq!(
            tool_only["tools"]
                .as_object()
                .map(|t| t.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["sleep".to_owned()])
        );
        let pruned = toolgraph(&["prune", "--older-than", "1h", "--db", &db]);
        assert!(
            text(&pruned.stdout).contains("pruned 0"),
            "{}",
            text(&pruned.stdout)
        );
        let pruned = toolgraph(&["prune", "--older-than", "0s", "--db", &db]);
        assert!(
            text(&pruned.stdout).contains("pruned 1"),
            "{}",
            text(&pruned.stdout)
        );
        assert!(store.history(5).await.expect("history").is_empty());
    }
}

#[test]
fn every_run_is_recorded_with_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/turn.json");
    let out = toolgraph(&["run", "--quiet", "--db", &db, &example.to_string_lossy()]);
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("recorded as execution "))
        .expect("the id is printed");
    let id = line
        .trim_start_matches("recorded as execution ")
        .split(' ')
        .next()
        .unwrap_or_default();
    let shown: Value =
        serde_json::from_slice(&toolgraph(&["show", id, "--json", "--db", &db]).stdout)
            .expect("json");
    assert_eq!(
        shown["results"][5]["output"]["greeting"],
        "Hello Ada, trip to Tokyo"
    );
    assert!(dir.path().join("t.db").exists());
    let off = toolgraph(&[
        "run",
        "--quiet",
        "--no-record",
        "--db",
        &db,
        &example.to_string_lossy(),
    ]);
    assert!(!text(&off.stdout).contains("recorded as execution"));
}
