//! Human-readable rendering of a result: a table of calls and a summary line.

use toolgraph_core::{CallStatus, ParallelExecutionResult};

fn ms(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1} s", x / 1000.0)
    } else {
        format!("{x:.1} ms")
    }
}

/// The result as a table and a summary, ready to print.
pub fn summary(r: &ParallelExecutionResult) -> String {
    let id_w = r
        .results
        .iter()
        .map(|c| c.id.chars().count())
        .max()
        .unwrap_or(2)
        .max(2);
    let tool_w = r
        .results
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<id_w$}  {:<tool_w$}  {:<9}  {:>9}  {:>9}  {:>9}  {:>5}  {:>8}\n",
        "id", "tool", "status", "queued", "start", "run", "level", "attempts"
    );
    for c in &r.results {
        out.push_str(&format!(
            "{:<id_w$}  {:<tool_w$}  {:<9}  {:>9}  {:>9}  {:>9}  {:>5}  {:>8}\n",
            c.id,
            c.name,
            c.status.as_str(),
            ms(c.queued_ms),
            c.started_ms.map_or_else(|| "-".into(), ms),
            if c.started_ms.is_some() {
                ms(c.duration_ms)
            } else {
                "-".into()
            },
            c.level,
            c.attempts,
        ));
    }
    let mode = match r.metadata.execution_mode {
        toolgraph_core::ExecutionMode::Parallel => "parallel",
        toolgraph_core::ExecutionMode::Sequential => "sequential",
    };
    let ok = r
        .results
        .iter()
        .filter(|c| c.status == CallStatus::Ok)
        .count();
    out.push_str(&format!(
        "\n{ok}/{} ok · {mode} · makespan {} · sequential {} · speedup {:.2}× · critical path {} · efficiency {:.0}%\n",
        r.results.len(),
        ms(r.total_time_ms),
        ms(r.sequential_time_estimate_ms),
        r.speedup,
        ms(r.critical_path_ms),
        r.efficiency * 100.0,
    ));
    if !r.errors.is_empty() {
        out.push_str("errors:\n");
        for e in &r.errors {
            out.push_str(&format!("  - {e}\n"));
        }
    }
    out
}
