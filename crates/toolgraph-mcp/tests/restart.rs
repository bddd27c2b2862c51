//! A stdio server killed (SIGKILL) in the middle of a batch: the calls in flight to it fail
//! with the documented transient error, the other calls of the batch finish, and the server
//! is restarted on the next call — again and again, as its restart policy allows: failed
//! restarts back off, and too many restarts within the window open the circuit until the
//! cool-down has passed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toolgraph_core::{
    CallStatus, ErrorKind, ParallelExecutorConfig, RetryPolicy, ToolCall, ToolError, ToolSet,
};
use toolgraph_mcp::{McpServer, connect_all, register};

async fn kill(pid: u32) {
    let status = tokio::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid}");
}

/// A built-in tool that kills the server's current process after `delay_ms`.
fn register_killer(set: &mut ToolSet, server: &Arc<McpServer>, delay_ms: u64) {
    let server = server.clone();
    set.register_fn("kill_server", move |_, _| {
        let server = server.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let pid = server
                .pid()
                .ok_or_else(|| ToolError::permanent("no process"))?;
            kill(pid).await;
            Ok(json!(pid))
        }
    })
    .expect("registers");
}

fn slow_calls(n: usize, seconds: u64) -> Vec<ToolCall> {
    (0..n)
        .map(|i| {
            ToolCall::new(
                format!("slow{i}"),
                "ev.trigger-long-running-operation",
                json!({"duration": seconds, "steps": seconds}),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_its_in_flight_calls_and_is_restarted_until_the_circuit_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (Some(mut ev), Some(mem)) = (
        common::everything("ev"),
        common::memory("mem", &dir.path().join("memory.jsonl")),
    ) else {
        return;
    };
    // One restart per minute: the second death opens the circuit.
    ev.restart.max_restarts = 1;
    let servers = connect_all(&[ev, mem]).await.expect("both start");
    let ev = servers[0].clone();
    let first_pid = ev.pid().expect("a child");
    let mut set = ToolSet::new();
    register(&mut set, &servers).expect("registers");
    register_killer(&mut set, &ev, 500);
    set.register_fn("local_work", |_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(json!("local done"))
    })
    .expect("registers");
    let config = ParallelExecutorConfig {
        retry: RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let executor = common::executor(set, config);

    let mut calls = slow_calls(3, 5);
    calls.push(ToolCall::new("kill", "kill_server", json!({})));
    calls.push(ToolCall::new("local", "local_work", json!({})));
    calls.push(ToolCall::new(
        "remember",
        "mem.create_entities",
        json!({"entities": [{"name": "toolgraph", "entityType": "project", "observations": ["runs MCP tools"]}]}),
    ));
    calls.push(ToolCall::new("recall", "mem.read_graph", json!({})));
    let result = common::run(&executor, calls).await;

    for i in 0..3 {
        let call = result.get(&format!("slow{i}")).expect("present");
        assert_eq!(call.status, CallStatus::Error, "{call:?}");
        let error = call.error.as_ref().expect("an error");
        assert_eq!(error.kind, ErrorKind::Transient, "{}", error.message);
        assert!(
            error
                .message
                .starts_with("MCP server ev closed the connection during the call to "),
            "{}",
            error.message
        );
        assert!(
            error
                .message
                .contains("it will be restarted on the next call")
        );
        if i == 0 {
            println!("in-flight call's error: {}", error.message);
        }
    }
    for id in ["kill", "local", "remember", "recall"] {
        let call = result.get(id).expect("present");
        assert!(call.is_ok(), "{id}: {call:?}");
    }
    let recall = result.get("recall").and_then(|c| c.output.clone());
    assert!(
        recall
            .as_ref()
            .is_some_and(|v| v.to_string().contains("toolgraph")),
        "the memory server kept working, ordered after its writer: {recall:?}"
    );

    // The next call restarts the server.
    let again = common::run(
        &executor,
        vec![ToolCall::new("echo", "ev.echo", json!({"message": "back"}))],
    )
    .await;
    let echo = again.get("echo").expect("present");
    assert_eq!(echo.output(), Some(&json!("Echo: back")), "{echo:?}");
    let second_pid = ev.pid().expect("a new child");
    assert_ne!(second_pid, first_pid);

    // A second death within the window opens the circuit.
    kill(second_pid).await;
    let mut last = None;
    for round in 0..2 {
        let r = common::run(
            &executor,
            vec![ToolCall::new(
                "echo",
                "ev.echo",
                json!({"message": "again"}),
            )],
        )
        .await;
        let call = r.get("echo").expect("present").clone();
        assert_eq!(call.status, CallStatus::Error, "round {round}: {call:?}");
        last = call.error;
    }
    let error = last.expect("an error");
    assert_eq!(error.kind, ErrorKind::Permanent, "{}", error.message);
    assert!(
        error.message.starts_with("MCP server ev (node ")
            && error
                .message
                .contains("is unavailable: the connection closed")
            && error
                .message
                .contains("circuit open after 1 restart(s) within 60.0 s: calls fail at once"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("stderr:")
            && error.message.contains("Starting default (STDIO) server"),
        "the message shows the server's last stderr lines: {}",
        error.message
    );
    println!("after the second death: {}", error.message);
    assert_eq!(ev.pid(), None);
    servers[1].close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_servers_idempotent_calls_are_retried_on_the_restarted_server() {
    let Some(ev) = common::everything("ev") else {
        return;
    };
    let servers = connect_all(&[ev]).await.expect("starts");
    let first_pid = servers[0].pid();
    let mut set = ToolSet::new();
    register(&mut set, &servers).expect("registers");
    register_killer(&mut set, &servers[0], 400);
    let executor = common::executor(set, ParallelExecutorConfig::default());
    let mut calls = slow_calls(2, 2);
    calls.push(ToolCall::new("kill", "kill_server", json!({})));
    let result = common::run(&executor, calls).await;
    assert!(result.success, "{:?}", result.errors);
    for id in ["slow0", "slow1"] {
        let call = result.get(id).expect("present");
        assert_eq!(call.attempts, 2, "failed once, then ran on the new process");
    }
    assert_ne!(servers[0].pid(), first_pid);
    servers[0].close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restarts_back_off_then_open_the_circuit_until_the_cooldown_passed() {
    let Some(everything) = common::server_script("mcp-server-everything") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Counts its starts; starts the everything server unless the marker exists, else fails
    // saying why on stderr. The first start writes the marker.
    let script = dir.path().join("once.mjs");
    std::fs::write(
        &script,
        r#"import fs from "node:fs";
import { pathToFileURL } from "node:url";
fs.appendFileSync(process.env.STARTS, "x");
if (fs.existsSync(process.env.MARKER)) {
  console.error("refusing a second start");
  process.exit(4);
}
fs.writeFileSync(process.env.MARKER, "");
await import(pathToFileURL(process.env.EVERYTHING).href);
"#,
    )
    .expect("script written");
    let marker = dir.path().join("started");
    let starts_file = dir.path().join("starts");
    let mut config = toolgraph_mcp::McpServerConfig {
        name: "once".into(),
        command: Some("node".into()),
        args: vec![script.to_string_lossy().into_owned()],
        restart: toolgraph_mcp::RestartPolicy {
            max_restarts: 2,
            window_ms: 60_000,
            cooldown_ms: 1_500,
            backoff_min_ms: 200,
            backoff_max_ms: 200,
        },
        ..Default::default()
    };
    for (key, path) in [
        ("MARKER", &marker),
        ("STARTS", &starts_file),
        ("EVERYTHING", &everything),
    ] {
        config
            .env
            .insert(key.into(), path.to_string_lossy().into_owned());
    }
    let starts = || std::fs::read_to_string(&starts_file).map_or(0, |s| s.len());
    let server = McpServer::connect(&config).await.expect("first start");
    let args = || {
        json!({"message": "hi"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        server.call_tool("echo", args()).await,
        Ok(json!("Echo: hi"))
    );
    kill(server.pid().expect("a child")).await;

    // The first call that finds it dead restarts it; the restart fails and backs off.
    let mut error = server.call_tool("echo", args()).await.expect_err("down");
    if error.message.contains("closed the connection") {
        error = server.call_tool("echo", args()).await.expect_err("down");
    }
    println!("after a failed restart: {}", error.message);
    assert!(error.is_transient(), "{}", error.message);
    assert!(
        error
            .message
            .contains("is unavailable: its restart failed: initialize failed: connection closed")
            && error
                .message
                .contains("1 restart(s) in a row failed; the next is tried in 0."),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with("refusing a second start"),
        "quotes the server's stderr: {}",
        error.message
    );
    let retry_after = error.retry_after_ms.expect("a retry hint");
    assert!((200..=400).contains(&retry_after), "{retry_after}");
    assert_eq!(starts(), 2);

    // While backing off, calls fail at once without starting anything.
    let backing_off = server.call_tool("echo", args()).await.expect_err("down");
    assert!(backing_off.is_transient(), "{}", backing_off.message);
    assert_eq!(starts(), 2, "{}", backing_off.message);

    // The second failed restart within the window opens the circuit.
    tokio::time::sleep(Duration::from_millis(retry_after + 50)).await;
    let open = server.call_tool("echo", args()).await.expect_err("down");
    println!("circuit open: {}", open.message);
    assert_eq!(starts(), 3);
    assert!(!open.is_transient(), "{}", open.message);
    assert!(
        open.message.contains(
            "circuit open after 2 restart(s) within 60.0 s: calls fail at once for another 1."
        ),
        "{}",
        open.message
    );
    let started = std::time::Instant::now();
    let still_open = server.call_tool("echo", args()).await.expect_err("open");
    assert!(!still_open.is_transient(), "{}", still_open.message);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "fails at once"
    );
    assert_eq!(starts(), 3, "nothing started while the circuit is open");

    // After the cool-down one restart is tried: it works now, and the circuit closes.
    std::fs::remove_file(&marker).expect("marker removed");
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        server.call_tool("echo", args()).await,
        Ok(json!("Echo: hi"))
    );
    assert_eq!(starts(), 4);
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_again_and_again_is_restarted_each_time() {
    let Some(config) = common::everything("ev") else {
        return;
    };
    let server = McpServer::connect(&config).await.expect("starts");
    let args = || {
        json!({"message": "hi"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let mut pids = vec![server.pid().expect("a child")];
    for round in 0..3 {
        kill(server.pid().expect("a child")).await;
        // The first call after a death may still see the old session close.
        let mut answer = server.call_tool("echo", args()).await;
        if answer.is_err() {
            answer = server.call_tool("echo", args()).await;
        }
        assert_eq!(answer, Ok(json!("Echo: hi")), "round {round}");
        let pid = server.pid().expect("a new child");
        assert!(!pids.contains(&pid), "round {round}: a new process");
        pids.push(pid);
    }
    server.close().await;
}
