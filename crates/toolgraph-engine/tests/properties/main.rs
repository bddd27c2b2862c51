//! Property tests of the scheduler (proptest, shrinking on): random batches — a DAG of
//! `depends_on` and `${ref}` edges, resource hazards, idempotent and non-idempotent tools,
//! failures, transient failures and retries, panics, hangs and timeouts — under random
//! limits, sometimes cancelled mid-run, sometimes with `update_config` mid-run, sometimes
//! beside a second execution through the same executor, all on tokio's paused clock.
//!
//! Properties, for every execution:
//! - no limit is exceeded: calls running at once, per tool, per resource key and the CPU
//!   budget, each at most the limit in force (the larger of the old and the new one when
//!   `update_config` changed it mid-run), across both executions (the limits are shared),
//!   with hazard checks on or off;
//! - every call has exactly one result, in input order, and one `CallFinished` event with
//!   the same status;
//! - a call whose data dependency did not succeed is skipped, or cancelled when the
//!   execution was; a skipped call had such a dependency and never ran; `cancelled` appears
//!   only in a cancelled execution (the caller's token, or fail-fast after a failure);
//! - each call ends as its script says once it runs: the outcome (`ok`, or an error of
//!   kind `permanent`, `transient` or `panic`) after exactly the tries the script and the
//!   retry policy take, or `timeout` when those tries and the backoffs between them outlast
//!   the call's timeout (a hang always times out); a non-idempotent call runs at most once;
//! - the attempts a result reports are the tries the tool saw;
//! - no call starts before every call it depends on (data or hazard edge) ended;
//! - after a cancellation (the token fired, or fail-fast saw the first failure) nothing
//!   starts, nothing ends `ok`, and the execution returns at once;
//! - when the execution returns, no tool call is left running.
//!
//! Layout: `scenario.rs` generates the cases, `recorder.rs` records what the tools saw, this
//! file runs and judges them. `PROPTEST_CASES=N` runs more cases (the default, 256, takes
//! about a second).

mod recorder;
mod scenario;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;
use toolgraph_core::{
    CallStatus, ErrorKind, ParallelExecutionResult, ParallelExecutorConfig, ToolCall, ToolSet,
    ToolSpec,
};
use toolgraph_engine::{CancellationToken, ParallelExecutor, Plan};
use toolgraph_test_support::{Probe, ScriptedTool};

use recorder::{Finishes, Recorded, Recorder, Seen, quiet_scripted_panics};
use scenario::{Limits, Scenario, Script, TOOLS, scenario};

/// One execution's outcome and what is needed to judge it.
struct Run {
    prefix: &'static str,
    result: ParallelExecutionResult,
    finishes: Vec<(usize, CallStatus)>,
    cancel_at: Option<u64>,
}

