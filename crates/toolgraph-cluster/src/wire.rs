//! The messages between coordinators and workers (JSON).
//!
//! - [`Dispatch`]: a call, published on its tool's subject into the work-queue stream with
//!   the dispatch key as `Nats-Msg-Id` (a publish retried after a broker hiccup is
//!   deduplicated by the stream);
//! - [`Reply`]: what a worker sends to the coordinator's reply subject — a *claim* (a
//!   request, for calls not safe to run twice: the coordinator answers [`ClaimAnswer`]
//!   before the tool runs) or the call's *result*;
//! - [`Cancel`]: published by the coordinator when it no longer wants a call;
//! - [`WorkerInfo`]: a worker's heartbeat, kept in the namespace's key-value bucket.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toolgraph_core::tool::Transience;
use toolgraph_core::{CallError, ErrorKind, RetryPolicy, ToolError};
use toolgraph_engine::layer::Failure;

/// One call handed to the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dispatch {
    /// Unique per dispatch: `<coordinator>:<n>`.
    pub key: String,
    /// The call's id in its execution.
    pub call_id: String,
    /// The tool to run.
    pub tool: String,
    /// Arguments, references already resolved.
    pub args: Value,
    /// The call's timeout over all its attempts, enforced by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries of transient failures, made by the worker (only when `idempotent`).
    pub retry: RetryPolicy,
    /// Safe to run twice: no claim needed, redelivered when its worker dies.
    pub idempotent: bool,
    /// Where the worker answers.
    pub reply_to: String,
}

/// A worker's message to a coordinator (externally tagged: `{"done": {…}}`, so an output
/// is parsed once, never buffered).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// "May I run it?" (a request; calls that are not idempotent only).
    Claim {
        /// The dispatch key.
        key: String,
        /// The worker asking.
        worker: String,
        /// The worker process asking (unique per start: a worker restarted under the same
        /// id is another instance, and may not run what the dead one had claimed).
        instance: String,
    },
    /// The call ended on `worker`.
    Done {
        /// The dispatch key.
        key: String,
        /// The worker that ran it.
        worker: String,
        /// Attempts the worker made.
        attempts: u32,
        /// The outcome.
        outcome: Outcome,
    },
}

/// The coordinator's answer to a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimAnswer {
    /// Run it (the claim is recorded), or do not.
    pub run: bool,
    /// Not run because another live worker runs it: leave the message unacknowledged to
    /// that worker (acknowledging it would free a slot of the tool's limit too early).
    #[serde(default)]
    pub elsewhere: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a call ended on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tool's output.
    Output(Value),
    /// Why it failed.
    Failure(WireFailure),
}

/// A [`Failure`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireFailure {
    /// The tool failed.
    Tool {
        /// Its message.
        message: String,
        /// Whether a retry may help.
        transient: bool,
        /// Its retry-after hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The tool panicked.
    Panic {
        /// The panic's message.
        message: String,
    },
    /// The call ran out of time on the worker.
    Timeout {
        /// The limit.
        timeout_ms: u64,
    },
    /// A layer failed the call.
    Call {
        /// The error.
        error: CallError,
    },
}

impl From<Failure> for WireFailure {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Tool(e) => WireFailure::Tool {
                transient: e.is_transient(),
                message: e.message,
                retry_after_ms: e.retry_after_ms,
            },
            Failure::Panic(message) => WireFailure::Panic { message },
            Failure::Timeout(limit) => WireFailure::Timeout {
                timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            },
            Failure::Call(error) => WireFailure::Call { error },
        }
    }
}

impl From<WireFailure> for Failure {
    fn from(failure: WireFailure) -> Self {
        match failure {
            WireFailure::Tool {
                message,
                transient,
                retry_after_ms,
            } => Failure::Tool(ToolError {
                message,
                transience: if transient {
                    Transience::Transient
                } else {
                    Transience::Permanent
                },
                retry_after_ms,
            }),
            WireFailure::Panic { message } => Failure::Panic(message),
            WireFailure::Timeout { timeout_ms } => {
                Failure::Timeout(std::time::Duration::from_millis(timeout_ms))
            }
            WireFailure::Call { error } => Failure::Call(error),
        }
    }
}

/// A coordinator no longer wants a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancel {
    /// The dispatch key.
    pub key: String,
}

/// A worker's heartbeat: who it is, what it serves, how busy it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id (`<host>-<pid>-<random>` unless given).
    pub id: String,
    /// This process of it (unique per start).
    pub instance: String,
    /// How often it heartbeats, in ms: it is taken for dead after three periods of silence.
    pub heartbeat_ms: u64,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The tools it serves.
    pub tools: Vec<String>,
    /// Calls it runs at once at most.
    pub concurrency: usize,
    /// Calls running now.
    pub in_flight: usize,
    /// Calls it has finished.
    pub completed: u64,
    /// When it started (Unix ms, its own clock).
    pub started_at_ms: u64,
    /// When this heartbeat was sent (Unix ms, its own clock).
    pub heartbeat_at_ms: u64,
    /// The toolgraph version it runs.
    pub version: String,
}

/// The error a coordinator reports for a call whose outcome is unknown.
pub fn interrupted(message: String) -> Failure {
    Failure::Call(CallError {
        kind: ErrorKind::Interrupted,
        message,
    })
}

/// A failure of the cluster itself (no worker, broker trouble): transient.
pub fn unavailable(message: String) -> Failure {
    Failure::Call(CallError {
        kind: ErrorKind::Transient,
        message,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn failures_survive_the_wire() {
        let cases = [
            Failure::Tool(ToolError::transient("busy").retry_after_ms(50)),
            Failure::Tool(ToolError::permanent("bad path")),
            Failure::Panic("boom".into()),
            Failure::Timeout(Duration::from_millis(250)),
            interrupted("gone".into()),
        ];
        for failure in cases {
            let wire = serde_json::to_string(&WireFailure::from(failure.clone())).expect("json");
            let back: WireFailure = serde_json::from_str(&wire).expect("parse");
            assert_eq!(Failure::from(back), failure, "{wire}");
        }
    }

    #[test]
    fn replies_are_tagged() {
        let done = Reply::Done {
            key: "c:1".into(),
            worker: "w".into(),
            attempts: 2,
            outcome: Outcome::Output(serde_json::json!({"x": 1})),
        };
        let text = serde_json::to_string(&done).expect("json");
        assert!(text.starts_with(r#"{"done":{"#), "{text}");
        let back: Reply = serde_json::from_str(&text).expect("parse");
        assert!(matches!(
            back,
            Reply::Done {
                attempts: 2,
                outcome: Outcome::Output(_),
                ..
            }
        ));
    }
}
