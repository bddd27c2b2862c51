//! SSE streams of both providers, and starting safe calls before a stream ends.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use toolgraph_llm::{Conversation, FinishReason, Provider, StreamEvent};

fn oa_delta(delta: Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

fn oa_call(index: u64, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut call = json!({"index": index, "function": {"arguments": args}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    oa_delta(json!({"tool_calls": [call]}))
}

fn oa_finish(reason: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn oa_usage() -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
}

fn oa_text_stream(text: &str) -> Reply {
    Reply::openai_sse(
        vec![
            oa_delta(json!({"role": "assistant", "content": ""})),
            oa_delta(json!({"content": text})),
            oa_finish("stop"),
            oa_usage(),
        ],
        Duration::ZERO,
    )
}

#[tokio::test]
async fn openai_stream_reassembles_split_and_interleaved_tool_calls() {
    let server = ScriptedServer::start(vec![Reply::openai_sse(
        vec![
            oa_delta(json!({"role": "assistant", "content": "Work"})),
            oa_delta(json!({"content": "ing."})),
            oa_call(0, Some("c1"), Some("add"), ""),
            oa_call(0, None, None, "{\"a\": "),
            oa_call(1, Some("c2"), Some("fs__read"), "{\"pa"),
            oa_call(0, None, None, "2, \"b\": 3}"),
            oa_call(1, None, Some("_file"), "th\": \"x\"}"),
            oa_finish("tool_calls"),
            oa_usage(),
        ],
        Duration::from_millis(5),
    )])
    .await;
    let client = server.client(Provider::OpenAi, true);
    let (executor, _) = executor();
    let specs: Vec<_> = executor
        .tools()
        .entries()
        .iter()
        .map(|e| e.tool.spec().clone())
        .collect();
    let mut events = Vec::new();
    let turn = client
        .complete(&Conversation::user(None, "x"), &specs, |e| events.push(e))
        .await
        .expect("turn");
    assert_eq!(turn.text, "Working.");
    assert_eq!(turn.finish_reason, FinishReason::ToolCalls);
    assert_eq!(turn.usage.input_tokens, 11);
    assert_eq!(turn.tool_calls.len(), 2, "{turn:?}");
    assert_eq!(turn.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
    assert_eq!(turn.tool_calls[1].name, "fs.read_file");
    assert_eq!(turn.tool_calls[1].arguments, json!({"path": "x"}));
    let body = &server.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let texts: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::TextDelta(_)))
        .collect();
    assert_eq!(texts.len(), 2);
    let completes = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::ToolCallComplete(_)))
        .count();
    assert_eq!(completes, 2);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finish(FinishReason::ToolCalls))
    );
    assert_eq!(
        turn.assistant_message["tool_calls"][1]["function"]["name"],
        "fs__read_file"
    );
}

fn an(v: Value) -> Value {
    v
}

#[tokio::test]
async fn anthropic_stream_runs_the_loop_with_split_partial_json() {
    let server = ScriptedServer::start(vec![
        Reply::sse(
            vec![
                an(json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 21, "output_tokens": 1}}})),
                an(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
                an(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Adding"}})),
                an(json!({"type": "content_block_stop", "index": 0})),
                an(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu1", "name": "add", "input": {}}})),
                an(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 4"}})),
                an(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ", \"b\": 5}"}})),
                an(json!({"type": "content_block_stop", "index": 1})),
                an(json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "tu2", "name": "upper", "input": {}}})),
                an(json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"text\": \"sum ${tu1}\"}"}})),
                an(json!({"type": "content_block_stop", "index": 2})),
                an(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 17}})),
                an(json!({"type": "message_stop"})),
            ],
            Duration::from_millis(2),
        ),
        Reply::sse(
            vec![
                an(json!({"type": "message_start", "message": {"id": "m2", "usage": {"input_tokens": 40, "output_tokens": 1}}})),
                an(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
                an(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "It is 9"}})),
                an(json!({"type": "content_block_stop", "index": 0})),
                an(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}})),
                an(json!({"type": "message_stop"})),
            ],
            Duration::ZERO,
        ),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::Anthropic, true);
    let result = orch.execute_with_tools("add").await.expect("run");
    assert!(result.success);
    assert_eq!(result.answer, "It is 9");
    assert_eq!(result.usage.input_tokens, 61);
    assert_eq!(result.usage.output_tokens, 20);
    let messages = server.requests()[1].body["messages"].clone();
    assert_eq!(messages[1]["content"][1]["input"], json!({"a": 4, "b": 5}));
    let blocks = messages[2]["content"].as_array().expect("blocks").clone();
    assert_eq!(blocks[0]["content"], "9.0");
    assert_eq!(blocks[1]["content"], "SUM 9.0");
}

