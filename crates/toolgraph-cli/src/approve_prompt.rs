//! The terminal's [`Approver`]: `chat` shows a call that needs approval — its tool, class,
//! arguments pretty-printed, and what it would touch — and reads `y` / `n` / `always` /
//! `edit` from standard input.
//!
//! One question at a time: calls that need approval at once wait for the one being asked
//! (a mutex held across the person's answer — nothing else waits on it). `always` approves
//! the tool for the rest of the session, also the questions already waiting. `edit` reads
//! new arguments as JSON on one line, asked again until they parse (the engine then checks
//! them against the tool's schema).
//!
//! Each answer is one line read by a line editor (`rustyline`) of its own, on a thread of
//! its own, only while a question is open: no reader stays behind to take the next line
//! meant for the conversation's prompt (`chat_repl`). A question the engine withdraws while
//! its editor reads (fail-fast, a discarded early call) cannot stop that read: the
//! conversation then waits for it before its own prompt ([`wait_for_withdrawn_question`]). The editor reads keys in
//! raw mode, so Ctrl-C at a question is a key: it denies the call and cancels the turn
//! ([`TerminalApprover::begin_turn`] says which), as Ctrl-C does elsewhere in a turn.
//!
//! It must only be used when standard input is a terminal: without one, `chat` installs no
//! approver and the engine denies such calls saying how to allow them ([`guard`]).
//!
//! Also here, `chat`'s other safe default: no silent file root ([`no_silent_root`]).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use serde_json::Value;
use tokio::sync::{Mutex, oneshot};
use toolgraph::{Config, Runtime};
use toolgraph_core::{Access, ApprovalDecision, ApprovalPolicy, ApprovalRequest, Approver};
use toolgraph_engine::CancellationToken;

use crate::out::errln;
use crate::progress::Progress;

/// `runtime` under `policy`, asking on the terminal when standard input is one (the
/// approver is answered too: tell it of each turn with [`TerminalApprover::begin_turn`]);
/// otherwise nothing can ask, and calls the policy says to ask about are denied with a
/// reason naming `--approval` and `[approvals]`.
pub fn guard(
    runtime: &Runtime,
    policy: ApprovalPolicy,
) -> (Runtime, Option<Arc<TerminalApprover>>) {
    if policy.is_auto() {
        return (runtime.clone(), None);
    }
    if !std::io::stdin().is_terminal() {
        return (runtime.with_approvals(policy, None), None);
    }
    let approver = Arc::new(TerminalApprover::new());
    (
        runtime.with_approvals(policy, Some(approver.clone())),
        Some(approver),
    )
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
    turn: std::sync::Mutex<Turn>,
}

/// What the one question at a time owns.
struct Asking {
    /// Tools answered `always`.
    always: HashSet<String>,
}

/// The running turn, as the questions need it.
#[derive(Clone, Default)]
struct Turn {
    /// Hears when a question opens and closes (the turn's progress display).
    hook: Option<PromptHook>,
    /// Cancelled by Ctrl-C at a question.
    cancel: Option<CancellationToken>,
}

impl TerminalApprover {
    /// An approver reading answers on the terminal.
    pub fn new() -> Self {
        TerminalApprover {
            state: Arc::new(Mutex::new(Asking {
                always: HashSet::new(),
            })),
            turn: std::sync::Mutex::new(Turn::default()),
        }
    }

    /// A turn begins: its progress display hides its bar while a question is open, and
    /// Ctrl-C at a question cancels it through `cancel`.
    pub fn begin_turn(&self, progress: Option<&Arc<Progress>>, cancel: CancellationToken) {
        let hook = progress
            .cloned()
            .map(|p| Arc::new(move |open: bool| p.hide_bar(open)) as PromptHook);
        let turn = Turn {
            hook,
            cancel: Some(cancel),
        };
        match self.turn.lock() {
            Ok(mut held) => *held = turn,
            Err(poisoned) => *poisoned.into_inner() = turn,
        }
    }
}

impl Default for TerminalApprover {
    fn default() -> Self {
        Self::new()
    }
}

