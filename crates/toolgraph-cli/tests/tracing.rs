//! Traces and logs through the binary: `toolgraph run` with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at a real OTLP/HTTP receiver on 127.0.0.1 (protobuf, decoded with
//! `opentelemetry-proto`) sends one trace whose tree is execution → call → attempt, with
//! the GenAI attributes and error statuses; a collector that is down costs a warning, not
//! the run; `--log-format json` writes JSON lines with the spans' fields.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{Value, json};

fn toolgraph() -> Command {
    toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn call(id: &str, tool: &str, args: Value) -> Value {
    json!({"id": id, "name": tool, "arguments": args})
}

/// A dependency (`second` reads `first`), a parallel pair, a failing call and a retried
/// one (`fail` made idempotent, failing transiently: two attempts, then it fails).
fn write_batch(dir: &Path) -> String {
    let mut second = call("second", "echo", json!({"from": "${first}"}));
    second["depends_on"] = json!(["first"]);
    let batch = json!([
        call("first", "echo", json!({"n": 1})),
        second,
        call("left", "sleep", json!({"ms": 20})),
        call("right", "sleep", json!({"ms": 20})),
        call("broken", "fail", json!({"message": "broken on purpose"})),
        call(
            "flaky",
            "fail",
            json!({"message": "try again", "transient": true})
        ),
    ]);
    let path = dir.join("batch.json");
    std::fs::write(&path, batch.to_string()).expect("batch");
    path.to_string_lossy().into_owned()
}

/// `toolgraph run` of the batch with `env`, retries on (2 attempts, 1 ms apart).
fn run(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let batch = write_batch(dir);
    let mut cmd = toolgraph();
    cmd.current_dir(dir)
        .args(["run", "--no-record", &batch])
        .args(extra)
        .env("TOOLGRAPH_RETRY_MAX_ATTEMPTS", "2")
        .env("TOOLGRAPH_RETRY_BASE_DELAY_MS", "1")
        .env("TOOLGRAPH_TOOLS", "{ fail = { idempotent = true } }");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("toolgraph run")
}

/// An OTLP/HTTP receiver on 127.0.0.1: keeps every span it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    async fn traces(
        State(seen): State<Arc<Mutex<Vec<Span>>>>,
        body: Bytes,
    ) -> impl axum::response::IntoResponse {
        if let Ok(request) = ExportTraceServiceRequest::decode(body) {
            let spans = request
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans);
            seen.lock().expect("lock").extend(spans);
        }
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key)? {
        Any::StringValue(s) => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sends_one_trace_of_execution_call_and_attempt_spans_to_the_collector() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &path,
            &["--quiet"],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
                ("OTEL_SERVICE_NAME", "toolgraph-test"),
            ],
        )
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    // The process flushed before it exited: everything is here already.
    let spans = seen.lock().expect("lock").clone();
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };

    let executions = named("execution");
    assert_eq!(
        executions.len(),
        1,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let execution = executions[0];
    assert_eq!(
        execution.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "an execution with a failed call"
    );
    assert!(
        spans.iter().all(|s| s.trace_id == execution.trace_id),
        "one trace"
    );

    let calls: HashMap<&str, &Span> = spans
        .iter()
        .filter(|s| string(s, "gen_ai.operation.name") == Some("execute_tool"))
        .filter_map(|s| Some((string(s, "gen_ai.tool.call.id")?, s)))
        .collect();
    let mut ids: Vec<&str> = calls.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, ["broken", "first", "flaky", "left", "right", "second"]);
    for (id, span) in &calls {
        assert_eq!(
            span.parent_span_id, execution.span_id,
            "{id} under the execution"
        );
        let tool = string(span, "gen_ai.tool.name").expect("tool name");
        assert_eq!(span.name, format!("execute_tool {tool}"));
    }
    assert_eq!(string(calls["left"], "gen_ai.tool.name"), Some("sleep"));
    assert_eq!(string(calls["first"], "status"), Some("ok"));

    let broken = calls["broken"];
    let status = broken.status.as_ref().expect("status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "broken on purpose");
    assert_eq!(string(broken, "status"), Some("error"));
    assert!(
        calls["first"]
            .status
            .as_ref()
            .is_none_or(|s| s.code != StatusCode::Error as i32),
        "a call that succeeded has no error status"
    );

    let attempts_under = |call: &Span| -> Vec<&Span> {
        named("attempt")
            .into_iter()
            .filter(|a| a.parent_span_id == call.span_id)
            .collect()
    };
    for id in ["first", "second", "left", "right", "broken"] {
        assert_eq!(attempts_under(calls[id]).len(), 1, "{id}: one attempt");
    }
    let flaky = attempts_under(calls["flaky"]);
    assert_eq!(flaky.len(), 2, "the retried call: two attempts");
    assert!(
        flaky
            .iter()
            .all(|a| string(a, "error.kind") == Some("transient"))
    );
    assert_eq!(
        attribute(calls["flaky"], "attempts"),
        Some(&Any::IntValue(2))
    );
}

