//! The interactive side of `toolgraph chat`: a prompt line with editing and history
//! (`rustyline`; the history file is `chat_history` in toolgraph's data directory), each
//! line one turn of the session, the answer and the turn's summary printed after it.
//!
//! Keys: Ctrl-C while a turn runs cancels *that turn* (its running calls end `cancelled`,
//! the turn is recorded with what it did) and a new prompt follows; a second Ctrl-C in the
//! same turn ends the process at once (exit 130). At the prompt, Ctrl-C clears the line and
//! Ctrl-D on an empty line (or `/exit`) ends the session. Slash commands: `/help`,
//! `/session`, `/exit`.
//!
//! `main` installs no signal handler for a conversation: the line editor reads keys in raw
//! mode (Ctrl-C is a key there), and this module listens for SIGINT only while a turn runs.

use anyhow::{Context, Result};
use futures_util::FutureExt;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::signal::unix::{SignalKind, signal};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::chat_cmd::print_turn;
use crate::chat_session::ChatSession;
use crate::out::{errln, outln};

/// The prompt shown before each line.
const PROMPT: &str = "chat> ";

/// What `/help` says.
const HELP: &str = "\
Type a message and press Enter: the model answers, running the tools it asks for.
  Ctrl-C      cancel the running turn (at the prompt: clear the line)
  Ctrl-D      end the session (or /exit)
  Up / Down   earlier lines (kept across sessions)
  /session    this session's id, model and turns (`toolgraph show ID` shows it all)
  /help       this text";

/// A line the user typed, as the loop reads it.
enum Line {
    Prompt(String),
    Command(String),
    Empty,
    End,
}

/// Where the line history is kept.
fn history_path() -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|d| d.join("toolgraph").join("chat_history"))
}

/// Reads one line on a blocking thread (the editor owns the terminal meanwhile).
async fn read_line(mut editor: DefaultEditor) -> Result<(DefaultEditor, Line)> {
    tokio::task::spawn_blocking(move || {
        // Two editors must not read the terminal at once.
        crate::approve_prompt::wait_for_withdrawn_question();
        let read = editor.readline(PROMPT);
        let line = match read {
            Ok(text) => {
                let text = text.trim().to_owned();
                if text.is_empty() {
                    Line::Empty
                } else {
                    let _ = editor.add_history_entry(text.as_str());
                    match text.strip_prefix('/') {
                        Some(command) => Line::Command(command.trim().to_owned()),
                        None => Line::Prompt(text),
                    }
                }
            }
            // Ctrl-C at the prompt: the line is cleared; a new prompt follows.
            Err(ReadlineError::Interrupted) => Line::Empty,
            Err(ReadlineError::Eof) => Line::End,
            Err(e) => return Err(anyhow::Error::from(e).context("reading the prompt")),
        };
        Ok((editor, line))
    })
    .await
    .context("the line editor's thread")?
}

/// Runs the conversation until Ctrl-D or `/exit`.
pub async fn run(mut session: ChatSession, shown_store: &str) -> Result<Outcome> {
    let mut editor = DefaultEditor::new().context("opening the line editor")?;
    let history = history_path();
    if let Some(path) = &history {
        // None yet on a first run.
        let _ = editor.load_history(path);
    }
    let mut interrupts =
        signal(SignalKind::interrupt()).context("listening for Ctrl-C during a turn")?;
    let recording = match session.store() {
        Some(_) => format!("recorded as session {} in {shown_store}", session.id()),
        None => "not recorded (--no-record)".to_owned(),
    };
    let resumed = if session.turns() > 0 {
        format!(", resumed after {} turn(s)", session.turns())
    } else {
        String::new()
    };
    errln!(
        "toolgraph chat · model {} · {recording}{resumed} · /help for keys, Ctrl-D to end",
        session.model()
    );
    let mut failed = false;
    loop {
        let (back, line) = read_line(editor).await?;
        editor = back;
        match line {
            Line::Empty => continue,
            Line::End => break,
            Line::Command(command) => match command.as_str() {
                "exit" | "quit" => break,
                "help" => errln!("{HELP}"),
                "session" => errln!(
                    "session {} · model {} · {} turn(s) · {}",
                    session.id(),
                    session.model(),
                    session.turns(),
                    if session.store().is_some() {
                        shown_store
                    } else {
                        "not recorded"
                    }
                ),
                other => errln!("unknown command /{other}: /help lists them"),
            },
            Line::Prompt(prompt) => {
                // A signal that came while the editor read keys is not meant for this turn.
                while interrupts.recv().now_or_never().flatten().is_some() {}
                let cancel = CancellationToken::new();
                let turn = session.turn(&prompt, cancel.clone());
                tokio::pin!(turn);
                let report = loop {
                    tokio::select! {
                        report = &mut turn => break report,
                        Some(()) = interrupts.recv() => {
                            if cancel.is_cancelled() {
                                errln!("\ntoolgraph: interrupted twice: exiting now");
                                save_history(&mut editor, history.as_deref());
                                // `main` drops the turn (its calls, and the process groups
                                // they started), sends the spans, and exits 130.
                                return Ok(Outcome::Interrupted);
                            }
                            errln!("\ntoolgraph: cancelling this turn (Ctrl-C again exits at once)");
                            cancel.cancel();
                        }
                    }
                };
                if let Some(e) = &report.error {
                    errln!("toolgraph: the model failed: {e}");
                    failed = true;
                } else {
                    print_turn(&report)?;
                }
                if let Some(e) = &report.recording_error {
                    errln!("toolgraph: warning: recording the session failed: {e}");
                }
                if report.result.cancelled {
                    outln!(
                        "cancelled: the turn's running calls were cancelled and recorded so; the conversation goes on"
                    )?;
                }
                outln!()?;
            }
        }
    }
    save_history(&mut editor, history.as_deref());
    if session.turns() > 0 && session.store().is_some() {
        errln!(
            "session {} · {} turn(s) · `toolgraph chat --resume {}` continues it",
            session.id(),
            session.turns(),
            session.id().get(..8).unwrap_or(session.id())
        );
    }
    Ok(if failed {
        Outcome::CallsFailed
    } else {
        Outcome::Success
    })
}

/// Writes the line history (a failure is only a warning: the session is recorded apart).
fn save_history(editor: &mut DefaultEditor, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = editor.save_history(path) {
        errln!(
            "toolgraph: warning: the line history was not saved to {}: {e}",
            path.display()
        );
    }
}
