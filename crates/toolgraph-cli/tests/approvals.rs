//! Approvals on the command line: `chat` asks in a real terminal (tmux) — approve, deny
//! (the model reads "denied by the user" in its next request), edit (invalid JSON asked
//! again), always (the second call of the tool is not asked), Ctrl-C while asking cancels
//! the turn; without a terminal `ask` is denied saying how to allow it; without `--root`
//! chat offers no file tools; `run --approval deny-writes` refuses writes by policy.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use toolgraph::llm::Provider;
use toolgraph::llm::mock::{MockServer, Script};
use toolgraph_test_support::{Terminal, isolated};

const WAIT: Duration = Duration::from_secs(30);

async fn model(script: &str) -> MockServer {
    let script = Script::from_json(script).expect("script");
    MockServer::start_script(script).await.expect("bind")
}

/// `chat PROMPT` against `server` in a terminal, files under `root`.
fn chat_in_terminal(server: &MockServer, root: &Path, extra: &[&str]) -> Option<Terminal> {
    let base = server.base_url(Provider::OpenAi);
    let root_arg = root.to_string_lossy().into_owned();
    let mut args = vec![
        "chat",
        "do the work",
        "--quiet",
        "--no-record",
        "--base-url",
        &base,
        "--model",
        "scripted",
        "--root",
        &root_arg,
    ];
    args.extend_from_slice(extra);
    Terminal::start(
        env!("CARGO_BIN_EXE_toolgraph"),
        &args,
        root,
        &[("OPENAI_API_KEY".into(), "test-key".into())],
    )
}

