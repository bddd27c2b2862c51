// The dashboard's entry point: reads the token, routes the page paths on the client
// (every path serves this same shell), and mounts one page at a time. A page is a module
// exporting `mount(main, params)`, which returns a function that stops its timers and streams.

import { captureToken } from "./api.js";
import * as list from "./list.js";
import * as execution from "./execution.js";
import * as stats from "./stats.js";
import * as run from "./run.js";

const routes = [
  { pattern: /^\/$/, page: list, nav: "list" },
  { pattern: /^\/executions\/([^/]+)$/, page: execution, nav: "list", params: (m) => ({ id: decodeURIComponent(m[1]) }) },
  { pattern: /^\/stats$/, page: stats, nav: "stats" },
  { pattern: /^\/run$/, page: run, nav: "run" },
];

let unmount = null;

function render() {
  const main = document.getElementById("page");
  if (unmount) {
    unmount();
    unmount = null;
  }
  main.replaceChildren();
  const path = window.location.pathname;
  for (const route of routes) {
    const match = path.match(route.pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.dataset.nav === route.nav);
    }
    unmount = route.page.mount(main, route.params ? route.params(match) : {}) || null;
    return;
  }
  main.textContent = `No page at ${path}.`;
}

/** Goes to `path` inside the dashboard without reloading. */
export function navigate(path) {
  history.pushState(null, "", path);
  render();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", render);

captureToken();
render();
