//! `http_fetch`: one HTTP(S) request per call, through one pooled client shared by every call.
//!
//! The tool refuses, before anything goes on the wire, a URL that does not parse, a scheme
//! other than `http`/`https`, a host outside [`HttpConfig::allow_hosts`] (also when a redirect
//! leads there), and a bad method, header name or header value. It connects only to public
//! IP addresses unless [`HttpConfig::allow_private`] or [`HttpConfig::allow_networks`] opens
//! others: literal IP hosts are checked with the URL (redirects included), names after DNS
//! resolution, on the addresses actually connected (`address`). Proxy environment variables
//! are ignored: through a proxy the tool could not see the address it reaches. It reads at
//! most `max_bytes` of a body, chunk by chunk, and stops there: it never buffers a whole
//! large body. Failures say whether a retry may help: connection trouble, 429 and 5xx are
//! transient (with the server's `Retry-After` as a hint, capped at
//! [`HttpConfig::max_retry_after_ms`]); other 4xx, a refused address and a response head
//! larger than the client accepts are permanent.
//!
//! Resources, for the planner: a call reads `host:<host>[:port]` (the port only when it is
//! not the scheme's default), so an operator caps calls per host with a per-resource limit
//! on kind `host`; an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`) writes that key
//! instead, so it stays ordered against the other calls to that host. A call is retryable
//! when its method is idempotent (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`).
//!
//! It must never spawn tasks (dropping the call's future aborts the request), never panic
//! on anything a user or a server sends, and never reach a host or an address the
//! configuration refuses.

mod address;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url, redirect};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toolgraph_core::{
    ApprovalClass, CallContext, ResourceAccess, Tool, ToolError, ToolFuture, ToolSpec, error_chain,
};

use address::{AddressPolicy, AddressRefused, GuardedResolver, Network};

/// The tool's name in a [`toolgraph_core::ToolSet`].
const NAME: &str = "http_fetch";
/// Characters of an error response's body quoted in the error message.
const ERROR_BODY_CHARS: usize = 200;
/// Bytes read from an error response's body (enough for [`ERROR_BODY_CHARS`] of UTF-8).
const ERROR_BODY_BYTES: usize = 4 * ERROR_BODY_CHARS;
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// The arguments a call may carry.
const ARGUMENTS: [&str; 5] = ["url", "method", "headers", "body", "max_bytes"];
/// Headers the client derives from the URL and body; a call may not set them.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Settings of `http_fetch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Hosts a call may reach (and be redirected to), compared case-insensitively with the
    /// URL's host, or with `host:port` when an entry names a port (`api.example.com`,
    /// `127.0.0.1:8080`). Empty allows any host. Names only: whatever the name, the address
    /// it resolves to must also pass `allow_private` / `allow_networks`.
    pub allow_hosts: Vec<String>,
    /// Let calls reach non-public addresses: loopback, private (RFC 1918, `fc00::/7`),
    /// link-local (`169.254.0.0/16`, `fe80::/10`), unspecified, shared, multicast and other
    /// reserved ranges. Off by default: only public addresses are reached, checked after
    /// DNS resolution on the address connected.
    pub allow_private: bool,
    /// Non-public networks calls may reach while `allow_private` is off, as CIDRs or single
    /// addresses (`10.1.0.0/16`, `127.0.0.1`, `fd00::/8`). Public addresses need no entry.
    pub allow_networks: Vec<String>,
    /// Calls to one host at once, at most. The tool only carries it: whoever builds the
    /// executor turns it into a per-resource limit on kind `host`.
    pub per_host_limit: usize,
    /// Body bytes returned at most; a call's `max_bytes` may lower it, never raise it.
    pub max_body_bytes: usize,
    /// The `User-Agent` sent unless a call sets its own.
    pub user_agent: String,
    /// The longest wait a server's `Retry-After` may ask for, in ms: a longer one is passed
    /// on as this (the default matches the executor's default retry cap, 5 s).
    pub max_retry_after_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_hosts: Vec::new(),
            allow_private: false,
            allow_networks: Vec::new(),
            per_host_limit: 6,
            max_body_bytes: 1024 * 1024,
            user_agent: concat!("toolgraph/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_retry_after_ms: 5_000,
        }
    }
}

