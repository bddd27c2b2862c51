//! `shell`: runs one allow-listed program, without a shell, inside the file root.
//!
//! Off unless enabled in configuration. The command line is split like a POSIX shell would
//! (quotes, escapes) but never interpreted: no pipes, globs, variables or redirections.
//! The program must be on the allow-list. The tool is exclusive by default (its effects are
//! unknown, so it runs alone, ordered as emitted). Dropping the call kills the process.

use std::process::Stdio;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use toolgraph_core::{CallContext, Tool, ToolError, ToolFuture, ToolSpec};

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
}

/// The `shell` tool.
pub struct Shell {
    spec: ToolSpec,
    allow: Vec<String>,
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
            cap,
            sandbox,
        })
    }
}

/// Reads everything from `reader`, keeping at most `cap` bytes (the rest is drained so the
/// process never blocks on a full pipe).
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
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
            let cwd = args.get("cwd").and_then(Value::as_str).unwrap_or(".");
            let (dir, _) = self.sandbox.resolve(cwd).map_err(ToolError::permanent)?;
            let mut child = tokio::process::Command::new(program)
                .args(&argv[1..])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| ToolError::permanent(format!("cannot start {program}: {e}")))?;
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(ToolError::permanent("no pipes to the process"));
            };
            let ((stdout, out_cut), (stderr, err_cut), status) = tokio::join!(
                read_capped(out, self.cap),
                read_capped(err, self.cap),
                child.wait()
            );
            let status =
                status.map_err(|e| ToolError::transient(format!("waiting for {program}: {e}")))?;
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
