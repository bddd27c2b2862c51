//! toolgraph for embedders: one [`Config`] — read from `toolgraph.toml`, overridden by
//! `TOOLGRAPH_*` environment variables, then by the caller (the CLI's flags) — wired into a
//! [`Runtime`]: a [`ParallelExecutor`] with the built-in, file, HTTP and shell tools and the
//! tools of the configured MCP servers, its shared limits, and the store that records every
//! execution. Every front end runs executions through a `Runtime`.
//!
//! Precedence is file < environment < flags. Unknown keys are errors that name the key,
//! in the file and in the environment alike.

mod cache;
mod config;
mod describe;
mod mcp_host;
mod runtime;

use std::sync::Arc;

pub use cache::{StoreCache, cache_layer, cache_policy};
pub use config::{
    CONFIG_VARIABLE, CacheBackendKind, CacheConfig, ClusterConfig, Config, ConfigLoadError,
    ENV_PREFIX, ServeConfig, StoreConfig, default_store_url,
};
pub use describe::{ToolDescription, describe_tools};
pub use mcp_host::{FINISH_WAIT, RuntimeHost, batch_answer, builtin_hints};
pub use runtime::{
    ExecuteOptions, Execution, LEASE_RENEW, LEASE_TIMEOUT, OnBegin, ResumeCounts, Resumed, Runtime,
    RuntimeError, SinkFactory, classify_resume,
};
pub use toolgraph_cache as cache_layers;
pub use toolgraph_cluster as cluster;
pub use toolgraph_core as core;
pub use toolgraph_engine as engine;
pub use toolgraph_engine::ParallelExecutor;
pub use toolgraph_llm as llm;
pub use toolgraph_mcp as mcp;
pub use toolgraph_store as store;

use toolgraph_core::{ParallelExecutorConfig, Tool, ToolSet};
use toolgraph_mcp::McpServer;
use toolgraph_tools::{fs, http, shell};

