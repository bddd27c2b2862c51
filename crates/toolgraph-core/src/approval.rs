//! Approvals: which calls a person (or a program standing in for one) must allow before they
//! run, and the hook that asks.
//!
//! Every call has an [`ApprovalClass`], derived from its tool and arguments
//! ([`crate::Tool::approval_class`]): what the call may do to the world. An
//! [`ApprovalPolicy`] maps a class, or a tool by name, to an [`ApprovalMode`] — `auto` (run),
//! `ask` (an [`Approver`] decides), `deny` — starting from an [`ApprovalPreset`]:
//!
//! | class | `auto` | `ask-writes` (default) | `ask-all` | `deny-writes` |
//! |---|---|---|---|---|
//! | `read_only` | auto | auto | ask | auto |
//! | `write` | auto | ask | ask | deny |
//! | `network_write` | auto | ask | ask | deny |
//! | `shell` | auto | ask | ask | deny |
//! | `destructive` | auto | ask | ask | deny |
//!
//! A tool named in [`ApprovalPolicy::tools`] wins over its class in
//! [`ApprovalPolicy::classes`], which wins over the preset.
//!
//! An [`Approver`] answers one [`ApprovalRequest`] with an [`ApprovalDecision`]. The engine
//! asks it while the call holds no slot of any limit, so a call waiting for a person never
//! stops anything that does not depend on it.
//!
//! Invariant: vocabulary only — no I/O, no runtime; the engine decides when to ask.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tool::{Access, ResourceAccess};

/// What a call may do to the world, as far as approvals are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalClass {
    /// Only reads: every resource it declares is read (or the tool says so: `echo`, an MCP
    /// tool with `readOnlyHint`).
    ReadOnly,
    /// Changes something: a resource written, or a tool that declares nothing (its effects
    /// are unknown, so it is taken to write).
    Write,
    /// Sends something that may change state elsewhere: `http_fetch` with a method other
    /// than `GET`/`HEAD`.
    NetworkWrite,
    /// Runs a program (`shell`).
    Shell,
    /// May destroy data: an MCP tool whose server does not say otherwise
    /// (`destructiveHint` true or absent on a tool that is not read-only).
    Destructive,
}

impl ApprovalClass {
    /// Every class, in order.
    pub const ALL: [ApprovalClass; 5] = [
        ApprovalClass::ReadOnly,
        ApprovalClass::Write,
        ApprovalClass::NetworkWrite,
        ApprovalClass::Shell,
        ApprovalClass::Destructive,
    ];

    /// The class derived from the resources a call touches: read-only when it declares at
    /// least one and only reads; a write otherwise (declaring nothing says nothing).
    pub fn from_resources(resources: &[ResourceAccess]) -> ApprovalClass {
        if !resources.is_empty() && resources.iter().all(|r| r.access == Access::Read) {
            ApprovalClass::ReadOnly
        } else {
            ApprovalClass::Write
        }
    }

    /// The name on the wire and in configuration (`read_only`, `network_write`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalClass::ReadOnly => "read_only",
            ApprovalClass::Write => "write",
            ApprovalClass::NetworkWrite => "network_write",
            ApprovalClass::Shell => "shell",
            ApprovalClass::Destructive => "destructive",
        }
    }
}

impl fmt::Display for ApprovalClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a call before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// It runs.
    Auto,
    /// An [`Approver`] decides (without one: denied, saying so).
    Ask,
    /// It is refused: the call ends with an error of kind `denied`.
    Deny,
}

impl ApprovalMode {
    /// `auto`, `ask` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::Auto => "auto",
            ApprovalMode::Ask => "ask",
            ApprovalMode::Deny => "deny",
        }
    }
}

/// A whole policy in one word (`--approval`, `[approvals] default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPreset {
    /// Everything runs.
    Auto,
    /// Read-only calls run; everything else asks.
    #[default]
    AskWrites,
    /// Every call asks.
    AskAll,
    /// Read-only calls run; everything else is refused (no person needed).
    DenyWrites,
}

impl ApprovalPreset {
    /// Every preset, in order.
    pub const ALL: [ApprovalPreset; 4] = [
        ApprovalPreset::Auto,
        ApprovalPreset::AskWrites,
        ApprovalPreset::AskAll,
        ApprovalPreset::DenyWrites,
    ];

