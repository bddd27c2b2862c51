//! `toolgraph sessions` (chat sessions, latest activity first) and the session side of
//! `toolgraph show`: every turn's messages — the prompt, the model's replies and tool
//! calls, the tool results — and the executions the turn ran.
//!
//! Like the other reading commands (`history_cmd`), these never create a store, and a
//! session is named by its id or a unique prefix of it ([`resolve_session`]).

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::Value;
use toolgraph_store::{ExecutionStore, SessionSummary, StoreError, StoredSession};

use crate::Outcome;
use crate::history_cmd::{IdKind, SHOWN_ID, nothing_yet, shown_id, when};
use crate::input::StoreFlags;
use crate::out::{errln, outln};
use crate::render;

/// The longest a message's text is shown in `show` (`--json` has it whole).
const SHOWN_TEXT: usize = 400;

/// The session `given` names in `store` — its id or a unique prefix — or an error saying
/// why not, naming the store; an ambiguous prefix lists the candidates.
pub async fn resolve_session(store: &dyn ExecutionStore, given: &str) -> Result<SessionSummary> {
    store.resolve_session(given).await.map_err(session_error)
}

/// A failed session lookup as the user reads it: an ambiguous prefix lists its candidates.
pub fn session_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::SessionAmbiguous {
            prefix,
            store,
            candidates,
            more,
        } => anyhow!(ambiguous(&prefix, &store, &candidates, more)),
        e => e.into(),
    }
}

/// An ambiguous session prefix, with its candidates one a line.
fn ambiguous(prefix: &str, store: &str, candidates: &[SessionSummary], more: bool) -> String {
    let mut text = format!(
        "{prefix} is ambiguous in the store {store}: {} sessions' ids start so; give more of the id:",
        if more {
            format!("more than {}", candidates.len())
        } else {
            candidates.len().to_string()
        }
    );
    for c in candidates {
        text.push_str(&format!(
            "\n  {}  {}  {}",
            c.id,
            when(c.updated_at),
            c.title.as_deref().unwrap_or("-")
        ));
    }
    if more {
        text.push_str("\n  …");
    }
    text
}

#[derive(Args)]
pub struct SessionsArgs {
    /// How many sessions, latest activity first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn sessions(args: SessionsArgs) -> Result<Outcome> {
    let (store, name) = args.store.existing_store().await?;
    let rows = match &store {
        Some(store) => store.sessions(args.limit).await?,
        None => Vec::new(),
    };
    if args.store.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        if store.is_none() {
            errln!("toolgraph: {}", nothing_yet(&name));
        }
        return Ok(Outcome::Success);
    }
    let Some(store) = store else {
        outln!("{}", nothing_yet(&name))?;
        return Ok(Outcome::Success);
    };
    if rows.is_empty() {
        outln!("no sessions yet in {name} (`toolgraph chat` starts one)")?;
        return Ok(Outcome::Success);
    }
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(shown_id(&*store, IdKind::Session, &r.id).await?);
    }
    let width = ids.iter().map(String::len).max().unwrap_or(SHOWN_ID);
    outln!(
        "{:<width$}  {:<19}  {:>5}  {:>13}  {:<16}  title",
        "id",
        "last activity (UTC)",
        "turns",
        "tokens in/out",
        "model"
    )?;
    for (r, id) in rows.iter().zip(&ids) {
        outln!(
            "{:<width$}  {:<19}  {:>5}  {:>13}  {:<16}  {}",
            id,
            when(r.updated_at),
            r.turns,
            format!("{}/{}", r.input_tokens, r.output_tokens),
            render::truncate(r.model.as_deref().unwrap_or("-"), 16),
            r.title.as_deref().unwrap_or("-")
        )?;
    }
    Ok(Outcome::Success)
}

/// Prints session `id` of `store`: JSON, or every turn with its messages and executions.
pub async fn show_session(store: &dyn ExecutionStore, id: &str, json: bool) -> Result<Outcome> {
    let session = store.load_session(id).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&session)?)?;
        return Ok(Outcome::Success);
    }
    let s = &session.summary;
    outln!(
        "session {} · {} · {} {} · {} turn(s) · tokens {} in / {} out",
        s.id,
        s.title.as_deref().unwrap_or("(untitled)"),
        s.provider.as_deref().unwrap_or("-"),
        s.model.as_deref().unwrap_or("-"),
        s.turns,
        s.input_tokens,
        s.output_tokens
    )?;
    outln!(
        "created {} · last activity {} (UTC)",
        when(s.created_at),
        when(s.updated_at)
    )?;
    if let Some(system) = &session.system {
        outln!("system: {}", render::truncate(system, SHOWN_TEXT))?;
    }
    for turn in &session.turns {
        outln!(
            "\n── turn {} · {} · {} · {} · tokens {} in / {} out · {:.1} s",
            turn.turn,
            turn.status,
            when(turn.started_at),
            turn.model,
            turn.input_tokens,
            turn.output_tokens,
            (turn.finished_at - turn.started_at) as f64 / 1e3
        )?;
        for message in &turn.messages {
            for line in message_lines(message) {
                outln!("  {line}")?;
            }
        }
        print_executions(&session, turn)?;
    }
    let untold = executions_outside_turns(&session);
    if !untold.is_empty() {
        outln!("\nexecutions recorded under the session outside its turns:")?;
        for e in untold {
            outln!("  {}", execution_line(e))?;
        }
    }
    Ok(Outcome::Success)
}

