//! `toolgraph chat ["PROMPT"]`: the agent loop from the command line — the model asks for
//! tools, the executor runs them in parallel, results go back, until it answers.
//!
//! With a prompt it does one turn; without one, in a terminal, it opens a conversation
//! (`chat_repl`); without one and with standard input not a terminal (`echo q | toolgraph
//! chat`), standard input is the prompt of one turn. `--resume ID` (an id or a unique
//! prefix) continues a stored session either way, the model receiving its whole history.
//! Each turn's batch is recorded ahead into the store, and each turn's messages into the
//! session (`chat_session`). The model is chosen by flags, then the provider's variables
//! (`OPENAI_*`, `ANTHROPIC_*`, and `TOOLGRAPH_LLM_*`), then the `[llm]` section; a missing
//! API key is refused before anything starts. `--mock SCRIPT` answers with the scripted
//! model server instead (`toolgraph_llm::mock`), so the loop can be tried offline.
//!
//! The progress display follows each execution on its own (calls started early while the
//! model streams run as executions of their own, at the same time); the summary splits the
//! time into waiting on the model and running tools that did not overlap it. Ctrl-C
//! cancels the turn's calls (recorded `cancelled`) and stops (in a conversation: cancels
//! the turn and the conversation goes on).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use toolgraph::llm::mock::{MockServer, Script};
use toolgraph::llm::{LlmClient, LlmConfig, LlmError, Provider};
use toolgraph_engine::CancellationToken;
use toolgraph_store::StoredSession;

use crate::Outcome;
use crate::approve_prompt;
use crate::chat_session::{ChatSession, TurnReport, TurnSettings};
use crate::input::ExecutorFlags;
use crate::out::{errln, outln};
use crate::render;

/// `chat`'s approval policy when neither `--approval` nor `[approvals] default` names one.
const ASK: toolgraph_core::ApprovalPreset = toolgraph_core::ApprovalPreset::AskWrites;

/// Providers, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProviderArg {
    /// OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

#[derive(Args)]
pub struct ChatArgs {
    /// What to ask (one turn). Without it: a conversation in a terminal, or standard input
    /// as the prompt when it is not a terminal.
    pub prompt: Option<String>,
    /// Continue a stored session (its id or a unique prefix; `toolgraph sessions` lists
    /// them): the model receives its whole history.
    #[arg(long, value_name = "SESSION")]
    pub resume: Option<String>,
    /// The API (default: `[llm] provider`, else openai).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
    /// The model (default: `OPENAI_MODEL` / `ANTHROPIC_MODEL` or `[llm] model`).
    #[arg(long)]
    pub model: Option<String>,
    /// The API's base URL, as the provider's SDKs take it: with `/v1` for OpenAI
    /// (`http://127.0.0.1:11434/v1`), without for Anthropic (default: `OPENAI_BASE_URL` /
    /// `ANTHROPIC_BASE_URL` or `[llm] base_url`).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Answer with a scripted model server on 127.0.0.1 playing this script (see
    /// `examples/chat-script.json`) instead of a real model: the loop, offline.
    #[arg(long, value_name = "SCRIPT.json", conflicts_with = "base_url")]
    pub mock: Option<PathBuf>,
    /// Stream replies (SSE) and start read-only calls before a reply ends.
    #[arg(long)]
    pub stream: bool,
    /// Model turns at most.
    #[arg(long, default_value_t = 10)]
    pub max_iterations: usize,
    /// Teach the model the `${call_id}` reference syntax, so it can send a dependent plan in one turn.
    #[arg(long)]
    pub teach_references: bool,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Print the whole result (answer, transcript, executions, usage) as JSON (one turn only).
    #[arg(long)]
    pub json: bool,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub approval: crate::input::ApprovalFlag,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

impl ChatArgs {
    /// True for a conversation: no prompt, and standard input is a terminal.
    pub fn interactive(&self) -> bool {
        self.prompt.is_none() && std::io::stdin().is_terminal()
    }
}

/// The model configuration: flags, then the environment, then `[llm]` (the section applies
/// when it is for the chosen provider; `toolgraph::Config::load` put the variables in it).
fn llm_config(args: &ChatArgs, section: Option<&LlmConfig>) -> LlmConfig {
    let provider = match args.provider {
        Some(ProviderArg::Openai) => Provider::OpenAi,
        Some(ProviderArg::Anthropic) => Provider::Anthropic,
        None => section.map_or(Provider::OpenAi, |l| l.provider),
    };
    let mut llm = match section {
        Some(l) if l.provider == provider => l.clone(),
        _ => LlmConfig::for_provider(provider).with_env(std::env::vars()),
    };
    if let Some(m) = &args.model {
        llm.model = m.clone();
    }
    if let Some(u) = &args.base_url {
        llm.base_url = u.clone();
    }
    if args.stream {
        llm.stream = true;
    }
    llm
}

/// Starts the scripted model server for `path` and points `llm` at it.
async fn start_mock(path: &Path, llm: &mut LlmConfig, model: Option<&str>) -> Result<MockServer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the model script {}", path.display()))?;
    let script = Script::from_json(&text)
        .map_err(|e| anyhow::anyhow!("the model script {}: {e}", path.display()))?;
    let turns = script.turns.len();
    let server = MockServer::start_script(script)
        .await
        .context("starting the scripted model server")?;
    llm.base_url = server.base_url(llm.provider);
    // It is local: no key needed, and none of the user's is sent to it.
    llm.api_key = None;
    llm.model = model.unwrap_or("mock").to_owned();
    tracing::info!(url = %server.url(), turns, "scripted model server started");
    Ok(server)
}

