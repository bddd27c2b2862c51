//! [`ServerProcess`]: the child process of a stdio server, in a process group of its own, so
//! that nothing the server started outlives it.
//!
//! The server is spawned as the leader of a new process group (on Unix). A watcher task
//! reaps it when it exits and then kills (SIGKILL) whatever is left of its group — children
//! it left behind would otherwise run on, and could hold its stdout open so that the dead
//! session is never noticed. Dropping the handle kills the whole group at once, without
//! needing the runtime, so a server dropped without [`ServerProcess::shutdown`], or a
//! runtime shutting down (which drops the watcher task), leaves nothing behind either.
//!
//! The group is only ever signalled while its leader is unreaped or just after it was reaped
//! by the watcher, so its id cannot name another group. It must never signal anything but
//! its own group.

use std::collections::BTreeMap;
use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;

/// How long [`ServerProcess::shutdown`] waits for the server to exit after its stdin
/// closed, and again after SIGTERM, before it kills the group.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// The group of one server process.
#[derive(Debug)]
struct Group {
    #[cfg(unix)]
    pgid: Option<rustix::process::Pid>,
    /// The leader was reaped and the rest of the group killed: the id is no longer ours.
    done: AtomicBool,
}

/// The signals sent to a group.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

impl Group {
    fn signal(&self, signal: Signal) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            let signal = match signal {
                Signal::Term => rustix::process::Signal::TERM,
                Signal::Kill => rustix::process::Signal::KILL,
            };
            // ESRCH (nothing left in the group) is fine.
            let _ = rustix::process::kill_process_group(pgid, signal);
        }
        #[cfg(not(unix))]
        let _ = signal;
    }
}

/// Kills the group when dropped.
#[derive(Debug)]
struct KillOnDrop(Arc<Group>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(Signal::Kill);
    }
}

/// A running stdio server and its process group.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pid: Option<u32>,
    exited: watch::Receiver<bool>,
    kill: KillOnDrop,
}

/// The pipes to a freshly spawned server.
pub(crate) struct Pipes {
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: Option<ChildStderr>,
}

impl ServerProcess {
    /// Spawns `command` with `args` and `env` added to the inherited environment, as the
    /// leader of a new process group, with its stdio piped. Must run inside a tokio runtime.
    pub(crate) fn spawn(
        command: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> io::Result<(ServerProcess, Pipes)> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the server's stdio was not piped"));
        };
        let stderr = child.stderr.take();
        let pid = child.id();
        let group = Arc::new(Group {
            #[cfg(unix)]
            pgid: pid
                .and_then(|id| i32::try_from(id).ok())
                .and_then(rustix::process::Pid::from_raw),
            done: AtomicBool::new(false),
        });
        let (exit_tx, exited) = watch::channel(false);
        // The watcher's own guard kills the group if the task is dropped before the leader
        // exits (the runtime shuts down).
        let watch_guard = KillOnDrop(group.clone());
        tokio::spawn(async move {
            let guard = watch_guard;
            let _ = child.wait().await;
            // Whatever the server left running goes with it. Right after the reap, the
            // group's id is held by any member left, so it names no other group.
            guard.0.signal(Signal::Kill);
            guard.0.done.store(true, Ordering::Release);
            let _ = exit_tx.send(true);
        });
        let process = ServerProcess {
            pid,
            exited,
            kill: KillOnDrop(group),
        };
        Ok((
            process,
            Pipes {
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// The server's process id (its group's id too).
    pub(crate) fn id(&self) -> Option<u32> {
        self.pid
    }

    /// True once the server process exited.
    pub(crate) fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    /// Waits up to `limit` for the server to exit; true when it did.
    pub(crate) async fn wait_exit(&self, limit: Duration) -> bool {
        let mut exited = self.exited.clone();
        // An error means the watcher is gone: the runtime is shutting down.
        let waited = tokio::time::timeout(limit, exited.wait_for(|&done| done)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Ends the server after its stdin was closed: waits for it to exit, then sends its group
    /// SIGTERM and waits again, then kills the group. Returns once the group is gone (or
    /// killed).
    pub(crate) async fn shutdown(self) {
        if !self.wait_exit(EXIT_GRACE).await {
            self.kill.0.signal(Signal::Term);
            self.wait_exit(EXIT_GRACE).await;
        }
        // Dropping `self` kills whatever is left.
    }
}