    /// The preset's mode for `class`.
    pub fn mode(self, class: ApprovalClass) -> ApprovalMode {
        let read_only = class == ApprovalClass::ReadOnly;
        match self {
            ApprovalPreset::Auto => ApprovalMode::Auto,
            ApprovalPreset::AskAll => ApprovalMode::Ask,
            ApprovalPreset::AskWrites if read_only => ApprovalMode::Auto,
            ApprovalPreset::AskWrites => ApprovalMode::Ask,
            ApprovalPreset::DenyWrites if read_only => ApprovalMode::Auto,
            ApprovalPreset::DenyWrites => ApprovalMode::Deny,
        }
    }

    /// `auto`, `ask-writes`, `ask-all` or `deny-writes`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalPreset::Auto => "auto",
            ApprovalPreset::AskWrites => "ask-writes",
            ApprovalPreset::AskAll => "ask-all",
            ApprovalPreset::DenyWrites => "deny-writes",
        }
    }

    /// The preset named `name`.
    pub fn parse(name: &str) -> Option<ApprovalPreset> {
        ApprovalPreset::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for ApprovalPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which calls run, ask or are refused (`[approvals]` in the configuration file).
///
/// ```toml
/// [approvals]
/// default = "ask-writes"          # auto | ask-writes | ask-all | deny-writes
/// [approvals.classes]
/// network_write = "deny"          # read_only | write | network_write | shell | destructive
/// [approvals.tools]
/// file_write = "auto"             # a tool by name wins over its class
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// The preset the rest refines; `None` leaves it to the front end (`chat`:
    /// `ask-writes`; `run` and `serve`: `auto`, as they have no person by default).
    #[serde(rename = "default", skip_serializing_if = "Option::is_none")]
    pub preset: Option<ApprovalPreset>,
    /// Per class: overrides the preset.
    pub classes: BTreeMap<ApprovalClass, ApprovalMode>,
    /// Per tool name: overrides its class.
    pub tools: BTreeMap<String, ApprovalMode>,
}

impl ApprovalPolicy {
    /// The policy of one preset, with no override.
    pub fn preset(preset: ApprovalPreset) -> ApprovalPolicy {
        ApprovalPolicy {
            preset: Some(preset),
            ..ApprovalPolicy::default()
        }
    }

    /// This policy with its preset set when it has none.
    pub fn or_preset(mut self, preset: ApprovalPreset) -> ApprovalPolicy {
        self.preset.get_or_insert(preset);
        self
    }

    /// The mode for a call of `tool` in `class`: the tool's entry, else the class's, else
    /// the preset's (`auto` when there is none).
    pub fn mode(&self, tool: &str, class: ApprovalClass) -> ApprovalMode {
        if let Some(mode) = self.tools.get(tool) {
            return *mode;
        }
        if let Some(mode) = self.classes.get(&class) {
            return *mode;
        }
        self.preset.unwrap_or(ApprovalPreset::Auto).mode(class)
    }

    /// True when no call can ever ask or be refused (the engine then skips classifying).
    pub fn is_auto(&self) -> bool {
        self.preset.unwrap_or(ApprovalPreset::Auto) == ApprovalPreset::Auto
            && self.classes.values().all(|m| *m == ApprovalMode::Auto)
            && self.tools.values().all(|m| *m == ApprovalMode::Auto)
    }
}

/// One call waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The stored execution the call belongs to, when it is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The call's id.
    pub call_id: String,
    /// The call's position in its batch.
    pub position: usize,
    /// The tool's name.
    pub tool: String,
    /// The arguments it would run with (references resolved).
    pub arguments: Value,
    /// Its class.
    pub class: ApprovalClass,
    /// The resources it would touch, as its tool declares them.
    pub resources: Vec<ResourceAccess>,
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run the call.
    Approve,
    /// Run the call, and every later call of the same tool without asking (for the rest of
    /// the session: as long as this executor and its clones live).
    ApproveAlways,
    /// Do not run it: the call ends `error`, kind `denied`, and the model reads
    /// "denied by the user" with the reason.
    Deny {
        /// Why, if the person said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Run it with these arguments instead (checked against the tool's schema first; the
    /// result records them in `edited_arguments`).
    Edit {
        /// The arguments to run with.
        arguments: Value,
    },
}

