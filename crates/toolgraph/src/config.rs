//! The whole configuration and how it is loaded: file, then environment.
//!
//! ```toml
//! [executor]              # the seed's ParallelExecutorConfig
//! max_parallel_calls = 8
//! [executor.per_tool_parallel_limits]
//! http_fetch = 4
//! [files]
//! root = "."
//! [http]
//! allow_hosts = ["api.example.com"]
//! [shell]
//! enabled = true
//! allow = ["ls", "wc"]
//! [executor.adaptive]     # adaptive concurrency per tool and host (off by default)
//! enabled = true
//! [executor.per_resource_rate_limits."host:api.example.com"]
//! requests_per_second = 5
//! burst = 2
//! [tools.http_fetch]      # operator overrides of a tool's own traits
//! max_concurrency = 2
//! requests_per_second = 10   # a token bucket for the tool (with `burst`)
//! [serve]                 # `toolgraph serve`
//! bind = "127.0.0.1:7878"
//! [cache]                 # idempotent calls (off by default; `--cache`)
//! enabled = true
//! backend = "store"       # or "memory", "redis" (with redis_url)
//! [approvals]             # auto | ask-writes | ask-all | deny-writes
//! default = "ask-writes"
//! [approvals.classes]     # read_only | write | network_write | shell | destructive
//! network_write = "deny"
//! [approvals.tools]       # a tool by name wins over its class
//! file_write = "auto"
//! ```
//!
//! The file is `path` when the caller gives one (the CLI's `--config`), else the one
//! `TOOLGRAPH_CONFIG` names, else `./toolgraph.toml` when it exists.
//!
//! Every field can be set by an environment variable: `TOOLGRAPH_` + the path in capitals
//! joined by `_` (`TOOLGRAPH_FILES_ROOT`, `TOOLGRAPH_HTTP_ALLOW_HOSTS=a.com,b.com`,
//! `TOOLGRAPH_LLM_MODEL`); the executor's fields also without their section
//! (`TOOLGRAPH_MAX_PARALLEL_CALLS=8`). Values are read as TOML values (numbers, booleans,
//! arrays, inline tables), else as strings. A value that does not fit its field is an error
//! naming the variable.
//!
//! The `[llm]` section also takes its provider's conventional variables (`OPENAI_BASE_URL`,
//! `OPENAI_API_KEY`, `OPENAI_MODEL`, or the `ANTHROPIC_` ones) over what the file says;
//! `TOOLGRAPH_LLM_*` wins over both. This module reads no environment itself: the caller
//! passes it in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use toolgraph_core::{ParallelExecutorConfig, ToolOverride};
use toolgraph_mcp::McpServerConfig;
use toolgraph_tools::fs::FilesConfig;
use toolgraph_tools::http::HttpConfig;
use toolgraph_tools::shell::ShellConfig;

/// Environment variables that configure toolgraph start with this.
pub const ENV_PREFIX: &str = "TOOLGRAPH_";

/// The variable that names the configuration file.
pub const CONFIG_VARIABLE: &str = "TOOLGRAPH_CONFIG";

/// Variables with the prefix that are not configuration fields: the file, the log filter
/// (read by the command line) and the test switch.
const RESERVED: [&str; 3] = [
    "TOOLGRAPH_CONFIG",
    "TOOLGRAPH_LOG",
    "TOOLGRAPH_REQUIRE_SERVICES",
];

/// Everything toolgraph can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limits and policies of the executor.
    pub executor: ParallelExecutorConfig,
    /// The file tools.
    pub files: FilesConfig,
    /// `http_fetch`.
    pub http: HttpConfig,
    /// `shell` (off by default).
    pub shell: ShellConfig,
    /// Per tool name: the operator's overrides of its traits.
    pub tools: BTreeMap<String, ToolOverride>,
    /// Where executions are recorded.
    pub store: StoreConfig,
    /// MCP servers whose tools join the registry (`[[mcp]]` entries).
    pub mcp: Vec<McpServerConfig>,
    /// The model `toolgraph chat` talks to (default: from `OPENAI_*` / `ANTHROPIC_*`).
    pub llm: Option<toolgraph_llm::LlmConfig>,
    /// The HTTP service (`toolgraph serve`).
    pub serve: ServeConfig,
    /// Workers over NATS JetStream (`toolgraph worker`, `run --nats`).
    pub cluster: ClusterConfig,
    /// The cache of idempotent calls (`[cache]`, `--cache`; off by default).
    pub cache: CacheConfig,
    /// Which calls run, ask a person, or are refused (`[approvals]`): `chat` defaults to
    /// `ask-writes`; `run` and `serve`, which have no person by default, to `auto`.
    pub approvals: toolgraph_core::ApprovalPolicy,
}

/// Where a cache keeps its entries (`[cache] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackendKind {
    /// The store's database (`tool_cache` table): repeated CLI runs benefit.
    #[default]
    Store,
    /// This process only, bounded by `max_entries`.
    Memory,
    /// A Redis server (`redis_url`) shared by every process and worker.
    Redis,
}

