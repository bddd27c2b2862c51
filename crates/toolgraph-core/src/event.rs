//! Events an execution emits as it goes, for progress displays and recorders.
//!
//! Sinks are called from the scheduler's loop: they must return quickly and never block
//! (hand work to a channel).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::result::{CallError, CallStatus};

/// Something that happened during an execution. Positions index the input calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Planning done; `calls` calls, `edges` edges.
    ExecutionStarted {
        /// Number of calls.
        calls: usize,
        /// Number of dependency edges.
        edges: usize,
    },
    /// All dependencies of a call are done; it waits for a slot.
    CallReady {
        /// The call's position.
        position: usize,
    },
    /// A ready call (after its `CallReady`) waits for an approver's decision, holding no
    /// slot; approved, it is admitted like any ready call; denied, `CallFinished` follows.
    CallAwaitingApproval {
        /// The call's position.
        position: usize,
    },
    /// A call started running.
    CallStarted {
        /// The call's position.
        position: usize,
    },
    /// A call ended (any status, including skipped and cancelled).
    CallFinished {
        /// The call's position.
        position: usize,
        /// How it ended.
        status: CallStatus,
        /// Its measured run time.
        duration_ms: f64,
        /// The worker process that ran it (distributed execution); absent when it ran in
        /// this process.
        #[serde(skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
        /// True when the outcome came from the cache (or a shared flight): no tool ran.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
    },
    /// Every call has ended.
    ExecutionFinished {
        /// True when all succeeded.
        success: bool,
    },
    /// An adaptive concurrency limit (shared by every execution of the process) changed
    /// while this execution ran; sent after the `CallFinished` event that saw it.
    LimitChanged {
        /// `tool:NAME` or a host's resource key (`host:api.example.com`).
        key: String,
        /// Attempts through that key allowed at once, now.
        limit: usize,
    },
}

/// A call's full outcome, lent to sinks that record it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallOutcome<'a> {
    /// How it ended.
    pub status: CallStatus,
    /// The tool's output, when ok: a sink that keeps it clones the `Arc`, not the value.
    pub output: Option<&'a Arc<Value>>,
    /// The error, when not ok.
    pub error: Option<&'a CallError>,
    /// Attempts made.
    pub attempts: u32,
    /// Time from ready to start (or to the decision, when it never ran), in ms.
    pub queued_ms: f64,
    /// Start, in ms since the execution began.
    pub started_ms: Option<f64>,
    /// End (or decision), in ms since the execution began.
    pub finished_ms: f64,
    /// The worker process that ran it (distributed execution); `None` when it ran in this
    /// process.
    pub worker: Option<&'a str>,
    /// True when the outcome came from the cache (or a shared flight): no tool ran.
    pub cached: bool,
}

/// Receives events.
pub trait EventSink: Send + Sync {
    /// Called for each event, in order, from the scheduler.
    fn on_event(&self, event: &Event);

    /// Called once per execution, before its first event, with the calls in input order
    /// (positions in later events index this list).
    fn on_plan(&self, _calls: &[&crate::call::ToolCall]) {}

    /// Called when a call ends, with its whole outcome (after the `CallFinished` event).
    fn on_outcome(&self, _position: usize, _outcome: &CallOutcome<'_>) {}

    /// Called when a call is admitted, before its tool runs. A returned future delays that
    /// call — never the scheduler — until it resolves: a recorder uses it to make the
    /// call's start durable before a tool that must not run twice does anything.
    fn before_start(&self, _position: usize, _idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_event_names_its_worker_only_when_one_ran_the_call() {
        let finished = |worker: Option<&str>| Event::CallFinished {
            position: 2,
            status: CallStatus::Ok,
            duration_ms: 1.5,
            worker: worker.map(str::to_owned),
            cached: false,
        };
        let local = serde_json::to_value(finished(None)).expect("serializes");
        assert_eq!(
            local,
            serde_json::json!({"event": "call_finished", "position": 2, "status": "ok", "duration_ms": 1.5})
        );
        let remote = serde_json::to_value(finished(Some("w-7"))).expect("serializes");
        assert_eq!(remote["worker"], "w-7");
        let hit = Event::CallFinished {
            position: 0,
            status: CallStatus::Ok,
            duration_ms: 0.0,
            worker: None,
            cached: true,
        };
        let hit = serde_json::to_value(hit).expect("serializes");
        assert_eq!(hit["cached"], true, "a cached outcome says so: {hit}");
    }
}
