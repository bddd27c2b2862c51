//! `toolgraph run`: execute a batch with the configured tools, record it, print the result.
//!
//! Ctrl-C (or SIGTERM) cancels the running calls and skips the rest: the execution is
//! recorded `cancelled`, the table shows what happened, and `toolgraph resume` finishes it.

use anyhow::{Context, Result};
use clap::Args;
use toolgraph::ExecuteOptions;
use toolgraph_core::{ApprovalPreset, ParallelExecutionResult};
use toolgraph_engine::{CancellationToken, Plan};

use crate::Outcome;
use crate::input::{
    ExecutorFlags, OutputFlags, open_store, parse_or_report, read_source, report_rejection,
};
use crate::out::{errln, out, outln};
use crate::progress::Progress;
use crate::{render, timeline};

#[derive(Args)]
pub struct RunArgs {
    /// The batch: a JSON file, or `-` for standard input.
    pub input: String,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub approval: crate::input::ApprovalFlag,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: RunArgs, stop: CancellationToken) -> Result<Outcome> {
    let text = read_source(&args.input)?;
    let Some(calls) = parse_or_report(&text) else {
        return Ok(Outcome::Rejected);
    };
    let config = args.flags.config()?;
    // The store is opened once the batch is accepted: a rejected batch touches nothing.
    let mut unrecorded = config.clone();
    unrecorded.store.record = false;
    let mut runtime = toolgraph::Runtime::start(&unrecorded).await?;
    // No person watches a batch: `ask` is refused, saying how to allow it.
    let policy = args.approval.policy(&config, ApprovalPreset::Auto);
    if !policy.is_auto() {
        runtime = runtime.with_approvals(policy, None);
    }
    let progress = (!args.output.quiet).then(Progress::for_run);
    if let Some(p) = &progress {
        runtime = runtime.with_sink_per_execution(p.sink_factory());
    }
    let plan = match runtime.plan(calls) {
        Ok(plan) => plan,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    // An empty batch runs nothing, so nothing is recorded.
    if config.store.record && !plan.is_empty() {
        runtime = runtime.with_store(Some(open_store(&config.store.url).await?));
    }
    // The runtime records the execution before anything runs: a crash leaves an account
    // to resume from.
    let options = ExecuteOptions {
        cancel: stop.clone(),
        ..ExecuteOptions::default()
    };
    let execution = runtime.execute(&plan, options).await;
    runtime.settle().await;
    let execution = execution?;
    if let Some(p) = &progress {
        p.finish();
    }
    if let (Some(id), Some(e)) = (&execution.id, &execution.recording_error) {
        errln!("toolgraph: warning: recording execution {id} failed: {e}");
    }
    let result = execution.result;
    print_result_showing(&result, args.output.json, args.output.show_output)?;
    if let Some(path) = &args.output.timeline {
        let drawn = write_timeline(
            path,
            &result,
            &plan_edges(&plan),
            &plan.critical_path_calls(|i| result.results[i].duration_ms),
        );
        report_timeline(path, drawn, args.output.json)?;
    }
    if let (Some(id), false) = (&execution.id, args.output.json) {
        let store = runtime.store().map(|s| s.describe()).unwrap_or_default();
        if stop.is_cancelled() {
            outln!(
                "interrupted: execution {id} ({store}) is recorded as cancelled; `toolgraph resume {id}` finishes it"
            )?;
        } else if execution.recording_error.is_some() {
            outln!("execution {id} ({store}): its record may be incomplete (see the warning)")?;
        } else {
            outln!("recorded as execution {id} ({store})")?;
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
    print_result_showing(result, json, false)
}

/// [`print_result`], the table with each call's output when `show_output`.
pub fn print_result_showing(
    result: &ParallelExecutionResult,
    json: bool,
    show_output: bool,
) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(result)?)
    } else {
        out!("{}", render::summary(result, show_output))
    }
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
    std::fs::write(path, body).with_context(|| format!("writing the timeline {}", path.display()))
}

/// Says where the timeline went, or — the calls having run — why it could not be drawn:
/// a failed write after the run is reported, and the command keeps the run's exit code.
pub fn report_timeline(path: &std::path::Path, drawn: Result<()>, json: bool) -> Result<()> {
    match drawn {
        Ok(()) if !json => outln!("timeline: {}", path.display()),
        Ok(()) => Ok(()),
        Err(e) => {
            errln!("toolgraph: {}", crate::error_text(&e));
            Ok(())
        }
    }
}
