//! Executions this server runs or ran recently: their cancel tokens, replayable event logs
//! (what a late SSE subscriber receives first), status and final result.
//!
//! An execution is launched here ([`Registry::launch`]): its batch was planned by the
//! handler (so a rejection is a synchronous 400), it runs in a task of its own — a client
//! that goes away does not stop it, `DELETE` (its cancel token) does — and its events go
//! to a [`LiveSink`] that appends them, numbered from 0, to the execution's log and wakes
//! the subscribers. Its id is the store's execution id when it is recorded (learnt through
//! [`ExecuteOptions::on_begin`] before any call runs), a fresh UUID v4 otherwise.
//!
//! Ended executions stay for a bounded time and count ([`KEEP_ENDED`], [`KEEP_ENDED_FOR`]);
//! after that a recorded one is served from the store, an unrecorded one is gone.
//!
//! Never holds a lock across `.await`; the sink only appends and notifies (it is called
//! from the scheduler's loop).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use toolgraph::engine::Plan;
use toolgraph::{ExecuteOptions, Runtime};
use toolgraph_core::ParallelExecutorConfig;

use crate::Problem;
use crate::problem::runtime_problem;

mod execution;

use execution::LiveSink;
pub use execution::{FinishedData, LiveEvent, LiveExecution, LiveStatus, plan_data};

/// How many ended executions the registry keeps, at most.
pub const KEEP_ENDED: usize = 256;

/// How long the registry keeps an ended execution, at most.
pub const KEEP_ENDED_FOR: Duration = Duration::from_secs(600);

/// What to launch.
pub enum Launch {
    /// A new execution of the plan.
    Execute,
    /// Resuming stored execution `id` (the plan is its calls, planned again).
    Resume(String),
}

/// A launched execution.
pub struct Launched {
    /// Its id.
    pub id: String,
    /// It, live.
    pub execution: Arc<LiveExecution>,
}

/// What the registry holds.
#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<LiveExecution>>,
    /// Executions whose task has not ended, by launch number (an execution being recorded
    /// is here before its id is known).
    running: HashMap<u64, Arc<LiveExecution>>,
    /// Ended executions, oldest first.
    ended: VecDeque<String>,
}

