//! The binary's configuration surface as a new user meets it: where the file comes from,
//! what a bad file, variable or flag says, which flags each command takes (and which it
//! refuses), logs on standard error only, and MCP failures in plain words.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The binary in `dir`, recording into a database there, with none of the caller's
/// configuration or log variables and `env` set.
fn toolgraph_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"));
    cmd.current_dir(dir).args(args);
    cmd.env(
        "TOOLGRAPH_DATABASE_URL",
        format!("sqlite://{}", dir.join("runs.db").display()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("toolgraph runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// Exit code 2, nothing on standard output, nothing recorded; returns standard error.
fn rejected(dir: &Path, out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(text(&out.stdout), "", "nothing ran: {stderr}");
    assert!(!dir.join("runs.db").exists(), "nothing recorded: {stderr}");
    stderr
}

#[test]
fn a_missing_config_file_is_named_with_the_os_error_said_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let turn = example("turn.json");
    for (args, env, names) in [
        (
            vec!["run", "--config", "nope.toml", turn.as_str()],
            vec![],
            "reading the configuration file nope.toml: ",
        ),
        (
            vec!["run", turn.as_str()],
            vec![("TOOLGRAPH_CONFIG", "nope.toml")],
            "reading the configuration file nope.toml (from TOOLGRAPH_CONFIG): ",
        ),
    ] {
        let stderr = rejected(dir.path(), &toolgraph_in(dir.path(), &args, &env));
        assert!(
            stderr.starts_with(&format!("toolgraph: {names}")),
            "{stderr}"
        );
        assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
        assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    }
}

#[test]
fn toolgraph_config_chooses_the_file_and_the_flag_wins_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("by-variable.toml"),
        "[executor]\nmax_parallel_calls = 3\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("by-flag.toml"),
        "[executor]\nmax_parallel_calls = 5\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("toolgraph.toml"),
        "[executor]\nmax_parallel_calls = 7\n",
    )
    .expect("write");
    let turn = example("turn.json");
    let limit = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["run", "--json", "--quiet", "--no-record"];
        all.extend_from_slice(args);
        all.push(&turn);
        let out = toolgraph_in(dir.path(), &all, env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        json(&out)["metadata"]["max_parallel_calls"].as_u64()
    };
    assert_eq!(limit(&[], &[]), Some(7), "./toolgraph.toml by default");
    let by_var = [("TOOLGRAPH_CONFIG", "by-variable.toml")];
    assert_eq!(limit(&[], &by_var), Some(3), "env > default");
    assert_eq!(
        limit(&["--config", "by-flag.toml"], &by_var),
        Some(5),
        "flag > env"
    );
}

