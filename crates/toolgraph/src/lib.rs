//! toolgraph for embedders: one [`Config`] — read from `toolgraph.toml`, overridden by
//! `TOOLGRAPH_*` environment variables, then by the caller (the CLI's flags) — wired into a
//! [`Runtime`]: a [`ParallelExecutor`] with the built-in, file, HTTP and shell tools and the
//! tools of the configured MCP servers, its shared limits, and the store that records every
//! execution. Every front end runs executions through a `Runtime`.
//!
//! Precedence is file < environment < flags. Unknown keys are errors that name the key,
//! in the file and in the environment alike.

mod config;
mod runtime;

use std::sync::Arc;

pub use config::{Config, ConfigLoadError, ENV_PREFIX, StoreConfig, default_store_url};
pub use runtime::{
    ExecuteOptions, Execution, LEASE_RENEW, LEASE_TIMEOUT, ResumeCounts, Resumed, Runtime,
    RuntimeError, classify_resume,
};
pub use toolgraph_core as core;
pub use toolgraph_engine as engine;
pub use toolgraph_engine::ParallelExecutor;
pub use toolgraph_llm as llm;
pub use toolgraph_mcp as mcp;
pub use toolgraph_store as store;

use toolgraph_core::{ParallelExecutorConfig, ToolSet};
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
    let mut set = toolgraph_tools::builtins();
    fs::register_file_tools(&mut set, &config.files).map_err(SetupError::Tools)?;
    let fetch = http::HttpFetch::new(config.http.clone())
        .map_err(|e| SetupError::Tools(format!("http_fetch: {e}")))?;
    set.register(fetch)
        .map_err(|e| SetupError::Tools(e.to_string()))?;
    let sandbox = Arc::new(fs::Sandbox::new(&config.files.root).map_err(SetupError::Tools)?);
    if let Some(tool) = shell::Shell::new(&config.shell, sandbox) {
        set.register(tool)
            .map_err(|e| SetupError::Tools(e.to_string()))?;
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
    let (tools, servers) = build_tools(config).await?;
    Ok((
        ParallelExecutor::new(tools, executor_config(config))?,
        servers,
    ))
}
