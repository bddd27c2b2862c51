//! Running the service: binding (loopback unless a token guards it), bearer-token auth,
//! the tower-http layers (body limit, timeout, concurrency, compression, request ids,
//! tracing), and graceful shutdown.
//!
//! Layers, outermost first, around the router as a whole: request id (an incoming
//! `x-request-id` is kept, else a UUID is made) → trace span (method, path, request id) →
//! the id copied onto the answer → gzip (never for `text/event-stream`: tower-http's
//! default predicate excludes it) → one middleware doing, in order, auth, the per-request
//! timeout around the rest, the rewriting of every error answer that is not problem+json
//! yet (a 413 from the body limit, axum's 404, 405, 415) and the HTTP metrics (route,
//! status) → global concurrency limit → body limit → the routes (where a small layer notes
//! the matched route on the answer).
//!
//! **The request timeout** (503 past it) does not apply to what is meant to last: event
//! streams (`…/events`) and requests that wait for an execution (`?wait=true`,
//! `/v1/tool-messages`). Their length is the execution's, bounded by its calls' own
//! timeouts; a client that wants less sets its own timeout and cancels with `DELETE`.
//! Cutting them here would throw away a result whose execution goes on regardless.
//!
//! **Shutdown** ([`Server::run`] once `shutdown` resolves): refuse new executions (`POST`
//! answers 503), stop accepting connections (idle keep-alive ones are closed), let the
//! running executions finish within the grace period, cancel the rest and wait until their
//! records are written (`cancelled`, resumable), then give open connections a last
//! [`CLOSE_WAIT`] to send their answers (a waiting request gets its result, an event stream
//! its `summary`), and return.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::{AppState, Problem};

/// After the executions drained: how long open connections get to finish their answers
/// before the server returns anyway.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How the service runs (`[serve]` in `toolgraph.toml`, `TOOLGRAPH_SERVE_*`, flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The bearer token every request must carry, when set (see [`Server::bind`] for
    /// what is open without it).
    pub token: Option<String>,
    /// The largest request body accepted (413 past it).
    pub body_limit_bytes: usize,
    /// How long a request may take (see the module's note on what is exempt); `None`: no
    /// limit.
    pub request_timeout: Option<Duration>,
    /// Requests handled at once, at most; more wait their turn.
    pub concurrency_limit: usize,
    /// How long running executions may go on once shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::from_config(&toolgraph::ServeConfig::default())
    }
}

impl ServeOptions {
    /// The options the `[serve]` section describes. An empty token means none.
    pub fn from_config(config: &toolgraph::ServeConfig) -> ServeOptions {
        ServeOptions {
            bind: config.bind,
            token: config
                .token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            body_limit_bytes: usize::try_from(config.body_limit_bytes).unwrap_or(usize::MAX),
            request_timeout: (config.request_timeout_ms > 0)
                .then(|| Duration::from_millis(config.request_timeout_ms)),
            concurrency_limit: config.concurrency_limit.max(1),
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
        }
    }
}

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token: anyone who reaches it could run tools.
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach that address could \
         run tools. Set a token (--token, TOOLGRAPH_SERVE_TOKEN, or token in [serve]), or bind \
         a loopback address such as 127.0.0.1:{port}",
        port = .addr.port()
    )]
    Unprotected {
        /// The address.
        addr: SocketAddr,
    },
    /// Listening failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound listener, ready to serve (its address is known: bind port 0 and ask).
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    options: ServeOptions,
}

/// What a shutdown found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shutdown {
    /// Executions running when shutdown began.
    pub running_at_signal: usize,
    /// Connections were still open after [`CLOSE_WAIT`] and were dropped.
    pub connections_dropped: bool,
}

