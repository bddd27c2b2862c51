//! Scheduling through the public API, on tokio's paused clock with scripted tools: limits
//! never exceeded, no level barrier, failure containment, timeouts, retries, cancellation.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toolgraph_core::{
    CallStatus, ErrorKind, ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolSet,
    ToolSpec,
};
use toolgraph_engine::{CancellationToken, ParallelExecutor, workload};
use toolgraph_test_support::{Probe, ScriptedTool};

struct Rig {
    executor: Arc<ParallelExecutor>,
    probe: Arc<Probe>,
}

fn rig_with(config: ParallelExecutorConfig, extra: impl FnOnce(&mut ToolSet, &Arc<Probe>)) -> Rig {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("idem").idempotent(),
            &probe,
        ))
        .expect("idem");
    tools
        .register(ScriptedTool::with_spec(
            ToolSpec::new("sleep").idempotent(),
            &probe,
        ))
        .expect("sleep");
    extra(&mut tools, &probe);
    Rig {
        executor: Arc::new(ParallelExecutor::new(tools, config).expect("config")),
        probe,
    }
}

fn rig(config: ParallelExecutorConfig) -> Rig {
    rig_with(config, |_, _| {})
}

fn call(id: &str, args: Value) -> ToolCall {
    ToolCall::new(id, "t", args)
}

async fn run(rig: &Rig, calls: Vec<ToolCall>) -> ParallelExecutionResult {
    rig.executor
        .execute_parallel(calls)
        .await
        .expect("valid input")
}

fn status(r: &ParallelExecutionResult, id: &str) -> CallStatus {
    r.get(id).map(|c| c.status).expect("result present")
}

#[tokio::test(start_paused = true)]
async fn a_call_starts_when_its_own_dependencies_end_not_its_level() {
    // long_k → short_after_long_k, short_k → long_after_short_k: levels would take 2 × 100.
    let r = run(
        &rig(Default::default()),
        workload::skewed_layers(3, 100, 10),
    )
    .await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.total_time_ms, 110.0);
    assert_eq!(r.critical_path_ms, 110.0);
    assert_eq!(r.efficiency, 1.0);
    let las = r.get("long_after_short_0").expect("present");
    assert_eq!(las.started_ms, Some(10.0));
    assert_eq!(las.level, 1);
}

#[tokio::test(start_paused = true)]
async fn global_limit_is_never_exceeded() {
    let rig = rig(ParallelExecutorConfig {
        max_parallel_calls: 3,
        ..Default::default()
    });
    let r = run(&rig, workload::fan_out(20, "t", json!({"ms": 10}))).await;
    assert!(r.success);
    assert_eq!(rig.probe.peak(), 3);
    assert_eq!(r.metadata.peak_in_flight, Some(3));
    // 20 calls, 3 at a time, 10 ms each: 7 waves.
    assert_eq!(r.total_time_ms, 70.0);
    assert_eq!(r.sequential_time_estimate_ms, 200.0);
}

#[tokio::test(start_paused = true)]
async fn per_tool_limits_hold_while_other_tools_proceed() {
    let mut config = ParallelExecutorConfig {
        max_parallel_calls: 10,
        ..Default::default()
    };
    config.per_tool_parallel_limits.insert("idem".into(), 2);
    let rig = rig(config);
    let mut calls = Vec::new();
    for i in 0..8 {
        calls.push(ToolCall::new(
            format!("i{i}"),
            "idem",
            json!({"ms": 10, "key": "idem"}),
        ));
        calls.push(ToolCall::new(
            format!("t{i}"),
            "t",
            json!({"ms": 10, "key": "t"}),
        ));
    }
    let r = run(&rig, calls).await;
    assert!(r.success);
    assert_eq!(rig.probe.peak_for("idem"), 2);
    assert_eq!(
        rig.probe.peak_for("t"),
        8,
        "the limited tool must not hold back the others"
    );
    assert_eq!(r.total_time_ms, 40.0);
}