/// Why the tools or the executor could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file root, the HTTP client or an override is wrong.
    #[error("{0}")]
    Tools(String),
    /// An MCP server could not be started or listed.
    #[error(transparent)]
    Mcp(#[from] toolgraph_mcp::McpError),
    /// A limit is invalid.
    #[error(transparent)]
    Config(#[from] toolgraph_core::ConfigError),
    /// A per-tool limit names no tool (or an alias, which limits would not see).
    #[error("per-tool limit for \"{name}\": {problem}")]
    ToolLimit {
        /// The name as given.
        name: String,
        /// What is wrong, with the names that work.
        problem: String,
    },
    /// The cluster could not be reached or a `[cluster]` setting is wrong.
    #[error(transparent)]
    Cluster(#[from] toolgraph_cluster::ClusterError),
    /// A `[cache]` setting is wrong.
    #[error("{0}")]
    Cache(String),
    /// The store could not be opened (the cause is the error's source).
    #[error("opening the store {url}")]
    Store {
        /// The store's URL.
        url: String,
        /// Why.
        source: toolgraph_store::StoreError,
    },
}

/// Every tool the configuration enables — built-in, file, HTTP, shell, and the tools of
/// every MCP server (connected here) — with the operator's overrides applied. The servers
/// are returned too: they live as long as their tools.
pub async fn build_tools(config: &Config) -> Result<(ToolSet, Vec<Arc<McpServer>>), SetupError> {
    build_tools_with(config, Vec::new()).await
}

/// [`build_tools`] plus an embedder's own tools (a Python program's functions), registered
/// after the built-ins and before the MCP servers' and the overrides, so `[tools.NAME]`
/// applies to them too. A name that is already taken is an error naming it.
pub async fn build_tools_with(
    config: &Config,
    extra: Vec<Arc<dyn Tool>>,
) -> Result<(ToolSet, Vec<Arc<McpServer>>), SetupError> {
    let mut set = toolgraph_tools::builtins();
    if config.files.enabled {
        fs::register_file_tools(&mut set, &config.files).map_err(SetupError::Tools)?;
    }
    let fetch = http::HttpFetch::new(config.http.clone())
        .map_err(|e| SetupError::Tools(format!("http_fetch: {e}")))?;
    set.register(fetch)
        .map_err(|e| SetupError::Tools(e.to_string()))?;
    if config.files.enabled && config.shell.enabled {
        let sandbox = Arc::new(fs::Sandbox::new(&config.files.root).map_err(SetupError::Tools)?);
        if let Some(tool) = shell::Shell::new(&config.shell, sandbox) {
            set.register(tool)
                .map_err(|e| SetupError::Tools(e.to_string()))?;
        }
    }
    for tool in extra {
        let name = tool.spec().name.clone();
        set.register_arc(tool)
            .map_err(|e| SetupError::Tools(format!("tool {name}: {e}")))?;
    }
    let servers = toolgraph_mcp::connect_all(&config.mcp).await?;
    toolgraph_mcp::register(&mut set, &servers)?;
    for (name, settings) in &config.tools {
        set.apply_override(name, settings)
            .map_err(|e| SetupError::Tools(format!("[tools.{name}]: {e}")))?;
    }
    Ok((set, servers))
}

/// The executor configuration with the limits other sections imply: the per-host HTTP
/// limit (resource kind `host`) and each MCP server's `max_concurrency` (its
/// `mcpserver:<name>` resource), unless the executor's limits already set them.
pub fn executor_config(config: &Config) -> ParallelExecutorConfig {
    let mut executor = config.executor_with_host_limit();
    for server in &config.mcp {
        if let Some(n) = server.max_concurrency {
            let key = toolgraph_mcp::server_resource(&server.name);
            executor
                .per_resource_parallel_limits
                .entry(key)
                .or_insert(n);
        }
    }
    executor
}

/// The executor for a configuration, with its tools and limits, and the MCP servers it
/// talks to.
pub async fn build_executor(
    config: &Config,
) -> Result<(ParallelExecutor, Vec<Arc<McpServer>>), SetupError> {
    build_executor_with(config, Vec::new()).await
}

/// [`build_executor`] with an embedder's own tools besides the configured ones
/// ([`build_tools_with`]).
pub async fn build_executor_with(
    config: &Config,
    extra: Vec<Arc<dyn Tool>>,
) -> Result<(ParallelExecutor, Vec<Arc<McpServer>>), SetupError> {
    let (tools, servers) = build_tools_with(config, extra).await?;
    let executor = executor_config(config);
    check_tool_limits(&tools, &executor)?;
    Ok((ParallelExecutor::new(tools, executor)?, servers))
}

/// The cluster a configuration names (`[cluster] nats_url`), if any.
pub fn cluster_options(
    config: &Config,
) -> Result<Option<toolgraph_cluster::ClusterOptions>, SetupError> {
    let Some(url) = config
        .cluster
        .nats_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    else {
        return Ok(None);
    };
    let c = &config.cluster;
    let mut options = toolgraph_cluster::ClusterOptions::new(url.trim());
    options.namespace = toolgraph_cluster::Namespace::new(&c.namespace)?;
    let ms = std::time::Duration::from_millis;
    for (name, value) in [
        ("heartbeat_ms", c.heartbeat_ms),
        ("ack_wait_ms", c.ack_wait_ms),
    ] {
        if value == 0 {
            return Err(SetupError::Tools(format!(
                "[cluster] {name} must be above 0"
            )));
        }
    }
    options.heartbeat = ms(c.heartbeat_ms);
    options.ack_wait = ms(c.ack_wait_ms);
    options.no_worker_wait = ms(c.no_worker_wait_ms);
    options.grace = ms(c.grace_ms);
    for (tool, limit) in &c.tool_limits {
        if *limit == 0 {
            return Err(SetupError::Tools(format!(
                "[cluster] tool_limits.{tool} must be at least 1"
            )));
        }
    }
    options.tool_limits = c.tool_limits.clone();
    Ok(Some(options))
}

/// Every name in `per_tool_parallel_limits` is a registered tool's own name: a limit for an
/// unknown name, or for an alias, would silently limit nothing.
pub fn check_tool_limits(
    tools: &ToolSet,
    executor: &ParallelExecutorConfig,
) -> Result<(), SetupError> {
    for name in executor.per_tool_parallel_limits.keys() {
        let problem = match tools.get(name) {
            Some(entry) if entry.tool.spec().name == *name => continue,
            Some(entry) => format!(
                "that is another name of \"{}\": limit it by that name",
                entry.tool.spec().name
            ),
            None => format!("no such tool (known: {})", tools.names().join(", ")),
        };
        return Err(SetupError::ToolLimit {
            name: name.clone(),
            problem,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_per_tool_limit_for_an_unknown_tool_is_refused_naming_the_known_ones() {
        let mut config = Config::default();
        config
            .executor
            .per_tool_parallel_limits
            .insert("nosuch".into(), 3);
        let err = build_executor(&config)
            .await
            .map(|_| ())
            .expect_err("unknown tool")
            .to_string();
        assert!(
            err.starts_with("per-tool limit for \"nosuch\": no such tool (known: sleep, echo,"),
            "{err}"
        );
        assert!(err.contains("file_read"), "{err}");

        let mut config = Config::default();
        config
            .executor
            .per_tool_parallel_limits
            .insert("sleep".into(), 3);
        assert!(build_executor(&config).await.is_ok(), "a known tool");
    }

    #[test]
    fn a_per_tool_limit_by_an_alias_names_the_real_name() {
        let mut tools = ToolSet::new();
        tools
            .register_fn("fs.read_file", |_args, _ctx| async {
                Ok(serde_json::json!(1))
            })
            .expect("register");
        tools
            .register_alias("read_file", "fs.read_file")
            .expect("alias");
        let mut executor = ParallelExecutorConfig::default();
        executor
            .per_tool_parallel_limits
            .insert("read_file".into(), 2);
        let err = check_tool_limits(&tools, &executor)
            .expect_err("an alias")
            .to_string();
        assert!(err.contains("another name of \"fs.read_file\""), "{err}");
        executor.per_tool_parallel_limits.clear();
        executor
            .per_tool_parallel_limits
            .insert("fs.read_file".into(), 2);
        assert!(check_tool_limits(&tools, &executor).is_ok());
    }
}
