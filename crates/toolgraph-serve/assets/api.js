// The /v1 API as the pages use it: JSON in and out, the bearer token on every request,
// problem+json errors turned into ApiError (whose message is the problem's detail).

const TOKEN_KEY = "toolgraph_token";

/** Reads `?token=` once into sessionStorage and takes it out of the address bar. */
export function captureToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** An answer that was not 2xx: `status`, and the problem's `detail` as the message. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** `method path` with an optional JSON body; resolves to the parsed JSON (or null). */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    signal,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** `path?query` from an object, leaving out empty values. */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/** The events stream's URL: EventSource sends no headers, so the token rides as `?token=`. */
export function eventsUrl(id) {
  return withQuery(`/v1/executions/${encodeURIComponent(id)}/events`, { token: token() });
}
