//! Ctrl-C and SIGTERM for the commands that run calls (`run`, `resume`, `chat`, and
//! `serve`, whose first signal starts its graceful shutdown and which then exits 0).
//!
//! The first signal fires a cancellation token: running calls are cancelled (their futures
//! dropped, so shell and MCP process groups are killed), the rest is skipped, the runtime
//! records the execution `cancelled` (`toolgraph resume` finishes it), the command prints
//! what happened, and the process exits 128 + the signal (130 for Ctrl-C, 143 for SIGTERM),
//! as a shell reports a program a signal ended. The second signal ends the process at
//! once: `main` drops the command (which kills the process groups its calls started) and
//! exits with the same status.
//!
//! Other commands keep the default: a signal ends them at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use toolgraph_engine::CancellationToken;

use crate::out::errln;

/// The signals of one command run.
#[derive(Clone)]
pub struct Interrupt {
    /// Fires at the first signal: stop gracefully.
    stop: CancellationToken,
    /// Fires at the second: stop now.
    abort: CancellationToken,
    /// 128 + the first signal's number, once one came.
    code: Arc<AtomicU8>,
}

impl Interrupt {
    /// Starts listening for SIGINT and SIGTERM. When the handlers cannot be installed, a
    /// warning says so and signals keep their default effect (the process ends at once).
    pub fn listen() -> Interrupt {
        Interrupt::listen_saying(
            "\ntoolgraph: interrupted: cancelling the running calls (press Ctrl-C again to exit at once)",
        )
    }

    /// [`listen`](Interrupt::listen), saying `message` at the first signal.
    pub fn listen_saying(message: &'static str) -> Interrupt {
        let interrupt = Interrupt {
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            code: Arc::new(AtomicU8::new(0)),
        };
        let (mut int, mut term) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => (int, term),
            (Err(e), _) | (_, Err(e)) => {
                errln!("toolgraph: warning: Ctrl-C will end the process at once: {e}");
                return interrupt;
            }
        };
        let this = interrupt.clone();
        tokio::spawn(async move {
            loop {
                let code = tokio::select! {
                    Some(()) = int.recv() => 130,
                    Some(()) = term.recv() => 143,
                    else => return,
                };
                if this.stop.is_cancelled() {
                    this.abort.cancel();
                    return;
                }
                this.code.store(code, Ordering::SeqCst);
                errln!("{message}");
                this.stop.cancel();
            }
        });
        interrupt
    }

    /// The token that fires at the first signal.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves at the second signal.
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    /// 128 + the first signal's number, once a signal came.
    pub fn code(&self) -> Option<u8> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }
}
