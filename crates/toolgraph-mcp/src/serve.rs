//! toolgraph as an MCP *server*: any MCP client (Claude Desktop, Cursor, an Agents SDK
//! program) lists toolgraph's tools, calls them, and runs whole batches through
//! [`RUN_BATCH`] — over stdio ([`serve_stdio`]) or streamable HTTP ([`HttpServer`]).
//!
//! This module speaks the protocol only. What the tools are and how a call or a batch runs
//! is a [`ToolHost`]'s business (the runtime's, implemented in the `toolgraph` facade):
//! the host lists tools with their annotation hints, runs one call, and runs a batch given
//! in any shape `toolgraph run` accepts. The host answers in [`HostAnswer`]s (a text for
//! people and models, an optional structured value, and whether it is an error), which
//! become `CallToolResult`s here. A failure of a tool or a rejected batch is an error
//! *result* (`isError: true`) the client shows, never a JSON-RPC error.
//!
//! Every request's cancellation (the client's `notifications/cancelled`, the end of the
//! session, the server's shutdown) reaches the host as a `CancellationToken`.
//! Invariant: nothing here writes to standard output but the stdio transport itself.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::classify::Hints;

/// The name of the tool that runs a whole batch as one graph.
pub const RUN_BATCH: &str = "run_batch";

/// The path the streamable-HTTP endpoint answers on.
pub const HTTP_PATH: &str = "/mcp";

/// How long a stopping HTTP server waits for the calls it cancelled to answer before it
/// closes the sessions.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One tool the host offers, as MCP clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedTool {
    /// Its name (what `tools/call` names).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON schema of its arguments (an object schema).
    pub input_schema: Value,
    /// Its annotation hints (each `None` when unknown: clients then assume the worst).
    pub hints: Hints,
}

/// A host's answer to one `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostAnswer {
    /// What a person or a model reads.
    pub text: String,
    /// The same, for programs (`structuredContent`; an object), when there is such a form.
    pub structured: Option<Value>,
    /// True when the call failed or the batch was rejected (`isError`).
    pub is_error: bool,
}

impl HostAnswer {
    /// A failure the client shows: `text` says what went wrong.
    pub fn error(text: impl Into<String>) -> HostAnswer {
        HostAnswer {
            text: text.into(),
            structured: None,
            is_error: true,
        }
    }
}

/// What an MCP server built on this module serves: the tools, one call, a batch.
///
/// The futures are `'static` (a host is cheap to clone into them) and must end soon after
/// `cancel` fires — with an answer saying what was cancelled.
pub trait ToolHost: Send + Sync + 'static {
    /// The tools, in the order clients should see them ([`RUN_BATCH`] is added in front).
    fn tools(&self) -> Vec<ServedTool>;

    /// Runs tool `name` with `arguments` (an object), as a batch of one call.
    fn call(
        &self,
        name: String,
        arguments: Value,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, HostAnswer>;

    /// Runs `tool_calls` — in any shape `toolgraph run` accepts — as one graph.
    fn run_batch(
        &self,
        tool_calls: Value,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, HostAnswer>;
}

/// The schema of [`RUN_BATCH`]'s arguments.
pub fn run_batch_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "tool_calls": {
                "description": "The calls to run as one graph: a list of tool calls in any shape \
                    toolgraph accepts — OpenAI tool_calls ({id, type: \"function\", function: \
                    {name, arguments}}), Anthropic tool_use blocks ({type: \"tool_use\", id, name, \
                    input}) or the native {id, name, arguments} — optionally with depends_on: [ids] \
                    and \"${id}\" / \"${id.path}\" references to earlier calls' outputs inside \
                    arguments. A whole request or message object holding them works too.",
                "type": ["array", "object"],
                "items": {"type": "object"}
            }
        },
        "required": ["tool_calls"]
    })
}

/// What [`RUN_BATCH`] says it does.
const RUN_BATCH_DESCRIPTION: &str = "Run many tool calls as one dependency graph: calls that \
    do not depend on each other run in parallel (within toolgraph's limits), calls that \
    reference another's output (\"${id}\") or list it in depends_on wait for it. Answers every \
    call's result in call order, with its status, and the execution's figures (makespan, \
    sequential time, speedup, execution id).";

/// The rmcp handler over a [`ToolHost`]: one per session (cheap to clone).
#[derive(Clone)]
pub struct McpService {
    host: Arc<dyn ToolHost>,
    /// Ends every call of every session (the server's shutdown).
    stop: CancellationToken,
    /// The `tools/call` requests being answered, across sessions.
    in_flight: TaskTracker,
}

impl McpService {
    /// A handler serving `host`; firing `stop` cancels every call in progress.
    pub fn new(host: Arc<dyn ToolHost>, stop: CancellationToken) -> McpService {
        McpService {
            host,
            stop,
            in_flight: TaskTracker::new(),
        }
    }

    /// The tools as MCP describes them: [`RUN_BATCH`] first, then the host's (a host tool
    /// named `run_batch` is left out: the name is taken).
    pub fn tools(&self) -> Vec<Tool> {
        let run_batch = Tool::new(RUN_BATCH, RUN_BATCH_DESCRIPTION, object(run_batch_schema()))
            .with_title("Run a batch of tool calls as a graph")
            .annotate(ToolAnnotations::new().open_world(true));
        let mut tools = vec![run_batch];
        for served in self.host.tools() {
            if served.name == RUN_BATCH {
                tracing::warn!(
                    "a tool named run_batch is not served: the batch tool has that name"
                );
                continue;
            }
            let mut tool = Tool::new(served.name, served.description, object(served.input_schema));
            let hints = served.hints;
            if hints != Hints::default() {
                let mut annotations = ToolAnnotations::new();
                annotations.read_only_hint = hints.read_only;
                annotations.destructive_hint = hints.destructive;
                annotations.idempotent_hint = hints.idempotent;
                annotations.open_world_hint = hints.open_world;
                tool = tool.annotate(annotations);
            }
            tools.push(tool);
        }
        tools
    }

