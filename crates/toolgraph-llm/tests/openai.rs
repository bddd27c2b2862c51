//! The loop over the OpenAI Chat Completions protocol, against the scripted server.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use toolgraph_llm::{LlmError, Provider};

fn tool_messages(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .cloned()
        .collect()
}

#[tokio::test]
async fn two_tool_calls_then_complete_sends_both_results_back() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("call_1", "add", r#"{"a": 2, "b": 3}"#),
            ("call_2", "upper", r#"{"text": "hi"}"#),
        ])),
        Reply::json(openai_text("Complete")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch.execute_with_tools("add and shout").await.expect("run");
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer, "Complete");
    assert_eq!(result.tool_calls_made, 2);
    assert_eq!(result.iterations, 2);
    assert_eq!(result.executions.len(), 1);
    assert_eq!(result.usage.input_tokens, 30);
    assert_eq!(result.usage.output_tokens, 12);
    assert!(result.model_ms > 0.0 && result.tool_ms >= 0.0);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(
        requests[0].headers["authorization"]
            .to_str()
            .expect("ascii"),
        "Bearer test-key"
    );
    let first = &requests[0].body;
    assert_eq!(first["model"], "scripted");
    let names: Vec<&str> = first["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert!(
        names.contains(&"add") && names.contains(&"fs__read_file"),
        "{names:?}"
    );
    assert_eq!(first["tools"][0]["type"], "function");
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["required"],
        json!(["a", "b"])
    );

    let second = &requests[1].body;
    let messages = second["messages"].as_array().expect("messages");
    // user, assistant (with the calls), tool, tool
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["tool_calls"][1]["id"], "call_2");
    let tools = tool_messages(second);
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["tool_call_id"], "call_1");
    assert_eq!(tools[0]["content"], "5.0");
    assert_eq!(tools[1]["tool_call_id"], "call_2");
    assert_eq!(tools[1]["content"], "HI");
    assert_eq!(result.transcript.len(), 5);
}

#[tokio::test]
async fn multi_turn_run_with_parallel_calls_and_dotted_names() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("a", "read", r#"{"key": "x", "ms": 150}"#),
            ("b", "read", r#"{"key": "y", "ms": 150}"#),
            ("c", "read", r#"{"key": "z", "ms": 150}"#),
        ])),
        Reply::json(openai_calls(&[(
            "d",
            "fs__read_file",
            r#"{"path": "notes.txt"}"#,
        )])),
        Reply::json(openai_text("done")),
    ])
    .await;
    let (orch, starts) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch.execute_with_tools("read all").await.expect("run");
    assert!(result.success);
    assert_eq!(result.iterations, 3);
    assert_eq!(result.tool_calls_made, 4);
    assert_eq!(result.executions.len(), 2);
    // Three 150 ms calls ran together.
    assert_eq!(starts.lock().expect("lock").len(), 3);
    assert!(
        result.executions[0].total_time_ms < 400.0,
        "{}",
        result.executions[0].total_time_ms
    );
    assert_eq!(result.executions[1].results[0].name, "fs.read_file");
    let requests = server.requests();
    let third = tool_messages(&requests[2].body);
    assert_eq!(third.len(), 4, "{third:?}");
    assert_eq!(third[3]["tool_call_id"], "d");
    assert_eq!(third[3]["content"], "contents of notes.txt");
}

#[tokio::test]
async fn dependent_calls_in_one_turn_resolve_references_and_teach_them() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("sum", "add", r#"{"a": 1, "b": 2}"#),
            ("again", "add", r#"{"a": "${sum}", "b": 10}"#),
            (
                "shout",
                "upper",
                r#"{"text": "total ${again}", "depends_on": ["sum"]}"#,
            ),
        ])),
        Reply::json(openai_text("13")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let orch = orch.system_prompt("You are terse.").teach_references(true);
    let result = orch.execute_with_tools("compute").await.expect("run");
    assert!(result.success);
    let exec = &result.executions[0];
    assert!(exec.success, "{:?}", exec.errors);
    assert_eq!(
        exec.get("again").and_then(|r| r.output()),
        Some(&json!(13.0))
    );
    assert_eq!(exec.get("shout").map(|r| r.level), Some(2));
    let requests = server.requests();
    let system = &requests[0].body["messages"][0];
    assert_eq!(system["role"], "system");
    let text = system["content"].as_str().expect("text");
    assert!(text.starts_with("You are terse."));
    assert!(
        text.contains("${call_id}") && text.contains("depends_on"),
        "{text}"
    );
    let tools = tool_messages(&requests[1].body);
    assert_eq!(tools[2]["content"], "TOTAL 13.0");
}