#[tokio::test(start_paused = true)]
async fn a_tools_declared_concurrency_is_a_limit_and_configuration_wins() {
    let declared = |tools: &mut ToolSet, probe: &Arc<Probe>| {
        let spec = ToolSpec::new("capped").max_concurrency(1);
        tools
            .register(ScriptedTool::with_spec(spec, probe))
            .expect("capped");
    };
    let calls = || workload::fan_out(6, "capped", json!({"ms": 10, "key": "c"}));
    let rig1 = rig_with(Default::default(), declared);
    run(&rig1, calls()).await;
    assert_eq!(rig1.probe.peak_for("c"), 1);
    let mut config = ParallelExecutorConfig::default();
    config.per_tool_parallel_limits.insert("capped".into(), 3);
    let rig2 = rig_with(config, declared);
    run(&rig2, calls()).await;
    assert_eq!(rig2.probe.peak_for("c"), 3);
}

#[tokio::test(start_paused = true)]
async fn per_resource_limits_hold_per_key_and_per_kind() {
    let mut config = ParallelExecutorConfig::default();
    config.per_resource_parallel_limits.insert("host".into(), 2);
    config
        .per_resource_parallel_limits
        .insert("host:slow".into(), 1);
    let rig = rig(config);
    let mut calls = Vec::new();
    for i in 0..6 {
        calls.push(call(
            &format!("a{i}"),
            json!({"ms": 10, "reads": ["host:a"], "key": "host:a"}),
        ));
        calls.push(call(
            &format!("s{i}"),
            json!({"ms": 10, "reads": ["host:slow"], "key": "host:slow"}),
        ));
        calls.push(call(
            &format!("f{i}"),
            json!({"ms": 10, "reads": ["file:x"], "key": "file:x"}),
        ));
    }
    let r = run(&rig, calls).await;
    assert!(r.success);
    assert_eq!(rig.probe.peak_for("host:a"), 2);
    assert_eq!(rig.probe.peak_for("host:slow"), 1);
    assert_eq!(rig.probe.peak_for("file:x"), 6);
}

#[tokio::test(start_paused = true)]
async fn cpu_and_memory_budgets_hold_and_impossible_calls_fail_alone() {
    let config = ParallelExecutorConfig {
        resource_limit_cpu: Some(2.0),
        resource_limit_memory_mb: Some(1000),
        ..Default::default()
    };
    let rig = rig_with(config, |tools, probe| {
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new("cpu").cost(1.0, 100),
                probe,
            ))
            .expect("cpu");
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new("mem").cost(0.0, 600),
                probe,
            ))
            .expect("mem");
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new("huge").cost(8.0, 0),
                probe,
            ))
            .expect("huge");
    });
    let mut calls = workload::fan_out(6, "cpu", json!({"ms": 10, "key": "cpu"}));
    calls.extend(
        (0..3).map(|i| ToolCall::new(format!("m{i}"), "mem", json!({"ms": 10, "key": "mem"}))),
    );
    calls.push(ToolCall::new("h", "huge", json!({})));
    let r = run(&rig, calls).await;
    assert_eq!(rig.probe.peak_for("cpu"), 2);
    assert_eq!(rig.probe.peak_for("mem"), 1);
    let h = r.get("h").expect("h");
    assert_eq!(h.status, CallStatus::Error);
    let e = h.error.as_ref().expect("error");
    assert_eq!(e.kind, ErrorKind::Unschedulable);
    assert!(
        e.message.contains("resource_limit_cpu is 2"),
        "{}",
        e.message
    );
    assert_eq!(r.results.iter().filter(|c| c.is_ok()).count(), 9);
}

#[tokio::test(start_paused = true)]
async fn hazards_order_writers_and_readers_run_together() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call("w", json!({"ms": 30, "writes": ["file:a"]})),
            call(
                "r1",
                json!({"ms": 10, "reads": ["file:a"], "key": "readers"}),
            ),
            call(
                "r2",
                json!({"ms": 10, "reads": ["file:a"], "key": "readers"}),
            ),
            call("w2", json!({"ms": 5, "writes": ["file:a"]})),
        ],
    )
    .await;
    assert!(r.success);
    let (p, at) = (&rig.probe, |id| rig.probe.started_at(id).expect("started"));
    assert!(p.ended_at("w").expect("ended") < at("r1"));
    assert!(p.ended_at("w").expect("ended") < at("r2"));
    assert_eq!(p.peak_for("readers"), 2);
    assert!(
        p.ended_at("r1").expect("ended") < at("w2") && p.ended_at("r2").expect("ended") < at("w2")
    );
    assert_eq!(r.parallel_time_ms, 45.0);
}

