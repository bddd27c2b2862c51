//! toolgraph for embedders: one [`Config`] — read from `toolgraph.toml`, overridden by
//! `TOOLGRAPH_*` environment variables, then by the caller (the CLI's flags) — wired into a
//! [`ParallelExecutor`] with the built-in, file, HTTP and shell tools.
//!
//! Precedence is file < environment < flags. Unknown keys are errors that name the key,
//! in the file and in the environment alike.

mod config;

pub use config::{Config, ConfigLoadError, ENV_PREFIX, StoreConfig};
pub use toolgraph_core as core;
pub use toolgraph_engine as engine;
pub use toolgraph_engine::ParallelExecutor;
pub use toolgraph_store as store;

use toolgraph_core::ToolSet;
use toolgraph_tools::{fs, http, shell};

/// Why the tools or the executor could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The file root, the HTTP client or an override is wrong.
    #[error("{0}")]
    Tools(String),
    /// A limit is invalid.
    #[error(transparent)]
    Config(#[from] toolgraph_core::ConfigError),
}

/// Every tool the configuration enables, with the operator's overrides applied.
pub fn build_tools(config: &Config) -> Result<ToolSet, SetupError> {
    let mut set = toolgraph_tools::builtins();
    fs::register_file_tools(&mut set, &config.files).map_err(SetupError::Tools)?;
    let fetch = http::HttpFetch::new(config.http.clone())
        .map_err(|e| SetupError::Tools(format!("http_fetch: {e}")))?;
    set.register(fetch)
        .map_err(|e| SetupError::Tools(e.to_string()))?;
    let sandbox =
        std::sync::Arc::new(fs::Sandbox::new(&config.files.root).map_err(SetupError::Tools)?);
    if let Some(tool) = shell::Shell::new(&config.shell, sandbox) {
        set.register(tool)
            .map_err(|e| SetupError::Tools(e.to_string()))?;
    }
    for (name, settings) in &config.tools {
        set.apply_override(name, settings)
            .map_err(|e| SetupError::Tools(format!("[tools.{name}]: {e}")))?;
    }
    Ok(set)
}

/// The executor for a configuration: its tools, its limits, and the per-host HTTP limit
/// (as the `host` resource kind) unless the limits already set one.
pub fn build_executor(config: &Config) -> Result<ParallelExecutor, SetupError> {
    let tools = build_tools(config)?;
    Ok(ParallelExecutor::new(
        tools,
        config.executor_with_host_limit(),
    )?)
}
