// The execution page: the live Gantt timeline fed by the execution's event stream
// (`GET /v1/executions/{id}/events`, one EventSource per open page), then the final table
// and figures; a Cancel button while it runs. An execution that has already ended is drawn
// from `GET /v1/executions/{id}` alone.

import { api, eventsUrl, ApiError } from "./api.js";
import { h } from "./svg.js";
import { Gantt } from "./gantt.js";
import { measured, times, percent, errorText } from "./format.js";

const FRAME_MS = 100;

export function mount(main, { id }) {
  const heading = h("h1", {}, "Execution ", h("span", { class: "mono" }, id));
  const badge = h("span", { class: "status", id: "execution-status" }, "loading");
  const cancel = h("button", { class: "danger", id: "cancel", hidden: true }, "Cancel");
  const note = h("span", { class: "muted", id: "note" });
  heading.append(badge, cancel, note);
  const chart = h("div", { class: "gantt-wrap", id: "timeline" });
  const figures = h("dl", { class: "figures", id: "figures" });
  const table = h("div", { id: "calls" });
  main.append(heading, chart, figures, table);

  const gantt = new Gantt(chart);
  let source = null;
  let timer = null;
  let poll = null;
  let stopped = false;
  let fullId = id;
  // Local time (performance.now) at which the execution began, estimated from event times:
  // each event arrives after it happened, so the smallest `now - at_ms` is the best guess.
  let origin = Infinity;
  const seen = (atMs) => {
    if (typeof atMs === "number") origin = Math.min(origin, performance.now() - atMs);
  };
  const clock = () => (origin === Infinity ? 0 : performance.now() - origin);

  const setStatus = (status, success) => {
    const shown = status === "finished" && success === false ? "failed" : status;
    badge.className = `status ${shown}`;
    badge.textContent = shown;
    cancel.hidden = status !== "running";
  };

  const finish = (summary) => {
    if (summary.error) note.textContent = summary.error;
    gantt.setSummary(summary);
    gantt.render(summary.total_time_ms);
    setStatus(summary.status || "finished", summary.success);
    showFigures(figures, summary);
    showTable(table, gantt);
    stopLive();
  };

  const stopLive = () => {
    if (source) source.close();
    source = null;
    clearTimeout(timer);
    clearInterval(poll);
    timer = poll = null;
  };

  // The execution as `GET /v1/executions/{id}` has it. While it runs, a call not ended yet
  // stands there as `cancelled` with the message "running" or "pending" and no times.
  const drawDetail = (detail) => {
    gantt.setPlan(detail.calls || [], detail.edges || []);
    const results = detail.result?.results || [];
    results.forEach((r, i) => {
      const open = detail.status === "running" && (r.finished_ms === null || r.finished_ms === undefined)
        && r.error?.kind === "cancelled" && ["running", "pending"].includes(r.error?.message);
      if (!open) gantt.finished(i, r);
    });
  };

  const summaryOf = (detail) => ({
    ...detail.result,
    critical: detail.critical || [],
    status: detail.status,
  });

  const follow = () => {
    source = new EventSource(eventsUrl(fullId));
    const on = (kind, handler) =>
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        handler(data);
      });
    on("plan", (data) => {
      gantt.setPlan(data.calls || [], data.edges || []);
      gantt.render(clock());
    });
    on("queued", (data) => {
      seen(data.at_ms);
      gantt.queued(data.position, data.at_ms);
    });
    on("started", (data) => {
      seen(data.at_ms);
      gantt.started(data.position, data.at_ms);
    });
    on("finished", (data) => {
      seen(data.finished_ms);
      gantt.finished(data.position, data);
    });
    on("summary", finish);
    source.onopen = () => (note.textContent = "");
    source.onerror = () => {
      if (stopped || gantt.done) return;
      if (source && source.readyState === EventSource.CLOSED) {
        // The stream is refused (not reconnecting): follow the execution by polling.
        note.textContent = "live events unavailable: refreshing every second";
        source = null;
        poll = setInterval(refresh, 1000);
      } else {
        note.textContent = "reconnecting…";
      }
    };
    // Redraw with the clock, backing off on big executions: a redraw may take at most a
    // quarter of the time (1000 calls take ≈ 90 ms to draw in headless Chromium).
    const tick = () => {
      if (stopped || gantt.done) return;
      const began = performance.now();
      if (gantt.calls.length) gantt.render(clock());
      timer = setTimeout(tick, Math.max(FRAME_MS, 4 * (performance.now() - began)));
    };
    timer = setTimeout(tick, FRAME_MS);
  };

  const refresh = async () => {
    try {
      const detail = await api(`/v1/executions/${encodeURIComponent(fullId)}`);
      if (stopped) return;
      drawDetail(detail);
      if (detail.status !== "running") finish(summaryOf(detail));
      else gantt.render(detail.result?.total_time_ms ?? clock());
    } catch (e) {
      note.textContent = e.message;
    }
  };

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      await api(`/v1/executions/${encodeURIComponent(fullId)}`, { method: "DELETE" });
      note.textContent = "cancelling…";
    } catch (e) {
      note.textContent = e instanceof ApiError && e.status === 409 ? "it had already ended" : e.message;
    } finally {
      cancel.disabled = false;
    }
  });

  (async () => {
    let detail;
    try {
      detail = await api(`/v1/executions/${encodeURIComponent(id)}`);
    } catch (e) {
      if (stopped) return;
      setStatus("unknown");
      badge.textContent = e instanceof ApiError && e.status === 404 ? "not found" : "error";
      chart.replaceWith(h("p", { class: "problem" }, e.message));
      return;
    }
    if (stopped) return;
    fullId = detail.id || id;
    heading.firstElementChild.textContent = fullId;
    setStatus(detail.status, detail.result?.success);
    if (detail.status === "running") {
      follow();
    } else {
      drawDetail(detail);
      finish(summaryOf(detail));
    }
  })();

  return () => {
    stopped = true;
    stopLive();
    gantt.destroy();
  };
}

