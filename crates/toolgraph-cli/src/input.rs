//! Reading a batch from a file or standard input, and the executor flags shared by
//! `run` and `plan`.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::Args;
use toolgraph_core::{InputError, ParallelExecutorConfig, ToolCall, parse_tool_calls_str};

/// Limits and modes, as flags.
#[derive(Args, Clone, Debug, Default)]
pub struct ExecutorFlags {
    /// Calls running at once, at most.
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
    /// A per-tool limit, e.g. `--tool-limit http_fetch=4` (repeatable).
    #[arg(long = "tool-limit", value_name = "NAME=N")]
    pub tool_limits: Vec<String>,
    /// Default per-call timeout in ms (0 = none).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Run one call at a time, in dependency order.
    #[arg(long)]
    pub sequential: bool,
    /// Cancel the rest of the batch at the first failure.
    #[arg(long)]
    pub fail_fast: bool,
}

impl ExecutorFlags {
    /// The configuration these flags describe, on top of the defaults.
    pub fn config(&self) -> Result<ParallelExecutorConfig> {
        let mut config = ParallelExecutorConfig::default();
        if let Some(n) = self.max_parallel {
            config.max_parallel_calls = n;
        }
        for spec in &self.tool_limits {
            let Some((name, n)) = spec.split_once('=') else {
                bail!("--tool-limit {spec:?}: expected NAME=N");
            };
            let n: usize = n
                .trim()
                .parse()
                .with_context(|| format!("--tool-limit {spec:?}: {n:?} is not a number"))?;
            config
                .per_tool_parallel_limits
                .insert(name.trim().to_owned(), n);
        }
        if let Some(ms) = self.timeout_ms {
            config.default_timeout_ms = ms;
        }
        config.enable_parallel = !self.sequential;
        config.fail_fast = self.fail_fast;
        config.validate()?;
        Ok(config)
    }
}

/// Reads `path` (`-` = standard input).
pub fn read_source(path: &str) -> Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
    }
}

/// Parses the calls, or prints every problem and returns `None`.
pub fn parse_or_report(text: &str) -> Option<Vec<ToolCall>> {
    match parse_tool_calls_str(text) {
        Ok(calls) => Some(calls),
        Err(e) => {
            report_rejection(&e);
            None
        }
    }
}

/// Prints a rejection to standard error.
pub fn report_rejection(e: &InputError) {
    eprintln!("toolgraph: {e}");
    eprintln!("nothing ran.");
}
