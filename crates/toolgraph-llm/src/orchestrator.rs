//! [`ToolOrchestrator`]: the loop that lets a model use tools — ask, run every call the
//! turn emits through the engine (one execution per turn), answer every call id, repeat.
//!
//! Invariants: every tool call id of a turn gets exactly one result, in the order the model
//! emitted the calls (failed, skipped, timed out, malformed or rejected calls get an error
//! result the model can act on); nothing the model sends makes it panic; it never runs a
//! call of a turn cut short (`length`, `content_filter`, error), and while streaming it
//! starts early only calls that are safe to run twice (results of a turn later cut short
//! are discarded).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use toolgraph_core::{InputError, ParallelExecutionResult, ToolCall, ToolSet, ToolSpec};
use toolgraph_engine::{CancellationToken, ParallelExecutor};
use tracing::Instrument;

use crate::client::LlmClient;
use crate::config::Provider;
use crate::error::LlmError;
use crate::turn::{Conversation, StreamEvent, Turn, Usage};

/// The system-prompt section that teaches the model to emit a dependent plan in one turn.
pub const REFERENCES_SECTION: &str = "\
## Tool calls in one turn run in parallel
All tool calls you emit in one turn are run together, in parallel where safe. When one \
call needs another's output, do not wait for a second turn: give the call ids yourself \
and refer to them.
- A string argument that is exactly \"${call_id}\" is replaced by that call's output \
(type preserved); \"${call_id.path.0.key}\" takes a path into it (numbers index arrays).
- A reference inside a longer string is spliced in as text.
- Add \"depends_on\": [\"call_id\", ...] inside the arguments to order calls that pass no \
data; it is removed before the tool sees the arguments.
- A call runs only after the calls it references succeeded; if one fails, it is skipped \
and you are told why.";

/// What runs a turn's batches of calls: an executor, or a runtime that also records each
/// batch ahead of running it. Streamed early calls run as batches of their own.
pub trait BatchRunner: Send + Sync + 'static {
    /// The tools the model may call.
    fn tools(&self) -> &ToolSet;

    /// Plans and runs one batch until it ends or `cancel` fires (unfinished calls then end
    /// `cancelled`). The future owns what it needs (it may be spawned).
    fn run_batch(
        &self,
        calls: Vec<ToolCall>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<ParallelExecutionResult, InputError>>;
}

impl BatchRunner for ParallelExecutor {
    fn tools(&self) -> &ToolSet {
        ParallelExecutor::tools(self)
    }

    fn run_batch(
        &self,
        calls: Vec<ToolCall>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<ParallelExecutionResult, InputError>> {
        let executor = self.clone();
        Box::pin(async move { executor.execute_with_cancel(calls, cancel).await })
    }
}

/// Runs a prompt to a final answer, letting the model call the executor's tools.
pub struct ToolOrchestrator {
    client: LlmClient,
    executor: Arc<dyn BatchRunner>,
    max_iterations: usize,
    system_prompt: Option<String>,
    teach_references: bool,
    streaming_dispatch: bool,
    cancel: CancellationToken,
}

/// What a run returns.
#[derive(Debug, Clone, Serialize)]
pub struct OrchestratorResult {
    /// True when the model gave a final answer (a turn without tool calls, not cut short).
    pub success: bool,
    /// The final answer, or why there is none.
    pub answer: String,
    /// Every message of the conversation, in the provider's shape (system prompt not
    /// included): a continued conversation's earlier messages first.
    pub transcript: Vec<Value>,
    /// One execution per batch run (streamed early calls run as batches of their own).
    pub executions: Vec<ParallelExecutionResult>,
    /// Tool calls the model asked for (malformed and rejected ones included).
    pub tool_calls_made: usize,
    /// Model turns taken.
    pub iterations: usize,
    /// Tokens, summed over turns.
    pub usage: Usage,
    /// Time waiting on the model: each turn's request until its reply ended, summed, in ms.
    pub model_ms: f64,
    /// Time running tools that did not overlap the model: each turn's tool phase, from the
    /// end of the reply until its last call ended, summed, in ms. `model_ms + tool_ms` is
    /// the run's wall time (less the little spent between them).
    pub tool_ms: f64,
    /// Time calls started early ran while the model was still replying (at least one of
    /// them running), summed, in ms: part of `model_ms`, the time streaming dispatch hid.
    pub tool_overlap_ms: f64,
    /// True when the run was stopped by its cancellation token (see
    /// [`ToolOrchestrator::cancel_on`]): the turn's running calls ended `cancelled`, and
    /// nothing more was asked.
    pub cancelled: bool,
}

/// Ends a run its token cancelled: what happened so far, said plainly.
fn cancelled(
    mut out: OrchestratorResult,
    conversation: Conversation,
    when: &str,
) -> OrchestratorResult {
    out.success = false;
    out.cancelled = true;
    out.answer = format!("cancelled {when}: no final answer");
    out.transcript = conversation.messages;
    out
}

/// Milliseconds from `a` to `b` (0 when `b` is earlier).
fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1e3
}

