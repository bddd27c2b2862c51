//! One chat session: the conversation so far and the turns that extend it, for both ways
//! `toolgraph chat` runs (one prompt, or the interactive loop of `chat_repl`).
//!
//! [`ChatSession::turn`] asks one prompt with the whole history: it builds the turn's
//! orchestrator in [`ChatSession::orchestrator`] — the one place a turn's runner and
//! orchestrator are put together, so that hooks on a turn's calls plug in there — runs it
//! until the answer (or Ctrl-C, or a model failure), then writes the turn into the store's
//! session (`toolgraph sessions`, `show`, `chat --resume`) with the messages it added. A
//! turn cut short is written too, with what it did, and the conversation goes on from it.
//!
//! It never prints: the caller shows the [`TurnReport`].

use std::sync::Arc;

use serde_json::Value;
use toolgraph::llm::{LlmClient, LlmError, OrchestratorResult, ToolOrchestrator};
use toolgraph_engine::CancellationToken;
use toolgraph_store::{ExecutionStore, SessionHead, SessionTurn, StoredSession, title_of};

use crate::approve_prompt::TerminalApprover;
use crate::progress::Progress;

/// How each turn's orchestrator is set up (from the flags).
pub struct TurnSettings {
    /// Model turns at most, per prompt.
    pub max_iterations: usize,
    /// Teach the `${call_id}` reference syntax.
    pub teach_references: bool,
    /// The system prompt.
    pub system: Option<String>,
    /// Show the progress display.
    pub progress: bool,
}

/// A conversation, its session in the store (when recording), and what runs its turns.
pub struct ChatSession {
    client: LlmClient,
    runtime: toolgraph::Runtime,
    settings: TurnSettings,
    /// The session's id; recorded when the runtime has a store.
    id: String,
    /// Its title, once its first prompt is known.
    title: Option<String>,
    /// Every message so far, provider-shaped.
    history: Vec<Value>,
    /// Turns so far (earlier ones included when resumed).
    turns: usize,
    /// Asks a person about calls the approval policy holds (one for the whole session, so
    /// "always" lasts until it ends).
    approver: Option<Arc<TerminalApprover>>,
}

/// What one turn did.
pub struct TurnReport {
    /// The orchestrator's result: the answer, this turn's executions, usage, times.
    pub result: OrchestratorResult,
    /// The model server failed part-way (the result holds what was done before).
    pub error: Option<LlmError>,
    /// The turn's number in the session, when it was recorded.
    pub recorded: Option<i64>,
    /// Why recording the turn (or one of its executions) failed.
    pub recording_error: Option<String>,
}

impl ChatSession {
    /// A new session, or `resumed` continued (its history sent with every turn).
    pub fn new(
        client: LlmClient,
        runtime: toolgraph::Runtime,
        settings: TurnSettings,
        resumed: Option<StoredSession>,
    ) -> ChatSession {
        let (id, title, history, turns) = match resumed {
            Some(s) => {
                let history = s.history();
                (s.summary.id, s.summary.title, history, s.turns.len())
            }
            None => (toolgraph::Runtime::new_session_id(), None, Vec::new(), 0),
        };
        ChatSession {
            client,
            runtime,
            settings,
            id,
            title,
            history,
            turns,
            approver: None,
        }
    }

    /// The session's calls that need approval are asked about through `approver`.
    pub fn with_approver(mut self, approver: Option<Arc<TerminalApprover>>) -> Self {
        self.approver = approver;
        self
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where turns are recorded, if anywhere.
    pub fn store(&self) -> Option<&Arc<dyn ExecutionStore>> {
        self.runtime.store()
    }

    /// Turns so far.
    pub fn turns(&self) -> usize {
        self.turns
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        &self.client.config().model
    }

    /// The orchestrator of one turn: its batches recorded under the session, its progress
    /// shown on `progress`, stopped by `cancel`. Hooks on a turn's calls belong here.
    fn orchestrator(
        &self,
        progress: Option<&Arc<Progress>>,
        cancel: CancellationToken,
    ) -> ToolOrchestrator {
        let runtime = match progress {
            Some(p) => self.runtime.with_sink_per_execution(p.sink_factory()),
            None => self.runtime.clone(),
        };
        let session = self.store().is_some().then(|| self.id.clone());
        let runner = runtime.batch_runner(session);
        let mut orchestrator = ToolOrchestrator::with_runner(self.client.clone(), runner)
            .max_iterations(self.settings.max_iterations)
            .teach_references(self.settings.teach_references)
            .cancel_on(cancel);
        if let Some(system) = &self.settings.system {
            orchestrator = orchestrator.system_prompt(system.clone());
        }
        orchestrator
    }

    /// Asks `prompt` with the whole history until the model answers, `cancel` fires, or
    /// the model server fails; records the turn; the conversation goes on from what it did.
    pub async fn turn(&mut self, prompt: &str, cancel: CancellationToken) -> TurnReport {
        let started_at = toolgraph_store::now_ms();
        let progress = self.settings.progress.then(Progress::for_chat);
        if let Some(approver) = &self.approver {
            approver.begin_turn(progress.as_ref(), cancel.clone());
        }
        let orchestrator = self.orchestrator(progress.as_ref(), cancel);
        let (mut result, error) = orchestrator
            .continue_with_tools(self.history.clone(), prompt)
            .await;
        self.runtime.settle().await;
        if let Some(p) = &progress {
            p.finish();
        }
        let earlier = self.history.len().min(result.transcript.len());
        let added: Vec<Value> = result.transcript[earlier..].to_vec();
        self.history.extend(added.iter().cloned());
        self.turns += 1;
        let title = self.title.get_or_insert_with(|| title_of(prompt)).clone();
        let status = if error.is_some() {
            "failed"
        } else if result.cancelled {
            "cancelled"
        } else if result.success {
            "answered"
        } else {
            "unanswered"
        };
        let mut recording_error = result
            .executions
            .iter()
            .find_map(|e| e.metadata.recording_error.clone());
        let mut recorded = None;
        if let Some(store) = self.store() {
            let head = SessionHead {
                id: self.id.clone(),
                title,
                provider: self.client.config().provider.to_string(),
                system: self.settings.system.clone(),
            };
            let turn = SessionTurn {
                turn: 0,
                started_at,
                finished_at: toolgraph_store::now_ms(),
                status: status.to_owned(),
                model: self.model().to_owned(),
                prompt: prompt.to_owned(),
                answer: result.answer.clone(),
                messages: added,
                input_tokens: i64::try_from(result.usage.input_tokens).unwrap_or(i64::MAX),
                output_tokens: i64::try_from(result.usage.output_tokens).unwrap_or(i64::MAX),
            };
            match store.record_session_turn(&head, &turn).await {
                Ok(n) => recorded = Some(n),
                Err(e) => recording_error = Some(e.to_string()),
            }
        }
        // The result speaks of this turn; the history is the session's.
        result.transcript.drain(..earlier);
        TurnReport {
            result,
            error,
            recorded,
            recording_error,
        }
    }
}