async fn run_scenario(s: &Scenario) -> (Vec<Run>, Arc<Recorder>, Arc<Probe>, Plan) {
    let probe = Probe::new();
    let recorder = Arc::new(Recorder::default());
    recorder.with(|r| r.origin = Some(Instant::now()));
    let mut tools = ToolSet::new();
    let specs = [
        ToolSpec::new(TOOLS[0]),
        ToolSpec::new(TOOLS[1]).idempotent(),
        ToolSpec::new(TOOLS[2]).idempotent().cost(1.0, 0),
    ];
    for (index, spec) in specs.into_iter().enumerate() {
        let tool = Recorded {
            inner: ScriptedTool::with_spec(spec, &probe),
            index,
            recorder: recorder.clone(),
        };
        if let Err(e) = tools.register(tool) {
            panic!("registering {}: {e}", TOOLS[index]);
        }
    }
    let executor = match ParallelExecutor::new(tools, s.config(&s.limits)) {
        Ok(e) => e,
        Err(e) => panic!("a generated configuration is valid: {e}"),
    };
    let plan = match executor.plan(s.batch("c")) {
        Ok(p) => p,
        Err(e) => panic!("a generated batch is valid: {e}"),
    };

    if let Some((at, limits)) = &s.update {
        let executor = executor.clone();
        let config = s.config(limits);
        let at = *at;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at)).await;
            if let Err(e) = executor.update_config(config) {
                panic!("a generated update is valid: {e}");
            }
        });
    }
    let token = CancellationToken::new();
    if let Some(at) = s.cancel_at {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at)).await;
            token.cancel();
        });
    }

    let execute = |prefix: &'static str, token: CancellationToken, cancel_at: Option<u64>| {
        let finishes = Arc::new(Finishes::default());
        let executor = executor.clone().with_sink(finishes.clone());
        let batch = s.batch(prefix);
        async move {
            let result = match executor.execute_with_cancel(batch, token).await {
                Ok(r) => r,
                Err(e) => panic!("a generated batch is valid: {e}"),
            };
            let finishes = finishes.0.lock().map(|f| f.clone()).unwrap_or_default();
            Run {
                prefix,
                result,
                finishes,
                cancel_at,
            }
        }
    };
    let mut runs = Vec::new();
    if s.second {
        let (a, b) = tokio::join!(
            execute("c", token, s.cancel_at),
            execute("d", CancellationToken::new(), None)
        );
        runs.push(a);
        runs.push(b);
    } else {
        runs.push(execute("c", token, s.cancel_at).await);
    }
    (runs, recorder, probe, plan)
}

fn max_limit(a: Option<usize>, b: Option<usize>, updated: bool) -> Option<usize> {
    if !updated {
        return a;
    }
    Some(a?.max(b?))
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    quiet_scripted_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => panic!("a runtime: {e}"),
    };
    let (runs, recorder, probe, plan) = runtime.block_on(run_scenario(s));
    drop(runtime);

    // Nothing left running.
    prop_assert_eq!(probe.live(), 0, "a tool call outlived its execution");
    let seen = recorder
        .0
        .lock()
        .map_err(|_| TestCaseError::fail("recorder poisoned"))?;
    prop_assert_eq!(seen.in_flight, 0);

    // Limits, across every execution of the executor.
    let updated = s.update.is_some();
    let new = s.update.as_ref().map_or(&s.limits, |(_, l)| l);
    let global = |l: &Limits| if l.parallel { l.global } else { 1 };
    let global_limit = max_limit(Some(global(&s.limits)), Some(global(new)), updated);
    prop_assert!(
        Some(seen.peak) <= global_limit,
        "{} calls ran at once, limit {:?}",
        seen.peak,
        global_limit
    );
    for (t, name) in TOOLS.iter().enumerate() {
        if let Some(limit) = max_limit(s.limits.per_tool[t], new.per_tool[t], updated) {
            prop_assert!(
                seen.tool_peak[t] <= limit,
                "{} calls of {name} at once, limit {limit}",
                seen.tool_peak[t],
            );
        }
    }
    let old_config = s.config(&s.limits);
    let new_config = s.config(new);
    // Known defect: with `validate_thread_safety = false` the planner records no resource
    // keys, so per-resource limits are not enforced at all; see
    // `per_resource_limits_hold_without_hazard_checks` below. Checked only with hazards on
    // until that is fixed.
    for (key, peak) in seen.key_peak.iter() {
        let limit = max_limit(
            old_config.resource_limit(key),
            new_config.resource_limit(key),
            updated,
        );
        if let Some(limit) = limit {
            prop_assert!(
                *peak <= limit,
                "{peak} calls on {key} at once, limit {limit}"
            );
        }
    }
    let cpu = |l: &Limits| l.cpu.map(|c| c as usize);
    if let Some(limit) = max_limit(cpu(&s.limits), cpu(new), updated) {
        prop_assert!(
            seen.cpu_peak <= limit,
            "{} CPU units in use, budget {limit}",
            seen.cpu_peak
        );
    }

    for run in &runs {
        check_run(s, run, &seen, &plan)?;
    }
    Ok(())
}

