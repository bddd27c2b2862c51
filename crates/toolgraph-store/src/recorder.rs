//! [`Recorder`]: the SQL store's [`ExecutionRecorder`], writing an execution's calls as
//! they start and end.
//!
//! The scheduler only pushes a row onto a queue (a mutex held for a push); a writer task
//! drains the queue in batches, one transaction each (module `batch`). For a call that must
//! not run twice, `before_start` returns a future that resolves when the "running" row is
//! committed, so the call itself (never the scheduler) waits for durability.
//!
//! Recording never stops the work, and nothing here ever blocks the scheduler's thread:
//! - **Bounded queue.** A call's start takes two places in the queue (its start and its
//!   end) out of [`StoreOptions::queue_rows`]. When there is no room, `before_start` hands
//!   the call a future that waits for room — the call waits, not the scheduler — for at
//!   most the durability timeout, then queues its row anyway. An end whose start reserved
//!   no place — a call that never started (skipped, cancelled, failed before starting), or
//!   outcomes handed over after the run (`record_completed`, `record_outcomes`) — cannot
//!   wait (`on_outcome` is not async): it takes a free place when there is one and is
//!   queued over the bound when there is not; there is at most one per call.
//! - **Failed writes.** A batch that fails is tried again ([`StoreOptions::retrying`]:
//!   bounded attempts, each with a timeout). When it still fails, recording *stops*: a
//!   warning is logged once, every queued row is dropped — which releases every call
//!   waiting for durability or room — later rows are not queued, and
//!   [`close`](ExecutionRecorder::close) returns [`StoreError::RecordingStopped`]. The run
//!   finishes unrecorded from there; the runtime can complete the record from its results.
//! - **Durability timeout.** A call waits for its start to be durable for at most
//!   [`StoreOptions::durable_timeout_ms`]; then it goes ahead (the engine's gate cannot fail
//!   a call, and a slow store must not stop the work). `close` then reports
//!   [`StoreError::NotDurable`] with how many calls did so.

mod batch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, Semaphore, TryAcquireError, oneshot};
use tokio::time::Instant;
use toolgraph_core::{CallOutcome, Event, EventSink};

use crate::database::Store;
use crate::stored::Ended;
use crate::{ExecutionRecorder, StoreError, StoreOptions, now_ms};

use batch::Batch;

/// A row waiting to be written. `reserved` rows hold a place in the queue (given back
/// when the writer takes them); the others were queued over the bound.
enum Row {
    Started {
        position: usize,
        at: i64,
        durable: Option<oneshot::Sender<()>>,
        reserved: bool,
    },
    Finished {
        end: Ended,
        reserved: bool,
    },
}

impl Row {
    fn reserved(&self) -> bool {
        match self {
            Row::Started { reserved, .. } | Row::Finished { reserved, .. } => *reserved,
        }
    }
}

/// The queue and what it knows about reservations.
struct Queue {
    rows: Vec<Row>,
    /// Per position (a bit each): the call's start reserved a place for its end.
    holds_end: Vec<u64>,
    /// Recording stopped: nothing more is queued. Set under this lock so no row slips in
    /// after the queue was emptied.
    stopped: bool,
}

impl Queue {
    fn take_end_place(&mut self, position: usize) -> bool {
        let (word, bit) = (position / 64, 1u64 << (position % 64));
        match self.holds_end.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }

    fn hold_end_place(&mut self, position: usize) {
        if let Some(w) = self.holds_end.get_mut(position / 64) {
            *w |= 1u64 << (position % 64);
        }
    }
}

struct Shared {
    id: String,
    options: StoreOptions,
    queue: Mutex<Queue>,
    /// Free places in the queue; closed when recording stops.
    room: Arc<Semaphore>,
    /// Rows in the queue that wake the writer before its timer.
    wake_at: usize,
    wake: Notify,
    closing: AtomicBool,
    /// Calls that went ahead before their start was durable.
    not_durable: AtomicU64,
}