impl Server {
    /// Checks the options and binds. A non-loopback address needs a token.
    pub async fn bind(options: ServeOptions) -> Result<Server, ServeError> {
        if options.token.is_none() && !options.bind.ip().to_canonical().is_loopback() {
            return Err(ServeError::Unprotected { addr: options.bind });
        }
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|source| ServeError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: options.bind,
            source,
        })?;
        Ok(Server {
            listener,
            addr,
            options,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `state` until `shutdown` resolves, then shuts down gracefully (see the
    /// module's doc).
    pub async fn run(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Shutdown, ServeError> {
        let Server {
            listener,
            addr,
            options,
        } = self;
        let router = layered(crate::app(state.clone()), &options, &state);
        let stop_accepting = CancellationToken::new();
        let mut serving = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                .into_future(),
        );
        tokio::select! {
            ended = &mut serving => {
                // Only an accept error ends serving before shutdown.
                return match ended {
                    Ok(Ok(())) => Ok(Shutdown::default()),
                    Ok(Err(source)) => Err(ServeError::Serve { addr, source }),
                    Err(join) => Err(ServeError::Serve { addr, source: std::io::Error::other(join) }),
                };
            }
            () = shutdown => {}
        }
        let running_at_signal = state.live.running();
        tracing::info!(
            executions = running_at_signal,
            grace_ms = options.shutdown_grace.as_millis() as u64,
            "shutting down: no new executions; the running ones get the grace period"
        );
        state.live.refuse_new();
        stop_accepting.cancel();
        state.live.drain(options.shutdown_grace).await;
        tracing::info!("every execution ended and is recorded");
        let connections_dropped = match tokio::time::timeout(CLOSE_WAIT, &mut serving).await {
            Ok(_) => false,
            Err(_) => {
                tracing::warn!(
                    wait_ms = CLOSE_WAIT.as_millis() as u64,
                    "connections still open after the executions ended: closing them"
                );
                serving.abort();
                true
            }
        };
        Ok(Shutdown {
            running_at_signal,
            connections_dropped,
        })
    }
}

/// Serves `state` until `shutdown` resolves (binds, then [`Server::run`]).
pub async fn serve(
    state: AppState,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Server::bind(options).await?.run(state, shutdown).await?;
    Ok(())
}

/// The application with the operational layers (module doc: the order).
///
/// They wrap the router once, outside it, rather than each route (`Router::layer`): a
/// request then clones no boxed per-route stack, and the checks of one request run in one
/// middleware ([`operate`]). Inside the router one small layer notes the matched route on
/// the answer, for the metrics.
pub fn layered(app: Router, options: &ServeOptions, state: &AppState) -> Router {
    let policy = Arc::new(Policy {
        token: options.token.as_deref().map(Arc::from),
        timeout: options.request_timeout,
        body_limit: options.body_limit_bytes,
        metrics: state.metrics.clone(),
    });
    let app = app
        .layer(middleware::from_fn(note_route))
        .layer(DefaultBodyLimit::max(options.body_limit_bytes));
    let service = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %id,
            )
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn(move |req, next| {
            operate(policy.clone(), req, next)
        }))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            options.concurrency_limit,
        ))
        .layer(RequestBodyLimitLayer::new(options.body_limit_bytes))
        .service(app);
    Router::new().fallback_service(service)
}

/// What [`operate`] enforces and where it counts.
struct Policy {
    token: Option<Arc<str>>,
    timeout: Option<Duration>,
    body_limit: usize,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The route an answer came from (the matched path), noted by [`note_route`].
#[derive(Clone)]
struct Route(MatchedPath);

/// Notes the matched route on the answer (the router knows it; the layers outside read it).
async fn note_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// One request's checks, in order: the token, the timeout around the rest; then the answer
/// as problem+json if it is an error that is not one yet, counted under its route.
async fn operate(policy: Arc<Policy>, req: Request, next: Next) -> Response {
    let refused = authorize(policy.token.as_deref(), &req);
    let response = match refused {
        Some(refused) => refused,
        None => match policy.timeout.filter(|_| !lasts_an_execution(&req)) {
            None => next.run(req).await,
            Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request took longer than the server's request timeout ({} ms; \
                         serve.request_timeout_ms)",
                        limit.as_millis()
                    ),
                )
                .into_response(),
            },
        },
    };
    let response = if response.status().as_u16() >= 400 && !is_problem(&response) {
        as_problem(response, policy.body_limit).await
    } else {
        response
    };
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("(unmatched)", |r| r.0.as_str());
    policy
        .metrics
        .count_request(route, response.status().as_u16());
    response
}

/// Paths that serve data: guarded by the token (with every non-`GET`/`HEAD` request).
fn holds_data(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path == "/metrics" || path == "/readyz"
}