/// Why [`HttpFetch::new`] could not build the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpSetupError {
    /// A configuration value cannot work.
    InvalidConfig {
        /// The field, e.g. `allow_hosts`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP client could not be built.
    Client(String),
}

impl fmt::Display for HttpSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpSetupError::InvalidConfig { field, message } => {
                write!(f, "invalid http_fetch configuration: {field}: {message}")
            }
            HttpSetupError::Client(message) => {
                write!(f, "cannot build the HTTP client: {message}")
            }
        }
    }
}

impl std::error::Error for HttpSetupError {}

/// The `http_fetch` tool. Clones share one connection pool.
///
/// ```
/// use serde_json::json;
/// use toolgraph_core::{ResourceAccess, Tool};
/// use toolgraph_tools::http::{HttpConfig, HttpFetch};
///
/// let fetch = HttpFetch::new(HttpConfig::default())?;
/// let get = json!({"url": "https://Example.com:8443/items"});
/// assert_eq!(fetch.resources(&get), [ResourceAccess::read("host:example.com:8443")]);
/// assert!(fetch.is_idempotent(&get));
/// let post = json!({"url": "https://example.com/items", "method": "POST"});
/// assert_eq!(fetch.resources(&post), [ResourceAccess::write("host:example.com")]);
/// assert!(!fetch.is_idempotent(&post));
/// # Ok::<(), toolgraph_tools::http::HttpSetupError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpFetch {
    spec: ToolSpec,
    config: HttpConfig,
    /// `allow_hosts`, trimmed and lowercased.
    allow: Vec<String>,
    /// `allow_private` and `allow_networks`, parsed.
    policy: Arc<AddressPolicy>,
    client: reqwest::Client,
}

/// One call's arguments, checked.
struct FetchRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    cap: usize,
}

