// The stats page: speedup and efficiency over time (line charts over the finished executions),
// per-tool latency percentiles and error rates (bar charts over `GET /v1/stats`), each with
// its numbers in a table.

import { api, withQuery } from "./api.js";
import { h, s, px } from "./svg.js";
import { measured, times, percent, tickStep } from "./format.js";

const SINCE = ["1h", "24h", "7d", "30d", ""];
const HISTORY = 200;
const PERCENTILES = [["p50_ms", "p50", "#7fb8e6"], ["p95_ms", "p95", "#3b7dd8"], ["p99_ms", "p99", "#1d4f91"]];

export function mount(main) {
  const query = new URLSearchParams(window.location.search);
  const filters = { since: query.has("since") ? query.get("since") : "7d", tool: query.get("tool") || "" };
  const since = h("select", { id: "filter-since" }, SINCE.map((v) => h("option", { value: v, selected: v === filters.since }, v || "all time")));
  const tool = h("input", { type: "text", id: "filter-tool", placeholder: "any tool", value: filters.tool });
  const form = h("form", { class: "filters" }, h("label", {}, "since ", since), h("label", {}, "tool ", tool), h("button", { type: "submit", class: "secondary" }, "Show"));
  const error = h("p", { class: "problem" });
  const overview = h("dl", { class: "figures", id: "overview" });
  const trend = h("div", { id: "trend" });
  const tools = h("div", { id: "tools" });
  main.append(h("h1", {}, "Stats"), form, error, overview, trend, tools);

  let stopped = false;
  const load = async () => {
    error.textContent = "";
    try {
      const [stats, list] = await Promise.all([
        api(withQuery("/v1/stats", filters)),
        api(withQuery("/v1/executions", { limit: HISTORY, status: "finished", tool: filters.tool })),
      ]);
      if (stopped) return;
      showOverview(overview, stats);
      const from = Date.now() - sinceMs(filters.since);
      showTrend(trend, (list.executions || []).filter((e) => e.speedup !== null && e.speedup !== undefined && e.created_at >= from).reverse());
      showTools(tools, stats.tools || {});
    } catch (e) {
      if (!stopped) error.textContent = e.message;
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    filters.since = since.value;
    filters.tool = tool.value.trim();
    history.replaceState(null, "", withQuery("/stats", filters));
    load();
  });
  since.addEventListener("change", () => form.requestSubmit());
  load();
  return () => {
    stopped = true;
  };
}

/** `1h`, `24h`, `7d`, `30d` in ms; anything else (all time) is forever. */
function sinceMs(since) {
  const m = /^(\d+)([hd])$/.exec(since || "");
  if (!m) return Number.POSITIVE_INFINITY;
  return Number(m[1]) * (m[2] === "h" ? 3600000 : 86400000);
}

function showOverview(dl, stats) {
  const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  dl.replaceChildren(
    item("executions", String(stats.total_executions ?? 0)),
    item("calls", String(stats.total_calls ?? 0)),
    item("mean speedup", times(stats.avg_speedup)),
    item("mean efficiency", percent(stats.avg_efficiency)),
    item("mean makespan", measured(stats.avg_execution_time_ms)),
    item("mean success rate", percent(stats.avg_success_rate)),
  );
}

function showTrend(container, executions) {
  container.replaceChildren(h("h2", {}, "Speedup and efficiency over time"));
  if (!executions.length) {
    container.append(h("p", { class: "muted" }, "No finished execution yet."));
    return;
  }
  container.append(
    lineChart("speedup-chart", "speedup", executions.map((e) => [e.created_at, e.speedup]), times, 1),
    lineChart("efficiency-chart", "efficiency", executions.map((e) => [e.created_at, Math.min(e.efficiency ?? 0, 1)]), (v) => percent(v), 1, 1),
  );
}

/** A line chart of `points` ([epoch ms, value]), its y axis from 0 to round ticks (or to `cap`),
 * a dashed guide at `guide`. */
function lineChart(id, label, points, fmt, guide, cap) {
  const W = 1000, H = 220, L = 60, R = 20, T = 24, B = 34;
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const top = cap ?? Math.max(guide, ...points.map((p) => p[1])) * 1.1;
  const yStep = tickStep(top, 5);
  const yTicks = Math.max(1, Math.ceil(top / yStep - 1e-9));
  const yMax = yStep * yTicks;
  const x = (t) => (x1 === x0 ? L + (W - L - R) / 2 : L + ((t - x0) / (x1 - x0)) * (W - L - R));
  const y = (v) => T + (1 - v / yMax) * (H - T - B);
  const svg = s("svg", { id, class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, "font-family": "Helvetica, Arial, sans-serif", "font-size": 12 });
  svg.append(s("text", { x: L, y: 16, "font-weight": "bold", text: `${label} (${points.length} executions, oldest left)` }));
  for (let k = 0; k <= yTicks; k++) {
    const v = yStep * k;
    svg.append(
      s("line", { x1: L, x2: W - R, y1: px(y(v)), y2: px(y(v)), stroke: k === 0 ? "#1d2733" : "#edf0f3" }),
      s("text", { x: L - 6, y: px(y(v)) + 4, "text-anchor": "end", fill: "#4a5561", text: fmt(v) }),
    );
  }
  svg.append(s("line", { x1: L, x2: W - R, y1: px(y(guide)), y2: px(y(guide)), stroke: "#9aa3ad", "stroke-dasharray": "4 4" }));
  const short = x1 - x0 < 3600000;
  const when = (t) => new Date(t).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: short ? "2-digit" : undefined });
  svg.append(
    s("text", { x: L, y: H - 10, fill: "#4a5561", text: when(x0) }),
    s("text", { x: W - R, y: H - 10, "text-anchor": "end", fill: "#4a5561", text: when(x1) }),
  );
  svg.append(s("polyline", { class: "series", points: points.map((p) => `${px(x(p[0]))},${px(y(p[1]))}`).join(" "), fill: "none", stroke: "#3b7dd8", "stroke-width": 2 }));
  for (const [t, v] of points) {
    svg.append(s("circle", { class: "point", cx: px(x(t)), cy: px(y(v)), r: 3, fill: "#3b7dd8" }, s("title", { text: `${when(t)}: ${fmt(v)}` })));
  }
  return svg;
}

