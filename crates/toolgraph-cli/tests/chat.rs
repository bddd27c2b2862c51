//! `toolgraph chat` end to end against a scripted OpenAI-compatible server on loopback
//! (no model runs here): the seed's case — a first reply asking for two tool calls, a second
//! reply "Complete" — gives success with two calls made, their results sent back in the
//! provider's shape, and the session recorded.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

async fn completions(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    let turn = {
        let mut s = seen.lock().expect("lock");
        s.push(body);
        s.len()
    };
    let message = if turn == 1 {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "sleep", "arguments": "{\"ms\": 30}"}},
            {"id": "call_2", "type": "function", "function": {"name": "echo", "arguments": "{\"said\": \"hello\", \"depends_on\": [\"call_1\"]}"}}
        ]})
    } else {
        json!({"role": "assistant", "content": "Complete"})
    };
    let finish = if turn == 1 { "tool_calls" } else { "stop" };
    Json(json!({
        "id": format!("chatcmpl-{turn}"), "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_runs_the_tools_the_model_asks_for_and_records_the_session() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("chat.db").display());
    let base = format!("http://{addr}/v1");
    let (db2, base2) = (db.clone(), base.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_toolgraph"))
            .args([
                "chat",
                "say hello after a nap",
                "--quiet",
                "--base-url",
                &base2,
                "--model",
                "scripted",
                "--db",
                &db2,
            ])
            .env("OPENAI_API_KEY", "test-key")
            .output()
            .expect("toolgraph runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Complete"), "{stdout}");
    assert!(
        stdout.contains("2 turn(s) · 2 tool call(s) in 1 execution(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("recorded as session"), "{stdout}");

    let requests = seen.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2);
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        tools.contains(&"sleep") && tools.contains(&"file_read"),
        "{tools:?}"
    );
    let messages = requests[1]["messages"].as_array().expect("messages");
    let results: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or(""),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(results.len(), 2, "{messages:?}");
    assert_eq!(results[0], ("call_1", r#"{"slept_ms":30}"#));
    assert_eq!(results[1], ("call_2", r#"{"said":"hello"}"#));

    let db3 = db.clone();
    let history = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_toolgraph"))
            .args(["history", "--json", "--db", &db3])
            .output()
            .expect("toolgraph runs")
    })
    .await
    .expect("joined");
    let rows: Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["calls"], 2);
    assert_eq!(rows[0]["success"], true);
    // The turn was recorded with its real plan: call_2's `depends_on` is an edge.
    let id = rows[0]["id"].as_str().expect("id").to_owned();
    let show = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_toolgraph"))
            .args(["show", &id, "--json", "--db", &db])
            .output()
            .expect("toolgraph runs")
    })
    .await
    .expect("joined");
    let stored: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(stored["metadata"]["edges"], 1, "{stored}");
    assert_eq!(stored["results"][1]["level"], 1, "call_2 ran after call_1");
}