#[test]
fn a_collector_that_is_down_costs_one_warning_and_the_run_still_ends() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run(
        dir.path(),
        &["--quiet", "--json"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("the result as JSON");
    assert_eq!(result["results"].as_array().map(Vec::len), Some(6));
    let stderr = text(&out.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("sending traces to"))
        .count();
    assert_eq!(warnings, 1, "{stderr}");
}

#[test]
fn log_format_json_writes_json_lines_with_the_spans_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["--quiet", "-v", "--log-format", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let closed_call = |id: &str| {
        lines
            .iter()
            .find(|l| l["span"]["name"] == "call" && l["span"]["gen_ai.tool.call.id"] == id)
            .unwrap_or_else(|| panic!("no line for call {id}:\n{stderr}"))
    };
    let broken = closed_call("broken");
    assert_eq!(broken["level"], "INFO");
    assert_eq!(broken["span"]["status"], "error");
    assert_eq!(broken["span"]["gen_ai.tool.name"], "fail");
    assert_eq!(broken["span"]["otel.status_code"], "ERROR");
    assert_eq!(broken["spans"][0]["name"], "execution");
    assert_eq!(closed_call("flaky")["span"]["attempts"], 2);
    assert!(closed_call("left")["span"]["run_ms"].as_f64().is_some());
    let attempt = lines
        .iter()
        .find(|l| l["span"]["name"] == "attempt")
        .unwrap_or_else(|| panic!("no attempt line:\n{stderr}"));
    assert_eq!(attempt["spans"][1]["name"], "call", "{attempt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_sends_a_model_request_span_per_turn_with_its_executions_in_the_same_trace() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    // The notes the script reads, copied: the test writes nothing into the source tree.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("notes")).expect("mkdir");
    for entry in std::fs::read_dir(examples.join("workspace/notes")).expect("notes") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("a name").to_owned();
        std::fs::copy(&path, root.join("notes").join(name)).expect("copy");
    }
    let script = examples.join("chat-script.json");
    let out = tokio::task::spawn_blocking(move || {
        toolgraph()
            .arg("chat")
            .arg("What is left to do in my notes?")
            .arg("--mock")
            .arg(&script)
            .arg("--root")
            .arg(&root)
            .args(["--no-record", "--quiet", "--json"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
            .output()
            .expect("toolgraph chat")
    })
    .await
    .expect("joined");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let spans = seen.lock().expect("lock").clone();
    let agents: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "invoke_agent toolgraph")
        .collect();
    assert_eq!(
        agents.len(),
        1,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let agent = agents[0];
    assert!(
        spans.iter().all(|s| s.trace_id == agent.trace_id),
        "one trace"
    );
    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| string(s, "gen_ai.operation.name") == Some("chat"))
        .collect();
    assert!(
        requests.len() >= 2,
        "a turn with tool calls, then the answer"
    );
    for request in &requests {
        assert_eq!(request.parent_span_id, agent.span_id);
        let model = string(request, "gen_ai.request.model").expect("model");
        assert_eq!(request.name, format!("chat {model}"));
        assert_eq!(string(request, "gen_ai.provider.name"), Some("openai"));
        assert!(matches!(
            attribute(request, "gen_ai.usage.input_tokens"),
            Some(Any::IntValue(n)) if *n > 0
        ));
    }
    let executions: Vec<&Span> = spans.iter().filter(|s| s.name == "execution").collect();
    assert!(!executions.is_empty());
    assert!(
        executions.iter().all(|e| e.parent_span_id == agent.span_id),
        "the turns' executions under the agent's span"
    );
}
