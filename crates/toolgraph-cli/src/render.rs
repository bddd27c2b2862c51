//! Human-readable rendering of a result: a table of calls (comfy-table: columns stay
//! aligned whatever the width of the characters in an id) and a summary line.

use comfy_table::{CellAlignment, Table, presets::NOTHING};
use serde_json::Value;
use toolgraph_core::{CallResult, CallStatus, ParallelExecutionResult};
use unicode_width::UnicodeWidthChar;

/// How many columns of text an output gets in the table before it is cut with `…`.
pub const OUTPUT_WIDTH: usize = 48;

/// A duration, `-0.0` shown as `0.0`.
fn ms(x: f64) -> String {
    let x = if x == 0.0 { 0.0 } else { x };
    if x >= 10_000.0 {
        format!("{:.1} s", x / 1000.0)
    } else {
        format!("{x:.1} ms")
    }
}

/// `text` cut to at most `width` display columns, `…` marking a cut.
pub fn truncate(text: &str, width: usize) -> String {
    let columns = |c: char| c.width().unwrap_or(0);
    if text.chars().map(columns).sum::<usize>() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + columns(c) > width.saturating_sub(1) {
            break;
        }
        used += columns(c);
        out.push(c);
    }
    out.push('…');
    out
}

/// One call's output as one line: JSON (strings quoted and escaped), or its error.
fn output_text(c: &CallResult) -> String {
    if let Some(e) = &c.error {
        return e.message.replace(['\n', '\r'], " ");
    }
    match c.output.as_deref() {
        None | Some(Value::Null) => "-".into(),
        Some(v) => v.to_string(),
    }
}

/// The calls as a table: no borders, two spaces between columns, numbers right-aligned.
/// A `worker` column names the worker process that ran each call, when some call ran in
/// one; a `cached` column says `cached` for each call the cache answered (no tool ran),
/// when some call was. With `show_output`, a last column holds each output (or error), cut to
/// [`OUTPUT_WIDTH`] columns.
pub fn table(r: &ParallelExecutionResult, show_output: bool) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    let mut header = vec![
        "id", "tool", "status", "queued", "start", "run", "level", "attempts",
    ];
    let workers = r.results.iter().any(|c| c.worker.is_some());
    if workers {
        header.push("worker");
    }
    let cached = r.results.iter().any(|c| c.cached);
    if cached {
        header.push("cached");
    }
    if show_output {
        header.push("output");
    }
    table.set_header(header);
    for c in &r.results {
        let ran = c.started_ms.is_some();
        let mut row = vec![
            c.id.clone(),
            c.name.clone(),
            c.status.as_str().to_owned(),
            ms(c.queued_ms),
            c.started_ms.map_or_else(|| "-".into(), ms),
            if ran { ms(c.duration_ms) } else { "-".into() },
            c.level.to_string(),
            c.attempts.to_string(),
        ];
        if workers {
            row.push(c.worker.clone().unwrap_or_else(|| "-".into()));
        }
        if cached {
            row.push(if c.cached { "cached" } else { "-" }.into());
        }
        if show_output {
            row.push(truncate(&output_text(c), OUTPUT_WIDTH));
        }
        table.add_row(row);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        if (3..=7).contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        if i == 0 {
            column.set_padding((0, 1));
        }
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// The result as a table and a summary, ready to print. An empty batch is one line.
pub fn summary(r: &ParallelExecutionResult, show_output: bool) -> String {
    if r.results.is_empty() {
        return "0 calls: nothing to run\n".to_owned();
    }
    let mut out = table(r, show_output);
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
    let cached = r.results.iter().filter(|c| c.cached).count();
    if cached > 0 {
        out.push_str(&format!(
            "{cached} of {} calls answered from the cache (no tool ran)\n",
            r.results.len()
        ));
    }
    if !r.errors.is_empty() {
        out.push_str("errors:\n");
        for e in &r.errors {
            out.push_str(&format!("  - {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{table, truncate};
    use toolgraph_core::{CallResult, CallStatus, ExecutionMetadata, ParallelExecutionResult};

    fn ran(id: &str, worker: Option<&str>) -> CallResult {
        CallResult {
            id: id.into(),
            name: "t".into(),
            status: CallStatus::Ok,
            output: None,
            error: None,
            attempts: 1,
            queued_ms: 0.0,
            started_ms: Some(0.0),
            finished_ms: Some(1.0),
            duration_ms: 1.0,
            level: 0,
            worker: worker.map(str::to_owned),
            cached: false,
            edited_arguments: None,
        }
    }

    fn of(results: Vec<CallResult>) -> ParallelExecutionResult {
        ParallelExecutionResult::from_calls(results, 1.0, 1.0, false, ExecutionMetadata::default())
    }

    #[test]
    fn a_worker_column_appears_only_when_some_call_ran_in_a_worker() {
        let local = table(&of(vec![ran("a", None), ran("b", None)]), false);
        assert!(!local.contains("worker"), "{local}");
        let mixed = table(&of(vec![ran("a", Some("w-1")), ran("b", None)]), true);
        let lines: Vec<&str> = mixed.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "id", "tool", "status", "queued", "start", "run", "level", "attempts", "worker",
                "output"
            ]
        );
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(a.first(), Some(&"a"));
        assert_eq!(a.get(a.len() - 2), Some(&"w-1"), "{mixed}");
        let b: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(b.get(b.len() - 2), Some(&"-"), "{mixed}");
    }

    #[test]
    fn a_cached_column_and_a_line_appear_only_when_the_cache_answered_some_call() {
        let fresh = super::summary(&of(vec![ran("a", None)]), false);
        assert!(
            !fresh.contains("cached") && !fresh.contains("cache"),
            "{fresh}"
        );
        let mut hit = ran("b", None);
        hit.cached = true;
        hit.attempts = 0;
        let mixed = super::summary(&of(vec![ran("a", None), hit]), false);
        let lines: Vec<&str> = mixed.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().last(),
            Some("cached"),
            "{mixed}"
        );
        assert_eq!(lines[1].split_whitespace().last(), Some("-"), "{mixed}");
        assert_eq!(
            lines[2].split_whitespace().last(),
            Some("cached"),
            "{mixed}"
        );
        assert!(
            mixed.contains("1 of 2 calls answered from the cache (no tool ran)"),
            "{mixed}"
        );
    }

    #[test]
    fn truncation_counts_display_columns_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("eleven long", 10), "eleven lo…");
        // Each of these is two columns wide.
        assert_eq!(truncate("天気予報です", 7), "天気予…");
        assert_eq!(truncate("天気", 4), "天気");
    }
}
