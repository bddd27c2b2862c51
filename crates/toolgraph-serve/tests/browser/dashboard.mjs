// Drives the dashboard in a real browser (Debian's Chromium through playwright-core):
//   node dashboard.mjs BASE_URL SCREENSHOT_DIR
// Runs a batch from the run page, watches its timeline grow on the execution page, checks
// the final table and the critical path, then the list and the stats pages; saves
// screenshots. Exits 1 with the reason on the first failed check. tests/browser.rs runs it.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const executablePath = process.env.TOOLGRAPH_TEST_CHROMIUM || "/usr/bin/chromium";
// The page gets it as ?token= and must send it back; a server without auth ignores it.
const token = process.env.TOOLGRAPH_TEST_TOKEN || "s3cret+1";
const bearer = { Authorization: `Bearer ${token}` };

// Two independent chains (a → c, b → d) joined by an echo that references both, and a
// failing call with a dependant (skipped). The critical path is a → c → join.
const BATCH = [
  { id: "a", name: "sleep", arguments: { ms: 800 } },
  { id: "b", name: "sleep", arguments: { ms: 300 } },
  { id: "c", name: "sleep", arguments: { ms: 500 }, depends_on: ["a"] },
  { id: "d", name: "sleep", arguments: { ms: 300 }, depends_on: ["b"] },
  { id: "join", name: "echo", arguments: { c: "${c.slept_ms}", d: "${d.slept_ms}" } },
  { id: "flaky", name: "fail", arguments: { message: "upstream refused", after_ms: 400 } },
  { id: "after_flaky", name: "echo", arguments: { note: "needs flaky" }, depends_on: ["flaky"] },
];
const EXPECTED = { a: "ok", b: "ok", c: "ok", d: "ok", join: "ok", flaky: "error", after_flaky: "skipped" };

