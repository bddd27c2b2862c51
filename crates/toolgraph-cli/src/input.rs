//! Reading a batch from a file or standard input, and the configuration flags: each
//! command takes only the groups of flags it honours (table below), applied over
//! `toolgraph.toml` (or `--config`, or `TOOLGRAPH_CONFIG`) and the `TOOLGRAPH_*` variables.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use toolgraph::Config;
use toolgraph_core::{ApprovalPolicy, ApprovalPreset, InputError, ToolCall, parse_tool_calls_str};
use toolgraph_store::ExecutionStore;

use crate::out::errln;

// The configuration flags come in groups, and each command flattens the groups it honours:
//
// | group         | flags                                  | run, chat | resume | plan, tools |
// |---------------|----------------------------------------|-----------|--------|-------------|
// | `ConfigFlag`  | --config                               | yes       | yes    | yes         |
// | `ToolFlags`   | --root, --mcp                          | yes       | yes    | yes         |
// | `LimitFlags`  | --max-parallel, --tool-limit           | yes       | yes    |             |
// | `PolicyFlags` | --timeout-ms, --sequential, --fail-fast| yes       |        |             |
// | `RecordFlags` | --db, --no-record                      | yes       | --db   |             |
// | `ClusterFlags`| --nats, --namespace                    | yes       | yes    |             |
//
// (`serve` and `mcp-serve` take what `run` takes; `worker` takes --config, --root, --mcp and its own.)
//
// (`resume` runs with the timeouts, mode and fail-fast it was recorded with; the shared
// limits of this process still apply.)

/// `--config`: the file every other setting starts from.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigFlag {
    /// Configuration file (default: the file TOOLGRAPH_CONFIG names, else ./toolgraph.toml
    /// when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigFlag {
    /// The file, then the environment.
    pub fn load(&self) -> Result<Config> {
        let (config, _) = Config::load(self.config.as_deref(), std::env::vars())?;
        Ok(config)
    }
}

/// Which tools exist: where the file tools look, which MCP servers join.
#[derive(Args, Clone, Debug, Default)]
pub struct ToolFlags {
    /// The directory the file tools are confined to.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// An MCP server: `NAME=COMMAND ARGS…` (stdio) or `NAME=URL` (streamable HTTP);
    /// repeatable. Its tools are `NAME.tool`.
    #[arg(long = "mcp", value_name = "NAME=COMMAND|URL")]
    pub mcp: Vec<String>,
}

/// Where `http_fetch` may connect, for the commands that run calls.
#[derive(Args, Clone, Debug, Default)]
pub struct NetworkFlag {
    /// Let `http_fetch` reach loopback, private and link-local addresses (refused by
    /// default, also after DNS and redirects); `[http] allow_private = true` in the file.
    #[arg(long)]
    pub allow_private_network: bool,
}

impl NetworkFlag {
    fn apply(&self, config: &mut Config) {
        if self.allow_private_network {
            config.http.allow_private = true;
        }
    }
}

impl ToolFlags {
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(root) = &self.root {
            config.files.root = root.clone();
        }
        for spec in &self.mcp {
            config.mcp.push(
                toolgraph::mcp::parse_cli_spec(spec).with_context(|| format!("--mcp {spec:?}"))?,
            );
        }
        Ok(())
    }
}

/// Which calls run, ask or are refused (`--approval`); replaces the `[approvals]` section.
#[derive(Args, Clone, Debug, Default)]
pub struct ApprovalFlag {
    /// The approval policy: `auto` (everything runs), `ask-writes` (read-only calls run,
    /// the rest ask), `ask-all`, `deny-writes` (read-only calls run, the rest are refused).
    /// Replaces the `[approvals]` section for this command.
    #[arg(long = "approval", value_name = "POLICY", value_parser = parse_preset)]
    pub preset: Option<ApprovalPreset>,
}

impl ApprovalFlag {
    /// The policy: the flag's preset alone, else `[approvals]` with `fallback` as its
    /// preset when it names none.
    pub fn policy(&self, config: &Config, fallback: ApprovalPreset) -> ApprovalPolicy {
        match self.preset {
            Some(preset) => ApprovalPolicy::preset(preset),
            None => config.approvals.clone().or_preset(fallback),
        }
    }
}

