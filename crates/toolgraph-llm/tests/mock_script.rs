//! The mock server's scripts: provider-neutral turns rendered in each wire protocol, plain
//! and streamed, drive the whole loop — several calls in one turn, a reference between
//! them, then the answer.

mod common;

use common::*;
use serde_json::json;
use toolgraph_llm::mock::{MockServer, Script};
use toolgraph_llm::{LlmClient, Provider, ToolOrchestrator};

const SCRIPT: &str = r#"{"turns": [
  {"text": "Adding, then shouting.", "tool_calls": [
    {"id": "sum", "name": "add", "arguments": {"a": 2, "b": 3}},
    {"id": "loud", "name": "upper", "arguments": {"text": "sum is ${sum}"}},
    {"id": "file", "name": "fs.read_file", "arguments": "{\"path\": \"a.txt\"}"}
  ]},
  {"text": "The sum is 5."}
]}"#;

#[tokio::test]
async fn a_script_runs_the_loop_in_both_protocols_plain_and_streamed() {
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        for stream in [false, true] {
            let script = Script::from_json(SCRIPT).expect("script");
            let server = MockServer::start_script(script).await.expect("bind");
            let client = LlmClient::new(server.config(provider, stream)).expect("client");
            let (executor, _) = executor();
            let orch = ToolOrchestrator::new(client, executor);
            let result = orch
                .execute_with_tools("add and shout")
                .await
                .unwrap_or_else(|e| panic!("{provider} stream={stream}: {e}"));
            let case = format!("{provider} stream={stream}");
            assert!(result.success, "{case}: {result:?}");
            assert_eq!(result.answer, "The sum is 5.", "{case}");
            assert_eq!(result.tool_calls_made, 3, "{case}");
            let turn = &result.executions[0];
            assert_eq!(
                turn.results[1].output(),
                Some(&json!("SUM IS 5.0")),
                "{case}"
            );
            assert_eq!(
                turn.results[2].output(),
                Some(&json!("contents of a.txt")),
                "{case}"
            );
            assert!(result.usage.input_tokens > 0, "{case}");
            let requests = server.requests();
            assert_eq!(requests.len(), 2, "{case}");
            let want = match provider {
                Provider::OpenAi => "/v1/chat/completions",
                Provider::Anthropic => "/v1/messages",
            };
            assert_eq!(requests[0].path, want, "{case}");
            assert_eq!(requests[0].body["stream"] == json!(true), stream, "{case}");
            assert_eq!(server.remaining(), 0, "{case}");
        }
    }
}

#[tokio::test]
async fn a_script_that_has_run_out_answers_an_error_that_says_so() {
    let script = Script::from_json(r#"[{"text": "only this"}]"#).expect("script");
    let server = MockServer::start_script(script).await.expect("bind");
    let client = LlmClient::new(server.config(Provider::OpenAi, false)).expect("client");
    let conversation = toolgraph_llm::Conversation::user(None, "hi");
    let ask = || client.complete(&conversation, &[], |_| {});
    assert_eq!(ask().await.expect("first").text, "only this");
    let err = ask().await.expect_err("nothing left").to_string();
    assert!(err.contains("HTTP 400"), "{err}");
    assert!(err.contains("script has run out"), "{err}");
    assert_eq!(server.requests().len(), 2, "not retried");
}

#[test]
fn bad_scripts_are_refused_with_the_reason() {
    for (text, says) in [
        ("[]", "no turns"),
        ("[{}]", "turn 1: neither text nor tool_calls"),
        (r#"{"turns": [{"txt": "x"}]}"#, "unknown field `txt`"),
        (r#"[{"tool_calls": [{"name": "x"}]}]"#, "missing field `id`"),
        ("{", "EOF"),
    ] {
        let err = Script::from_json(text).expect_err(text);
        assert!(err.contains(says), "{text}: {err}");
    }
}

/// A conversation continued from an earlier run's transcript: the model receives the whole
/// history (the script's `expect` checks it), the result's transcript holds it first, and a
/// model server failing part-way leaves what was done in the result beside the error.
#[tokio::test]
async fn a_conversation_continues_from_an_earlier_transcript_in_both_protocols() {
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let script = Script::from_json(
            r#"[{"text": "The sum is 5.", "tool_calls": [{"id": "s", "name": "add", "arguments": {"a": 2, "b": 3}}]},
                {"text": "Five."},
                {"text": "Still five.", "expect": ["add two and three", "Five.", "and now?"]},
                {"text": "never", "expect": ["a word nobody said"]}]"#,
        )
        .expect("script");
        let server = MockServer::start_script(script).await.expect("bind");
        let client = LlmClient::new(server.config(provider, false)).expect("client");
        let (executor, _) = executor();
        let orch = ToolOrchestrator::new(client, executor);
        let first = orch
            .execute_with_tools("add two and three")
            .await
            .expect("first");
        assert_eq!(first.answer, "Five.", "{provider}");
        let (second, error) = orch
            .continue_with_tools(first.transcript.clone(), "and now?")
            .await;
        assert!(error.is_none(), "{provider}: {error:?}");
        assert_eq!(second.answer, "Still five.", "{provider}");
        assert_eq!(
            &second.transcript[..first.transcript.len()],
            &first.transcript[..],
            "{provider}: the history comes first"
        );
        assert_eq!(
            second.transcript[first.transcript.len()]["content"],
            "and now?",
            "{provider}"
        );
        let (third, error) = orch
            .continue_with_tools(second.transcript.clone(), "again?")
            .await;
        let error = error.expect("the mock refused the request").to_string();
        assert!(error.contains("a word nobody said"), "{error}");
        assert!(!third.success, "{provider}");
        assert!(
            third.answer.starts_with("the model failed"),
            "{}",
            third.answer
        );
        assert_eq!(
            third.transcript.len(),
            second.transcript.len() + 1,
            "{provider}: the prompt is kept"
        );
    }
}
