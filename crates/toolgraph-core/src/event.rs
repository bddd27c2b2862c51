//! Events an execution emits as it goes, for progress displays and recorders.
//!
//! Sinks are called from the scheduler's loop: they must return quickly and never block
//! (hand work to a channel).

use serde::Serialize;

use crate::result::CallStatus;

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
    },
    /// Every call has ended.
    ExecutionFinished {
        /// True when all succeeded.
        success: bool,
    },
}

/// Receives events.
pub trait EventSink: Send + Sync {
    /// Called for each event, in order, from the scheduler.
    fn on_event(&self, event: &Event);
}
