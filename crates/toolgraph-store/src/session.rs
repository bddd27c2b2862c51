//! Conversations: a chat session's transcript, kept turn by turn — what `toolgraph
//! sessions` lists, `toolgraph show SESSION` shows and `toolgraph chat --resume` continues.
//!
//! A session is a row of `sessions` (title, provider, model, system prompt, running totals)
//! and one row of `session_turns` per turn: the messages that turn added to the
//! conversation, in the provider's shape (the model reads them back as they were sent), its
//! tokens, status and times. A turn is written once, when it ends — answered, cancelled or
//! failed — so a turn cut short keeps what it did. The executions a turn ran are the
//! session's executions created within the turn's times (they carry the session's id).
//!
//! Plain shapes and the SQL statements of the SQL store; the memory store keeps the same
//! shapes in a map. This module never interprets messages beyond concatenating them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::database::Store;
use crate::read::{SUMMARY_COLUMNS, summary};
use crate::stored::ExecutionSummary;
use crate::{StoreError, now_ms};

/// One line of `toolgraph sessions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    /// The session's id (a UUID).
    pub id: String,
    /// Its first prompt, shortened (none for a session that recorded executions only).
    pub title: Option<String>,
    /// The provider its turns were asked of (`openai`, `anthropic`).
    pub provider: Option<String>,
    /// The model of its latest turn.
    pub model: Option<String>,
    /// Turns recorded.
    pub turns: i64,
    /// Prompt tokens over every turn.
    pub input_tokens: i64,
    /// Completion tokens over every turn.
    pub output_tokens: i64,
    /// When it was created, ms since the Unix epoch.
    pub created_at: i64,
    /// When its latest turn ended (its creation when it has none), ms since the Unix epoch.
    pub updated_at: i64,
}

/// What a session is, as its turns are written: the first write creates it, later ones
/// keep its title and update the rest (the session's model is its latest turn's).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionHead {
    /// The session's id.
    pub id: String,
    /// Its title (kept from the first write).
    pub title: String,
    /// The provider (`openai`, `anthropic`).
    pub provider: String,
    /// The system prompt, if any (kept from the first write that has one).
    pub system: Option<String>,
}

/// One turn: a prompt and everything until the model answered, or the turn was cancelled
/// or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionTurn {
    /// 1, 2, … in the order they were asked (given by the store when written).
    pub turn: i64,
    /// When it was asked, ms since the Unix epoch.
    pub started_at: i64,
    /// When it ended, ms since the Unix epoch.
    pub finished_at: i64,
    /// `answered`, `unanswered` (no final answer: too many model turns, or cut short),
    /// `cancelled` (Ctrl-C) or `failed` (the model server failed).
    pub status: String,
    /// The model asked.
    pub model: String,
    /// What the user asked.
    pub prompt: String,
    /// The model's answer, or why there is none.
    pub answer: String,
    /// The messages this turn added to the conversation (the user's prompt first, then the
    /// assistant's replies with their tool calls and the tool results), provider-shaped.
    pub messages: Vec<Value>,
    /// Prompt tokens of this turn.
    pub input_tokens: i64,
    /// Completion tokens of this turn.
    pub output_tokens: i64,
}

/// A session read back: its summary, system prompt, turns and executions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSession {
    /// The summary.
    pub summary: SessionSummary,
    /// The system prompt of its first turn that had one.
    pub system: Option<String>,
    /// Every turn, in order.
    pub turns: Vec<SessionTurn>,
    /// Every execution recorded under the session, oldest first.
    pub executions: Vec<ExecutionSummary>,
}

impl StoredSession {
    /// The whole conversation so far, oldest message first: what the model reads when the
    /// session is continued.
    pub fn history(&self) -> Vec<Value> {
        self.turns
            .iter()
            .flat_map(|t| t.messages.iter().cloned())
            .collect()
    }

    /// The executions turn `turn` ran: those created while it ran.
    pub fn executions_of(&self, turn: &SessionTurn) -> Vec<&ExecutionSummary> {
        self.executions
            .iter()
            .filter(|e| e.created_at >= turn.started_at && e.created_at <= turn.finished_at)
            .collect()
    }
}

/// `text` made a title: its first line, at most 60 characters (an ellipsis when cut).
pub fn title_of(text: &str) -> String {
    const MAX: usize = 60;
    let line = text.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() <= MAX && !text.trim().contains('\n') {
        return line.to_owned();
    }
    let short: String = line.chars().take(MAX - 1).collect();
    format!("{}…", short.trim_end())
}

const SESSION_COLUMNS: &str = "id, label, provider, model, turn_count, input_tokens, output_tokens, created_at, updated_at, system_prompt";

