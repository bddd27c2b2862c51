//! The loop over the Anthropic Messages protocol, against the scripted server.

mod common;

use common::*;
use serde_json::json;
use toolgraph_llm::Provider;

#[tokio::test]
async fn two_tool_uses_then_complete_sends_one_user_message_of_results() {
    let server = ScriptedServer::start(vec![
        Reply::json(anthropic_calls(&[
            ("toolu_1", "add", json!({"a": 2, "b": 3})),
            ("toolu_2", "fs__read_file", json!({"path": "a.txt"})),
        ])),
        Reply::json(anthropic_text("Complete")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::Anthropic, false);
    let orch = orch.system_prompt("Be brief.").teach_references(true);
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer, "Complete");
    assert_eq!(result.tool_calls_made, 2);
    assert_eq!(result.usage.input_tokens, 30);

    let requests = server.requests();
    assert_eq!(requests[0].path, "/v1/messages");
    assert_eq!(
        requests[0].headers["x-api-key"].to_str().expect("ascii"),
        "test-key"
    );
    assert_eq!(
        requests[0].headers["anthropic-version"]
            .to_str()
            .expect("ascii"),
        "2023-06-01"
    );
    let first = &requests[0].body;
    let system = first["system"].as_str().expect("system");
    assert!(
        system.starts_with("Be brief.") && system.contains("${call_id"),
        "{system}"
    );
    assert_eq!(first["tools"][0]["name"], "add");
    assert!(first["tools"][0]["input_schema"].is_object());
    assert!(
        first["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|t| t["name"] == "fs__read_file")
    );

    let messages = requests[1].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    let results = &messages[2];
    assert_eq!(results["role"], "user");
    let blocks = results["content"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["type"], "tool_result");
    assert_eq!(blocks[0]["tool_use_id"], "toolu_1");
    assert_eq!(blocks[0]["content"], "5.0");
    assert_eq!(blocks[1]["tool_use_id"], "toolu_2");
    assert_eq!(blocks[1]["content"], "contents of a.txt");
    assert!(blocks[1].get("is_error").is_none());
}

#[tokio::test]
async fn failing_and_rejected_calls_become_error_blocks() {
    let server = ScriptedServer::start(vec![
        Reply::json(anthropic_calls(&[
            ("t1", "fail", json!({})),
            ("t2", "add", json!({"a": "${t1}", "b": 1})),
        ])),
        Reply::json(anthropic_calls(&[("t3", "ghost", json!({}))])),
        Reply::json(anthropic_text("gave up")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::Anthropic, false);
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success);
    assert_eq!(result.iterations, 3);
    let requests = server.requests();
    let blocks = requests[1].body["messages"][2]["content"].clone();
    assert_eq!(blocks[0]["is_error"], true);
    assert!(
        blocks[0]["content"]
            .as_str()
            .expect("text")
            .contains("disk on fire")
    );
    assert_eq!(blocks[1]["is_error"], true);
    assert!(
        blocks[1]["content"]
            .as_str()
            .expect("text")
            .starts_with("skipped")
    );
    let blocks = requests[2].body["messages"][4]["content"].clone();
    assert_eq!(blocks[0]["tool_use_id"], "t3");
    assert_eq!(blocks[0]["is_error"], true);
    assert!(
        blocks[0]["content"]
            .as_str()
            .expect("text")
            .contains("ghost")
    );
}

#[tokio::test]
async fn anthropic_rate_limit_is_retried() {
    let server = ScriptedServer::start(vec![
        Reply::status(529, Some("0.2"), json!({"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}})),
        Reply::json(anthropic_text("fine")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::Anthropic, false);
    let result = orch.execute_with_tools("hi").await.expect("run");
    assert_eq!(result.answer, "fine");
    let r = server.requests();
    assert!(r[1].at.duration_since(r[0].at).as_millis() >= 190);
}