/** A screenshot of the page down to the end of its content. */
async function shot(page, name) {
  const height = await page.evaluate(() => Math.ceil(document.querySelector("main").getBoundingClientRect().bottom));
  await page.screenshot({ path: join(shots, name), fullPage: true, clip: { x: 0, y: 0, width: 1200, height } });
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok: ${message}`);
}

// A hung step ends the run rather than the test suite.
setTimeout(() => {
  console.error("dashboard.mjs: gave up after 180 s");
  process.exit(1);
}, 180000).unref();

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A refused request is logged as "Failed to load resource"; the checks look at answers.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console error: ${m.text()}`);
  });

  // The page's own requests to the API, with the credentials they carried.
  const apiRequests = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.pathname.startsWith("/v1/")) apiRequests.push({ url, auth: r.headers().authorization });
  });

  // The token: read from ?token= once, kept in sessionStorage, out of the address.
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  await page.waitForSelector("#executions");
  check(!page.url().includes("token"), `the token leaves the address (${page.url()})`);
  const kept = await page.evaluate(() => sessionStorage.getItem("toolgraph_token"));
  check(kept === token, `the token is kept in sessionStorage (${kept})`);

  // The drawing helpers agree with the CLI's timeline.rs (the same cases as its unit tests).
  const helpers = await page.evaluate(async () => {
    const { tickStep, tickLabel } = await import("/assets/format.js");
    const { throughJoins, describeCall } = await import("/assets/gantt.js");
    const ran = (worker) => ({ id: "r", name: "t", arguments: {}, finished: { status: "ok", started_ms: 0, finished_ms: 2, duration_ms: 2, queued_ms: 0, attempts: 2, worker } });
    const text = (nodes) => nodes.map((n) => n.textContent).join(" | ");
    return {
      steps: [tickStep(120, 8), tickStep(1000, 8), tickStep(7, 8)],
      labels: [tickLabel(1.5, 0.5), tickLabel(0.3, 0.1), tickLabel(0.04, 0.02), tickLabel(300, 50), tickLabel(1500, 500), tickLabel(4000, 2000)],
      joins: throughJoins([10, 40, 20, 50, undefined], [[0, 5], [1, 5], [2, 5], [5, 3], [5, 4], [0, 1]]),
      unfinished: throughJoins(new Array(5).fill(undefined), [[0, 5], [1, 5], [2, 5], [5, 3], [5, 4], [0, 1]]),
      remote: text(describeCall(ran("w-5"))),
      local: text(describeCall(ran(undefined))),
    };
  });
  check(JSON.stringify(helpers.steps) === "[20,200,1]", `tick steps ${JSON.stringify(helpers.steps)}`);
  check(JSON.stringify(helpers.labels) === JSON.stringify(["1.5 ms", "0.3 ms", "0.04 ms", "300 ms", "1500 ms", "4 s"]), `tick labels ${JSON.stringify(helpers.labels)}`);
  check(JSON.stringify(helpers.joins) === "[[1,3],[1,4],[0,1]]" && JSON.stringify(helpers.unfinished) === "[[0,1]]",
    `a join draws one arrow per dependant from the last call of its group ${JSON.stringify(helpers.joins)}`);
  check(helpers.remote.includes("ran by worker w-5") && !helpers.local.includes("worker"),
    `a call's tooltip names the worker that ran it, only when one did (${helpers.remote} / ${helpers.local})`);

  // A quick execution first, so the list and the trend chart have more than one point.
  const warmup = await page.request.post(`${base}/v1/executions?wait=true`, {
    headers: bearer,
    data: [{ id: "warm", name: "sleep", arguments: { ms: 20 } }, { id: "warm2", name: "echo", arguments: {} }],
  });
  check(warmup.ok(), `a warm-up execution ran (${warmup.status()})`);

  // A refused batch shows the problem, naming the call, under the text area.
  await page.goto(`${base}/run`);
  await page.fill("#batch", JSON.stringify([{ id: "bad_call", name: "no_such_tool", arguments: {} }]));
  await page.click("#run");
  await page.waitForFunction(() => document.querySelector("#problem")?.textContent.length > 0);
  const detail = await page.textContent("#problem");
  check(detail.includes("bad_call"), `a refused batch shows the problem naming the call: ${JSON.stringify(detail)}`);
  check(page.url().endsWith("/run"), "a refused batch stays on the run page");

  // The real batch.
  await page.fill("#batch", JSON.stringify(BATCH, null, 2));
  await page.click("#run");
  await page.waitForURL(/\/executions\/[0-9a-f-]+$/, { timeout: 10000 });
  const id = page.url().split("/").pop();
  console.log(`execution ${id}`);

  // Bars appear while it runs, before the summary.
  await page.waitForSelector('svg.gantt[data-state="running"] rect.bar.run', { timeout: 10000 });
  const runningBars = await page.$$eval('svg.gantt[data-state="running"] rect.bar.run', (bars) => bars.length);
  check(runningBars >= 1, `${runningBars} bar(s) drawn before the summary arrived`);
  check(await page.isVisible("#cancel"), "the Cancel button shows while it runs");
  const growing = await page.$eval('svg.gantt rect.bar.run.running', (r) => Number(r.getAttribute("width"))).catch(() => null);
  await page.waitForTimeout(250);
  const grown = await page.$eval('svg.gantt rect.bar.run.running', (r) => Number(r.getAttribute("width"))).catch(() => null);
  console.log(`a running bar's width: ${growing} then ${grown} px`);
  await shot(page, "execution-running.png");

  // The end: summary, table, critical path.
  await page.waitForSelector('svg.gantt[data-state="ended"]', { timeout: 15000 });
  await page.waitForSelector("#calls-table");
  const statuses = await page.$$eval("#calls-table tbody tr", (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.id, r.querySelector(".status").textContent])));
  check(JSON.stringify(statuses) === JSON.stringify(EXPECTED), `final statuses ${JSON.stringify(statuses)}`);
  const criticalRows = await page.$$eval("#calls-table tbody tr.critical", (rows) => rows.map((r) => r.dataset.id));
  check(JSON.stringify(criticalRows) === JSON.stringify(["a", "c", "join"]), `critical path rows ${JSON.stringify(criticalRows)}`);
  const criticalBars = await page.$$eval("svg.gantt rect.bar.run.critical", (bars) => bars.map((b) => b.closest("g.row").dataset.id));
  check(JSON.stringify(criticalBars) === JSON.stringify(["a", "c", "join"]), `critical bars outlined: ${JSON.stringify(criticalBars)}`);
  const criticalEdges = await page.$$eval("svg.gantt path.edge.critical", (p) => p.length);
  check(criticalEdges === 2, `${criticalEdges} critical arrows darkened`);
  const edges = await page.$$eval("svg.gantt path.edge", (p) => p.length);
  check(edges >= 4, `${edges} dependency arrows drawn`);
  const colours = await page.$$eval("svg.gantt g.row", (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.id, r.querySelector("rect.bar.run")?.getAttribute("fill") ?? r.querySelector("text.not-run")?.textContent])));
  check(colours.flaky === "#d64545" && colours.a === "#2f9e5b" && colours.after_flaky === "skipped", `status colours ${JSON.stringify(colours)}`);
  check(!(await page.isVisible("#cancel")), "the Cancel button is gone once it ended");
  const ticks = await page.$$eval('svg.gantt g[class="tick"] text', (t) => t.map((e) => e.textContent));
  const last = await page.textContent("svg.gantt g.tick.makespan text");
  check(ticks[0] === "0 ms" && ticks.every((t) => /^\d+ ms$/.test(t) && Number.parseInt(t, 10) % 100 === 0),
    `round ticks ${ticks.join(", ")}, then the makespan ${last}`);
  const makespan = await page.textContent('[data-figure="makespan"] dd');
  const speedup = await page.textContent('[data-figure="speedup"] dd');
  check(makespan === last && /×$/.test(speedup), `figures: makespan ${makespan}, speedup ${speedup}`);

  // Hover: arguments and error in the tooltip.
  await page.hover('svg.gantt g.row[data-id="flaky"] rect.bar.run');
  const tooltip = await page.textContent(".tooltip");
  check(tooltip.includes("upstream refused") && tooltip.includes("after_ms"), "hovering a bar shows its arguments and error");
  await shot(page, "execution-hover.png");
  await page.mouse.move(0, 0);
  await page.waitForSelector(".tooltip", { state: "hidden" });
  await shot(page, "execution.png");

  // Cancel: a long call and its dependant, stopped from the page.
  const long = await page.request.post(`${base}/v1/executions`, {
    headers: bearer,
    data: [
      { id: "long", name: "sleep", arguments: { ms: 20000 } },
      { id: "after_long", name: "echo", arguments: {}, depends_on: ["long"] },
    ],
  });
  check(long.status() === 202, `a long execution started (${long.status()})`);
  const longId = (await long.json()).id;
  await page.goto(`${base}/executions/${longId.slice(0, 8)}`);
  await page.waitForSelector('svg.gantt[data-state="running"] rect.bar.run.running');
  await page.click("#cancel");
  await page.waitForSelector('svg.gantt[data-state="ended"]', { timeout: 10000 });
  const cancelled = await page.textContent("#execution-status");
  check(cancelled === "cancelled", `Cancel stops it: the page says ${cancelled}`);
  const longStatus = await page.textContent('#calls-table tr[data-id="long"] .status');
  check(longStatus === "cancelled", `the running call ended ${longStatus}`);
  check(page.url().endsWith(`/executions/${longId.slice(0, 8)}`) && (await page.textContent("h1 .mono")) === longId,
    "an id prefix in the address opens the execution, named in full");

  // The list, through the nav link (client-side routing), with this execution.
  await page.click('nav a[data-nav="list"]');
  await page.waitForSelector(`#executions tr[data-id="${id}"]`);
  const row = await page.textContent(`#executions tr[data-id="${id}"]`);
  check(row.includes("failed") && row.includes("7"), `the list shows it: ${row.replace(/\s+/g, " ")}`);
  const listed = await page.$$eval("#executions tbody tr[data-id]", (rows) => rows.length);
  check(listed === 3, `${listed} executions listed`);
  await page.selectOption("#filter-status", "running");
  await page.waitForFunction(() => !document.querySelector("#executions tbody tr[data-id]"));
  check(page.url().includes("status=running"), "the status filter is in the address and no execution is running");
  await page.goto(`${base}/?tool=fail`);
  await page.waitForSelector(`#executions tr[data-id="${id}"]`);
  const byTool = await page.$$eval("#executions tbody tr[data-id]", (rows) => rows.length);
  check(byTool === 1, "the tool filter keeps the executions that called it");
  await page.goto(`${base}/`);
  await page.waitForSelector(`#executions tr[data-id="${id}"]`);
  await shot(page, "list.png");

  // The stats page.
  await page.goto(`${base}/stats`);
  await page.waitForSelector("#tools-table");
  const tools = await page.$$eval("#tools-table tbody tr", (rows) => rows.map((r) => r.dataset.tool));
  check(["echo", "fail", "sleep"].every((t) => tools.includes(t)), `per-tool stats for ${tools.join(", ")}`);
  const failRate = await page.textContent('#tools-table tr[data-tool="fail"] td:nth-child(4)');
  check(failRate.trim() === "100.0%", `fail's error rate ${failRate}`);
  const points = await page.$$eval("#speedup-chart circle.point", (c) => c.length);
  check(points === 2, `${points} points on the speedup chart (the finished executions)`);
  const latencyBars = await page.$$eval("#latency-chart rect.bar", (b) => b.length);
  check(latencyBars === tools.length * 3, `${latencyBars} latency bars (p50/p95/p99 per tool)`);
  await shot(page, "stats.png");

  const streams = apiRequests.filter((r) => r.url.pathname.endsWith("/events"));
  const fetches = apiRequests.filter((r) => !r.url.pathname.endsWith("/events"));
  check(fetches.length > 0 && fetches.every((r) => r.auth === `Bearer ${token}`),
    `all ${fetches.length} API requests of the page carried the bearer token`);
  check(streams.length >= 2 && streams.every((r) => r.url.searchParams.get("token") === token),
    `all ${streams.length} event streams carried ?token=`);
  check(problems.length === 0, `no page or console errors${problems.length ? `: ${problems.join("; ")}` : ""}`);
  console.log("dashboard: all checks passed");
} catch (e) {
  console.error(e.message);
  for (const p of problems) console.error(p);
  process.exitCode = 1;
} finally {
  await browser.close();
}
