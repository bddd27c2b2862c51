//! Reading a batch from a file or standard input, and the configuration every command
//! shares: `toolgraph.toml` (or `--config`), then `TOOLGRAPH_*` variables, then flags.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use toolgraph::Config;
use toolgraph_core::{InputError, ToolCall, parse_tool_calls_str};
use toolgraph_store::ExecutionStore;

/// Configuration flags; each wins over the file and the environment.
#[derive(Args, Clone, Debug, Default)]
pub struct ExecutorFlags {
    /// Configuration file (default: ./toolgraph.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// The directory the file tools are confined to.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where executions are recorded (`sqlite://FILE`, `postgres://…`, or `memory:` — kept
    /// only while the command runs). Default: toolgraph/toolgraph.db in the user's data
    /// directory.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Do not record this execution.
    #[arg(long)]
    pub no_record: bool,
    /// An MCP server: `NAME=COMMAND ARGS…` (stdio) or `NAME=URL` (streamable HTTP);
    /// repeatable. Its tools are `NAME.tool`.
    #[arg(long = "mcp", value_name = "NAME=COMMAND|URL")]
    pub mcp: Vec<String>,
}

impl ExecutorFlags {
    /// The configuration: file, then environment, then these flags.
    pub fn config(&self) -> Result<Config> {
        let (mut config, _) = Config::load(self.config.as_deref(), std::env::vars())?;
        let executor = &mut config.executor;
        if let Some(n) = self.max_parallel {
            executor.max_parallel_calls = n;
        }
        for spec in &self.tool_limits {
            let Some((name, n)) = spec.split_once('=') else {
                bail!("--tool-limit {spec:?}: expected NAME=N");
            };
            let n: usize = n
                .trim()
                .parse()
                .with_context(|| format!("--tool-limit {spec:?}: {n:?} is not a number"))?;
            executor
                .per_tool_parallel_limits
                .insert(name.trim().to_owned(), n);
        }
        if let Some(ms) = self.timeout_ms {
            executor.default_timeout_ms = ms;
        }
        if self.sequential {
            executor.enable_parallel = false;
        }
        if self.fail_fast {
            executor.fail_fast = true;
        }
        if let Some(root) = &self.root {
            config.files.root = root.clone();
        }
        if let Some(db) = &self.db {
            config.store.url = db.clone();
        }
        if self.no_record {
            config.store.record = false;
        }
        for spec in &self.mcp {
            config.mcp.push(
                toolgraph::mcp::parse_cli_spec(spec).with_context(|| format!("--mcp {spec:?}"))?,
            );
        }
        executor.validate()?;
        Ok(config)
    }

    /// The executor for these flags, with every configured tool, and the MCP servers its
    /// tools talk to (keep them as long as the executor).
    pub async fn executor(&self) -> Result<(toolgraph::ParallelExecutor, Servers)> {
        Ok(toolgraph::build_executor(&self.config()?).await?)
    }
}

/// How a command that runs calls shows its result.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputFlags {
    /// Print the whole result object as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw the execution as a Gantt chart into this file (`.svg`, or `.html` for a page).
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Connected MCP servers.
pub type Servers = Vec<std::sync::Arc<toolgraph::mcp::McpServer>>;

/// Opens the store at `url`, saying which one on failure.
pub async fn open_store(url: &str) -> Result<Arc<dyn ExecutionStore>> {
    toolgraph_store::open(url)
        .await
        .with_context(|| format!("opening the store {}", toolgraph_store::hide_password(url)))
}

/// Flags of the commands that only read the store.
#[derive(Args, Clone, Debug, Default)]
pub struct StoreFlags {
    /// Configuration file (default: ./toolgraph.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The store (`sqlite://FILE` or `postgres://…`; default: toolgraph/toolgraph.db in the
    /// user's data directory). Never created by these commands.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl StoreFlags {
    /// The store these flags name if it exists — the commands that only read create none —
    /// and its URL for messages (any password hidden).
    pub async fn existing_store(&self) -> Result<(Option<Arc<dyn ExecutionStore>>, String)> {
        let flags = ExecutorFlags {
            config: self.config.clone(),
            db: self.db.clone(),
            ..ExecutorFlags::default()
        };
        let url = flags.config()?.store.url;
        let shown = toolgraph_store::hide_password(&url);
        let store = toolgraph_store::open_existing(&url)
            .await
            .with_context(|| format!("opening the store {shown}"))?;
        Ok((store, shown))
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