fn check_run(s: &Scenario, run: &Run, seen: &Seen, plan: &Plan) -> Result<(), TestCaseError> {
    let n = s.calls.len();
    let results = &run.result.results;
    let id = |i: usize| format!("{}{i}", run.prefix);
    let attempts_seen = |i: usize| seen.calls.get(&id(i)).map_or(0, |c| c.attempts);

    // One result per call, in input order; one finish event each, with the same status.
    prop_assert_eq!(results.len(), n);
    let mut finished = vec![Vec::new(); n];
    for &(position, status) in &run.finishes {
        prop_assert!(position < n);
        finished[position].push(status);
    }
    for (i, r) in results.iter().enumerate() {
        prop_assert_eq!(&r.id, &id(i), "results in input order");
        prop_assert_eq!(&finished[i], &vec![r.status], "{} ended exactly once", r.id);
    }
    prop_assert_eq!(
        run.result.success,
        results.iter().all(|r| r.status == CallStatus::Ok)
    );

    let failed = results
        .iter()
        .any(|r| matches!(r.status, CallStatus::Error | CallStatus::Timeout));
    let cancellable = run.cancel_at.is_some() || (s.fail_fast && failed);
    // When the execution was cancelled: by the caller's token, or by fail-fast the moment
    // the first call failed.
    let first_failure = results
        .iter()
        .filter(|r| matches!(r.status, CallStatus::Error | CallStatus::Timeout))
        .filter_map(|r| r.finished_ms)
        .min_by(f64::total_cmp)
        .filter(|_| s.fail_fast);
    let cut = run
        .cancel_at
        .map(|at| at as f64)
        .into_iter()
        .chain(first_failure)
        .min_by(f64::total_cmp);

    for (i, r) in results.iter().enumerate() {
        let spec = &s.calls[i];
        let ran = attempts_seen(i);
        let (depends_on, references) = s.data_deps(i);
        let failed_dep = depends_on
            .iter()
            .chain(&references)
            .find(|&&d| results[d].status != CallStatus::Ok);
        let kind = r.error.as_ref().map(|e| e.kind);

        prop_assert!(
            kind != Some(ErrorKind::Unschedulable),
            "{} unschedulable: {:?}",
            r.id,
            r.error
        );
        if let Some(&d) = failed_dep {
            prop_assert!(
                r.status == CallStatus::Skipped
                    || (r.status == CallStatus::Cancelled && cancellable),
                "{} ended {:?} though its dependency {} ended {:?}",
                r.id,
                r.status,
                id(d),
                results[d].status
            );
        }
        match r.status {
            CallStatus::Skipped => {
                prop_assert!(
                    failed_dep.is_some(),
                    "{} skipped with every dependency ok",
                    r.id
                );
                prop_assert_eq!(ran, 0, "{} was skipped yet ran", &r.id);
            }
            CallStatus::Cancelled => {
                prop_assert!(
                    cancellable,
                    "{} cancelled in an execution nobody cancelled",
                    r.id
                );
            }
            CallStatus::Interrupted => prop_assert!(false, "{} interrupted", r.id),
            CallStatus::Ok | CallStatus::Error | CallStatus::Timeout => {}
        }

        // At most once unless idempotent; never more than the retry policy allows.
        let idempotent = spec.tool != 0;
        let max = if idempotent { s.max_attempts } else { 1 };
        prop_assert!(ran <= max, "{} ran {ran} times (at most {max})", r.id);
        if ran > 0 {
            prop_assert!(r.started_ms.is_some(), "{} ran but has no start", r.id);
        }

        // The status (and attempts) its script gives, once it ran to an end.
        if matches!(
            r.status,
            CallStatus::Ok | CallStatus::Error | CallStatus::Timeout
        ) {
            prop_assert!(ran >= 1, "{} ended {:?} without running", r.id, r.status);
            let (outcome, attempts, allowed) = s.expected(i);
            prop_assert!(
                allowed.contains(&r.status),
                "{} ({:?} on {}, {} ms a try) ended {:?} ({:?}), expected one of {:?}",
                r.id,
                spec.script,
                TOOLS[spec.tool],
                spec.ms,
                r.status,
                r.error,
                allowed
            );
            if r.status == outcome {
                prop_assert_eq!(ran, attempts, "{} tries", &r.id);
                prop_assert_eq!(r.attempts, attempts, "{} attempts reported", &r.id);
            }
            if r.status == CallStatus::Error {
                let want = match spec.script {
                    Script::Panic => ErrorKind::Panic,
                    Script::Fail => ErrorKind::Permanent,
                    _ => ErrorKind::Transient,
                };
                prop_assert_eq!(kind, Some(want), "{} error kind", &r.id);
            }
            if r.status == CallStatus::Ok {
                let output_id = r.output().and_then(|o| o.get("id")).and_then(Value::as_str);
                prop_assert_eq!(output_id, Some(r.id.as_str()));
            }
        }
        prop_assert!(
            kind != Some(ErrorKind::Reference),
            "{}: a reference to a successful call did not resolve: {:?}",
            r.id,
            r.error
        );

        // Nothing starts, and nothing ends ok, after a cancellation.
        if let Some(at) = cut {
            if r.status == CallStatus::Ok {
                prop_assert!(
                    r.finished_ms.unwrap_or(0.0) <= at + 1e-6,
                    "{} ended ok at {:?} ms, after the cancellation at {at}",
                    r.id,
                    r.finished_ms
                );
            }
            if let Some(started) = r.started_ms {
                prop_assert!(
                    started <= at + 1e-6,
                    "{} started at {started} ms, after the cancellation at {at}",
                    r.id
                );
            }
        }
    }

    // No call started before every call it depends on ended (by the tools' own order).
    for (from_at, to_at, reason) in plan.ordered_pairs() {
        let (Some(from), Some(to)) = (seen.calls.get(&id(from_at)), seen.calls.get(&id(to_at)))
        else {
            continue;
        };
        prop_assert!(
            from.last_end.is_some_and(|end| end < to.first_start),
            "{} started before {} ended ({reason})",
            id(to_at),
            id(from_at),
        );
    }
    if let Some(at) = cut {
        for i in 0..n {
            if let Some(c) = seen.calls.get(&id(i)) {
                prop_assert!(
                    c.last_start_ms as f64 <= at + 1e-6,
                    "an attempt of {} started at {} ms, after the cancellation at {at}",
                    id(i),
                    c.last_start_ms
                );
            }
        }
        prop_assert!(
            run.result.total_time_ms <= at + 1e-6,
            "a cancelled execution went on to {} ms (cancelled at {at})",
            run.result.total_time_ms
        );
    }
    Ok(())
}

