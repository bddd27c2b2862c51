//! [`McpServer`]: one connected MCP server — its session, the tools it listed, its stderr
//! tail, and its restarts.
//!
//! A stdio server is a child process spawned with `command`, `args` and `env`, in a process
//! group of its own ([`ServerProcess`]: nothing it starts outlives it); its stderr is drained
//! into a [`StderrTail`] and its stdout read through a [`FrameReader`], which turns an answer
//! over `max_frame_bytes` into an error for that call and reports garbage during the
//! handshake. A streamable-HTTP server is a URL with an optional bearer token. Calls share the
//! one session concurrently (JSON-RPC ids tell the answers apart): no lock is held across a
//! call, only while a call picks up the current session (or while a restart runs). When a
//! call fails because the transport closed, the session is marked down and the next call
//! starts a new one, as the server's [`RestartPolicy`](crate::RestartPolicy) allows
//! ([`Restarts`]): failed restarts back off, and a server that keeps dying trips a circuit
//! breaker — calls fail at once, naming the server and its last stderr lines, until the
//! cool-down has passed.
//!
//! It must never panic on anything a server sends, never restart a server against its
//! policy, and never put a bearer token into a message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::{RoleClient, RunningService, ServiceError, ServiceExt};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use toolgraph_core::ToolError;

use crate::config::McpServerConfig;
use crate::error::{McpError, StartupStage};
use crate::frame::{FRAME_TOO_LARGE, FrameReader};
use crate::process::ServerProcess;
use crate::restart::{Decision, Restarts};
use crate::stderr::StderrTail;
use crate::tool::{McpTool, output_of};

/// How long `initialize` (and `tools/list`) may take before startup fails.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a handshake still waits for a valid answer after the server wrote a line that
/// is not JSON-RPC (a banner before the answer is tolerated; garbage instead of it is not).
const GARBAGE_GRACE: Duration = Duration::from_secs(2);
/// How long a failed startup lets an exiting process finish before its group is killed.
const EXIT_SETTLE: Duration = Duration::from_millis(200);
/// How long a failed startup waits for the process to finish writing stderr.
const STDERR_SETTLE: Duration = Duration::from_secs(2);
/// Stderr lines quoted in a call's error.
const ERROR_STDERR_LINES: usize = 8;
/// HTTP requests in flight per session (the transport's own cap; the executor's
/// per-resource limit is the one operators set).
const HTTP_REQUESTS_IN_FLIGHT: usize = 64;

/// A live MCP session.
struct Session {
    service: RunningService<RoleClient, ClientConfig>,
    generation: u32,
    /// The child of a stdio server (None for HTTP); dropping it kills its process group.
    process: Option<ServerProcess>,
}

impl Session {
    fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::id)
    }

    /// The transport closed, or the stdio server's process exited.
    fn is_dead(&self) -> bool {
        self.service.peer().is_transport_closed()
            || self.process.as_ref().is_some_and(ServerProcess::has_exited)
    }
}

/// The state of the server's connection.
enum Link {
    /// Calls go here.
    Up(Arc<Session>),
    /// The session died (or its restart failed); a call restarts it when the policy allows.
    Down { reason: String },
    /// Closed by its owner: final.
    Closed,
}

struct LinkState {
    link: Link,
    generation: u32,
    restarts: Restarts,
}

