//! `toolgraph plan`: the dependency graph of a batch, as text, JSON, DOT or Mermaid.

use anyhow::Result;
use clap::{Args, ValueEnum};
use toolgraph_engine::DependencyGraph;

use crate::Outcome;
use crate::input::{ToolSetFlags, parse_or_report, read_source, report_rejection};

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
    println!("{out}");
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
    let mut out =
        String::from("digraph toolgraph {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (level, ids) in g.levels.iter().enumerate() {
        out.push_str(&format!("  subgraph level_{level} {{ rank=same;"));
        for id in ids {
            let tool = names
                .iter()
                .find(|(i, _)| i == id)
                .map_or("", |(_, t)| t.as_str());
            out.push_str(&format!(
                " {} [label={}];",
                quoted(id),
                quoted(&format!("{id}\n{tool}"))
            ));
        }
        out.push_str(" }\n");
    }
    for e in &g.edges {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quoted(&e.from),
            quoted(&e.to),
            quoted(&e.reason)
        ));
    }
    out.push('}');
    out
}

fn mermaid(g: &DependencyGraph, names: &[(String, String)]) -> String {
    // Mermaid node ids must be simple: use positions, show the real id as the label.
    let node = |id: &str| {
        names
            .iter()
            .position(|(i, _)| i == id)
            .map_or_else(|| "n".into(), |p| format!("n{p}"))
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