/// The session `--resume` names, read back; the provider and model it used become the
/// defaults (its messages are in that provider's shape).
async fn resumed_session(
    args: &mut ChatArgs,
    config: &toolgraph::Config,
) -> Result<Option<StoredSession>> {
    let Some(given) = &args.resume else {
        return Ok(None);
    };
    if !config.store.record {
        bail!("--resume {given}: recording is off (--no-record), so the session could not go on");
    }
    let (store, shown_store) = crate::input::open_existing_store(&config.store.url).await?;
    let Some(store) = store else {
        bail!(
            "--resume {given}: {}",
            crate::history_cmd::nothing_yet(&shown_store)
        );
    };
    let found = crate::sessions_cmd::resolve_session(&*store, given)
        .await
        .with_context(|| format!("--resume {given} in {shown_store}"))?;
    let session = store.load_session(&found.id).await?;
    let provider = match session.summary.provider.as_deref() {
        Some("anthropic") => Some(ProviderArg::Anthropic),
        Some("openai") => Some(ProviderArg::Openai),
        _ => None,
    };
    match (args.provider, provider) {
        (None, p) => args.provider = p,
        (Some(asked), Some(held)) if !same_provider(asked, held) => bail!(
            "session {} was held with {}: its messages are in that provider's shape; resume it with --provider {} (or leave --provider out)",
            session.summary.id,
            session.summary.provider.as_deref().unwrap_or("?"),
            session.summary.provider.as_deref().unwrap_or("?"),
        ),
        _ => {}
    }
    if args.model.is_none() && args.mock.is_none() {
        args.model.clone_from(&session.summary.model);
    }
    if args.system.is_none() {
        args.system.clone_from(&session.system);
    }
    Ok(Some(session))
}

fn same_provider(a: ProviderArg, b: ProviderArg) -> bool {
    matches!(
        (a, b),
        (ProviderArg::Openai, ProviderArg::Openai)
            | (ProviderArg::Anthropic, ProviderArg::Anthropic)
    )
}