/// The cache of idempotent calls (`[cache]`, `TOOLGRAPH_CACHE_*`). Per tool, `[tools.NAME]`
/// takes `cache = false`, `cache_ttl_ms` and `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache results of idempotent calls, and run identical ones in flight once.
    pub enabled: bool,
    /// `store` (default), `memory` or `redis`.
    pub backend: CacheBackendKind,
    /// How long a result answers, in ms.
    pub ttl_ms: u64,
    /// How long a *permanent* error answers, in ms (0 = errors are never cached).
    pub negative_ttl_ms: u64,
    /// The most entries the `memory` backend (or memory front) holds.
    pub max_entries: u64,
    /// The Redis server of the `redis` backend (`redis://127.0.0.1:6379`).
    pub redis_url: Option<String>,
    /// What every Redis key starts with (isolates caches sharing one server).
    pub key_prefix: String,
    /// Put a `memory` cache in front of `store` or `redis` (for a long-lived service).
    pub memory_front: bool,
    /// The lease of a running call's lock in Redis, in ms (renewed every third of it while
    /// the call runs): another process takes the call over when its holder died.
    pub lock_lease_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            backend: CacheBackendKind::Store,
            ttl_ms: 3_600_000,
            negative_ttl_ms: 0,
            max_entries: 10_000,
            redis_url: None,
            key_prefix: "toolgraph:cache:".into(),
            memory_front: false,
            lock_lease_ms: 30_000,
        }
    }
}

/// Where calls run when they run on workers (`[cluster]`, `TOOLGRAPH_CLUSTER_*`,
/// `TOOLGRAPH_NATS_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server (`nats://127.0.0.1:4222`). When set, `run`, `resume`, `chat` and
    /// `serve` dispatch every call to the namespace's workers; `worker` serves them.
    pub nats_url: Option<String>,
    /// Isolates clusters sharing one NATS server (streams, subjects, buckets prefixed).
    pub namespace: String,
    /// How often workers heartbeat, in ms; three missed and a worker is taken for dead.
    pub heartbeat_ms: u64,
    /// How long JetStream waits for a worker's acknowledgement before redelivering a call,
    /// in ms (a running call's lease is renewed every third of it).
    pub ack_wait_ms: u64,
    /// How long a call waits for a live worker serving its tool before it fails, in ms.
    pub no_worker_wait_ms: u64,
    /// How long past a call's timeout the coordinator waits for its result, in ms.
    pub grace_ms: u64,
    /// Cluster-wide limits per tool, held across every coordinator and worker (set on the
    /// tool's JetStream consumer by the workers serving it).
    pub tool_limits: BTreeMap<String, usize>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: None,
            namespace: "default".into(),
            heartbeat_ms: 1_000,
            ack_wait_ms: 30_000,
            no_worker_wait_ms: 10_000,
            grace_ms: 5_000,
            tool_limits: BTreeMap::new(),
        }
    }
}

/// How `toolgraph serve` listens and protects itself (`[serve]`, `TOOLGRAPH_SERVE_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where to listen. A non-loopback address is refused unless a token is set.
    pub bind: std::net::SocketAddr,
    /// The bearer token every request but `/healthz` must carry (`Authorization: Bearer …`).
    pub token: Option<String>,
    /// The largest request body accepted, in bytes (larger: `413`).
    pub body_limit_bytes: u64,
    /// How long a request may take, in ms (0 = no limit): `503` past it. Event streams and
    /// requests that wait for an execution are exempt (the execution's own timeouts bound them).
    pub request_timeout_ms: u64,
    /// Requests handled at once, at most; more wait their turn.
    pub concurrency_limit: usize,
    /// On SIGTERM / SIGINT: how long running executions may go on before they are
    /// cancelled (and recorded `cancelled`, resumable), in ms.
    pub shutdown_grace_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 7878)),
            token: None,
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout_ms: 30_000,
            concurrency_limit: 1024,
            shutdown_grace_ms: 30_000,
        }
    }
}

/// Where and whether executions are recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://FILE` (created on first use, with its directory) or `postgres://…`;
    /// `TOOLGRAPH_DATABASE_URL` sets it too. Default: `toolgraph/toolgraph.db` in the user's
    /// data directory ([`default_store_url`]).
    pub url: String,
    /// Record every execution.
    pub record: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
            record: true,
        }
    }
}