fn print_executions(session: &StoredSession, turn: &toolgraph_store::SessionTurn) -> Result<()> {
    for e in session.executions_of(turn) {
        outln!("  {}", execution_line(e))?;
    }
    Ok(())
}

fn executions_outside_turns(session: &StoredSession) -> Vec<&toolgraph_store::ExecutionSummary> {
    session
        .executions
        .iter()
        .filter(|e| {
            !session
                .turns
                .iter()
                .any(|t| e.created_at >= t.started_at && e.created_at <= t.finished_at)
        })
        .collect()
}

/// `execution 3f2c1a8e · finished · 4 call(s) · success yes · makespan 12.3 ms · …`.
fn execution_line(e: &toolgraph_store::ExecutionSummary) -> String {
    format!(
        "execution {} · {} · {} · {} call(s) · success {} · makespan {} · speedup {}",
        e.id.get(..SHOWN_ID).unwrap_or(&e.id),
        when(e.created_at),
        e.status,
        e.calls,
        e.success.map_or("-", |s| if s { "yes" } else { "no" }),
        e.makespan_ms
            .map_or_else(|| "-".into(), |m| format!("{m:.1} ms")),
        e.speedup.map_or_else(|| "-".into(), |s| format!("{s:.2}×")),
    )
}

/// One stored message as lines, whichever provider's shape it is in.
fn message_lines(message: &Value) -> Vec<String> {
    let role = message.get("role").and_then(Value::as_str).unwrap_or("?");
    let short = |text: &str| render::truncate(&text.replace('\n', " ⏎ "), SHOWN_TEXT);
    let mut lines = Vec::new();
    match message.get("content") {
        Some(Value::String(text)) if role == "tool" => {
            let id = message
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or("?");
            lines.push(format!("tool {id}: {}", short(text)));
        }
        Some(Value::String(text)) if !text.is_empty() => {
            lines.push(format!("{role}: {}", short(text)));
        }
        Some(Value::Array(blocks)) => {
            for block in blocks {
                let kind = block.get("type").and_then(Value::as_str).unwrap_or("?");
                let field = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or("?");
                match kind {
                    "text" => lines.push(format!("{role}: {}", short(field("text")))),
                    "tool_use" => lines.push(format!(
                        "{role} → {} {} {}",
                        field("id"),
                        field("name"),
                        short(&block.get("input").map(Value::to_string).unwrap_or_default())
                    )),
                    "tool_result" => {
                        let content = match block.get("content") {
                            Some(Value::String(text)) => text.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        let error = if block.get("is_error") == Some(&Value::Bool(true)) {
                            " (error)"
                        } else {
                            ""
                        };
                        lines.push(format!(
                            "tool {}{error}: {}",
                            field("tool_use_id"),
                            short(&content)
                        ));
                    }
                    other => lines.push(format!("{role}: [{other}]")),
                }
            }
        }
        _ => {}
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let id = call.get("id").and_then(Value::as_str).unwrap_or("?");
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("");
            lines.push(format!("{role} → {id} {name} {}", short(arguments)));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::message_lines;
    use serde_json::json;

    #[test]
    fn messages_of_both_providers_read_as_lines() {
        let openai = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "ls", "type": "function", "function": {"name": "list_dir", "arguments": "{\"path\":\"notes\"}"}}
        ]});
        assert_eq!(
            message_lines(&openai),
            [r#"assistant → ls list_dir {"path":"notes"}"#]
        );
        let result = json!({"role": "tool", "tool_call_id": "ls", "content": "a\nb"});
        assert_eq!(message_lines(&result), ["tool ls: a ⏎ b"]);
        let anthropic = json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "x", "content": "no", "is_error": true}
        ]});
        assert_eq!(message_lines(&anthropic), ["tool x (error): no"]);
    }
}
