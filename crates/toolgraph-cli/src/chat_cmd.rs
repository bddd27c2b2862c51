//! `toolgraph chat "PROMPT"`: the agent loop from the command line — the model asks for
//! tools, the executor runs them in parallel, results go back, until it answers.
//!
//! Each turn's batch is recorded ahead into the store, as part of one session, by the
//! runtime's batch runner. The model is chosen by flags, then the provider's variables
//! (`OPENAI_*`, `ANTHROPIC_*`, and `TOOLGRAPH_LLM_*`), then the `[llm]` section; a missing
//! API key is refused before anything starts. `--mock SCRIPT` answers with the scripted
//! model server instead (`toolgraph_llm::mock`), so the loop can be tried offline.
//!
//! The progress display follows each execution on its own (calls started early while the
//! model streams run as executions of their own, at the same time); the summary splits the
//! time into waiting on the model and running tools that did not overlap it. Ctrl-C
//! cancels the turn's calls (recorded `cancelled`) and stops.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use toolgraph::llm::mock::{MockServer, Script};
use toolgraph::llm::{LlmClient, LlmConfig, LlmError, Provider, ToolOrchestrator};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::approve_prompt;
use crate::input::ExecutorFlags;
use crate::out::{errln, outln};
use crate::progress::Progress;
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
    /// What to ask.
    pub prompt: String,
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
    /// Print the whole result (answer, transcript, executions, usage) as JSON.
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

pub async fn run(args: ChatArgs, stop: CancellationToken) -> Result<Outcome> {
    let mut config = args.flags.config()?;
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
    let mut runtime = toolgraph::Runtime::start(&config).await?;
    let progress = (!args.quiet).then(Progress::for_chat);
    if let Some(p) = &progress {
        runtime = runtime.with_sink_per_execution(p.sink_factory());
    }
    runtime = approve_prompt::guard(&runtime, args.approval.policy(&config, ASK), &progress);
    // Every turn's batch is recorded ahead, under one session, with the plan the model sent.
    let session = runtime
        .store()
        .is_some()
        .then(toolgraph::Runtime::new_session_id);
    let runner = runtime.batch_runner(session.clone());
    let mut orchestrator = ToolOrchestrator::with_runner(client, runner)
        .max_iterations(args.max_iterations)
        .teach_references(args.teach_references)
        .cancel_on(stop);
    if let Some(system) = &args.system {
        orchestrator = orchestrator.system_prompt(system.clone());
    }
    let result = orchestrator.execute_with_tools(&args.prompt).await;
    runtime.settle().await;
    let result = result?;
    if let Some(p) = &progress {
        p.finish();
    }

    let recording_errors: Vec<&str> = result
        .executions
        .iter()
        .filter_map(|e| e.metadata.recording_error.as_deref())
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&result)?)?;
    } else {
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
        match (&session, recording_errors.first()) {
            (Some(_), Some(e)) => {
                errln!("toolgraph: warning: recording the session failed: {e}")
            }
            (Some(id), None) if !result.executions.is_empty() => {
                outln!("recorded as session {id} ({})", config.store.url)?
            }
            _ => {}
        }
        if result.cancelled {
            outln!(
                "interrupted: the turn's running calls were cancelled and recorded so (`toolgraph history`)"
            )?;
        }
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}