/// Where executions are recorded unless configured otherwise: `toolgraph/toolgraph.db` in
/// the user's data directory (`$XDG_DATA_HOME`, else `~/.local/share` on Linux;
/// `~/Library/Application Support` on macOS; `%APPDATA%` on Windows), as a `sqlite://` URL —
/// or `sqlite://toolgraph.db` in the current directory when no home directory can be found.
/// Recording creates the file and its directory.
pub fn default_store_url() -> String {
    match dirs::data_dir() {
        Some(dir) => toolgraph_store::sqlite_url(&dir.join("toolgraph").join("toolgraph.db")),
        None => "sqlite://toolgraph.db".to_owned(),
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read (the cause is the error's source).
    #[error("reading the configuration file {path}{}", via(.variable))]
    Read {
        /// Set when the file came from `TOOLGRAPH_CONFIG`.
        variable: Option<&'static str>,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key and the line.
        message: String,
    },
    /// A `TOOLGRAPH_*` variable names no field.
    #[error("environment variable {name} names no configuration field (known: {known})")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// Some known names.
        known: String,
    },
    /// A variable's value does not fit its field.
    #[error("environment variable {name}: {message}")]
    Variable {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error(transparent)]
    Invalid(#[from] toolgraph_core::ConfigError),
}

/// ` (from TOOLGRAPH_CONFIG)` when the file was named by that variable.
fn via(variable: &Option<&'static str>) -> String {
    variable.map_or_else(String::new, |v| format!(" (from {v})"))
}

impl Config {
    /// Loads the configuration: `path` if given, else the file `TOOLGRAPH_CONFIG` names
    /// among `env`, else `./toolgraph.toml` if it exists, else the defaults; then the
    /// `TOOLGRAPH_*` variables among `env` (and, for an `[llm]` section, its provider's
    /// `OPENAI_*` / `ANTHROPIC_*` ones). Returns the file used.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Option<PathBuf>), ConfigLoadError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let named = env
            .iter()
            .find(|(k, v)| k == CONFIG_VARIABLE && !v.trim().is_empty())
            .map(|(_, v)| PathBuf::from(v));
        let (file, variable) = match (path, named) {
            (Some(p), _) => (Some(p.to_path_buf()), None),
            (None, Some(p)) => (Some(p), Some(CONFIG_VARIABLE)),
            (None, None) => (
                Some(PathBuf::from("toolgraph.toml")).filter(|p| p.is_file()),
                None,
            ),
        };
        let mut table = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigLoadError::Read {
                    variable,
                    path: p.clone(),
                    source,
                })?;
                // Deserialising the file alone gives messages with its line numbers.
                toml::from_str::<Config>(&text).map_err(|e| ConfigLoadError::File {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
                let mut table =
                    toml::from_str::<Table>(&text).map_err(|e| ConfigLoadError::File {
                        path: p.clone(),
                        message: e.to_string(),
                    })?;
                relative_to_file(&mut table, p);
                table
            }
            None => Table::new(),
        };
        let set_by_variables = apply_env(&mut table, &env)?;
        apply_provider_env(&mut table, &env, &set_by_variables);
        let config =
            Config::deserialize(Value::Table(table)).map_err(|e| ConfigLoadError::Variable {
                name: "OPENAI_* / ANTHROPIC_*".into(),
                message: one_line(&e.to_string()),
            })?;
        config.executor.validate()?;
        for (name, settings) in &config.tools {
            let field = format!("tools.{name}");
            match settings.rate_limit() {
                Some(rate) => rate.validate(&field)?,
                None if settings.burst.is_some() => {
                    return Err(toolgraph_core::ConfigError {
                        field: format!("{field}.burst"),
                        message: "needs requests_per_second beside it".into(),
                    }
                    .into());
                }
                None => {}
            }
        }
        tracing::info!(
            file = %file.as_deref().map_or_else(|| "(none: defaults)".into(), |p| p.display().to_string()),
            "configuration loaded"
        );
        Ok((config, file))
    }

    /// The executor configuration with `http.per_host_limit` as the limit of the `host`
    /// resource kind, unless one is set already, and each `[tools.NAME]`
    /// `requests_per_second` / `burst` as that tool's rate limit, unless
    /// `executor.per_tool_rate_limits` sets one.
    pub fn executor_with_host_limit(&self) -> ParallelExecutorConfig {
        let mut executor = self.executor.clone();
        if self.http.per_host_limit > 0 {
            executor
                .per_resource_parallel_limits
                .entry("host".into())
                .or_insert(self.http.per_host_limit);
        }
        for (name, settings) in &self.tools {
            if let Some(rate) = settings.rate_limit() {
                executor
                    .per_tool_rate_limits
                    .entry(name.clone())
                    .or_insert(rate);
            }
        }
        executor
    }
}

/// A relative `files.root` in a file means relative to that file's directory.
fn relative_to_file(table: &mut Table, file: &Path) {
    let Some(Value::Table(files)) = table.get_mut("files") else {
        return;
    };
    let Some(Value::String(root)) = files.get_mut("root") else {
        return;
    };
    let base = file.parent().unwrap_or(Path::new(""));
    if Path::new(root.as_str()).is_relative() && !base.as_os_str().is_empty() {
        *root = base.join(root.as_str()).to_string_lossy().into_owned();
    }
}

/// A configuration with every optional field set, so that serialising it shows them all.
fn full_config() -> Config {
    let mut full = Config::default();
    full.executor.resource_limit_cpu = Some(1.0);
    full.executor.resource_limit_memory_mb = Some(1);
    full.llm = Some(toolgraph_llm::LlmConfig {
        api_key: Some(String::new()),
        ..toolgraph_llm::LlmConfig::default()
    });
    full.serve.token = Some(String::new());
    full.cluster.nats_url = Some(String::new());
    full.cache.redis_url = Some(String::new());
    full.approvals.preset = Some(toolgraph_core::ApprovalPreset::AskWrites);
    full
}

