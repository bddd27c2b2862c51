//! The `toolgraph` binary: wires the engine and the built-in tools to the command line.
//!
//! One file per subcommand; this file only parses arguments, sets up logging (`-v`,
//! `TOOLGRAPH_LOG`, `RUST_LOG`, `--log-format`: to standard error, never mixed into
//! standard output) and trace export (`OTEL_EXPORTER_OTLP_ENDPOINT`, flushed before exit), and
//! maps outcomes to exit codes (0 every call succeeded, 1 some call did not, 2 the input or
//! the flags were rejected and nothing ran, 130 / 143 a run stopped by Ctrl-C / SIGTERM, 141
//! standard output was closed by its reader; `serve` and `mcp-serve`: 0 after a graceful
//! shutdown at the first signal, 130 / 143 at a second; `history`, `sessions`, `show`,
//! `stats` and `prune`: 0 when they did what was asked, 2 when they could not). It is the
//! only crate that prints, through `out`.

mod approve_prompt;
mod bench;
mod bench_concurrent;
mod bench_memory;
mod chat_cmd;
mod chat_repl;
mod chat_session;
mod history_cmd;
mod input;
mod interrupt;
mod logging;
mod mcp_serve_cmd;
mod out;
mod plan_cmd;
mod progress;
mod render;
mod resume_cmd;
mod run_cmd;
mod serve_cmd;
mod sessions_cmd;
mod timeline;
mod tools_cmd;
mod worker_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::interrupt::Interrupt;
use crate::out::errln;

/// Runs the tool calls an LLM emits: in parallel where safe, in order where not.
#[derive(Parser)]
#[command(name = "toolgraph", version, about)]
struct Cli {
    /// Log what happens to standard error: -v info, -vv debug, -vvv everything (else
    /// TOOLGRAPH_LOG or RUST_LOG, e.g. `toolgraph_mcp=debug`; by default warnings only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How log lines are written to standard error: `text`, or `json` (one object a line,
    /// with the fields of the spans it happened in).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, env = "TOOLGRAPH_LOG_FORMAT")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Execute a batch of tool calls and print what happened.
    Run(run_cmd::RunArgs),
    /// Show the dependency graph of a batch without running it.
    Plan(plan_cmd::PlanArgs),
    /// Ask a model; run the tools it calls (in parallel) until it answers.
    Chat(chat_cmd::ChatArgs),
    /// Finish an execution a crash interrupted, without re-running what had finished.
    Resume(resume_cmd::ResumeArgs),
    /// Recorded executions, newest first.
    History(history_cmd::HistoryArgs),
    /// One recorded execution, with its results (and its timeline picture), or one chat session, turn by turn.
    Show(history_cmd::ShowArgs),
    /// Recorded chat sessions, latest activity first (`chat --resume ID` continues one).
    Sessions(sessions_cmd::SessionsArgs),
    /// Statistics over recorded executions: speedup, efficiency, success, per-tool latency.
    Stats(history_cmd::StatsArgs),
    /// Delete recorded executions: the ones named (ids or unique prefixes), or those older than a duration.
    Prune(history_cmd::PruneArgs),
    /// List the registered tools with their schemas and scheduling traits.
    Tools(tools_cmd::ToolsArgs),
    /// Measure the engine: per-call and per-edge overhead, makespan against the critical path.
    Bench(bench::BenchArgs),
    /// Serve the HTTP API, live events, metrics and the dashboard until SIGTERM / Ctrl-C.
    Serve(serve_cmd::ServeArgs),
    /// Run calls for a NATS JetStream cluster: serve this configuration's tools until SIGTERM / Ctrl-C.
    Worker(worker_cmd::WorkerArgs),
    /// The live workers of a cluster namespace: tools, load, last heartbeat.
    Workers(worker_cmd::WorkersArgs),
    /// Serve the tools and `run_batch` (a batch run as a graph) to MCP clients, over stdio or HTTP.
    McpServe(mcp_serve_cmd::McpServeArgs),
}