/// A connected MCP server.
pub struct McpServer {
    config: McpServerConfig,
    target: String,
    stderr: StderrTail,
    state: tokio::sync::Mutex<LinkState>,
    /// The current child's process id; 0 when none (HTTP, or down).
    pid: AtomicU32,
    tools: Vec<rmcp::model::Tool>,
    /// The version the server gave in its `initialize` answer (`serverInfo.version`).
    server_version: Option<String>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.config.name)
            .field("target", &self.target)
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl McpServer {
    /// Starts (or reaches) the server, completes the MCP handshake and lists its tools.
    ///
    /// Fails, naming the server, its command or URL and the tail of its stderr, when the
    /// configuration is invalid, the program does not spawn, `initialize` or `tools/list`
    /// fails or takes more than a minute, the server answers the handshake with something
    /// that is not JSON-RPC, or an override names a tool the server lacks.
    pub async fn connect(config: &McpServerConfig) -> Result<Arc<McpServer>, McpError> {
        config.validate()?;
        let stderr = StderrTail::default();
        let target = config.target();
        let session = open(config, &target, &stderr, 1).await?;
        let pid = session.pid();
        let server_version = session
            .service
            .peer()
            .peer_info()
            .and_then(|info| info.server_info.as_ref().map(|i| i.version.clone()))
            .filter(|v| !v.is_empty());

        let startup = |stage, message: String, stderr: &StderrTail| McpError::Startup {
            server: config.name.clone(),
            target: target.clone(),
            stage,
            message,
            stderr: stderr.text(),
        };
        let listed =
            tokio::time::timeout(STARTUP_TIMEOUT, session.service.peer().list_all_tools()).await;
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                let message = crate::rmcp_error::service(&e);
                return Err(startup(StartupStage::ListTools, message, &stderr));
            }
            Err(_) => {
                let message = format!("no answer within {} s", STARTUP_TIMEOUT.as_secs());
                return Err(startup(StartupStage::ListTools, message, &stderr));
            }
        };
        tracing::info!(
            server = %config.name,
            target = %target,
            tools = tools.len(),
            "MCP server connected; tools listed"
        );
        for name in config.tools.keys() {
            if !tools.iter().any(|t| t.name == name.as_str()) {
                let listed: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
                return Err(McpError::Config {
                    server: config.name.clone(),
                    message: format!(
                        "tools.{name}: the server has no such tool (it lists: {})",
                        listed.join(", ")
                    ),
                });
            }
        }
        Ok(Arc::new(McpServer {
            config: config.clone(),
            target,
            stderr,
            state: tokio::sync::Mutex::new(LinkState {
                link: Link::Up(Arc::new(session)),
                generation: 1,
                restarts: Restarts::new(config.restart.clone()),
            }),
            pid: AtomicU32::new(pid.unwrap_or(0)),
            tools,
            server_version,
        }))
    }

    /// The version the server named in its `initialize` answer, when it named one (part of
    /// its tools' cache keys: a new server version never answers from an old one's entries).
    pub fn server_version(&self) -> Option<&str> {
        self.server_version.as_deref()
    }

    /// The server's name (the namespace of its tools).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// Calls to this server at once, at most, as configured (see
    /// [`crate::resource_limits`]).
    pub fn max_concurrency(&self) -> Option<usize> {
        self.config.max_concurrency
    }

    /// The process id of the current child of a stdio server (None for HTTP servers).
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// The server's tool names, as it listed them.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name.as_ref()).collect()
    }

    /// The tail of the server's stderr (a few KiB, across restarts).
    pub fn stderr_tail(&self) -> String {
        self.stderr.text()
    }

    /// One [`McpTool`] per listed tool, classified, with the operator's overrides applied.
    pub fn tools(self: &Arc<Self>) -> Vec<McpTool> {
        self.tools
            .iter()
            .map(|t| McpTool::new(self.clone(), t, self.config.tools.get(t.name.as_ref())))
            .collect()
    }

    /// Calls tool `name` (the server's own name for it) with `arguments`.
    ///
    /// Dropping the future abandons the call: rmcp sends the server
    /// `notifications/cancelled` for the request.
    pub async fn call_tool(&self, name: &str, arguments: JsonObject) -> Result<Value, ToolError> {
        let session = self.session().await?;
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        match session.service.peer().call_tool(params).await {
            Ok(result) => output_of(result),
            Err(e) => Err(self.failure(&session, name, e).await),
        }
    }

    /// Closes the session (a stdio child is asked to exit, then its process group is
    /// killed). Later calls fail.
    pub async fn close(&self) {
        let session = {
            let mut state = self.state.lock().await;
            match std::mem::replace(&mut state.link, Link::Closed) {
                Link::Up(session) => Some(session),
                _ => None,
            }
        };
        self.pid.store(0, Ordering::Relaxed);
        // With calls still in flight, the last of them drops the session (and kills the
        // process group).
        if let Some(Session {
            mut service,
            process,
            ..
        }) = session.and_then(Arc::into_inner)
        {
            let _ = service.close_with_timeout(Duration::from_secs(5)).await;
            if let Some(process) = process {
                process.shutdown().await;
            }
        }
    }

    /// The session calls go to, restarting the server if it died and its policy allows.
    async fn session(&self) -> Result<Arc<Session>, ToolError> {
        let mut state = self.state.lock().await;
        let reason = match &state.link {
            Link::Up(session) if !session.is_dead() => {
                return Ok(session.clone());
            }
            Link::Up(_) => "the connection closed while idle".to_owned(),
            Link::Closed => {
                return Err(self.unavailable(
                    "it was closed by its owner",
                    "it is not restarted",
                    None,
                ));
            }
            Link::Down { reason } => reason.clone(),
        };
        // The dead session goes now (and its process group with it).
        state.link = Link::Down {
            reason: reason.clone(),
        };
        self.pid.store(0, Ordering::Relaxed);
        let now = Instant::now();
        let decision = state.restarts.decide(now);
        if decision != Decision::Restart {
            let (next, retry_after) = self.next_step(&state.restarts, &decision, now);
            return Err(self.unavailable(&reason, &next, retry_after));
        }
        state.restarts.started(now);
        state.generation += 1;
        let restart = state.restarts.total();
        self.stderr.push(
            format!("\n--- toolgraph: restarting the server (restart {restart}) ---\n").as_bytes(),
        );
        tracing::info!(server = %self.config.name, restart, reason = %reason, "restarting MCP server");
        match open(&self.config, &self.target, &self.stderr, state.generation).await {
            Ok(session) => {
                tracing::info!(server = %self.config.name, restart, "MCP server restarted");
                state.restarts.succeeded();
                self.pid
                    .store(session.pid().unwrap_or(0), Ordering::Relaxed);
                let session = Arc::new(session);
                state.link = Link::Up(session.clone());
                Ok(session)
            }
            Err(e) => {
                // The stderr tail is appended by `unavailable`; quote the failure without it.
                let failure = match &e {
                    McpError::Startup { stage, message, .. } => {
                        format!("{stage} failed: {message}")
                    }
                    other => other.to_string(),
                };
                tracing::warn!(server = %self.config.name, restart, error = %failure, "MCP server restart failed");
                let reason = format!("its restart failed: {failure}");
                state.link = Link::Down {
                    reason: reason.clone(),
                };
                let now = Instant::now();
                let decision = state.restarts.failed(now);
                let (next, retry_after) = self.next_step(&state.restarts, &decision, now);
                Err(self.unavailable(&reason, &next, retry_after))
            }
        }
    }

    /// What happens next to a server that is down, for messages, and — when a restart will
    /// be tried later — how long until then.
    fn next_step(
        &self,
        restarts: &Restarts,
        decision: &Decision,
        now: Instant,
    ) -> (String, Option<Duration>) {
        let policy = restarts.policy();
        match decision {
            Decision::Restart => ("it will be restarted on the next call".into(), None),
            Decision::Backoff { until, failures } => {
                let wait = until.saturating_duration_since(now);
                let next = format!(
                    "{failures} restart(s) in a row failed; the next is tried in {:.1} s",
                    wait.as_secs_f64()
                );
                (next, Some(wait))
            }
            Decision::Open { until } => {
                let wait = until.saturating_duration_since(now);
                let next = format!(
                    "circuit open after {} restart(s) within {:.1} s: calls fail at once for \
                     another {:.1} s, then one restart is tried",
                    policy.max_restarts,
                    policy.window().as_secs_f64(),
                    wait.as_secs_f64()
                );
                (next, None)
            }
            Decision::Never => ("restarts are off (restart.max_restarts = 0)".into(), None),
        }
    }

    /// The error of a call to a server that is down: transient with a retry hint when a
    /// restart will be tried after `retry_after`, permanent otherwise.
    fn unavailable(&self, reason: &str, next: &str, retry_after: Option<Duration>) -> ToolError {
        let message = format!(
            "MCP server {} ({}) is unavailable: {reason}; {next}{}",
            self.config.name,
            self.target,
            self.stderr_lines()
        );
        match retry_after {
            Some(wait) => ToolError::transient(message)
                .retry_after_ms(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            None => ToolError::permanent(message),
        }
    }

    fn stderr_lines(&self) -> String {
        crate::error::stderr_section(&self.stderr.last_lines(ERROR_STDERR_LINES))
    }

    /// Turns a failed request into the call's error, marking the session down when the
    /// transport closed.
    async fn failure(&self, session: &Session, tool: &str, error: ServiceError) -> ToolError {
        let name = &self.config.name;
        let why = crate::rmcp_error::service(&error);
        // Over stdio a failed send is a broken pipe to the process: the session is over,
        // even before rmcp noticed. Over HTTP it may be one failed request.
        let closed = matches!(error, ServiceError::TransportClosed)
            || (matches!(error, ServiceError::TransportSend(_))
                && (session.process.is_some() || session.is_dead()));
        if closed {
            let restart = {
                let mut state = self.state.lock().await;
                if matches!(&state.link, Link::Up(s) if s.generation == session.generation) {
                    state.link = Link::Down {
                        reason: match &error {
                            ServiceError::TransportClosed => "the connection closed".into(),
                            _ => format!("the connection closed: {why}"),
                        },
                    };
                    tracing::warn!(server = %name, error = %why, "MCP server closed the connection");
                    self.pid.store(0, Ordering::Relaxed);
                }
                let restarts = &mut state.restarts;
                let now = Instant::now();
                if restarts.policy().max_restarts == 0 {
                    "restarts are off (restart.max_restarts = 0)"
                } else if restarts.recent(now) >= restarts.policy().max_restarts as usize {
                    "it has been restarted too often: the next call opens the circuit"
                } else {
                    "it will be restarted on the next call"
                }
            };
            // Give the process a moment to flush its last words to stderr.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let detail = match &error {
                ServiceError::TransportClosed => String::new(),
                _ => format!(": {why}"),
            };
            return ToolError::transient(format!(
                "MCP server {name} closed the connection during the call to {tool}{detail} \
                 ({restart}){}",
                self.stderr_lines()
            ));
        }
        match &error {
            ServiceError::McpError(data) if data.code.0 == FRAME_TOO_LARGE => {
                ToolError::permanent(format!("MCP server {name}: {}", data.message))
            }
            ServiceError::McpError(data) => ToolError::permanent(format!(
                "MCP server {name} refused the call to {tool}: {} (code {})",
                data.message, data.code.0
            )),
            ServiceError::TransportSend(_) if error.is_authorization_required() => {
                ToolError::permanent(format!(
                    "MCP server {name}: the call to {tool} was not authorized: {why}"
                ))
            }
            ServiceError::TransportSend(_)
            | ServiceError::Timeout { .. }
            | ServiceError::Cancelled { .. } => ToolError::transient(format!(
                "MCP server {name}: the call to {tool} failed: {why}"
            )),
            _ => ToolError::permanent(format!(
                "MCP server {name}: the call to {tool} failed: {why}"
            )),
        }
    }
}