function showFigures(figures, summary) {
  const item = (label, value, key) => h("div", { "data-figure": key }, h("dt", {}, label), h("dd", {}, value));
  figures.replaceChildren(
    item("makespan", measured(summary.total_time_ms), "makespan"),
    item("sequential", measured(summary.sequential_time_estimate_ms), "sequential"),
    item("critical path", measured(summary.critical_path_ms), "critical-path"),
    item("speedup", times(summary.speedup), "speedup"),
    item("efficiency", percent(summary.efficiency), "efficiency"),
  );
}

function showTable(container, gantt) {
  const critical = new Set(gantt.critical);
  // A worker column only when some call ran in a worker process.
  const workers = gantt.calls.some((c) => c.finished && c.finished.worker);
  const rows = gantt.calls.map((c, i) => {
    const f = c.finished || {};
    const status = f.status || "unknown";
    const ran = f.started_ms !== null && f.started_ms !== undefined;
    return h("tr", { class: critical.has(i) ? "critical" : undefined, "data-id": c.id },
      h("td", { class: "mono" }, c.id),
      h("td", {}, c.name),
      h("td", { title: errorText(f.error) }, h("span", { class: `status ${status}` }, status)),
      h("td", { class: "num" }, ran ? measured(f.queued_ms) : "–"),
      h("td", { class: "num" }, ran ? measured(f.duration_ms) : "–"),
      h("td", { class: "num" }, String(f.attempts ?? 0)),
      workers ? h("td", { class: "mono" }, f.worker || "–") : null);
  });
  container.replaceChildren(
    h("h2", {}, "Calls"),
    h("table", { class: "data", id: "calls-table" },
      h("thead", {}, h("tr", {},
        h("th", {}, "call"), h("th", {}, "tool"), h("th", {}, "status"),
        h("th", { class: "num" }, "queued"), h("th", { class: "num" }, "run"), h("th", { class: "num" }, "attempts"),
        workers ? h("th", {}, "worker") : null)),
      h("tbody", {}, rows)),
    h("p", { class: "muted" }, "◆ on the critical path"),
  );
}
