//! [`Recorder`]: the SQL store's [`ExecutionRecorder`], writing an execution's calls as
//! they start and end.
//!
//! The scheduler only pushes a row onto a queue (a mutex held for a push); a writer task
//! drains the queue in batches, one transaction each. For a call that must not run twice,
//! `before_start` returns a future that resolves when the "running" row is committed, so
//! the call itself (never the scheduler) waits for durability.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, oneshot};
use toolgraph_core::{CallOutcome, Event, EventSink};

use crate::database::Store;
use crate::sql::{self, Param};
use crate::stored::Ended;
use crate::{ExecutionRecorder, StoreError, now_ms};

/// A row waiting to be written.
enum Row {
    Started {
        position: usize,
        at: i64,
        durable: Option<oneshot::Sender<()>>,
    },
    Finished(Ended),
}

struct Shared {
    queue: Mutex<Vec<Row>>,
    capacity: usize,
    wake: Notify,
    closing: std::sync::atomic::AtomicBool,
}

/// Records one execution's calls into a [`Store`].
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    skip: Vec<bool>,
    offset_ms: f64,
    base_ms: i64,
    writer: Mutex<Option<tokio::task::JoinHandle<Result<u64, StoreError>>>>,
}

/// Rows that wake the writer early (bounding memory); below this it wakes on its timer.
const WAKE_AT: usize = 1 << 16;
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
        // Room for a start and an end per call, reserved now rather than while calls run.
        let capacity = (2 * calls).min(WAKE_AT);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            wake: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        });
        let writer = tokio::spawn(write_loop(store, id, shared.clone()));
        Recorder {
            shared,
            skip,
            offset_ms,
            base_ms: now_ms(),
            writer: Mutex::new(Some(writer)),
        }
    }

    fn push(&self, row: Row) {
        let len = match self.shared.queue.lock() {
            Ok(mut q) => {
                q.push(row);
                q.len()
            }
            Err(_) => return,
        };
        if len == WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    fn skipped(&self, position: usize) -> bool {
        self.skip.get(position).copied().unwrap_or(false)
    }

    /// Writes everything queued and stops the writer. Returns the rows written.
    async fn drain(&self) -> Result<u64, StoreError> {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.wake.notify_one();
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        match handle {
            Some(h) => h.await.map_err(|e| StoreError::Recorder(e.to_string()))?,
            None => Ok(0),
        }
    }
}

impl EventSink for Recorder {
    fn on_event(&self, _event: &Event) {}

    fn before_start(&self, position: usize, idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        let at = now_ms();
        if idempotent {
            self.push(Row::Started {
                position,
                at,
                durable: None,
            });
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.push(Row::Started {
            position,
            at,
            durable: Some(tx),
        });
        self.shared.wake.notify_one();
        // If the writer failed, the call goes on: recording must not stop the work.
        Some(Box::pin(async move {
            let _ = rx.await;
        }))
    }

    fn on_outcome(&self, position: usize, o: &CallOutcome<'_>) {
        if self.skipped(position) {
            return;
        }
        self.push(Row::Finished(Ended::new(
            position,
            o,
            self.offset_ms,
            self.base_ms,
        )));
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

async fn write_loop(store: Store, id: String, shared: Arc<Shared>) -> Result<u64, StoreError> {
    let mut written = 0u64;
    loop {
        let closing = shared.closing.load(std::sync::atomic::Ordering::SeqCst);
        if !closing {
            let _ = tokio::time::timeout(LINGER, shared.wake.notified()).await;
        }
        let spare = Vec::with_capacity(shared.capacity);
        let rows = match shared.queue.lock() {
            Ok(mut q) => std::mem::replace(&mut *q, spare),
            Err(_) => Vec::new(),
        };
        if !rows.is_empty() {
            written += rows.len() as u64;
            write_batch(&store, &id, rows).await?;
        }
        if closing && shared.queue.lock().map(|q| q.is_empty()).unwrap_or(true) {
            return Ok(written);
        }
    }
}

async fn write_batch(store: &Store, id: &str, rows: Vec<Row>) -> Result<(), StoreError> {
    let mut started = Vec::new();
    let mut acks = Vec::new();
    let mut finished = Vec::new();
    let mut results = Vec::new();
    for row in rows {
        match row {
            Row::Started {
                position,
                at,
                durable,
            } => {
                started.push(vec![Param::Int(position as i64), Param::Int(at)]);
                acks.extend(durable);
            }
            Row::Finished(end) => {
                let duration = end.duration_ms();
                let kind = end
                    .error
                    .as_ref()
                    .and_then(|e| serde_json::to_value(e.kind).ok())
                    .and_then(|v| v.as_str().map(str::to_owned));
                finished.push(vec![
                    Param::Int(end.position as i64),
                    Param::Text(end.status.as_str().to_owned()),
                    Param::Int(i64::from(end.attempts)),
                    Param::Real(end.queued_ms),
                    Param::OptReal(end.started_ms),
                    Param::Real(end.finished_ms),
                    Param::OptReal(duration),
                    Param::Int(end.finished_at),
                    Param::OptText(kind),
                    Param::OptText(end.error.map(|e| e.message)),
                ]);
                if let Some(out) = end.output {
                    let text = out.to_string();
                    results.push(vec![
                        Param::Text(id.to_owned()),
                        Param::Int(end.position as i64),
                        Param::Int(text.len() as i64),
                        Param::Text(text),
                    ]);
                }
            }
        }
    }
    let mut tx = store.pool().begin().await?;
    // "running" never overwrites an end that is already recorded in the same batch or earlier.
    sql::update_rows(
        &mut tx,
        "UPDATE tool_calls SET status = 'running', started_at = v.column2 FROM (VALUES {values}) AS v \
         WHERE tool_calls.execution_id = $1 AND tool_calls.position = v.column1 AND tool_calls.status IN ('pending', 'running')",
        id,
        &started,
    )
    .await?;
    sql::update_rows(
        &mut tx,
        "UPDATE tool_calls SET status = v.column2, attempts = v.column3, queued_ms = v.column4, started_ms = v.column5, \
         finished_ms = v.column6, duration_ms = v.column7, finished_at = v.column8, error_kind = v.column9, error_message = v.column10 \
         FROM (VALUES {values}) AS v WHERE tool_calls.execution_id = $1 AND tool_calls.position = v.column1",
        id,
        &finished,
    )
    .await?;
    sql::insert_rows(
        &mut tx,
        "INSERT INTO tool_results (execution_id, position, size_bytes, output) VALUES ",
        &results,
        "",
        " ON CONFLICT (execution_id, position) DO UPDATE SET output = excluded.output, size_bytes = excluded.size_bytes",
    )
    .await?;
    tx.commit().await?;
    for ack in acks {
        let _ = ack.send(());
    }
    Ok(())
}
