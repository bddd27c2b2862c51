// Numbers and times as the CLI writes them (crates/toolgraph-cli/src/timeline.rs, render.rs).

/** A measured time: one decimal in ms (`152.2 ms`), seconds with two from 10 s. */
export function measured(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  return ms >= 10000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

/** `2.31×` */
export function times(x) {
  return x === null || x === undefined ? "–" : `${x.toFixed(2)}×`;
}

/** `87%` */
export function percent(x, digits = 0) {
  return x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`;
}

/** A round tick step giving about `target` ticks over `span` ms (1, 2 or 5 × 10ⁿ). */
export function tickStep(span, target) {
  const raw = Math.max(span / target, 1e-3);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

/** A tick label with as many decimals as its step needs (`0.5 ms`, `300 ms`, `4 s`). */
export function tickLabel(t, step) {
  const [value, s, unit] = step >= 1000 ? [t / 1000, step / 1000, "s"] : [t, step, "ms"];
  const decimals = s >= 1 ? 0 : Math.min(6, Math.max(0, Math.ceil(-Math.log10(s))));
  return `${value.toFixed(decimals)} ${unit}`;
}

/** "12 s ago", "3 min ago", … with the date for anything older than a day. */
export function ago(epochMs, now = Date.now()) {
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(epochMs).toLocaleString();
}

/** JSON for a tooltip, cut at `max` characters. */
export function preview(value, max = 1200) {
  if (value === undefined || value === null) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** A call error (`{kind, message}`) in words. */
export function errorText(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return error.kind ? `${error.kind}: ${error.message}` : error.message || JSON.stringify(error);
}