/// The client's identity in the handshake.
fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("toolgraph", env!("CARGO_PKG_VERSION")),
    )
}

/// Runs the MCP handshake over `transport`, within [`STARTUP_TIMEOUT`] — or, once
/// `garbage` reports a line that is not JSON-RPC, within [`GARBAGE_GRACE`] of it.
async fn initialize<T, E, A>(
    transport: T,
    garbage: Option<watch::Receiver<Option<String>>>,
) -> Result<RunningService<RoleClient, ClientConfig>, String>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let timed_out = || format!("no answer within {} s", STARTUP_TIMEOUT.as_secs());
    let serve = client_config().serve(transport);
    tokio::pin!(serve);
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    let garbage_seen = async move {
        let Some(mut garbage) = garbage else {
            return std::future::pending().await;
        };
        // The borrow must end before anything else is awaited.
        let seen = garbage
            .wait_for(Option::is_some)
            .await
            .map(|line| line.clone().unwrap_or_default());
        match seen {
            Ok(line) => line,
            // The reader is gone: the handshake fails on its own.
            Err(_) => std::future::pending().await,
        }
    };
    let line = tokio::select! {
        served = &mut serve => return served.map_err(|e| crate::rmcp_error::initialize(&e)),
        () = &mut deadline => return Err(timed_out()),
        line = garbage_seen => line,
    };
    tokio::select! {
        served = &mut serve => served.map_err(|e| crate::rmcp_error::initialize(&e)),
        () = &mut deadline => Err(timed_out()),
        () = tokio::time::sleep(GARBAGE_GRACE) => Err(format!(
            "the server wrote something that is not JSON-RPC to stdout instead of answering: {line:?}"
        )),
    }
}