impl Approver for TerminalApprover {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> {
        let state = self.state.clone();
        let turn = match self.turn.lock() {
            Ok(held) => held.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let hook = turn.hook.clone();
        Box::pin(async move {
            let mut asking = state.lock().await;
            if asking.always.contains(&request.tool) {
                return ApprovalDecision::ApproveAlways;
            }
            if let Some(hook) = &hook {
                hook(true);
            }
            let _closed = OnDrop(hook);
            let decision = asking.ask(&request, turn.cancel.as_ref()).await;
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
    async fn ask(
        &mut self,
        request: &ApprovalRequest,
        cancel: Option<&CancellationToken>,
    ) -> ApprovalDecision {
        show(request);
        loop {
            errln!(
                "  [y]es · [n]o · [a]lways ({} for this session) · [e]dit arguments",
                request.tool
            );
            let line = match read_line("  approve? ").await {
                Answer::Line(line) => line,
                Answer::Interrupted => return interrupted(cancel),
                Answer::Ended => return ended(),
            };
            match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return ApprovalDecision::Approve,
                "n" | "no" => return ApprovalDecision::Deny { reason: None },
                "a" | "always" => return ApprovalDecision::ApproveAlways,
                "e" | "edit" => return edit(cancel).await,
                other => errln!("  {other:?} is not an answer"),
            }
        }
    }
}

/// New arguments, as JSON on one line: asked again until they parse as an object.
async fn edit(cancel: Option<&CancellationToken>) -> ApprovalDecision {
    loop {
        let line = match read_line("  new arguments (JSON on one line): ").await {
            Answer::Line(line) => line,
            Answer::Interrupted => return interrupted(cancel),
            Answer::Ended => return ended(),
        };
        match serde_json::from_str::<Value>(line.trim()) {
            Ok(arguments @ Value::Object(_)) => return ApprovalDecision::Edit { arguments },
            Ok(_) => errln!("  the arguments must be a JSON object ({{…}})"),
            Err(e) => errln!("  not JSON: {e}"),
        }
    }
}

/// Ctrl-C at a question: the call is denied and the turn cancelled.
fn interrupted(cancel: Option<&CancellationToken>) -> ApprovalDecision {
    errln!("\ntoolgraph: cancelling this turn");
    if let Some(cancel) = cancel {
        cancel.cancel();
    }
    ApprovalDecision::Deny {
        reason: Some("the person cancelled the turn (Ctrl-C) instead of answering".into()),
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

/// What one question's line editor read.
enum Answer {
    Line(String),
    /// Ctrl-C.
    Interrupted,
    /// Ctrl-D, standard input closed, or no editor.
    Ended,
}

/// The last question's reader: disconnected once it returned.
static OPEN_READER: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
    std::sync::Mutex::new(None);

fn set_open_reader(reader: Option<std::sync::mpsc::Receiver<()>>) {
    match OPEN_READER.lock() {
        Ok(mut held) => *held = reader,
        Err(poisoned) => *poisoned.into_inner() = reader,
    }
}

/// Before the conversation reads its next line: when a question was withdrawn while its
/// editor still read the terminal (the engine cancelled the call — fail-fast, a discarded
/// early call), that editor would take the line. Says so and waits for it to return (the
/// line typed there is not an answer anymore, and is dropped).
pub fn wait_for_withdrawn_question() {
    let reader = match OPEN_READER.lock() {
        Ok(mut held) => held.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    let Some(reader) = reader else {
        return;
    };
    if matches!(
        reader.try_recv(),
        Err(std::sync::mpsc::TryRecvError::Disconnected)
    ) {
        return;
    }
    errln!("\ntoolgraph: the question above was withdrawn; press Enter to go on");
    // Returns when the editor's thread ends (its sender is dropped).
    let _ = reader.recv();
}

/// One line, read by a line editor of its own on a thread of its own (not tokio's blocking
/// pool, which a runtime waits for on exit), showing `prompt`.
async fn read_line(prompt: &str) -> Answer {
    let (tx, rx) = oneshot::channel();
    let prompt = prompt.to_owned();
    let (done, reading) = std::sync::mpsc::channel::<()>();
    set_open_reader(Some(reading));
    let spawned = std::thread::Builder::new()
        .name("toolgraph-approve".into())
        .spawn(move || {
            let _done = done;
            let answer = match DefaultEditor::new() {
                Ok(mut editor) => match editor.readline(&prompt) {
                    Ok(line) => Answer::Line(line),
                    Err(ReadlineError::Interrupted) => Answer::Interrupted,
                    Err(_) => Answer::Ended,
                },
                Err(_) => Answer::Ended,
            };
            let _ = tx.send(answer);
        });
    if spawned.is_err() {
        return Answer::Ended;
    }
    rx.await.unwrap_or(Answer::Ended)
}
