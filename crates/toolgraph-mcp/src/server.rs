//! [`McpServer`]: one connected MCP server — its session, the tools it listed, its stderr
//! tail, and the one restart it is allowed.
//!
//! A stdio server is a child process spawned with `command`, `args` and `env`; its stderr
//! is drained into a [`StderrTail`]. A streamable-HTTP server is a URL with an optional
//! bearer token. Calls share the one session concurrently (JSON-RPC ids tell the answers
//! apart): no lock is held across a call, only while a call picks up the current session
//! (or while the one restart runs). When a call fails because the transport closed, the
//! session is marked down and the next call starts a new one — once; after a second death
//! every call fails at once with a permanent error naming the server and its last stderr
//! lines.
//!
//! It must never panic on anything a server sends, never restart a server more than once,
//! and never put a bearer token into a message.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::{RoleClient, RunningService, ServiceError, ServiceExt};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use serde_json::Value;
use tokio::task::JoinHandle;
use toolgraph_core::ToolError;

use crate::config::McpServerConfig;
use crate::error::{McpError, StartupStage};
use crate::stderr::StderrTail;
use crate::tool::{McpTool, output_of};

/// How long `initialize` (and `tools/list`) may take before startup fails.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failed startup waits for the process to finish writing stderr.
const STDERR_SETTLE: Duration = Duration::from_secs(2);
/// Restarts after the first start.
const MAX_RESTARTS: u32 = 1;
/// Stderr lines quoted in a call's error.
const ERROR_STDERR_LINES: usize = 8;
/// HTTP requests in flight per session (the transport's own cap; the executor's
/// per-resource limit is the one operators set).
const HTTP_REQUESTS_IN_FLIGHT: usize = 64;

/// A live MCP session.
struct Session {
    service: RunningService<RoleClient, ClientConfig>,
    generation: u32,
}

/// The state of the server's connection.
enum Link {
    /// Calls go here.
    Up(Arc<Session>),
    /// The session died; the next call may restart it.
    Down { reason: String },
    /// Died after its restart (or the restart failed): final.
    Gone { reason: String },
}