/// Decides calls whose policy is `ask`: a terminal prompt, an HTTP endpoint, a callback.
///
/// It may take as long as a person takes: the call waits holding nothing. Dropping the
/// future withdraws the question (the execution was cancelled).
pub trait Approver: Send + Sync + 'static {
    /// Decides one call.
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision>;
}

impl<F> Approver for F
where
    F: Fn(ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> + Send + Sync + 'static,
{
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, ApprovalDecision> {
        self(request)
    }
}

/// An approver shared by executions.
pub type SharedApprover = Arc<dyn Approver>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_needs_declared_reads_only() {
        assert_eq!(ApprovalClass::from_resources(&[]), ApprovalClass::Write);
        assert_eq!(
            ApprovalClass::from_resources(&[
                ResourceAccess::read("file:a"),
                ResourceAccess::read("dir:.")
            ]),
            ApprovalClass::ReadOnly
        );
        assert_eq!(
            ApprovalClass::from_resources(&[
                ResourceAccess::read("file:a"),
                ResourceAccess::intent_write("dir:.")
            ]),
            ApprovalClass::Write
        );
    }

    #[test]
    fn presets_match_the_documented_table() {
        use ApprovalMode::{Ask, Auto, Deny};
        let table = [
            (ApprovalPreset::Auto, [Auto, Auto, Auto, Auto, Auto]),
            (ApprovalPreset::AskWrites, [Auto, Ask, Ask, Ask, Ask]),
            (ApprovalPreset::AskAll, [Ask, Ask, Ask, Ask, Ask]),
            (ApprovalPreset::DenyWrites, [Auto, Deny, Deny, Deny, Deny]),
        ];
        for (preset, modes) in table {
            for (class, mode) in ApprovalClass::ALL.into_iter().zip(modes) {
                assert_eq!(preset.mode(class), mode, "{preset} {class}");
            }
        }
    }

    #[test]
    fn tool_wins_over_class_which_wins_over_preset() {
        let policy: ApprovalPolicy = toml_like(
            r#"{"default": "ask-writes", "classes": {"write": "deny", "read_only": "ask"},
                "tools": {"file_write": "auto"}}"#,
        );
        assert_eq!(
            policy.mode("file_write", ApprovalClass::Write),
            ApprovalMode::Auto
        );
        assert_eq!(
            policy.mode("other", ApprovalClass::Write),
            ApprovalMode::Deny
        );
        assert_eq!(
            policy.mode("file_read", ApprovalClass::ReadOnly),
            ApprovalMode::Ask
        );
        assert_eq!(
            policy.mode("shell", ApprovalClass::Shell),
            ApprovalMode::Ask
        );
        assert!(!policy.is_auto());
        assert!(ApprovalPolicy::default().is_auto());
        assert_eq!(
            ApprovalPolicy::default().mode("x", ApprovalClass::Destructive),
            ApprovalMode::Auto
        );
        assert_eq!(
            ApprovalPolicy::default()
                .or_preset(ApprovalPreset::AskWrites)
                .mode("x", ApprovalClass::Shell),
            ApprovalMode::Ask
        );
    }

    #[test]
    fn policy_refuses_unknown_names() {
        let bad = [
            r#"{"default": "sometimes"}"#,
            r#"{"classes": {"writes": "ask"}}"#,
            r#"{"tools": {"x": "maybe"}}"#,
            r#"{"tool": {}}"#,
        ];
        for text in bad {
            assert!(
                serde_json::from_str::<ApprovalPolicy>(text).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn decisions_have_a_plain_wire_shape() {
        let deny: ApprovalDecision =
            serde_json::from_str(r#"{"decision": "deny", "reason": "no"}"#).expect("deny");
        assert_eq!(
            deny,
            ApprovalDecision::Deny {
                reason: Some("no".into())
            }
        );
        let edit: ApprovalDecision =
            serde_json::from_str(r#"{"decision": "edit", "arguments": {"a": 1}}"#).expect("edit");
        assert_eq!(
            edit,
            ApprovalDecision::Edit {
                arguments: serde_json::json!({"a": 1})
            }
        );
        assert_eq!(
            ApprovalPreset::parse("deny-writes"),
            Some(ApprovalPreset::DenyWrites)
        );
    }

    fn toml_like(json: &str) -> ApprovalPolicy {
        serde_json::from_str(json).expect("policy")
    }
}
