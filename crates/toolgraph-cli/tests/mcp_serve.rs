//! `toolgraph mcp-serve` driven by real MCP clients: rmcp's client over standard
//! input/output (the binary as a child process) and over streamable HTTP on 127.0.0.1 — list
//! the tools (run_batch first, annotations as the tools' traits say), run a dependent batch
//! whose independent calls overlap, a malformed batch answered as an error result naming the
//! call, a direct call, the proxied tools of a configured MCP server with their annotations,
//! the record in the store, a clean stop at SIGINT (a running batch cancelled and recorded
//! so) and at Ctrl-C in a terminal. The official TypeScript SDK client
//! has its own test (`mcp_serve_typescript.rs`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use toolgraph_test_support::isolated;

const BIN: &str = env!("CARGO_BIN_EXE_toolgraph");

type Client = RunningService<RoleClient, ()>;

/// `toolgraph mcp-serve ARGS` over stdio, recording into `db`.
async fn stdio_client(db: &str, args: &[&str]) -> Client {
    let mut command = tokio::process::Command::from(isolated(BIN));
    command.arg("mcp-serve").arg("--db").arg(db).args(args);
    let transport = TokioChildProcess::new(command).expect("spawns toolgraph mcp-serve");
    tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

async fn call(client: &Client, name: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    let request = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
    tokio::time::timeout(Duration::from_secs(30), client.call_tool(request))
        .await
        .expect("answered in time")
        .expect("a tools/call answer")
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn find<'a>(tools: &'a [Tool], name: &str) -> &'a Tool {
    tools
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} is listed"))
}

/// (readOnlyHint, destructiveHint, idempotentHint, openWorldHint) of a tool.
fn hints(tool: &Tool) -> (Option<bool>, Option<bool>, Option<bool>, Option<bool>) {
    let a = tool.annotations.clone().unwrap_or_default();
    (
        a.read_only_hint,
        a.destructive_hint,
        a.idempotent_hint,
        a.open_world_hint,
    )
}

/// A batch with a `${ref}` from `b` to `a` and two independent slow calls.
fn dependent_batch() -> Value {
    json!([
        {"id": "a", "name": "echo", "arguments": {"word": "graph"}},
        {"id": "b", "name": "echo", "arguments": {"said": "${a.word}!"}},
        // The OpenAI and Anthropic shapes mix with the native one.
        {"id": "slow1", "type": "function", "function": {"name": "sleep", "arguments": "{\"ms\": 400}"}},
        {"type": "tool_use", "id": "slow2", "name": "sleep", "input": {"ms": 400}}
    ])
}