impl HttpFetch {
    /// Checks `config` and builds the tool with its own pooled client.
    pub fn new(config: HttpConfig) -> Result<HttpFetch, HttpSetupError> {
        if config.per_host_limit == 0 {
            return Err(HttpSetupError::InvalidConfig {
                field: "per_host_limit",
                message: "must be at least 1".into(),
            });
        }
        let mut allow = Vec::with_capacity(config.allow_hosts.len());
        for entry in &config.allow_hosts {
            let host = entry.trim().to_ascii_lowercase();
            if host.is_empty() || host.contains('/') {
                return Err(HttpSetupError::InvalidConfig {
                    field: "allow_hosts",
                    message: format!(
                        "\"{entry}\" is not a host (write `example.com` or `example.com:8080`)"
                    ),
                });
            }
            allow.push(host);
        }
        let mut networks = Vec::with_capacity(config.allow_networks.len());
        for entry in &config.allow_networks {
            let network =
                Network::parse(entry).map_err(|message| HttpSetupError::InvalidConfig {
                    field: "allow_networks",
                    message,
                })?;
            networks.push(network);
        }
        let policy = Arc::new(AddressPolicy {
            allow_private: config.allow_private,
            networks,
        });
        let user_agent = HeaderValue::from_str(&config.user_agent).map_err(|e| {
            HttpSetupError::InvalidConfig {
                field: "user_agent",
                message: e.to_string(),
            }
        })?;

        // Another provider may already be installed; either one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redirect_allow = allow.clone();
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            // Through a proxy, the resolver below would vet the proxy, not the target.
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: policy.clone(),
            })
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    let message = format!("more than {MAX_REDIRECTS} redirects");
                    return attempt.error(message);
                }
                match refusal(&redirect_allow, &redirect_policy, attempt.url()) {
                    Some(why) => {
                        let message = format!("redirect to {} refused: {why}", attempt.url());
                        attempt.error(message)
                    }
                    None => attempt.follow(),
                }
            }))
            .build()
            .map_err(|e| HttpSetupError::Client(error_chain(&e)))?;

        Ok(HttpFetch {
            spec: spec(),
            config,
            allow,
            policy,
            client,
        })
    }

    /// The configuration the tool was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    async fn fetch(&self, args: Value) -> Result<Value, ToolError> {
        let FetchRequest {
            method,
            url,
            headers,
            body,
            cap,
        } = self.request(&args)?;
        let what = format!("{method} {url}");
        let requested = url.to_string();
        let mut request = self.client.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(|e| send_error(&what, e))?;
        let status = response.status();
        if status.as_u16() >= 400 {
            let what = if response.url().as_str() == requested {
                what
            } else {
                format!("{what} (redirected to {})", response.url())
            };
            let cap = self.config.max_retry_after_ms;
            return Err(status_error(&what, status, response, cap).await);
        }
        let headers = headers_json(response.headers());
        let final_url = response.url().to_string();
        let (bytes, truncated) = read_capped(&mut response, cap).await.map_err(|e| {
            ToolError::transient(format!(
                "{what}: reading the body failed: {}",
                error_chain(&e.without_url())
            ))
        })?;
        Ok(json!({
            "status": status.as_u16(),
            "url": final_url,
            "headers": headers,
            "body": text_of(&bytes, truncated),
            "bytes": bytes.len(),
            "truncated": truncated,
        }))
    }

    /// Checks a call's arguments; every refusal is permanent and names what was refused.
    fn request(&self, args: &Value) -> Result<FetchRequest, ToolError> {
        let refuse = |message: String| ToolError::permanent(format!("{NAME}: {message}"));
        let Some(obj) = args.as_object() else {
            return Err(refuse("arguments must be an object".into()));
        };
        if let Some(unknown) = obj.keys().find(|k| !ARGUMENTS.contains(&k.as_str())) {
            return Err(refuse(format!("unknown argument `{unknown}`")));
        }
        let raw_url = match obj.get("url") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(refuse("`url` must be a string".into())),
            None => return Err(refuse("`url` is required".into())),
        };
        let method_name = match obj.get("method") {
            None => "GET".to_owned(),
            Some(Value::String(s)) => s.to_ascii_uppercase(),
            Some(_) => return Err(refuse("`method` must be a string".into())),
        };
        let url = Url::parse(raw_url)
            .map_err(|e| refuse(format!("cannot parse URL \"{raw_url}\": {e}")))?;
        if let Some(why) = refusal(&self.allow, &self.policy, &url) {
            return Err(refuse(format!("refused {method_name} {url}: {why}")));
        }
        let method = Method::from_bytes(method_name.as_bytes())
            .map_err(|_| refuse(format!("invalid HTTP method \"{method_name}\" for {url}")))?;

        let mut headers = HeaderMap::new();
        match obj.get("headers") {
            None => {}
            Some(Value::Object(given)) => {
                for (name, value) in given {
                    let Some(text) = value.as_str() else {
                        return Err(refuse(format!("header \"{name}\" must be a string")));
                    };
                    let header = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| refuse(format!("invalid header name \"{name}\"")))?;
                    if RESERVED_HEADERS.contains(&header.as_str()) {
                        return Err(refuse(format!(
                            "header \"{name}\" is set by the client from the URL and body"
                        )));
                    }
                    let value = HeaderValue::from_str(text)
                        .map_err(|_| refuse(format!("invalid value for header \"{name}\"")))?;
                    headers.append(header, value);
                }
            }
            Some(_) => {
                return Err(refuse(
                    "`headers` must be an object of header name to string".into(),
                ));
            }
        }
        let body = match obj.get("body") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(refuse("`body` must be a string".into())),
        };
        let cap = match obj.get("max_bytes") {
            None => self.config.max_body_bytes,
            Some(v) => match v.as_u64() {
                Some(n) => usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(self.config.max_body_bytes),
                None => return Err(refuse("`max_bytes` must be a non-negative integer".into())),
            },
        };
        Ok(FetchRequest {
            method,
            url,
            headers,
            body,
            cap,
        })
    }
}

impl Tool for HttpFetch {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        let Some(key) = args
            .get("url")
            .and_then(Value::as_str)
            .and_then(host_resource)
        else {
            // No host: the call fails when it runs, touching nothing.
            return Vec::new();
        };
        if is_safe(&method_of(args)) {
            vec![ResourceAccess::read(key)]
        } else {
            vec![ResourceAccess::write(key)]
        }
    }

    /// `GET`, `HEAD` and `OPTIONS` only read; any other method may change state elsewhere.
    fn approval_class(&self, args: &Value) -> ApprovalClass {
        if is_safe(&method_of(args)) {
            ApprovalClass::ReadOnly
        } else {
            ApprovalClass::NetworkWrite
        }
    }

    fn is_idempotent(&self, args: &Value) -> bool {
        matches!(
            method_of(args).as_str(),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
        )
    }

    fn call<'a>(&'a self, args: std::sync::Arc<Value>, _ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(self.fetch(std::sync::Arc::unwrap_or_clone(args)))
    }
}

