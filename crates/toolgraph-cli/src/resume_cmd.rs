//! `toolgraph resume ID`: finish an execution a crash interrupted.
//!
//! Calls that ended keep their recorded outcome (their outputs feed dependants); calls that
//! never started run; calls that were running at the crash run again only when their tool
//! is idempotent, and are otherwise reported `interrupted` (what they did is unknown).

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use toolgraph_core::{CallError, CallStatus, ErrorKind, EventSink};
use toolgraph_engine::{ParallelExecutor, Preset, RunOptions};
use toolgraph_store::ExecutionStore;

use crate::Outcome;
use crate::input::{ExecutorFlags, OutputFlags, open_store, report_rejection};
use crate::progress::Progress;
use crate::run_cmd::{print_result, write_timeline};

#[derive(Args)]
pub struct ResumeArgs {
    /// The execution to finish (see `toolgraph history`).
    pub id: String,
    #[command(flatten)]
    pub output: OutputFlags,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: ResumeArgs) -> Result<Outcome> {
    let config = args.flags.config()?;
    let store = open_store(&config.store.url).await?;
    let point = store.resume_point(&args.id).await?;
    if point.ended.iter().all(Option::is_some) {
        bail!(
            "execution {} has no call left to run: nothing to resume",
            args.id
        );
    }
    // The batch runs with the limits it was recorded with, and today's tools.
    let (tools, _servers) = toolgraph::build_tools(&config).await?;
    let mut executor = ParallelExecutor::new(tools, point.config.clone())?;
    let progress = (!args.output.quiet).then(|| Arc::new(Progress::new()));
    if let Some(p) = &progress {
        executor = executor.with_sink(p.clone());
    }
    let plan = match executor.plan(point.calls.clone()) {
        Ok(plan) => plan,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    let (mut kept, mut rerun, mut interrupted) = (0, 0, 0);
    let mut preset = Vec::with_capacity(plan.len());
    for (i, ended) in point.ended.iter().enumerate() {
        let call = &point.calls[i];
        preset.push(match ended {
            Some(p) => {
                kept += 1;
                Some(p.clone())
            }
            None if point.states[i] == "running" => {
                let idempotent = executor.tools().get(&call.name).is_some_and(|t| t.tool.is_idempotent(&call.arguments));
                if idempotent {
                    rerun += 1;
                    None
                } else {
                    interrupted += 1;
                    Some(Preset {
                        status: CallStatus::Interrupted,
                        output: None,
                        error: Some(CallError {
                            kind: ErrorKind::Interrupted,
                            message: format!(
                                "the process stopped while this call ran; {} is not idempotent, so it was not run again",
                                call.name
                            ),
                        }),
                        attempts: 1,
                    })
                }
            }
            None => None,
        });
    }
    let skip: Vec<bool> = point.ended.iter().map(Option::is_some).collect();
    let offset_ms = (toolgraph_store::now_ms() - point.created_at).max(0) as f64;
    store.mark_resumed(&args.id).await?;
    let recorder = store.recorder(&args.id, plan.len(), skip, offset_ms);
    let sink = Some(&recorder as &dyn EventSink);
    let _ = executor
        .execute_plan_with(
            &plan,
            RunOptions {
                sink,
                preset,
                ..RunOptions::default()
            },
        )
        .await;
    if let Some(p) = &progress {
        p.finish();
    }
    recorder.close().await?;
    let stored = store.finish_execution(&args.id).await?;
    let mut result = stored.result;
    result
        .metadata
        .insert("execution_id".into(), serde_json::json!(args.id));
    result.metadata.insert(
        "resume".into(),
        serde_json::json!({"kept": kept, "rerun": rerun, "interrupted": interrupted}),
    );
    print_result(&result, args.output.json)?;
    if !args.output.json {
        println!(
            "resumed execution {}: {kept} calls kept, {rerun} re-run (idempotent, running at the crash), {interrupted} interrupted",
            args.id
        );
    }
    if let Some(path) = &args.output.timeline {
        let edges: Vec<(usize, usize)> = stored.edges.iter().map(|(f, t, _)| (*f, *t)).collect();
        write_timeline(path, &result, &edges, &stored.critical)?;
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}
