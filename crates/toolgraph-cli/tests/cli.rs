//! The `toolgraph` binary end to end: examples, exit codes, JSON output, flags, plans.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn example(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    root.to_string_lossy().into_owned()
}

/// The binary, recording into a database of this test process (never the source tree),
/// with a home and data directory of its own (never the user's).
fn command() -> Command {
    let mut cmd = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"));
    let db = toolgraph_test_support::test_home().join("cli-tests.db");
    cmd.env(
        "TOOLGRAPH_DATABASE_URL",
        format!("sqlite://{}", db.display()),
    );
    cmd
}

fn toolgraph(args: &[&str]) -> Output {
    command().args(args).output().expect("toolgraph runs")
}

fn toolgraph_stdin(args: &[&str], input: &str) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn run_prints_a_table_and_exits_zero_when_every_call_succeeds() {
    let out = toolgraph(&["run", &example("turn.json")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("6/6 ok · parallel"), "{stdout}");
    for id in [
        "weather_paris",
        "weather_tokyo",
        "profile",
        "calendar",
        "greeting",
        "report",
    ] {
        assert!(stdout.contains(id), "{id} missing:\n{stdout}");
    }
    assert!(stdout.contains("critical path"), "{stdout}");
}

#[test]
fn run_json_gives_the_whole_result_with_references_resolved() {
    let out = toolgraph(&["run", "--json", &example("turn.json")]);
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert_eq!(r["success"], true);
    let results = r["results"].as_array().expect("results");
    let ids: Vec<&str> = results.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "weather_paris",
            "weather_tokyo",
            "profile",
            "calendar",
            "greeting",
            "report"
        ]
    );
    let report = &results[5]["output"];
    assert_eq!(report["greeting"], "Hello Ada, trip to Tokyo");
    assert_eq!(report["paris"], serde_json::json!({"slept_ms": 120}));
    assert_eq!(report["calendar"], 60);
    let sum: f64 = results
        .iter()
        .filter_map(|c| c["duration_ms"].as_f64())
        .sum();
    let seq = r["sequential_time_estimate_ms"].as_f64().expect("number");
    assert!((seq - sum).abs() < 0.01, "sequential {seq} vs sum {sum}");
    assert!(
        r["total_time_ms"].as_f64().expect("number") < seq,
        "parallel beats one-at-a-time"
    );
    assert_eq!(r["batches"].as_array().map(Vec::len), Some(3));
}

#[test]
fn run_exits_one_when_a_call_fails_and_still_prints_everything() {
    let out = toolgraph(&["run", "--json", &example("partial-failure.json")]);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    assert_eq!(r["success"], false);
    let status = |i: usize| r["results"][i]["status"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        [status(0), status(1), status(2), status(3)],
        ["error", "skipped", "ok", "timeout"]
    );
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(3));
}

