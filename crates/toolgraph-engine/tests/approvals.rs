//! Approvals through the library hook: a call waiting for a decision holds no slot and
//! stops nothing that does not depend on it; denied calls end `denied` and their dependants
//! are skipped; edits run with the edited arguments; "always" asks once per tool; the wait
//! does not eat the call's timeout.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use toolgraph_core::{
    ApprovalClass, ApprovalDecision, ApprovalPolicy, ApprovalPreset, ApprovalRequest, Approver,
    CallStatus, ErrorKind, ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolSet,
    ToolSpec,
};
use toolgraph_engine::{Approvals, CancellationToken, ParallelExecutor};
use toolgraph_test_support::{Probe, ScriptedTool};

type Question = (ApprovalRequest, oneshot::Sender<ApprovalDecision>);

/// An approver that hands every question to the test.
struct ByHand(mpsc::UnboundedSender<Question>);

impl Approver for ByHand {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> {
        let (tx, rx) = oneshot::channel();
        let sent = self.0.send((request, tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return ApprovalDecision::Deny { reason: None };
            }
            rx.await.unwrap_or(ApprovalDecision::Deny { reason: None })
        })
    }
}

/// `reader` (declared read-only) and `writer` (declares nothing: a write), both scripted.
fn executor(
    probe: &Arc<Probe>,
    config: ParallelExecutorConfig,
    policy: ApprovalPolicy,
    by_hand: bool,
) -> (ParallelExecutor, mpsc::UnboundedReceiver<Question>) {
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("reader").approval_class(ApprovalClass::ReadOnly),
            probe,
        ))
        .expect("reader");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("writer").parameters(json!({
                "type": "object",
                "properties": {"ms": {"type": "integer"}, "text": {"type": "string"}}
            })),
            probe,
        ))
        .expect("writer");
    let (tx, rx) = mpsc::unbounded_channel();
    let approver: Option<Arc<dyn Approver>> = by_hand.then(|| Arc::new(ByHand(tx)) as _);
    let executor = ParallelExecutor::new(tools, config)
        .expect("config")
        .with_approvals(Arc::new(Approvals::new(policy, approver)));
    (executor, rx)
}

fn ask_writes() -> ApprovalPolicy {
    ApprovalPolicy::preset(ApprovalPreset::AskWrites)
}

fn one_at_a_time() -> ParallelExecutorConfig {
    ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..ParallelExecutorConfig::default()
    }
}

fn by_id<'r>(r: &'r ParallelExecutionResult, id: &str) -> &'r toolgraph_core::CallResult {
    r.results.iter().find(|c| c.id == id).expect("call present")
}

async fn next_question(rx: &mut mpsc::UnboundedReceiver<Question>) -> Question {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a question within 10 s")
        .expect("the approver is alive")
}

#[tokio::test]
async fn a_call_waiting_for_approval_holds_no_slot_while_the_others_run_to_the_end() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(&probe, one_at_a_time(), ask_writes(), true);
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(vec![
                ToolCall::new("w", "writer", json!({"ms": 5})),
                ToolCall::new("r1", "reader", json!({"ms": 20})),
                ToolCall::new("r2", "reader", json!({"ms": 20})),
                ToolCall::new("r3", "reader", json!({"ms": 20})),
            ])
            .await
    });
    let (request, answer) = next_question(&mut rx).await;
    assert_eq!(request.call_id, "w");
    assert_eq!(request.tool, "writer");
    assert_eq!(request.class, ApprovalClass::Write);
    assert_eq!(request.arguments, json!({"ms": 5}));
    // With one slot in all, the three readers run to their end while `w` waits.
    let readers_done = async {
        while probe
            .log()
            .iter()
            .filter(|s| matches!(s, toolgraph_test_support::Step::End(_)))
            .count()
            < 3
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), readers_done)
        .await
        .expect("the readers ran while the writer waited");
    assert_eq!(probe.invocations(), 3, "the writer has not run");
    assert!(!run.is_finished(), "the execution waits for the decision");
    answer
        .send(ApprovalDecision::Approve)
        .expect("still waiting");
    let r = run.await.expect("joined").expect("valid");
    assert!(r.success, "{:?}", r.results);
    assert_eq!(probe.invocations(), 4);
    assert_eq!(probe.peak(), 1, "never more than the one slot");
    let w = probe.started_at("w").expect("w ran");
    for reader in ["r1", "r2", "r3"] {
        assert!(
            probe.ended_at(reader).expect("ended") < w,
            "{reader} before w"
        );
    }
}

