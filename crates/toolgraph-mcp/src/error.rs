//! [`McpError`]: why a server could not be configured, started or registered.
//!
//! Every variant names its server; a startup failure also names the command or URL and
//! carries the tail of the server's stderr, because that is where a server says why it
//! would not start. Failures of single calls are not here: they are
//! [`toolgraph_core::ToolError`]s. This module must never hold a bearer token.

use std::fmt;

/// Where starting a server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupStage {
    /// The program could not be spawned (or the HTTP client built).
    Spawn,
    /// The MCP `initialize` handshake failed or timed out.
    Initialize,
    /// `tools/list` failed.
    ListTools,
}

impl fmt::Display for StartupStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartupStage::Spawn => "spawn",
            StartupStage::Initialize => "initialize",
            StartupStage::ListTools => "tools/list",
        })
    }
}

/// Why an MCP server could not be configured, started or registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// A configuration value cannot work.
    #[error("MCP server `{server}`: invalid configuration: {message}")]
    Config {
        /// The server's name.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line `NAME=COMMAND…` / `NAME=URL` does not parse.
    #[error("invalid MCP server spec \"{spec}\": {message}")]
    CliSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The server did not start.
    #[error("MCP server `{server}` ({target}): {stage} failed: {message}{}", stderr_section(.stderr))]
    Startup {
        /// The server's name.
        server: String,
        /// Its command line or URL.
        target: String,
        /// Where it failed.
        stage: StartupStage,
        /// The error.
        message: String,
        /// The tail of its stderr (empty for HTTP servers or a silent process).
        stderr: String,
    },
    /// A tool could not be registered (a duplicate name, a schema that does not compile).
    #[error("MCP server `{server}`: cannot register tool `{tool}`: {message}")]
    Register {
        /// The server's name.
        server: String,
        /// The tool's name as registered.
        tool: String,
        /// The registry's message.
        message: String,
    },
}

/// The stderr tail as an indented section of a message, or nothing.
pub(crate) fn stderr_section(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n  stderr:");
    for line in stderr.lines() {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}
