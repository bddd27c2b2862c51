//! One execution's live record: its replayable event log (sequence-numbered, what a late
//! SSE subscriber reads first), its status and result, and the [`LiveSink`] the scheduler
//! reports to, which appends to that log and wakes the subscribers.
//!
//! The sink runs on the scheduler's loop: it only serialises, appends and notifies, under a
//! lock never held across `.await`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use toolgraph::engine::{CancellationToken, Plan};
use toolgraph_core::{
    CallError, CallOutcome, CallResult, CallStatus, ErrorKind, Event, EventSink, ExecutionMetadata,
    ParallelExecutionResult, ToolCall,
};

use crate::Problem;

/// One event of an execution's log, as the SSE stream sends it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// Its number in the log: 0, 1, 2, …
    pub seq: u64,
    /// `plan`, `queued`, `started`, `finished` or `summary`.
    pub kind: &'static str,
    /// Its JSON data, serialised once.
    pub data: String,
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStatus {
    /// Its calls are running (or waiting).
    Running,
    /// Every call ended.
    Finished,
    /// Stopped on request: unfinished calls ended `cancelled` (resumable when recorded).
    Cancelled,
    /// The runtime failed before the calls ran (the store, mostly).
    Failed,
}

impl LiveStatus {
    /// The name the store uses for the same state (`failed` is the server's own).
    pub fn as_str(self) -> &'static str {
        match self {
            LiveStatus::Running => "running",
            LiveStatus::Finished => "finished",
            LiveStatus::Cancelled => "cancelled",
            LiveStatus::Failed => "failed",
        }
    }
}

/// What an execution has done so far.
pub(super) struct LiveState {
    events: Vec<Arc<LiveEvent>>,
    status: LiveStatus,
    /// Per position, the outcome once the call ended (for answers while it runs).
    ended: Vec<Option<CallResult>>,
    /// Per position, the duration the scheduler measured (the `CallFinished` event).
    durations: Vec<f64>,
    result: Option<Arc<ParallelExecutionResult>>,
    error: Option<Problem>,
    critical: Vec<usize>,
    pub(super) ended_at: Option<Instant>,
}

/// One execution this server runs or ran.
pub struct LiveExecution {
    /// Fires to cancel it.
    pub cancel: CancellationToken,
    /// When it was launched, ms since the Unix epoch.
    pub created_at: i64,
    /// Recorded in the store (then the store knows it by the same id).
    pub recorded: bool,
    /// Its calls, in input order.
    pub calls: Vec<ToolCall>,
    /// Its edges between calls: `(from, to, reason)` positions.
    pub edges: Vec<(usize, usize, String)>,
    /// When its scheduler began (its first `on_plan`): the zero of every `at_ms`, as the
    /// scheduler's own `*_ms` figures count from its start.
    began: std::sync::OnceLock<Instant>,
    launched: Instant,
    state: Mutex<LiveState>,
    /// Bumped at each new event (SSE subscribers).
    changed: watch::Sender<()>,
    /// True once it ended (waiters for the result wake once, not at every event).
    done: watch::Sender<bool>,
}

