//! The terminal's [`Approver`]: `chat` shows a call that needs approval — its tool, class,
//! arguments pretty-printed, and what it would touch — and reads `y` / `n` / `always` /
//! `edit` from standard input.
//!
//! One question at a time: calls that need approval at once wait for the one being asked
//! (a mutex held across the person's answer — nothing else waits on it). `always` approves
//! the tool for the rest of the session, also the questions already waiting. `edit` reads
//! new arguments as JSON on one line, asked again until they parse (the engine then checks
//! them against the tool's schema). Lines come from one reader thread of the process, so a
//! withdrawn question (Ctrl-C cancels the turn, and the engine drops the question) leaves
//! no blocked task behind that would keep the process from exiting.
//!
//! It must only be used when standard input is a terminal: without one, `chat` installs no
//! approver and the engine denies such calls saying how to allow them ([`guard`]).
//!
//! Also here, `chat`'s other safe default: no silent file root ([`no_silent_root`]).

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use toolgraph::{Config, Runtime};
use toolgraph_core::{Access, ApprovalDecision, ApprovalPolicy, ApprovalRequest, Approver};

use crate::out::errln;
use crate::progress::Progress;

/// `runtime` under `policy`, asking on the terminal when standard input is one (the
/// progress bar hides while a question is open); otherwise nothing can ask, and calls the
/// policy says to ask about are denied with a reason naming `--approval` and `[approvals]`.
pub fn guard(
    runtime: &Runtime,
    policy: ApprovalPolicy,
    progress: &Option<Arc<Progress>>,
) -> Runtime {
    if policy.is_auto() {
        return runtime.clone();
    }
    if !std::io::stdin().is_terminal() {
        return runtime.with_approvals(policy, None);
    }
    let hook: Option<PromptHook> = progress
        .clone()
        .map(|p| Arc::new(move |open: bool| p.hide_bar(open)) as PromptHook);
    runtime.with_approvals(policy, Some(Arc::new(TerminalApprover::new(hook))))
}

/// Turns the file tools (and `shell`, which runs in the file root) off unless a root was
/// given — `--root DIR` (`given`), or a `[files] root` / `TOOLGRAPH_FILES_ROOT` other than
/// the default `.` — so a chat never reads or writes the current directory unasked. Says so
/// on standard error unless `quiet`.
pub fn no_silent_root(config: &mut Config, given: bool, quiet: bool) {
    if given || config.files.root != Path::new(".") {
        return;
    }
    config.files.enabled = false;
    if !quiet {
        errln!(
            "toolgraph: no file root given: the file tools are off (give them a directory with --root DIR, or [files] root)"
        );
    }
}

/// Told when a question opens (`true`) and closes (`false`): the progress display hides
/// its bar meanwhile.
pub type PromptHook = Arc<dyn Fn(bool) + Send + Sync>;

/// Asks on the terminal.
pub struct TerminalApprover {
    state: Arc<Mutex<Asking>>,
    hook: Option<PromptHook>,
}

/// What the one question at a time owns.
struct Asking {
    /// Lines of standard input (`None`: it ended), started with the first question.
    lines: Option<mpsc::UnboundedReceiver<Option<String>>>,
    /// Tools answered `always`.
    always: HashSet<String>,
}

impl TerminalApprover {
    /// An approver reading the process's standard input; `hook` hears when a question
    /// opens and closes.
    pub fn new(hook: Option<PromptHook>) -> Self {
        TerminalApprover {
            state: Arc::new(Mutex::new(Asking {
                lines: None,
                always: HashSet::new(),
            })),
            hook,
        }
    }
}

impl Approver for TerminalApprover {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> {
        let state = self.state.clone();
        let hook = self.hook.clone();
        Box::pin(async move {
            let mut asking = state.lock().await;
            if asking.always.contains(&request.tool) {
                return ApprovalDecision::ApproveAlways;
            }
            if let Some(hook) = &hook {
                hook(true);
            }
            let _closed = OnDrop(hook);
            let decision = asking.ask(&request).await;
            if decision == ApprovalDecision::ApproveAlways {
                asking.always.insert(request.tool.clone());
            }
            decision
        })
    }
}

/// Tells the hook the question closed, also when it is withdrawn.
struct OnDrop(Option<PromptHook>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(hook) = &self.0 {
            hook(false);
        }
    }
}

impl Asking {
    async fn ask(&mut self, request: &ApprovalRequest) -> ApprovalDecision {
        show(request);
        loop {
            errln!(
                "  [y]es · [n]o · [a]lways ({} for this session) · [e]dit arguments",
                request.tool
            );
            prompt("approve? ");
            let Some(line) = self.line().await else {
                return ended();
            };
            match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return ApprovalDecision::Approve,
                "n" | "no" => return ApprovalDecision::Deny { reason: None },
                "a" | "always" => return ApprovalDecision::ApproveAlways,
                "e" | "edit" => return self.edit().await,
                other => errln!("  {other:?} is not an answer"),
            }
        }
    }

    /// New arguments, as JSON on one line: asked again until they parse as an object.
    async fn edit(&mut self) -> ApprovalDecision {
        loop {
            prompt("new arguments (JSON on one line): ");
            let Some(line) = self.line().await else {
                return ended();
            };
            match serde_json::from_str::<Value>(line.trim()) {
                Ok(arguments @ Value::Object(_)) => return ApprovalDecision::Edit { arguments },
                Ok(_) => errln!("  the arguments must be a JSON object ({{…}})"),
                Err(e) => errln!("  not JSON: {e}"),
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        let lines = self.lines.get_or_insert_with(read_stdin_lines);
        lines.recv().await.flatten()
    }
}

fn ended() -> ApprovalDecision {
    ApprovalDecision::Deny {
        reason: Some("standard input ended before an answer".into()),
    }
}

/// The call, as the person reads it.
fn show(request: &ApprovalRequest) {
    errln!(
        "\ntoolgraph: call {} wants to run {} ({})",
        request.call_id,
        request.tool,
        request.class
    );
    let pretty = serde_json::to_string_pretty(&request.arguments)
        .unwrap_or_else(|_| request.arguments.to_string());
    errln!("  arguments:");
    for line in pretty.lines() {
        errln!("    {line}");
    }
    if !request.resources.is_empty() {
        let touches: Vec<String> = request
            .resources
            .iter()
            .map(|r| {
                let how = match r.access {
                    Access::Read => "reads",
                    Access::Write => "writes",
                    Access::IntentWrite => "writes inside",
                };
                format!("{how} {}", r.key)
            })
            .collect();
        errln!("  touches: {}", touches.join(", "));
    }
}

/// Writes `text` on standard error without a newline.
fn prompt(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "  {text}");
    let _ = err.flush();
}

/// Standard input's lines, read on a thread of their own (not tokio's blocking pool, which
/// a runtime waits for on exit); `None` once it ends.
fn read_stdin_lines() -> mpsc::UnboundedReceiver<Option<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("toolgraph-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Some(line)).is_err() {
                    break;
                }
            }
            let _ = tx.send(None);
        });
    if spawned.is_err() {
        // No thread, no answers: every question reads as "input ended" (denied).
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(None);
        return rx;
    }
    rx
}