/// Every settable field: variable name (without the prefix) → path in the table, and
/// whether the field is a list.
fn field_paths() -> HashMap<String, (Vec<String>, bool)> {
    // A configuration with every optional field set, so that serialising it shows them all.
    let mut paths = HashMap::new();
    let full = full_config();
    if let Ok(Value::Table(t)) = Value::try_from(&full) {
        collect(&t, &mut Vec::new(), &mut paths);
    }
    paths
}

fn collect(
    table: &Table,
    prefix: &mut Vec<String>,
    out: &mut HashMap<String, (Vec<String>, bool)>,
) {
    for (key, value) in table {
        prefix.push(key.clone());
        match value {
            // Maps keyed by name (limits, tool overrides) are set whole, as inline tables.
            Value::Table(t) if !t.is_empty() && !is_map_field(prefix) => collect(t, prefix, out),
            _ => {
                let list = matches!(value, Value::Array(_));
                let name = prefix.join("_").to_uppercase();
                out.insert(name, (prefix.clone(), list));
                if prefix.first().map(String::as_str) == Some("executor") {
                    out.insert(prefix[1..].join("_").to_uppercase(), (prefix.clone(), list));
                }
            }
        }
        prefix.pop();
    }
}

fn is_map_field(path: &[String]) -> bool {
    matches!(
        path.last().map(String::as_str),
        Some(
            "per_tool_parallel_limits"
                | "per_resource_parallel_limits"
                | "per_tool_rate_limits"
                | "per_resource_rate_limits"
                | "tools"
                | "tool_limits"
        )
    )
}

/// Applies the `TOOLGRAPH_*` variables among `env` to `table`, in name order, checking the
/// configuration after each so that a value that does not fit is blamed on its variable.
/// Returns the `[llm]` fields they set.
fn apply_env(table: &mut Table, env: &[(String, String)]) -> Result<Vec<String>, ConfigLoadError> {
    let mut paths = field_paths();
    // The conventional name for the database URL.
    paths.insert(
        "DATABASE_URL".into(),
        (vec!["store".into(), "url".into()], false),
    );
    // The short name for the cluster's server.
    paths.insert(
        "NATS_URL".into(),
        (vec!["cluster".into(), "nats_url".into()], false),
    );
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX)
                && !k.starts_with("TOOLGRAPH_TEST_")
                && !RESERVED.contains(&k.as_str())
        })
        .collect();
    vars.sort();
    let mut llm_fields = Vec::new();
    for (name, raw) in vars {
        let field = &name[ENV_PREFIX.len()..];
        let Some((path, list)) = paths.get(field) else {
            let mut known: Vec<String> = paths
                .keys()
                .filter(|k| !k.starts_with("EXECUTOR_"))
                .map(|k| format!("{ENV_PREFIX}{k}"))
                .collect();
            known.sort();
            return Err(ConfigLoadError::UnknownVariable {
                name: name.clone(),
                known: known.join(", "),
            });
        };
        let value = parse_value(raw, *list);
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut at = &mut *table;
        for key in parents {
            let slot = at
                .entry(key.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            at = match slot {
                Value::Table(t) => t,
                _ => {
                    return Err(ConfigLoadError::Variable {
                        name: name.clone(),
                        message: format!("{key} is not a section"),
                    });
                }
            };
        }
        at.insert(last.clone(), value);
        if let Err(e) = Config::deserialize(Value::Table(table.clone())) {
            return Err(ConfigLoadError::Variable {
                name: name.clone(),
                message: one_line(&e.to_string()),
            });
        }
        if path.first().map(String::as_str) == Some("llm") {
            llm_fields.push(last.clone());
        }
    }
    Ok(llm_fields)
}

/// When there is an `[llm]` section, its provider's conventional variables (`OPENAI_MODEL`,
/// …) set the fields no `TOOLGRAPH_LLM_*` variable set: they win over the file.
fn apply_provider_env(table: &mut Table, env: &[(String, String)], set_by_variables: &[String]) {
    let Some(Value::Table(llm)) = table.get_mut("llm") else {
        return;
    };
    let provider = match llm.get("provider") {
        None => toolgraph_llm::Provider::default(),
        Some(value) => match toolgraph_llm::Provider::deserialize(value.clone()) {
            Ok(provider) => provider,
            // Reported when the whole configuration is read.
            Err(_) => return,
        },
    };
    for (field, value) in toolgraph_llm::provider_env(provider, env.iter().cloned()) {
        if !set_by_variables.iter().any(|f| f == field) {
            llm.insert(field.to_owned(), Value::String(value));
        }
    }
}

