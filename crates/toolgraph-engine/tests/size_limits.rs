//! Size limits: references cannot amplify arguments without bound, an output past
//! `max_output_bytes` is refused, and an execution holds at most `output_budget_bytes` of
//! outputs. Each refusal fails only its own call (dependants skipped), never the process.

use serde_json::{Value, json};
use toolgraph_core::{CallStatus, ErrorKind, ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;

fn executor(config: ParallelExecutorConfig) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    tools
        .register_fn("echo", |args, _| async move { Ok(args) })
        .expect("echo");
    tools
        .register_fn("blob", |args, _| async move {
            let n = args["bytes"].as_u64().unwrap_or(0) as usize;
            Ok(Value::String("b".repeat(n)))
        })
        .expect("blob");
    ParallelExecutor::new(tools, config).expect("config")
}

fn kind(r: &toolgraph_core::ParallelExecutionResult, id: &str) -> Option<ErrorKind> {
    r.get(id)?.error.as_ref().map(|e| e.kind)
}

#[tokio::test]
async fn a_doubling_chain_of_references_stops_at_the_argument_limit() {
    // The attack: every call echoes {"l": prev, "r": prev}; 31 steps would need 2^31 × the
    // first output. With the limit the chain stops at the first call that would pass it.
    let limit = 1 << 20;
    let exec = executor(ParallelExecutorConfig {
        max_argument_bytes: limit,
        ..Default::default()
    });
    let mut calls = vec![ToolCall::new("c0", "echo", json!({"s": "x".repeat(150)}))];
    for i in 1..=31 {
        let prev = format!("${{c{}}}", i - 1);
        calls.push(ToolCall::new(
            format!("c{i}"),
            "echo",
            json!({"l": prev, "r": prev}),
        ));
    }
    let r = exec.execute_parallel(calls).await.expect("valid input");
    let first_refused = (0..=31)
        .find(|i| r.results[*i].status != CallStatus::Ok)
        .expect("the chain is stopped");
    let refused = &r.results[first_refused];
    assert_eq!(refused.status, CallStatus::Error);
    assert_eq!(kind(&r, &refused.id), Some(ErrorKind::TooLarge));
    let message = &refused.error.as_ref().expect("error").message;
    assert!(message.contains("max_argument_bytes"), "{message}");
    // Every call before it fits the limit; every call after it is skipped.
    for ok in &r.results[..first_refused] {
        let size = ok.output().expect("output").to_string().len() as u64;
        assert!(size <= limit, "{} holds {size} bytes", ok.id);
    }
    let last_ok = r.results[first_refused - 1].output().expect("output");
    assert!(
        2 * last_ok.to_string().len() as u64 > limit,
        "the refused call really would have passed the limit"
    );
    for later in &r.results[first_refused + 1..] {
        assert_eq!(later.status, CallStatus::Skipped, "{}", later.id);
    }
}

#[tokio::test]
async fn an_output_past_its_limit_is_dropped_and_its_dependants_skipped() {
    let exec = executor(ParallelExecutorConfig {
        max_output_bytes: 1000,
        ..Default::default()
    });
    let calls = vec![
        ToolCall::new("small", "blob", json!({"bytes": 10})),
        ToolCall::new("big", "blob", json!({"bytes": 5000})),
        ToolCall::new("uses_big", "echo", json!({"x": "${big}"})),
        ToolCall::new("uses_small", "echo", json!({"x": "${small}"})),
    ];
    let r = exec.execute_parallel(calls).await.expect("valid input");
    assert_eq!(kind(&r, "big"), Some(ErrorKind::TooLarge));
    assert!(r.get("big").expect("big").output.is_none());
    let message = &r
        .get("big")
        .and_then(|c| c.error.clone())
        .expect("error")
        .message;
    assert!(message.contains("max_output_bytes"), "{message}");
    assert_eq!(
        r.get("uses_big").map(|c| c.status),
        Some(CallStatus::Skipped)
    );
    assert_eq!(r.get("uses_small").map(|c| c.status), Some(CallStatus::Ok));
}

#[tokio::test]
async fn an_execution_holds_at_most_its_output_budget() {
    let exec = executor(ParallelExecutorConfig {
        output_budget_bytes: 10_000,
        ..Default::default()
    });
    // Twenty outputs of 1,002 bytes each (a 1,000-character string and its quotes).
    let calls = (0..20)
        .map(|i| ToolCall::new(format!("b{i}"), "blob", json!({"bytes": 1000})))
        .collect();
    let r = exec.execute_parallel(calls).await.expect("valid input");
    let held: usize = r
        .results
        .iter()
        .filter_map(|c| c.output())
        .map(|o| o.to_string().len())
        .sum();
    let ok = r.results.iter().filter(|c| c.is_ok()).count();
    assert_eq!(
        ok, 9,
        "nine outputs fit in 10,000 bytes, the tenth would not"
    );
    assert!(held <= 10_000, "{held}");
    for refused in r.results.iter().filter(|c| !c.is_ok()) {
        assert_eq!(
            refused.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::TooLarge)
        );
        let message = &refused.error.as_ref().expect("error").message;
        assert!(message.contains("output_budget_bytes"), "{message}");
    }
}
