//! What a new user trips over, end to end through the binary: a closed pipe, Ctrl-C, output
//! paths, wide characters in the table, empty batches and zero sizes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use unicode_width::UnicodeWidthStr;

fn toolgraph() -> Command {
    toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn call(id: &str, tool: &str, args: Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": tool, "arguments": args.to_string()}})
}

fn write(dir: &Path, name: &str, batch: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, batch.to_string()).expect("batch");
    path.to_string_lossy().into_owned()
}

fn db(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("t.db").display())
}

fn history(db: &str) -> Value {
    let out = toolgraph()
        .args(["history", "--json", "--db", db])
        .output()
        .expect("history");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)))
}

/// Runs `args` with standard output a pipe whose reader is gone before anything is written.
fn with_stdout_closed(args: &[&str]) -> Output {
    let mut child = toolgraph()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_and_a_run_still_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let calls: Vec<Value> = (0..500)
        .map(|i| call(&format!("c{i}"), "echo", json!({"i": i})))
        .collect();
    let big = write(dir.path(), "big.json", &Value::Array(calls));
    let db = db(dir.path());
    let timeline = dir.path().join("t.svg");
    let bench_db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["plan", "--json", &big],
        vec!["plan", &big],
        vec!["tools"],
        vec![
            "run",
            "--quiet",
            "--db",
            &db,
            "--timeline",
            timeline.to_str().expect("utf-8"),
            &big,
        ],
        vec!["run", "--quiet", "--json", "--no-record", &big],
        vec!["history", "--db", &db],
        vec![
            "bench",
            "--json",
            "--calls",
            "10",
            "--chain",
            "10",
            "--runs",
            "1",
            "--concurrent-executions",
            "1",
            "--no-memory",
            "--record-into",
            &bench_db,
        ],
    ];
    for args in cases {
        let out = with_stdout_closed(&args);
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.is_empty(), "{args:?} ends quietly: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: as `ls | head` does"
        );
    }
    // The run went on: recorded, and its timeline drawn.
    let rows = history(&db);
    assert_eq!(rows[0]["calls"], 500, "{rows}");
    assert_eq!(rows[0]["status"], "finished");
    assert!(timeline.exists());
}

