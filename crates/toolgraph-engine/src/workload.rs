//! Deterministic batches for benchmarks, tests and examples: fan-outs, chains, the skewed
//! layered DAG that defeats level-by-level executors, and seeded random DAGs.
//!
//! Every builder is pure: the same arguments give the same calls.

use serde_json::json;
use toolgraph_core::ToolCall;

/// `n` independent calls of `tool` with `args`.
pub fn fan_out(n: usize, tool: &str, args: serde_json::Value) -> Vec<ToolCall> {
    (0..n)
        .map(|i| ToolCall::new(format!("c{i}"), tool, args.clone()))
        .collect()
}

/// `n` calls of `tool`, each depending on the one before.
pub fn chain(n: usize, tool: &str, args: serde_json::Value) -> Vec<ToolCall> {
    (0..n)
        .map(|i| {
            let call = ToolCall::new(format!("c{i}"), tool, args.clone());
            if i == 0 {
                call
            } else {
                call.depends_on([format!("c{}", i - 1)])
            }
        })
        .collect()
}

/// `pairs` copies of a two-level pattern of `sleep` calls: `long_k` (long) feeds
/// `short_after_long_k`, `short_k` feeds `long_after_short_k`. A level-by-level executor
/// waits `2 × long_ms`; the optimum (the critical path) is `long_ms + short_ms`.
pub fn skewed_layers(pairs: usize, long_ms: u64, short_ms: u64) -> Vec<ToolCall> {
    let mut calls = Vec::with_capacity(pairs * 4);
    for k in 0..pairs {
        calls.push(ToolCall::new(
            format!("long_{k}"),
            "sleep",
            json!({"ms": long_ms}),
        ));
        calls.push(ToolCall::new(
            format!("short_{k}"),
            "sleep",
            json!({"ms": short_ms}),
        ));
    }
    for k in 0..pairs {
        calls.push(
            ToolCall::new(
                format!("long_after_short_{k}"),
                "sleep",
                json!({"ms": long_ms}),
            )
            .depends_on([format!("short_{k}")]),
        );
        calls.push(
            ToolCall::new(
                format!("short_after_long_{k}"),
                "sleep",
                json!({"ms": short_ms}),
            )
            .depends_on([format!("long_{k}")]),
        );
    }
    calls
}

/// A random DAG of `n` `sleep` calls (durations in `ms`), each depending on up to
/// `max_deps` earlier calls; the same `seed` gives the same DAG.
pub fn random_dag(
    n: usize,
    max_deps: usize,
    ms: std::ops::RangeInclusive<u64>,
    seed: u64,
) -> Vec<ToolCall> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let call = ToolCall::new(format!("c{i}"), "sleep", json!({"ms": rng.u64(ms.clone())}));
            if i == 0 {
                return call;
            }
            let k = rng.usize(0..=max_deps.min(i));
            let mut deps: Vec<usize> = (0..k).map(|_| rng.usize(0..i)).collect();
            deps.sort_unstable();
            deps.dedup();
            call.depends_on(deps.into_iter().map(|d| format!("c{d}")))
        })
        .collect()
}