fn spec() -> ToolSpec {
    ToolSpec::new(NAME)
        .description(
            "Sends one HTTP(S) request and returns {status, url, headers, body, bytes, truncated}; \
             the body is text, cut at max_bytes.",
        )
        .parameters(json!({
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "description": "Absolute http:// or https:// URL."
                },
                "method": {
                    "type": "string",
                    "description": "HTTP method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, ...); default GET."
                },
                "headers": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Request headers, name to value."
                },
                "body": {
                    "type": "string",
                    "description": "Request body, sent as is (set content-type in headers)."
                },
                "max_bytes": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Body bytes to return at most (never more than the configured cap)."
                }
            },
            "required": ["url"],
            "additionalProperties": false
        }))
        // GET, the default method, is idempotent; `is_idempotent` refines it per call.
        .idempotent()
}

/// The call's method, uppercased; `GET` when absent.
fn method_of(args: &Value) -> String {
    args.get("method")
        .and_then(Value::as_str)
        .map_or_else(|| "GET".to_owned(), str::to_ascii_uppercase)
}

/// Safe methods only read the host's state.
fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// `host:<host>[:port]` for a URL as the planner sees it. A URL whose host is still an
/// unresolved `${...}` reference yields a key holding that reference, which makes the
/// planner run the call alone rather than guess its host.
fn host_resource(raw_url: &str) -> Option<String> {
    match Url::parse(raw_url) {
        Ok(url) => host_key(&url).map(|key| format!("host:{key}")),
        Err(_) if raw_url.contains("${") => Some(format!("host:{raw_url}")),
        Err(_) => None,
    }
}

/// Lowercased host, with `:port` when the port is not the scheme's default.
fn host_key(url: &Url) -> Option<String> {
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// Why `url` may not be fetched under `allow` (normalised `allow_hosts`) and `policy`, if
/// it may not. A name's addresses are checked later, by the resolver.
fn refusal(allow: &[String], policy: &AddressPolicy, url: &Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!(
            "scheme \"{}\" is not allowed (only http and https)",
            url.scheme()
        ));
    }
    let Some(host) = url.host_str() else {
        return Some("the URL has no host".into());
    };
    if !allow.is_empty() {
        let host = host.to_ascii_lowercase();
        let with_port = url
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"));
        let allowed = allow
            .iter()
            .any(|a| *a == host || with_port.as_deref() == Some(a.as_str()));
        if !allowed {
            return Some(format!(
                "host \"{host}\" is not in allow_hosts ({})",
                allow.join(", ")
            ));
        }
    }
    // The URL parser has normalised every IPv4 spelling (`0x7f.1`, `2130706433`) already.
    let literal: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    policy.refuse_literal(literal)
}