/// How much of `[0, until]` the intervals cover (overlaps counted once).
fn covered(intervals: &mut [(f64, f64)], until: f64) -> f64 {
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut reached = 0.0f64;
    for &(from, to) in intervals.iter() {
        let (from, to) = (from.max(reached), to.min(until));
        if to > from {
            total += to - from;
            reached = to;
        }
    }
    total
}

/// One call's answer to the model.
struct Answer {
    content: String,
    is_error: bool,
}

/// A call started while its turn was still streaming. Dropping it (the turn was abandoned,
/// or the orchestrator's future dropped) cancels its execution: the call's future is dropped
/// at once and the execution finishes `cancelled` (a recording runner closes its record), so
/// nothing an early call started outlives its turn.
struct Early {
    call: ToolCall,
    /// When it was started.
    at: Instant,
    handle: JoinHandle<Result<ParallelExecutionResult, InputError>>,
    _cancel_on_drop: CancelOnDrop,
}

struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Early {
    /// Stops a call whose result is no longer wanted (its cancel guard drops here) and
    /// gives the call back.
    fn discard(self) -> ToolCall {
        self.call
    }
}

impl ToolOrchestrator {
    /// An orchestrator asking `client`'s model to use `executor`'s tools; at most 10 turns,
    /// no system prompt, references not taught, streaming dispatch on when streaming.
    pub fn new(client: LlmClient, executor: Arc<ParallelExecutor>) -> Self {
        Self::with_runner(client, executor)
    }

    /// An orchestrator whose batches `runner` runs (e.g. a runtime that records each turn).
    pub fn with_runner(client: LlmClient, executor: Arc<dyn BatchRunner>) -> Self {
        ToolOrchestrator {
            client,
            executor,
            max_iterations: 10,
            system_prompt: None,
            teach_references: false,
            streaming_dispatch: true,
            cancel: CancellationToken::new(),
        }
    }