impl Shared {
    /// The queue, even if a thread panicked while holding it (every push leaves it whole).
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Queues a start; `false` when recording has stopped.
    fn push_start(
        &self,
        position: usize,
        at: i64,
        durable: Option<oneshot::Sender<()>>,
        reserved: bool,
    ) -> bool {
        let mut q = self.lock();
        if q.stopped {
            return false;
        }
        if reserved {
            q.hold_end_place(position);
        }
        q.rows.push(Row::Started {
            position,
            at,
            durable,
            reserved,
        });
        let len = q.rows.len();
        drop(q);
        if len == self.wake_at {
            self.wake.notify_one();
        }
        true
    }

    fn push_end(&self, end: Ended) {
        let mut q = self.lock();
        if q.stopped {
            return;
        }
        let reserved = q.take_end_place(end.position) || self.take_room(1);
        q.rows.push(Row::Finished { end, reserved });
        let len = q.rows.len();
        drop(q);
        if len == self.wake_at {
            self.wake.notify_one();
        }
    }

    /// Takes `n` places if they are free now.
    fn take_room(&self, n: u32) -> bool {
        match self.room.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => false,
        }
    }

    /// Everything queued, its places given back; the queue starts again with room for
    /// `capacity` rows (allocated outside the lock, and only when there are rows).
    fn take(&self, capacity: usize) -> Vec<Row> {
        if self.is_empty() {
            return Vec::new();
        }
        let spare = Vec::with_capacity(capacity);
        let rows = std::mem::replace(&mut self.lock().rows, spare);
        let places = rows.iter().filter(|r| r.reserved()).count();
        self.room.add_permits(places);
        rows
    }

    fn is_empty(&self) -> bool {
        self.lock().rows.is_empty()
    }

    /// Stops recording for good after `cause`: every queued row is dropped (releasing the
    /// calls waiting for durability), every call waiting for room goes ahead, and nothing
    /// more is queued.
    fn stop(&self, written: u64, cause: StoreError) -> StoreError {
        let dropped = {
            let mut q = self.lock();
            q.stopped = true;
            std::mem::take(&mut q.rows)
        };
        self.room.close();
        tracing::warn!(
            execution = %self.id,
            error = %cause,
            rows_written = written,
            rows_dropped = dropped.len(),
            "recording stopped: the calls run on, and what they do from now on is not recorded"
        );
        drop(dropped);
        StoreError::RecordingStopped {
            id: self.id.clone(),
            written,
            cause: cause.to_string(),
        }
    }

    /// When a call admitted now stops waiting for room or durability.
    fn durable_deadline(&self) -> Instant {
        let now = Instant::now();
        // A timeout too large to add is as good as none: a year.
        now.checked_add(self.options.durable_timeout())
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400))
    }

    /// Waits for a start to be durable, at most until `deadline`.
    async fn durable(&self, committed: oneshot::Receiver<()>, deadline: Instant) {
        // A dropped sender means recording stopped (already reported): go ahead.
        if tokio::time::timeout_at(deadline, committed).await.is_ok() {
            return;
        }
        if self.not_durable.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::warn!(
                execution = %self.id,
                timeout_ms = self.options.durable_timeout_ms,
                "the store is slow: a call that must not run twice goes ahead before its start is durable"
            );
        }
    }
}

/// Records one execution's calls into a [`Store`].
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    skip: Vec<bool>,
    offset_ms: f64,
    base_ms: i64,
    writer: Mutex<Option<tokio::task::JoinHandle<Result<u64, StoreError>>>>,
}

/// Rows written in one transaction at most.
const BATCH_ROWS: usize = 1 << 14;
/// How long rows may wait before the writer takes them. Long enough that a burst of calls
/// runs without the writer competing for the CPU; short enough that the record trails
/// the work by a blink. Write-ahead rows do not wait: they wake the writer at once.
const LINGER: Duration = Duration::from_millis(50);

