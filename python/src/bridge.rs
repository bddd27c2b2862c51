//! One execution's hand-over between the Rust scheduler and the Python driver.
//!
//! The scheduler runs on toolgraph's tokio threads and never takes the GIL. When it starts a
//! call of an `async def` tool it *submits* a job here (a slot for the answer, the tool, the
//! arguments) and awaits the slot; the Python driver, on the caller's event loop, *takes*
//! every job submitted since it last looked in one call, starts them, and *completes* a
//! batch of slots in one call. The driver is woken only when it said it would wait: one
//! byte on a socket pair the event loop watches (`loop.add_reader`), at most one byte in
//! flight — no GIL, no `call_soon_threadsafe` per call.
//!
//! A slot is named by a token (index and generation), so an answer that arrives after its
//! call was cancelled or timed out is ignored, never given to the call that reuses the slot.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use toolgraph::core::ToolError;

tokio::task_local! {
    /// The bridge of the execution whose scheduler polls the current future: how an async
    /// Python tool finds the event loop its call must run on.
    pub static CURRENT: Arc<Bridge>;
}

/// What a slot receives.
pub type Answer = Result<Value, ToolError>;

/// A call for the Python driver to start.
pub struct Job {
    /// Where the answer goes.
    pub token: u64,
    /// The tool, by its index in the executor's Python tools.
    pub tool: usize,
    /// Its arguments.
    pub args: Arc<Value>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    sender: Option<oneshot::Sender<Answer>>,
}

#[derive(Default)]
struct State {
    jobs: Vec<Job>,
    cancels: Vec<u64>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The driver looks again only when woken.
    waiting: bool,
    done: bool,
}

/// The hand-over of one execution.
pub struct Bridge {
    state: Mutex<State>,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// Cancels the execution (asyncio cancelled `execute_parallel`, or the handle dropped).
    pub cancel: CancellationToken,
}

fn split(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

impl Bridge {
    /// A bridge with its wake-up socket pair.
    pub fn new() -> std::io::Result<Bridge> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Bridge {
            state: Mutex::new(State::default()),
            wake_tx,
            wake_rx,
            cancel: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The descriptor the event loop watches.
    pub fn wake_fd(&self) -> i32 {
        self.wake_rx.as_raw_fd()
    }

    fn wake(&self) {
        // A full buffer means a byte is already there: the driver will look.
        let _ = (&self.wake_tx).write(&[1]);
    }

    /// Queues a call for the driver; the receiver gets its answer.
    pub fn submit(&self, tool: usize, args: Arc<Value>) -> (u64, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let index = match state.free.pop() {
            Some(i) => i as usize,
            None => {
                state.slots.push(Slot::default());
                state.slots.len() - 1
            }
        };
        let slot = &mut state.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.sender = Some(tx);
        let token = (u64::from(slot.generation) << 32) | index as u64;
        state.jobs.push(Job { token, tool, args });
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.wake();
        }
        (token, rx)
    }

    /// The call behind `token` no longer waits (cancelled, timed out): its task, if the
    /// driver started one, is cancelled; a late answer is ignored.
    pub fn abandon(&self, token: u64) {
        let (index, generation) = split(token);
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(index) else {
            return;
        };
        if slot.generation != generation || slot.sender.is_none() {
            return;
        }
        slot.sender = None;
        state.free.push(index as u32);
        state.cancels.push(token);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.wake();
        }
    }

    /// Everything submitted or abandoned since the last look, and whether the execution
    /// has ended. When there is nothing, the driver will wait to be woken.
    pub fn take(&self) -> (Vec<Job>, Vec<u64>, bool) {
        let mut state = self.lock();
        let mut jobs = std::mem::take(&mut state.jobs);
        let cancels = std::mem::take(&mut state.cancels);
        if !cancels.is_empty() {
            // A job abandoned before the driver saw it is not started at all.
            let state = &*state;
            jobs.retain(|job| {
                let (index, generation) = split(job.token);
                state
                    .slots
                    .get(index)
                    .is_some_and(|s| s.generation == generation && s.sender.is_some())
            });
        }
        let done = state.done;
        if jobs.is_empty() && cancels.is_empty() && !done {
            state.waiting = true;
        }
        (jobs, cancels, done)
    }

    /// Delivers answers; those for abandoned slots are dropped.
    pub fn complete(&self, answers: Vec<(u64, Answer)>) {
        let mut senders = Vec::with_capacity(answers.len());
        {
            let mut state = self.lock();
            for (token, answer) in answers {
                let (index, generation) = split(token);
                let Some(slot) = state.slots.get_mut(index) else {
                    continue;
                };
                if slot.generation != generation {
                    continue;
                }
                if let Some(sender) = slot.sender.take() {
                    state.free.push(index as u32);
                    senders.push((sender, answer));
                }
            }
        }
        for (sender, answer) in senders {
            let _ = sender.send(answer);
        }
    }

    /// The execution has ended (its result is in the handle).
    pub fn finish(&self) {
        let mut state = self.lock();
        state.done = true;
        state.waiting = false;
        drop(state);
        self.wake();
    }
}

/// Abandons a slot when the call's future is dropped before its answer came.
pub struct AbandonOnDrop {
    /// The bridge.
    pub bridge: Arc<Bridge>,
    /// The slot; `None` once answered.
    pub token: Option<u64>,
}

impl AbandonOnDrop {
    /// The answer came: nothing to abandon.
    pub fn answered(&mut self) {
        self.token = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.bridge.abandon(token);
        }
    }
}