#[tokio::test]
async fn no_references_section_unless_asked() {
    let server = ScriptedServer::start(vec![Reply::json(openai_text("hi"))]).await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    orch.execute_with_tools("hello").await.expect("run");
    let body = &server.requests()[0].body;
    assert_eq!(body["messages"][0]["role"], "user");
}

#[tokio::test]
async fn failing_tool_and_malformed_arguments_are_reported_to_the_model() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("ok", "add", r#"{"a": 1, "b": 1}"#),
            ("boom", "fail", r#"{}"#),
            ("bad", "upper", r#"{"text": "unterminated"#),
            ("after", "upper", r#"{"text": "${boom}"}"#),
        ])),
        Reply::json(openai_text("sorry")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch.execute_with_tools("go").await.expect("no crash");
    assert!(result.success);
    assert_eq!(result.tool_calls_made, 4);
    let tools = tool_messages(&server.requests()[1].body);
    let ids: Vec<&str> = tools
        .iter()
        .map(|t| t["tool_call_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["ok", "boom", "bad", "after"]);
    assert_eq!(tools[0]["content"], "2.0");
    let boom = tools[1]["content"].as_str().expect("text");
    assert!(
        boom.starts_with("error") && boom.contains("disk on fire"),
        "{boom}"
    );
    let bad = tools[2]["content"].as_str().expect("text");
    assert!(bad.contains("not valid JSON"), "{bad}");
    let after = tools[3]["content"].as_str().expect("text");
    assert!(after.starts_with("skipped"), "{after}");
}

#[tokio::test]
async fn rejected_batch_answers_every_call_with_the_problem() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("a", "add", r#"{"a": 1, "b": 1}"#),
            ("b", "no_such_tool", r#"{}"#),
        ])),
        Reply::json(openai_text("fixed")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success);
    assert!(result.executions.is_empty());
    let tools = tool_messages(&server.requests()[1].body);
    assert_eq!(tools.len(), 2);
    for t in &tools {
        let text = t["content"].as_str().expect("text");
        assert!(
            text.contains("rejected") && text.contains("no_such_tool"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn max_iterations_ends_without_success() {
    let calls = openai_calls(&[("a", "add", r#"{"a": 1, "b": 1}"#)]);
    let server = ScriptedServer::start(vec![Reply::json(calls.clone()), Reply::json(calls)]).await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch
        .max_iterations(2)
        .execute_with_tools("loop")
        .await
        .expect("run");
    assert!(!result.success);
    assert!(
        result.answer.contains("max_iterations"),
        "{}",
        result.answer
    );
    assert_eq!(result.iterations, 2);
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    let server = ScriptedServer::start(vec![
        Reply::status(429, Some("1"), json!({"error": {"message": "slow down"}})),
        Reply::json(openai_text("patient")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let result = orch.execute_with_tools("hi").await.expect("retried");
    assert_eq!(result.answer, "patient");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let server = ScriptedServer::start(vec![
        Reply::status(503, None, json!({"error": {"message": "busy"}})),
        Reply::json(openai_text("ok")),
        Reply::status(400, None, json!({"error": {"message": "bad model name"}})),
    ])
    .await;
    let client = server.client(Provider::OpenAi, false);
    let conv = toolgraph_llm::Conversation::user(None, "x");
    let turn = client.complete(&conv, &[], |_| {}).await.expect("retried");
    assert_eq!(turn.text, "ok");
    let err = client.complete(&conv, &[], |_| {}).await.expect_err("400");
    match err {
        LlmError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(message, "bad model name");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
}