impl Recorder {
    pub(crate) fn start(
        store: Store,
        id: String,
        calls: usize,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> Recorder {
        let options = store.options();
        let queue_rows = options.queue_rows.clamp(2, Semaphore::MAX_PERMITS);
        // Room for a start and an end per call, reserved now rather than while calls run.
        let capacity = (2 * calls).min(queue_rows);
        let shared = Arc::new(Shared {
            id: id.clone(),
            options,
            queue: Mutex::new(Queue {
                rows: Vec::with_capacity(capacity),
                holds_end: vec![0; calls.div_ceil(64)],
                stopped: false,
            }),
            room: Arc::new(Semaphore::new(queue_rows)),
            wake_at: (queue_rows / 2).max(1),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            not_durable: AtomicU64::new(0),
        });
        let writer = tokio::spawn(write_loop(store, id, shared.clone(), capacity));
        Recorder {
            shared,
            skip,
            offset_ms,
            base_ms: now_ms(),
            writer: Mutex::new(Some(writer)),
        }
    }

    fn skipped(&self, position: usize) -> bool {
        self.skip.get(position).copied().unwrap_or(false)
    }

    /// Writes everything queued and stops the writer. Returns the rows written.
    async fn drain(&self) -> Result<u64, StoreError> {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        let written = match handle {
            Some(h) => h.await.map_err(|e| StoreError::Recorder(e.to_string()))??,
            None => 0,
        };
        match self.shared.not_durable.swap(0, Ordering::AcqRel) {
            0 => Ok(written),
            calls => Err(StoreError::NotDurable {
                id: self.shared.id.clone(),
                calls,
                timeout_ms: self.shared.options.durable_timeout_ms,
            }),
        }
    }
}

impl Drop for Recorder {
    /// A recorder dropped without `close` (its run was dropped) still has its writer write
    /// what is queued and stop, rather than wake every `LINGER` for ever.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

impl EventSink for Recorder {
    fn on_event(&self, _event: &Event) {}

    fn before_start(&self, position: usize, idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        let at = now_ms();
        let shared = &self.shared;
        if shared.take_room(2) {
            if idempotent {
                shared.push_start(position, at, None, true);
                return None;
            }
            let deadline = shared.durable_deadline();
            let (tx, rx) = oneshot::channel();
            if !shared.push_start(position, at, Some(tx), true) {
                return None;
            }
            shared.wake.notify_one();
            let shared = shared.clone();
            return Some(Box::pin(async move { shared.durable(rx, deadline).await }));
        }
        if shared.stopped() {
            return None;
        }
        // The queue is full: the call waits for room (bounded), never the scheduler.
        let shared = shared.clone();
        Some(Box::pin(async move {
            let deadline = shared.durable_deadline();
            shared.wake.notify_one();
            let room = shared.room.clone().acquire_many_owned(2);
            let reserved = match tokio::time::timeout_at(deadline, room).await {
                Ok(Ok(permit)) => {
                    permit.forget();
                    true
                }
                // Recording stopped: nothing to wait for.
                Ok(Err(_)) => return,
                // No room in time: the writer is stuck; queue over the bound and go on.
                Err(_) => false,
            };
            if idempotent {
                shared.push_start(position, at, None, reserved);
                return;
            }
            let (tx, rx) = oneshot::channel();
            if shared.push_start(position, at, Some(tx), reserved) {
                shared.wake.notify_one();
                shared.durable(rx, deadline).await;
            }
        }))
    }

    fn on_outcome(&self, position: usize, o: &CallOutcome<'_>) {
        if self.skipped(position) {
            return;
        }
        self.shared
            .push_end(Ended::new(position, o, self.offset_ms, self.base_ms));
    }
}

impl ExecutionRecorder for Recorder {
    fn as_sink(&self) -> &dyn EventSink {
        self
    }

    fn close(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.drain())
    }
}

async fn write_loop(
    store: Store,
    id: String,
    shared: Arc<Shared>,
    capacity: usize,
) -> Result<u64, StoreError> {
    let options = store.options();
    let mut written = 0u64;
    loop {
        let closing = shared.closing.load(Ordering::SeqCst);
        if !closing {
            let _ = tokio::time::timeout(LINGER, shared.wake.notified()).await;
        }
        let rows = shared.take(capacity);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch = Batch::new(&id, rows.by_ref().take(BATCH_ROWS));
            let attempt = options
                .retrying("recording calls", || batch.write(&store, &id))
                .await;
            match attempt {
                Ok(()) => {
                    written += batch.len() as u64;
                    batch.acknowledge();
                }
                // Dropping the batch and the rows left releases their calls.
                Err(cause) => return Err(shared.stop(written, cause)),
            }
        }
        if closing && shared.is_empty() {
            return Ok(written);
        }
    }
}

#[cfg(test)]
mod tests;