#[test]
fn a_variable_that_does_not_fit_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = toolgraph_in(
        dir.path(),
        &["run", &example("turn.json")],
        &[("TOOLGRAPH_MAX_PARALLEL_CALLS", "abc")],
    );
    let stderr = rejected(dir.path(), &out);
    assert!(
        stderr.starts_with(
            "toolgraph: environment variable TOOLGRAPH_MAX_PARALLEL_CALLS: invalid type: string \"abc\""
        ),
        "{stderr}"
    );
    // Every field has its variable: TOOLGRAPH_LLM_MODEL is one.
    let out = toolgraph_in(
        dir.path(),
        &["plan", &example("turn.json")],
        &[("TOOLGRAPH_LLM_MODEL", "llama3.2")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_llm_section_takes_the_provider_spelling_of_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    for provider in ["openai", "anthropic", "open_ai"] {
        std::fs::write(
            dir.path().join("toolgraph.toml"),
            format!("[llm]\nprovider = \"{provider}\"\n"),
        )
        .expect("write");
        let out = toolgraph_in(dir.path(), &["plan", &example("turn.json")], &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{provider}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_limit_for_an_unknown_tool_is_refused_naming_the_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = toolgraph_in(
        dir.path(),
        &["run", "--tool-limit", "nosuch=3", &example("turn.json")],
        &[],
    );
    let stderr = rejected(dir.path(), &out);
    assert!(
        stderr.starts_with(
            "toolgraph: per-tool limit for \"nosuch\": no such tool (known: sleep, echo, fail, burn,"
        ),
        "{stderr}"
    );
    for (limit, says) in [
        ("sleep", "expected NAME=N"),
        ("sleep=0", "the limit for sleep must be at least 1"),
        ("sleep=x", "\"x\" is not a whole number"),
    ] {
        let out = toolgraph_in(
            dir.path(),
            &["run", "--tool-limit", limit, &example("turn.json")],
            &[],
        );
        let stderr = rejected(dir.path(), &out);
        assert!(stderr.contains(says), "{limit}: {stderr}");
    }
}

#[test]
fn each_command_takes_only_the_flags_it_honours_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let turn = example("turn.json");
    for (args, says) in [
        (
            vec!["plan", "--no-record", &turn],
            "unexpected argument '--no-record'",
        ),
        (
            vec!["plan", "--fail-fast", &turn],
            "unexpected argument '--fail-fast'",
        ),
        (
            vec!["plan", "--sequential", &turn],
            "unexpected argument '--sequential'",
        ),
        (
            vec!["plan", "--tool-limit", "sleep=1", &turn],
            "unexpected argument '--tool-limit'",
        ),
        (
            vec!["tools", "--no-record"],
            "unexpected argument '--no-record'",
        ),
        (
            vec!["tools", "--fail-fast"],
            "unexpected argument '--fail-fast'",
        ),
        (
            vec!["tools", "--sequential"],
            "unexpected argument '--sequential'",
        ),
        (
            vec!["resume", "x", "--sequential"],
            "unexpected argument '--sequential'",
        ),
        (
            vec!["resume", "x", "--no-record"],
            "unexpected argument '--no-record'",
        ),
        (
            vec!["prune", "--older-than", "1d", "--sequential"],
            "unexpected argument '--sequential'",
        ),
        (
            vec!["plan", "--format", "mermaid", "--json", &turn],
            "'--format <FORMAT>' cannot be used with '--json'",
        ),
        (
            vec!["run", "--db", "memory:", "--no-record", &turn],
            "'--db <URL>' cannot be used with '--no-record'",
        ),
        (
            vec!["run", "--sequential", "--max-parallel", "2", &turn],
            "'--sequential' cannot be used with '--max-parallel <N>'",
        ),
        (
            vec![
                "chat",
                "hi",
                "--mock",
                "x.json",
                "--base-url",
                "http://127.0.0.1:1/v1",
            ],
            "'--mock <SCRIPT.json>' cannot be used with '--base-url <URL>'",
        ),
        (
            vec!["run", "--max-parallel", "0", &turn],
            "invalid value '0'",
        ),
    ] {
        let stderr = rejected(dir.path(), &toolgraph_in(dir.path(), &args, &[]));
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // What each takes still works.
    for args in [
        vec!["plan", "--format", "mermaid", "--root", ".", &turn],
        vec!["plan", "--json", &turn],
        vec!["tools", "--json", "--root", "."],
    ] {
        let out = toolgraph_in(dir.path(), &args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn logs_go_to_standard_error_and_never_into_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let turn = example("turn.json");
    let out = toolgraph_in(dir.path(), &["run", "--json", "-vv", &turn], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        json(&out)["success"],
        true,
        "standard output is the JSON alone"
    );
    let stderr = text(&out.stderr);
    for event in [
        "configuration loaded",
        "store opened",
        "execution started",
        "execution ended",
    ] {
        assert!(stderr.contains(event), "{event}: {stderr}");
    }

    let quiet = toolgraph_in(dir.path(), &["run", "--json", "--quiet", &turn], &[]);
    assert_eq!(text(&quiet.stderr), "", "warnings only by default");

    for var in ["RUST_LOG", "TOOLGRAPH_LOG"] {
        let out = toolgraph_in(
            dir.path(),
            &["run", "--json", "--quiet", &turn],
            &[(var, "toolgraph=info")],
        );
        assert_eq!(json(&out)["success"], true);
        assert!(
            text(&out.stderr).contains("execution started"),
            "{var}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn mcp_failures_name_the_server_and_the_step_in_plain_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    for (spec, says) in [
        (
            "ghost=/nonexistent/toolgraph-no-such-server --flag".to_owned(),
            "toolgraph: MCP server `ghost` (/nonexistent/toolgraph-no-such-server --flag): \
             spawn failed: cannot run `/nonexistent/toolgraph-no-such-server`: No such file"
                .to_owned(),
        ),
        (
            format!("down={url}"),
            format!(
                "toolgraph: MCP server `down` ({url}): initialize failed: cannot connect to {url}: "
            ),
        ),
    ] {
        let out = toolgraph_in(dir.path(), &["tools", "--mcp", &spec], &[]);
        let stderr = rejected(dir.path(), &out);
        assert!(stderr.starts_with(&says), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line, no library log: {stderr}"
        );
        for leak in ["rmcp::", "Transport [", "WorkerTransport", "reqwest::"] {
            assert!(!stderr.contains(leak), "{leak}: {stderr}");
        }
    }
}
