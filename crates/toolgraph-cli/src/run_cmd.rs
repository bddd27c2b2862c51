//! `toolgraph run`: execute a batch with the built-in tools and print the result.

use anyhow::Result;
use clap::Args;
use toolgraph_engine::ParallelExecutor;

use crate::Outcome;
use crate::input::{ExecutorFlags, parse_or_report, read_source, report_rejection};
use crate::render;

#[derive(Args)]
pub struct RunArgs {
    /// The batch: a JSON file, or `-` for standard input.
    pub input: String,
    /// Print the whole result object as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

pub async fn run(args: RunArgs) -> Result<Outcome> {
    let text = read_source(&args.input)?;
    let Some(calls) = parse_or_report(&text) else {
        return Ok(Outcome::Rejected);
    };
    let executor = ParallelExecutor::new(toolgraph_tools::builtins(), args.flags.config()?)?;
    let result = match executor.execute_parallel(calls).await {
        Ok(r) => r,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render::summary(&result));
    }
    Ok(if result.success {
        Outcome::Success
    } else {
        Outcome::CallsFailed
    })
}