#[tokio::test]
async fn a_denied_call_is_an_error_the_model_reads_and_its_dependants_are_skipped() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        true,
    );
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(vec![
                ToolCall::new("w1", "writer", json!({"writes": ["file:x"]})),
                ToolCall::new("uses", "reader", json!({"from": "${w1}"})),
                ToolCall::new("w2", "writer", json!({"writes": ["file:x"]})),
            ])
            .await
    });
    let (request, answer) = next_question(&mut rx).await;
    assert_eq!(request.call_id, "w1");
    assert_eq!(
        request.resources,
        vec![toolgraph_core::ResourceAccess::write("file:x")]
    );
    answer
        .send(ApprovalDecision::Deny {
            reason: Some("not today".into()),
        })
        .expect("waiting");
    // w2 was ordered after w1 by the write hazard: w1 ended (denied), so w2 is asked.
    let (second, answer) = next_question(&mut rx).await;
    assert_eq!(second.call_id, "w2");
    answer.send(ApprovalDecision::Approve).expect("waiting");
    let r = run.await.expect("joined").expect("valid");
    let w1 = by_id(&r, "w1");
    assert_eq!(w1.status, CallStatus::Error);
    let error = w1.error.as_ref().expect("error");
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(
        error.message.contains("denied by the user") && error.message.contains("writer"),
        "{}",
        error.message
    );
    assert!(error.message.contains("not today"), "{}", error.message);
    assert!(
        w1.content_text().contains("denied by the user"),
        "the model reads it: {}",
        w1.content_text()
    );
    let uses = by_id(&r, "uses");
    assert_eq!(uses.status, CallStatus::Skipped);
    assert!(
        uses.error
            .as_ref()
            .is_some_and(|e| e.message.contains("w1") && e.message.contains("denied")),
        "{:?}",
        uses.error
    );
    assert_eq!(by_id(&r, "w2").status, CallStatus::Ok);
    assert_eq!(probe.started_at("w1"), None, "the denied call never ran");
}

#[tokio::test]
async fn policy_deny_and_ask_without_an_approver_refuse_with_a_reason() {
    let probe = Probe::new();
    let deny = ApprovalPolicy::preset(ApprovalPreset::DenyWrites);
    let (executor, _rx) = executor(&probe, ParallelExecutorConfig::default(), deny, false);
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("w", "writer", json!({})),
            ToolCall::new("r", "reader", json!({})),
        ])
        .await
        .expect("valid");
    let w = by_id(&r, "w").error.clone().expect("denied");
    assert_eq!(w.kind, ErrorKind::Denied);
    assert!(
        w.message.starts_with("denied by policy: writer"),
        "{}",
        w.message
    );
    assert_eq!(by_id(&r, "r").status, CallStatus::Ok);

    let (executor, _rx) = executor_without_approver(&probe);
    let r = executor
        .execute_parallel(vec![ToolCall::new("w", "writer", json!({}))])
        .await
        .expect("valid");
    let w = by_id(&r, "w").error.clone().expect("denied");
    assert_eq!(w.kind, ErrorKind::Denied);
    assert!(
        w.message.contains("needs approval and nothing can ask") && w.message.contains("writer"),
        "{}",
        w.message
    );
    assert_eq!(probe.started_at("w"), None);
}

fn executor_without_approver(
    probe: &Arc<Probe>,
) -> (ParallelExecutor, mpsc::UnboundedReceiver<Question>) {
    executor(
        probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        false,
    )
}

#[tokio::test]
async fn an_edited_call_runs_with_the_edited_arguments_checked_by_the_schema() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        true,
    );
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(vec![
                ToolCall::new("good", "writer", json!({"text": "draft"})),
                ToolCall::new("bad", "writer", json!({"text": "draft"})),
            ])
            .await
    });
    for _ in 0..2 {
        let (request, answer) = next_question(&mut rx).await;
        let arguments = if request.call_id == "good" {
            json!({"text": "final"})
        } else {
            json!({"text": 7})
        };
        answer
            .send(ApprovalDecision::Edit { arguments })
            .expect("waiting");
    }
    let r = run.await.expect("joined").expect("valid");
    let good = by_id(&r, "good");
    assert_eq!(good.status, CallStatus::Ok);
    assert_eq!(
        good.output().and_then(|o| o.get("args")),
        Some(&json!({"text": "final"}))
    );
    assert_eq!(
        good.edited_arguments.as_deref(),
        Some(&json!({"text": "final"}))
    );
    let bad = by_id(&r, "bad").error.clone().expect("refused");
    assert_eq!(bad.kind, ErrorKind::Schema);
    assert!(bad.message.contains("edited arguments"), "{}", bad.message);
    assert_eq!(probe.started_at("bad"), None);
}

