//! `toolgraph chat --stream` end to end against a scripted SSE server on loopback: calls
//! started early (each an execution of its own, running at the same time) are named by
//! their own ids in the progress lines, and the summary splits model time from tool time.

use std::time::Duration;

use serde_json::{Value, json};
use toolgraph::llm::Provider;
use toolgraph::llm::mock::{MockServer, Reply};

fn delta(delta: Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

fn call(index: u64, id: &str, name: &str, args: &str) -> Value {
    delta(
        json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}}]}),
    )
}

fn finish(reason: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

/// Turn 1: two sleeps whose arguments are whole early (each is whole when the next call
/// begins), a third call, then more chunks, 60 ms apart; turn 2: the answer.
fn turns() -> Vec<Reply> {
    let gap = Duration::from_millis(60);
    vec![
        Reply::openai_sse(
            vec![
                call(0, "nap_a", "sleep", r#"{"ms": 120}"#),
                call(1, "nap_b", "sleep", r#"{"ms": 40}"#),
                call(2, "tail", "echo", r#"{"said": "#),
                delta(json!({})),
                delta(json!({})),
                delta(json!({})),
                delta(
                    json!({"tool_calls": [{"index": 2, "function": {"arguments": r#""done"}"#}}]}),
                ),
                finish("tool_calls"),
            ],
            gap,
        ),
        Reply::openai_sse(
            vec![delta(json!({"content": "All done"})), finish("stop")],
            gap,
        ),
    ]
}

async fn chat(args: &'static [&'static str]) -> std::process::Output {
    let server = MockServer::start(turns()).await.expect("mock server");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let base = server.base_url(Provider::OpenAi);
    let out = tokio::task::spawn_blocking(move || {
        toolgraph_test_support::isolated(env!("CARGO_BIN_EXE_toolgraph"))
            .args(["chat", "nap twice", "--stream", "--base-url", &base])
            .args(["--model", "scripted", "--db", &db])
            .args(args)
            .env("OPENAI_API_KEY", "test-key")
            .output()
            .expect("toolgraph runs")
    })
    .await
    .expect("joined");
    drop(server);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_early_calls_are_named_by_their_own_ids_and_time_is_split_honestly() {
    let out = chat(&[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // One progress line per call, each naming its own call and tool (three executions:
    // two early calls at once, then the rest of the turn).
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (id, tool) in [("nap_a", "sleep"), ("nap_b", "sleep"), ("tail", "echo")] {
        let named = format!(" {id} ({tool}) ");
        assert_eq!(
            lines.iter().filter(|l| l.contains(&named)).count(),
            1,
            "{id} is named once, as itself: {stderr}"
        );
    }
    assert!(stdout.starts_with("All done"), "{stdout}");
    assert!(
        stdout.contains("2 turn(s) · 3 tool call(s) in 3 execution(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("of it) · tools ") && stdout.contains(" ms after the replies"),
        "model time says how much of it early calls ran through, tool time is after the replies: {stdout}"
    );
    assert!(
        stdout.contains("(nap_a)") && stdout.contains("(tail)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_result_splits_model_time_tool_time_and_their_overlap() {
    let out = chat(&["--json", "--quiet"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    let (model, tools, overlap) = (
        r["model_ms"].as_f64().expect("model_ms"),
        r["tool_ms"].as_f64().expect("tool_ms"),
        r["tool_overlap_ms"].as_f64().expect("tool_overlap_ms"),
    );
    assert!(
        overlap > 0.0 && overlap <= model,
        "early calls ran while the model replied, inside model time: {overlap} of {model}"
    );
    assert!(tools >= 0.0);
    assert_eq!(r["cancelled"], false);
    assert_eq!(r["executions"].as_array().map(Vec::len), Some(3));
}
