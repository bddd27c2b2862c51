//! `toolgraph chat "PROMPT"`: the agent loop from the command line — the model asks for
//! tools, the executor runs them in parallel, results go back, until it answers.
//!
//! Each turn's execution is recorded into the store as part of one session.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;
use toolgraph::llm::{LlmClient, LlmConfig, Provider, ToolOrchestrator};
use toolgraph_core::ToolCall;

use crate::Outcome;
use crate::input::{ExecutorFlags, open_store};
use crate::progress::Progress;

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

pub async fn run(args: ChatArgs) -> Result<Outcome> {
    let config = args.flags.config()?;
    let (mut executor, _servers) = toolgraph::build_executor(&config).await?;
    let progress = (!args.quiet).then(|| Arc::new(Progress::new()));
    if let Some(p) = &progress {
        executor = executor.with_sink(p.clone());
    }
    let executor = Arc::new(executor);
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
    let mut orchestrator = ToolOrchestrator::new(LlmClient::new(llm)?, executor.clone())
        .max_iterations(args.max_iterations)
        .teach_references(args.teach_references);
    if let Some(system) = &args.system {
        orchestrator = orchestrator.system_prompt(system.clone());
    }
    let result = orchestrator.execute_with_tools(&args.prompt).await?;
    if let Some(p) = &progress {
        p.finish();
    }

    let session = if config.store.record && !result.executions.is_empty() {
        Some(record(&config.store.url, &executor, &result).await)
    } else {
        None
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{}", result.answer);
        println!(
            "\n{} turn(s) · {} tool call(s) in {} execution(s) · model {:.1} ms · tools {:.1} ms · tokens {} in / {} out",
            result.iterations,
            result.tool_calls_made,
            result.executions.len(),
            result.model_ms,
            result.tool_ms,
            result.usage.input_tokens,
            result.usage.output_tokens
        );
        for (k, e) in result.executions.iter().enumerate() {
            println!(
                "  execution {}: {} call(s), makespan {:.1} ms, sequential {:.1} ms, speedup {:.2}×{}",
                k + 1,
                e.results.len(),
                e.total_time_ms,
                e.sequential_time_estimate_ms,
                e.speedup,
                if e.success {
                    ""
                } else {
                    " (some calls failed)"
                }
            );
        }
        match session {
            Some(Ok(id)) => println!("recorded as session {id} ({})", config.store.url),
            Some(Err(e)) => eprintln!("toolgraph: warning: recording the session failed: {e:#}"),
            None => {}
        }
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}

/// Records every execution of the chat under one session; calls' arguments come from the
/// assistant messages of the transcript.
async fn record(
    url: &str,
    executor: &toolgraph::ParallelExecutor,
    result: &toolgraph::llm::OrchestratorResult,
) -> Result<String> {
    let store = open_store(url).await?;
    let session = toolgraph_store::Store::new_id();
    let mut arguments: HashMap<String, Value> = HashMap::new();
    for message in &result.transcript {
        if let Ok(calls) = toolgraph_core::parse_tool_calls(message) {
            for c in calls {
                arguments.insert(c.id, c.arguments);
            }
        }
    }
    for execution in &result.executions {
        let calls: Vec<ToolCall> = execution
            .results
            .iter()
            .map(|r| {
                let args = arguments
                    .get(&r.id)
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                ToolCall::new(r.id.clone(), r.name.clone(), args)
            })
            .collect();
        let plan = executor
            .plan(calls)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("re-planning a turn")?;
        store
            .record_completed(&plan, &executor.config(), Some(&session), execution)
            .await?;
    }
    Ok(session)
}