#[tokio::test(start_paused = true)]
async fn higher_priority_then_longer_remaining_path_starts_first() {
    let rig = rig(ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..Default::default()
    });
    let r = run(
        &rig,
        vec![
            call("plain", json!({"ms": 1})),
            call("head", json!({"ms": 1})),
            call("tail", json!({"ms": 1})).depends_on(["head"]),
            call("urgent", json!({"ms": 1})).priority(5),
        ],
    )
    .await;
    assert!(r.success);
    let order: Vec<usize> = ["urgent", "head", "plain"]
        .iter()
        .map(|id| rig.probe.started_at(id).expect("ran"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "start order {order:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dependants_of_a_failed_call_are_skipped_and_independent_branches_finish() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call("bad", json!({"fail": "disk full"})),
            call("child", json!({"x": "${bad}"})),
            call("grandchild", json!({})).depends_on(["child"]),
            call("sibling", json!({"ms": 50})),
            call("after_sibling", json!({})).depends_on(["sibling"]),
            call("orders_after_bad", json!({"reads": ["k"]})),
        ],
    )
    .await;
    assert!(!r.success);
    assert_eq!(status(&r, "bad"), CallStatus::Error);
    assert_eq!(status(&r, "child"), CallStatus::Skipped);
    assert_eq!(status(&r, "grandchild"), CallStatus::Skipped);
    assert_eq!(status(&r, "sibling"), CallStatus::Ok);
    assert_eq!(status(&r, "after_sibling"), CallStatus::Ok);
    assert_eq!(status(&r, "orders_after_bad"), CallStatus::Ok);
    let child = r.get("child").and_then(|c| c.error.clone()).expect("cause");
    assert_eq!(child.kind, ErrorKind::Dependency);
    assert!(
        child
            .message
            .contains("dependency bad did not succeed (error: disk full)"),
        "{}",
        child.message
    );
    let grand = r
        .get("grandchild")
        .and_then(|c| c.error.clone())
        .expect("cause");
    assert_eq!(
        grand.message,
        "dependency child was skipped: bad did not succeed (error: disk full)"
    );
    assert_eq!(rig.probe.started_at("child"), None);
    assert_eq!(r.errors.len(), 3);
    assert!(
        r.errors[0].starts_with("bad (t): error: disk full"),
        "{:?}",
        r.errors
    );
}