/// The prompt of a one-turn chat: the argument, or standard input when it is not a
/// terminal (`None`: a conversation).
fn one_prompt(args: &ChatArgs) -> Result<Option<String>> {
    if let Some(prompt) = &args.prompt {
        return Ok(Some(prompt.clone()));
    }
    if args.interactive() {
        return Ok(None);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the prompt from standard input")?;
    if text.trim().is_empty() {
        bail!(
            "no prompt: give one (toolgraph chat \"…\"), pipe one into standard input, or run `toolgraph chat` in a terminal for a conversation"
        );
    }
    Ok(Some(text.trim().to_owned()))
}

pub async fn run(mut args: ChatArgs, stop: CancellationToken) -> Result<Outcome> {
    let mut config = args.flags.config()?;
    let prompt = one_prompt(&args)?;
    if prompt.is_none() && args.json {
        bail!(
            "--json prints one turn's result: give a prompt (or pipe one in), not a conversation"
        );
    }
    let shown_store = toolgraph_store::hide_password(&config.store.url);
    let resumed = resumed_session(&mut args, &config).await?;
    let mut llm = llm_config(&args, config.llm.as_ref());
    let _mock = match &args.mock {
        Some(path) => {
            let server = start_mock(path, &mut llm, args.model.as_deref()).await?;
            if !args.quiet {
                errln!(
                    "toolgraph: the model is the script {} ({} {} server at {})",
                    path.display(),
                    llm.provider,
                    if llm.stream { "streaming" } else { "plain" },
                    server.url()
                );
            }
            Some(server)
        }
        None => None,
    };
    // Before anything starts: a request without its key would only fail later.
    let client = match LlmClient::new(llm) {
        Ok(client) => client,
        Err(e @ LlmError::MissingApiKey { .. }) => bail!(
            "{e}\n  to try the agent loop offline: toolgraph chat --mock examples/chat-script.json \"…\""
        ),
        Err(e) => return Err(e.into()),
    };
    approve_prompt::no_silent_root(&mut config, args.flags.tools.root.is_some(), args.quiet);
    let runtime = toolgraph::Runtime::start(&config).await?;
    // One approver for the session: "always" holds until it ends.
    let (runtime, approver) = approve_prompt::guard(&runtime, args.approval.policy(&config, ASK));
    let settings = TurnSettings {
        max_iterations: args.max_iterations,
        teach_references: args.teach_references,
        system: args.system.clone(),
        progress: !args.quiet,
    };
    let mut session = ChatSession::new(client, runtime, settings, resumed).with_approver(approver);
    let Some(prompt) = prompt else {
        return crate::chat_repl::run(session, &shown_store).await;
    };
    let report = session.turn(&prompt, stop).await;
    if let Some(e) = report.error {
        if let Some(n) = report.recorded {
            errln!(
                "toolgraph: turn {n} of session {} is recorded with what it did",
                session.id()
            );
        }
        return Err(e.into());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.result)?)?;
    } else {
        print_turn(&report)?;
        match (report.recorded, &report.recording_error) {
            (_, Some(e)) => errln!("toolgraph: warning: recording the session failed: {e}"),
            (Some(_), None) => outln!("recorded as session {} ({shown_store})", session.id())?,
            _ => {}
        }
        if report.result.cancelled {
            outln!(
                "interrupted: the turn's running calls were cancelled and recorded so (`toolgraph history`)"
            )?;
        }
    }
    Ok(if report.result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}

/// The answer, then a summary of the turn: model and tool time, calls, executions, tokens.
pub fn print_turn(report: &TurnReport) -> Result<()> {
    let result = &report.result;
    outln!("{}", result.answer)?;
    // Model time is time waiting on the model; tool time is what did not overlap it.
    let early = if result.tool_overlap_ms > 0.0 {
        format!(
            " (calls started early ran during {:.1} ms of it)",
            result.tool_overlap_ms
        )
    } else {
        String::new()
    };
    outln!(
        "\n{} turn(s) · {} tool call(s) in {} execution(s) · model {:.1} ms{early} · tools {:.1} ms after the replies · tokens {} in / {} out",
        result.iterations,
        result.tool_calls_made,
        result.executions.len(),
        result.model_ms,
        result.tool_ms,
        result.usage.input_tokens,
        result.usage.output_tokens
    )?;
    for (k, e) in result.executions.iter().enumerate() {
        let ids: Vec<&str> = e.results.iter().map(|c| c.id.as_str()).collect();
        outln!(
            "  execution {} ({}): {} call(s), makespan {:.1} ms, sequential {:.1} ms, speedup {:.2}×{}",
            k + 1,
            render::truncate(&ids.join(", "), 40),
            e.results.len(),
            e.total_time_ms,
            e.sequential_time_estimate_ms,
            e.speedup,
            if e.success {
                ""
            } else {
                " (some calls failed)"
            }
        )?;
    }
    Ok(())
}
