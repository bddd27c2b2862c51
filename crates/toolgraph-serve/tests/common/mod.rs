//! A real server on 127.0.0.1:0 for the tests: a runtime with scripted tools, a store (a
//! SQLite file in a temporary directory unless a URL is given), and a reqwest client.

#![allow(dead_code)]

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use toolgraph::Runtime;
use toolgraph_core::{ParallelExecutorConfig, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Layer};
use toolgraph_serve::AppState;
use toolgraph_store::ExecutionStore;
use toolgraph_test_support::{Gate, Probe, ScriptedTool};

/// An idempotent tool whose calls wait for a permit of the `gate` semaphore (so `resume`
/// runs a call cancelled while it waited again).
struct HeldTool {
    spec: toolgraph_core::ToolSpec,
    permits: Arc<Semaphore>,
}

impl toolgraph_core::Tool for HeldTool {
    fn spec(&self) -> &toolgraph_core::ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        args: Arc<Value>,
        _ctx: toolgraph_core::CallContext,
    ) -> toolgraph_core::ToolFuture<'a> {
        Box::pin(async move {
            match self.permits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return Err(toolgraph_core::ToolError::permanent("closed")),
            }
            Ok(Arc::unwrap_or_clone(args))
        })
    }
}

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its state (registry, runtime, store).
    pub state: AppState,
    /// Concurrency and invocations of the scripted tools.
    pub probe: Arc<Probe>,
    /// The permits of the `gate` tool: each call takes one.
    pub gate: Arc<Semaphore>,
    /// The store, when it records.
    pub store: Option<Arc<dyn ExecutionStore>>,
    /// A client.
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Starts a server whose global limit is `max_parallel`, recording in a fresh SQLite file.
pub async fn start(max_parallel: usize) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toolgraph_store::sqlite_url(&dir.path().join("store.db"));
    start_with(max_parallel, Some(&url), dir).await
}

/// Starts a server recording in the store at `url` (none: unrecorded).
pub async fn start_with(max_parallel: usize, url: Option<&str>, dir: tempfile::TempDir) -> Server {
    let store = match url {
        Some(url) => Some(toolgraph_store::open(url).await.expect("store")),
        None => None,
    };
    start_with_store(max_parallel, store, dir).await
}

/// Plays a remote-dispatch layer: a call whose arguments name a `worker` reports it
/// through its meter, as a layer that ran the call in that worker would.
pub struct ReportsWorker;
struct ReportsWorkerService(Arc<dyn CallService>);

impl Layer for ReportsWorker {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(ReportsWorkerService(inner))
    }
}

impl CallService for ReportsWorkerService {
    fn call(&self, request: CallRequest) -> CallFuture {
        if let Some(worker) = request.args.get("worker").and_then(Value::as_str) {
            request.meter.set_worker(worker);
        }
        self.0.call(request)
    }
}

/// Starts a server recording in `store` (none: unrecorded).
pub async fn start_with_store(
    max_parallel: usize,
    store: Option<Arc<dyn ExecutionStore>>,
    dir: tempfile::TempDir,
) -> Server {
    start_with_layers(max_parallel, store, dir, Vec::new()).await
}

/// Starts a server recording in `store`, its executor with `layers` added.
pub async fn start_with_layers(
    max_parallel: usize,
    store: Option<Arc<dyn ExecutionStore>>,
    dir: tempfile::TempDir,
    layers: Vec<Arc<dyn Layer>>,
) -> Server {
    start_asking(max_parallel, store, dir, layers, None).await
}

/// [`start_with_layers`] whose runtime asks or refuses calls under `policy` (its questions
/// wait at `/v1/approvals`).
pub async fn start_asking(
    max_parallel: usize,
    store: Option<Arc<dyn ExecutionStore>>,
    dir: tempfile::TempDir,
    layers: Vec<Arc<dyn Layer>>,
    policy: Option<toolgraph_core::ApprovalPolicy>,
) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let probe = Probe::new();
    let mut tools = ToolSet::new();
    tools
        .register(ScriptedTool::new("work", &probe))
        .expect("work");
    let (gate, permits) = Gate::new("gate", &probe);
    tools.register(gate).expect("gate");
    tools
        .register(HeldTool {
            spec: {
                let mut spec = toolgraph_core::ToolSpec::new("held");
                spec.traits.idempotent = true;
                spec
            },
            permits: permits.clone(),
        })
        .expect("held");
    tools
        .register_fn("echo", |args, _ctx| async move { Ok(args) })
        .expect("echo");
    let config = ParallelExecutorConfig {
        max_parallel_calls: max_parallel,
        ..ParallelExecutorConfig::default()
    };
    let mut executor = ParallelExecutor::new(tools, config).expect("executor");
    for layer in layers {
        executor = executor.layer(layer);
    }
    let runtime = Runtime::new(executor, store.clone());
    let mut state = AppState::new(runtime);
    if let Some(policy) = policy {
        state = state.with_approvals(policy);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = toolgraph_serve::app(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        state,
        probe,
        gate: permits,
        store,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Server {
    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`: status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST `body` to `path`: status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_text(path, &body.to_string()).await
    }

    /// POST raw `body` to `path`: status and JSON body.
    pub async fn post_text(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// DELETE `path`: status and JSON body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The SSE stream of execution `id` to its end (after `last_event_id` when given), as
    /// `(id, event, data)` triples.
    pub async fn events(&self, id: &str, last_event_id: Option<u64>) -> Vec<(u64, String, Value)> {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/executions/{id}/events")));
        if let Some(n) = last_event_id {
            request = request.header("last-event-id", n.to_string());
        }
        let r = request.send().await.expect("events");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        parse_sse(&r.text().await.expect("stream"))
    }

    /// Waits until `n` calls of the scripted tools are running.
    pub async fn until_live(&self, n: usize) {
        for _ in 0..2000 {
            if self.probe.live() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("{n} calls never ran at once (live: {})", self.probe.live());
    }
}

/// `(id, event, data)` of each event of an SSE text (comments and keep-alives skipped).
pub fn parse_sse(text: &str) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if let (Some(id), Some(event)) = (id, event) {
            out.push((id, event, serde_json::from_str(&data).expect("JSON data")));
        }
    }
    out
}

/// A call of the scripted tool.
pub fn work(id: &str, args: Value) -> Value {
    json!({"id": id, "name": "work", "arguments": args})
}
