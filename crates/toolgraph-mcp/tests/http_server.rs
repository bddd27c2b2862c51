//! A small MCP server of our own (rmcp + axum) over streamable HTTP on loopback, behind a
//! bearer token: `McpServer::connect` with a `url` reaches it, its tools run through the
//! engine, a wrong token is refused at startup, and dropping a call's future sends the
//! server `notifications/cancelled`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use toolgraph_core::{ParallelExecutorConfig, Tool, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_mcp::{McpError, McpServer, McpServerConfig, SafetyClass, StartupStage, register};

const TOKEN: &str = "test-token-123";

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddRequest {
    /// The left operand.
    a: i64,
    /// The right operand.
    b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct RepeatRequest {
    /// How many bytes of text to return.
    bytes: usize,
}

/// The test's MCP server: `add` (read-only), `wait` (no hints; waits to be cancelled) and
/// `repeat` (read-only; a text as long as asked).
#[derive(Clone)]
struct Calculator {
    tool_router: ToolRouter<Self>,
    waiting: Arc<Notify>,
    cancelled: mpsc::UnboundedSender<()>,
}

#[tool_router]
impl Calculator {
    #[tool(description = "Add two integers", annotations(read_only_hint = true))]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        (a + b).to_string()
    }

    #[tool(
        description = "A text of `bytes` x's",
        annotations(read_only_hint = true)
    )]
    fn repeat(&self, Parameters(RepeatRequest { bytes }): Parameters<RepeatRequest>) -> String {
        "x".repeat(bytes)
    }

    #[tool(description = "Wait until the call is cancelled")]
    async fn wait(&self, ct: CancellationToken) -> String {
        self.waiting.notify_one();
        ct.cancelled().await;
        let _ = self.cancelled.send(());
        "cancelled".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Calculator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

async fn require_bearer(request: Request, next: Next) -> Response {
    let expected = format!("Bearer {TOKEN}");
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

struct Served {
    url: String,
    waiting: Arc<Notify>,
    cancelled: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
}

async fn serve() -> Served {
    let waiting = Arc::new(Notify::new());
    let (tx, cancelled) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let handler = Calculator {
        tool_router: Calculator::tool_router(),
        waiting: waiting.clone(),
        cancelled: tx,
    };
    let service: StreamableHttpService<Calculator, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(handler.clone()),
            Default::default(),
            StreamableHttpServerConfig::default()
                .with_sse_keep_alive(None)
                .with_cancellation_token(stop.child_token()),
        );
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn(require_bearer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await;
    });
    Served {
        url: format!("http://{addr}/mcp"),
        waiting,
        cancelled,
        stop,
    }
}

fn config(url: &str, token: &str) -> McpServerConfig {
    McpServerConfig {
        name: "calc".into(),
        url: Some(url.into()),
        bearer_token: Some(token.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_behind_a_bearer_token_serves_tools_through_the_engine() {
    let served = serve().await;
    let server = McpServer::connect(&config(&served.url, TOKEN))
        .await
        .expect("connects with the token");
    assert_eq!(server.pid(), None);
    let tools = server.tools();
    let add = tools
        .iter()
        .find(|t| t.remote_name() == "add")
        .expect("listed");
    assert_eq!(add.class(), SafetyClass::Reader);
    assert_eq!(add.spec().description, "Add two integers");
    assert_eq!(add.spec().parameters["required"], json!(["a", "b"]));
    let wait = tools
        .iter()
        .find(|t| t.remote_name() == "wait")
        .expect("listed");
    assert_eq!(wait.class(), SafetyClass::Exclusive);
    assert_eq!(wait.why(), "no hints: conservative");

    let mut set = ToolSet::new();
    register(&mut set, std::slice::from_ref(&server)).expect("registers");
    let executor = ParallelExecutor::new(set, ParallelExecutorConfig::default()).expect("config");
    let calls: Vec<ToolCall> = (0..10)
        .map(|i| ToolCall::new(format!("add{i}"), "calc.add", json!({"a": i, "b": 100})))
        .chain([ToolCall::new("alias", "add", json!({"a": 2, "b": 3}))])
        .collect();
    let result = executor.execute_parallel(calls).await.expect("valid");
    assert!(result.success, "{:?}", result.errors);
    for i in 0..10 {
        let out = result.get(&format!("add{i}")).and_then(|c| c.output());
        assert_eq!(out, Some(&json!((i + 100).to_string())));
    }
    assert_eq!(
        result.get("alias").and_then(|c| c.output()),
        Some(&json!("5"))
    );

    // The schema is checked before anything runs.
    let bad = executor
        .execute_parallel(vec![ToolCall::new("bad", "calc.add", json!({"a": "two"}))])
        .await;
    assert!(
        bad.is_err(),
        "arguments that break the server's schema are refused"
    );
    server.close().await;
    served.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_refuses_a_wrong_bearer_token_at_startup() {
    let served = serve().await;
    let e = McpServer::connect(&config(&served.url, "wrong"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, McpError::Startup { stage: StartupStage::Initialize, server, target, .. }
            if server == "calc" && *target == served.url),
        "{e:?}"
    );
    let text = e.to_string();
    println!("{text}");
    assert!(!text.contains("wrong"), "the token is never shown: {text}");
    served.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_sends_the_server_a_cancellation() {
    let mut served = serve().await;
    let server = McpServer::connect(&config(&served.url, TOKEN))
        .await
        .expect("connects");
    let tools = server.tools();
    let wait = tools
        .iter()
        .find(|t| t.remote_name() == "wait")
        .expect("listed");
    let call = wait.call(
        std::sync::Arc::new(json!({})),
        toolgraph_core::CallContext::detached("w"),
    );
    let waiting = served.waiting.clone();
    tokio::select! {
        _ = call => panic!("wait returns only when cancelled"),
        _ = waiting.notified() => {}
    }
    // `call` was dropped by select!: the server must hear of it.
    let heard = tokio::time::timeout(Duration::from_secs(10), served.cancelled.recv()).await;
    assert_eq!(
        heard,
        Ok(Some(())),
        "the server's handler saw its request cancelled"
    );

    // The session is still usable.
    let sum = server
        .call_tool(
            "add",
            json!({"a": 1, "b": 2})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await;
    assert_eq!(sum, Ok(json!("3")));
    server.close().await;
    served.stop.cancel();
}

/// Over HTTP the limit is rmcp's own: an answer over it ends the session (rmcp does not
/// say why), so the call fails at once — it does not hang — and the next call reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_answer_over_max_frame_bytes_fails_its_call_and_the_next_call_reconnects() {
    let served = serve().await;
    let mut config = config(&served.url, TOKEN);
    config.max_frame_bytes = Some(4096);
    let server = McpServer::connect(&config).await.expect("connects");
    let args = |bytes: usize| {
        json!({ "bytes": bytes })
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        server.call_tool("repeat", args(3000)).await,
        Ok(json!("x".repeat(3000))),
        "within the limit"
    );
    let call = server.call_tool("repeat", args(10_000));
    let error = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends instead of hanging")
        .expect_err("too large");
    println!("{}", error.message);
    assert!(
        error.message.starts_with("MCP server calc"),
        "{}",
        error.message
    );
    assert_eq!(
        server.call_tool("repeat", args(3)).await,
        Ok(json!("xxx")),
        "the next call reconnects"
    );
    server.close().await;
    served.stop.cancel();
}
