// The live Gantt timeline of one execution, drawn by the rules of the CLI's `--timeline`
// SVG (crates/toolgraph-cli/src/timeline.rs): one row per call in input order, the queue
// wait as a pale hatched bar before the run bar, run bars coloured by status, dependency
// arrows from the end of each predecessor to the start of its dependant, the critical path
// outlined with its arrows darkened, a time axis with round ticks and a last tick at the
// makespan. Live additions: a call that is running is a blue bar growing with the clock,
// and the last tick is "now" until the summary arrives.

import { s, h, px } from "./svg.js";
import { measured, times, tickStep, tickLabel, preview, errorText } from "./format.js";

const LABEL_W = 200;
const CHART_W = 760;
const ROW_H = 24;
const TOP = 64;
const BOTTOM = 40;
const MIN_BAR_W = 3;
const LABEL_CHAR_W = 6.5;
const LABEL_PAD = 4;
const WIDTH = LABEL_W + CHART_W + 40;

export const COLOURS = {
  ok: "#2f9e5b",
  error: "#d64545",
  timeout: "#e8912d",
  skipped: "#9aa3ad",
  cancelled: "#8a63c7",
  interrupted: "#b5651d",
  running: "#3b7dd8",
};

/** One execution's calls and what is known of them so far. */
export class Gantt {
  constructor(container) {
    this.container = container;
    this.calls = []; // {position, id, name, arguments, queuedAt?, startedAt?, finished?}
    this.edges = []; // [from, to] positions, joins included (≥ calls.length)
    this.critical = [];
    this.summary = null;
    this.tooltip = h("div", { class: "tooltip", hidden: true });
    document.body.append(this.tooltip);
    this.svg = null;
    // Live `at_ms` times may run on another clock than the results' `started_ms` (a few ms
    // apart): each finished call that was seen starting tells the difference, which the
    // calls still open and the clock are then drawn with.
    this.skew = 0;
  }

  /** The plan: calls (`{position?, id, name, arguments}`) and edges (`{from, to}` or `[from, to]`). */
  setPlan(calls, edges) {
    this.calls = calls.map((c, i) => ({ position: c.position ?? i, id: c.id, name: c.name, arguments: c.arguments }));
    this.edges = (edges || []).map((e) => (Array.isArray(e) ? [e[0], e[1]] : [e.from, e.to]));
  }

  queued(position, atMs) {
    const call = this.calls[position];
    if (call && call.queuedAt === undefined) call.queuedAt = atMs;
  }

  started(position, atMs) {
    const call = this.calls[position];
    if (call) call.startedAt = atMs;
  }

  /** A `finished` event, or a `CallResult` (same fields but `position`). */
  finished(position, data) {
    const call = this.calls[position];
    if (!call) return;
    call.finished = data;
    if (data.started_ms !== null && data.started_ms !== undefined) {
      if (call.startedAt !== undefined) this.skew = call.startedAt - data.started_ms;
      call.startedAt = data.started_ms;
    }
  }

  setSummary(summary) {
    this.summary = summary;
    this.critical = summary.critical || [];
  }

  /** True once every call has ended (or the summary came). */
  get done() {
    return this.summary !== null;
  }

  /** Redraws for the clock at `nowMs` (ms since the execution began). */
  render(nowMs) {
    const svg = draw(this, this.done ? nowMs : nowMs - this.skew);
    svg.addEventListener("mousemove", (e) => this.hover(e));
    svg.addEventListener("mouseleave", () => (this.tooltip.hidden = true));
    if (this.svg) this.svg.replaceWith(svg);
    else this.container.append(svg);
    this.svg = svg;
  }

  hover(event) {
    const row = event.target.closest?.("g.row");
    const call = row ? this.calls[Number(row.dataset.position)] : null;
    if (!call) {
      this.tooltip.hidden = true;
      return;
    }
    this.tooltip.replaceChildren(...describeCall(call));
    this.tooltip.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - 480);
    const y = event.clientY + 14 + 260 > window.innerHeight ? Math.max(8, event.clientY - 270) : event.clientY + 14;
    this.tooltip.style.left = `${Math.max(8, x)}px`;
    this.tooltip.style.top = `${y}px`;
  }

  destroy() {
    this.tooltip.remove();
  }
}