fn session_summary(row: &AnyRow) -> Result<SessionSummary, sqlx::Error> {
    let created_at: i64 = row.try_get("created_at")?;
    Ok(SessionSummary {
        id: row.try_get("id")?,
        title: row.try_get("label")?,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        turns: row.try_get("turn_count")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        created_at,
        updated_at: row
            .try_get::<Option<i64>, _>("updated_at")?
            .unwrap_or(created_at),
    })
}

fn session_turn(id: &str, row: &AnyRow) -> Result<SessionTurn, StoreError> {
    let text: String = row.try_get("messages")?;
    let turn: i64 = row.try_get("turn")?;
    let messages: Vec<Value> = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        message: format!("session turn {turn}: messages: {e}"),
    })?;
    Ok(SessionTurn {
        turn,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        status: row.try_get("status")?,
        model: row.try_get("model")?,
        prompt: row.try_get("prompt")?,
        answer: row.try_get("answer")?,
        messages,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
    })
}

impl Store {
    /// Writes `turn` as the next turn of session `head.id` (creating the session with the
    /// first), in one transaction; returns its number.
    pub(crate) async fn insert_session_turn(
        &self,
        head: &SessionHead,
        turn: &SessionTurn,
    ) -> Result<i64, StoreError> {
        let messages = serde_json::to_string(&turn.messages).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, created_at, label) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&head.id)
        .bind(turn.started_at)
        .bind(&head.title)
        .execute(&mut *tx)
        .await?;
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(turn), 0) + 1 AS next FROM session_turns WHERE session_id = $1",
        )
        .bind(&head.id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        sqlx::query(
            "INSERT INTO session_turns (session_id, turn, started_at, finished_at, status, model, prompt, answer, messages, input_tokens, output_tokens) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&head.id)
        .bind(next)
        .bind(turn.started_at)
        .bind(turn.finished_at)
        .bind(&turn.status)
        .bind(&turn.model)
        .bind(&turn.prompt)
        .bind(&turn.answer)
        .bind(messages)
        .bind(turn.input_tokens)
        .bind(turn.output_tokens)
        .execute(&mut *tx)
        .await?;
        // A session an execution created first has no title yet; a system prompt is kept
        // from the first turn that had one. (NULLs as literals: see `insert_execution`.)
        let system = if head.system.is_some() {
            "COALESCE(system_prompt, $8)"
        } else {
            "system_prompt"
        };
        let mut update = sqlx::query(AssertSqlSafe(format!(
            "UPDATE sessions SET label = COALESCE(label, $2), provider = $3, model = $4, \
             updated_at = $5, turn_count = turn_count + 1, input_tokens = input_tokens + $6, \
             output_tokens = output_tokens + $7, system_prompt = {system} WHERE id = $1"
        )))
        .bind(&head.id)
        .bind(&head.title)
        .bind(&head.provider)
        .bind(&turn.model)
        .bind(turn.finished_at.max(now_ms()))
        .bind(turn.input_tokens)
        .bind(turn.output_tokens);
        if let Some(system) = &head.system {
            update = update.bind(system);
        }
        update.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// The sessions, latest activity first, at most `limit`.
    pub(crate) async fn fetch_sessions(
        &self,
        limit: i64,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY COALESCE(updated_at, created_at) DESC, id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(session_summary).collect::<Result<_, _>>()?)
    }

    /// The sessions whose id starts with `prefix`, in id order, at most `limit`.
    pub(crate) async fn fetch_sessions_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {from} LIMIT $2",
            from = self.backend().ids_from()
        )))
        .bind(prefix)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = session_summary(row)?;
            if !s.id.starts_with(prefix) {
                break;
            }
            found.push(s);
        }
        Ok(found)
    }

    /// Session `id`, with its turns and executions.
    pub(crate) async fn fetch_session(&self, id: &str) -> Result<StoredSession, StoreError> {
        let head = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::SessionNotFound {
            id: id.to_owned(),
            store: self.shown(),
        })?;
        let head_summary = session_summary(&head)?;
        let system: Option<String> = head.try_get("system_prompt")?;
        let rows = sqlx::query(
            "SELECT turn, started_at, finished_at, status, model, prompt, answer, messages, input_tokens, output_tokens FROM session_turns WHERE session_id = $1 ORDER BY turn",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let turns = rows
            .iter()
            .map(|row| session_turn(id, row))
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM executions WHERE session_id = $1 ORDER BY created_at, id"
        )))
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let executions = rows.iter().map(summary).collect::<Result<_, _>>()?;
        Ok(StoredSession {
            summary: head_summary,
            system,
            turns,
            executions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::title_of;

    #[test]
    fn a_title_is_the_first_line_shortened() {
        assert_eq!(title_of("  list my notes "), "list my notes");
        let long = "a".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 60);
        assert!(title_of(&long).ends_with('…'));
        assert_eq!(title_of("first\nsecond"), "first…");
    }
}
