//! Many executions through one executor share its limits: the global limit, per-tool,
//! per-resource and per-MCP-server limits hold across them, an execution's own limits are
//! layered under the shared ones, and priority decides who gets a freed slot across
//! executions. On tokio's paused clock with scripted tools, so timings are exact.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::{ParallelExecutor, RunOptions};
use toolgraph_test_support::{Probe, ScriptedTool};

const GLOBAL: usize = 6;
const PER_TOOL: usize = 2;
const PER_HOST: usize = 1;
const PER_SERVER: usize = 2;

fn executor(probe: &Arc<Probe>) -> ParallelExecutor {
    let mut tools = ToolSet::new();
    for name in ["t", "fetch", "mcp"] {
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new(name).idempotent(),
                probe,
            ))
            .expect("register");
    }
    let config = ParallelExecutorConfig {
        max_parallel_calls: GLOBAL,
        per_tool_parallel_limits: [("t".to_owned(), PER_TOOL)].into(),
        per_resource_parallel_limits: [
            ("host".to_owned(), PER_HOST),
            ("mcpserver:files".to_owned(), PER_SERVER),
        ]
        .into(),
        ..ParallelExecutorConfig::default()
    };
    ParallelExecutor::new(tools, config).expect("config")
}

/// One execution: two calls of the limited tool, two on one host, two on one MCP server,
/// two unconstrained.
fn batch(k: usize) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for j in 0..2 {
        calls.push(ToolCall::new(
            format!("t{k}_{j}"),
            "t",
            json!({"ms": 10, "key": "tool:t"}),
        ));
        calls.push(ToolCall::new(
            format!("h{k}_{j}"),
            "fetch",
            json!({"ms": 10, "reads": ["host:example.com"], "key": "host:example.com"}),
        ));
        calls.push(ToolCall::new(
            format!("m{k}_{j}"),
            "mcp",
            json!({"ms": 10, "reads": ["mcpserver:files"], "key": "mcpserver:files"}),
        ));
        calls.push(ToolCall::new(
            format!("f{k}_{j}"),
            "fetch",
            json!({"ms": 10}),
        ));
    }
    calls
}