    /// Stops the run when `cancel` fires (Ctrl-C): a model request in flight is abandoned,
    /// the turn's running calls end `cancelled` (a recording runner stores the execution
    /// cancelled), nothing more is asked, and the run returns what happened so far with
    /// [`OrchestratorResult::cancelled`] set.
    pub fn cancel_on(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The most model turns in one run.
    pub fn max_iterations(mut self, n: usize) -> Self {
        self.max_iterations = n.max(1);
        self
    }

    /// The system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Adds [`REFERENCES_SECTION`] to the system prompt.
    pub fn teach_references(mut self, on: bool) -> Self {
        self.teach_references = on;
        self
    }

    /// While streaming, start calls of idempotent tools as soon as their arguments are whole.
    pub fn streaming_dispatch(mut self, on: bool) -> Self {
        self.streaming_dispatch = on;
        self
    }

    /// The system prompt sent, if any.
    pub fn effective_system_prompt(&self) -> Option<String> {
        match (&self.system_prompt, self.teach_references) {
            (None, false) => None,
            (Some(p), false) => Some(p.clone()),
            (None, true) => Some(REFERENCES_SECTION.to_owned()),
            (Some(p), true) => Some(format!("{p}\n\n{REFERENCES_SECTION}")),
        }
    }

    /// Runs `prompt` until the model answers without tool calls or `max_iterations` turns
    /// have passed. Fails only when the model server fails.
    ///
    /// Traced as an `invoke_agent` span holding a `chat {model}` span per model request
    /// (GenAI semantic conventions) and the executions of the calls it asked for.
    pub async fn execute_with_tools(&self, prompt: &str) -> Result<OrchestratorResult, LlmError> {
        match self.continue_with_tools(Vec::new(), prompt).await {
            (_, Some(e)) => Err(e),
            (result, None) => Ok(result),
        }
    }

    /// Continues a conversation: `history` is its earlier messages, in this provider's shape
    /// (an earlier result's [`transcript`](OrchestratorResult::transcript), as a chat session
    /// stores it), and `prompt` the next user message; the model receives them all. The
    /// result's transcript is the whole conversation (`history` first), so the messages this
    /// run added are `transcript[history.len()..]`.
    ///
    /// Never loses what was done: when the model server fails part-way, the result holds
    /// the conversation until then (with the results of every call that ran), `success`
    /// false and the answer saying so, beside the error.
    ///
    /// Traced as [`execute_with_tools`](Self::execute_with_tools) is.
    pub async fn continue_with_tools(
        &self,
        history: Vec<Value>,
        prompt: &str,
    ) -> (OrchestratorResult, Option<LlmError>) {
        let span = tracing::info_span!(
            "agent",
            otel.name = "invoke_agent toolgraph",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.provider.name = self.client.config().provider.as_str(),
            gen_ai.request.model = self.client.config().model.as_str(),
            iterations = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        let (out, error) = self
            .run_turns(history, prompt)
            .instrument(span.clone())
            .await;
        span.record(
            "iterations",
            i64::try_from(out.iterations).unwrap_or(i64::MAX),
        );
        span.record(
            "gen_ai.usage.input_tokens",
            i64::try_from(out.usage.input_tokens).unwrap_or(i64::MAX),
        );
        span.record(
            "gen_ai.usage.output_tokens",
            i64::try_from(out.usage.output_tokens).unwrap_or(i64::MAX),
        );
        (out, error)
    }

    /// [`continue_with_tools`](Self::continue_with_tools) inside its span.
    async fn run_turns(
        &self,
        history: Vec<Value>,
        prompt: &str,
    ) -> (OrchestratorResult, Option<LlmError>) {
        let specs: Vec<ToolSpec> = self
            .executor
            .tools()
            .entries()
            .iter()
            .map(|e| e.tool.spec().clone())
            .collect();
        let mut conversation = Conversation::user(self.effective_system_prompt(), prompt);
        conversation.messages.splice(0..0, history);
        let mut out = OrchestratorResult {
            success: false,
            answer: String::new(),
            transcript: Vec::new(),
            executions: Vec::new(),
            tool_calls_made: 0,
            iterations: 0,
            usage: Usage::default(),
            model_ms: 0.0,
            tool_ms: 0.0,
            tool_overlap_ms: 0.0,
            cancelled: false,
        };
        while out.iterations < self.max_iterations {
            out.iterations += 1;
            let asked = Instant::now();
            let answered = tokio::select! {
                biased;
                () = self.cancel.cancelled() => None,
                answered = self.ask(&conversation, &specs) => Some(answered),
            };
            let Some(answered) = answered else {
                out.model_ms += asked.elapsed().as_secs_f64() * 1e3;
                return (
                    cancelled(out, conversation, "while waiting for the model"),
                    None,
                );
            };
            let (turn, early) = match answered {
                Ok(answered) => answered,
                Err(e) => {
                    out.success = false;
                    out.answer = format!("the model failed: {e}");
                    out.transcript = conversation.messages;
                    return (out, Some(e));
                }
            };
            out.usage.add(turn.usage);
            out.model_ms += turn.model_ms;
            conversation.messages.push(turn.assistant_message.clone());
            let order = call_order(self.client.config().provider, &turn);
            if order.is_empty() {
                for e in early {
                    let _ = e.discard();
                }
                out.success = !turn.finish_reason.is_cut_short();
                out.answer = if out.success || !turn.text.is_empty() {
                    turn.text
                } else {
                    format!("the model stopped early ({:?})", turn.finish_reason)
                };
                out.transcript = conversation.messages;
                return (out, None);
            }
            out.tool_calls_made += order.len();
            let answers = self.run_calls(&turn, asked, early, &mut out).await;
            if self.cancel.is_cancelled() {
                conversation
                    .messages
                    .extend(self.result_messages(&order, answers));
                return (cancelled(out, conversation, "while the tools ran"), None);
            }
            conversation
                .messages
                .extend(self.result_messages(&order, answers));
        }
        out.success = false;
        out.answer = format!(
            "no final answer after {} model turns (max_iterations reached)",
            out.iterations
        );
        out.transcript = conversation.messages;
        (out, None)
    }

    /// One model turn, with the calls started early while it streamed.
    async fn ask(
        &self,
        conversation: &Conversation,
        specs: &[ToolSpec],
    ) -> Result<(Turn, Vec<Early>), LlmError> {
        let dispatch = self.client.config().stream && self.streaming_dispatch;
        let mut early: Vec<Early> = Vec::new();
        let mut cut_short = false;
        let mut blocked = false;
        let config = self.client.config();
        let span = tracing::info_span!(
            "model_request",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.system = config.provider.as_str(),
            gen_ai.provider.name = config.provider.as_str(),
            gen_ai.request.model = config.model.as_str(),
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
        );
        if !span.is_disabled() {
            span.record("otel.name", format!("chat {}", config.model));
        }
        let result = self
            .client
            .complete(conversation, specs, |event| match event {
                StreamEvent::Finish(reason) => cut_short = reason.is_cut_short(),
                StreamEvent::ToolCallComplete(call) if dispatch && !cut_short && !blocked => {
                    if self.safe_to_start_early(&call) {
                        // The runner's shared limits apply to early calls as to any other.
                        let cancel = self.cancel.child_token();
                        let handle = tokio::spawn(
                            self.executor
                                .run_batch(vec![call.clone()], cancel.clone())
                                .instrument(tracing::Span::current()),
                        );
                        early.push(Early {
                            call,
                            at: Instant::now(),
                            handle,
                            _cancel_on_drop: CancelOnDrop(cancel),
                        });
                    } else {
                        // Keep emitted order: nothing after a call that must wait starts early.
                        blocked = true;
                    }
                }
                _ => {}
            })
            .instrument(span.clone())
            .await;
        match &result {
            Ok(turn) => {
                span.record(
                    "gen_ai.usage.input_tokens",
                    i64::try_from(turn.usage.input_tokens).unwrap_or(i64::MAX),
                );
                span.record(
                    "gen_ai.usage.output_tokens",
                    i64::try_from(turn.usage.output_tokens).unwrap_or(i64::MAX),
                );
                span.record(
                    "gen_ai.response.finish_reasons",
                    tracing::field::debug(&turn.finish_reason),
                );
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        match result {
            Ok(turn) => Ok((turn, early)),
            Err(e) => {
                for e in early {
                    let _ = e.discard();
                }
                Err(e)
            }
        }
    }

    /// True for a call that is safe to run twice *with its own arguments* (an HTTP `GET`
    /// is, a `POST` to the same tool is not) and that needs no other call.
    fn safe_to_start_early(&self, call: &ToolCall) -> bool {
        if !call.depends_on.is_empty() || has_reference(&call.arguments) {
            return false;
        }
        self.executor
            .tools()
            .get(&call.name)
            .is_some_and(|entry| entry.tool.is_idempotent(&call.arguments))
    }

    /// Runs a turn's calls and returns one answer per call id.
    async fn run_calls(
        &self,
        turn: &Turn,
        asked: Instant,
        mut early: Vec<Early>,
        out: &mut OrchestratorResult,
    ) -> HashMap<String, Answer> {
        let mut answers = HashMap::new();
        for (id, name, error) in &turn.malformed {
            answers.insert(
                id.clone(),
                Answer {
                    content: format!(
                        "error: call {id} ({name}) was not run: {error}. Send it again with \
                         the arguments as one JSON object."
                    ),
                    is_error: true,
                },
            );
        }
        if turn.finish_reason.is_cut_short() {
            for e in early {
                let _ = e.discard();
            }
            for call in &turn.tool_calls {
                answers.insert(
                    call.id.clone(),
                    Answer {
                        content: format!(
                            "error: call {} was not run: the reply was cut short (finish \
                             reason {:?}), so its arguments may be incomplete. Send it again.",
                            call.id, turn.finish_reason
                        ),
                        is_error: true,
                    },
                );
            }
            return answers;
        }
        // An early call that a later call refers to joins the batch again (it is safe to
        // run twice), so references resolve inside one execution.
        let mut rest: Vec<ToolCall> = turn
            .tool_calls
            .iter()
            .filter(|c| !early.iter().any(|e| e.call.id == c.id))
            .cloned()
            .collect();
        loop {
            let needed: HashSet<String> = early
                .iter()
                .filter(|e| rest.iter().any(|c| refers_to(c, &e.call.id)))
                .map(|e| e.call.id.clone())
                .collect();
            if needed.is_empty() {
                break;
            }
            let (back, keep): (Vec<Early>, Vec<Early>) =
                early.into_iter().partition(|e| needed.contains(&e.call.id));
            early = keep;
            for e in back {
                rest.push(e.discard());
            }
            let position: HashMap<&str, usize> = turn
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.as_str(), i))
                .collect();
            rest.sort_by_key(|c| position.get(c.id.as_str()).copied().unwrap_or(usize::MAX));
        }
        let started = Instant::now();
        // While the reply streamed, [asked, reply_end] in ms since `asked`.
        let reply_end = ms_between(asked, started).min(turn.model_ms);
        let mut ran_early: Vec<(f64, f64)> = Vec::new();
        // Early calls come first in emitted order: let them finish before the rest starts.
        for mut e in early {
            let id = e.call.id.clone();
            match (&mut e.handle).await {
                Ok(result) => {
                    if let Ok(r) = &result {
                        let from = ms_between(asked, e.at);
                        ran_early.push((from, from + r.total_time_ms));
                    }
                    self.record(result, std::slice::from_ref(&e.call), &mut answers, out)
                }
                Err(join) => {
                    answers.insert(
                        id,
                        Answer {
                            content: format!("error: the call was lost: {join}"),
                            is_error: true,
                        },
                    );
                }
            }
        }
        if !rest.is_empty() {
            let result = self
                .executor
                .run_batch(rest.clone(), self.cancel.child_token())
                .await;
            self.record(result, &rest, &mut answers, out);
        }
        out.tool_ms += started.elapsed().as_secs_f64() * 1e3;
        out.tool_overlap_ms += covered(&mut ran_early, reply_end);
        answers
    }

    /// Turns an execution (or its rejection) into answers.
    fn record(
        &self,
        result: Result<ParallelExecutionResult, InputError>,
        calls: &[ToolCall],
        answers: &mut HashMap<String, Answer>,
        out: &mut OrchestratorResult,
    ) {
        match result {
            Ok(execution) => {
                for r in &execution.results {
                    answers.insert(
                        r.id.clone(),
                        Answer {
                            content: r.content_text(),
                            is_error: !r.is_ok(),
                        },
                    );
                }
                out.executions.push(execution);
            }
            Err(rejected) => {
                for call in calls {
                    answers.insert(
                        call.id.clone(),
                        Answer {
                            content: format!(
                                "error: the batch of tool calls was rejected before anything \
                                 ran; fix it and send the calls again: {rejected}"
                            ),
                            is_error: true,
                        },
                    );
                }
            }
        }
    }

    /// The messages answering every call id, in the provider's shape.
    fn result_messages(
        &self,
        order: &[String],
        mut answers: HashMap<String, Answer>,
    ) -> Vec<Value> {
        let mut take = |id: &str| {
            answers.remove(id).unwrap_or_else(|| Answer {
                content: format!("error: call {id} produced no result"),
                is_error: true,
            })
        };
        match self.client.config().provider {
            Provider::OpenAi => order
                .iter()
                .map(|id| {
                    let a = take(id);
                    json!({"role": "tool", "tool_call_id": id, "content": a.content})
                })
                .collect(),
            Provider::Anthropic => {
                let blocks: Vec<Value> = order
                    .iter()
                    .map(|id| {
                        let a = take(id);
                        let mut block =
                            json!({"type": "tool_result", "tool_use_id": id, "content": a.content});
                        if a.is_error {
                            block["is_error"] = Value::Bool(true);
                        }
                        block
                    })
                    .collect();
                vec![json!({"role": "user", "content": blocks})]
            }
        }
    }
}

/// Every call id of a turn, in the order the model emitted them (from its message).
fn call_order(provider: Provider, turn: &Turn) -> Vec<String> {
    let ids: Vec<String> = match provider {
        Provider::OpenAi => turn
            .assistant_message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        Provider::Anthropic => turn
            .assistant_message
            .get("content")
            .and_then(Value::as_array)
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                    .filter_map(|b| b.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut seen = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// True when some string inside `v` may hold a `${...}` reference.
fn has_reference(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(has_reference),
        Value::Object(obj) => obj.values().any(has_reference),
        _ => false,
    }
}

/// True when `call` depends on or refers to call `id`.
fn refers_to(call: &ToolCall, id: &str) -> bool {
    fn mentions(v: &Value, needle: &str) -> bool {
        match v {
            Value::String(s) => s.contains(needle),
            Value::Array(items) => items.iter().any(|i| mentions(i, needle)),
            Value::Object(obj) => obj.values().any(|i| mentions(i, needle)),
            _ => false,
        }
    }
    call.depends_on.iter().any(|d| d == id) || mentions(&call.arguments, &format!("${{{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::FinishReason;

    #[test]
    fn references_are_found_by_id() {
        let call = ToolCall::new("b", "t", json!({"x": ["${a.items.0}"]}));
        assert!(refers_to(&call, "a"));
        assert!(has_reference(&call.arguments));
        assert!(!has_reference(&json!({"x": "plain"})));
        assert!(refers_to(
            &ToolCall::new("c", "t", json!({})).depends_on(["a"]),
            "a"
        ));
    }

    #[test]
    fn overlap_counts_each_moment_once_and_only_while_the_model_replied() {
        // Two early calls overlapping each other (10–50 and 30–80 ms), a third after a gap
        // (100–300 ms); the reply ended at 200 ms.
        let mut ran = vec![(100.0, 300.0), (10.0, 50.0), (30.0, 80.0)];
        assert_eq!(covered(&mut ran, 200.0), 70.0 + 100.0);
        assert_eq!(covered(&mut [], 200.0), 0.0);
        assert_eq!(covered(&mut [(250.0, 300.0)], 200.0), 0.0);
    }

    #[test]
    fn cut_short_reasons() {
        assert!(FinishReason::from_wire("length").is_cut_short());
        assert!(!FinishReason::from_wire("tool_calls").is_cut_short());
    }
}
