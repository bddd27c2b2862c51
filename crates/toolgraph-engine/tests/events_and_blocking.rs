//! Events reach a sink in a coherent order, and blocking tools run on the blocking pool,
//! in parallel, and learn of their cancellation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolgraph_core::{
    CallStatus, Event, EventSink, FnTool, ParallelExecutorConfig, ToolCall, ToolError, ToolSet,
    ToolSpec,
};
use toolgraph_engine::ParallelExecutor;
use toolgraph_test_support::{Probe, ScriptedTool};

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn on_event(&self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_call_is_ready_started_and_finished_once_in_order() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools.register(ScriptedTool::new("t", &probe)).expect("t");
    let sink = Arc::new(Collect::default());
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default())
        .expect("config")
        .with_sink(sink.clone());
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("a", "t", json!({"ms": 10})),
            ToolCall::new("b", "t", json!({"fail": "x"})),
            ToolCall::new("c", "t", json!({})).depends_on(["b"]),
        ])
        .await
        .expect("valid");
    let events = sink.0.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        events.first(),
        Some(&Event::ExecutionStarted { calls: 3, edges: 1 })
    );
    assert_eq!(
        events.last(),
        Some(&Event::ExecutionFinished { success: false })
    );
    for position in 0..3 {
        let at = |want: &dyn Fn(&Event) -> bool| events.iter().filter(|e| want(e)).count();
        let finished =
            at(&|e| matches!(e, Event::CallFinished { position: p, .. } if *p == position));
        assert_eq!(finished, 1, "call {position} finished once");
    }
    // The skipped call never became ready or started.
    assert!(!events.iter().any(|e| matches!(
        e,
        Event::CallStarted { position: 2 } | Event::CallReady { position: 2 }
    )));
    let a_started = events
        .iter()
        .position(|e| *e == Event::CallStarted { position: 0 });
    let a_finished = events.iter().position(|e| {
        matches!(
            e,
            Event::CallFinished {
                position: 0,
                status: CallStatus::Ok,
                ..
            }
        )
    });
    assert!(a_started < a_finished);
    assert_eq!(r.results[2].status, CallStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tools_run_in_parallel_and_see_their_timeout() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let (r2, p2, c2) = (running.clone(), peak.clone(), saw_cancel.clone());
    let spin = FnTool::new(ToolSpec::new("spin").blocking(), move |args: Value, ctx| {
        let (running, peak, saw_cancel) = (r2.clone(), p2.clone(), c2.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_millis(args["ms"].as_u64().unwrap_or(0));
            let mut outcome = Ok(json!("done"));
            while Instant::now() < until {
                if ctx.cancel.is_cancelled() {
                    saw_cancel.store(true, Ordering::SeqCst);
                    outcome = Err(ToolError::permanent("cancelled"));
                    break;
                }
                std::hint::spin_loop();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            outcome
        }
    });
    let mut tools = ToolSet::new();
    tools.register(spin).expect("spin");
    let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config");
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("a", "spin", json!({"ms": 60})),
            ToolCall::new("b", "spin", json!({"ms": 60})),
            ToolCall::new("stuck", "spin", json!({"ms": 60_000})).timeout_ms(50),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Ok);
    assert_eq!(r.results[1].status, CallStatus::Ok);
    assert_eq!(r.results[2].status, CallStatus::Timeout);
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "blocking calls overlap on the blocking pool"
    );
    // The abandoned thread notices its cancellation instead of spinning for a minute.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !saw_cancel.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_cancel.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_blocking_call_keeps_its_slot_until_its_thread_returns() {
    // A blocking tool that ignores its cancel flag: after its timeout the call is over, but
    // its thread still burns CPU, so its slot is held until the thread returns.
    let returned = Arc::new(Mutex::new(None));
    let r2 = returned.clone();
    let stubborn = FnTool::new(ToolSpec::new("stubborn").blocking(), move |_, _| {
        let returned = r2.clone();
        async move {
            std::thread::sleep(Duration::from_millis(300));
            *returned.lock().expect("lock") = Some(Instant::now());
            Ok(json!("late"))
        }
    });
    let started = Arc::new(Mutex::new(None));
    let s2 = started.clone();
    let quick = FnTool::new(ToolSpec::new("quick"), move |_, _| {
        let started = s2.clone();
        async move {
            *started.lock().expect("lock") = Some(Instant::now());
            Ok(json!("ok"))
        }
    });
    let mut tools = ToolSet::new();
    tools.register(stubborn).expect("stubborn");
    tools.register(quick).expect("quick");
    let executor = ParallelExecutor::new(
        tools,
        ParallelExecutorConfig {
            max_parallel_calls: 1,
            ..Default::default()
        },
    )
    .expect("config");
    let r = executor
        .execute_parallel(vec![
            ToolCall::new("stuck", "stubborn", json!({})).timeout_ms(50),
            ToolCall::new("next", "quick", json!({})),
        ])
        .await
        .expect("valid");
    assert_eq!(r.results[0].status, CallStatus::Timeout);
    assert_eq!(r.results[1].status, CallStatus::Ok);
    let returned = returned.lock().expect("lock").expect("the thread returned");
    let started = started.lock().expect("lock").expect("next ran");
    assert!(
        started >= returned,
        "the next call started {:?} before the timed-out call's thread returned",
        returned - started
    );
}