/// How a command ended.
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// It ran, but some call did not succeed.
    CallsFailed,
    /// Nothing ran: bad input or flags.
    Rejected,
    /// Stopped at once by a second Ctrl-C (a conversation's turn): exit 130 without
    /// waiting for threads still running.
    Interrupted,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = logging::init(cli.verbose, cli.log_format);
    // The commands that run calls stop gracefully at Ctrl-C; the others keep the default.
    // `serve` too, and a server that shut down as asked exits 0 (`serve_cmd`).
    let serving = matches!(
        cli.command,
        Command::Serve(_) | Command::Worker(_) | Command::McpServe(_)
    );
    let interrupt = if let Command::Serve(_) = cli.command {
        Some(Interrupt::listen_saying(
            "toolgraph serve: shutting down: no new executions, the running ones get the grace period (press Ctrl-C again to exit at once)",
        ))
    } else if let Command::Worker(_) = cli.command {
        Some(Interrupt::listen_saying(
            "toolgraph worker: stopping: no new calls, the running ones get the drain time (press Ctrl-C again to exit at once)",
        ))
    } else if let Command::McpServe(_) = cli.command {
        Some(Interrupt::listen_saying(
            "toolgraph mcp-serve: stopping: the running calls are cancelled and recorded (press Ctrl-C again to exit at once)",
        ))
    } else {
        // A conversation handles Ctrl-C itself: per turn (`chat_repl`).
        let chat_one_turn = matches!(&cli.command, Command::Chat(a) if !a.interactive());
        (chat_one_turn || matches!(cli.command, Command::Run(_) | Command::Resume(_)))
            .then(Interrupt::listen)
    };
    let reads_stdin_to_the_end = matches!(cli.command, Command::McpServe(_));
    let stop = interrupt.as_ref().map(Interrupt::token).unwrap_or_default();
    let mut command = Box::pin(async move {
        match cli.command {
            Command::Run(args) => run_cmd::run(args, stop).await,
            Command::Plan(args) => plan_cmd::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Tools(args) => tools_cmd::run(args).await,
            Command::Resume(args) => resume_cmd::run(args, stop).await,
            Command::Chat(args) => chat_cmd::run(args, stop).await,
            Command::History(args) => history_cmd::history(args).await,
            Command::Show(args) => history_cmd::show(args).await,
            Command::Sessions(args) => sessions_cmd::sessions(args).await,
            Command::Stats(args) => history_cmd::stats(args).await,
            Command::Prune(args) => history_cmd::prune(args).await,
            Command::Serve(args) => serve_cmd::run(args, stop).await,
            Command::Worker(args) => worker_cmd::worker(args, stop).await,
            Command::Workers(args) => worker_cmd::workers(args).await,
            Command::McpServe(args) => mcp_serve_cmd::run(args, stop).await,
        }
    });
    let outcome = match &interrupt {
        Some(interrupt) => tokio::select! {
            outcome = &mut command => Some(outcome),
            () = interrupt.aborted() => None,
        },
        None => Some((&mut command).await),
    };
    let signalled = interrupt.as_ref().and_then(Interrupt::code);
    let Some(outcome) = outcome else {
        // The second signal: dropping the command drops its calls, which kills the process
        // groups they started; exit without waiting for blocking threads.
        drop(command);
        logging.shutdown();
        std::process::exit(i32::from(signalled.unwrap_or(130)));
    };
    let interrupted = matches!(outcome, Ok(Outcome::Interrupted));
    let code = match outcome {
        Ok(Outcome::Interrupted) => 130,
        Ok(Outcome::Success) => 0,
        Ok(Outcome::CallsFailed) => 1,
        Ok(Outcome::Rejected) => 2,
        Err(e) => {
            errln!("toolgraph: {}", error_text(&e));
            2
        }
    };
    // Spans still batched are sent before the process ends.
    drop(command);
    logging.shutdown();
    // A server stopping at a signal did what it was asked: its own code stands.
    let signalled = signalled.filter(|_| !serving);
    let code = signalled.unwrap_or(if out::stdout_closed() {
        out::CLOSED_PIPE_EXIT
    } else {
        code
    });
    if reads_stdin_to_the_end || interrupted {
        // A read of a terminal's standard input cannot be cancelled, and the runtime would
        // wait for it (and for a blocking tool's thread after a second Ctrl-C): the command
        // has stopped and said so, so exit now.
        std::process::exit(i32::from(code));
    }
    ExitCode::from(code)
}

/// An error and its causes on one line, each cause said once: many errors already include
/// their source's text in their own message (and sqlx's repeat it), so a cause whose text
/// is already there is not appended again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// Like most errors here: its message includes its source, which it also returns.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database: {}", self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::other("unable to open database file");
        let e = anyhow::Error::from(Wrapping(io)).context("opening the store sqlite:x.db");
        assert_eq!(
            error_text(&e),
            "opening the store sqlite:x.db: database: unable to open database file"
        );
        let plain = anyhow::anyhow!("no such file").context("reading x.json");
        assert_eq!(error_text(&plain), "reading x.json: no such file");
    }
}
