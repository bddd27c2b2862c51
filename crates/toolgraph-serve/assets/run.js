// The run page: paste a batch in any shape the API accepts, choose options, Run →
// `POST /v1/executions` → the execution page. A refused batch shows the problem's detail
// (it names the call id) under the text area; nothing ran.

import { api } from "./api.js";
import { h } from "./svg.js";
import { navigate } from "./app.js";

const EXAMPLE = [
  { id: "fetch_a", name: "sleep", arguments: { ms: 600 } },
  { id: "fetch_b", name: "sleep", arguments: { ms: 400 } },
  { id: "merge", name: "echo", arguments: { a: "${fetch_a.slept_ms}", b: "${fetch_b.slept_ms}" } },
  { id: "index", name: "sleep", arguments: { ms: 500 }, depends_on: ["merge"] },
  { id: "flaky", name: "fail", arguments: { message: "upstream refused", after_ms: 300 } },
  { id: "report", name: "echo", arguments: { note: "needs flaky" }, depends_on: ["flaky"] },
];

export function mount(main) {
  const text = h("textarea", { id: "batch", spellcheck: "false", "aria-label": "tool calls (JSON)" });
  text.value = JSON.stringify(EXAMPLE, null, 2);
  const maxParallel = h("input", { type: "number", id: "opt-max-parallel", min: 1, placeholder: "default" });
  const sequential = h("input", { type: "checkbox", id: "opt-sequential" });
  const failFast = h("input", { type: "checkbox", id: "opt-fail-fast" });
  const record = h("input", { type: "checkbox", id: "opt-record", checked: true });
  const problem = h("div", { class: "problem", id: "problem", role: "alert" });
  const run = h("button", { type: "submit", id: "run" }, "Run");
  const form = h("form", {},
    h("p", { class: "muted" }, "A list of calls, ", h("code", {}, '{"tool_calls": [...]}'), ", an OpenAI or Anthropic message: anything ", h("code", {}, "toolgraph run"), " accepts."),
    text,
    problem,
    h("div", { class: "options" },
      h("label", {}, "max parallel ", maxParallel),
      h("label", {}, sequential, " sequential"),
      h("label", {}, failFast, " fail fast"),
      h("label", {}, record, " record"),
      run));
  main.append(h("h1", {}, "Run a batch"), form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    let input;
    try {
      input = JSON.parse(text.value);
    } catch (e) {
      problem.textContent = `not valid JSON: ${e.message}`;
      return;
    }
    const options = { sequential: sequential.checked, fail_fast: failFast.checked, record: record.checked };
    const max = Number.parseInt(maxParallel.value, 10);
    if (Number.isFinite(max) && max > 0) options.max_parallel = max;
    // A bare list is wrapped; any object (a message, a response, {"tool_calls"}) gets the options beside its calls.
    const body = Array.isArray(input) || input === null || typeof input !== "object"
      ? { tool_calls: input, options }
      : { ...input, options: { ...(input.options || {}), ...options } };
    run.disabled = true;
    try {
      const answer = await api("/v1/executions", { method: "POST", body });
      const id = answer?.id ?? answer?.metadata?.execution_id;
      if (!id) {
        problem.textContent = "the server started it but named no execution id";
        return;
      }
      navigate(`/executions/${encodeURIComponent(id)}`);
    } catch (e) {
      problem.textContent = e.message;
    } finally {
      run.disabled = false;
    }
  });
}
