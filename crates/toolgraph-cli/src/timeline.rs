//! The timeline picture: an SVG Gantt chart of one execution.
//!
//! One row per call (input order): queue wait drawn as a pale hatched bar, run time as a
//! solid bar coloured by status; dependency arrows from the end of each predecessor to the
//! start of its dependant; the critical path outlined and its arrows darkened; a time axis
//! with round ticks, grid lines and a last tick at the makespan; a title with the summary
//! figures and a legend. A bar is at least [`MIN_BAR_W`] wide, so a sub-millisecond call
//! is still seen; its duration is written on it when it fits, beside it when there is
//! room, and otherwise only in its tooltip (`<title>`), as every bar's figures are. A call
//! the cache answered (no tool ran) is drawn apart: a white bar outlined in dashes of its
//! status colour, labelled `cached`, and said so in its tooltip.
//!
//! [`output_path`] checks a `--timeline` path before anything runs: a known extension
//! (`.svg`, `.html`), a directory that exists and can be written.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use toolgraph_core::{CallStatus, ParallelExecutionResult};

const LABEL_W: f64 = 200.0;
const CHART_W: f64 = 760.0;
const ROW_H: f64 = 24.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 40.0;
/// The narrowest run bar, in px: a call of 0.1 ms in a 10 s chart is still seen.
pub const MIN_BAR_W: f64 = 3.0;
/// Roughly how wide a character of the 11 px bar labels is, in px.
const LABEL_CHAR_W: f64 = 6.5;
/// Space around a label inside a bar.
const LABEL_PAD: f64 = 4.0;

/// Checks a `--timeline` path before anything runs (a clap value parser): the extension
/// must be `.svg` or `.html` (the picture is SVG; no PNG is rendered), the directory must
/// exist and take a new file. The check writes nothing that stays: an existing file is
/// opened without truncating it; a new one is created and removed.
pub fn output_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("svg" | "html")) {
        return Err(
            "the timeline is drawn as SVG: name the file FILE.svg, or FILE.html for a page \
             around it"
                .to_owned(),
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!("directory {} does not exist", dir.display()));
    }
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    probe_writable(&path).map_err(|e| format!("{} cannot be written: {e}", path.display()))?;
    Ok(path)
}

fn probe_writable(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::OpenOptions::new().append(true).open(path)?;
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    std::fs::remove_file(path)
}

/// A time for an axis whose ticks are `step` ms apart: as many decimals as the step needs
/// (`0.5 ms`, `300 ms`, `4 s`), never more.
fn tick_label(t: f64, step: f64) -> String {
    let (value, step, unit) = if step >= 1000.0 {
        (t / 1000.0, step / 1000.0, "s")
    } else {
        (t, step, "ms")
    };
    format!("{value:.*} {unit}", decimals(step))
}

/// Decimals needed to write multiples of `step` exactly (steps are 1, 2 or 5 × 10ⁿ).
fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    }
}

