//! `toolgraph chat "PROMPT"`: the agent loop from the command line — the model asks for
//! tools, the executor runs them in parallel, results go back, until it answers.
//!
//! Each turn's batch is recorded ahead into the store, as part of one session, by the
//! runtime's batch runner. The progress display follows each execution on its own (calls
//! started early while the model streams run as executions of their own, at the same
//! time); the summary splits the time into waiting on the model and running tools that
//! did not overlap it. Ctrl-C cancels the turn's calls (recorded `cancelled`) and stops.

use anyhow::Result;
use clap::{Args, ValueEnum};
use toolgraph::llm::{LlmClient, LlmConfig, Provider, ToolOrchestrator};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::input::ExecutorFlags;
use crate::out::{errln, outln};
use crate::progress::Progress;
use crate::render;

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
    /// The model (default: `[llm] model` or `OPENAI_MODEL` / `ANTHROPIC_MODEL`).
    #[arg(long)]
    pub model: Option<String>,
    /// The API's base URL (default: `[llm] base_url` or `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
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
    pub flags: ExecutorFlags,
}

pub async fn run(args: ChatArgs, stop: CancellationToken) -> Result<Outcome> {
    let config = args.flags.config()?;
    let mut runtime = toolgraph::Runtime::start(&config).await?;
    let progress = (!args.quiet).then(Progress::for_chat);
    if let Some(p) = &progress {
        runtime = runtime.with_sink_per_execution(p.sink_factory());
    }
    // Every turn's batch is recorded ahead, under one session, with the plan the model sent.
    let session = runtime
        .store()
        .is_some()
        .then(toolgraph::Runtime::new_session_id);
    let provider = match args.provider {
        Some(ProviderArg::Openai) => Provider::OpenAi,
        Some(ProviderArg::Anthropic) => Provider::Anthropic,
        None => config.llm.as_ref().map_or(Provider::OpenAi, |l| l.provider),
    };
    let mut llm = match &config.llm {
        Some(l) if l.provider == provider => {
            let mut l = l.clone();
            if l.api_key.is_none() {
                l.api_key = LlmConfig::from_env(provider).api_key;
            }
            l
        }
        _ => LlmConfig::from_env(provider),
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
    let runner = runtime.batch_runner(session.clone());
    let mut orchestrator = ToolOrchestrator::with_runner(LlmClient::new(llm)?, runner)
        .max_iterations(args.max_iterations)
        .teach_references(args.teach_references)
        .cancel_on(stop);
    if let Some(system) = &args.system {
        orchestrator = orchestrator.system_prompt(system.clone());
    }
    let result = orchestrator.execute_with_tools(&args.prompt).await?;
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
