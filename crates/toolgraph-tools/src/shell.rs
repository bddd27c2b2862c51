//! `shell`: runs one allow-listed program, without a shell, inside the file root.
//!
//! Off unless enabled in configuration. The command line is split like a POSIX shell would
//! (quotes, escapes) but never interpreted: no pipes, globs, variables or redirections.
//! The program must be on the allow-list. The tool is exclusive by default (its effects are
//! unknown, so it runs alone, ordered as emitted).
//!
//! Each program runs in a process group of its own (on Unix), and the call never leaves a
//! process of that group behind: the whole group is killed (SIGKILL) when the program exits
//! (whatever it left running in the background), and — by a drop guard — when the call's
//! future is dropped, which is how a timeout, a cancellation and a runtime shutting down end
//! a call. A process that leaves the group on purpose (`setsid`) is beyond its reach; the
//! call then stops reading its output shortly after the program exits.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use toolgraph_core::{ApprovalClass, CallContext, Tool, ToolError, ToolFuture, ToolSpec};

use crate::fs::Sandbox;

/// Settings of the `shell` tool.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShellConfig {
    /// Register the tool at all (default: no).
    pub enabled: bool,
    /// Programs that may run, by the exact name given as the command's first word.
    pub allow: Vec<String>,
    /// Most bytes of stdout and of stderr returned (0 = 64 KiB).
    pub max_output_bytes: usize,
    /// Refuse arguments that name a path outside the root as written: absolute paths
    /// (`/etc/passwd`, `--file=/etc/passwd`) and any `..` component. It reads arguments
    /// only: a program may still reach outside through its own configuration, a symbolic
    /// link inside the root, or paths it builds itself.
    pub confine_args: bool,
}

/// The `shell` tool.
pub struct Shell {
    spec: ToolSpec,
    allow: Vec<String>,
    confine_args: bool,
    cap: usize,
    sandbox: Arc<Sandbox>,
}

impl Shell {
    /// A shell tool running in `sandbox`'s root, or `None` when configuration disables it.
    pub fn new(config: &ShellConfig, sandbox: Arc<Sandbox>) -> Option<Shell> {
        if !config.enabled {
            return None;
        }
        let spec = ToolSpec::new("shell")
            .approval_class(ApprovalClass::Shell)
            .description(format!(
                "Runs one program (allowed: {}) with arguments, without a shell, in the file root or a directory inside it.",
                if config.allow.is_empty() { "none".to_owned() } else { config.allow.join(", ") }
            ))
            .parameters(json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "Program and arguments, quoted like a shell command line."},
                    "cwd": {"type": "string", "description": "Working directory relative to the file root."}
                },
                "required": ["command"],
                "additionalProperties": false
            }))
            .exclusive();
        let cap = if config.max_output_bytes == 0 {
            64 << 10
        } else {
            config.max_output_bytes
        };
        Some(Shell {
            spec,
            allow: config.allow.clone(),
            confine_args: config.confine_args,
            cap,
            sandbox,
        })
    }
}

/// True for an argument that, read as a path (or as `--flag=path`), is absolute or climbs
/// with `..`: what `confine_args` refuses.
fn leaves_the_root(arg: &str) -> bool {
    let value = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => value,
        _ => arg,
    };
    [arg, value].iter().any(|v| {
        v.starts_with('/') || v.starts_with('~') || v.split(['/', '\\']).any(|part| part == "..")
    })
}

/// How long output is still read after the program exited and its group was killed: only a
/// process that left the group can keep the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Output of one stream, capped.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    truncated: bool,
}

/// Reads everything from `reader` into `into`, keeping at most `cap` bytes (the rest is
/// drained so the process never blocks on a full pipe). What was read stays in `into` when
/// the future is dropped.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize, into: &mut Captured) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(into.kept.len());
                into.kept.extend_from_slice(&buf[..n.min(room)]);
                into.truncated |= n > room;
            }
        }
    }
}

/// The process group of one running program, killed as a whole when this is dropped.
///
/// Declared after the [`tokio::process::Child`] it belongs to, so that it drops first: the
/// group is killed while its leader is not yet reaped, when its id cannot have been reused.
struct GroupKill {
    #[cfg(unix)]
    pgid: Option<rustix::process::Pid>,
    /// The leader was reaped and the group killed: the id is no longer ours to signal.
    done: AtomicBool,
}

