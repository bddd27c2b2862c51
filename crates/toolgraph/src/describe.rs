//! The registered tools described for people and programs: what `toolgraph tools --json`
//! prints and `GET /v1/tools` answers — one shape, built in one place.

use serde::Serialize;
use serde_json::Value;
use toolgraph_core::{ToolSet, ToolTraits};

/// One registered tool: its name, description, parameter schema, scheduling traits, and
/// why it has those traits when that is worth saying (an MCP tool's class).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDescription {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON schema of its arguments.
    pub parameters: Value,
    /// What the scheduler may assume: parallel-safe or exclusive, idempotent, blocking,
    /// concurrency cap, cost, timeout.
    pub traits: ToolTraits,
    /// Which annotations or overrides decided its class, when known.
    pub traits_reason: Option<String>,
}

/// Every registered tool, in registration order.
pub fn describe_tools(tools: &ToolSet) -> Vec<ToolDescription> {
    tools
        .entries()
        .iter()
        .map(|e| {
            let spec = e.tool.spec();
            ToolDescription {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters: spec.parameters.clone(),
                traits: spec.traits.clone(),
                traits_reason: e.tool.traits_reason(),
            }
        })
        .collect()
}