/// Starts one session: spawns the child (draining its stderr) or reaches the URL, then runs
/// `initialize`.
async fn open(
    config: &McpServerConfig,
    target: &str,
    stderr: &StderrTail,
    generation: u32,
) -> Result<Session, McpError> {
    let startup = |stage, message: String, stderr: String| McpError::Startup {
        server: config.name.clone(),
        target: target.to_owned(),
        stage,
        message,
        stderr,
    };
    let limit = config.frame_limit();
    match (&config.command, &config.url) {
        (Some(command), _) => {
            let (process, pipes) = ServerProcess::spawn(command, &config.args, &config.env)
                .map_err(|e| {
                    let message = format!("cannot run `{command}`: {e}");
                    startup(StartupStage::Spawn, message, String::new())
                })?;
            tracing::info!(
                server = %config.name,
                command = %target,
                pid = process.id().unwrap_or(0),
                "MCP server spawned"
            );
            let drain: Option<JoinHandle<()>> = pipes.stderr.map(|p| stderr.drain(p));
            let (stdout, garbage) = FrameReader::new(pipes.stdout, limit, stderr.clone());
            // The reader passes on lines of at most `limit` bytes and a newline.
            let transport = AsyncRwTransport::new_client(stdout, pipes.stdin)
                .with_max_line_length(limit.saturating_add(1));
            match initialize(transport, Some(garbage)).await {
                Ok(service) => Ok(Session {
                    service,
                    generation,
                    process: Some(process),
                }),
                Err(message) => {
                    // Let a server that is exiting finish, then end its whole group, so the
                    // stderr drain reaches its end.
                    process.wait_exit(EXIT_SETTLE).await;
                    drop(process);
                    if let Some(drain) = drain {
                        let _ = tokio::time::timeout(STDERR_SETTLE, drain).await;
                    }
                    Err(startup(StartupStage::Initialize, message, stderr.text()))
                }
            }
        }
        (None, Some(url)) => {
            // Another provider may already be installed; either one serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| {
                    let message = format!("cannot build the HTTP client: {e}");
                    startup(StartupStage::Spawn, message, String::new())
                })?;
            let in_flight = config
                .max_concurrency
                .unwrap_or(0)
                .max(HTTP_REQUESTS_IN_FLIGHT);
            let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                .max_concurrent_requests(in_flight);
            transport_config.max_sse_event_size = limit;
            transport_config.max_json_response_size = limit;
            if let Some(token) = &config.bearer_token {
                transport_config = transport_config.auth_header(token.clone());
            }
            let transport = StreamableHttpClientTransport::with_client(client, transport_config);
            match initialize(transport, None).await {
                Ok(service) => Ok(Session {
                    service,
                    generation,
                    process: None,
                }),
                Err(message) => Err(startup(StartupStage::Initialize, message, stderr.text())),
            }
        }
        (None, None) => Err(McpError::Config {
            server: config.name.clone(),
            message: "set `command` (stdio) or `url` (streamable HTTP)".into(),
        }),
    }
}