/// A deserialiser's message on one line (`… expected usize in `executor.max_parallel_calls``).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A variable's value as TOML (`8`, `true`, `[1, 2]`, `{ a = 1 }`), else a comma-separated
/// list for list fields, else a string.
fn parse_value(raw: &str, list: bool) -> Value {
    if let Ok(mut t) = toml::from_str::<Table>(&format!("v = {raw}"))
        && let Some(v) = t.remove("v")
    {
        return v;
    }
    if list {
        let items = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
        return Value::Array(items.map(|s| Value::String(s.to_owned())).collect());
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("toolgraph.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    #[test]
    fn file_then_environment_each_win_over_the_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[executor]\nmax_parallel_calls = 4\ndefault_timeout_ms = 500\n[http]\nallow_hosts = [\"a.test\"]\n[shell]\nenabled = true\nallow = [\"ls\"]\n",
        );
        let (c, used) = Config::load(Some(&p), env(&[])).expect("loads");
        assert_eq!(used.as_deref(), Some(p.as_path()));
        assert_eq!(c.executor.max_parallel_calls, 4);
        assert_eq!(c.executor.default_timeout_ms, 500);
        assert_eq!(c.http.allow_hosts, ["a.test"]);
        assert!(c.shell.enabled);

        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("TOOLGRAPH_MAX_PARALLEL_CALLS", "9"),
                ("TOOLGRAPH_EXECUTOR_RETRY_MAX_ATTEMPTS", "5"),
                ("TOOLGRAPH_HTTP_ALLOW_HOSTS", "b.test, c.test"),
                ("TOOLGRAPH_SHELL_ENABLED", "false"),
                ("TOOLGRAPH_RESOURCE_LIMIT_CPU", "2.5"),
                (
                    "TOOLGRAPH_EXECUTOR_PER_TOOL_PARALLEL_LIMITS",
                    "{ sleep = 2 }",
                ),
                ("TOOLGRAPH_TOOLS", "{ sleep = { max_concurrency = 1 } }"),
                ("TOOLGRAPH_FILES_ROOT", "/tmp"),
                ("TOOLGRAPH_DATABASE_URL", "postgres://db.test/tg"),
                ("TOOLGRAPH_STORE_RECORD", "false"),
                ("TOOLGRAPH_TEST_PG_URL", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.executor.max_parallel_calls, 9);
        assert_eq!(
            c.executor.default_timeout_ms, 500,
            "untouched fields keep the file's value"
        );
        assert_eq!(c.executor.retry.max_attempts, 5);
        assert_eq!(c.http.allow_hosts, ["b.test", "c.test"]);
        assert!(!c.shell.enabled);
        assert_eq!(c.executor.resource_limit_cpu, Some(2.5));
        assert_eq!(c.executor.per_tool_parallel_limits.get("sleep"), Some(&2));
        assert_eq!(
            c.tools.get("sleep").and_then(|o| o.max_concurrency),
            Some(1)
        );
        assert_eq!(c.files.root, PathBuf::from("/tmp"));
        assert_eq!(c.store.url, "postgres://db.test/tg");
        assert!(!c.store.record);
    }

    #[test]
    fn a_relative_file_root_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "[files]\nroot = \"data\"\n");
        let (c, _) = Config::load(Some(&p), env(&[])).expect("loads");
        assert_eq!(c.files.root, dir.path().join("data"));
        let (c, _) =
            Config::load(Some(&p), env(&[("TOOLGRAPH_FILES_ROOT", "elsewhere")])).expect("loads");
        assert_eq!(
            c.files.root,
            PathBuf::from("elsewhere"),
            "a variable's path is the caller's"
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "[executor]\nmax_paralel_calls = 4\n");
        let err = Config::load(Some(&p), env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(err.contains("max_paralel_calls"), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let p = write(dir.path(), "[htttp]\nallow_hosts = []\n");
        let err = Config::load(Some(&p), env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(err.contains("htttp"), "{err}");

        let err = Config::load(None, env(&[("TOOLGRAPH_MAX_PARALEL_CALLS", "3")]))
            .expect_err("typo")
            .to_string();
        assert!(
            err.contains("TOOLGRAPH_MAX_PARALEL_CALLS names no configuration field"),
            "{err}"
        );
        assert!(
            err.contains("TOOLGRAPH_MAX_PARALLEL_CALLS"),
            "the known names are listed: {err}"
        );
    }

    #[test]
    fn mistyped_and_invalid_values_are_refused() {
        let err = Config::load(None, env(&[("TOOLGRAPH_MAX_PARALLEL_CALLS", "many")]))
            .expect_err("not a number")
            .to_string();
        assert!(
            err.starts_with("environment variable TOOLGRAPH_MAX_PARALLEL_CALLS: invalid type"),
            "the variable is named: {err}"
        );
        assert!(err.contains("executor.max_parallel_calls"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        // Among several variables, the one at fault is named.
        let err = Config::load(
            None,
            env(&[
                ("TOOLGRAPH_FILES_ROOT", "/data"),
                ("TOOLGRAPH_HTTP_PER_HOST_LIMIT", "lots"),
                ("TOOLGRAPH_SHELL_ENABLED", "true"),
            ]),
        )
        .expect_err("not a number")
        .to_string();
        assert!(
            err.starts_with("environment variable TOOLGRAPH_HTTP_PER_HOST_LIMIT:"),
            "{err}"
        );
        let err =
            Config::load(None, env(&[("TOOLGRAPH_MAX_PARALLEL_CALLS", "0")])).expect_err("zero");
        assert!(
            err.to_string()
                .contains("max_parallel_calls: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn toolgraph_config_names_the_file_and_an_explicit_path_wins_over_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let by_var = dir.path().join("by-variable.toml");
        std::fs::write(&by_var, "[executor]\nmax_parallel_calls = 3\n").expect("write");
        let by_flag = dir.path().join("by-flag.toml");
        std::fs::write(&by_flag, "[executor]\nmax_parallel_calls = 5\n").expect("write");
        let var = by_var.to_string_lossy().into_owned();

        let (c, used) = Config::load(None, env(&[(CONFIG_VARIABLE, &var)])).expect("loads");
        assert_eq!(c.executor.max_parallel_calls, 3);
        assert_eq!(used.as_deref(), Some(by_var.as_path()));
        let (c, used) =
            Config::load(Some(&by_flag), env(&[(CONFIG_VARIABLE, &var)])).expect("loads");
        assert_eq!(c.executor.max_parallel_calls, 5, "the path given wins");
        assert_eq!(used.as_deref(), Some(by_flag.as_path()));

        let missing = dir.path().join("nope.toml");
        let err = Config::load(None, env(&[(CONFIG_VARIABLE, &missing.to_string_lossy())]))
            .expect_err("no such file");
        assert_eq!(
            err.to_string(),
            format!(
                "reading the configuration file {} (from TOOLGRAPH_CONFIG)",
                missing.display()
            ),
            "the OS error is the source, not repeated in the message"
        );
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("No such file")),
            "{err:?}"
        );
    }

    #[test]
    fn every_field_has_a_variable() {
        // No optional field left unset, or its variable would be missing.
        let full = serde_json::to_value(full_config()).expect("serialises");
        fn nulls(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Null => out.push(path.to_owned()),
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        nulls(v, &format!("{path}.{k}"), out);
                    }
                }
                _ => {}
            }
        }
        let mut unset = Vec::new();
        nulls(&full, "", &mut unset);
        assert!(unset.is_empty(), "set these in full_config(): {unset:?}");

        let paths = field_paths();
        for name in [
            "LLM_PROVIDER",
            "LLM_BASE_URL",
            "LLM_API_KEY",
            "LLM_MODEL",
            "LLM_STREAM",
            "LLM_TIMEOUT_MS",
            "LLM_MAX_TOKENS",
            "LLM_MAX_EVENT_BYTES",
            "STORE_URL",
            "STORE_RECORD",
            "MCP",
            "TOOLS",
            "FILES_ROOT",
            "HTTP_ALLOW_PRIVATE",
            "SHELL_CONFINE_ARGS",
            "RESOURCE_LIMIT_MEMORY_MB",
            "RETRY_JITTER",
            "EXECUTOR_PER_RESOURCE_PARALLEL_LIMITS",
            "SERVE_BIND",
            "SERVE_TOKEN",
            "SERVE_BODY_LIMIT_BYTES",
            "SERVE_REQUEST_TIMEOUT_MS",
            "SERVE_CONCURRENCY_LIMIT",
            "SERVE_SHUTDOWN_GRACE_MS",
            "CLUSTER_NATS_URL",
            "CLUSTER_NAMESPACE",
            "CLUSTER_TOOL_LIMITS",
            "CLUSTER_ACK_WAIT_MS",
            "CACHE_ENABLED",
            "CACHE_BACKEND",
            "CACHE_TTL_MS",
            "CACHE_NEGATIVE_TTL_MS",
            "CACHE_MAX_ENTRIES",
            "CACHE_REDIS_URL",
            "CACHE_KEY_PREFIX",
            "CACHE_MEMORY_FRONT",
            "CACHE_LOCK_LEASE_MS",
        ] {
            assert!(paths.contains_key(name), "TOOLGRAPH_{name} has no field");
        }
        let (c, _) = Config::load(
            None,
            env(&[
                ("TOOLGRAPH_LLM_MODEL", "llama3.2"),
                ("TOOLGRAPH_LLM_PROVIDER", "anthropic"),
                ("TOOLGRAPH_LLM_STREAM", "true"),
                (
                    "TOOLGRAPH_MCP",
                    "[{ name = \"x\", url = \"http://127.0.0.1:9/mcp\" }]",
                ),
            ]),
        )
        .expect("loads");
        let llm = c.llm.expect("an [llm] section");
        assert_eq!(llm.model, "llama3.2");
        assert_eq!(llm.provider, toolgraph_llm::Provider::Anthropic);
        assert!(llm.stream);
        assert_eq!(c.mcp.len(), 1);
        assert_eq!(c.mcp[0].name, "x");
    }

    #[test]
    fn provider_variables_win_over_the_file_and_toolgraph_llm_variables_over_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[llm]\nprovider = \"openai\"\nmodel = \"from-file\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmax_tokens = 77\n",
        );
        let (c, _) = Config::load(Some(&p), env(&[])).expect("loads");
        let llm = c.llm.expect("section");
        assert_eq!(
            (llm.model.as_str(), llm.max_tokens),
            ("from-file", 77),
            "the file alone"
        );

        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("OPENAI_MODEL", "from-openai-model"),
                ("OPENAI_API_KEY", "sk-env"),
                ("ANTHROPIC_MODEL", "not this provider"),
            ]),
        )
        .expect("loads");
        let llm = c.llm.expect("section");
        assert_eq!(llm.model, "from-openai-model", "env > file");
        assert_eq!(llm.api_key.as_deref(), Some("sk-env"));
        assert_eq!(llm.base_url, "http://127.0.0.1:1/v1", "untouched");
        assert_eq!(llm.max_tokens, 77);

        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("OPENAI_MODEL", "from-openai-model"),
                ("TOOLGRAPH_LLM_MODEL", "from-toolgraph-llm-model"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            c.llm.map(|l| l.model).as_deref(),
            Some("from-toolgraph-llm-model")
        );

        // The old spelling of the provider still reads.
        let p = write(dir.path(), "[llm]\nprovider = \"open_ai\"\n");
        let (c, _) = Config::load(Some(&p), env(&[])).expect("loads");
        assert_eq!(
            c.llm.map(|l| l.provider),
            Some(toolgraph_llm::Provider::OpenAi)
        );
        // Without an [llm] section the provider variables make none.
        let (c, _) = Config::load(None, env(&[("OPENAI_MODEL", "m")])).expect("loads");
        assert_eq!(c.llm, None);
    }

    #[test]
    fn the_cluster_section_reads_its_variables_and_the_short_nats_url() {
        let (c, _) = Config::load(
            None,
            env(&[
                ("TOOLGRAPH_NATS_URL", "nats://127.0.0.1:4222"),
                ("TOOLGRAPH_CLUSTER_NAMESPACE", "team-a"),
                ("TOOLGRAPH_CLUSTER_TOOL_LIMITS", "{ http_fetch = 8 }"),
                ("TOOLGRAPH_CLUSTER_ACK_WAIT_MS", "5000"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.cluster.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(c.cluster.namespace, "team-a");
        assert_eq!(c.cluster.tool_limits.get("http_fetch"), Some(&8));
        assert_eq!(c.cluster.ack_wait_ms, 5000);
        let options = crate::cluster_options(&c)
            .expect("valid")
            .expect("a cluster");
        assert_eq!(options.namespace.as_str(), "team-a");
        assert_eq!(options.ack_wait, std::time::Duration::from_millis(5000));
        // Without a server there is no cluster; a bad namespace is named.
        assert!(
            crate::cluster_options(&Config::default())
                .expect("ok")
                .is_none()
        );
        let mut bad = c.clone();
        bad.cluster.namespace = "a.b".into();
        let e = crate::cluster_options(&bad)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("namespace `a.b`"), "{e}");
    }

    #[test]
    fn adaptive_concurrency_and_rate_limits_read_from_the_file_and_their_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[executor.adaptive]\nenabled = true\ndecrease_factor = 0.5\n\
             [executor.per_resource_rate_limits.\"host:api.test\"]\nrequests_per_second = 5\nburst = 2\n\
             [tools.http_fetch]\nrequests_per_second = 0.5\n",
        );
        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("TOOLGRAPH_ADAPTIVE_INITIAL_LIMIT", "2"),
                ("TOOLGRAPH_EXECUTOR_ADAPTIVE_MAX_RETRY_AFTER_MS", "1000"),
            ]),
        )
        .expect("loads");
        let e = c.executor_with_host_limit();
        assert!(e.adaptive.enabled);
        assert_eq!(e.adaptive.decrease_factor, 0.5);
        assert_eq!(e.adaptive.initial_limit, 2);
        assert_eq!(e.adaptive.max_retry_after_ms, 1000);
        assert_eq!(
            e.resource_rate_limit("host:api.test"),
            Some(toolgraph_core::RateLimit {
                requests_per_second: 5.0,
                burst: 2
            })
        );
        assert_eq!(
            e.per_tool_rate_limits
                .get("http_fetch")
                .map(|r| (r.requests_per_second, r.burst)),
            Some((0.5, 1)),
            "a [tools.NAME] rate limit, burst 1 by default"
        );
        let (c, _) = Config::load(
            None,
            env(&[
                ("TOOLGRAPH_ADAPTIVE_ENABLED", "true"),
                ("TOOLGRAPH_ADAPTIVE_DECREASE_FACTOR", "0.5"),
                (
                    "TOOLGRAPH_PER_RESOURCE_RATE_LIMITS",
                    "{ host = { requests_per_second = 20 } }",
                ),
                (
                    "TOOLGRAPH_EXECUTOR_PER_TOOL_RATE_LIMITS",
                    "{ web_search = { requests_per_second = 1, burst = 3 } }",
                ),
            ]),
        )
        .expect("loads");
        assert!(c.executor.adaptive.enabled);
        assert_eq!(c.executor.adaptive.decrease_factor, 0.5);
        assert_eq!(
            c.executor
                .resource_rate_limit("host:any.test")
                .map(|r| r.requests_per_second),
            Some(20.0)
        );
        assert_eq!(
            c.executor
                .per_tool_rate_limits
                .get("web_search")
                .map(|r| r.burst),
            Some(3)
        );

        let bad = write(dir.path(), "[executor.adaptive]\nenable = true\n");
        let err = Config::load(Some(&bad), env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(err.contains("enable"), "{err}");
        let bad = write(dir.path(), "[tools.http_fetch]\nburst = 3\n");
        let err = Config::load(Some(&bad), env(&[]))
            .expect_err("no rate")
            .to_string();
        assert!(err.contains("tools.http_fetch.burst"), "{err}");
        let bad = write(dir.path(), "[tools.http_fetch]\nrequests_per_second = -1\n");
        let err = Config::load(Some(&bad), env(&[]))
            .expect_err("negative")
            .to_string();
        assert!(
            err.contains("tools.http_fetch.requests_per_second"),
            "{err}"
        );
    }

    #[test]
    fn the_serve_section_reads_from_the_file_and_its_variables() {
        let (c, _) = Config::load(None, env(&[])).expect("loads");
        assert_eq!(c.serve, ServeConfig::default());
        assert_eq!(c.serve.bind.to_string(), "127.0.0.1:7878");
        assert_eq!(c.serve.token, None);

        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[serve]\nbind = \"0.0.0.0:8080\"\ntoken = \"from-file\"\nshutdown_grace_ms = 5000\n",
        );
        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("TOOLGRAPH_SERVE_TOKEN", "from-env"),
                ("TOOLGRAPH_SERVE_BODY_LIMIT_BYTES", "1024"),
                ("TOOLGRAPH_SERVE_REQUEST_TIMEOUT_MS", "0"),
                ("TOOLGRAPH_SERVE_CONCURRENCY_LIMIT", "16"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.serve.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(c.serve.token.as_deref(), Some("from-env"), "env > file");
        assert_eq!(c.serve.shutdown_grace_ms, 5000);
        assert_eq!(c.serve.body_limit_bytes, 1024);
        assert_eq!(c.serve.request_timeout_ms, 0);
        assert_eq!(c.serve.concurrency_limit, 16);

        let err = Config::load(None, env(&[("TOOLGRAPH_SERVE_BIND", "localhost")]))
            .expect_err("not an address")
            .to_string();
        assert!(
            err.starts_with("environment variable TOOLGRAPH_SERVE_BIND:"),
            "the variable is named: {err}"
        );
        assert!(err.contains("serve.bind"), "{err}");
        let (c, _) =
            Config::load(None, env(&[("TOOLGRAPH_SERVE_BIND", "[::1]:9000")])).expect("loads");
        assert_eq!(c.serve.bind.to_string(), "[::1]:9000");
    }

    #[test]
    fn the_cache_section_reads_from_the_file_its_variables_and_tool_overrides() {
        let (c, _) = Config::load(None, env(&[])).expect("loads");
        assert_eq!(c.cache, CacheConfig::default());
        assert!(!c.cache.enabled, "off by default");
        assert_eq!(c.cache.backend, CacheBackendKind::Store);

        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[cache]\nenabled = true\nbackend = \"memory\"\nttl_ms = 5000\n[tools.http_fetch]\ncache_ttl_ms = 100\nversion = \"2\"\n[tools.shell]\ncache = false\n",
        );
        let (c, _) = Config::load(
            Some(&p),
            env(&[
                ("TOOLGRAPH_CACHE_BACKEND", "redis"),
                ("TOOLGRAPH_CACHE_REDIS_URL", "redis://127.0.0.1:6379"),
                ("TOOLGRAPH_CACHE_NEGATIVE_TTL_MS", "60000"),
                ("TOOLGRAPH_CACHE_MEMORY_FRONT", "true"),
            ]),
        )
        .expect("loads");
        assert!(c.cache.enabled);
        assert_eq!(c.cache.backend, CacheBackendKind::Redis, "env > file");
        assert_eq!(c.cache.ttl_ms, 5000);
        assert_eq!(c.cache.negative_ttl_ms, 60000);
        assert!(c.cache.memory_front);
        assert_eq!(c.cache.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        let fetch = &c.tools["http_fetch"];
        assert_eq!(
            (fetch.cache_ttl_ms, fetch.version.as_deref()),
            (Some(100), Some("2"))
        );
        assert_eq!(c.tools["shell"].cache, Some(false));

        let p = write(dir.path(), "[cache]\nbackend = \"disk\"\n");
        let err = Config::load(Some(&p), env(&[]))
            .expect_err("unknown backend")
            .to_string();
        assert!(err.contains("disk"), "{err}");
        let p = write(dir.path(), "[cache]\nttl = 5\n");
        let err = Config::load(Some(&p), env(&[]))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("ttl"), "{err}");
    }

    #[test]
    fn the_http_host_limit_becomes_a_resource_limit_unless_set() {
        let c = Config::default();
        assert_eq!(
            c.executor_with_host_limit()
                .resource_limit("host:example.com"),
            Some(c.http.per_host_limit)
        );
        let mut c = Config::default();
        c.executor
            .per_resource_parallel_limits
            .insert("host".into(), 1);
        assert_eq!(
            c.executor_with_host_limit().resource_limit("host:x"),
            Some(1)
        );
    }
}