proptest! {
    // A failing case is saved beside this file (`main.proptest-regressions`) and run
    // first next time; commit it with the fix.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn scheduler_keeps_every_invariant(s in scenario()) {
        check(&s)?;
    }
}

/// The shrunk case of a defect the properties found: with `validate_thread_safety = false`
/// the planner recorded no resource keys for a call (only its hazard branch did), so
/// `per_resource_parallel_limits` — the per-host HTTP limit, an MCP server's
/// `max_concurrency` — were silently not enforced: two readers of `host:x` under `host = 1`
/// ran at once.
#[tokio::test(start_paused = true)]
async fn per_resource_limits_hold_without_hazard_checks() {
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    if let Err(e) = tools.register(ScriptedTool::new("plain", &probe)) {
        panic!("{e}");
    }
    let mut config = ParallelExecutorConfig {
        validate_thread_safety: false,
        ..ParallelExecutorConfig::default()
    };
    config.per_resource_parallel_limits.insert("host".into(), 1);
    let executor = match ParallelExecutor::new(tools, config) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let call = |id: &str| {
        ToolCall::new(
            id,
            "plain",
            json!({"ms": 5, "reads": ["host:x"], "key": "host:x"}),
        )
    };
    let r = executor.execute_parallel(vec![call("a"), call("b")]).await;
    assert!(r.is_ok_and(|r| r.success));
    assert_eq!(
        probe.peak_for("host:x"),
        1,
        "two calls on host:x at once under host = 1"
    );
}