impl GroupKill {
    /// The group led by `child` (spawned with `process_group(0)`).
    fn of(child: &tokio::process::Child) -> GroupKill {
        #[cfg(unix)]
        {
            let pgid = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw);
            GroupKill {
                pgid,
                done: AtomicBool::new(false),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = child;
            GroupKill {
                done: AtomicBool::new(false),
            }
        }
    }

    /// Sends SIGKILL to every process of the group (none left: nothing happens).
    fn kill(&self) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            // ESRCH (the group is empty) is the usual answer once everything exited.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }

    /// Kills what is left of the group right after its leader was reaped — a member left
    /// holds the group's id, so it names no other group; with none left the kill finds
    /// nothing — and never signals it again.
    fn kill_after_exit(&self) {
        self.kill();
        self.done.store(true, Ordering::Release);
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Tool for Shell {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(&'a self, args: Arc<Value>, _ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            let command = args
                .get("command")
                .and_then(Value::as_str)
                .ok_or_else(|| ToolError::permanent("missing \"command\""))?;
            let argv = shlex::split(command)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    ToolError::permanent(format!(
                        "cannot split command {command:?} (empty or unbalanced quotes)"
                    ))
                })?;
            let program = &argv[0];
            if !self.allow.iter().any(|p| p == program) {
                return Err(ToolError::permanent(format!(
                    "program {program:?} is not on the shell allow-list ({})",
                    if self.allow.is_empty() {
                        "empty".to_owned()
                    } else {
                        self.allow.join(", ")
                    }
                )));
            }
            if self.confine_args
                && let Some(arg) = argv[1..].iter().find(|a| leaves_the_root(a))
            {
                return Err(ToolError::permanent(format!(
                    "argument {arg:?} names a path outside the file root (absolute or \
                         with \"..\"), refused by [shell] confine_args"
                )));
            }
            let cwd = args.get("cwd").and_then(Value::as_str).unwrap_or(".");
            let (dir, _) = self.sandbox.resolve(cwd).map_err(ToolError::permanent)?;
            let mut command = tokio::process::Command::new(program);
            command
                .args(&argv[1..])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            #[cfg(unix)]
            command.process_group(0);
            let mut child = command
                .spawn()
                .map_err(|e| ToolError::permanent(format!("cannot start {program}: {e}")))?;
            // After `child`: dropped first (see `GroupKill`).
            let group = GroupKill::of(&child);
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(ToolError::permanent("no pipes to the process"));
            };
            let (mut stdout, mut stderr) = (Captured::default(), Captured::default());
            let exited = Notify::new();
            let waited = async {
                let status = child.wait().await;
                // Whatever the program left running in its group goes with it.
                group.kill_after_exit();
                exited.notify_one();
                status
            };
            let drained = async {
                let both = async {
                    tokio::join!(
                        read_capped(out, self.cap, &mut stdout),
                        read_capped(err, self.cap, &mut stderr)
                    )
                };
                let cut_off = async {
                    exited.notified().await;
                    tokio::time::sleep(DRAIN_AFTER_EXIT).await;
                };
                tokio::select! {
                    _ = both => {}
                    () = cut_off => {}
                }
            };
            let (status, ()) = tokio::join!(waited, drained);
            let status =
                status.map_err(|e| ToolError::transient(format!("waiting for {program}: {e}")))?;
            let (out_cut, err_cut) = (stdout.truncated, stderr.truncated);
            let (stdout, stderr) = (stdout.kept, stderr.kept);
            let stdout = String::from_utf8_lossy(&stdout).into_owned();
            let stderr = String::from_utf8_lossy(&stderr).into_owned();
            let code = status.code();
            if !status.success() {
                let head: String = stderr.chars().take(500).collect();
                let how = code.map_or_else(
                    || "was killed by a signal".to_owned(),
                    |c| format!("exited with {c}"),
                );
                return Err(ToolError::permanent(format!(
                    "{program} {how}: {}",
                    head.trim_end()
                )));
            }
            Ok(
                json!({"exit_code": code, "stdout": stdout, "stderr": stderr, "truncated": out_cut || err_cut}),
            )
        })
    }
}
