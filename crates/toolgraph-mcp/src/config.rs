//! Configuration of MCP servers as data: one [`McpServerConfig`] per `[[mcp]]` entry, the
//! operator's per-tool [`McpToolOverride`]s, the [`RestartPolicy`] of a server that dies,
//! and the command-line form `NAME=COMMAND ARGS…` or `NAME=URL` ([`parse_cli_spec`]).
//!
//! Everything here is checked once, at the edge ([`McpServerConfig::validate`]), and is
//! plain data afterwards. This module must never start a process, open a connection or
//! print a bearer token (the `Debug` of a configuration redacts it).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toolgraph_core::Access;

use crate::error::McpError;

/// One `[[mcp]]` entry of configuration: a stdio server (`command`) or a streamable-HTTP
/// server (`url`), never both.
///
/// ```
/// use toolgraph_mcp::McpServerConfig;
///
/// let config: McpServerConfig = serde_json::from_value(serde_json::json!({
///     "name": "fs",
///     "command": "npx",
///     "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv/data"],
///     "tools": {"write_file": {"resources": [{"arg": "path", "access": "write", "kind": "file"}]}}
/// })).expect("valid");
/// config.validate().expect("valid");
/// ```
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The namespace: the server's tools become `<name>.<tool>`. Letters, digits, `_`, `-`.
    pub name: String,
    /// A stdio server: the program to spawn.
    #[serde(default)]
    pub command: Option<String>,
    /// The program's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to the program's environment (the rest is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A streamable-HTTP server instead: its endpoint, `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer <token>` to an HTTP server.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Calls to this server at once, at most. Not enforced by the tools themselves: whoever
    /// builds the executor turns it into a per-resource limit on
    /// [`server_resource`](crate::server_resource) (see [`crate::resource_limits`]).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// The largest message the server may send, in bytes (default
    /// [`DEFAULT_MAX_FRAME_BYTES`], 16 MiB): one line of JSON-RPC from a stdio server, one
    /// response body or event from an HTTP server. A result over it fails its own call with
    /// an error naming both sizes; the session goes on.
    #[serde(default)]
    pub max_frame_bytes: Option<usize>,
    /// When a server that died is started again (`[mcp.restart]`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The operator's settings per tool, by the server's own tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, McpToolOverride>,
}

/// The largest message a server may send unless `max_frame_bytes` says otherwise: 16 MiB,
/// rmcp's own limit for one stdio line and one HTTP event.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// The smallest `max_frame_bytes` accepted: a handshake must fit.
const MIN_FRAME_BYTES: usize = 1024;

/// When a server that died is started again (`[mcp.restart]` of a server).
///
/// A call that finds its server dead restarts it. A failed restart is not tried again before
/// a backoff has passed (`backoff_min_ms`, doubling with jitter per failure in a row, up to
/// `backoff_max_ms`); calls meanwhile fail at once with a transient error saying when the
/// next attempt is. A circuit breaker keeps a server that keeps dying from being restarted
/// forever: once `max_restarts` restarts — failed ones, and ones after which the server died
/// again — happened within `window_ms`, the circuit opens and every call fails at once with
/// a permanent error until `cooldown_ms` has passed; then one restart is tried (success
/// closes the circuit, failure opens it for another cool-down).
///
/// ```
/// use toolgraph_mcp::RestartPolicy;
///
/// let policy: RestartPolicy = serde_json::from_value(serde_json::json!({
///     "max_restarts": 3, "window_ms": 60000, "cooldown_ms": 10000
/// })).expect("valid");
/// assert_eq!(policy.backoff_min_ms, RestartPolicy::default().backoff_min_ms);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Restarts allowed within `window_ms` before the circuit opens (default 5; 0 = a server
    /// that dies stays down).
    pub max_restarts: u32,
    /// The sliding window restarts are counted in, in milliseconds (default 60 000).
    pub window_ms: u64,
    /// How long calls fail at once after the circuit opened, in milliseconds (default
    /// 30 000).
    pub cooldown_ms: u64,
    /// The wait after a failed restart before the next try, in milliseconds (default 250);
    /// it doubles with every failure in a row…
    pub backoff_min_ms: u64,
    /// …up to this many milliseconds (default 10 000).
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window_ms: 60_000,
            cooldown_ms: 30_000,
            backoff_min_ms: 250,
            backoff_max_ms: 10_000,
        }
    }
}

impl RestartPolicy {
    /// The window, as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// The cool-down, as a duration.
    pub fn cooldown(&self) -> Duration {
        Duration::from_millis(self.cooldown_ms)
    }

