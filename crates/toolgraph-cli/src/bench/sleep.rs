//! `toolgraph bench`: how close sleep-bound batches come to their ideal makespan.
//!
//! The "makespan − critical path" figures compare a run with the durations its calls
//! actually had, so a `sleep` that overshoots hides there. These compare the makespan with
//! the durations the calls *asked for*: the sum along the longest chain of nominal sleeps.
//! What is left is every sleep's overshoot on that chain plus the engine's per-edge cost.
//!
//! - a chain of 50 × `sleep 2 ms` (ideal 100 ms): the overshoot of fifty sleeps in a row;
//! - a fan-out of 5 × `sleep 100 ms` (ideal 100 ms);
//! - a skewed DAG of 8 levels × 16 calls: in each level one call sleeps 60 ms and fifteen
//!   sleep 1–8 ms, and every call waits for its own column and for the previous level's long
//!   call (ideal 8 × 60 = 480 ms);
//! - a fan-out of 5,000 × `sleep 2 ms` (ideal 2 ms): many sleeps pending at once.
//!
//! Each figure is the median makespan of `runs` runs. Nothing here asserts on time.

use anyhow::{Result, ensure};
use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, ToolCall};
use toolgraph_engine::workload;

use crate::bench::{Figure, executor, median};

const LEVELS: usize = 8;
const WIDTH: usize = 16;
const LONG_MS: u64 = 60;

/// The skewed 8 × 16 DAG described in the module docs.
fn skewed_dag() -> Vec<ToolCall> {
    let long_column = |level: usize| (level * 5) % WIDTH;
    let mut calls = Vec::with_capacity(LEVELS * WIDTH);
    for level in 0..LEVELS {
        for column in 0..WIDTH {
            let ms = if column == long_column(level) {
                LONG_MS
            } else {
                1 + ((3 * column + level) % 8) as u64
            };
            let call = ToolCall::new(format!("l{level}c{column}"), "sleep", json!({"ms": ms}));
            calls.push(if level == 0 {
                call
            } else {
                let long = long_column(level - 1);
                let mut deps = vec![format!("l{}c{column}", level - 1)];
                if long != column {
                    deps.push(format!("l{}c{long}", level - 1));
                }
                call.depends_on(deps)
            });
        }
    }
    calls
}

/// The sleep-bound figures (median makespan of `runs`).
pub(crate) async fn figures(runs: usize) -> Result<Vec<Figure>> {
    let ex = executor(ParallelExecutorConfig {
        max_parallel_calls: 8192,
        ..Default::default()
    })?;
    let scenarios = [
        (
            "chain of 50 × sleep 2 ms: makespan",
            workload::chain(50, "sleep", json!({"ms": 2})),
            100.0,
            "≤ 103 ms",
        ),
        (
            "fan-out of 5 × sleep 100 ms: makespan",
            workload::fan_out(5, "sleep", json!({"ms": 100})),
            100.0,
            "≤ 100.5 ms",
        ),
        (
            "skewed DAG 8 levels × 16 calls: makespan",
            skewed_dag(),
            (LEVELS as u64 * LONG_MS) as f64,
            "≤ 495 ms",
        ),
        (
            "fan-out of 5,000 × sleep 2 ms: makespan",
            workload::fan_out(5_000, "sleep", json!({"ms": 2})),
            2.0,
            "—",
        ),
    ];
    let mut figures = Vec::new();
    for (name, calls, ideal, target) in scenarios {
        let mut makespans = Vec::new();
        for _ in 0..runs.max(1) {
            let r = ex
                .execute_parallel(calls.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(
                r.success,
                "{name}: the batch failed: {:?}",
                r.errors.first()
            );
            makespans.push(r.total_time_ms);
        }
        let makespan = median(makespans);
        figures.push(Figure {
            name: name.into(),
            value: makespan,
            unit: "ms",
            target: (target != "—").then(|| target.into()),
            note: format!("ideal {ideal:.0} ms: +{:.2} ms", makespan - ideal),
        });
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skewed_dag_s_longest_nominal_chain_is_its_long_calls() {
        let calls = skewed_dag();
        assert_eq!(calls.len(), LEVELS * WIDTH);
        // Longest path over nominal durations, in input order (dependencies come first).
        let index: std::collections::HashMap<&str, usize> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        let mut finish = vec![0u64; calls.len()];
        for (i, call) in calls.iter().enumerate() {
            let start = call
                .depends_on
                .iter()
                .map(|d| finish[index[d.as_str()]])
                .max()
                .unwrap_or(0);
            finish[i] = start + call.arguments["ms"].as_u64().unwrap_or(0);
        }
        assert_eq!(finish.iter().max(), Some(&(LEVELS as u64 * LONG_MS)));
    }
}