/** The tooltip's content for one call (the worker that ran it, when another process did). */
export function describeCall(call) {
  const f = call.finished;
  const status = f ? f.status : call.startedAt !== undefined ? "running" : call.queuedAt !== undefined ? "queued" : "waiting";
  const parts = [h("h3", {}, `${call.id} `, h("span", { class: "muted" }, `(${call.name})`), " ", h("span", { class: `status ${status}` }, status))];
  if (f && f.started_ms !== null && f.started_ms !== undefined) {
    parts.push(h("div", {}, `${measured(f.started_ms)} → ${measured(f.finished_ms)}: ran ${measured(f.duration_ms)}, queued ${measured(f.queued_ms)}, ${f.attempts} attempt${f.attempts === 1 ? "" : "s"}`));
  } else if (call.startedAt !== undefined) {
    parts.push(h("div", {}, `started at ${measured(call.startedAt)}`));
  }
  if (f && f.worker) parts.push(h("div", {}, "ran by worker ", h("span", { class: "mono" }, f.worker)));
  if (f && f.cached) parts.push(h("div", {}, "answered from the cache (no tool ran)"));
  parts.push(h("div", { class: "label" }, "arguments"), h("pre", {}, preview(call.arguments ?? {})));
  if (f && f.output !== undefined && f.output !== null) parts.push(h("div", { class: "label" }, "output"), h("pre", {}, preview(f.output)));
  if (f && f.error) parts.push(h("div", { class: "label" }, "error"), h("pre", {}, errorText(f.error)));
  return parts;
}

/** Edges between calls to draw, through joins (positions ≥ n): each dependant of a join
 * gets one arrow, from the call of its group that ended last (`through_joins`). */
export function throughJoins(ends, edges) {
  const n = ends.length;
  const last = new Map();
  for (const [from, to] of edges) {
    if (to >= n && from < n && ends[from] !== undefined) {
      const slot = last.get(to);
      if (!slot || ends[from] > slot[1]) last.set(to, [from, ends[from]]);
    }
  }
  const out = [];
  for (const [from, to] of edges) {
    if (from < n && to < n) out.push([from, to]);
    else if (from >= n && to < n && last.has(from)) out.push([last.get(from)[0], to]);
  }
  return out;
}