#[tokio::test]
async fn approve_always_asks_once_per_tool_for_the_executor_s_life() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        true,
    );
    let first = executor.clone();
    let run = tokio::spawn(async move {
        first
            .execute_parallel(vec![
                ToolCall::new("a", "writer", json!({})),
                ToolCall::new("b", "writer", json!({})).depends_on(["a"]),
            ])
            .await
    });
    let (request, answer) = next_question(&mut rx).await;
    assert_eq!(request.call_id, "a");
    answer
        .send(ApprovalDecision::ApproveAlways)
        .expect("waiting");
    let r = run.await.expect("joined").expect("valid");
    assert!(r.success, "{:?}", r.results);
    // A later execution of the same executor does not ask either.
    let r = executor
        .execute_parallel(vec![ToolCall::new("c", "writer", json!({}))])
        .await
        .expect("valid");
    assert!(r.success);
    assert!(rx.try_recv().is_err(), "asked only once");
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_approval_does_not_eat_the_call_s_timeout() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        true,
    );
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(vec![
                ToolCall::new("w", "writer", json!({"ms": 30})).timeout_ms(100),
            ])
            .await
    });
    let (_, answer) = next_question(&mut rx).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    answer.send(ApprovalDecision::Approve).expect("waiting");
    let r = run.await.expect("joined").expect("valid");
    let w = by_id(&r, "w");
    assert_eq!(w.status, CallStatus::Ok, "{:?}", w.error);
    assert!(
        w.queued_ms >= 5_000.0,
        "the wait is queue time: {}",
        w.queued_ms
    );
}

#[tokio::test]
async fn cancelling_an_execution_withdraws_its_questions() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ask_writes(),
        true,
    );
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let run = tokio::spawn(async move {
        executor
            .execute_with_cancel(vec![ToolCall::new("w", "writer", json!({}))], stop)
            .await
    });
    let (_, answer) = next_question(&mut rx).await;
    cancel.cancel();
    let r = run.await.expect("joined").expect("valid");
    assert_eq!(by_id(&r, "w").status, CallStatus::Cancelled);
    assert!(answer.is_closed(), "the question was withdrawn");
}

#[tokio::test]
async fn an_edit_that_changes_what_the_call_touches_or_its_class_is_refused() {
    let probe = Probe::new();
    let (executor, mut rx) = executor(
        &probe,
        ParallelExecutorConfig::default(),
        ApprovalPolicy::preset(ApprovalPreset::AskAll),
        true,
    );
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(vec![
                ToolCall::new("moved", "writer", json!({"writes": ["file:a"]})),
                ToolCall::new("reclassed", "writer", json!({"reads": ["file:a"]})),
                ToolCall::new("same", "writer", json!({"writes": ["file:b"], "text": "x"})),
            ])
            .await
    });
    for _ in 0..3 {
        let (request, answer) = next_question(&mut rx).await;
        let arguments = match request.call_id.as_str() {
            // Another resource: the plan ordered and limited the call by file:a.
            "moved" => json!({"writes": ["file:c"]}),
            // The same key, written instead of read: another class than was approved.
            "reclassed" => json!({"writes": ["file:a"]}),
            _ => json!({"writes": ["file:b"], "text": "y"}),
        };
        answer
            .send(ApprovalDecision::Edit { arguments })
            .expect("waiting");
    }
    let r = run.await.expect("joined").expect("valid");
    let moved = by_id(&r, "moved").error.clone().expect("refused");
    assert_eq!(moved.kind, ErrorKind::Denied);
    assert!(
        moved.message.contains("was file:a, now file:c"),
        "{}",
        moved.message
    );
    let reclassed = by_id(&r, "reclassed").error.clone().expect("refused");
    assert_eq!(reclassed.kind, ErrorKind::Denied);
    assert!(
        reclassed.message.contains("touches"),
        "{}",
        reclassed.message
    );
    assert_eq!(probe.started_at("moved"), None);
    assert_eq!(probe.started_at("reclassed"), None);
    let same = by_id(&r, "same");
    assert_eq!(same.status, CallStatus::Ok, "{:?}", same.error);
    assert_eq!(
        same.edited_arguments.as_deref(),
        Some(&json!({"writes": ["file:b"], "text": "y"}))
    );
}
