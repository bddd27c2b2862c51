//! What the tests share: the scripted model server (the crate's `mock` module, with the
//! tests' key, model name and timeouts) and an executor with a few scripted tools.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolgraph_core::{FnTool, ParallelExecutorConfig, ToolError, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_llm::mock::MockServer;
#[allow(unused_imports)]
pub use toolgraph_llm::mock::{Reply, anthropic_calls, anthropic_text, openai_calls, openai_text};
use toolgraph_llm::{LlmClient, LlmConfig, Provider, ToolOrchestrator};

/// The mock server, answering `replies` in order.
pub struct ScriptedServer(MockServer);

impl std::ops::Deref for ScriptedServer {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.0
    }
}

impl ScriptedServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        ScriptedServer(
            MockServer::start(replies)
                .await
                .expect("bind a loopback port"),
        )
    }

    pub fn config(&self, provider: Provider, stream: bool) -> LlmConfig {
        LlmConfig {
            api_key: Some("test-key".into()),
            model: "scripted".into(),
            timeout_ms: 10_000,
            max_retries: 3,
            max_tokens: 512,
            ..self.0.config(provider, stream)
        }
    }

    pub fn client(&self, provider: Provider, stream: bool) -> LlmClient {
        LlmClient::new(self.config(provider, stream)).expect("client")
    }
}

// ---- tools ----

/// Start instants of every `read` call, for ordering assertions.
pub type Starts = Arc<Mutex<Vec<(String, Instant)>>>;

/// `add` (a+b), `fail` (always errors), `upper` (text upper-cased), `read` (idempotent,
/// sleeps `ms`, records its start), `fs.read_file` (a dotted name).
pub fn executor() -> (Arc<ParallelExecutor>, Starts) {
    let starts: Starts = Arc::new(Mutex::new(Vec::new()));
    let mut tools = ToolSet::new();
    tools
        .register(FnTool::new(
            ToolSpec::new("add")
                .description("Adds a and b.")
                .parameters(json!({
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]
                })),
            |args: Value, _ctx| async move {
                Ok(json!(
                    args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)
                ))
            },
        ))
        .expect("add");
    tools
        .register_fn("fail", |_args, _ctx| async move {
            Err(ToolError::permanent("disk on fire"))
        })
        .expect("fail");
    tools
        .register_fn("upper", |args, _ctx| async move {
            Ok(json!(
                args["text"].as_str().unwrap_or_default().to_uppercase()
            ))
        })
        .expect("upper");
    let s = starts.clone();
    tools
        .register(FnTool::new(
            ToolSpec::new("read")
                .description("Reads a key.")
                .idempotent(),
            move |args: Value, _ctx| {
                let s = s.clone();
                async move {
                    let key = args["key"].as_str().unwrap_or_default().to_owned();
                    s.lock().expect("lock").push((key.clone(), Instant::now()));
                    let ms = args["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(json!(format!("value of {key}")))
                }
            },
        ))
        .expect("read");
    tools
        .register_fn("fs.read_file", |args, _ctx| async move {
            Ok(json!(format!(
                "contents of {}",
                args["path"].as_str().unwrap_or("?")
            )))
        })
        .expect("fs.read_file");
    let executor =
        ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("executor");
    (Arc::new(executor), starts)
}

pub fn orchestrator(
    server: &ScriptedServer,
    provider: Provider,
    stream: bool,
) -> (ToolOrchestrator, Starts) {
    let (executor, starts) = executor();
    (
        ToolOrchestrator::new(server.client(provider, stream), executor),
        starts,
    )
}
