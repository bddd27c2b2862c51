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
//! [tools.http_fetch]      # operator overrides of a tool's own traits
//! max_concurrency = 2
//! ```
//!
//! Every field can be set by an environment variable: `TOOLGRAPH_` + the path in capitals
//! joined by `_` (`TOOLGRAPH_FILES_ROOT`, `TOOLGRAPH_HTTP_ALLOW_HOSTS=a.com,b.com`); the
//! executor's fields also without their section (`TOOLGRAPH_MAX_PARALLEL_CALLS=8`). Values
//! are read as TOML values (numbers, booleans, arrays, inline tables), else as strings.

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

/// Variables with the prefix that are not configuration fields.
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
}

/// Where and whether executions are recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://FILE` (created on first use) or `postgres://…`; `TOOLGRAPH_DATABASE_URL`
    /// sets it too.
    pub url: String,
    /// Record every execution.
    pub record: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://toolgraph.db".into(),
            record: true,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
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

impl Config {
    /// Loads the configuration: `path` if given, else `./toolgraph.toml` if it exists, else
    /// the defaults; then the `TOOLGRAPH_*` variables among `env`. Returns the file used.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Option<PathBuf>), ConfigLoadError> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("toolgraph.toml")).filter(|p| p.is_file()),
        };
        let mut table = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigLoadError::Read {
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
        apply_env(&mut table, env)?;
        let config =
            Config::deserialize(Value::Table(table)).map_err(|e| ConfigLoadError::Variable {
                name: "TOOLGRAPH_*".into(),
                message: e.to_string(),
            })?;
        config.executor.validate()?;
        Ok((config, file))
    }

    /// The executor configuration with `http.per_host_limit` as the limit of the `host`
    /// resource kind, unless one is set already.
    pub fn executor_with_host_limit(&self) -> ParallelExecutorConfig {
        let mut executor = self.executor.clone();
        if self.http.per_host_limit > 0 {
            executor
                .per_resource_parallel_limits
                .entry("host".into())
                .or_insert(self.http.per_host_limit);
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

/// Every settable field: variable name (without the prefix) → path in the table, and
/// whether the field is a list.
fn field_paths() -> HashMap<String, (Vec<String>, bool)> {
    // A configuration with every optional field set, so that serialising it shows them all.
    let mut full = Config::default();
    full.executor.resource_limit_cpu = Some(1.0);
    full.executor.resource_limit_memory_mb = Some(1);
    let mut paths = HashMap::new();
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
        Some("per_tool_parallel_limits" | "per_resource_parallel_limits" | "tools")
    )
}

fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigLoadError> {
    let mut paths = field_paths();
    // The conventional name for the database URL.
    paths.insert(
        "DATABASE_URL".into(),
        (vec!["store".into(), "url".into()], false),
    );
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX)
                && !k.starts_with("TOOLGRAPH_TEST_")
                && !RESERVED.contains(&k.as_str())
        })
        .collect();
    vars.sort();
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
                name,
                known: known.join(", "),
            });
        };
        let value = parse_value(&raw, *list);
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
                        name,
                        message: format!("{key} is not a section"),
                    });
                }
            };
        }
        at.insert(last.clone(), value);
    }
    Ok(())
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
            .expect_err("not a number");
        assert!(
            err.to_string().contains("max_parallel_calls")
                || err.to_string().contains("invalid type"),
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