impl LiveExecution {
    pub(crate) fn new(plan: &Plan, recorded: bool) -> Arc<LiveExecution> {
        let calls: Vec<ToolCall> = plan.calls().iter().map(|c| c.call.clone()).collect();
        let edges: Vec<(usize, usize, String)> = plan
            .ordered_pairs()
            .map(|(from, to, reason)| (from, to, reason.to_string()))
            .collect();
        let n = calls.len();
        let execution = Arc::new(LiveExecution {
            cancel: CancellationToken::new(),
            created_at: toolgraph_store::now_ms(),
            recorded,
            calls,
            edges,
            began: std::sync::OnceLock::new(),
            launched: Instant::now(),
            state: Mutex::new(LiveState {
                events: Vec::new(),
                status: LiveStatus::Running,
                ended: vec![None; n],
                durations: vec![0.0; n],
                result: None,
                error: None,
                critical: Vec::new(),
                ended_at: None,
            }),
            changed: watch::channel(()).0,
            done: watch::channel(false).0,
        });
        let plan_event = plan_data(&execution.calls, &execution.edges);
        execution.push(&mut execution.lock(), "plan", &plan_event);
        execution
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, LiveState> {
        // A panic while holding the lock leaves a consistent log (appends are atomic).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, state: &mut LiveState, kind: &'static str, data: &impl Serialize) {
        let data = serde_json::to_string(data).unwrap_or_else(|e| {
            json!({"error": format!("serialising the event: {e}")}).to_string()
        });
        let seq = state.events.len() as u64;
        state.events.push(Arc::new(LiveEvent { seq, kind, data }));
        self.changed.send_replace(());
    }

    /// Its status now.
    pub fn status(&self) -> LiveStatus {
        self.lock().status
    }

    /// The events numbered `from` on, and whether the log is complete (the summary is in it,
    /// or the execution failed).
    pub fn events_from(&self, from: u64) -> (Vec<Arc<LiveEvent>>, bool) {
        let state = self.lock();
        let from = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(state.events.len());
        (
            state.events[from..].to_vec(),
            state.status != LiveStatus::Running,
        )
    }

    /// A receiver that wakes at each new event and at the end.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Waits until it ended; its result, or why it failed.
    pub async fn wait(&self) -> Result<Arc<ParallelExecutionResult>, Problem> {
        let mut done = self.done.subscribe();
        if done.wait_for(|ended| *ended).await.is_err() {
            return Err(Problem::internal(
                "the execution's task ended without a result",
            ));
        }
        let state = self.lock();
        match (&state.result, &state.error) {
            (Some(result), _) => Ok(result.clone()),
            (None, Some(error)) => Err(error.clone()),
            (None, None) => Err(Problem::internal("the execution ended without a result")),
        }
    }

    /// The result when it ended; while it runs, what is known so far: ended calls with
    /// their outcome, the others `cancelled` with an error saying they are pending or
    /// running (as the store answers for an unfinished execution).
    pub fn result_so_far(&self) -> Arc<ParallelExecutionResult> {
        let state = self.lock();
        if let Some(result) = &state.result {
            return result.clone();
        }
        let started: Vec<bool> = {
            let mut started = vec![false; self.calls.len()];
            for event in &state.events {
                if event.kind == "started"
                    && let Ok(v) = serde_json::from_str::<Value>(&event.data)
                    && let Some(p) = v.get("position").and_then(Value::as_u64)
                    && let Some(s) = started.get_mut(p as usize)
                {
                    *s = true;
                }
            }
            started
        };
        let results = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| match &state.ended[i] {
                Some(r) => r.clone(),
                None => CallResult {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    status: CallStatus::Cancelled,
                    output: None,
                    error: Some(CallError {
                        kind: ErrorKind::Cancelled,
                        message: if started[i] {
                            "running".to_owned()
                        } else {
                            "pending".to_owned()
                        },
                    }),
                    attempts: 0,
                    queued_ms: 0.0,
                    started_ms: None,
                    finished_ms: None,
                    duration_ms: 0.0,
                    level: 0,
                    worker: None,
                    cached: false,
                    edited_arguments: None,
                },
            })
            .collect();
        let elapsed = self.since_began().as_secs_f64() * 1e3;
        Arc::new(ParallelExecutionResult::from_calls(
            results,
            elapsed,
            0.0,
            false,
            ExecutionMetadata::default(),
        ))
    }

    /// Positions on the measured critical path (empty until it ended).
    pub fn critical(&self) -> Vec<usize> {
        self.lock().critical.clone()
    }

    fn since_began(&self) -> Duration {
        self.began.get().unwrap_or(&self.launched).elapsed()
    }

    fn at_ms(&self) -> f64 {
        round_ms(self.since_began().as_secs_f64() * 1e3)
    }

    /// Records how it ended and appends the summary (the last event).
    pub(super) fn end(&self, plan: &Plan, outcome: Result<ParallelExecutionResult, Problem>) {
        let mut state = self.lock();
        state.ended_at = Some(Instant::now());
        match outcome {
            Ok(result) => {
                let cancelled = self.cancel.is_cancelled()
                    && result
                        .results
                        .iter()
                        .any(|r| r.status == CallStatus::Cancelled);
                state.status = if cancelled {
                    LiveStatus::Cancelled
                } else {
                    LiveStatus::Finished
                };
                let critical = if plan.len() == result.results.len() {
                    plan.critical_path_calls(|i| result.results[i].duration_ms)
                } else {
                    Vec::new()
                };
                let summary = json!({
                    "success": result.success,
                    "total_time_ms": result.total_time_ms,
                    "sequential_time_estimate_ms": result.sequential_time_estimate_ms,
                    "critical_path_ms": result.critical_path_ms,
                    "speedup": result.speedup,
                    "efficiency": result.efficiency,
                    "critical": critical,
                    "status": state.status.as_str(),
                });
                state.critical = critical;
                state.result = Some(Arc::new(result));
                self.push(&mut state, "summary", &summary);
            }
            Err(problem) => {
                state.status = LiveStatus::Failed;
                let summary = json!({
                    "success": false,
                    "total_time_ms": self.at_ms(),
                    "sequential_time_estimate_ms": 0.0,
                    "critical_path_ms": 0.0,
                    "speedup": 1.0,
                    "efficiency": 0.0,
                    "critical": [],
                    "status": "failed",
                    "error": problem.detail,
                });
                state.error = Some(problem);
                self.push(&mut state, "summary", &summary);
            }
        }
        drop(state);
        self.done.send_replace(true);
    }
}