/// The tool messages (`tool_call_id`, content) of the model's request `n`.
fn tool_messages(server: &MockServer, n: usize) -> Vec<(String, String)> {
    let requests = server.requests();
    let Some(request) = requests.get(n) else {
        panic!("no request {n}: {} requests", requests.len());
    };
    request.body["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| {
                    (
                        m["tool_call_id"].as_str().unwrap_or("").to_owned(),
                        m["content"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The id of the call the `n`-th question (from 1) is about.
fn asked_about(screen: &str, n: usize) -> String {
    let line = screen
        .lines()
        .filter(|l| l.contains(" wants to run "))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("no question {n}:\n{screen}"));
    line.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no call id in {line:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_asks_in_the_terminal_and_the_model_reads_approve_deny_and_edit() {
    let server = model(
        r#"{"turns": [
            {"tool_calls": [
                {"id": "w1", "name": "file_write", "arguments": {"path": "a.txt", "content": "A"}},
                {"id": "w2", "name": "file_write", "arguments": {"path": "b.txt", "content": "B"}},
                {"id": "w3", "name": "file_write", "arguments": {"path": "c.txt", "content": "draft"}},
                {"id": "r", "name": "list_dir", "arguments": {}}
            ]},
            {"text": "finished"}
        ]}"#,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut term) = chat_in_terminal(&server, dir.path(), &[]) else {
        return;
    };
    // One question at a time, in whatever order the calls were ready.
    for n in 1..=3 {
        let screen = term.wait_for_n("approve?", n, WAIT);
        assert!(screen.contains("(write)"), "{screen}");
        assert!(screen.contains("touches: writes file:"), "{screen}");
        match asked_about(&screen, n).as_str() {
            "w1" => term.send_line("y"),
            "w2" => term.send_line("n"),
            "w3" => {
                term.send_line("e");
                term.wait_for("new arguments (JSON on one line):", WAIT);
                term.send_line("{nope");
                term.wait_for("not JSON", WAIT);
                term.send_line(r#"{"path": "c.txt", "content": "edited"}"#);
            }
            other => panic!("asked about {other}"),
        }
    }
    let status = term.wait_exit(WAIT);
    let screen = term.screen();
    assert_eq!(status, 0, "the model answered:\n{screen}");
    assert!(screen.contains("finished"), "{screen}");
    // The read-only call was never asked about.
    assert_eq!(screen.matches("approve?").count(), 3, "{screen}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).ok();
    assert_eq!(read("a.txt").as_deref(), Some("A"));
    assert_eq!(read("b.txt"), None, "the denied call did not run");
    assert_eq!(read("c.txt").as_deref(), Some("edited"));
    let results = tool_messages(&server, 1);
    let content = |id: &str| {
        results
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no result for {id}: {results:?}"))
    };
    assert!(
        content("w2").contains("denied by the user") && content("w2").contains("file_write"),
        "{}",
        content("w2")
    );
    assert!(!content("w1").contains("denied"), "{}", content("w1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_approves_the_tool_for_the_rest_of_the_chat() {
    let server = model(
        r#"{"turns": [
            {"tool_calls": [{"id": "one", "name": "file_write", "arguments": {"path": "1.txt", "content": "1"}}]},
            {"tool_calls": [{"id": "two", "name": "file_write", "arguments": {"path": "2.txt", "content": "2"}}]},
            {"text": "both written"}
        ]}"#,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut term) = chat_in_terminal(&server, dir.path(), &[]) else {
        return;
    };
    term.wait_for("approve?", WAIT);
    term.send_line("always");
    let status = term.wait_exit(WAIT);
    let screen = term.screen();
    assert_eq!(status, 0, "{screen}");
    assert_eq!(
        screen.matches("approve?").count(),
        1,
        "asked once:\n{screen}"
    );
    assert!(dir.path().join("1.txt").exists() && dir.path().join("2.txt").exists());
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_asking_cancels_the_turn() {
    let server = model(
        r#"{"turns": [
            {"tool_calls": [{"id": "w", "name": "file_write", "arguments": {"path": "x.txt", "content": "x"}}]},
            {"text": "never reached"}
        ]}"#,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut term) = chat_in_terminal(&server, dir.path(), &[]) else {
        return;
    };
    term.wait_for("approve?", WAIT);
    term.send_keys(&["C-c"]);
    term.wait_exit(WAIT);
    let screen = term.screen();
    assert!(screen.contains("interrupted"), "{screen}");
    assert!(!dir.path().join("x.txt").exists(), "the call never ran");
    assert_eq!(server.requests().len(), 1, "no further turn");
}

/// `toolgraph ARGS` with no terminal (standard input empty), off the async threads.
async fn toolgraph(args: Vec<String>, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = isolated(env!("CARGO_BIN_EXE_toolgraph"));
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("toolgraph runs"))
        .await
        .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_ask_is_denied_saying_how_to_allow_it() {
    let server = model(
        r#"{"turns": [
            {"tool_calls": [{"id": "w", "name": "file_write", "arguments": {"path": "x.txt", "content": "x"}}]},
            {"text": "ok"}
        ]}"#,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "chat",
        "write",
        "--quiet",
        "--no-record",
        "--base-url",
        &server.base_url(Provider::OpenAi),
        "--root",
        &dir.path().to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec();
    let out = toolgraph(args, &[("OPENAI_API_KEY", "k")]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the model answered: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = tool_messages(&server, 1);
    let (_, content) = results.first().expect("a result");
    assert!(
        content.contains("needs approval and nothing can ask")
            && content.contains("--approval auto"),
        "{content}"
    );
    assert!(!dir.path().join("x.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_without_a_root_offers_no_file_tools_and_says_so() {
    let server = model(r#"{"turns": [{"text": "hello"}]}"#).await;
    let args: Vec<String> = [
        "chat",
        "hi",
        "--no-record",
        "--base-url",
        &server.base_url(Provider::OpenAi),
    ]
    .map(str::to_owned)
    .to_vec();
    let out = toolgraph(args, &[("OPENAI_API_KEY", "k")]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no file root given"), "{stderr}");
    let tools: Vec<String> = server.requests()[0].body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(tools.iter().any(|t| t == "http_fetch"), "{tools:?}");
    assert!(
        !tools
            .iter()
            .any(|t| t.starts_with("file_") || t == "list_dir"),
        "{tools:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_deny_writes_refuses_writes_by_policy_and_runs_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = dir.path().join("batch.json");
    std::fs::write(
        &batch,
        r#"[{"id": "w", "name": "file_write", "arguments": {"path": "x.txt", "content": "x"}},
            {"id": "r", "name": "list_dir", "arguments": {}}]"#,
    )
    .expect("batch");
    let args: Vec<String> = [
        "run",
        &batch.to_string_lossy(),
        "--json",
        "--quiet",
        "--no-record",
        "--approval",
        "deny-writes",
        "--root",
        &dir.path().to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec();
    let out = toolgraph(args, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result["results"][0]["error"]["kind"], "denied");
    let message = result["results"][0]["error"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.starts_with("denied by policy: file_write"),
        "{message}"
    );
    assert_eq!(result["results"][1]["status"], "ok");
    assert!(!dir.path().join("x.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_refuses_loopback_unless_allow_private_network_is_given() {
    let local = toolgraph_test_support::CountingServer::start(Duration::ZERO);
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = dir.path().join("fetch.json");
    let fetch = serde_json::json!([
        {"id": "f", "name": "http_fetch", "arguments": {"url": format!("{}/hello", local.url())}}
    ]);
    std::fs::write(&batch, fetch.to_string()).expect("batch");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "run",
            &batch.to_string_lossy(),
            "--json",
            "--quiet",
            "--no-record",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let refused = toolgraph(run(&[]), &[]).await;
    let result: Value = serde_json::from_slice(&refused.stdout).expect("json");
    assert_eq!(result["results"][0]["status"], "error", "{result}");
    let message = result["results"][0]["error"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("loopback"), "{message}");
    assert_eq!(local.hits(), 0, "nothing reached the server");

    let allowed = toolgraph(run(&["--allow-private-network"]), &[]).await;
    let result: Value = serde_json::from_slice(&allowed.stdout).expect("json");
    assert_eq!(result["results"][0]["status"], "ok", "{result}");
    assert_eq!(local.hits(), 1);
}