    async fn answer(&self, request: CallToolRequestParams, ct: CancellationToken) -> HostAnswer {
        let _in_flight = self.in_flight.token();
        // Fires at the request's own cancellation or at the server's shutdown.
        let cancel = self.stop.child_token();
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let work = if request.name == RUN_BATCH {
            match arguments.get("tool_calls") {
                Some(calls) => self.host.run_batch(calls.clone(), cancel.clone()),
                None => {
                    return HostAnswer::error(
                        "run_batch: the argument `tool_calls` is missing: give the list of tool \
                         calls to run; nothing ran.",
                    );
                }
            }
        } else {
            let known = self.host.tools().iter().any(|t| t.name == request.name);
            if !known {
                return HostAnswer::error(format!(
                    "unknown tool `{}`: tools/list names the tools this server offers",
                    request.name
                ));
            }
            self.host
                .call(request.name.to_string(), arguments, cancel.clone())
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            answer = &mut work => answer,
            () = ct.cancelled() => {
                // The host answers soon after, saying what was cancelled.
                cancel.cancel();
                work.await
            }
        }
    }
}

/// A JSON schema as rmcp's object type (a schema that is not an object becomes `{}`).
fn object(schema: Value) -> rmcp::model::JsonObject {
    match schema {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

impl From<HostAnswer> for CallToolResult {
    fn from(answer: HostAnswer) -> CallToolResult {
        let content = vec![ContentBlock::text(answer.text)];
        let mut result = if answer.is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        result.structured_content = answer.structured;
        result
    }
}

impl ServerHandler for McpService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("toolgraph", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "toolgraph runs tool calls in parallel where safe and in order where not. Call \
                 run_batch with every call you want made — with \"${id}\" references or \
                 depends_on where one needs another's result — instead of one call at a time.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let answer = self.answer(request, context.ct.clone()).await;
        Ok(CallToolResult::from(answer).into())
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The MCP handshake on standard input/output failed.
    #[error("MCP handshake on standard input/output failed: {0}")]
    Handshake(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The address is not on loopback: the endpoint has no authentication.
    #[error(
        "{0} is not a loopback address: `mcp-serve` has no authentication, so it listens on \
         127.0.0.1 or ::1 only (put a proxy that authenticates in front of it)"
    )]
    NotLoopback(SocketAddr),
    /// Serving HTTP failed.
    #[error("serving HTTP failed: {0}")]
    Http(std::io::Error),
}

/// Serves `host` on standard input and output until the client closes its end (stdin
/// EOF) or `stop` fires; every call still running then is cancelled, and answered when
/// the transport can still carry it.
pub async fn serve_stdio(
    host: Arc<dyn ToolHost>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let service = McpService::new(host, stop.clone());
    let running = match service
        .serve_with_ct(rmcp::transport::stdio_pipes(), stop.child_token())
        .await
    {
        Ok(running) => running,
        // Stopped before a client said hello: nothing to report.
        Err(_) if stop.is_cancelled() => return Ok(()),
        Err(e) => return Err(ServeError::Handshake(e.to_string())),
    };
    let reason = running.waiting().await;
    tracing::info!(?reason, "MCP session on standard input/output ended");
    // The client went away: what still runs is cancelled.
    stop.cancel();
    Ok(())
}

/// A streamable-HTTP MCP endpoint at `http://ADDR/mcp`, bound and ready to serve.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free one). Only 127.0.0.1 and ::1 are accepted (an
    /// IPv4-mapped `::ffff:127.0.0.1` binds 127.0.0.1): the endpoint has no authentication,
    /// and rmcp answers only requests whose `Host` is `localhost`, 127.0.0.1 or ::1 (no DNS
    /// rebinding), so another loopback address could not be served.
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, ServeError> {
        let ip = addr.ip().to_canonical();
        let served = ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST;
        if !served {
            return Err(ServeError::NotLoopback(addr));
        }
        let addr = SocketAddr::new(ip, addr.port());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(HttpServer { listener, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint's URL.
    pub fn url(&self) -> String {
        format!("http://{}{HTTP_PATH}", self.addr)
    }

    /// Serves `host` until `stop` fires: then the calls in progress are cancelled, their
    /// answers (saying so) given a moment to leave, every session ends and the listener
    /// closes.
    pub async fn run(
        self,
        host: Arc<dyn ToolHost>,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let handler = McpService::new(host, stop.clone());
        let in_flight = handler.in_flight.clone();
        let sessions = CancellationToken::new();
        let service: StreamableHttpService<McpService, LocalSessionManager> =
            StreamableHttpService::new(
                move || Ok(handler.clone()),
                Default::default(),
                StreamableHttpServerConfig::default().with_cancellation_token(sessions.clone()),
            );
        let router = axum::Router::new().nest_service(HTTP_PATH, service);
        let shutdown = async move {
            stop.cancelled().await;
            in_flight.close();
            let _ = tokio::time::timeout(ANSWER_WAIT, in_flight.wait()).await;
            // Let the last answers reach their streams before those close.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            sessions.cancel();
        };
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Http)
    }
}
