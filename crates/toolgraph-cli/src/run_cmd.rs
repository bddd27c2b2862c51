//! `toolgraph run`: execute a batch with the configured tools, record it, print the result.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use toolgraph::ExecuteOptions;
use toolgraph_core::ParallelExecutionResult;
use toolgraph_engine::Plan;

use crate::Outcome;
use crate::input::{
    ExecutorFlags, OutputFlags, open_store, parse_or_report, read_source, report_rejection,
};
use crate::progress::Progress;
use crate::{render, timeline};

#[derive(Args)]
pub struct RunArgs {
    /// The batch: a JSON file, or `-` for standard input.
    pub input: String,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: RunArgs) -> Result<Outcome> {
    let text = read_source(&args.input)?;
    let Some(calls) = parse_or_report(&text) else {
        return Ok(Outcome::Rejected);
    };
    let config = args.flags.config()?;
    // The store is opened once the batch is accepted: a rejected batch touches nothing.
    let mut unrecorded = config.clone();
    unrecorded.store.record = false;
    let mut runtime = toolgraph::Runtime::start(&unrecorded).await?;
    let progress = (!args.output.quiet).then(|| Arc::new(Progress::new()));
    if let Some(p) = &progress {
        runtime = runtime.with_sink(p.clone());
    }
    let plan = match runtime.plan(calls) {
        Ok(plan) => plan,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    if config.store.record {
        runtime = runtime.with_store(Some(open_store(&config.store.url).await?));
    }
    // The runtime records the execution before anything runs: a crash leaves an account
    // to resume from.
    let execution = runtime.execute(&plan, ExecuteOptions::default()).await?;
    if let Some(p) = &progress {
        p.finish();
    }
    if let (Some(id), Some(e)) = (&execution.id, &execution.recording_error) {
        eprintln!("toolgraph: warning: recording execution {id} failed: {e}");
    }
    let result = execution.result;
    print_result(&result, args.output.json)?;
    if let Some(path) = &args.output.timeline {
        write_timeline(
            path,
            &result,
            &plan_edges(&plan),
            &plan.critical_path_calls(|i| result.results[i].duration_ms),
        )?;
        if !args.output.json {
            println!("timeline: {}", path.display());
        }
    }
    if let (Some(id), false) = (&execution.id, args.output.json) {
        let store = runtime.store().map(|s| s.describe()).unwrap_or_default();
        if execution.recording_error.is_some() {
            println!("execution {id} ({store}): its record may be incomplete (see the warning)");
        } else {
            println!("recorded as execution {id} ({store})");
        }
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}

pub fn plan_edges(plan: &Plan) -> Vec<(usize, usize)> {
    plan.edges().iter().map(|e| (e.from, e.to)).collect()
}

/// Prints a result as JSON or as the table and summary.
pub fn print_result(result: &ParallelExecutionResult, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        print!("{}", render::summary(result));
    }
    Ok(())
}

/// Writes the timeline picture (`.html` gets a page around it).
pub fn write_timeline(
    path: &std::path::Path,
    result: &ParallelExecutionResult,
    edges: &[(usize, usize)],
    critical: &[usize],
) -> Result<()> {
    let svg = timeline::svg(result, edges, critical);
    let html = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html"));
    let body = if html { timeline::html_page(&svg) } else { svg };
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}
