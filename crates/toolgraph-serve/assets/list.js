// The executions list: newest first from `GET /v1/executions`, refreshed every second,
// filtered by status and tool (kept in the page's query string, passed to the API).

import { api, withQuery } from "./api.js";
import { h } from "./svg.js";
import { measured, times, percent, ago } from "./format.js";

const REFRESH_MS = 1000;
const PAGE = 50;
const STATUSES = ["", "running", "finished", "cancelled"];

export function mount(main) {
  const query = new URLSearchParams(window.location.search);
  const filters = {
    status: query.get("status") || "",
    tool: query.get("tool") || "",
    before: query.get("before") || "",
  };
  const status = h("select", { name: "status", id: "filter-status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s || "any")));
  const tool = h("input", { type: "text", name: "tool", id: "filter-tool", placeholder: "any tool", value: filters.tool });
  const form = h("form", { class: "filters" },
    h("label", {}, "status ", status),
    h("label", {}, "tool ", tool),
    h("button", { type: "submit", class: "secondary" }, "Filter"));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const error = h("p", { class: "problem" });
  main.append(
    h("h1", {}, "Executions"),
    form,
    error,
    h("table", { class: "data", id: "executions" },
      h("thead", {}, h("tr", {},
        h("th", {}, "execution"), h("th", {}, "status"), h("th", { class: "num" }, "calls"),
        h("th", { class: "num" }, "makespan"), h("th", { class: "num" }, "speedup"),
        h("th", { class: "num" }, "efficiency"), h("th", {}, "when"))),
      body),
    pager,
  );

  const apply = () => {
    filters.status = status.value;
    filters.tool = tool.value.trim();
    filters.before = "";
    history.replaceState(null, "", withQuery("/", { status: filters.status, tool: filters.tool }));
    load();
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
  status.addEventListener("change", apply);

  let controller = null;
  let stopped = false;
  const load = async () => {
    controller?.abort();
    controller = new AbortController();
    try {
      const data = await api(withQuery("/v1/executions", { limit: PAGE, ...filters }), { signal: controller.signal });
      if (stopped) return;
      error.textContent = "";
      show(body, pager, data.executions || [], filters);
    } catch (e) {
      if (e.name !== "AbortError" && !stopped) error.textContent = e.message;
    }
  };
  load();
  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
    controller?.abort();
  };
}

function show(body, pager, executions, filters) {
  const now = Date.now();
  body.replaceChildren(
    ...executions.map((e) => {
      const shown = e.status === "finished" && e.success === false ? "failed" : e.status;
      const link = `/executions/${encodeURIComponent(e.id)}`;
      return h("tr", { "data-id": e.id, "data-status": e.status },
        h("td", { class: "mono" }, h("a", { href: link, "data-link": "" }, e.id.slice(0, 8))),
        h("td", {}, h("span", { class: `status ${shown}` }, shown), e.resumed ? h("span", { class: "muted" }, ` resumed ×${e.resumed}`) : ""),
        h("td", { class: "num" }, String(e.calls)),
        h("td", { class: "num" }, measured(e.makespan_ms)),
        h("td", { class: "num" }, times(e.speedup)),
        h("td", { class: "num" }, percent(e.efficiency)),
        h("td", { title: new Date(e.created_at).toLocaleString() }, ago(e.created_at, now)));
    }),
  );
  if (!executions.length) {
    body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No executions yet: ", h("a", { href: "/run", "data-link": "" }, "run a batch"), ".")));
  }
  pager.replaceChildren();
  if (filters.before) {
    pager.append(h("a", { href: withQuery("/", { status: filters.status, tool: filters.tool }), "data-link": "" }, "← newest"));
  }
  if (executions.length === PAGE) {
    const oldest = executions[executions.length - 1].created_at;
    pager.append(h("a", { href: withQuery("/", { status: filters.status, tool: filters.tool, before: oldest }), "data-link": "" }, "older →"));
  }
}
