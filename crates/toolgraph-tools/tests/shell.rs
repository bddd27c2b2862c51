//! The `shell` tool never leaves processes behind: a program's background children (its
//! whole process group) are killed when the call times out, is cancelled, is dropped, when
//! the runtime running it shuts down, and when the program exits on its own.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolgraph_core::{CallContext, CallStatus, ParallelExecutorConfig, ToolCall, ToolSet};
use toolgraph_engine::ParallelExecutor;
use toolgraph_tools::fs::Sandbox;
use toolgraph_tools::shell::{Shell, ShellConfig};

/// Starts a grandchild that would outlive its parent, writes its pid to `pid`, then waits.
const SPAWNS_GRANDCHILD: &str = "sh -c 'sleep 313 & echo $! > pid; wait'";

struct Rig {
    dir: tempfile::TempDir,
    tools: ToolSet,
}

impl Rig {
    fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Arc::new(Sandbox::new(dir.path()).expect("sandbox"));
    let config = ShellConfig {
        enabled: true,
        allow: vec!["sh".into()],
        max_output_bytes: 0,
        confine_args: false,
    };
    let mut tools = ToolSet::new();
    tools
        .register(Shell::new(&config, sandbox).expect("enabled"))
        .expect("shell");
    toolgraph_tools::register_builtins(&mut tools).expect("builtins");
    Rig { dir, tools }
}

fn shell_call(
    rig: &Rig,
    command: &str,
) -> impl std::future::Future<Output = Result<Value, String>> + use<> {
    let tool = rig.tools.get("shell").expect("registered").tool.clone();
    let args = Arc::new(json!({ "command": command }));
    async move {
        tool.call(args, CallContext::detached("s"))
            .await
            .map_err(|e| e.message)
    }
}

/// The pid the command wrote to `pid` in the root, once it is there.
async fn grandchild_pid(root: &Path) -> u32 {
    let file: PathBuf = root.join("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the command never wrote its pid");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live process (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits (a little) for `pid` to be gone; true when it is.
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Kills `pid` if a test left it running, so a failing test does not leak it either.
fn cleanup(pid: u32) {
    if alive(pid) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

fn assert_gone(pid: u32, how: &str) {
    let gone = gone_soon(pid);
    cleanup(pid);
    assert!(gone, "the grandchild {pid} outlived the call ({how})");
}

#[tokio::test]
async fn a_timed_out_shell_call_kills_its_background_grandchild() {
    let rig = rig();
    let executor = ParallelExecutor::new(rig.tools.clone(), ParallelExecutorConfig::default())
        .expect("valid config");
    let started = Instant::now();
    let result = executor
        .execute_parallel(vec![
            ToolCall::new("sh", "shell", json!({ "command": SPAWNS_GRANDCHILD })).timeout_ms(500),
        ])
        .await
        .expect("valid batch");
    assert_eq!(
        result.get("sh").map(|c| c.status),
        Some(CallStatus::Timeout)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_gone(grandchild_pid(rig.root()).await, "timeout");
}

#[tokio::test]
async fn a_shell_call_cancelled_by_fail_fast_kills_its_background_grandchild() {
    let rig = rig();
    let config = ParallelExecutorConfig {
        fail_fast: true,
        // Lets the exclusive shell call run beside the failing one.
        validate_thread_safety: false,
        ..Default::default()
    };
    let executor = ParallelExecutor::new(rig.tools.clone(), config).expect("valid config");
    let result = executor
        .execute_parallel(vec![
            ToolCall::new("sh", "shell", json!({ "command": SPAWNS_GRANDCHILD })),
            ToolCall::new("boom", "fail", json!({ "after_ms": 500 })),
        ])
        .await
        .expect("valid batch");
    assert_eq!(
        result.get("sh").map(|c| c.status),
        Some(CallStatus::Cancelled)
    );
    assert_gone(grandchild_pid(rig.root()).await, "fail-fast cancellation");
}

#[tokio::test]
async fn dropping_a_shell_call_kills_its_background_grandchild() {
    let rig = rig();
    let mut call = Box::pin(shell_call(&rig, SPAWNS_GRANDCHILD));
    // Runs the call until the grandchild exists…
    let pid = tokio::select! {
        out = &mut call => panic!("the call ended by itself: {out:?}"),
        pid = grandchild_pid(rig.root()) => pid,
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(alive(pid), "the grandchild runs while the call does");
    // …then drops it.
    drop(call);
    assert_gone(grandchild_pid(rig.root()).await, "future dropped");
}

#[test]
fn shutting_down_the_runtime_kills_a_running_shell_calls_grandchild() {
    let rig = rig();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let call = shell_call(&rig, SPAWNS_GRANDCHILD);
    runtime.spawn(call);
    let pid = runtime.block_on(grandchild_pid(rig.root()));
    assert!(alive(pid));
    runtime.shutdown_timeout(Duration::from_secs(5));
    assert_gone(pid, "runtime shut down");
}

#[tokio::test]
async fn a_program_that_exits_leaving_a_background_child_returns_and_the_child_is_killed() {
    let rig = rig();
    let started = Instant::now();
    // Without the group kill the call would wait for the sleep, which holds the stdout pipe.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        shell_call(&rig, "sh -c 'sleep 313 & echo $! > pid; echo started'"),
    )
    .await;
    let pid = grandchild_pid(rig.root()).await;
    let out = match out {
        Ok(out) => out,
        Err(_) => {
            cleanup(pid);
            panic!("the call waited for the program's background child");
        }
    };
    assert_eq!(out.map(|o| o["stdout"].clone()), Ok(json!("started\n")));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_gone(pid, "program exited");
}

#[tokio::test]
async fn confine_args_refuses_paths_outside_the_root_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inside.txt"), "in").expect("write");
    let sandbox = Arc::new(Sandbox::new(dir.path()).expect("sandbox"));
    let shell = |confine_args| {
        let config = ShellConfig {
            enabled: true,
            allow: vec!["cat".into()],
            max_output_bytes: 0,
            confine_args,
        };
        Shell::new(&config, sandbox.clone()).expect("enabled")
    };
    let run = |tool: Shell, command: &'static str| async move {
        use toolgraph_core::Tool;
        tool.call(
            Arc::new(json!({ "command": command })),
            CallContext::detached("s"),
        )
        .await
        .map_err(|e| e.message)
    };
    // Without it, an argument reaches any file the process may read.
    assert!(run(shell(false), "cat /etc/hostname").await.is_ok());
    for command in [
        "cat /etc/hostname",
        "cat ../outside",
        "cat sub/../../outside",
        "cat --file=/etc/hostname",
        "cat ~/secret",
    ] {
        let err = run(shell(true), command).await.expect_err(command);
        assert!(err.contains("confine_args"), "{command}: {err}");
    }
    let out = run(shell(true), "cat inside.txt").await.expect("inside");
    assert_eq!(out["stdout"], "in");
}
