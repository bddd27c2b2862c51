//! A stdio server's own children never outlive it: each server runs in a process group of
//! its own, killed when the server is closed, when its handle is dropped, and when its
//! process dies (before it is restarted).
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use toolgraph_mcp::{McpServer, McpServerConfig};

/// The everything server started by `sh`, which first leaves a `sleep` running in the
/// background and writes its pid to `pid_file`.
fn with_grandchild(name: &str, pid_file: &Path) -> Option<McpServerConfig> {
    let everything = common::server_script("mcp-server-everything")?;
    let script = format!(
        "sleep 1000 & echo $! > '{}'; exec node '{}'",
        pid_file.display(),
        everything.display()
    );
    Some(McpServerConfig {
        name: name.into(),
        command: Some("sh".into()),
        args: vec!["-c".into(), script],
        ..Default::default()
    })
}

fn read_pid(file: &Path) -> u32 {
    let text = std::fs::read_to_string(file).expect("the server's script wrote the pid");
    text.trim().parse().expect("a pid")
}

/// Whether `pid` is a live process (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Asserts that `pid` is gone within a few seconds (and kills it if not, so a failing test
/// leaks nothing).
async fn assert_gone(pid: u32, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survived = alive(pid);
    if survived {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(!survived, "the server's child {pid} outlived it ({how})");
}

fn args(message: &str) -> serde_json::Map<String, serde_json::Value> {
    json!({ "message": message })
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn pid_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sleep.pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_server_kills_the_children_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(config) = with_grandchild("ev", &pid_file(&dir)) else {
        return;
    };
    let server = McpServer::connect(&config).await.expect("starts");
    assert_eq!(
        server.call_tool("echo", args("hi")).await,
        Ok(json!("Echo: hi"))
    );
    let sleep = read_pid(&pid_file(&dir));
    assert!(alive(sleep));
    server.close().await;
    assert_gone(sleep, "closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_server_kills_the_children_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(config) = with_grandchild("ev", &pid_file(&dir)) else {
        return;
    };
    let server = McpServer::connect(&config).await.expect("starts");
    let node = server.pid().expect("a child");
    let sleep = read_pid(&pid_file(&dir));
    drop(server);
    assert_gone(sleep, "dropped").await;
    assert_gone(node, "dropped").await;
}

#[test]
fn shutting_down_the_runtime_kills_a_servers_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(config) = with_grandchild("ev", &pid_file(&dir)) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The handle is kept alive past the runtime, as an embedder holding it in a static would.
    let server = runtime
        .block_on(McpServer::connect(&config))
        .expect("starts");
    let sleep = read_pid(&pid_file(&dir));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let checker = tokio::runtime::Runtime::new().expect("runtime");
    checker.block_on(assert_gone(sleep, "runtime shut down"));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_servers_children_are_killed_before_it_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(config) = with_grandchild("ev", &pid_file(&dir)) else {
        return;
    };
    let server = McpServer::connect(&config).await.expect("starts");
    let first_sleep = read_pid(&pid_file(&dir));
    let node = server.pid().expect("a child");
    let status = tokio::process::Command::new("kill")
        .args(["-9", &node.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    // The sleep holds the server's stdout open: only killing the group ends the session.
    assert_gone(first_sleep, "its server died").await;
    let mut answer = Err(toolgraph_core::ToolError::permanent("not called"));
    for _ in 0..50 {
        answer = server.call_tool("echo", args("back")).await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, Ok(json!("Echo: back")));
    let second_sleep = read_pid(&pid_file(&dir));
    assert_ne!(first_sleep, second_sleep);
    server.close().await;
    assert_gone(second_sleep, "closed after a restart").await;
}