/// A measured time for a label: one decimal (`152.2 ms`), seconds from 10 s.
fn measured(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn colour(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Ok => "#2f9e5b",
        CallStatus::Error => "#d64545",
        CallStatus::Timeout => "#e8912d",
        CallStatus::Skipped => "#9aa3ad",
        CallStatus::Cancelled => "#8a63c7",
        CallStatus::Interrupted => "#b5651d",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round tick step giving about `target` ticks over `span` ms.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-3);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Renders the timeline. `edges` are (from, to) positions (from the number of calls on,
/// joins: see [`through_joins`]); `critical` the positions on the critical path, in order.
pub fn svg(r: &ParallelExecutionResult, edges: &[(usize, usize)], critical: &[usize]) -> String {
    let n = r.results.len();
    let ends: Vec<Option<f64>> = r.results.iter().map(|c| c.finished_ms).collect();
    let edges = &through_joins(&ends, edges);
    let span = r
        .total_time_ms
        .max(
            r.results
                .iter()
                .filter_map(|c| c.finished_ms)
                .fold(0.0, f64::max),
        )
        .max(1.0);
    let x = |ms: f64| LABEL_W + ms / span * CHART_W;
    let y = |row: usize| TOP + row as f64 * ROW_H;
    let height = TOP + n as f64 * ROW_H + BOTTOM;
    let width = LABEL_W + CHART_W + 40.0;
    let on_path = |i: usize| critical.contains(&i);
    // A call that never ran is drawn where it was decided: when its last predecessor ended.
    let mut decided = vec![0.0f64; n];
    for &(from, to) in edges {
        if let (Some(end), Some(d)) = (
            r.results.get(from).and_then(|c| c.finished_ms),
            decided.get_mut(to),
        ) {
            *d = d.max(end);
        }
    }
    let mut critical_edges = Vec::new();
    for w in critical.windows(2) {
        critical_edges.push((w[0], w[1]));
    }

    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<defs>
<pattern id="queued" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#eef1f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c5ccd3" stroke-width="3"/></pattern>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8c96a0"/></marker>
<marker id="arrow-critical" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1d2733"/></marker>
</defs>
<rect width="100%" height="100%" fill="#ffffff"/>
"##
    );
    let ok = r.results.iter().filter(|c| c.is_ok()).count();
    let _ = writeln!(
        out,
        r#"<text class="title" x="16" y="22" font-size="15" font-weight="bold">{ok}/{n} ok · makespan {:.1} ms · critical path {:.1} ms · sequential {:.1} ms · speedup {:.2}×</text>"#,
        r.total_time_ms, r.critical_path_ms, r.sequential_time_estimate_ms, r.speedup
    );
    // Legend.
    let mut lx = 16.0;
    for (label, fill) in [
        ("queued", "url(#queued)"),
        ("ok", colour(CallStatus::Ok)),
        ("error", colour(CallStatus::Error)),
        ("timeout", colour(CallStatus::Timeout)),
        ("skipped", colour(CallStatus::Skipped)),
        ("cancelled", colour(CallStatus::Cancelled)),
    ] {
        let _ = writeln!(
            out,
            r##"<g class="legend"><rect x="{lx}" y="32" width="14" height="10" fill="{fill}" stroke="#c5ccd3"/><text x="{}" y="41">{label}</text></g>"##,
            lx + 18.0
        );
        lx += 30.0 + label.len() as f64 * 7.0;
    }
    let _ = writeln!(
        out,
        r##"<g class="legend"><rect x="{lx}" y="32" width="14" height="10" fill="#ffffff" stroke="#1d2733" stroke-width="2.5"/><text x="{}" y="41">critical path</text></g>"##,
        lx + 18.0
    );
    if r.results.iter().any(|c| c.cached) {
        lx += 30.0 + "critical path".len() as f64 * 7.0;
        let _ = writeln!(
            out,
            r##"<g class="legend"><rect x="{lx}" y="32" width="14" height="10" fill="#ffffff" stroke="{}" stroke-width="1.5" stroke-dasharray="3 2"/><text x="{}" y="41">cached</text></g>"##,
            colour(CallStatus::Ok),
            lx + 18.0
        );
    }

    // Axis and grid: round ticks (each k × step, no accumulated error), then one at the
    // makespan; a round tick too close to it to keep its label apart gives way.
    let step = tick_step(span, 8.0);
    let axis_y = TOP + n as f64 * ROW_H + 6.0;
    let _ = writeln!(
        out,
        r##"<line class="axis" x1="{:.2}" y1="{axis_y}" x2="{:.2}" y2="{axis_y}" stroke="#1d2733"/>"##,
        x(0.0),
        x(span)
    );
    let makespan = r.total_time_ms.max(0.0);
    let makespan_label = measured(makespan);
    let keep_apart = (makespan_label.len() as f64 + 4.0) * LABEL_CHAR_W;
    let mut ticks: Vec<(f64, String, &str)> = (0..)
        .map(|k| f64::from(k) * step)
        .take_while(|t| *t <= span + step * 1e-9)
        .filter(|t| (x(*t) - x(makespan)).abs() >= keep_apart)
        .map(|t| (t, tick_label(t, step), "tick"))
        .collect();
    ticks.push((makespan, makespan_label, "tick makespan"));
    for (t, label, class) in ticks {
        let tx = x(t);
        let _ = writeln!(
            out,
            r##"<g class="{class}"><line x1="{tx:.2}" y1="{}" x2="{tx:.2}" y2="{axis_y}" stroke="#edf0f3"/><line x1="{tx:.2}" y1="{axis_y}" x2="{tx:.2}" y2="{}" stroke="#1d2733"/><text x="{tx:.2}" y="{}" text-anchor="middle" fill="#4a5561">{label}</text></g>"##,
            TOP - 4.0,
            axis_y + 5.0,
            axis_y + 18.0
        );
    }

    // Rows.
    for (i, c) in r.results.iter().enumerate() {
        let top = y(i);
        let critical = on_path(i);
        let weight = if critical { "bold" } else { "normal" };
        let _ = writeln!(out, r#"<g class="row" data-id="{}">"#, escape(&c.id));
        if i % 2 == 1 {
            let _ = writeln!(
                out,
                r##"<rect x="0" y="{top}" width="{width}" height="{ROW_H}" fill="#f8f9fb"/>"##
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="12" y="{}" font-weight="{weight}">{}</text><text x="{}" y="{}" text-anchor="end" fill="#6b7682">{}</text>"##,
            top + 16.0,
            escape(&c.id),
            LABEL_W - 8.0,
            top + 16.0,
            escape(&c.name)
        );
        match (c.started_ms, c.finished_ms) {
            (Some(start), Some(end)) => {
                if c.queued_ms > 0.0 {
                    let q0 = x(start - c.queued_ms);
                    let _ = writeln!(
                        out,
                        r#"<rect class="bar queued" x="{q0:.2}" y="{}" width="{:.2}" height="{}" fill="url(#queued)"><title>{} queued {:.1} ms</title></rect>"#,
                        top + 6.0,
                        (x(start) - q0).max(0.5),
                        ROW_H - 12.0,
                        escape(&c.id),
                        c.queued_ms
                    );
                }
                let stroke = if critical {
                    r##" stroke="#1d2733" stroke-width="2.5""##
                } else {
                    ""
                };
                let class = match (critical, c.cached) {
                    (true, true) => "bar run critical cached",
                    (true, false) => "bar run critical",
                    (false, true) => "bar run cached",
                    (false, false) => "bar run",
                };
                // A cached call: white inside, dashed outline of its status colour.
                let dashed;
                let (fill, stroke) = if c.cached {
                    dashed = format!(
                        r#" stroke="{}" stroke-width="1.5" stroke-dasharray="3 2""#,
                        colour(c.status)
                    );
                    ("#ffffff", dashed.as_str())
                } else {
                    (colour(c.status), stroke)
                };
                let (bar_x, bar_w) = (x(start), (x(end) - x(start)).max(MIN_BAR_W));
                let worker = c
                    .worker
                    .as_deref()
                    .map(|w| format!(", worker {}", escape(w)))
                    .unwrap_or_default()
                    + if c.cached { ", from the cache" } else { "" };
                let _ = writeln!(
                    out,
                    r#"<rect class="{class}" x="{bar_x:.2}" y="{}" width="{bar_w:.2}" height="{}" rx="3" fill="{}"{stroke}><title>{} ({}) {}: {:.1}–{:.1} ms, {:.1} ms{worker}</title></rect>"#,
                    top + 4.0,
                    ROW_H - 8.0,
                    fill,
                    escape(&c.id),
                    escape(&c.name),
                    c.status.as_str(),
                    start,
                    end,
                    c.duration_ms
                );
                let label = if c.cached {
                    "cached".to_owned()
                } else {
                    measured(c.duration_ms)
                };
                let label_w = label.len() as f64 * LABEL_CHAR_W;
                let base = top + 16.0;
                if bar_w >= label_w + 2.0 * LABEL_PAD && !c.cached {
                    let _ = writeln!(
                        out,
                        r##"<text class="bar-label" x="{:.2}" y="{base}" font-size="11" text-anchor="middle" fill="#ffffff">{label}</text>"##,
                        bar_x + bar_w / 2.0
                    );
                } else if bar_x + bar_w + LABEL_PAD + label_w <= width - 4.0 {
                    let _ = writeln!(
                        out,
                        r##"<text class="bar-label beside" x="{:.2}" y="{base}" font-size="11" fill="#4a5561">{label}</text>"##,
                        bar_x + bar_w + LABEL_PAD
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    out,
                    r##"<text class="not-run" x="{}" y="{}" fill="{}" font-style="italic">{}</text>"##,
                    x(decided[i]) + 4.0,
                    top + 16.0,
                    colour(c.status),
                    c.status.as_str()
                );
            }
        }
        let _ = writeln!(out, "</g>");
    }

    // Dependency arrows: end of the predecessor's bar to the start of the dependant's.
    for &(from, to) in edges {
        let (Some(a), Some(b)) = (r.results.get(from), r.results.get(to)) else {
            continue;
        };
        let Some(x1) = a.finished_ms.map(x) else {
            continue;
        };
        let x2 = x(b.started_ms.unwrap_or(decided[to]));
        let (y1, y2) = (y(from) + ROW_H / 2.0, y(to) + ROW_H / 2.0);
        let critical = critical_edges.contains(&(from, to));
        let (class, stroke, marker, w) = if critical {
            ("edge critical", "#1d2733", "arrow-critical", 1.8)
        } else {
            ("edge", "#8c96a0", "arrow", 1.0)
        };
        let bend = ((x2 - x1).abs() / 2.0).max(12.0);
        let _ = writeln!(
            out,
            r#"<path class="{class}" d="M{x1:.2},{y1} C{:.2},{y1} {:.2},{y2} {x2:.2},{y2}" fill="none" stroke="{stroke}" stroke-width="{w}" marker-end="url(#{marker})"/>"#,
            x1 + bend,
            x2 - bend
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The timeline inside a minimal HTML page (hover a bar for its figures).
pub fn html_page(svg: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>toolgraph timeline</title>\n<style>body{{margin:24px;font-family:Helvetica,Arial,sans-serif;background:#fff}} svg{{max-width:100%;height:auto}}</style></head>\n<body>\n{svg}</body></html>\n"
    )
}

/// The edges between calls to draw, for edges that may pass through joins (positions from
/// the number of calls on). A join releases its dependants when the last call of its group
/// ends, so each dependant gets one arrow, from that call: linear, where an arrow per pair
/// would be quadratic. A join whose group never finished draws no arrow.
/// `ends` holds each call's end.
fn through_joins(ends: &[Option<f64>], edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let n = ends.len();
    let finished = |i: usize| ends.get(i).copied().flatten();
    // For each join: the call of its group that ended last.
    let mut last: std::collections::HashMap<usize, (usize, f64)> = Default::default();
    for &(from, to) in edges {
        if to >= n
            && from < n
            && let Some(end) = finished(from)
        {
            let slot = last.entry(to).or_insert((from, end));
            if end > slot.1 {
                *slot = (from, end);
            }
        }
    }
    edges
        .iter()
        .filter_map(|&(from, to)| match (from < n, to < n) {
            (true, true) => Some((from, to)),
            (false, true) => last.get(&from).map(|&(call, _)| (call, to)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgraph_core::{CallResult, ExecutionMetadata};

    fn call(id: &str, start: f64, end: f64) -> CallResult {
        CallResult {
            id: id.into(),
            name: "sleep".into(),
            status: CallStatus::Ok,
            output: None,
            error: None,
            attempts: 1,
            queued_ms: 0.0,
            started_ms: Some(start),
            finished_ms: Some(end),
            duration_ms: end - start,
            level: 0,
            worker: None,
            cached: false,
            edited_arguments: None,
        }
    }

    fn result(calls: Vec<CallResult>, makespan: f64) -> ParallelExecutionResult {
        ParallelExecutionResult {
            success: true,
            results: calls,
            total_time_ms: makespan,
            parallel_time_ms: makespan,
            sequential_time_estimate_ms: makespan,
            speedup: 1.0,
            critical_path_ms: makespan,
            efficiency: 1.0,
            batches: Vec::new(),
            errors: Vec::new(),
            metadata: ExecutionMetadata::default(),
        }
    }

    /// The text of the `<text>` inside each `<g class="{class}">` group.
    fn labels(svg: &str, class: &str) -> Vec<String> {
        let open = format!(r#"<g class="{class}">"#);
        svg.split(&open)
            .skip(1)
            .filter_map(|g| {
                let text = &g[g.find("<text")?..];
                let body = &text[text.find('>')? + 1..];
                Some(body[..body.find("</text>")?].to_owned())
            })
            .collect()
    }

    /// `attr="…"` of every element whose opening tag starts with `tag`.
    fn attrs(svg: &str, tag: &str, attr: &str) -> Vec<f64> {
        let key = format!(r#" {attr}=""#);
        svg.split(tag)
            .skip(1)
            .filter_map(|rest| {
                let head = &rest[..rest.find('>')?];
                let v = &head[head.find(&key)? + key.len()..];
                v[..v.find('"')?].parse().ok()
            })
            .collect()
    }

    #[test]
    fn ticks_are_round_labels_short_and_the_last_is_the_makespan() {
        let r = result(
            vec![call("long", 0.0, 300.0105274239394)],
            300.0105274239394,
        );
        let svg = svg(&r, &[], &[]);
        let ticks = labels(&svg, "tick");
        assert_eq!(ticks.first().map(String::as_str), Some("0 ms"), "{ticks:?}");
        for t in &ticks {
            let number = t.trim_end_matches(" ms");
            assert!(
                number.parse::<u32>().is_ok_and(|n| n % 50 == 0),
                "a round tick: {t}"
            );
        }
        assert_eq!(labels(&svg, "tick makespan"), ["300.0 ms"]);
        assert!(!svg.contains("300.0105"), "no raw float is written");
        assert!(
            !ticks.contains(&"300 ms".to_owned()),
            "the round tick under the makespan gives way: {ticks:?}"
        );
    }

    #[test]
    fn tick_labels_have_the_decimals_their_step_needs() {
        assert_eq!(tick_label(1.5, 0.5), "1.5 ms");
        assert_eq!(tick_label(0.3, 0.1), "0.3 ms");
        assert_eq!(tick_label(0.04, 0.02), "0.04 ms");
        assert_eq!(tick_label(300.0, 50.0), "300 ms");
        assert_eq!(tick_label(1500.0, 500.0), "1500 ms");
        assert_eq!(tick_label(4000.0, 2000.0), "4 s");
    }

    #[test]
    fn short_calls_stay_visible_and_labels_sit_where_they_fit() {
        let r = result(
            vec![
                call("long", 0.0, 1000.0),
                call("quick", 10.0, 10.05),
                call("late-quick", 999.0, 999.5),
            ],
            1000.0,
        );
        let svg = svg(&r, &[], &[]);
        let widths = attrs(&svg, r#"<rect class="bar run"#, "width");
        assert_eq!(widths.len(), 3);
        assert!(widths.iter().all(|w| *w >= MIN_BAR_W), "{widths:?}");
        let inside = svg.matches(r#"<text class="bar-label" "#).count();
        let beside = svg.matches(r#"<text class="bar-label beside""#).count();
        assert_eq!(
            (inside, beside),
            (1, 1),
            "long's label inside its bar, quick's beside it, late-quick's only in its tooltip"
        );
        assert!(svg.contains("<title>late-quick (sleep) ok: 999.0–999.5 ms, 0.5 ms</title>"));
    }

    #[test]
    fn a_bar_names_the_worker_that_ran_its_call_only_when_one_did() {
        let mut remote = call("remote", 0.0, 10.0);
        remote.worker = Some("w-1 <east>".into());
        let r = result(vec![remote, call("local", 0.0, 5.0)], 10.0);
        let svg = svg(&r, &[], &[]);
        assert!(
            svg.contains(
                "<title>remote (sleep) ok: 0.0–10.0 ms, 10.0 ms, worker w-1 &lt;east&gt;</title>"
            ),
            "{svg}"
        );
        assert!(svg.contains("<title>local (sleep) ok: 0.0–5.0 ms, 5.0 ms</title>"));
    }

    #[test]
    fn a_cached_call_is_drawn_apart_and_said_so() {
        let mut hit = call("hit", 10.0, 10.0);
        hit.cached = true;
        let r = result(vec![call("ran", 0.0, 10.0), hit], 10.0);
        let svg = svg(&r, &[], &[]);
        assert!(svg.contains(r#"class="bar run cached""#), "{svg}");
        assert!(svg.contains(r#"stroke-dasharray="3 2""#), "{svg}");
        assert!(
            svg.contains("<title>hit (sleep) ok: 10.0–10.0 ms, 0.0 ms, from the cache</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(">cached</text>"),
            "labelled and in the legend: {svg}"
        );
        let plain = super::svg(&result(vec![call("ran", 0.0, 10.0)], 10.0), &[], &[]);
        assert!(!plain.contains("cached"), "{plain}");
    }

    #[test]
    fn timeline_paths_are_checked_before_anything_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let png = dir.path().join("t.png");
        let err = output_path(&png.to_string_lossy()).expect_err("png");
        assert!(err.contains("SVG"), "{err}");
        let missing = dir.path().join("nope/t.svg");
        let err = output_path(&missing.to_string_lossy()).expect_err("missing dir");
        assert!(err.contains("does not exist"), "{err}");
        let fine = dir.path().join("t.SVG");
        assert_eq!(output_path(&fine.to_string_lossy()), Ok(fine.clone()));
        assert!(!fine.exists(), "the check leaves nothing behind");
        std::fs::write(&fine, "kept").expect("write");
        assert!(output_path(&fine.to_string_lossy()).is_ok());
        assert_eq!(std::fs::read_to_string(&fine).ok().as_deref(), Some("kept"));
    }

    #[test]
    fn a_join_draws_one_arrow_per_dependant_from_the_last_call_of_its_group() {
        // Calls 0..3 (ending at 10, 40, 20 ms), then 3 and 4 after join 5.
        let ends = [Some(10.0), Some(40.0), Some(20.0), Some(50.0), None];
        let edges = [(0, 5), (1, 5), (2, 5), (5, 3), (5, 4), (0, 1)];
        assert_eq!(through_joins(&ends, &edges), [(1, 3), (1, 4), (0, 1)]);
        // A group that never finished draws no arrow.
        assert_eq!(through_joins(&[None; 5], &edges), [(0, 1)]);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(120.0, 8.0), 20.0);
        assert_eq!(tick_step(1000.0, 8.0), 200.0);
        assert_eq!(tick_step(7.0, 8.0), 1.0);
    }
}