#[test]
fn rejected_input_exits_two_names_every_problem_and_runs_nothing() {
    let out = toolgraph(&["run", &example("cycle.json")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("call d: unknown tool \"nope\""), "{stderr}");
    assert!(
        stderr.contains("dependency cycle: a → b → c → a"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing ran"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = toolgraph_stdin(&["run", "-"], "{not json");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not valid JSON"));

    let out = toolgraph(&["run", "--tool-limit", "sleep", &example("turn.json")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected NAME=N"));
}

#[test]
fn reads_standard_input_and_honours_limits_and_sequential_mode() {
    let batch = r#"[
        {"id": "a", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}},
        {"id": "b", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}},
        {"id": "c", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}},
        {"id": "d", "function": {"name": "echo", "arguments": "{}"}}
    ]"#;
    let intervals = |r: &Value| -> Vec<(f64, f64)> {
        r["results"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|c| c["name"] == "sleep")
                    .filter_map(|c| Some((c["started_ms"].as_f64()?, c["finished_ms"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let overlaps = |iv: &[(f64, f64)]| {
        iv.iter()
            .enumerate()
            .any(|(i, a)| iv.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1))
    };

    let free = json(&toolgraph_stdin(&["run", "--json", "-"], batch));
    assert!(
        overlaps(&intervals(&free)),
        "without limits the sleeps overlap"
    );

    let limited = json(&toolgraph_stdin(
        &["run", "--json", "--tool-limit", "sleep=1", "-"],
        batch,
    ));
    assert_eq!(limited["success"], true);
    assert!(
        !overlaps(&intervals(&limited)),
        "sleep=1 serialises the sleeps"
    );

    let seq = json(&toolgraph_stdin(
        &["run", "--json", "--sequential", "-"],
        batch,
    ));
    assert_eq!(seq["metadata"]["execution_mode"], "sequential");
    assert_eq!(seq["metadata"]["peak_in_flight"], 1);
    assert_eq!(seq["speedup"], 1.0);
}

#[test]
fn plan_json_lists_levels_edges_with_reasons_and_independence() {
    let out = toolgraph(&["plan", "--json", &example("turn.json")]);
    assert_eq!(out.status.code(), Some(0));
    let p = json(&out);
    assert_eq!(
        p["levels"],
        serde_json::json!([
            ["weather_paris", "weather_tokyo", "profile"],
            ["calendar", "greeting"],
            ["report"]
        ])
    );
    let edges = p["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 6);
    assert!(
        edges.iter().any(|e| e["from"] == "profile"
            && e["to"] == "calendar"
            && e["reason"] == "depends_on")
    );
    assert!(
        edges
            .iter()
            .any(|e| e["to"] == "greeting" && e["reason"] == "reference ${profile.user.name}")
    );
    assert_eq!(p["independent"], serde_json::json!([]));
    assert_eq!(p["dependent"].as_array().map(Vec::len), Some(6));
}

#[test]
fn plan_renders_dot_and_mermaid() {
    let dot = text(&toolgraph(&["plan", "--format", "dot", &example("turn.json")]).stdout);
    assert!(dot.starts_with("digraph toolgraph {"), "{dot}");
    assert!(
        dot.contains("\"profile\" -> \"greeting\" [label=\"reference ${profile.user.name}\"]"),
        "{dot}"
    );
    let mermaid = text(&toolgraph(&["plan", "--format", "mermaid", &example("turn.json")]).stdout);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("n2 -->|\"depends_on\"| n3"), "{mermaid}");
}

#[test]
fn anthropic_messages_run_including_cpu_bound_tools() {
    let out = toolgraph(&["run", "--json", &example("anthropic.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = json(&out);
    assert_eq!(
        r["results"][2]["output"],
        serde_json::json!({"a": 40, "b": 30})
    );
}

#[test]
fn bench_prints_every_figure() {
    let out = toolgraph(&[
        "bench", "--calls", "2000", "--chain", "200", "--runs", "1", "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let figures = json(&out);
    let names: Vec<&str> = figures
        .as_array()
        .map(|f| f.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    for expected in [
        "tokio spawn + join",
        "planning, 2000 calls",
        "executor overhead per no-op call",
        "overhead per dependency edge",
        "skewed layered DAG (8 pairs",
        "random DAG",
        "level by level",
    ] {
        assert!(
            names.iter().any(|n| n.contains(expected)),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let command = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo test"))
        .expect("README gives a cargo test command")
        .split(" #")
        .next()
        .unwrap_or_default()
        .trim();
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run must run `{command}` exactly"
    );
}

#[test]
fn tools_lists_every_builtin_with_schema_and_traits() {
    let out = toolgraph(&["tools"]);
    assert_eq!(out.status.code(), Some(0));
    let listing = text(&out.stdout);
    assert!(listing.contains("burn  [parallel-safe, idempotent (retried on transient errors), blocking (runs on the blocking pool), cost 1 cpu, 0 MB]"), "{listing}");
    assert!(listing.contains("fail  [parallel-safe]"), "{listing}");
    let tools = json(&toolgraph(&["tools", "--json"]));
    let names: Vec<&str> = tools
        .as_array()
        .map(|t| t.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            "sleep",
            "echo",
            "fail",
            "burn",
            "file_read",
            "file_write",
            "list_dir",
            "file_search",
            "http_fetch"
        ]
    );
    assert_eq!(
        tools[0]["parameters"]["required"],
        serde_json::json!(["ms"])
    );
    assert_eq!(tools[0]["traits"]["idempotent"], true);
}

#[test]
fn timeline_draws_rows_arrows_the_critical_path_and_an_axis() {
    let dir = std::env::temp_dir().join(format!("toolgraph-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("turn.svg");
    let out = toolgraph(&[
        "run",
        "--timeline",
        path.to_str().expect("utf-8"),
        &example("turn.json"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let svg = std::fs::read_to_string(&path).expect("timeline written");
    let count = |needle: &str| svg.matches(needle).count();
    assert!(svg.starts_with("<svg"), "an SVG document");
    assert_eq!(count(r#"<g class="row""#), 6, "one row per call");
    assert_eq!(count(r#"class="edge"#), 6, "one arrow per edge");
    // weather_paris (120 ms) → report is the longest chain.
    assert_eq!(count(r#"class="bar run critical""#), 2);
    assert_eq!(count(r#"class="edge critical""#), 1);
    assert!(svg.contains(r#"<g class="row" data-id="weather_paris">"#));
    let ticks = count(r#"<g class="tick">"#);
    assert!((5..=15).contains(&ticks), "{ticks} axis ticks");
    assert!(
        svg.contains(">0 ms<") && svg.contains(">100 ms<"),
        "axis labels"
    );

    let failed = dir.join("failed.svg");
    let out = toolgraph(&[
        "run",
        "--timeline",
        failed.to_str().expect("utf-8"),
        &example("partial-failure.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let svg = std::fs::read_to_string(&failed).expect("timeline written");
    assert!(
        svg.contains(r#"class="not-run""#) && svg.contains(">skipped<"),
        "the skipped call is shown"
    );
    assert!(
        svg.contains("#d64545") && svg.contains("#e8912d"),
        "error and timeout colours"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("toolgraph.toml");
    std::fs::write(&path, text).expect("write config");
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

fn toolgraph_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("toolgraph runs")
}

#[test]
fn configuration_precedence_is_file_then_environment_then_flags() {
    let (_dir, config) = write_config("[executor]\nmax_parallel_calls = 2\n");
    let limit = |out: Output| json(&out)["metadata"]["max_parallel_calls"].as_u64();
    let turn = example("turn.json");
    let base = [
        "run",
        "--json",
        "--quiet",
        "--config",
        config.as_str(),
        turn.as_str(),
    ];
    assert_eq!(limit(toolgraph_env(&base, &[])), Some(2));
    assert_eq!(
        limit(toolgraph_env(
            &base,
            &[("TOOLGRAPH_MAX_PARALLEL_CALLS", "3")]
        )),
        Some(3)
    );
    let mut with_flag = base.to_vec();
    with_flag.extend(["--max-parallel", "4"]);
    assert_eq!(
        limit(toolgraph_env(
            &with_flag,
            &[("TOOLGRAPH_MAX_PARALLEL_CALLS", "3")]
        )),
        Some(4)
    );
}

#[test]
fn unknown_configuration_keys_stop_the_run_and_are_named() {
    let (_dir, config) =
        write_config("[executor]\nmax_parallel_calls = 2\nenable_paralel = false\n");
    let out = toolgraph(&["run", "--config", &config, &example("turn.json")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("enable_paralel"), "{stderr}");
    let out = toolgraph_env(
        &["run", &example("turn.json")],
        &[("TOOLGRAPH_MAX_PARALEL", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("TOOLGRAPH_MAX_PARALEL names no configuration field"));
}

#[test]
fn shell_is_not_available_unless_configured() {
    let batch =
        r#"[{"id": "s", "function": {"name": "shell", "arguments": "{\"command\": \"ls\"}"}}]"#;
    let out = toolgraph_stdin(&["run", "-"], batch);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("call s: unknown tool \"shell\""),
        "{}",
        text(&out.stderr)
    );
    let (_dir, config) = write_config("[shell]\nenabled = true\nallow = [\"ls\"]\n");
    let out = toolgraph_stdin(
        &["run", "--json", "--quiet", "--config", &config, "-"],
        batch,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_research_example_reads_searches_and_writes_a_summary_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("workspace");
    std::fs::create_dir_all(workspace.join("notes")).expect("mkdir");
    let notes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workspace/notes");
    for name in ["architecture.md", "incidents.md", "roadmap.md"] {
        std::fs::copy(notes.join(name), workspace.join("notes").join(name)).expect("copy note");
    }
    let root = workspace.to_string_lossy().into_owned();
    let out = toolgraph(&[
        "run",
        "--json",
        "--quiet",
        "--config",
        &example("toolgraph.toml"),
        "--root",
        &root,
        &example("research.json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = json(&out);
    let summary =
        std::fs::read_to_string(workspace.join("out/summary.md")).expect("summary written");
    assert!(
        summary
            .starts_with("# Weekly summary\n\nFiles: architecture.md, incidents.md, roadmap.md\n"),
        "{summary}"
    );
    assert!(
        summary.contains("TODO: make shell exclusive by default"),
        "{summary}"
    );
    assert!(
        summary.contains("API check took 150 ms, weather 110 ms, index built in 80 ms"),
        "{summary}"
    );
    let check = &r["results"][9]["output"]["content"];
    assert!(
        check
            .as_str()
            .is_some_and(|c| c.starts_with("# Weekly summary")),
        "the read ran after the write: {check}"
    );
    assert_eq!(r["results"][9]["level"], 2);
}

#[test]
fn progress_goes_to_stderr_as_lines_when_not_a_terminal_and_quiet_silences_it() {
    let out = toolgraph(&["run", &example("turn.json")]);
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" ok ")).count(),
        6,
        "{stderr}"
    );
    assert!(stderr.contains("weather_paris (sleep)"), "{stderr}");
    let quiet = toolgraph(&["run", "--quiet", &example("turn.json")]);
    assert!(text(&quiet.stderr).is_empty(), "{}", text(&quiet.stderr));
}

#[test]
fn an_html_timeline_wraps_the_picture_in_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.html");
    let out = toolgraph(&[
        "run",
        "--quiet",
        "--timeline",
        path.to_str().expect("utf-8"),
        &example("turn.json"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let page = std::fs::read_to_string(&path).expect("written");
    assert!(
        page.starts_with("<!doctype html>")
            && page.contains("<svg")
            && page.contains("weather_paris")
    );
}

#[test]
fn operator_overrides_in_the_config_file_win_over_a_tools_own_traits() {
    let batch = r#"[
        {"id": "a", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}},
        {"id": "b", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}},
        {"id": "c", "function": {"name": "sleep", "arguments": "{\"ms\": 20}"}}
    ]"#;
    let (_dir, config) = write_config("[tools.sleep]\nparallel_safe = false\n");
    let r = json(&toolgraph_stdin(
        &["run", "--json", "--quiet", "--config", &config, "-"],
        batch,
    ));
    assert_eq!(
        r["metadata"]["peak_in_flight"], 1,
        "an exclusive tool runs alone"
    );
    assert_eq!(r["metadata"]["edges"], 2, "ordered as emitted");
    let listing = text(&toolgraph(&["tools", "--config", &config]).stdout);
    assert!(
        listing.contains("sleep  [exclusive, idempotent"),
        "{listing}"
    );

    let (_dir, bad) = write_config("[tools.nosuchtool]\nmax_concurrency = 1\n");
    let out = toolgraph_stdin(&["run", "--config", &bad, "-"], batch);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("[tools.nosuchtool]: no tool named \"nosuchtool\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_benchmark_dags_are_written_as_runnable_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = toolgraph(&[
        "bench",
        "--write-workloads",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let written = std::fs::read_to_string(dir.path().join("skewed-layers.json")).expect("written");
    let shipped =
        std::fs::read_to_string(example("dags/skewed-layers.json")).expect("examples/dags");
    assert_eq!(written, shipped, "examples/dags is what the benchmark runs");
    let plan = json(&toolgraph(&[
        "plan",
        "--json",
        &example("dags/skewed-layers.json"),
    ]));
    assert_eq!(plan["levels"].as_array().map(Vec::len), Some(2));
}

/// The reference MCP servers installed by `npm ci --prefix crates/toolgraph-mcp/tests/servers`.
fn mcp_bin(name: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../toolgraph-mcp/tests/servers/node_modules/.bin")
        .join(name);
    if path.exists() {
        return Some(path.to_string_lossy().into_owned());
    }
    toolgraph_test_support::skip(&format!(
        "{name} is not installed: run npm ci --prefix crates/toolgraph-mcp/tests/servers"
    ));
    None
}

#[test]
fn mcp_servers_from_the_command_line_show_their_classes_and_run_in_a_batch() {
    let Some(fs) = mcp_bin("mcp-server-filesystem") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.txt"), "alpha").expect("write");
    let spec = format!("fs={fs} {}", dir.path().display());
    let listing = text(&toolgraph(&["tools", "--mcp", &spec]).stdout);
    assert!(listing.contains("fs.write_file  [exclusive]"), "{listing}");
    assert!(
        listing.contains("class from: exclusive: readOnlyHint=false, destructiveHint=true"),
        "{listing}"
    );
    assert!(
        listing.contains("fs.read_text_file  [parallel-safe"),
        "{listing}"
    );
    let batch = r#"[
        {"id": "r", "function": {"name": "fs.read_text_file", "arguments": "{\"path\": \"a.txt\"}"}},
        {"id": "w", "function": {"name": "write_file", "arguments": "{\"path\": \"b.txt\", \"content\": \"${r.content}!\"}"}}
    ]"#;
    let out = toolgraph_stdin(&["run", "--json", "--quiet", "--mcp", &spec, "-"], batch);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.txt"))
            .ok()
            .as_deref(),
        Some("alpha!")
    );
    let bad = toolgraph(&[
        "tools",
        "--mcp",
        "broken=node -e \"console.error('no way'); process.exit(3)\"",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains("broken") && stderr.contains("no way"),
        "{stderr}"
    );
}