/// A stream whose first call (a 150 ms read) is whole early, then 6 slow chunks.
fn slow_stream() -> Reply {
    Reply::openai_sse(
        vec![
            oa_call(0, Some("r1"), Some("read"), "{\"key\": \"k\", \"ms\": 150}"),
            oa_call(1, Some("w1"), Some("upper"), "{\"text\": "),
            oa_delta(json!({})),
            oa_delta(json!({})),
            oa_delta(json!({})),
            oa_call(1, None, None, "\"x\"}"),
            oa_finish("tool_calls"),
            oa_usage(),
        ],
        Duration::from_millis(30),
    )
}

#[tokio::test]
async fn streaming_dispatch_starts_a_read_only_call_before_the_stream_ends() {
    let server = ScriptedServer::start(vec![slow_stream(), oa_text_stream("done")]).await;
    let (orch, starts) = orchestrator(&server, Provider::OpenAi, true);
    let begun = Instant::now();
    let result = orch.execute_with_tools("go").await.expect("run");
    let with_dispatch = begun.elapsed();
    assert!(result.success);
    let started = starts.lock().expect("lock")[0].1;
    let last_chunk = server.last_chunk_at().expect("streamed");
    assert!(
        started < last_chunk,
        "read started {:?} before the last chunk",
        last_chunk - started
    );
    let tools: Vec<Value> = server.requests()[1].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "tool")
        .cloned()
        .collect();
    assert_eq!(tools[0]["tool_call_id"], "r1");
    assert_eq!(tools[0]["content"], "value of k");
    assert_eq!(tools[1]["content"], "X");

    // The same script without dispatch, for the saving.
    let server = ScriptedServer::start(vec![slow_stream(), oa_text_stream("done")]).await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, true);
    let begun = Instant::now();
    let result = orch
        .streaming_dispatch(false)
        .execute_with_tools("go")
        .await
        .expect("run");
    let without = begun.elapsed();
    assert!(result.success);
    println!(
        "streaming dispatch: {with_dispatch:?} with, {without:?} without, saved {:?} (tool 150 ms, stream after the call ~180 ms)",
        without.saturating_sub(with_dispatch)
    );
}

#[tokio::test]
async fn nothing_is_dispatched_or_run_after_a_length_finish() {
    let server = ScriptedServer::start(vec![
        Reply::openai_sse(
            vec![
                oa_call(0, Some("r1"), Some("read"), "{\"key\": \"k\", \"ms\": 10}"),
                oa_finish("length"),
            ],
            Duration::from_millis(5),
        ),
        oa_text_stream("ok"),
    ])
    .await;
    let (orch, starts) = orchestrator(&server, Provider::OpenAi, true);
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success);
    assert!(
        starts.lock().expect("lock").is_empty(),
        "a call of a cut-short turn ran"
    );
    assert!(result.executions.is_empty());
    let msgs = server.requests()[1].body["messages"].clone();
    let text = msgs[2]["content"].as_str().expect("text");
    assert!(text.contains("cut short"), "{text}");
}