/// The executions in flight (and recently ended) in this server.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    refusing: AtomicBool,
    launches: AtomicU64,
    task_ended: Notify,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many executions are running now.
    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// From now on, launching is refused: `POST` answers 503 (the server is shutting down).
    pub fn refuse_new(&self) {
        let _inner = self.lock();
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// Waits until no execution runs or `grace` elapsed; then cancels the rest and waits
    /// until their tasks ended — their records are finished, `cancelled` in the store and
    /// resumable.
    pub async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.task_ended.notified();
            if self.running() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let running: Vec<Arc<LiveExecution>> = self.lock().running.values().cloned().collect();
        tracing::info!(
            executions = running.len(),
            "grace period over: cancelling the executions still running"
        );
        for execution in running {
            execution.cancel.cancel();
        }
        loop {
            let ended = self.task_ended.notified();
            if self.running() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// The execution named exactly `id`, when this server knows it.
    pub fn get(&self, id: &str) -> Option<Arc<LiveExecution>> {
        self.lock().by_id.get(id).cloned()
    }

    /// The executions whose id starts with `prefix`, at most `limit`.
    pub fn by_prefix(&self, prefix: &str, limit: usize) -> Vec<(String, Arc<LiveExecution>)> {
        self.lock()
            .by_id
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .take(limit)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    /// Every execution it knows, unordered.
    pub fn all(&self) -> Vec<(String, Arc<LiveExecution>)> {
        self.lock()
            .by_id
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    pub(crate) fn insert(&self, id: String, execution: Arc<LiveExecution>) {
        let mut inner = self.lock();
        if let Some(old) = inner.by_id.insert(id.clone(), execution)
            && old.status() != LiveStatus::Running
        {
            // A resumed execution's earlier run: its place in the ended queue goes too.
            inner.ended.retain(|e| *e != id);
        }
    }

    fn ended(&self, launch: u64, id: Option<&str>) {
        let mut inner = self.lock();
        inner.running.remove(&launch);
        if let Some(id) = id {
            inner.ended.push_back(id.to_owned());
        }
        // Bounded: the oldest ended executions go (the store still has the recorded ones).
        while inner.ended.len() > KEEP_ENDED
            || inner.ended.front().is_some_and(|oldest| {
                inner.by_id.get(oldest).is_none_or(|e| {
                    e.lock()
                        .ended_at
                        .is_some_and(|at| at.elapsed() > KEEP_ENDED_FOR)
                })
            })
        {
            if let Some(oldest) = inner.ended.pop_front()
                && inner
                    .by_id
                    .get(&oldest)
                    .is_some_and(|e| e.status() != LiveStatus::Running)
            {
                inner.by_id.remove(&oldest);
            }
        }
        drop(inner);
        self.task_ended.notify_waiters();
    }

    /// Launches `plan` on `runtime` (recorded when the runtime has a store) in a task of its
    /// own, and returns once its id is known: at once when unrecorded or resumed, once the
    /// store holds it otherwise. A store that fails before anything ran is the error.
    pub async fn launch(
        self: &Arc<Self>,
        runtime: Runtime,
        plan: Plan,
        config: Option<Arc<ParallelExecutorConfig>>,
        what: Launch,
    ) -> Result<Launched, Problem> {
        let recorded = runtime.store().is_some();
        let execution = LiveExecution::new(&plan, recorded);
        let launch = self.launches.fetch_add(1, Ordering::SeqCst);
        {
            // Checked under the lock `refuse_new` takes: once it returned, `drain` counts
            // every execution that got past here.
            let mut inner = self.lock();
            if self.refusing.load(Ordering::SeqCst) {
                return Err(Problem::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down: it starts no new execution",
                ));
            }
            inner.running.insert(launch, execution.clone());
        }
        let (id_tx, id_rx) = oneshot::channel::<String>();
        let known_id = match &what {
            Launch::Resume(id) => Some(id.clone()),
            Launch::Execute if recorded => None,
            Launch::Execute => Some(uuid::Uuid::new_v4().to_string()),
        };
        let on_begin: Option<toolgraph::OnBegin> = if known_id.is_none() {
            let registry = self.clone();
            let live = execution.clone();
            let id_tx = Mutex::new(Some(id_tx));
            Some(Arc::new(move |id: &str| {
                registry.insert(id.to_owned(), live.clone());
                if let Some(tx) = id_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(id.to_owned());
                }
            }))
        } else {
            None
        };
        if let Some(id) = &known_id {
            self.insert(id.clone(), execution.clone());
        }
        let options = ExecuteOptions {
            cancel: execution.cancel.clone(),
            config,
            sink: Some(Arc::new(LiveSink {
                execution: execution.clone(),
            })),
            on_begin,
            ..ExecuteOptions::default()
        };
        let registry = self.clone();
        let live = execution.clone();
        let task_id = known_id.clone();
        tokio::spawn(async move {
            let outcome = match what {
                Launch::Execute => runtime.execute(&plan, options).await.map(|e| e.result),
                Launch::Resume(id) => runtime.resume(&id, options).await.map(|r| r.stored.result),
            };
            let id = outcome
                .as_ref()
                .ok()
                .and_then(|r| r.metadata.execution_id.clone())
                .or(task_id);
            live.end(&plan, outcome.map_err(runtime_problem));
            registry.ended(launch, id.as_deref());
        });
        let id =
            match known_id {
                Some(id) => id,
                None => match id_rx.await {
                    Ok(id) => id,
                    // Never recorded: the task ended with the reason.
                    Err(_) => {
                        return Err(execution.wait().await.err().unwrap_or_else(|| {
                            Problem::internal("the execution was not recorded")
                        }));
                    }
                },
            };
        Ok(Launched { id, execution })
    }
}
