//! `toolgraph resume ID`: finish an execution a crash interrupted.
//!
//! Calls that ended keep their recorded outcome (their outputs feed dependants); calls that
//! never started run; calls that were running at the crash run again only when their tool
//! is idempotent, and are otherwise reported `interrupted` (what they did is unknown).
//! The runtime does all of that ([`toolgraph::Runtime::resume`]); this file finds the
//! execution (by id or unique prefix, in a store it never creates) and renders the result.
//! `[approvals]` / `--approval` apply to the calls that run, as for `run` (`auto` without
//! them). An execution Ctrl-C cancelled resumes the same way (its cancelled calls count as
//! interrupted ones), and Ctrl-C during a resume cancels it again.

use anyhow::{Result, anyhow};
use clap::Args;
use toolgraph::{ExecuteOptions, Resumed, RuntimeError};
use toolgraph_engine::CancellationToken;

use crate::Outcome;
use crate::history_cmd::{nothing_yet, resolve};
use crate::input::{OutputFlags, ResumeFlags, open_existing_store, report_rejection};
use crate::out::outln;
use crate::progress::Progress;
use crate::run_cmd::{print_result_showing, report_timeline, write_timeline};

#[derive(Args)]
pub struct ResumeArgs {
    /// The execution to finish: its id, or a prefix of it no other id starts with (at
    /// least 4 characters; `toolgraph history` shows one).
    pub id: String,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub approval: crate::input::ApprovalFlag,
    #[command(flatten)]
    pub flags: ResumeFlags,
}

pub async fn run(args: ResumeArgs, stop: CancellationToken) -> Result<Outcome> {
    let mut config = args.flags.config()?;
    // Resuming is recording: the store is needed even under --no-record — but only one
    // that exists: there is nothing to resume in a store that is not there.
    let (store, shown) = open_existing_store(&config.store.url).await?;
    let store =
        store.ok_or_else(|| anyhow!("no execution {}: {}", args.id, nothing_yet(&shown)))?;
    let id = resolve(&*store, &args.id).await?.id;
    config.store.record = false;
    let mut runtime = toolgraph::Runtime::start(&config)
        .await?
        .with_store(Some(store));
    // As `run`: no person watches, `ask` is refused saying how to allow it. A chat's
    // execution resumed under `--approval ask-writes` (or `deny-writes`) runs no write
    // nobody approved.
    let policy = args
        .approval
        .policy(&config, toolgraph_core::ApprovalPreset::Auto);
    if !policy.is_auto() {
        runtime = runtime.with_approvals(policy, None);
    }
    let progress = (!args.output.quiet).then(Progress::for_run);
    if let Some(p) = &progress {
        runtime = runtime.with_sink_per_execution(p.sink_factory());
    }
    let options = ExecuteOptions {
        cancel: stop.clone(),
        ..ExecuteOptions::default()
    };
    let resumed = runtime.resume(&id, options).await;
    runtime.settle().await;
    if let Some(p) = &progress {
        p.finish();
    }
    let Resumed { stored, counts } = match resumed {
        Ok(resumed) => resumed,
        Err(RuntimeError::Input(e)) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
        Err(e) => return Err(e.into()),
    };
    let result = &stored.result;
    print_result_showing(result, args.output.json, args.output.show_output)?;
    if !args.output.json {
        outln!(
            "resumed execution {}: {} calls kept, {} re-run (idempotent, running at the crash), {} interrupted",
            id,
            counts.kept,
            counts.rerun,
            counts.interrupted
        )?;
        if stored.summary.status == "cancelled" {
            outln!(
                "interrupted: execution {} is recorded as cancelled again; `toolgraph resume {}` finishes it",
                id,
                id
            )?;
        }
    }
    if let Some(path) = &args.output.timeline {
        let edges: Vec<(usize, usize)> = stored.edges.iter().map(|(f, t, _)| (*f, *t)).collect();
        let drawn = write_timeline(path, result, &edges, &stored.critical);
        report_timeline(path, drawn, args.output.json)?;
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}
