//! `toolgraph tools`: the registered tools with their schemas and scheduling traits.

use anyhow::Result;
use clap::Args;
use toolgraph_core::ToolSpec;

use crate::Outcome;
use crate::out::outln;

#[derive(Args)]
pub struct ToolsArgs {
    /// Print the tools as JSON (name, description, parameters, traits).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub flags: crate::input::ToolSetFlags,
}

pub async fn run(args: ToolsArgs) -> Result<Outcome> {
    let (tools, _servers) = toolgraph::build_tools(&args.flags.config()?).await?;
    if args.json {
        let described = toolgraph::describe_tools(&tools);
        outln!("{}", serde_json::to_string_pretty(&described)?)?;
    } else {
        for entry in tools.entries() {
            let spec = entry.tool.spec();
            outln!("{}  [{}]", spec.name, traits_line(spec))?;
            if let Some(why) = entry.tool.traits_reason() {
                outln!("    class from: {why}")?;
            }
            if !spec.description.is_empty() {
                outln!("    {}", spec.description)?;
            }
            outln!("    parameters: {}", spec.parameters)?;
        }
    }
    Ok(Outcome::Success)
}

/// The traits in words: `parallel-safe, idempotent, blocking, max 4 at once, cost 1 cpu`.
fn traits_line(spec: &ToolSpec) -> String {
    let t = &spec.traits;
    let mut words = vec![if t.parallel_safe {
        "parallel-safe".to_owned()
    } else {
        "exclusive".to_owned()
    }];
    if t.idempotent {
        words.push("idempotent (retried on transient errors)".into());
    }
    if t.blocking {
        words.push("blocking (runs on the blocking pool)".into());
    }
    if let Some(n) = t.max_concurrency {
        words.push(format!("max {n} at once"));
    }
    if t.cost.cpu > 0.0 || t.cost.memory_mb > 0 {
        words.push(format!("cost {} cpu, {} MB", t.cost.cpu, t.cost.memory_mb));
    }
    if let Some(ms) = t.timeout_ms {
        words.push(format!("timeout {ms} ms"));
    }
    words.join(", ")
}