fn parse_preset(text: &str) -> std::result::Result<ApprovalPreset, String> {
    ApprovalPreset::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = ApprovalPreset::ALL.iter().map(|p| p.as_str()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// The limits shared by everything this process runs.
#[derive(Args, Clone, Debug, Default)]
pub struct LimitFlags {
    /// Calls running at once, at most.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_parallel: Option<u64>,
    /// A per-tool limit, e.g. `--tool-limit http_fetch=4` (repeatable; the tool must exist).
    #[arg(long = "tool-limit", value_name = "NAME=N", value_parser = parse_tool_limit)]
    pub tool_limits: Vec<(String, usize)>,
}

impl LimitFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(n) = self.max_parallel {
            config.executor.max_parallel_calls = usize::try_from(n).unwrap_or(usize::MAX);
        }
        for (name, n) in &self.tool_limits {
            config
                .executor
                .per_tool_parallel_limits
                .insert(name.clone(), *n);
        }
    }
}

/// `NAME=N` with N ≥ 1.
fn parse_tool_limit(spec: &str) -> std::result::Result<(String, usize), String> {
    let Some((name, n)) = spec.split_once('=') else {
        return Err("expected NAME=N, e.g. http_fetch=4".into());
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("the tool name is missing (NAME=N)".into());
    }
    match n.trim().parse::<usize>() {
        Ok(0) => Err(format!("the limit for {name} must be at least 1")),
        Ok(n) => Ok((name.to_owned(), n)),
        Err(_) => Err(format!("{:?} is not a whole number", n.trim())),
    }
}

/// How one execution runs.
#[derive(Args, Clone, Debug, Default)]
pub struct PolicyFlags {
    /// Default per-call timeout in ms (0 = none).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Run one call at a time, in dependency order.
    #[arg(long, conflicts_with = "max_parallel")]
    pub sequential: bool,
    /// Cancel the rest of the batch at the first failure.
    #[arg(long)]
    pub fail_fast: bool,
}

impl PolicyFlags {
    fn apply(&self, config: &mut Config) {
        if let Some(ms) = self.timeout_ms {
            config.executor.default_timeout_ms = ms;
        }
        if self.sequential {
            config.executor.enable_parallel = false;
        }
        if self.fail_fast {
            config.executor.fail_fast = true;
        }
    }
}

/// Where (and whether) executions are recorded.
#[derive(Args, Clone, Debug, Default)]
pub struct RecordFlags {
    /// Where executions are recorded (`sqlite://FILE`, `postgres://…`, or `memory:` — kept
    /// only while the command runs). Default: toolgraph/toolgraph.db in the user's data
    /// directory.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Do not record this execution.
    #[arg(long, conflicts_with = "db")]
    pub no_record: bool,
}

/// The store a command reads or resumes from.
#[derive(Args, Clone, Debug, Default)]
pub struct DbFlag {
    /// The store (`sqlite://FILE` or `postgres://…`; `memory:` is empty in a new process;
    /// default: toolgraph/toolgraph.db in the user's data directory). Reading commands never
    /// create it.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
}

impl DbFlag {
    fn apply(&self, config: &mut Config) {
        if let Some(db) = &self.db {
            config.store.url = db.clone();
        }
    }
}

/// Where calls run: on the workers of a NATS cluster instead of in this process.
#[derive(Args, Clone, Debug, Default)]
pub struct ClusterFlags {
    /// The cluster's NATS server (`nats://HOST:PORT`; also `[cluster] nats_url`,
    /// TOOLGRAPH_NATS_URL); `run`, `resume`, `chat` and `serve` run every call on its workers.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The cluster's namespace (default: `default`; `[cluster] namespace`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
}

impl ClusterFlags {
    pub fn apply(&self, config: &mut Config) {
        if let Some(url) = &self.nats {
            config.cluster.nats_url = Some(url.clone());
        }
        if let Some(ns) = &self.namespace {
            config.cluster.namespace = ns.clone();
        }
    }
}

/// Whether results of idempotent calls are cached.
#[derive(Args, Clone, Debug, Default)]
pub struct CacheFlag {
    /// Cache the results of idempotent calls and run identical ones in flight once (also
    /// `[cache] enabled`, TOOLGRAPH_CACHE_ENABLED; the backend is `[cache] backend`, by
    /// default the store).
    #[arg(long)]
    pub cache: bool,
}

impl CacheFlag {
    pub fn apply(&self, config: &mut Config) {
        if self.cache {
            config.cache.enabled = true;
        }
    }
}

/// The flags of the commands that run calls (`run`, `chat`, `serve`); each wins over the
/// file and the environment.
#[derive(Args, Clone, Debug, Default)]
pub struct ExecutorFlags {
    #[command(flatten)]
    pub config: ConfigFlag,
    #[command(flatten)]
    pub tools: ToolFlags,
    #[command(flatten)]
    pub network: NetworkFlag,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub policy: PolicyFlags,
    #[command(flatten)]
    pub record: RecordFlags,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub cache: CacheFlag,
}

