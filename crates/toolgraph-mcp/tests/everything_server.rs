//! Through `@modelcontextprotocol/server-everything` over stdio: many calls share one
//! session and overlap, outputs are converted as documented, and the server's annotations
//! give the documented classes.

mod common;

use serde_json::json;
use toolgraph_core::{ParallelExecutorConfig, Tool, ToolCall, ToolSet};
use toolgraph_mcp::{McpServer, SafetyClass, connect_all, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_server_calls_share_one_session_and_overlap() {
    let Some(config) = common::everything("ev") else {
        return;
    };
    let servers = connect_all(&[config]).await.expect("the server starts");
    let pid = servers[0].pid().expect("a stdio child");
    let mut tools = ToolSet::new();
    register(&mut tools, &servers).expect("every tool registers");
    let executor = common::executor(tools, ParallelExecutorConfig::default());

    let mut calls: Vec<ToolCall> = (0..3)
        .map(|i| {
            ToolCall::new(
                format!("slow{i}"),
                "ev.trigger-long-running-operation",
                json!({"duration": 1, "steps": 2}),
            )
        })
        .collect();
    calls.extend((0..20).map(|i| {
        ToolCall::new(
            format!("echo{i}"),
            "ev.echo",
            json!({"message": format!("m{i}")}),
        )
    }));
    let result = common::run(&executor, calls).await;
    assert!(result.success, "{:?}", result.errors);

    for i in 0..20 {
        let call = result.get(&format!("echo{i}")).expect("present");
        assert_eq!(
            call.output(),
            Some(&json!(format!("Echo: m{i}"))),
            "answers must not mix"
        );
    }
    let slow: Vec<(f64, f64)> = (0..3)
        .map(|i| common::interval(&result, &format!("slow{i}")))
        .collect();
    for i in 0..3 {
        let call = result.get(&format!("slow{i}")).expect("present");
        assert_eq!(
            call.output(),
            Some(&json!(
                "Long running operation completed. Duration: 1 seconds, Steps: 2."
            ))
        );
    }
    let latest_start = slow.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let earliest_finish = slow.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_finish,
        "the three slow calls must overlap: {slow:?}"
    );
    let makespan = slow.iter().map(|s| s.1).fold(f64::MIN, f64::max)
        - slow.iter().map(|s| s.0).fold(f64::MAX, f64::min);
    let sum: f64 = slow.iter().map(|s| s.1 - s.0).sum();
    println!(
        "3 × trigger-long-running-operation (1 s) over one stdio session: makespan {makespan:.0} ms, sum of durations {sum:.0} ms (intervals {slow:?})"
    );
    assert_eq!(servers[0].pid(), Some(pid), "one process served every call");
    servers[0].close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_server_outputs_are_structured_text_or_blocks() {
    let Some(config) = common::everything("ev") else {
        return;
    };
    let server = McpServer::connect(&config)
        .await
        .expect("the server starts");
    // The reference server names its version in `initialize` (part of its tools' cache keys).
    assert!(
        server.server_version().is_some_and(|v| !v.is_empty()),
        "server version: {:?}",
        server.server_version()
    );
    let structured = server
        .call_tool(
            "get-structured-content",
            json!({"location": "Chicago"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await
        .expect("ok");
    assert!(
        structured.is_object(),
        "structured content is the output: {structured}"
    );
    let sum = server
        .call_tool(
            "get-sum",
            json!({"a": 2, "b": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .await
        .expect("ok");
    assert!(sum.as_str().is_some_and(|s| s.contains('5')), "{sum}");
    let image = server
        .call_tool("get-tiny-image", Default::default())
        .await
        .expect("ok");
    let blocks = image.as_array().expect("mixed blocks become an array");
    assert!(blocks.iter().any(|b| b["type"] == "image"), "{image}");
    println!("get-structured-content → {structured}\nget-sum → {sum}");
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_server_annotations_give_the_documented_classes() {
    let Some(config) = common::everything("ev") else {
        return;
    };
    let server = McpServer::connect(&config)
        .await
        .expect("the server starts");
    let tools = server.tools();
    println!("{:<40} {:<10} {:<5} why", "tool", "class", "retry");
    for t in &tools {
        println!(
            "{:<40} {:<10} {:<5} {}",
            t.spec().name,
            t.class().as_str(),
            t.spec().traits.idempotent,
            t.why()
        );
    }
    let find = |name: &str| {
        tools
            .iter()
            .find(|t| t.remote_name() == name)
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    let echo = find("echo");
    assert_eq!(echo.class(), SafetyClass::Reader);
    assert!(echo.spec().traits.parallel_safe && echo.spec().traits.idempotent);
    assert_eq!(
        echo.why(),
        "readOnlyHint=true; retryable: idempotentHint=true; openWorldHint=false"
    );
    assert_eq!(
        echo.traits_reason().as_deref(),
        Some("reader: readOnlyHint=true; retryable: idempotentHint=true; openWorldHint=false")
    );
    assert_eq!(echo.spec().name, "ev.echo");
    assert_eq!(
        echo.spec().parameters["properties"]["message"]["type"],
        "string"
    );

    let logging = find("toggle-simulated-logging");
    assert_eq!(logging.class(), SafetyClass::Writer);
    assert!(logging.spec().traits.parallel_safe && !logging.spec().traits.idempotent);
    assert_eq!(
        logging.resources(&json!({})),
        [toolgraph_core::ResourceAccess::write("mcpserver:ev")]
    );
    let gzip = find("gzip-file-as-resource");
    assert_eq!(gzip.class(), SafetyClass::Writer);
    assert!(gzip.spec().traits.idempotent);
    assert!(gzip.why().ends_with("openWorldHint=true"), "{}", gzip.why());
    assert_eq!(
        find("trigger-long-running-operation").resources(&json!({})),
        [toolgraph_core::ResourceAccess::read("mcpserver:ev")]
    );
    server.close().await;
}