#[tokio::test]
async fn a_long_chain_skipped_after_its_first_call_gets_one_short_line_per_call() {
    // Messages used to nest ("was skipped (dependency … was skipped (…))"): a 4,000-call
    // chain printed hundreds of MB. Each skip now names its dependency and the root cause.
    let rig = rig(Default::default());
    let why = "x".repeat(1000);
    let mut calls = vec![call("c0", json!({ "fail": why }))];
    for i in 1..4000 {
        calls.push(call(
            &format!("c{i}"),
            json!({"in": format!("${{c{}}}", i - 1)}),
        ));
    }
    let r = run(&rig, calls).await;
    assert_eq!(status(&r, "c3999"), CallStatus::Skipped);
    let total: usize = r
        .results
        .iter()
        .filter_map(|c| c.error.as_ref())
        .map(|e| e.message.len())
        .sum();
    assert!(total < 4000 * 300, "{total} bytes of messages");
    let last = r.get("c3999").and_then(|c| c.error.clone()).expect("cause");
    assert!(
        last.message
            .starts_with("dependency c3998 was skipped: c0 did not succeed (error: xxx"),
        "{}",
        &last.message[..100]
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_after_a_failed_writer_still_runs_in_order() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call(
                "w",
                json!({"ms": 20, "writes": ["file:a"], "fail": "denied"}),
            ),
            call("r", json!({"reads": ["file:a"]})),
        ],
    )
    .await;
    assert_eq!(
        status(&r, "r"),
        CallStatus::Ok,
        "a hazard edge orders, it does not carry data"
    );
    assert!(rig.probe.ended_at("w") < rig.probe.started_at("r"));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_is_cancelled_and_never_rerun() {
    let rig = rig(ParallelExecutorConfig {
        default_timeout_ms: 100,
        ..Default::default()
    });
    let r = run(
        &rig,
        vec![
            ToolCall::new("slow", "idem", json!({"ms": 10_000})),
            ToolCall::new("own", "t", json!({"ms": 10_000})).timeout_ms(30),
            call("quick", json!({"ms": 5})),
        ],
    )
    .await;
    let slow = r.get("slow").expect("slow");
    assert_eq!(slow.status, CallStatus::Timeout);
    assert_eq!(slow.attempts, 1);
    assert_eq!(slow.duration_ms, 100.0);
    assert_eq!(
        slow.error.as_ref().map(|e| e.message.as_str()),
        Some("timed out after 100 ms")
    );
    assert_eq!(
        r.get("own").map(|c| (c.status, c.duration_ms)),
        Some((CallStatus::Timeout, 30.0))
    );
    assert_eq!(status(&r, "quick"), CallStatus::Ok);
    assert_eq!(rig.probe.invocations(), 3, "no call ran twice");
    assert_eq!(rig.probe.live(), 0, "timed-out futures were dropped");
    assert_eq!(r.total_time_ms, 100.0);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_of_zero_means_none_on_a_call_as_on_the_executor() {
    let rig = rig(ParallelExecutorConfig {
        default_timeout_ms: 100,
        ..Default::default()
    });
    let r = run(
        &rig,
        vec![ToolCall::new("long", "t", json!({"ms": 5_000})).timeout_ms(0)],
    )
    .await;
    assert_eq!(
        r.get("long").map(|c| (c.status, c.duration_ms)),
        Some((CallStatus::Ok, 5_000.0)),
        "timeout_ms: 0 lifts the executor's default instead of timing out at once"
    );
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_tools_retry_and_only_transient_errors() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            ToolCall::new("flaky_idem", "idem", json!({"fail_times": 2})),
            ToolCall::new("flaky_plain", "t", json!({"fail_times": 2})),
            ToolCall::new("permanent_idem", "idem", json!({"fail": "bad request"})),
            ToolCall::new(
                "always_transient",
                "idem",
                json!({"fail": "503", "transient": true}),
            ),
        ],
    )
    .await;
    let get = |id: &str| r.get(id).expect("present");
    assert_eq!(
        (get("flaky_idem").status, get("flaky_idem").attempts),
        (CallStatus::Ok, 3)
    );
    assert_eq!(
        get("flaky_idem")
            .output
            .as_ref()
            .map(|o| o["attempt"].clone()),
        Some(json!(3))
    );
    assert_eq!(
        (get("flaky_plain").status, get("flaky_plain").attempts),
        (CallStatus::Error, 1)
    );
    assert_eq!(
        (get("permanent_idem").status, get("permanent_idem").attempts),
        (CallStatus::Error, 1)
    );
    let a = get("always_transient");
    assert_eq!((a.status, a.attempts), (CallStatus::Error, 3));
    assert_eq!(a.error.as_ref().map(|e| e.kind), Some(ErrorKind::Transient));
    assert!(
        a.error
            .as_ref()
            .is_some_and(|e| e.message.contains("after 3 attempts"))
    );
    // Backoff: attempt 2 after 50–100 ms, attempt 3 after 100–200 ms (jittered).
    assert!(
        a.duration_ms >= 150.0 && a.duration_ms <= 300.0,
        "{}",
        a.duration_ms
    );
    assert_eq!(r.metadata.retries, Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_tool_fails_only_its_own_call() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call("boom", json!({"panic": "index out of bounds"})),
            call("fine", json!({"ms": 5})),
            call("dependant", json!({})).depends_on(["boom"]),
        ],
    )
    .await;
    let boom = r.get("boom").and_then(|c| c.error.clone()).expect("error");
    assert_eq!(boom.kind, ErrorKind::Panic);
    assert!(boom.message.contains("index out of bounds"));
    assert_eq!(status(&r, "fine"), CallStatus::Ok);
    assert_eq!(status(&r, "dependant"), CallStatus::Skipped);
}