/// Checks run_batch's answer to [`dependent_batch`]; returns its execution id.
fn check_dependent_answer(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(false), "{}", text_of(result));
    let answer = result
        .structured_content
        .clone()
        .expect("structured content");
    let results = answer["results"].as_array().expect("results");
    let ids: Vec<&str> = results.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "slow1", "slow2"], "in call order");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{answer}");
    assert_eq!(results[1]["output"], json!({"said": "graph!"}));
    // The reference made b wait for a.
    assert!(results[1]["started_ms"].as_f64() >= results[0]["finished_ms"].as_f64());
    // The two sleeps overlapped: each started before the other ended.
    let span = |r: &Value| {
        (
            r["started_ms"].as_f64().expect("started"),
            r["finished_ms"].as_f64().expect("finished"),
        )
    };
    let (s1, e1) = span(&results[2]);
    let (s2, e2) = span(&results[3]);
    assert!(
        s1 < e2 && s2 < e1,
        "sleeps overlap: {s1}..{e1} and {s2}..{e2}"
    );
    for figure in ["makespan_ms", "sequential_ms", "speedup"] {
        assert!(answer[figure].as_f64().is_some(), "{figure} in {answer}");
    }
    let text = text_of(result);
    assert!(
        text.contains("speedup") && text.contains("slow2 (sleep): ok"),
        "{text}"
    );
    answer["execution_id"]
        .as_str()
        .expect("recorded: an execution id")
        .to_owned()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("runs.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_clients_list_tools_with_annotations_and_run_a_dependent_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_url(dir.path());
    let client = stdio_client(&db, &["--root", &dir.path().display().to_string()]).await;
    let info = client.peer_info().expect("server info");
    let server = info.server_info.clone().expect("serverInfo");
    assert_eq!(server.name, "toolgraph");

    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools[0].name, "run_batch", "run_batch comes first");
    let schema = serde_json::to_value(&*tools[0].input_schema).expect("schema");
    assert_eq!(schema["required"], json!(["tool_calls"]));
    assert_eq!(
        hints(find(&tools, "echo")),
        (Some(true), Some(false), Some(true), Some(false))
    );
    assert_eq!(
        hints(find(&tools, "file_write")),
        (Some(false), Some(true), Some(false), Some(false))
    );
    let (_, _, _, open_world) = hints(find(&tools, "http_fetch"));
    assert_eq!(open_world, Some(true));

    let result = call(
        &client,
        "run_batch",
        json!({"tool_calls": dependent_batch()}),
    )
    .await;
    let id = check_dependent_answer(&result);

    // A direct call is a batch of one.
    let direct = call(&client, "echo", json!({"x": 1})).await;
    assert_eq!(direct.is_error, Some(false));
    assert_eq!(direct.structured_content, Some(json!({"x": 1})));
    client.cancel().await.expect("closes");

    // The execution is in the store, as `run` records it.
    let shown = isolated(BIN)
        .args(["show", &id, "--db", &db, "--json"])
        .output()
        .expect("show runs");
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let stored: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(
        stored["results"].as_array().map(Vec::len),
        Some(4),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_error_results_naming_the_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = stdio_client(&sqlite_url(dir.path()), &[]).await;

    // The second call has no tool name.
    let missing = call(
        &client,
        "run_batch",
        json!({"tool_calls": [
            {"id": "fine", "name": "echo", "arguments": {}},
            {"id": "nameless", "arguments": {}}
        ]}),
    )
    .await;
    assert_eq!(missing.is_error, Some(true));
    let text = text_of(&missing);
    assert!(
        text.contains("nameless") && text.contains("nothing ran"),
        "{text}"
    );

    // An unknown tool, named with its call.
    let unknown = call(
        &client,
        "run_batch",
        json!({"tool_calls": [{"id": "ghost", "name": "no_such_tool", "arguments": {}}]}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    let text = text_of(&unknown);
    assert!(
        text.contains("ghost") && text.contains("no_such_tool"),
        "{text}"
    );

    // A reference to a call that is not in the batch.
    let dangling = call(
        &client,
        "run_batch",
        json!({"tool_calls": [{"id": "r", "name": "echo", "arguments": {"v": "${nowhere}"}}]}),
    )
    .await;
    assert_eq!(dangling.is_error, Some(true));
    assert!(
        text_of(&dangling).contains("nowhere"),
        "{}",
        text_of(&dangling)
    );

    // No `tool_calls` at all.
    let empty = call(&client, "run_batch", json!({})).await;
    assert_eq!(empty.is_error, Some(true));
    assert!(text_of(&empty).contains("tool_calls"));

    // A failing call is a result with isError, the batch's other calls still answered.
    let failing = call(
        &client,
        "run_batch",
        json!({"tool_calls": [
            {"id": "ok", "name": "echo", "arguments": {}},
            {"id": "bad", "name": "fail", "arguments": {"message": "boom"}}
        ]}),
    )
    .await;
    assert_eq!(failing.is_error, Some(true));
    let answer = failing.structured_content.expect("structured");
    assert_eq!(answer["results"][0]["status"], "ok");
    assert_eq!(answer["results"][1]["status"], "error");
    client.cancel().await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_a_configured_mcp_server_are_proxied_with_their_annotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The inner server is toolgraph itself: its tools carry known annotations.
    let inner = format!("inner={BIN} mcp-serve --no-record");
    let client = stdio_client(&sqlite_url(dir.path()), &["--mcp", &inner]).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(
        hints(find(&tools, "inner.echo")),
        (Some(true), Some(false), Some(true), Some(false)),
        "the inner server's annotations, as sent"
    );
    let (_, _, _, open_world) = hints(find(&tools, "inner.run_batch"));
    assert_eq!(open_world, Some(true));

    let result = call(
        &client,
        "run_batch",
        json!({"tool_calls": [
            {"id": "p", "name": "inner.echo", "arguments": {"via": "proxy"}},
            {"id": "q", "name": "echo", "arguments": {"got": "${p.via}"}}
        ]}),
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{}", text_of(&result));
    let answer = result.structured_content.expect("structured");
    assert_eq!(answer["results"][1]["output"], json!({"got": "proxy"}));
    client.cancel().await.expect("closes");
}

/// A server process, killed if the test ends before it stopped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `toolgraph mcp-serve --bind 127.0.0.1:0` and the URL its start line gives.
fn spawn_http(db: &str) -> (Server, String) {
    let mut child = isolated(BIN)
        .args(["mcp-serve", "--bind", "127.0.0.1:0", "--db", db])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let line = lines
        .next()
        .expect("a start line")
        .expect("readable stderr");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("a URL in {line:?}"))
        .to_owned();
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Server(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_clients_run_batches_and_sigint_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mut child, url) = spawn_http(&sqlite_url(dir.path()));
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    let client: Client = tokio::time::timeout(
        Duration::from_secs(30),
        ().serve(StreamableHttpClientTransport::from_uri(url.as_str())),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools[0].name, "run_batch");
    assert_eq!(
        hints(find(&tools, "sleep")),
        (Some(true), Some(false), Some(true), Some(false))
    );
    let result = call(
        &client,
        "run_batch",
        json!({"tool_calls": dependent_batch()}),
    )
    .await;
    check_dependent_answer(&result);
    client.cancel().await.expect("closes");

    let pid = child.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = wait_for(&mut child.0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "a server stopped as asked exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cancels_a_running_batch_and_records_it_cancelled() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_url(dir.path());
    let (mut child, url) = spawn_http(&db);
    let client: Client =
        ().serve(StreamableHttpClientTransport::from_uri(url.as_str()))
            .await
            .expect("handshake");
    let running = tokio::spawn(async move {
        let request = CallToolRequestParams::new("run_batch").with_arguments(
            json!({"tool_calls": [
                {"id": "quick", "name": "echo", "arguments": {}},
                {"id": "long", "name": "sleep", "arguments": {"ms": 60_000}}
            ]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let answer = client.call_tool(request).await;
        (client, answer)
    });
    // The batch is written ahead before it runs: wait until the store holds it.
    let history = || {
        isolated(BIN)
            .args(["history", "--db", &db, "--json"])
            .output()
            .expect("history runs")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&history().stdout).contains("running") {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = wait_for(&mut child.0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    // The client was answered: the batch, its long call cancelled.
    let (_client, answer) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call was answered")
        .expect("the client task");
    let answer = answer.expect("a tools/call answer");
    assert_eq!(answer.is_error, Some(true));
    let structured = answer.structured_content.clone().expect("structured");
    assert_eq!(structured["results"][0]["status"], "ok", "{structured}");
    assert_eq!(
        structured["results"][1]["status"], "cancelled",
        "{structured}"
    );
    let listed: Value = serde_json::from_slice(&history().stdout).expect("history JSON");
    let statuses: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses, ["cancelled"], "{listed}");
}

#[test]
fn non_loopback_addresses_are_refused_before_anything_starts() {
    let out = isolated(BIN)
        .args(["mcp-serve", "--bind", "0.0.0.0:0", "--no-record"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(out.stdout.is_empty());
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_at_a_terminal_stops_the_stdio_server_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut terminal) = toolgraph_test_support::Terminal::start(
        BIN,
        &["mcp-serve", "--no-record"],
        dir.path(),
        &[],
    ) else {
        return;
    };
    terminal.wait_for("standard input/output", Duration::from_secs(20));
    terminal.send_keys(&["C-c"]);
    // Stdin is a terminal whose read cannot be cancelled: the process must not wait for it.
    assert_eq!(terminal.wait_exit(Duration::from_secs(20)), 0);
    let screen = terminal.screen();
    assert!(screen.contains("toolgraph mcp-serve: stopped"), "{screen}");
}