    /// Why the policy cannot work, if it cannot.
    fn problem(&self) -> Option<&'static str> {
        if self.max_restarts > 0 && self.window_ms == 0 {
            return Some("restart.window_ms must be at least 1");
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            return Some("restart.backoff_min_ms must not exceed restart.backoff_max_ms");
        }
        None
    }
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_concurrency", &self.max_concurrency)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("restart", &self.restart)
            .field("tools", &self.tools)
            .finish()
    }
}

/// The operator's settings for one tool of a server; each set field wins over what the
/// server's annotations say.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpToolOverride {
    /// The safety class, whatever the annotations say.
    #[serde(default)]
    pub class: Option<SafetyClass>,
    /// Whether calls may be retried.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Calls of this tool at once, at most.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// What a call touches, derived from its arguments. With mappings the tool runs beside
    /// others and declares these resources (plus a read of the server) instead of its
    /// class's server-wide access.
    #[serde(default)]
    pub resources: Vec<ResourceMapping>,
}

/// "Argument `path` is a write to a `file` resource": a call with `{"path": "a.txt"}`
/// touches `file:a.txt`. An array argument touches one key per element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceMapping {
    /// The argument whose value names the resource.
    pub arg: String,
    /// How the call touches it.
    pub access: Access,
    /// The resource kind; the key is `<kind>:<value of the argument>`.
    pub kind: String,
}

/// How a tool may be scheduled beside other calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyClass {
    /// Changes nothing: runs beside every other reader of the server.
    Reader,
    /// Changes the server's state additively: runs beside other calls, but ordered (as
    /// emitted) against every other call to the same server.
    Writer,
    /// May destroy or is unknown: runs alone, ordered against every other call of the batch.
    Exclusive,
}

impl SafetyClass {
    /// What its calls may do, for approvals: a reader is `read_only`, a writer `write`, and
    /// an exclusive tool (destructive, or a server that says nothing) `destructive`.
    pub fn approval_class(self) -> toolgraph_core::ApprovalClass {
        match self {
            SafetyClass::Reader => toolgraph_core::ApprovalClass::ReadOnly,
            SafetyClass::Writer => toolgraph_core::ApprovalClass::Write,
            SafetyClass::Exclusive => toolgraph_core::ApprovalClass::Destructive,
        }
    }

    /// `reader`, `writer` or `exclusive`, as in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SafetyClass::Reader => "reader",
            SafetyClass::Writer => "writer",
            SafetyClass::Exclusive => "exclusive",
        }
    }
}