#[tokio::test]
async fn calls_started_early_share_the_executors_per_host_limit() {
    use toolgraph_core::{ParallelExecutorConfig, ToolSet, ToolSpec};
    use toolgraph_engine::ParallelExecutor;
    use toolgraph_test_support::{Probe, ScriptedTool};

    // Three reads of one host, each whole long before the stream ends: each starts early,
    // as an execution of its own, yet the host's limit of one holds across them.
    let args = r#"{"ms": 60, "reads": ["host:api.example"], "key": "host:api.example"}"#;
    let server = ScriptedServer::start(vec![
        Reply::openai_sse(
            vec![
                oa_call(0, Some("g1"), Some("get"), args),
                oa_call(1, Some("g2"), Some("get"), args),
                oa_call(2, Some("g3"), Some("get"), args),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_finish("tool_calls"),
                oa_usage(),
            ],
            Duration::from_millis(10),
        ),
        oa_text_stream("done"),
    ])
    .await;
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("get").idempotent(),
            &probe,
        ))
        .expect("get");
    let config = ParallelExecutorConfig {
        per_resource_parallel_limits: [("host".to_owned(), 1)].into(),
        ..ParallelExecutorConfig::default()
    };
    let executor = std::sync::Arc::new(ParallelExecutor::new(tools, config).expect("config"));
    let orch = toolgraph_llm::ToolOrchestrator::new(
        server.client(Provider::OpenAi, true),
        executor.clone(),
    );
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success, "{}", result.answer);
    assert_eq!(
        result.executions.len(),
        3,
        "each call started early, on its own"
    );
    assert_eq!(probe.invocations(), 3);
    assert_eq!(
        probe.peak_for("host:api.example"),
        1,
        "one at a time on the host"
    );
    assert_eq!(executor.limiter().peaks().resources["host:api.example"], 1);
}

/// A scripted tool declared idempotent whose calls are safe to repeat only when they do not
/// `POST` (as `http_fetch` decides per call).
struct PerCall(toolgraph_test_support::ScriptedTool, Starts);

impl toolgraph_core::Tool for PerCall {
    fn spec(&self) -> &toolgraph_core::ToolSpec {
        self.0.spec()
    }
    fn is_idempotent(&self, args: &Value) -> bool {
        args["method"] != "POST"
    }
    fn call<'a>(
        &'a self,
        args: std::sync::Arc<Value>,
        ctx: toolgraph_core::CallContext,
    ) -> toolgraph_core::ToolFuture<'a> {
        self.1
            .lock()
            .expect("lock")
            .push((ctx.call_id.to_string(), Instant::now()));
        self.0.call(args, ctx)
    }
}

fn per_call_orchestrator(
    server: &ScriptedServer,
) -> (
    toolgraph_llm::ToolOrchestrator,
    std::sync::Arc<toolgraph_test_support::Probe>,
    Starts,
) {
    use toolgraph_core::{ParallelExecutorConfig, ToolSet, ToolSpec};
    use toolgraph_engine::ParallelExecutor;
    use toolgraph_test_support::{Probe, ScriptedTool};
    let probe = Probe::new();
    let starts = Starts::default();
    let mut tools = ToolSet::new();
    tools
        .register(PerCall(
            ScriptedTool::with_spec(ToolSpec::new("fetch").idempotent(), &probe),
            starts.clone(),
        ))
        .expect("fetch");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("ok");
    let orch = toolgraph_llm::ToolOrchestrator::new(
        server.client(Provider::OpenAi, true),
        std::sync::Arc::new(executor),
    );
    (orch, probe, starts)
}

