//! toolgraph-mcp: the tools of MCP (Model Context Protocol) servers as toolgraph tools.
//!
//! [`connect_all`] starts every configured server (a stdio child process or a
//! streamable-HTTP URL), completes the handshake and lists its tools; [`register`] puts each
//! tool into a [`ToolSet`] as `<server>.<tool>` (plus the plain `<tool>` as an alias when
//! unambiguous). Each tool's parameters are the server's input schema, so toolgraph checks
//! arguments before anything runs, and each tool is classified from its annotations
//! ([`classify`]): readers run together, writers are ordered against the other calls to
//! their server, unknown or destructive tools run alone — unless the operator's
//! [`McpToolOverride`] says better.
//!
//! Calls to one server share its one session concurrently. A server that dies is restarted
//! on the next call, as its [`RestartPolicy`] allows (a backoff after failed restarts, and a
//! circuit breaker for a server that keeps dying); the calls in flight when it died fail
//! with a transient error. A stdio server runs in a process group of its own, killed when
//! the server is closed or dropped or its process exits, so nothing it started outlives it.
//! An answer larger than the server's `max_frame_bytes` fails its own call with an error
//! naming both sizes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use toolgraph_core::ToolSet;
//! use toolgraph_mcp::{connect_all, parse_cli_spec, register, resource_limits};
//!
//! let configs = [parse_cli_spec("fs=npx -y @modelcontextprotocol/server-filesystem /srv")?];
//! let servers = connect_all(&configs).await?;
//! let mut tools = ToolSet::new();
//! register(&mut tools, &servers)?;
//! let mut config = toolgraph_core::ParallelExecutorConfig::default();
//! config.per_resource_parallel_limits.extend(resource_limits(&servers));
//! # Ok(()) }
//! ```
//!
//! The other direction lives here too: [`serve`] makes toolgraph itself an MCP server
//! (`toolgraph mcp-serve`) over any [`serve::ToolHost`] — the runtime, in the facade.
//!
//! Invariant: this crate is the only one that speaks MCP (it alone depends on rmcp); it
//! never decides scheduling itself — it only describes tools to the engine.

mod classify;
mod config;
mod error;
mod frame;
mod process;
mod restart;
mod rmcp_error;
pub mod serve;
mod server;
mod stderr;
mod tool;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use toolgraph_core::ToolSet;

pub use classify::{Classification, Hints, classify};
pub use config::{
    DEFAULT_MAX_FRAME_BYTES, McpServerConfig, McpToolOverride, ResourceMapping, RestartPolicy,
    SafetyClass, parse_cli_spec,
};
pub use error::{McpError, StartupStage};
pub use server::McpServer;
pub use tool::McpTool;
/// Not part of the API: the MCP-result mapping, public for the fuzz target (`fuzz/`).
#[doc(hidden)]
pub use tool::output_of;

/// The resource key every call to server `name` touches: `mcpserver:<name>`.
///
/// Readers read it, writers write it, tools with resource mappings read it. The tools do
/// not enforce [`McpServerConfig::max_concurrency`] themselves: to cap the calls to a
/// server, set a per-resource limit on this key (`per_resource_parallel_limits`), as
/// [`resource_limits`] does — or on the kind `mcpserver` to cap every server alike.
/// (Exclusive tools run alone, so no limit is needed for them.)
pub fn server_resource(name: &str) -> String {
    format!("mcpserver:{name}")
}

/// The per-resource limits the servers' `max_concurrency` settings ask for, keyed by
/// [`server_resource`], ready for `per_resource_parallel_limits`.
pub fn resource_limits(servers: &[Arc<McpServer>]) -> BTreeMap<String, usize> {
    servers
        .iter()
        .filter_map(|s| Some((server_resource(s.name()), s.max_concurrency()?)))
        .collect()
}

/// Connects every server concurrently. The first failure is returned — naming its server,
/// its command or URL, and its stderr tail — and the servers already started are stopped.
pub async fn connect_all(configs: &[McpServerConfig]) -> Result<Vec<Arc<McpServer>>, McpError> {
    let mut seen = HashMap::new();
    for config in configs {
        config.validate()?;
        if seen.insert(config.name.as_str(), ()).is_some() {
            return Err(McpError::Config {
                server: config.name.clone(),
                message: "two MCP servers have this name".into(),
            });
        }
    }
    futures_util::future::try_join_all(configs.iter().map(McpServer::connect)).await
}

/// Registers every tool of every server as `<server>.<tool>`, plus the plain `<tool>` as an
/// alias when no other server lists a tool of that name and no tool in `set` has it.
pub fn register(set: &mut ToolSet, servers: &[Arc<McpServer>]) -> Result<(), McpError> {
    let mut plain_count: HashMap<String, usize> = HashMap::new();
    for server in servers {
        for name in server.tool_names() {
            *plain_count.entry(name.to_owned()).or_default() += 1;
        }
    }
    let mut aliases = Vec::new();
    for server in servers {
        for tool in server.tools() {
            let full = toolgraph_core::Tool::spec(&tool).name.clone();
            let plain = tool.remote_name().to_owned();
            set.register(tool).map_err(|e| McpError::Register {
                server: server.name().to_owned(),
                tool: full.clone(),
                message: e.to_string(),
            })?;
            if plain_count.get(&plain) == Some(&1) {
                aliases.push((server.name().to_owned(), plain, full));
            }
        }
    }
    // After every namespaced name, so an alias never takes a name a tool needs.
    for (server, plain, full) in aliases {
        if set.index_of(&plain).is_some() {
            continue;
        }
        set.register_alias(&plain, &full)
            .map_err(|e| McpError::Register {
                server,
                tool: plain.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}