async fn concurrent_executions_share_every_limit(executions: usize) {
    let probe = Probe::new();
    let executor = executor(&probe);
    let runs = (0..executions).map(|k| {
        let executor = executor.clone();
        async move { executor.execute_parallel(batch(k)).await }
    });
    let results = join_all(runs).await;
    for r in &results {
        let r = r.as_ref().expect("valid batch");
        assert!(r.success, "every call succeeds: {:?}", r.errors);
    }
    assert_eq!(probe.invocations(), executions * 8);
    // What really ran at once, seen by the tools themselves.
    assert_eq!(
        probe.peak(),
        GLOBAL,
        "the global limit is reached, never passed"
    );
    assert_eq!(probe.peak_for("tool:t"), PER_TOOL);
    assert_eq!(probe.peak_for("host:example.com"), PER_HOST);
    assert_eq!(probe.peak_for("mcpserver:files"), PER_SERVER);
    // What the limiter counted agrees.
    let peaks = executor.limiter().peaks();
    assert_eq!(peaks.global, GLOBAL);
    assert_eq!(peaks.tools["t"], PER_TOOL);
    assert_eq!(peaks.resources["host:example.com"], PER_HOST);
    assert_eq!(peaks.resources["mcpserver:files"], PER_SERVER);
    assert_eq!(executor.limiter().in_flight(), 0, "every slot given back");
    assert_eq!(executor.limiter().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_concurrent_executions_never_exceed_a_shared_limit() {
    concurrent_executions_share_every_limit(2).await;
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_executions_never_exceed_a_shared_limit() {
    concurrent_executions_share_every_limit(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_on_several_threads_never_exceed_a_shared_limit() {
    let probe = Probe::new();
    let executor = executor(&probe);
    let runs = (0..50).map(|k| {
        let executor = executor.clone();
        tokio::spawn(async move { executor.execute_parallel(batch(k)).await })
    });
    for r in join_all(runs).await {
        assert!(r.expect("joined").expect("valid").success);
    }
    assert!(probe.peak() <= GLOBAL);
    assert!(probe.peak_for("tool:t") <= PER_TOOL);
    assert!(probe.peak_for("host:example.com") <= PER_HOST);
    assert!(probe.peak_for("mcpserver:files") <= PER_SERVER);
    assert_eq!(executor.limiter().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_executions_own_limit_is_layered_under_the_shared_ones() {
    let probe = Probe::new();
    let executor = executor(&probe);
    let calls: Vec<ToolCall> = (0..6)
        .map(|j| ToolCall::new(format!("f{j}"), "fetch", json!({"ms": 10, "key": "own"})))
        .collect();
    let own = Arc::new(ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..ParallelExecutorConfig::default()
    });
    let plan = executor.plan(calls).expect("plan");
    let other = executor.clone();
    let (mine, _) = tokio::join!(
        executor.execute_plan_with(
            &plan,
            RunOptions {
                config: Some(own),
                ..RunOptions::default()
            },
        ),
        other.execute_parallel(batch(0)),
    );
    assert!(mine.success);
    assert_eq!(probe.peak_for("own"), 1, "its own limit of one holds");
    assert_eq!(mine.metadata.peak_in_flight, Some(1));
    assert_eq!(mine.total_time_ms, 60.0, "one at a time: 6 × 10 ms");
    assert!(probe.peak() <= GLOBAL);
}

/// Five low-priority calls wait for one shared slot (their execution's own limit lets all
/// five ask at once); 1 ms later another execution sends one call with `priority`.
/// Returns the order in which the calls started.
async fn start_order_with_late_call_of_priority(priority: i64) -> Vec<String> {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::new("t", &probe))
        .expect("register");
    let config = ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..ParallelExecutorConfig::default()
    };
    let executor = ParallelExecutor::new(tools, config).expect("config");
    let low: Vec<ToolCall> = (0..5)
        .map(|j| ToolCall::new(format!("low{j}"), "t", json!({"ms": 10})))
        .collect();
    let low = executor.plan(low).expect("plan");
    let own = Arc::new(ParallelExecutorConfig {
        max_parallel_calls: 5,
        ..ParallelExecutorConfig::default()
    });
    let late = vec![ToolCall::new("late", "t", json!({"ms": 10})).priority(priority)];
    let other = executor.clone();
    let (a, b) = tokio::join!(
        executor.execute_plan_with(
            &low,
            RunOptions {
                config: Some(own),
                ..RunOptions::default()
            }
        ),
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            other.execute_parallel(late).await
        }
    );
    assert!(a.success && b.expect("valid").success);
    assert_eq!(probe.peak(), 1, "one shared slot");
    probe
        .log()
        .into_iter()
        .filter_map(|s| match s {
            toolgraph_test_support::Step::Start(id) => Some(id),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_goes_to_the_higher_priority_call_of_another_execution() {
    let order = start_order_with_late_call_of_priority(5).await;
    assert_eq!(order, ["low0", "late", "low1", "low2", "low3", "low4"]);
}

#[tokio::test(start_paused = true)]
async fn without_priority_a_late_call_waits_its_turn() {
    let order = start_order_with_late_call_of_priority(0).await;
    assert_eq!(order, ["low0", "low1", "low2", "low3", "low4", "late"]);
}

/// Counts what a sink is told about starts.
#[derive(Default)]
struct StartSink {
    write_ahead: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicUsize,
}

impl toolgraph_core::EventSink for StartSink {
    fn on_event(&self, event: &toolgraph_core::Event) {
        if matches!(event, toolgraph_core::Event::CallStarted { .. }) {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn before_start(
        &self,
        _position: usize,
        _idempotent: bool,
    ) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        self.write_ahead
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_still_waiting_for_a_shared_slot_has_not_started() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::new("t", &probe))
        .expect("register");
    let config = ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..ParallelExecutorConfig::default()
    };
    let executor = ParallelExecutor::new(tools, config).expect("config");
    let sink = StartSink::default();
    let cancel = toolgraph_engine::CancellationToken::new();
    let waiting = executor
        .plan(vec![ToolCall::new("w", "t", json!({"ms": 10}))])
        .expect("plan");
    let other = executor.clone();
    let stop = cancel.clone();
    let (_, r) = tokio::join!(
        other.execute_parallel(vec![ToolCall::new("busy", "t", json!({"ms": 100}))]),
        async {
            let run = executor.execute_plan_with(
                &waiting,
                RunOptions {
                    cancel,
                    sink: Some(&sink),
                    ..RunOptions::default()
                },
            );
            let canceller = async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
            };
            tokio::join!(run, canceller).0
        }
    );
    let w = &r.results[0];
    assert_eq!(w.status, toolgraph_core::CallStatus::Cancelled);
    assert_eq!((w.attempts, w.started_ms), (0, None), "it never started");
    let seen = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        seen(&sink.write_ahead),
        0,
        "no write-ahead for a call that never ran"
    );
    assert_eq!(seen(&sink.started), 0);
    assert_eq!(executor.limiter().waiting(), 0, "it left the queue");
    assert_eq!(probe.invocations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_blocking_call_keeps_its_slot_until_its_thread_returns() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let seen = threads.clone();
    let mut tools = ToolSet::new();
    tools
        .register(toolgraph_core::FnTool::new(
            ToolSpec::new("blk")
                .blocking()
                .max_concurrency(1)
                .timeout_ms(30),
            move |_, _| {
                let seen = seen.clone();
                async move {
                    let now = seen.0.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.1.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(120));
                    seen.0.fetch_sub(1, Ordering::SeqCst);
                    Ok(serde_json::Value::Null)
                }
            },
        ))
        .expect("register");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config");
    let runs = (0..3).map(|k| {
        let executor = executor.clone();
        async move {
            executor
                .execute_parallel(vec![ToolCall::new(format!("b{k}"), "blk", json!({}))])
                .await
        }
    });
    for r in join_all(runs).await {
        let r = r.expect("valid");
        assert_eq!(r.results[0].status, toolgraph_core::CallStatus::Timeout);
    }
    // Let the last thread finish.
    while threads.0.load(Ordering::SeqCst) > 0 || executor.limiter().in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        threads.1.load(Ordering::SeqCst),
        1,
        "one thread of blk at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_resource_limit_added_mid_run_counts_calls_already_running() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::new("t", &probe))
        .expect("register");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config");
    let host = json!(["host:x"]);
    let calls = vec![
        ToolCall::new("a", "t", json!({"ms": 20, "reads": host, "key": "host:x"})),
        ToolCall::new("c", "t", json!({"ms": 5})),
        ToolCall::new("b", "t", json!({"ms": 20, "reads": host, "key": "host:x"}))
            .depends_on(["c"]),
        ToolCall::new("d", "t", json!({"ms": 20, "reads": host, "key": "host:x"}))
            .depends_on(["b"]),
    ];
    let updater = executor.clone();
    let (r, _) = tokio::join!(executor.execute_parallel(calls), async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        updater
            .update_config(ParallelExecutorConfig {
                per_resource_parallel_limits: [("host".to_owned(), 1)].into(),
                ..ParallelExecutorConfig::default()
            })
            .expect("valid");
    });
    let r = r.expect("valid");
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(
        probe.peak_for("host:x"),
        1,
        "b waited for a, which was running"
    );
    assert_eq!(r.get("b").and_then(|c| c.started_ms), Some(20.0));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_executions_never_exceed_a_shared_limit() {
    concurrent_executions_share_every_limit(1000).await;
}