function showTools(container, tools) {
  const names = Object.keys(tools);
  container.replaceChildren(h("h2", {}, "Per tool"));
  if (!names.length) {
    container.append(h("p", { class: "muted" }, "No calls recorded in this period."));
    return;
  }
  container.append(latencyChart(names, tools), errorChart(names, tools));
  container.append(h("table", { class: "data", id: "tools-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "tool"), ...["calls", "errors", "error rate", "mean", "p50", "p95", "p99"].map((c) => h("th", { class: "num" }, c)))),
    h("tbody", {}, names.map((name) => {
      const t = tools[name];
      return h("tr", { "data-tool": name },
        h("td", {}, name),
        h("td", { class: "num" }, String(t.count)),
        h("td", { class: "num" }, String(t.errors)),
        h("td", { class: "num" }, percent(t.error_rate, 1)),
        h("td", { class: "num" }, measured(t.mean_ms)),
        h("td", { class: "num" }, measured(t.p50_ms)),
        h("td", { class: "num" }, measured(t.p95_ms)),
        h("td", { class: "num" }, measured(t.p99_ms)));
    }))));
}

/** Horizontal grouped bars: p50, p95, p99 per tool. */
function latencyChart(names, tools) {
  const W = 1000, L = 160, R = 90, T = 44, GROUP = 42, BAR = 11;
  const H = T + names.length * GROUP + 10;
  const max = Math.max(1, ...names.map((n) => tools[n].p99_ms || 0));
  const x = (v) => L + (v / max) * (W - L - R);
  const svg = s("svg", { id: "latency-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, "font-family": "Helvetica, Arial, sans-serif", "font-size": 12 });
  svg.append(s("text", { x: 16, y: 18, "font-weight": "bold", text: "latency per tool" }));
  let lx = L;
  for (const [, label, colour] of PERCENTILES) {
    svg.append(s("rect", { x: lx, y: 26, width: 14, height: 10, fill: colour }), s("text", { x: lx + 18, y: 35, text: label }));
    lx += 60;
  }
  names.forEach((name, i) => {
    const top = T + i * GROUP;
    svg.append(s("text", { x: L - 8, y: top + GROUP / 2 + 2, "text-anchor": "end", text: name }));
    PERCENTILES.forEach(([key, label, colour], j) => {
      const v = tools[name][key] || 0;
      const by = top + 4 + j * BAR;
      svg.append(
        s("rect", { class: `bar ${label}`, x: L, y: by, width: px(Math.max(x(v) - L, 1)), height: BAR - 2, fill: colour }, s("title", { text: `${name} ${label}: ${measured(v)}` })),
        s("text", { x: px(x(v) + 4), y: by + 8, "font-size": 10, fill: "#4a5561", text: measured(v) }),
      );
    });
  });
  return svg;
}

/** Horizontal bars: the share of calls that ended in error or timeout, per tool. */
function errorChart(names, tools) {
  const W = 1000, L = 160, R = 90, T = 30, ROW = 22;
  const H = T + names.length * ROW + 10;
  const x = (v) => L + v * (W - L - R);
  const svg = s("svg", { id: "error-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, "font-family": "Helvetica, Arial, sans-serif", "font-size": 12 });
  svg.append(s("text", { x: 16, y: 18, "font-weight": "bold", text: "error rate per tool" }));
  svg.append(s("line", { x1: x(1), x2: x(1), y1: T - 4, y2: H - 6, stroke: "#edf0f3" }));
  names.forEach((name, i) => {
    const top = T + i * ROW;
    const rate = tools[name].error_rate || 0;
    svg.append(
      s("text", { x: L - 8, y: top + 14, "text-anchor": "end", text: name }),
      s("rect", { x: L, y: top + 3, width: px(x(1) - L), height: ROW - 8, fill: "#f2f4f6" }),
      s("rect", { class: "bar error-rate", x: L, y: top + 3, width: px(Math.max(x(rate) - L, rate > 0 ? 2 : 0)), height: ROW - 8, fill: "#d64545" }, s("title", { text: `${name}: ${percent(rate, 1)} of ${tools[name].count} calls` })),
      s("text", { x: px(x(1) + 6), y: top + 14, fill: "#4a5561", text: `${percent(rate, 1)} of ${tools[name].count}` }),
    );
  });
  return svg;
}
