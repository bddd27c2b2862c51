//! Randomised batches on the paused clock: whatever the mix of dependencies, hazards and
//! limits, no limit is exceeded, no call starts before its predecessors end, calls touching
//! one resource with a writer never overlap, and every call ends exactly once.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use toolgraph_core::{CallStatus, ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_test_support::{Probe, ScriptedTool};

const TOOLS: [&str; 3] = ["alpha", "beta", "gamma"];
const RESOURCES: [&str; 4] = ["file:a", "file:b", "host:x", "host:y"];

fn batch(rng: &mut fastrand::Rng, n: usize) -> Vec<ToolCall> {
    (0..n)
        .map(|i| {
            let mut args = json!({"ms": rng.u64(0..=20)});
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            let mut inside = Vec::new();
            for r in RESOURCES {
                match rng.u8(0..10) {
                    0 => writes.push(r),
                    1..=3 => reads.push(r),
                    4 | 5 => inside.push(r),
                    _ => {}
                }
            }
            args["reads"] = json!(reads);
            args["writes"] = json!(writes);
            args["inside"] = json!(inside);
            let tool = TOOLS[rng.usize(0..TOOLS.len())];
            let mut call = ToolCall::new(format!("c{i}"), tool, args);
            if i > 0 && rng.bool() {
                call = call.depends_on([format!("c{}", rng.usize(0..i))]);
            }
            if i > 0 && rng.u8(0..4) == 0 {
                call.arguments["from"] =
                    Value::String(format!("${{c{}.args.ms}}", rng.usize(0..i)));
            }
            call.priority(rng.i64(0..3))
        })
        .collect()
}

/// Most intervals open at once among `spans` (half-open: an end and a start at the same
/// instant do not overlap).
fn peak(spans: &[(f64, f64)]) -> usize {
    let mut points: Vec<(f64, i32)> = spans
        .iter()
        .filter(|s| s.1 > s.0)
        .flat_map(|s| [(s.0, 1), (s.1, -1)])
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut best) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        best = best.max(now);
    }
    best as usize
}

#[tokio::test(start_paused = true)]
async fn random_batches_keep_every_invariant() {
    for seed in 0..40u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let probe = Probe::new();
        let mut tools = ToolSet::new();
        for name in TOOLS {
            tools
                .register(ScriptedTool::with_spec(
                    ToolSpec::new(name).cost(1.0, 0),
                    &probe,
                ))
                .expect("tool");
        }
        let mut config = ParallelExecutorConfig {
            max_parallel_calls: rng.usize(1..=6),
            resource_limit_cpu: Some(rng.usize(2..=5) as f64),
            ..Default::default()
        };
        config
            .per_tool_parallel_limits
            .insert("alpha".into(), rng.usize(1..=2));
        config
            .per_resource_parallel_limits
            .insert("host".into(), rng.usize(1..=2));
        let executor = ParallelExecutor::new(tools, config.clone()).expect("config");
        let calls = batch(&mut rng, 60);
        let plan = executor.plan(calls.clone()).expect("valid batch");
        let r = executor
            .execute_parallel(calls.clone())
            .await
            .expect("valid batch");

        assert_eq!(r.results.len(), 60, "seed {seed}");
        assert!(
            r.results.iter().all(|c| c.status == CallStatus::Ok),
            "seed {seed}: {:?}",
            r.errors
        );
        assert_eq!(probe.invocations(), 60, "seed {seed}: each call ran once");
        let span = |i: usize| {
            (
                r.results[i].started_ms.unwrap_or(0.0),
                r.results[i].finished_ms.unwrap_or(0.0),
            )
        };

        for (from, to, reason) in plan.ordered_pairs() {
            assert!(
                span(from).1 <= span(to).0,
                "seed {seed}: {} started before {} ended ({reason})",
                calls[to].id,
                calls[from].id,
            );
        }
        let all: Vec<_> = (0..60).map(span).collect();
        assert!(
            peak(&all) <= config.max_parallel_calls,
            "seed {seed}: global limit"
        );
        assert!(
            peak(&all) <= config.resource_limit_cpu.unwrap_or(0.0) as usize,
            "seed {seed}: cpu budget"
        );
        let alpha: Vec<_> = (0..60)
            .filter(|&i| calls[i].name == "alpha")
            .map(span)
            .collect();
        assert!(
            peak(&alpha) <= config.per_tool_parallel_limits["alpha"],
            "seed {seed}: tool limit"
        );

        // Per resource, its users and how each touches it: readers run together, writers
        // inside it run together, anything else is ordered.
        let mut by_resource: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for (i, c) in calls.iter().enumerate() {
            for key in ["reads", "writes", "inside"] {
                for r in c.arguments[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    let r = RESOURCES.iter().find(|x| **x == r).copied().unwrap_or("?");
                    by_resource.entry(r).or_default().push((i, key));
                }
            }
        }
        for (resource, users) in &by_resource {
            if resource.starts_with("host") {
                let spans: Vec<_> = users.iter().map(|&(i, _)| span(i)).collect();
                assert!(
                    peak(&spans) <= config.per_resource_parallel_limits["host"],
                    "seed {seed}: {resource} limit"
                );
            }
            for (k, &(i, ki)) in users.iter().enumerate() {
                for &(j, kj) in &users[k + 1..] {
                    if ki != kj || ki == "writes" {
                        assert!(
                            span(i).1 <= span(j).0,
                            "seed {seed}: {resource} hazard between c{i} and c{j}"
                        );
                    }
                }
            }
        }
    }
}