function draw(g, nowMs) {
  const n = g.calls.length;
  const running = !g.done;
  const ends = g.calls.map((c) => c.finished?.finished_ms ?? undefined);
  const edges = throughJoins(ends, g.edges);
  const lastEnd = ends.reduce((m, e) => (e !== undefined && e > m ? e : m), 0);
  const makespan = g.summary ? g.summary.total_time_ms : Math.max(nowMs, lastEnd);
  const span = Math.max(makespan, lastEnd, 1);
  const x = (ms) => LABEL_W + (ms / span) * CHART_W;
  const y = (row) => TOP + row * ROW_H;
  const height = TOP + n * ROW_H + BOTTOM;
  const onPath = new Set(g.critical);
  const criticalEdges = new Set();
  for (let i = 0; i + 1 < g.critical.length; i++) criticalEdges.add(`${g.critical[i]}>${g.critical[i + 1]}`);
  // A call that never ran is drawn where it was decided: when its last predecessor ended.
  const decided = new Array(n).fill(0);
  for (const [from, to] of edges) {
    if (ends[from] !== undefined && to < n) decided[to] = Math.max(decided[to], ends[from]);
  }

  const svg = s("svg", {
    class: "gantt",
    xmlns: "http://www.w3.org/2000/svg",
    viewBox: `0 0 ${WIDTH} ${height}`,
    width: WIDTH,
    height,
    "font-family": "Helvetica, Arial, sans-serif",
    "font-size": 12,
    "data-state": running ? "running" : "ended",
  });
  svg.append(
    s("defs", {},
      s("pattern", { id: "queued", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        s("rect", { width: 6, height: 6, fill: "#eef1f4" }),
        s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#c5ccd3", "stroke-width": 3 })),
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c96a0" })),
      s("marker", { id: "arrow-critical", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#1d2733" }))),
    s("rect", { width: "100%", height: "100%", fill: "#ffffff" }),
  );

  // Title: the CLI's summary line once ended; progress while running.
  const done = g.calls.filter((c) => c.finished).length;
  const ok = g.calls.filter((c) => c.finished?.status === "ok").length;
  const title = g.summary
    ? `${ok}/${n} ok · makespan ${measured(g.summary.total_time_ms)} · critical path ${measured(g.summary.critical_path_ms)} · sequential ${measured(g.summary.sequential_time_estimate_ms)} · speedup ${times(g.summary.speedup)}`
    : `running · ${done}/${n} done · ${measured(nowMs)}`;
  svg.append(s("text", { class: "title", x: 16, y: 22, "font-size": 15, "font-weight": "bold", text: title }));

  // Legend.
  let lx = 16;
  const legend = [["queued", "url(#queued)"], ["running", COLOURS.running], ["ok", COLOURS.ok], ["error", COLOURS.error], ["timeout", COLOURS.timeout], ["skipped", COLOURS.skipped], ["cancelled", COLOURS.cancelled]];
  for (const [label, fillColour] of legend) {
    svg.append(s("g", { class: "legend" },
      s("rect", { x: lx, y: 32, width: 14, height: 10, fill: fillColour, stroke: "#c5ccd3" }),
      s("text", { x: lx + 18, y: 41, text: label })));
    lx += 30 + label.length * 7;
  }
  svg.append(s("g", { class: "legend" },
    s("rect", { x: lx, y: 32, width: 14, height: 10, fill: "#ffffff", stroke: "#1d2733", "stroke-width": 2.5 }),
    s("text", { x: lx + 18, y: 41, text: "critical path" })));

  // Axis and grid: round ticks, then one at the makespan (or now); a round tick too close
  // to it to keep its label apart gives way.
  const step = tickStep(span, 8);
  const axisY = TOP + n * ROW_H + 6;
  svg.append(s("line", { class: "axis", x1: px(x(0)), y1: axisY, x2: px(x(span)), y2: axisY, stroke: "#1d2733" }));
  const endLabel = measured(Math.max(makespan, 0));
  const keepApart = (endLabel.length + 4) * LABEL_CHAR_W;
  const ticks = [];
  for (let k = 0; k * step <= span + step * 1e-9; k++) {
    const t = k * step;
    if (Math.abs(x(t) - x(makespan)) >= keepApart) ticks.push([t, tickLabel(t, step), "tick"]);
  }
  ticks.push([Math.max(makespan, 0), endLabel, running ? "tick now" : "tick makespan"]);
  for (const [t, label, cls] of ticks) {
    const tx = px(x(t));
    svg.append(s("g", { class: cls },
      s("line", { x1: tx, y1: TOP - 4, x2: tx, y2: axisY, stroke: "#edf0f3" }),
      s("line", { x1: tx, y1: axisY, x2: tx, y2: axisY + 5, stroke: "#1d2733" }),
      s("text", { x: tx, y: axisY + 18, "text-anchor": "middle", fill: "#4a5561", text: label })));
  }

  // Rows.
  for (let i = 0; i < n; i++) {
    const c = g.calls[i];
    const top = y(i);
    const critical = onPath.has(i);
    const row = s("g", { class: "row", "data-id": c.id, "data-position": i });
    // Odd rows shaded as in the CLI; even rows transparent (the grid shows through) but hoverable.
    row.append(s("rect", { class: "row-bg", x: 0, y: top, width: WIDTH, height: ROW_H, fill: i % 2 === 1 ? "#f8f9fb" : "#ffffff", "fill-opacity": i % 2 === 1 ? 1 : 0 }));
    row.append(
      s("text", { class: "call-id", x: 12, y: top + 16, "font-weight": critical ? "bold" : "normal", text: c.id }),
      s("text", { class: "call-tool", x: LABEL_W - 8, y: top + 16, "text-anchor": "end", fill: "#6b7682", text: c.name }),
    );
    const f = c.finished;
    const live = (t) => (t === undefined ? undefined : t - g.skew);
    const start = f ? f.started_ms : live(c.startedAt);
    const hasStart = start !== null && start !== undefined;
    // Queue wait: from ready to start (or to now while it waits).
    const queuedFrom = f && hasStart ? start - (f.queued_ms || 0) : live(c.queuedAt);
    const queuedTo = hasStart ? start : running && c.queuedAt !== undefined ? nowMs : undefined;
    if (queuedFrom !== undefined && queuedTo !== undefined && queuedTo - queuedFrom > 0) {
      const q0 = x(queuedFrom);
      row.append(s("rect", { class: "bar queued", x: px(q0), y: top + 6, width: px(Math.max(x(queuedTo) - q0, 0.5)), height: ROW_H - 12, fill: "url(#queued)" }));
    }
    if (hasStart) {
      const ongoing = !f;
      const end = ongoing ? Math.max(nowMs, start) : f.finished_ms ?? start;
      const status = ongoing ? "running" : f.status;
      const barX = x(start);
      const barW = Math.max(x(end) - barX, MIN_BAR_W);
      // A call the cache answered (no tool ran): white inside, dashed outline of its status
      // colour, labelled "cached" — as the CLI's timeline draws it.
      const cached = !ongoing && f.cached === true;
      const cls = `bar run ${status}${critical ? " critical" : ""}${cached ? " cached" : ""}`;
      const colour = COLOURS[status] || COLOURS.skipped;
      row.append(s("rect", {
        class: cls, x: px(barX), y: top + 4, width: px(barW), height: ROW_H - 8, rx: 3,
        fill: cached ? "#ffffff" : colour,
        stroke: cached ? colour : critical ? "#1d2733" : undefined,
        "stroke-width": cached ? 1.5 : critical ? 2.5 : undefined,
        "stroke-dasharray": cached ? "3 2" : undefined,
      }));
      const label = cached ? "cached" : measured(ongoing ? end - start : f.duration_ms);
      const labelW = label.length * LABEL_CHAR_W;
      if (barW >= labelW + 2 * LABEL_PAD && !cached) {
        row.append(s("text", { class: "bar-label", x: px(barX + barW / 2), y: top + 16, "font-size": 11, "text-anchor": "middle", fill: "#ffffff", text: label }));
      } else if (barX + barW + LABEL_PAD + labelW <= WIDTH - 4) {
        row.append(s("text", { class: "bar-label beside", x: px(barX + barW + LABEL_PAD), y: top + 16, "font-size": 11, fill: "#4a5561", text: label }));
      }
    } else if (f) {
      row.append(s("text", { class: "not-run", x: px(x(decided[i]) + 4), y: top + 16, fill: COLOURS[f.status] || COLOURS.skipped, "font-style": "italic", text: f.status }));
    }
    svg.append(row);
  }

  // Dependency arrows: end of the predecessor's bar to the start of the dependant's.
  for (const [from, to] of edges) {
    const a = g.calls[from];
    const b = g.calls[to];
    if (!a || !b || ends[from] === undefined) continue;
    const x1 = x(ends[from]);
    // A dependant not yet ready gets its arrow when it is (queued, started or decided).
    const open = (t) => (t === undefined ? undefined : t - g.skew);
    const bStart = b.finished ? b.finished.started_ms ?? decided[to] : open(b.startedAt) ?? open(b.queuedAt);
    if (bStart === undefined) continue;
    const x2 = x(bStart);
    const y1 = y(from) + ROW_H / 2;
    const y2 = y(to) + ROW_H / 2;
    const critical = criticalEdges.has(`${from}>${to}`);
    const bend = Math.max(Math.abs(x2 - x1) / 2, 12);
    svg.append(s("path", {
      class: critical ? "edge critical" : "edge",
      "data-from": from, "data-to": to,
      d: `M${px(x1)},${y1} C${px(x1 + bend)},${y1} ${px(x2 - bend)},${y2} ${px(x2)},${y2}`,
      fill: "none", stroke: critical ? "#1d2733" : "#8c96a0", "stroke-width": critical ? 1.8 : 1,
      "marker-end": `url(#${critical ? "arrow-critical" : "arrow"})`,
    }));
  }
  return svg;
}
