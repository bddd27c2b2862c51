//! `toolgraph plan`: the dependency graph of a batch, as text, JSON, DOT or Mermaid.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::collections::{HashMap, HashSet};

use toolgraph_engine::{DependencyGraph, GraphNode};

use crate::Outcome;
use crate::input::{ToolSetFlags, parse_or_report, read_source, report_rejection};
use crate::out::outln;

/// Graph formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    /// Levels and edges as text.
    Text,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The batch: a JSON file, or `-` for standard input.
    pub input: String,
    /// Print `{levels, edges, independent, dependent}` as JSON.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Graph format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: GraphFormat,
    #[command(flatten)]
    pub flags: ToolSetFlags,
}

pub async fn run(args: PlanArgs) -> Result<Outcome> {
    let text = read_source(&args.input)?;
    let Some(calls) = parse_or_report(&text) else {
        return Ok(Outcome::Rejected);
    };
    let (executor, _servers) = args.flags.executor().await?;
    let graph = match executor.build_dependency_graph(&calls) {
        Ok(g) => g,
        Err(e) => {
            report_rejection(&e);
            return Ok(Outcome::Rejected);
        }
    };
    let names: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    let out = if args.json {
        serde_json::to_string_pretty(&graph)?
    } else {
        match args.format {
            GraphFormat::Text => text_form(&graph),
            GraphFormat::Dot => dot(&graph, &names),
            GraphFormat::Mermaid => mermaid(&graph, &names),
        }
    };
    outln!("{out}")?;
    Ok(Outcome::Success)
}

fn text_form(g: &DependencyGraph) -> String {
    let mut out = String::new();
    for (level, ids) in g.levels.iter().enumerate() {
        out.push_str(&format!("level {level}: {}\n", ids.join(", ")));
    }
    if g.edges.is_empty() {
        out.push_str("no edges: every call runs at once\n");
    } else {
        out.push_str("edges:\n");
        for e in &g.edges {
            out.push_str(&format!("  {} -> {}  ({})\n", e.from, e.to, e.reason));
        }
    }
    out.push_str(&format!("independent: {}\n", list_or_none(&g.independent)));
    out.push_str(&format!("dependent:   {}", list_or_none(&g.dependent)));
    out
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot(g: &DependencyGraph, names: &[(String, String)]) -> String {
    let tools: HashMap<&str, &str> = names
        .iter()
        .map(|(id, tool)| (id.as_str(), tool.as_str()))
        .collect();
    let mut out =
        String::from("digraph toolgraph {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (level, ids) in g.levels.iter().enumerate() {
        out.push_str(&format!("  subgraph level_{level} {{ rank=same;"));
        for id in ids {
            let tool = tools.get(id.as_str()).copied().unwrap_or("");
            out.push_str(&format!(
                " {} [label={}];",
                quoted(id),
                quoted(&format!("{id}\n{tool}"))
            ));
        }
        out.push_str(" }\n");
    }
    for join in joins(g) {
        out.push_str(&format!(
            "  {} [shape=circle, label=\"\", width=0.15, tooltip={}];\n",
            quoted(&join.to_string()),
            quoted(&join.to_string())
        ));
    }
    for e in &g.edges {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quoted(&e.from.to_string()),
            quoted(&e.to.to_string()),
            quoted(&e.reason)
        ));
    }
    out.push('}');
    out
}

/// The joins of a graph, each once, in order of appearance.
fn joins(g: &DependencyGraph) -> Vec<&GraphNode> {
    let mut seen = HashSet::new();
    g.edges
        .iter()
        .flat_map(|e| [&e.from, &e.to])
        .filter(|n| matches!(n, GraphNode::Join { join, .. } if seen.insert(*join)))
        .collect()
}

fn mermaid(g: &DependencyGraph, names: &[(String, String)]) -> String {
    // Mermaid node ids must be simple: use positions (`j` and the number for a join), show
    // the real id as the label.
    let position: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(p, (id, _))| (id.as_str(), p))
        .collect();
    let node = |n: &GraphNode| match n {
        GraphNode::Call(id) => position
            .get(id.as_str())
            .map_or_else(|| "n".into(), |p| format!("n{p}")),
        GraphNode::Join { join, .. } => format!("j{join}"),
    };
    let label = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for (i, (id, tool)) in names.iter().enumerate() {
        out.push_str(&format!(
            "  n{i}[\"{}<br/><small>{}</small>\"]\n",
            label(id),
            label(tool)
        ));
    }
    for join in joins(g) {
        out.push_str(&format!("  {}((\" \"))\n", node(join)));
    }
    for e in &g.edges {
        out.push_str(&format!(
            "  {} -->|\"{}\"| {}\n",
            node(&e.from),
            label(&e.reason),
            node(&e.to)
        ));
    }
    out.trim_end().to_owned()
}
