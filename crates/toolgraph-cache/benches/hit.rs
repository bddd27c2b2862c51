//! What a cache hit costs, and what the cache saves on a repeated batch.
//!
//! `cargo bench -p toolgraph-cache --bench hit` prints:
//! 1. the time one call takes through the cache layer when it hits, against the same call
//!    without the layer (`echo`-like tool, in-process): memory backend, and Redis when
//!    `TOOLGRAPH_TEST_REDIS_URL` names one (loopback);
//! 2. a 10-call "research" batch (ten independent idempotent calls of 5–50 ms each, a
//!    scripted tool sleeping on tokio's clock) run 100 times through an executor, without
//!    and with the memory cache.
//!
//! Deterministic inputs, printed figures, no assertion on time.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use toolgraph_cache::{CacheBackend, CacheLayer, CachePolicy, MemoryBackend, RedisBackend};
use toolgraph_core::{ParallelExecutorConfig, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::ParallelExecutor;
use toolgraph_engine::layer::{CallRequest, CallService, Invoke, Layer};
use toolgraph_test_support::{Probe, ScriptedTool};

fn tool(probe: &Arc<Probe>) -> Arc<dyn toolgraph_core::Tool> {
    Arc::new(ScriptedTool::with_spec(
        ToolSpec::new("lookup").idempotent(),
        probe,
    ))
}

/// Mean time per call of `service` over `n` calls of the same arguments, in µs.
async fn per_call(
    service: &Arc<dyn CallService>,
    tool: &Arc<dyn toolgraph_core::Tool>,
    n: u32,
) -> f64 {
    let args = json!({"q": "rust async runtimes", "page": 1, "lang": "en"});
    // Warm: the first call fills the cache.
    let _ = service
        .call(CallRequest::new(tool.clone(), args.clone(), "warm"))
        .await;
    let start = Instant::now();
    for _ in 0..n {
        let r = service
            .call(CallRequest::new(tool.clone(), args.clone(), "c"))
            .await;
        std::hint::black_box(r.is_ok());
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Answers every call at once: what building and awaiting a request costs by itself.
struct Nothing;

impl CallService for Nothing {
    fn call(&self, _request: CallRequest) -> toolgraph_engine::layer::CallFuture {
        Box::pin(async { Ok(serde_json::Value::Null) })
    }
}

fn layered(backend: Arc<dyn CacheBackend>) -> Arc<dyn CallService> {
    CacheLayer::new(backend, CachePolicy::default()).layer(Arc::new(Invoke))
}

async fn hit_overhead() {
    let probe = Probe::new();
    let tool = tool(&probe);
    let bare: Arc<dyn CallService> = Arc::new(Invoke);
    let n = 200_000;
    let noop: Arc<dyn CallService> = Arc::new(Nothing);
    let nothing = per_call(&noop, &tool, n).await;
    let without = per_call(&bare, &tool, n).await;
    let memory = per_call(&layered(Arc::new(MemoryBackend::new(10_000))), &tool, n).await;
    let args = json!({"q": "rust async runtimes", "page": 1, "lang": "en"});
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(toolgraph_cache::cache_key("lookup", "", &args));
    }
    let key = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let memory_backend = MemoryBackend::new(10_000);
    let entry = toolgraph_cache::Entry::Output(Arc::new(args.clone()));
    memory_backend
        .put("k", "lookup", &entry, std::time::Duration::from_secs(3600))
        .await
        .expect("put");
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(memory_backend.get("k").await.is_ok());
    }
    let get = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("  of which: the key {key:.3} µs, a memory get {get:.3} µs");
    println!("a request answered by a no-op service (baseline): {nothing:.3} µs/call");
    println!("call without the cache (tool runs, in-process):   {without:.3} µs/call");
    println!(
        "cache hit, memory backend:                        {memory:.3} µs/call ({:.3} µs over the baseline)",
        memory - nothing
    );
    match std::env::var("TOOLGRAPH_TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("toolgraph-bench:{}:", std::process::id());
            let backend = RedisBackend::new(&url, &prefix).expect("redis URL");
            let redis = per_call(&layered(Arc::new(backend)), &tool, 10_000).await;
            println!(
                "cache hit, redis backend (loopback):              {redis:.1} µs/call ({:.1} µs over the baseline)",
                redis - nothing
            );
        }
        Err(_) => println!("cache hit, redis backend: skipped (TOOLGRAPH_TEST_REDIS_URL unset)"),
    }
}

fn research_batch() -> Vec<ToolCall> {
    (0..10u64)
        .map(|i| {
            ToolCall::new(
                format!("q{i}"),
                "lookup",
                json!({"ms": 5 + i * 5, "query": format!("topic {i}")}),
            )
        })
        .collect()
}

async fn repeated_batch() {
    for cached in [false, true] {
        let probe = Probe::new();
        let mut tools = ToolSet::new();
        tools
            .register(ScriptedTool::with_spec(
                ToolSpec::new("lookup").idempotent(),
                &probe,
            ))
            .expect("lookup");
        let mut executor =
            ParallelExecutor::new(tools, ParallelExecutorConfig::default()).expect("config");
        if cached {
            executor = executor.layer(Arc::new(CacheLayer::new(
                Arc::new(MemoryBackend::new(10_000)),
                CachePolicy::default(),
            )));
        }
        let start = Instant::now();
        let mut tool_ms = 0.0;
        for _ in 0..100 {
            let r = executor
                .execute_parallel(research_batch())
                .await
                .expect("valid");
            tool_ms += r.sequential_time_estimate_ms;
        }
        let wall = start.elapsed();
        println!(
            "10-call batch ×100, {}: {:.1} ms wall ({:.2} ms/batch), {} tool invocations, tool time {:.0} ms",
            if cached {
                "with the memory cache"
            } else {
                "without the cache    "
            },
            wall.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3 / 100.0,
            probe.invocations(),
            tool_ms
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        hit_overhead().await;
        repeated_batch().await;
    });
}
