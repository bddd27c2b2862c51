//! One batch of a recorder's rows, turned into statement parameters once and written in one
//! transaction — as many times as the recorder tries. Its durability acknowledgements are
//! sent only after a commit.
//!
//! Calls are updated by multi-row upserts (`INSERT … ON CONFLICT … DO UPDATE`): the
//! conflict check finds each row through the primary key, so the cost is linear in the
//! rows on both databases. A multi-row `UPDATE … FROM (VALUES …)` left the join to the
//! planners, which scanned the execution's calls for every statement — SQLite always,
//! PostgreSQL whenever its statistics predated the execution — and recording grew with
//! the square of the calls.

use tokio::sync::oneshot;

use super::Row;
use crate::StoreError;
use crate::database::Store;
use crate::sql::{self, Param};

/// The insert branch of the upserts never takes a row: every call's row is written with
/// its execution, in one transaction, so it is there — unless the execution went (pruned
/// while it ran), and then the foreign key on `executions` fails the statement. These
/// columns only fill the insert branch's required fields.
macro_rules! filler_columns {
    () => {
        "call_id, tool, arguments, depends_on, priority, level"
    };
}
const FILLER: &str = "'', '', 'null', '[]', 0, 0";

/// "running", unless the call's end is already recorded (in this batch or before).
const STARTED_HEAD: &str = concat!(
    "INSERT INTO tool_calls (execution_id, position, started_at, status, ",
    filler_columns!(),
    ") VALUES "
);
const STARTED_TAIL: &str = " ON CONFLICT (execution_id, position) DO UPDATE SET status = 'running', \
     started_at = excluded.started_at WHERE tool_calls.status IN ('pending', 'running')";
const FINISHED_HEAD: &str = concat!(
    "INSERT INTO tool_calls (execution_id, position, status, attempts, queued_ms, started_ms, ",
    "finished_ms, duration_ms, finished_at, error_kind, error_message, worker, cached, ",
    filler_columns!(),
    ") VALUES "
);
const FINISHED_TAIL: &str = " ON CONFLICT (execution_id, position) DO UPDATE SET status = excluded.status, \
     attempts = excluded.attempts, queued_ms = excluded.queued_ms, started_ms = excluded.started_ms, \
     finished_ms = excluded.finished_ms, duration_ms = excluded.duration_ms, \
     finished_at = excluded.finished_at, error_kind = excluded.error_kind, \
     error_message = excluded.error_message, worker = excluded.worker, cached = excluded.cached";

pub(super) struct Batch {
    rows: usize,
    started: Vec<Vec<Param>>,
    finished: Vec<Vec<Param>>,
    results: Vec<Vec<Param>>,
    acks: Vec<oneshot::Sender<()>>,
}

impl Batch {
    pub(super) fn new(id: &str, rows: impl Iterator<Item = Row>) -> Batch {
        let mut batch = Batch {
            rows: 0,
            started: Vec::new(),
            finished: Vec::new(),
            results: Vec::new(),
            acks: Vec::new(),
        };
        for row in rows {
            batch.rows += 1;
            match row {
                Row::Started {
                    position,
                    at,
                    durable,
                    ..
                } => {
                    batch.started.push(vec![
                        Param::Text(id.to_owned()),
                        Param::Int(position as i64),
                        Param::Int(at),
                    ]);
                    batch.acks.extend(durable);
                }
                Row::Finished { end, .. } => {
                    let duration = end.duration_ms();
                    let kind = end
                        .error
                        .as_ref()
                        .and_then(|e| serde_json::to_value(e.kind).ok())
                        .and_then(|v| v.as_str().map(str::to_owned));
                    batch.finished.push(vec![
                        Param::Text(id.to_owned()),
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
                        Param::OptText(end.worker),
                        Param::Int(i64::from(end.cached)),
                    ]);
                    if let Some(out) = end.output {
                        let text = out.to_string();
                        batch.results.push(vec![
                            Param::Text(id.to_owned()),
                            Param::Int(end.position as i64),
                            Param::Int(text.len() as i64),
                            Param::Text(text),
                        ]);
                    }
                }
            }
        }
        batch
    }

    /// Rows in the batch.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Writes the batch in one transaction. An execution that went from the store while
    /// it ran (a foreign key fails) is [`StoreError::NotFound`].
    pub(super) async fn write(&self, store: &Store, id: &str) -> Result<(), StoreError> {
        self.write_rows(store).await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::not_found(id, &store.shown())
            }
            other => StoreError::Database(other),
        })
    }

    async fn write_rows(&self, store: &Store) -> Result<(), sqlx::Error> {
        let mut tx = store.pool().begin().await?;
        let running = format!("'running', {FILLER}");
        sql::insert_rows(&mut tx, STARTED_HEAD, &self.started, &running, STARTED_TAIL).await?;
        sql::insert_rows(
            &mut tx,
            FINISHED_HEAD,
            &self.finished,
            FILLER,
            FINISHED_TAIL,
        )
        .await?;
        sql::insert_rows(
            &mut tx,
            "INSERT INTO tool_results (execution_id, position, size_bytes, output) VALUES ",
            &self.results,
            "",
            " ON CONFLICT (execution_id, position) DO UPDATE SET output = excluded.output, size_bytes = excluded.size_bytes",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tells the calls waiting for their start to be durable that it is.
    pub(super) fn acknowledge(self) {
        for ack in self.acks {
            let _ = ack.send(());
        }
    }
}