/// Spawns a command and waits until its standard error has a line containing `marker`.
fn spawn_until(cmd: &mut Command, marker: &str) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the marker line within 30 s");
    (child, reader)
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn ctrl_c_cancels_the_run_records_it_cancelled_and_resume_finishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = json!([
        call("quick", "sleep", json!({"ms": 5})),
        call("slow_a", "sleep", json!({"ms": 2500})),
        call("slow_b", "sleep", json!({"ms": 2500})),
        call("after", "echo", json!({"a": "${slow_a}"})),
    ]);
    let input = write(dir.path(), "long.json", &batch);
    let db = db(dir.path());
    let (child, stderr) = spawn_until(
        toolgraph().args(["run", "--db", &db, &input]),
        "ok        quick",
    );
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    let stdout = text(&out.stdout);
    let stderr = stderr.join().expect("stderr");
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("interrupted: cancelling the running calls"),
        "{stderr}"
    );
    // The summary of what happened: the table, the figures, and how to finish it.
    for want in [
        "quick",
        "slow_a",
        "cancelled",
        "1/4 ok",
        "recorded as cancelled",
    ] {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    let rows = history(&db);
    assert_eq!(rows[0]["status"], "cancelled", "{rows}");
    let id = rows[0]["id"].as_str().expect("id").to_owned();
    assert!(
        stdout.contains(&format!("toolgraph resume {id}")),
        "{stdout}"
    );

    let resumed = toolgraph()
        .args(["resume", &id, "--json", "--quiet", "--db", &db])
        .output()
        .expect("resume");
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let r: Value = serde_json::from_slice(&resumed.stdout).expect("json");
    assert_eq!(
        r["metadata"]["resume"],
        json!({"kept": 1, "rerun": 2, "interrupted": 0}),
        "quick kept; the cancelled sleeps (idempotent) run again; after never started"
    );
    let statuses: Vec<&str> = r["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|c| c["status"].as_str())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "ok", "ok"]);
    assert_eq!(history(&db)[0]["status"], "finished");
}

/// The processes whose command line is exactly `cmdline` (NUL-separated words).
fn processes(cmdline: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && text(&cmd).trim_end_matches('\0').replace('\0', " ") == cmdline
        {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn ctrl_c_kills_the_shell_process_groups_of_running_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let config = dir.path().join("toolgraph.toml");
    std::fs::write(
        &config,
        format!(
            "[files]\nroot = {:?}\n[shell]\nenabled = true\nallow = [\"sleep\"]\n[tools.shell]\nparallel_safe = true\n",
            work.display().to_string()
        ),
    )
    .expect("config");
    // A duration no other process on the machine sleeps for.
    let nap = format!("sleep 97.{}", std::process::id());
    let batch = json!([
        call("ready", "echo", json!({})),
        call("nap", "shell", json!({"command": nap})),
    ]);
    let input = write(dir.path(), "nap.json", &batch);
    let (child, stderr) = spawn_until(
        toolgraph().args([
            "run",
            "--no-record",
            "--config",
            config.to_str().expect("utf-8"),
            &input,
        ]),
        "ok        ready",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes(&nap).is_empty() {
        assert!(Instant::now() < deadline, "the shell call never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    let _ = stderr.join();
    assert_eq!(out.status.code(), Some(130));
    assert!(text(&out.stdout).contains("cancelled"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes(&nap).is_empty() {
        assert!(
            Instant::now() < deadline,
            "an orphan `{nap}` outlived the run: {:?}",
            processes(&nap)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn output_paths_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(
        dir.path(),
        "b.json",
        &json!([call("a", "echo", json!({"x": 1}))]),
    );
    let db = db(dir.path());
    let png = dir.path().join("t.png");
    let missing = dir.path().join("no/such/dir/t.svg");
    for (timeline, says) in [
        (png.to_str().expect("utf-8"), "SVG"),
        (missing.to_str().expect("utf-8"), "does not exist"),
    ] {
        let out = toolgraph()
            .args(["run", "--db", &db, "--timeline", timeline, &input])
            .output()
            .expect("run");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing ran");
    }
    assert!(!png.exists());
    assert_eq!(history(&db), json!([]), "nothing was recorded");
}

#[test]
fn a_timeline_that_cannot_be_written_after_the_run_keeps_the_runs_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("pictures");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let input = write(
        dir.path(),
        "b.json",
        &json!([
            call("nap", "sleep", json!({"ms": 1500})),
            call("bad", "fail", json!({}))
        ]),
    );
    let timeline = out_dir.join("t.svg");
    let child = toolgraph()
        .args(["run", "--quiet", "--no-record", "--timeline"])
        .arg(&timeline)
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The path was fine when checked; it goes away while the calls run.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(&out_dir).expect("rmdir");
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run's own code (a call failed), not 2: {stderr}"
    );
    assert!(stderr.contains("writing the timeline"), "{stderr}");
    assert!(text(&out.stdout).contains("1/2 ok"));
}

/// The display column where `needle` starts in `line`.
fn column_of(line: &str, needle: &str) -> usize {
    let at = line
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in {line}"));
    line[..at].width()
}

#[test]
fn table_columns_stay_aligned_with_wide_ids_and_outputs_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "x".repeat(200);
    let input = write(
        dir.path(),
        "wide.json",
        &json!([
            call("天気予報", "echo", json!({"city": "東京"})),
            call("a", "echo", json!({"long": long})),
            call(
                "データ取得_1",
                "fail",
                json!({"message": "upstream said no"})
            ),
        ]),
    );
    let out = toolgraph()
        .args(["run", "--quiet", "--no-record", "--show-output", &input])
        .output()
        .expect("run");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().take(4).collect();
    let tools = ["tool", "echo", "echo", "fail"];
    let statuses = ["status", "ok", "ok", "error"];
    let outputs = [
        "output",
        "{\"city\":\"東京\"}",
        "{\"long\":",
        "upstream said no",
    ];
    for (column, cells) in [tools, statuses, outputs].iter().enumerate() {
        let at: Vec<usize> = lines
            .iter()
            .zip(cells.iter())
            .map(|(l, c)| column_of(l, c))
            .collect();
        assert!(
            at.iter().all(|c| *c == at[0]),
            "column {column} starts at one display column: {at:?}\n{stdout}"
        );
    }
    let cut = lines[2];
    assert!(cut.ends_with('…'), "{cut}");
    assert!(
        cut[cut.find("{\"long\"").expect("output")..].width() <= 48,
        "{cut}"
    );
}

#[test]
fn an_empty_batch_prints_0_calls_and_is_not_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "empty.json", &json!([]));
    let db = db(dir.path());
    let out = toolgraph()
        .args(["run", "--db", &db, &input])
        .output()
        .expect("run");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(stdout, "0 calls: nothing to run\n");
    let json_out = toolgraph()
        .args(["run", "--json", "--db", &db, &input])
        .output()
        .expect("run");
    let json_text = text(&json_out.stdout);
    assert!(!json_text.contains("-0"), "no negative zero: {json_text}");
    let r: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(r["results"], json!([]));
    assert!(
        !PathBuf::from(db.trim_start_matches("sqlite://")).exists(),
        "no store was opened"
    );
}

#[test]
fn zero_and_invalid_bench_sizes_are_refused_by_the_parser() {
    for (args, value) in [
        (["--calls", "0"], "0"),
        (["--chain", "0"], "0"),
        (["--runs", "0"], "0"),
        (["--concurrent-executions", "0"], "0"),
        (["--memory-calls", "1000,0"], "0"),
        (["--calls", "many"], "many"),
    ] {
        let out = toolgraph().arg("bench").args(args).output().expect("bench");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{}", args[0])),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("at least 1") || stderr.contains("not a whole number"),
            "{stderr}"
        );
    }
}