/// Rounds to a microsecond, as the results' figures are.
fn round_ms(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3 + 0.0
}

/// The `plan` event's data: the calls and the edges between them.
pub fn plan_data(calls: &[ToolCall], edges: &[(usize, usize, String)]) -> Value {
    json!({
        "calls": calls.iter().enumerate().map(|(position, c)| json!({
            "position": position, "id": c.id, "name": c.name, "arguments": c.arguments,
        })).collect::<Vec<_>>(),
        "edges": edges.iter().map(|(from, to, reason)| json!({
            "from": from, "to": to, "reason": reason,
        })).collect::<Vec<_>>(),
    })
}

/// A `finished` event's data.
#[derive(Serialize)]
pub struct FinishedData<'a> {
    /// The call's position.
    pub position: usize,
    /// The call's id.
    pub call_id: &'a str,
    /// How it ended.
    pub status: CallStatus,
    /// Time from ready to start (or to the decision), ms.
    pub queued_ms: f64,
    /// Start, ms since the execution began (absent when it never ran).
    pub started_ms: Option<f64>,
    /// End, ms since the execution began.
    pub finished_ms: f64,
    /// Its measured run time, ms.
    pub duration_ms: f64,
    /// Attempts made.
    pub attempts: u32,
    /// The output, when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<&'a Value>,
    /// The error, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a CallError>,
    /// The worker process that ran the call (distributed execution); absent when it ran in
    /// this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<&'a str>,
    /// True when the cache answered the call (no tool ran); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// The sink an execution reports to: it appends to the execution's log.
pub(super) struct LiveSink {
    pub(super) execution: Arc<LiveExecution>,
}

impl EventSink for LiveSink {
    fn on_plan(&self, _calls: &[&ToolCall]) {
        // A resumed execution's runs each begin here; the first one sets the zero.
        let _ = self.execution.began.set(Instant::now());
    }

    fn on_event(&self, event: &Event) {
        let e = &self.execution;
        let (kind, position) = match event {
            Event::CallReady { position } => ("queued", *position),
            Event::CallStarted { position } => ("started", *position),
            Event::CallAwaitingApproval { position } => ("awaiting_approval", *position),
            Event::CallFinished {
                position,
                duration_ms,
                ..
            } => {
                if let Some(d) = e.lock().durations.get_mut(*position) {
                    *d = round_ms(*duration_ms);
                }
                return;
            }
            Event::ExecutionStarted { .. }
            | Event::ExecutionFinished { .. }
            | Event::LimitChanged { .. } => return,
        };
        let Some(call) = e.calls.get(position) else {
            return;
        };
        let data = json!({"position": position, "call_id": call.id, "at_ms": e.at_ms()});
        e.push(&mut e.lock(), kind, &data);
    }

    fn on_outcome(&self, position: usize, outcome: &CallOutcome<'_>) {
        let e = &self.execution;
        let Some(call) = e.calls.get(position) else {
            return;
        };
        let mut state = e.lock();
        let duration_ms = state.durations.get(position).copied().unwrap_or_default();
        let data = FinishedData {
            position,
            call_id: &call.id,
            status: outcome.status,
            queued_ms: round_ms(outcome.queued_ms),
            started_ms: outcome.started_ms.map(round_ms),
            finished_ms: round_ms(outcome.finished_ms),
            duration_ms,
            attempts: outcome.attempts,
            output: outcome.output.map(|o| &**o),
            error: outcome.error,
            worker: outcome.worker,
            cached: outcome.cached,
        };
        e.push(&mut state, "finished", &data);
        if let Some(slot) = state.ended.get_mut(position) {
            *slot = Some(CallResult {
                id: call.id.clone(),
                name: call.name.clone(),
                status: outcome.status,
                output: outcome.output.cloned(),
                error: outcome.error.cloned(),
                attempts: outcome.attempts,
                queued_ms: round_ms(outcome.queued_ms),
                started_ms: outcome.started_ms.map(round_ms),
                finished_ms: Some(round_ms(outcome.finished_ms)),
                duration_ms,
                level: 0,
                worker: outcome.worker.map(str::to_owned),
                cached: outcome.cached,
                edited_arguments: None,
            });
        }
    }
}