impl ExecutorFlags {
    /// The configuration: file, then environment, then these flags.
    pub fn config(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        self.tools.apply(&mut config)?;
        self.network.apply(&mut config);
        self.limits.apply(&mut config);
        self.policy.apply(&mut config);
        if let Some(db) = &self.record.db {
            config.store.url = db.clone();
        }
        if self.record.no_record {
            config.store.record = false;
        }
        self.cluster.apply(&mut config);
        self.cache.apply(&mut config);
        config.executor.validate()?;
        Ok(config)
    }
}

/// The flags of `resume`: it runs with the policy it was recorded with, under this
/// process's limits, and always records.
#[derive(Args, Clone, Debug, Default)]
pub struct ResumeFlags {
    #[command(flatten)]
    pub config: ConfigFlag,
    #[command(flatten)]
    pub tools: ToolFlags,
    #[command(flatten)]
    pub network: NetworkFlag,
    #[command(flatten)]
    pub limits: LimitFlags,
    #[command(flatten)]
    pub store: DbFlag,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub cache: CacheFlag,
}

impl ResumeFlags {
    /// The configuration: file, then environment, then these flags.
    pub fn config(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        self.tools.apply(&mut config)?;
        self.network.apply(&mut config);
        self.limits.apply(&mut config);
        self.store.apply(&mut config);
        self.cluster.apply(&mut config);
        self.cache.apply(&mut config);
        config.executor.validate()?;
        Ok(config)
    }
}

/// The flags of the commands that only look at the tools (`plan`, `tools`).
#[derive(Args, Clone, Debug, Default)]
pub struct ToolSetFlags {
    #[command(flatten)]
    pub config: ConfigFlag,
    #[command(flatten)]
    pub tools: ToolFlags,
}

impl ToolSetFlags {
    /// The configuration: file, then environment, then these flags.
    pub fn config(&self) -> Result<Config> {
        let mut config = self.config.load()?;
        self.tools.apply(&mut config)?;
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
    /// Checked before anything runs.
    #[arg(long, value_name = "FILE.svg", value_parser = crate::timeline::output_path)]
    pub timeline: Option<PathBuf>,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
    /// Show each call's output (or error) in the table, cut to 48 columns.
    #[arg(long)]
    pub show_output: bool,
}

/// Connected MCP servers.
pub type Servers = Vec<std::sync::Arc<toolgraph::mcp::McpServer>>;

/// Opens the store at `url`, saying which one on failure.
pub async fn open_store(url: &str) -> Result<Arc<dyn ExecutionStore>> {
    let store = toolgraph_store::open(url)
        .await
        .with_context(|| format!("opening the store {}", toolgraph_store::hide_password(url)))?;
    tracing::info!(store = %store.describe(), "store opened");
    Ok(store)
}

/// Where the commands that only read the store find it.
#[derive(Args, Clone, Debug, Default)]
pub struct StoreLocation {
    #[command(flatten)]
    pub config: ConfigFlag,
    #[command(flatten)]
    pub store: DbFlag,
}

impl StoreLocation {
    /// The store these flags (or the configuration) name if it exists — the commands that
    /// only read create none — and its URL for messages (any password hidden).
    pub async fn existing_store(&self) -> Result<(Option<Arc<dyn ExecutionStore>>, String)> {
        let mut config = self.config.load()?;
        self.store.apply(&mut config);
        open_existing_store(&config.store.url).await
    }
}

/// The store at `url` if it exists (nothing is created), and the URL for messages (any
/// password hidden).
pub async fn open_existing_store(url: &str) -> Result<(Option<Arc<dyn ExecutionStore>>, String)> {
    let shown = toolgraph_store::hide_password(url);
    let store = toolgraph_store::open_existing(url)
        .await
        .with_context(|| format!("opening the store {shown}"))?;
    Ok((store, shown))
}

/// Flags of the commands that read the store and print what they found.
#[derive(Args, Clone, Debug, Default)]
pub struct StoreFlags {
    #[command(flatten)]
    pub location: StoreLocation,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl StoreFlags {
    /// The store these flags name if it exists (see [`StoreLocation::existing_store`]).
    pub async fn existing_store(&self) -> Result<(Option<Arc<dyn ExecutionStore>>, String)> {
        self.location.existing_store().await
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
    errln!("toolgraph: {e}");
    errln!("nothing ran.");
}