struct LinkState {
    link: Link,
    restarts: u32,
    generation: u32,
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
    /// fails or takes more than a minute, or an override names a tool the server lacks.
    pub async fn connect(config: &McpServerConfig) -> Result<Arc<McpServer>, McpError> {
        config.validate()?;
        let stderr = StderrTail::default();
        let target = config.target();
        let (session, pid) = open(config, &target, &stderr, 1).await?;

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
                return Err(startup(StartupStage::ListTools, e.to_string(), &stderr));
            }
            Err(_) => {
                let message = format!("no answer within {} s", STARTUP_TIMEOUT.as_secs());
                return Err(startup(StartupStage::ListTools, message, &stderr));
            }
        };
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
                restarts: 0,
                generation: 1,
            }),
            pid: AtomicU32::new(pid.unwrap_or(0)),
            tools,
        }))
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
            Err(e) => Err(self.failure(&session, e).await),
        }
    }

    /// Closes the session (a stdio child is asked to exit, then killed). Later calls fail.
    pub async fn close(&self) {
        let session = {
            let mut state = self.state.lock().await;
            let previous = std::mem::replace(
                &mut state.link,
                Link::Gone {
                    reason: "closed by its owner".into(),
                },
            );
            match previous {
                Link::Up(session) => Some(session),
                _ => None,
            }
        };
        self.pid.store(0, Ordering::Relaxed);
        if let Some(session) = session.and_then(Arc::into_inner) {
            let mut service = session.service;
            let _ = service.close_with_timeout(Duration::from_secs(5)).await;
        }
    }

    /// The session calls go to, restarting the server once if it died.
    async fn session(&self) -> Result<Arc<Session>, ToolError> {
        let mut state = self.state.lock().await;
        let reason = match &state.link {
            Link::Up(session) if !session.service.peer().is_transport_closed() => {
                return Ok(session.clone());
            }
            Link::Up(_) => "the connection closed while idle".to_owned(),
            Link::Gone { reason } => return Err(self.gone(reason)),
            Link::Down { reason } => reason.clone(),
        };
        self.pid.store(0, Ordering::Relaxed);
        if state.restarts >= MAX_RESTARTS {
            let reason = format!(
                "it died again after {} restart(s) ({reason})",
                state.restarts
            );
            let error = self.gone(&reason);
            state.link = Link::Gone { reason };
            return Err(error);
        }
        state.restarts += 1;
        state.generation += 1;
        self.stderr
            .push(b"\n--- toolgraph: restarting the server ---\n");
        match open(&self.config, &self.target, &self.stderr, state.generation).await {
            Ok((session, pid)) => {
                self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
                let session = Arc::new(session);
                state.link = Link::Up(session.clone());
                Ok(session)
            }
            Err(e) => {
                // The stderr tail is appended by `gone`; quote the failure without it.
                let failure = match &e {
                    McpError::Startup { stage, message, .. } => {
                        format!("{stage} failed: {message}")
                    }
                    other => other.to_string(),
                };
                let reason = format!("its restart failed: {failure}");
                let error = self.gone(&reason);
                state.link = Link::Gone { reason };
                Err(error)
            }
        }
    }

    /// The permanent error of a server that will not come back.
    fn gone(&self, reason: &str) -> ToolError {
        ToolError::permanent(format!(
            "MCP server {} ({}) is unavailable: {reason}{}",
            self.config.name,
            self.target,
            self.stderr_lines()
        ))
    }

    fn stderr_lines(&self) -> String {
        crate::error::stderr_section(&self.stderr.last_lines(ERROR_STDERR_LINES))
    }

    /// Turns a failed request into the call's error, marking the session down when the
    /// transport closed.
    async fn failure(&self, session: &Session, error: ServiceError) -> ToolError {
        let name = &self.config.name;
        let closed = matches!(error, ServiceError::TransportClosed)
            || (matches!(error, ServiceError::TransportSend(_))
                && session.service.peer().is_transport_closed());
        if closed {
            let restart = {
                let mut state = self.state.lock().await;
                if matches!(&state.link, Link::Up(s) if s.generation == session.generation) {
                    state.link = Link::Down {
                        reason: format!("the connection closed: {error}"),
                    };
                    self.pid.store(0, Ordering::Relaxed);
                }
                if state.restarts < MAX_RESTARTS {
                    "it will be restarted on the next call"
                } else {
                    "it was restarted once already and will not be again"
                }
            };
            // Give the process a moment to flush its last words to stderr.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return ToolError::transient(format!(
                "MCP server {name} closed the connection: {error} ({restart}){}",
                self.stderr_lines()
            ));
        }
        match &error {
            ServiceError::McpError(data) => ToolError::permanent(format!(
                "MCP server {name} refused the call: {} (code {})",
                data.message, data.code.0
            )),
            ServiceError::TransportSend(_) if error.is_authorization_required() => {
                ToolError::permanent(format!("MCP server {name}: not authorized: {error}"))
            }
            ServiceError::TransportSend(_)
            | ServiceError::Timeout { .. }
            | ServiceError::Cancelled { .. } => {
                ToolError::transient(format!("MCP server {name}: {error}"))
            }
            _ => ToolError::permanent(format!("MCP server {name}: {error}")),
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

/// Runs the MCP handshake over `transport`, within [`STARTUP_TIMEOUT`].
async fn initialize<T, E, A>(
    transport: T,
) -> Result<RunningService<RoleClient, ClientConfig>, String>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(STARTUP_TIMEOUT, client_config().serve(transport)).await {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", STARTUP_TIMEOUT.as_secs())),
    }
}

/// Starts one session: spawns the child (draining its stderr) or reaches the URL, then runs
/// `initialize`. Returns the session and the child's pid.
async fn open(
    config: &McpServerConfig,
    target: &str,
    stderr: &StderrTail,
    generation: u32,
) -> Result<(Session, Option<u32>), McpError> {
    let startup = |stage, message: String, stderr: String| McpError::Startup {
        server: config.name.clone(),
        target: target.to_owned(),
        stage,
        message,
        stderr,
    };
    let (initialized, pid) = match (&config.command, &config.url) {
        (Some(command), _) => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(&config.args).envs(&config.env);
            let spawned = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn();
            let (transport, pipe) = spawned.map_err(|e| {
                let message = format!("cannot run `{command}`: {e}");
                startup(StartupStage::Spawn, message, String::new())
            })?;
            let pid = transport.id();
            let drain: Option<JoinHandle<()>> = pipe.map(|p| stderr.drain(p));
            let initialized = initialize(transport).await;
            if initialized.is_err() {
                // The transport is gone and the child with it: let the drain reach EOF.
                if let Some(drain) = drain {
                    let _ = tokio::time::timeout(STDERR_SETTLE, drain).await;
                }
            }
            (initialized, pid)
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
            if let Some(token) = &config.bearer_token {
                transport_config = transport_config.auth_header(token.clone());
            }
            let transport = StreamableHttpClientTransport::with_client(client, transport_config);
            (initialize(transport).await, None)
        }
        (None, None) => {
            return Err(McpError::Config {
                server: config.name.clone(),
                message: "set `command` (stdio) or `url` (streamable HTTP)".into(),
            });
        }
    };
    match initialized {
        Ok(service) => Ok((
            Session {
                service,
                generation,
            },
            pid,
        )),
        Err(message) => Err(startup(StartupStage::Initialize, message, stderr.text())),
    }
}