impl fmt::Display for SafetyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl McpServerConfig {
    /// Checks every value; the first bad one is reported, naming the server.
    pub fn validate(&self) -> Result<(), McpError> {
        let bad = |message: String| {
            Err(McpError::Config {
                server: self.name.clone(),
                message,
            })
        };
        if let Some(message) = name_problem(&self.name) {
            return bad(message);
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => return bad("set `command` or `url`, not both".into()),
            (None, None) => return bad("set `command` (stdio) or `url` (streamable HTTP)".into()),
            (Some(command), None) => {
                if command.trim().is_empty() {
                    return bad("`command` is empty".into());
                }
                if self.bearer_token.is_some() {
                    return bad("`bearer_token` is for `url` servers".into());
                }
            }
            (None, Some(url)) => {
                if !is_http_url(url) {
                    return bad(format!(
                        "`url` \"{url}\" must start with http:// or https://"
                    ));
                }
                if !self.args.is_empty() || !self.env.is_empty() {
                    return bad("`args` and `env` are for `command` servers".into());
                }
            }
        }
        if self.max_concurrency == Some(0) {
            return bad("`max_concurrency` must be at least 1".into());
        }
        if self.max_frame_bytes.is_some_and(|n| n < MIN_FRAME_BYTES) {
            return bad(format!(
                "`max_frame_bytes` must be at least {MIN_FRAME_BYTES}"
            ));
        }
        if let Some(problem) = self.restart.problem() {
            return bad(problem.into());
        }
        for (tool, o) in &self.tools {
            if o.max_concurrency == Some(0) {
                return bad(format!("tools.{tool}.max_concurrency must be at least 1"));
            }
            for m in &o.resources {
                if m.arg.is_empty() || m.kind.is_empty() {
                    return bad(format!(
                        "tools.{tool}.resources: every mapping needs an `arg` and a `kind`"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The largest message the server may send, in bytes ([`Self::max_frame_bytes`] or
    /// [`DEFAULT_MAX_FRAME_BYTES`]).
    pub fn frame_limit(&self) -> usize {
        self.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES)
    }

    /// What the server is, for messages: the command line or the URL (never the token).
    pub fn target(&self) -> String {
        match (&self.command, &self.url) {
            (Some(command), _) => {
                let mut words = vec![command.as_str()];
                words.extend(self.args.iter().map(String::as_str));
                shlex::try_join(words.iter().copied()).unwrap_or_else(|_| words.join(" "))
            }
            (None, Some(url)) => url.clone(),
            (None, None) => "(no command or url)".into(),
        }
    }
}

/// Why `name` cannot name a server, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a server needs a non-empty `name`".into());
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (!ok).then(|| {
        format!(
            "name \"{name}\" may hold only letters, digits, `_` and `-` (it prefixes tool names)"
        )
    })
}

fn is_http_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

/// Parses the command-line form of a server: `NAME=COMMAND ARGS…` (split like a shell:
/// quotes group words) or `NAME=URL` (`http://` or `https://`).
///
/// ```
/// use toolgraph_mcp::parse_cli_spec;
///
/// let fs = parse_cli_spec("fs=npx -y @modelcontextprotocol/server-filesystem '/srv/my data'")?;
/// assert_eq!(fs.command.as_deref(), Some("npx"));
/// assert_eq!(fs.args, ["-y", "@modelcontextprotocol/server-filesystem", "/srv/my data"]);
/// let api = parse_cli_spec("api=https://mcp.example.com/mcp")?;
/// assert_eq!(api.url.as_deref(), Some("https://mcp.example.com/mcp"));
/// # Ok::<(), toolgraph_mcp::McpError>(())
/// ```
pub fn parse_cli_spec(spec: &str) -> Result<McpServerConfig, McpError> {
    let bad = |message: &str| McpError::CliSpec {
        spec: spec.to_owned(),
        message: message.to_owned(),
    };
    let Some((name, rest)) = spec.split_once('=') else {
        return Err(bad("expected NAME=COMMAND ARGS… or NAME=URL"));
    };
    let name = name.trim();
    if let Some(message) = name_problem(name) {
        return Err(bad(&message));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(bad("nothing after `=`: give a command or a URL"));
    }
    let mut config = McpServerConfig {
        name: name.to_owned(),
        ..Default::default()
    };
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if !is_http_url(rest) {
            return Err(bad("a URL holds no spaces and has a host"));
        }
        config.url = Some(rest.to_owned());
    } else {
        let Some(words) = shlex::split(rest) else {
            return Err(bad(
                "unbalanced quotes or a trailing backslash in the command",
            ));
        };
        let mut words = words.into_iter();
        let Some(command) = words.next() else {
            return Err(bad("empty command"));
        };
        config.command = Some(command);
        config.args = words.collect();
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_bearer_token() {
        let config = McpServerConfig {
            name: "api".into(),
            url: Some("https://x.example/mcp".into()),
            bearer_token: Some("s3cret".into()),
            ..Default::default()
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("s3cret") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn validation_names_the_server_and_the_field() {
        let base = McpServerConfig {
            name: "fs".into(),
            command: Some("node".into()),
            ..Default::default()
        };
        assert!(base.validate().is_ok());
        let cases = [
            (
                McpServerConfig {
                    url: Some("http://x".into()),
                    ..base.clone()
                },
                "not both",
            ),
            (
                McpServerConfig {
                    command: None,
                    ..base.clone()
                },
                "set `command`",
            ),
            (
                McpServerConfig {
                    name: "a.b".into(),
                    ..base.clone()
                },
                "letters, digits",
            ),
            (
                McpServerConfig {
                    max_concurrency: Some(0),
                    ..base.clone()
                },
                "at least 1",
            ),
            (
                McpServerConfig {
                    command: None,
                    url: Some("ftp://x".into()),
                    ..base.clone()
                },
                "http://",
            ),
            (
                McpServerConfig {
                    max_frame_bytes: Some(10),
                    ..base.clone()
                },
                "`max_frame_bytes` must be at least 1024",
            ),
            (
                McpServerConfig {
                    restart: RestartPolicy {
                        backoff_min_ms: 2,
                        backoff_max_ms: 1,
                        ..Default::default()
                    },
                    ..base.clone()
                },
                "restart.backoff_min_ms",
            ),
        ];
        for (config, needle) in cases {
            let e = config.validate().expect_err("invalid").to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn overrides_parse_from_toml_like_json() {
        let o: McpToolOverride = serde_json::from_value(serde_json::json!({
            "class": "writer", "idempotent": true, "max_concurrency": 2,
            "resources": [{"arg": "path", "access": "intent_write", "kind": "dir"}]
        }))
        .expect("valid");
        assert_eq!(o.class, Some(SafetyClass::Writer));
        assert_eq!(o.resources[0].access, Access::IntentWrite);
        let unknown = serde_json::from_value::<McpToolOverride>(serde_json::json!({"klass": "x"}));
        assert!(unknown.is_err());
    }
}