#[tokio::test(start_paused = true)]
async fn results_come_back_in_input_order_with_resolved_references() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call("late", json!({"ms": 30, "v": "${early.args.v}"})),
            call("early", json!({"ms": 1, "v": [1, 2]})),
            call(
                "text",
                json!({"s": "got ${early.args.v.1} and $${literal}"}),
            ),
            call("bad_path", json!({"x": "${early.args.missing}"})),
        ],
    )
    .await;
    let ids: Vec<&str> = r.results.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["late", "early", "text", "bad_path"]);
    assert_eq!(
        r.results[0].output.as_ref().map(|o| o["args"]["v"].clone()),
        Some(json!([1, 2]))
    );
    assert_eq!(
        r.results[2].output.as_ref().map(|o| o["args"]["s"].clone()),
        Some(json!("got 2 and ${literal}"))
    );
    let bad = &r.results[3];
    assert_eq!(bad.status, CallStatus::Error);
    assert_eq!(
        bad.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Reference)
    );
    assert!(
        bad.error
            .as_ref()
            .is_some_and(|e| e.message.contains("has no key \"missing\""))
    );
    assert_eq!(rig.probe.started_at("bad_path"), None);
}

#[tokio::test(start_paused = true)]
async fn dropping_an_execution_stops_every_call_it_started() {
    let rig = rig(Default::default());
    let executor = rig.executor.clone();
    let handle = tokio::spawn(async move {
        executor
            .execute_parallel(workload::fan_out(10, "t", json!({"hang": true})))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rig.probe.live(), 10);
    handle.abort();
    let _ = handle.await;
    tokio::task::yield_now().await;
    assert_eq!(rig.probe.live(), 0, "no call outlives its execution");
}

#[tokio::test(start_paused = true)]
async fn cancelling_an_execution_reports_every_call() {
    let rig = rig(ParallelExecutorConfig {
        max_parallel_calls: 2,
        ..Default::default()
    });
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        trigger.cancel();
    });
    let mut calls = workload::fan_out(2, "t", json!({"ms": 10}));
    calls.extend((0..3).map(|i| call(&format!("h{i}"), json!({"hang": true}))));
    calls.push(call("after", json!({})).depends_on(["h0"]));
    let r = rig
        .executor
        .execute_with_cancel(calls, token)
        .await
        .expect("valid");
    // h0 heads the longest chain, so it starts first, beside c0; c1 follows c0 at 10 ms.
    assert_eq!(r.get("h0").and_then(|c| c.started_ms), Some(0.0));
    assert_eq!(status(&r, "c0"), CallStatus::Ok);
    assert_eq!(
        r.get("c1").map(|c| (c.status, c.started_ms)),
        Some((CallStatus::Cancelled, Some(10.0)))
    );
    for id in ["h0", "h1", "h2", "after"] {
        assert_eq!(status(&r, id), CallStatus::Cancelled, "{id}");
    }
    assert_eq!(rig.probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_the_rest_at_the_first_failure() {
    let rig = rig(ParallelExecutorConfig {
        fail_fast: true,
        ..Default::default()
    });
    let r = run(
        &rig,
        vec![
            call("bad", json!({"ms": 10, "fail": "nope"})),
            call("long", json!({"ms": 1000})),
            call("later", json!({})).depends_on(["long"]),
        ],
    )
    .await;
    assert_eq!(status(&r, "bad"), CallStatus::Error);
    assert_eq!(status(&r, "long"), CallStatus::Cancelled);
    assert_eq!(status(&r, "later"), CallStatus::Cancelled);
    assert!(
        r.get("long")
            .and_then(|c| c.error.clone())
            .is_some_and(|e| e.message.contains("fail-fast: call bad"))
    );
    assert_eq!(r.total_time_ms, 10.0);
}

#[tokio::test(start_paused = true)]
async fn sequential_mode_runs_one_at_a_time_in_dependency_order() {
    let rig = rig(ParallelExecutorConfig {
        enable_parallel: false,
        ..Default::default()
    });
    let r = run(
        &rig,
        vec![
            call("b", json!({"ms": 10})).depends_on(["a"]),
            call("a", json!({"ms": 10})),
            call("c", json!({"ms": 10})),
        ],
    )
    .await;
    assert_eq!(rig.probe.peak(), 1);
    assert_eq!(
        r.metadata.execution_mode,
        toolgraph_core::ExecutionMode::Sequential
    );
    assert_eq!(r.speedup, 1.0);
    assert_eq!(r.total_time_ms, 30.0);
    assert!(rig.probe.ended_at("a") < rig.probe.started_at("b"));
}

#[tokio::test(start_paused = true)]
async fn update_config_changes_limits_for_the_next_admissions() {
    let rig = rig(ParallelExecutorConfig {
        max_parallel_calls: 1,
        ..Default::default()
    });
    let executor = rig.executor.clone();
    let run = tokio::spawn(async move {
        executor
            .execute_parallel(workload::fan_out(6, "t", json!({"ms": 100})))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(rig.probe.peak(), 1);
    rig.executor
        .update_config(ParallelExecutorConfig {
            max_parallel_calls: 8,
            ..Default::default()
        })
        .expect("valid");
    let r = run.await.expect("joined").expect("valid");
    assert!(r.success);
    // c0 ran alone 0–100, c1 from 100; the raise lets c2..c5 in when c1 ends at 200.
    assert_eq!(rig.probe.peak(), 4);
    assert_eq!(r.total_time_ms, 300.0);
    assert!(
        rig.executor
            .update_config(ParallelExecutorConfig {
                max_parallel_calls: 0,
                ..Default::default()
            })
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_resource_limit_added_or_removed_mid_run_keeps_counts_true() {
    // Calls on host:a run unlimited; a limit of 1 arrives while four of them run, then goes
    // away again. Every release must match a count: no underflow (a panic in debug builds,
    // a key blocked forever in release builds), and the new limit holds for later calls.
    let rig = rig(ParallelExecutorConfig::default());
    let executor = rig.executor.clone();
    let calls: Vec<ToolCall> = (0..4)
        .map(|i| {
            call(
                &format!("early{i}"),
                json!({"ms": 100, "reads": ["host:a"], "key": "host:a"}),
            )
        })
        .chain((0..4).map(|i| {
            call(
                &format!("late{i}"),
                json!({"ms": 100, "reads": ["host:a"], "key": "host:a"}),
            )
            .depends_on(["early0"])
        }))
        .collect();
    let run = tokio::spawn(async move { executor.execute_parallel(calls).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut limited = ParallelExecutorConfig::default();
    limited
        .per_resource_parallel_limits
        .insert("host:a".into(), 1);
    rig.executor.update_config(limited).expect("valid");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        rig.probe.peak_for("host:a"),
        4,
        "the early calls ran unlimited"
    );
    // The late calls became ready at 100 under the limit: one at a time.
    tokio::time::sleep(Duration::from_millis(150)).await;
    rig.executor
        .update_config(ParallelExecutorConfig::default())
        .expect("valid");
    let r = run.await.expect("joined").expect("valid");
    assert!(r.success, "{:?}", r.errors);
    // late: one from 100 to 200, one from 200 to 300; at 250 the limit is lifted, so the
    // remaining two start together at 300 (the second had already started at 200).
    assert_eq!(r.total_time_ms, 400.0);
}

#[tokio::test(start_paused = true)]
async fn metrics_are_measured_not_assumed() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![
            call("a", json!({"ms": 40})),
            call("b", json!({"ms": 20})).depends_on(["a"]),
            call("c", json!({"ms": 10})),
        ],
    )
    .await;
    assert_eq!(r.sequential_time_estimate_ms, 70.0);
    assert_eq!(r.critical_path_ms, 60.0);
    assert_eq!(r.total_time_ms, 60.0);
    assert_eq!(r.parallel_time_ms, 60.0);
    assert_eq!(r.speedup, 1.167);
    assert_eq!(r.efficiency, 1.0);
    assert_eq!(r.batches.len(), 2);
    assert_eq!(r.batches[0].call_ids, ["a", "c"]);
    assert_eq!(
        (r.batches[1].started_ms, r.batches[1].finished_ms),
        (Some(40.0), Some(60.0))
    );
    let b = r.get("b").expect("b");
    assert_eq!(
        (
            b.queued_ms,
            b.started_ms,
            b.finished_ms,
            b.duration_ms,
            b.level
        ),
        (0.0, Some(40.0), Some(60.0), 20.0, 1)
    );

    let stats = rig.executor.get_performance_stats();
    assert_eq!(stats.total_executions, 1);
    assert_eq!(stats.avg_success_rate, 1.0);
    assert_eq!(stats.tools["t"].count, 3);
    assert_eq!(stats.tools["t"].p50_ms, 20.0);
    assert_eq!(stats.tools["t"].p99_ms, 40.0);
}

#[tokio::test(start_paused = true)]
async fn results_convert_to_provider_messages_in_call_order() {
    let rig = rig(Default::default());
    let r = run(
        &rig,
        vec![call("x", json!({"fail": "nope"})), call("y", json!({}))],
    )
    .await;
    let openai = r.to_openai_messages();
    assert_eq!(openai.len(), 2);
    assert_eq!(
        openai[0],
        json!({"role": "tool", "tool_call_id": "x", "content": "error: nope"})
    );
    assert_eq!(openai[1]["tool_call_id"], "y");
    let anthropic = r.to_anthropic_message();
    assert_eq!(anthropic["role"], "user");
    assert_eq!(anthropic["content"][0]["is_error"], true);
    assert_eq!(anthropic["content"][1]["tool_use_id"], "y");
    assert!(anthropic["content"][1].get("is_error").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_preset_calls_dependants_run_once() {
    let r = rig(ParallelExecutorConfig::default());
    let plan = r
        .executor
        .plan(vec![
            call("a", json!({})),
            ToolCall::new("b", "t", json!({"after": "${a}"})),
            call("c", json!({})),
        ])
        .expect("plan");
    let preset = vec![
        Some(toolgraph_engine::Preset {
            status: CallStatus::Ok,
            output: Some(std::sync::Arc::new(json!("kept"))),
            error: None,
            attempts: 1,
        }),
        None,
        None,
    ];
    let result = r
        .executor
        .execute_plan_with(
            &plan,
            toolgraph_engine::RunOptions {
                preset,
                ..Default::default()
            },
        )
        .await;
    assert!(result.success, "{:?}", result.errors);
    assert_eq!(r.probe.invocations(), 2, "b and c, once each; a was kept");
    assert_eq!(
        result.results[1]
            .output
            .as_ref()
            .map(|o| o["args"]["after"].clone()),
        Some(json!("kept"))
    );
}

#[tokio::test(start_paused = true)]
async fn calls_after_a_join_start_when_the_last_of_its_group_ends() {
    let rig = rig(Default::default());
    // Four readers (one fails) of a folder, then three writes into it, through a join.
    let mut calls: Vec<ToolCall> = [10, 40, 20, 30]
        .iter()
        .enumerate()
        .map(|(i, ms)| call(&format!("list{i}"), json!({"ms": ms, "reads": ["dir:a"]})))
        .collect();
    calls[2].arguments["fail"] = json!("unreadable");
    calls.extend((0..3).map(|i| call(&format!("put{i}"), json!({"ms": 5, "inside": ["dir:a"]}))));
    let plan = rig.executor.plan(calls.clone()).expect("valid");
    assert_eq!(
        plan.joins().len(),
        1,
        "the group is large enough for a join"
    );
    let r = run(&rig, calls).await;
    assert_eq!(status(&r, "list2"), CallStatus::Error);
    for i in 0..3 {
        let put = r.get(&format!("put{i}")).expect("put");
        assert_eq!(
            put.status,
            CallStatus::Ok,
            "a join orders, it carries no data"
        );
        assert_eq!(
            put.started_ms,
            Some(40.0),
            "put{i} starts when list1 (40 ms) ends"
        );
        assert_eq!(put.level, 1);
    }
    assert_eq!(r.parallel_time_ms, 45.0);
    assert_eq!(r.critical_path_ms, 45.0, "the join weighs nothing");
}

#[tokio::test(start_paused = true)]
async fn cancelling_before_a_join_ends_cancels_the_calls_after_it() {
    let rig = rig(Default::default());
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        trigger.cancel();
    });
    let mut calls: Vec<ToolCall> = (0..4)
        .map(|i| {
            call(
                &format!("list{i}"),
                json!({"ms": 10 * (i + 1), "reads": ["dir:a"]}),
            )
        })
        .collect();
    calls.extend((0..3).map(|i| call(&format!("put{i}"), json!({"inside": ["dir:a"]}))));
    let r = rig
        .executor
        .execute_with_cancel(calls, token)
        .await
        .expect("valid");
    assert_eq!(status(&r, "list0"), CallStatus::Ok);
    for id in ["list1", "list2", "list3", "put0", "put1", "put2"] {
        assert_eq!(status(&r, id), CallStatus::Cancelled, "{id}");
    }
    assert!(r.get("put0").is_some_and(|c| c.started_ms.is_none()));
    assert_eq!(rig.probe.live(), 0);
}