/// Bearer auth, when a token is set: `Some(401)` to refuse. An event stream also takes the
/// token as `?token=` (the browser's `EventSource` sends no headers). Open without it: `/healthz`,
/// and `GET`/`HEAD` of the dashboard's pages and assets — static files embedded in the
/// binary, the same for everyone, holding no data (the pages read everything through `/v1`,
/// sending the token they keep in `sessionStorage.toolgraph_token`). A page opened as
/// `/?token=T` stores T; a wrong `?token=` there is refused at once.
fn authorize(token: Option<&str>, req: &Request) -> Option<Response> {
    let token = token?;
    let path = req.uri().path();
    if path == "/healthz" {
        return None;
    }
    let reading =
        req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    let given = bearer(req);
    if reading && is_event_stream(path) && given.is_none() {
        // `EventSource` cannot send headers: the dashboard puts the token in the query.
        return match query_token(req.uri().query()) {
            Some(t) if same_token(&t, token) => None,
            Some(_) => Some(unauthorized("the token given is not this server's token")),
            None => Some(unauthorized(
                "this server requires a bearer token: send `Authorization: Bearer <token>` \
                 (or `?token=` on an event stream)",
            )),
        };
    }
    if reading && !holds_data(path) {
        let query_token = query_token(req.uri().query());
        let wrong = given.is_some_and(|t| !same_token(t, token))
            || query_token
                .as_deref()
                .is_some_and(|t| !same_token(t, token));
        return wrong.then(|| unauthorized("the token given is not this server's token"));
    }
    match given {
        Some(t) if same_token(t, token) => None,
        Some(_) => Some(unauthorized("the bearer token is not this server's token")),
        None => Some(unauthorized(
            "this server requires a bearer token: send `Authorization: Bearer <token>`",
        )),
    }
}

/// An execution's event stream (`/v1/executions/{id}/events`).
fn is_event_stream(path: &str) -> bool {
    path.starts_with("/v1/executions/") && path.ends_with("/events")
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `token=…` of a query string, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        Some(percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares in time that depends only on the lengths, not on where they differ.
fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut differ = u8::from(a.len() != b.len());
    for (i, byte) in b.iter().enumerate() {
        differ |= a.get(i).copied().unwrap_or(0) ^ byte;
    }
    differ == 0
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"toolgraph\""),
    );
    response
}

/// True for requests meant to last as long as an execution: event streams and requests
/// that wait for one.
fn lasts_an_execution(req: &Request) -> bool {
    let path = req.uri().path();
    path.ends_with("/events")
        || path == "/v1/tool-messages"
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair == "wait=true"))
}

/// The most of an error answer's own text kept in the problem's detail.
const DETAIL_BYTES: usize = 4096;

/// An error answer that is not problem+json yet (a 413 from the body limit, axum's
/// rejections, a 404 of no route) as a problem with its own text as the detail.
async fn as_problem(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than this server accepts ({body_limit} bytes; \
             serve.body_limit_bytes)"
        ),
        StatusCode::NOT_FOUND if text.is_empty() => "no such route".to_owned(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let mut problem = Problem::new(status, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem.extensions_mut().extend(parts.extensions);
    problem
}

fn is_problem(response: &Response<Body>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cre", "s3cret"));
        assert!(!same_token("s3cretx", "s3cret"));
        assert!(!same_token("S3cret", "s3cret"));
        assert!(!same_token("", "s3cret"));
    }

    #[test]
    fn the_query_token_is_percent_decoded() {
        assert_eq!(
            query_token(Some("a=1&token=a%2Bb%20c")).as_deref(),
            Some("a+b c")
        );
        assert_eq!(query_token(Some("token=x%")).as_deref(), Some("x%"));
        assert_eq!(query_token(Some("tokens=x")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn an_unprotected_address_is_one_outside_loopback() {
        let options = |bind: &str| ServeOptions {
            bind: bind.parse().expect("an address"),
            ..ServeOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let err = rt
            .block_on(Server::bind(options("0.0.0.0:0")))
            .map(|_| ())
            .expect_err("no token");
        assert!(
            err.to_string()
                .starts_with("refusing to listen on 0.0.0.0:0 without a token"),
            "{err}"
        );
        for loopback in ["127.0.0.1:0", "[::ffff:127.0.0.1]:0"] {
            match rt.block_on(Server::bind(options(loopback))) {
                Ok(_) => {}
                // No IPv6 here: binding may fail, but not for want of a token.
                Err(e) => assert!(!matches!(e, ServeError::Unprotected { .. }), "{e}"),
            }
        }
    }
}
