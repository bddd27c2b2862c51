//! `toolgraph run`: execute a batch with the configured tools and print the result.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::Outcome;
use crate::input::{ExecutorFlags, parse_or_report, read_source, report_rejection};
use crate::progress::Progress;
use crate::{render, timeline};

#[derive(Args)]
pub struct RunArgs {
    /// The batch: a JSON file, or `-` for standard input.
    pub input: String,
    /// Print the whole result object as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw the execution as a Gantt chart into this file (`.svg`, or `.html` for a page).
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<std::path::PathBuf>,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: RunArgs) -> Result<Outcome> {
    let text = read_source(&args.input)?;
    let Some(calls) = parse_or_report(&text) else {
        return Ok(Outcome::Rejected);
    };
    let mut executor = args.flags.executor()?;
    let progress = (!args.quiet).then(|| Arc::new(Progress::new(&calls)));
    if let Some(p) = &progress {
        executor = executor.with_sink(p.clone());
    }
    // The picture needs the graph; plan once more only when one is asked for.
    let plan = if args.timeline.is_some() {
        executor.plan(calls.clone()).ok()
    } else {
        None
    };
    let result = match executor.execute_parallel(calls).await {
        Ok(r) => r,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    if let Some(p) = &progress {
        p.finish();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render::summary(&result));
    }
    if let (Some(path), Some(plan)) = (&args.timeline, &plan) {
        let edges: Vec<(usize, usize)> = plan.edges().iter().map(|e| (e.from, e.to)).collect();
        let critical = plan.critical_path_calls(|i| result.results[i].duration_ms);
        let svg = timeline::svg(&result, &edges, &critical);
        let html = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html"));
        let body = if html { timeline::html_page(&svg) } else { svg };
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            println!("timeline: {}", path.display());
        }
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}