/// Reads at most `cap` body bytes; true when the body had more.
async fn read_capped(response: &mut Response, cap: usize) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(cap.min(64 * 1024));
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(buf.len());
        if chunk.len() > room {
            buf.extend_from_slice(chunk.get(..room).unwrap_or_default());
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// The body as text: lossy UTF-8, without a character the cap cut in half.
fn text_of(bytes: &[u8], truncated: bool) -> String {
    let bytes = if truncated {
        without_partial_char(bytes)
    } else {
        bytes
    };
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bytes` minus a trailing, incomplete UTF-8 sequence.
fn without_partial_char(bytes: &[u8]) -> &[u8] {
    for (back, &b) in bytes.iter().rev().take(4).enumerate() {
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        let start = bytes.len() - 1 - back;
        return if back + 1 < needed {
            bytes.get(..start).unwrap_or(bytes)
        } else {
            bytes
        };
    }
    bytes
}

/// Response headers as `{lowercased name: value}`; repeated headers are joined with `, `.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                out.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    Value::Object(out)
}

/// A failure to send the request or to receive the response head.
fn send_error(what: &str, e: reqwest::Error) -> ToolError {
    let e = e.without_url();
    if let Some(refused) = find_source::<AddressRefused>(&e) {
        return ToolError::permanent(format!("{what}: refused: {refused}"));
    }
    let detail = error_chain(&e);
    if find_source::<hyper::Error>(&e).is_some_and(hyper::Error::is_parse_too_large) {
        // The same server sends the same oversized head again: retrying cannot help.
        ToolError::permanent(format!("{what}: the response head is too large: {detail}"))
    } else if e.is_redirect() {
        ToolError::permanent(format!("{what}: {detail}"))
    } else if e.is_builder() {
        ToolError::permanent(format!("{what}: invalid request: {detail}"))
    } else if e.is_timeout() {
        ToolError::transient(format!("{what}: timed out: {detail}"))
    } else if e.is_connect() {
        ToolError::transient(format!("{what}: could not connect: {detail}"))
    } else {
        // Reset or closed connections, protocol errors, request body errors.
        ToolError::transient(format!("{what}: {detail}"))
    }
}

/// The error for a 4xx or 5xx response, quoting the start of its body; a `Retry-After`
/// hint is capped at `max_retry_after_ms`.
async fn status_error(
    what: &str,
    status: StatusCode,
    mut response: Response,
    max_retry_after_ms: u64,
) -> ToolError {
    let retry_after =
        retry_after_ms(response.headers(), SystemTime::now()).map(|ms| ms.min(max_retry_after_ms));
    let (bytes, truncated) = read_capped(&mut response, ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let text = text_of(&bytes, truncated);
    let words: Vec<&str> = text.split_whitespace().collect();
    let flat = words.join(" ");
    let mut quote: String = flat.chars().take(ERROR_BODY_CHARS).collect();
    if truncated || quote.len() < flat.len() {
        quote.push('…');
    }
    let mut message = format!("{what}: HTTP {status}");
    if !quote.is_empty() {
        message.push_str(": ");
        message.push_str(&quote);
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.as_u16() >= 500 {
        let error = ToolError::transient(message);
        match retry_after {
            Some(ms) => error.retry_after_ms(ms),
            None => error,
        }
    } else {
        ToolError::permanent(message)
    }
}

/// `Retry-After` in ms: delay-seconds, or an HTTP date measured from `now`.
fn retry_after_ms(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// The first error of type `T` in `e`'s chain of sources, `e` included.
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn http_dates_and_seconds_become_retry_delays() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after_ms(&headers, now), Some(7_000));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after_ms(&headers, now), Some(30_000));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sat, 01 Jan 1994 00:00:00 GMT"),
        );
        assert_eq!(retry_after_ms(&headers, now), Some(0), "a past date");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("later"));
        assert_eq!(retry_after_ms(&headers, now), None);
    }

    #[test]
    fn literal_non_public_hosts_are_refused_in_every_spelling() {
        let strict = AddressPolicy::default();
        let check = |u: &str| refusal(&[], &strict, &Url::parse(u).expect("test URL"));
        for (url, shown) in [
            (
                "http://127.0.0.1:8080/",
                "127.0.0.1 is not a public address (loopback)",
            ),
            (
                "http://2130706433/",
                "127.0.0.1 is not a public address (loopback)",
            ),
            (
                "http://0x7f.1/",
                "127.0.0.1 is not a public address (loopback)",
            ),
            ("http://0/", "0.0.0.0 is not a public address (unspecified)"),
            ("http://[::1]:81/", "::1 is not a public address (loopback)"),
            (
                "http://[::ffff:7f00:1]/",
                "::ffff:127.0.0.1 is not a public address (loopback)",
            ),
            (
                "http://169.254.169.254/latest",
                "169.254.169.254 is not a public address (link-local)",
            ),
            (
                "https://10.0.0.7/",
                "10.0.0.7 is not a public address (private)",
            ),
            (
                "https://192.168.0.1/",
                "192.168.0.1 is not a public address (private)",
            ),
            (
                "http://[fd00::1]/",
                "fd00::1 is not a public address (unique local)",
            ),
            (
                "http://[fe80::1]/",
                "fe80::1 is not a public address (link-local)",
            ),
        ] {
            let why = check(url).unwrap_or_default();
            assert!(why.starts_with(shown), "{url}: {why}");
            assert!(why.contains("allow_private"), "{url}: {why}");
        }
        assert_eq!(check("http://93.184.215.14/"), None);
        assert_eq!(check("http://[2606:4700:4700::1111]/"), None);
        // A name is checked after resolution, by the resolver.
        assert_eq!(check("http://localhost/"), None);
        let listed = AddressPolicy {
            allow_private: false,
            networks: vec![Network::parse("127.0.0.0/8").expect("network")],
        };
        let url = Url::parse("http://127.0.0.1:8080/").expect("url");
        assert_eq!(refusal(&[], &listed, &url), None);
        let url = Url::parse("http://[::1]:8080/").expect("url");
        assert!(refusal(&[], &listed, &url).is_some());
    }

    #[test]
    fn a_character_cut_by_the_cap_is_dropped_not_garbled() {
        let text = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        for cut in 0..=text.len() {
            let shown = text_of(&text[..cut], true);
            assert!(!shown.contains('\u{FFFD}'), "cut at {cut}: {shown:?}");
            assert!("aé€😀".starts_with(&shown));
        }
        assert_eq!(text_of(&text[..2], false), "a\u{FFFD}");
        assert_eq!(text_of(&[0xFF, b'a'], true), "\u{FFFD}a");
    }

    #[test]
    fn host_keys_carry_only_non_default_ports() {
        let key = |u: &str| host_resource(u);
        assert_eq!(key("http://Example.COM/x"), Some("host:example.com".into()));
        assert_eq!(
            key("https://example.com:443/"),
            Some("host:example.com".into())
        );
        assert_eq!(
            key("http://127.0.0.1:8080/a"),
            Some("host:127.0.0.1:8080".into())
        );
        assert_eq!(key("http://[::1]:81/"), Some("host:[::1]:81".into()));
        assert_eq!(
            key("https://api.example.com/items/${c1.id}"),
            Some("host:api.example.com".into())
        );
        assert!(key("${c1.url}").is_some_and(|k| k.contains("${")));
        assert_eq!(key("not a url"), None);
    }

    #[test]
    fn allow_list_matches_host_or_host_and_port() {
        let allow = vec!["example.com".to_owned(), "127.0.0.1:8080".to_owned()];
        let open = AddressPolicy {
            allow_private: true,
            networks: Vec::new(),
        };
        let check = |u: &str| refusal(&allow, &open, &Url::parse(u).expect("test URL"));
        assert_eq!(check("https://EXAMPLE.com/a"), None);
        assert_eq!(check("http://example.com:9999/a"), None);
        assert_eq!(check("http://127.0.0.1:8080/"), None);
        assert!(check("http://127.0.0.1:8081/").is_some());
        assert!(check("http://sub.example.com/").is_some());
        assert!(check("ftp://example.com/").is_some());
        assert_eq!(
            refusal(&[], &open, &Url::parse("http://any.host/").expect("url")),
            None
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        let bad = |config: HttpConfig| HttpFetch::new(config).err();
        assert!(matches!(
            bad(HttpConfig {
                allow_hosts: vec!["https://example.com".into()],
                ..Default::default()
            }),
            Some(HttpSetupError::InvalidConfig {
                field: "allow_hosts",
                ..
            })
        ));
        assert!(matches!(
            bad(HttpConfig {
                per_host_limit: 0,
                ..Default::default()
            }),
            Some(HttpSetupError::InvalidConfig {
                field: "per_host_limit",
                ..
            })
        ));
        assert!(matches!(
            bad(HttpConfig {
                user_agent: "bad\nagent".into(),
                ..Default::default()
            }),
            Some(HttpSetupError::InvalidConfig {
                field: "user_agent",
                ..
            })
        ));
        let config: HttpConfig =
            serde_json::from_str(r#"{"allow_hosts": ["a.example"]}"#).expect("partial config");
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert!(serde_json::from_str::<HttpConfig>(r#"{"allow_host": []}"#).is_err());
        assert!(!config.allow_private && config.allow_networks.is_empty());
        let bad_network = bad(HttpConfig {
            allow_networks: vec!["10.0.0.0/40".into()],
            ..Default::default()
        });
        assert!(
            matches!(
                &bad_network,
                Some(HttpSetupError::InvalidConfig { field: "allow_networks", message })
                    if message.contains("10.0.0.0/40")
            ),
            "{bad_network:?}"
        );
    }
}