#[tokio::test]
async fn only_calls_idempotent_for_their_own_arguments_start_early() {
    let server = ScriptedServer::start(vec![
        Reply::openai_sse(
            vec![
                oa_call(
                    0,
                    Some("get"),
                    Some("fetch"),
                    r#"{"method": "GET", "ms": 10}"#,
                ),
                oa_call(
                    1,
                    Some("post"),
                    Some("fetch"),
                    r#"{"method": "POST", "ms": 10}"#,
                ),
                oa_call(
                    2,
                    Some("get2"),
                    Some("fetch"),
                    r#"{"method": "GET", "ms": 10}"#,
                ),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_finish("tool_calls"),
                oa_usage(),
            ],
            Duration::from_millis(40),
        ),
        oa_text_stream("done"),
    ])
    .await;
    let (orch, probe, starts) = per_call_orchestrator(&server);
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.success, "{}", result.answer);
    // The GET ran early; the POST (its tool is idempotent, this call is not) waited for the
    // whole turn.
    let starts = starts.lock().expect("lock").clone();
    let at = |id: &str| starts.iter().find(|(c, _)| c == id).map(|(_, t)| *t);
    let (get, post) = (at("get").expect("get ran"), at("post").expect("post ran"));
    // The POST's arguments are whole when the next call begins, four 40 ms chunks before the
    // turn ends; the GET (10 ms) ended long before.
    assert!(
        post.duration_since(get) >= Duration::from_millis(120),
        "the POST started {:?} after the GET: it did not wait for its turn",
        post.duration_since(get)
    );
    assert_eq!(probe.invocations(), 3, "each ran once");
}

#[tokio::test]
async fn an_early_call_does_not_outlive_a_dropped_orchestrator() {
    let server = ScriptedServer::start(vec![
        Reply::openai_sse(
            vec![
                oa_call(0, Some("slow"), Some("fetch"), r#"{"ms": 60000}"#),
                oa_call(1, Some("post"), Some("fetch"), r#"{"method": "POST"}"#),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_delta(json!({})),
                oa_finish("tool_calls"),
                oa_usage(),
            ],
            Duration::from_millis(100),
        ),
        oa_text_stream("done"),
    ])
    .await;
    let (orch, probe, _) = per_call_orchestrator(&server);
    let run = orch.execute_with_tools("go");
    // Give up on the turn while it still streams, after the early call started.
    let outcome = tokio::time::timeout(Duration::from_millis(250), run).await;
    assert!(outcome.is_err(), "the turn was still streaming");
    assert_eq!(probe.invocations(), 1, "the call had started early");
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe.live() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        probe.live(),
        0,
        "the early call was stopped with its orchestrator"
    );
}

#[tokio::test]
async fn cancelling_while_the_model_replies_stops_the_run_and_asks_nothing_more() {
    let server = ScriptedServer::start(vec![slow_stream(), oa_text_stream("done")]).await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, true);
    let cancel = toolgraph_engine::CancellationToken::new();
    let orch = orch.cancel_on(cancel.clone());
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        stop.cancel();
    });
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.cancelled && !result.success, "{result:?}");
    assert_eq!(
        result.answer,
        "cancelled while waiting for the model: no final answer"
    );
    assert_eq!(server.requests().len(), 1, "nothing more was asked");
    assert!(
        result.executions.is_empty(),
        "the early call was dropped with its turn"
    );
}

#[tokio::test]
async fn cancelling_while_the_tools_run_cancels_the_turns_calls() {
    let server = ScriptedServer::start(vec![
        Reply::json(openai_calls(&[
            ("slow", "read", r#"{"key": "k", "ms": 5000}"#),
            ("quick", "upper", r#"{"text": "hi"}"#),
        ])),
        Reply::json(openai_text("never asked")),
    ])
    .await;
    let (orch, _) = orchestrator(&server, Provider::OpenAi, false);
    let cancel = toolgraph_engine::CancellationToken::new();
    let orch = orch.cancel_on(cancel.clone());
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    });
    let result = orch.execute_with_tools("go").await.expect("run");
    assert!(result.cancelled && !result.success, "{result:?}");
    assert_eq!(
        result.answer,
        "cancelled while the tools ran: no final answer"
    );
    assert_eq!(server.requests().len(), 1, "the results were not sent back");
    let statuses: Vec<&str> = result.executions[0]
        .results
        .iter()
        .map(|c| c.status.as_str())
        .collect();
    assert_eq!(statuses, ["cancelled", "ok"]);
}
