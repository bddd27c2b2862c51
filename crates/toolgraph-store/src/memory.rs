//! [`MemoryStore`]: an [`ExecutionStore`] that keeps everything in this process — for
//! tests, embedders that want the record without a database, and `memory:` URLs.
//!
//! It behaves as the SQL store does: the same states, figures and reads, built by the same
//! code in `stored`. Its record is as durable as the process, so a recorder's
//! `before_start` has nothing to wait for: the "running" state is written before it
//! returns. One std mutex guards the data; it is held for a few field updates and never
//! across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::BoxFuture;
use toolgraph_core::{CallOutcome, Event, EventSink, ParallelExecutorConfig};
use toolgraph_engine::{PerformanceStats, Plan};

use crate::stored::{
    self, CallRecord, Ended, ExecutionSummary, PruneRequest, Pruned, ResumePoint, StoredExecution,
    TOOL_STATS_STATES, ToolTally,
};
use crate::{
    ExecutionRecorder, ExecutionStore, SessionHead, SessionSummary, SessionTurn, StoreError,
    StoredSession, now_ms,
};

/// Executions kept in memory. Clones share the same record.
///
/// ```
/// use std::sync::Arc;
/// use toolgraph_store::{ExecutionStore, MemoryStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn ExecutionStore> = Arc::new(MemoryStore::new());
/// assert!(store.history(10).await.unwrap().is_empty());
/// assert_eq!(store.describe(), "memory:");
/// # });
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    executions: Arc<Mutex<BTreeMap<String, Execution>>>,
    /// The `tool_cache` table: key → (value, expires at, epoch ms).
    cache: Arc<Mutex<BTreeMap<String, (String, i64)>>>,
    /// The `sessions` and `session_turns` tables.
    sessions: Arc<Mutex<BTreeMap<String, Session>>>,
}

/// One session: its summary (totals kept up to date), system prompt and turns.
struct Session {
    summary: SessionSummary,
    system: Option<String>,
    turns: Vec<SessionTurn>,
}

/// One execution: what the SQL store keeps in its tables, as values.
struct Execution {
    created_at: i64,
    /// The session (a chat) it belongs to.
    session: Option<String>,
    status: &'static str,
    config: ParallelExecutorConfig,
    resumed: i64,
    /// The lease: who runs it, and that owner's last heartbeat.
    owner: Option<(String, i64)>,
    /// Set by `finish_execution`.
    figures: Option<Figures>,
    calls: Vec<CallRecord>,
    edges: Vec<(usize, usize, String)>,
    /// The adaptive limits recorded when it ended, with the order they were recorded in.
    adaptive: Option<(u64, BTreeMap<String, usize>)>,
}

/// Orders recordings of adaptive limits (the latest wins in `stats`).
static ADAPTIVE_RECORDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What `finish_execution` stores besides the status.
struct Figures {
    success: bool,
    makespan_ms: f64,
    speedup: f64,
    efficiency: f64,
    /// Level timings.
    levels: usize,
    /// Metrics stored.
    metrics: usize,
}

impl Execution {
    fn summary(&self, id: &str) -> ExecutionSummary {
        let f = self.figures.as_ref();
        ExecutionSummary {
            id: id.to_owned(),
            created_at: self.created_at,
            status: self.status.to_owned(),
            calls: self.calls.len() as i64,
            success: f.map(|f| f.success),
            makespan_ms: f.map(|f| f.makespan_ms),
            speedup: f.map(|f| f.speedup),
            efficiency: f.map(|f| f.efficiency),
            resumed: self.resumed,
            owner: self.owner.as_ref().map(|(o, _)| o.clone()),
            heartbeat_at: self.owner.as_ref().map(|(_, beat)| *beat),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The data, even if a thread panicked while holding it (every update leaves it whole).
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Execution>> {
        self.executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions_lock(&self) -> MutexGuard<'_, BTreeMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `record_session_turn` does, under the sessions' lock.
    fn add_session_turn(&self, head: &SessionHead, turn: &SessionTurn) -> i64 {
        let mut sessions = self.sessions_lock();
        let session = sessions.entry(head.id.clone()).or_insert_with(|| Session {
            summary: SessionSummary {
                id: head.id.clone(),
                title: None,
                provider: None,
                model: None,
                turns: 0,
                input_tokens: 0,
                output_tokens: 0,
                created_at: turn.started_at,
                updated_at: turn.started_at,
            },
            system: None,
            turns: Vec::new(),
        });
        let s = &mut session.summary;
        s.title.get_or_insert_with(|| head.title.clone());
        s.provider = Some(head.provider.clone());
        s.model = Some(turn.model.clone());
        s.turns += 1;
        s.input_tokens += turn.input_tokens;
        s.output_tokens += turn.output_tokens;
        s.updated_at = turn.finished_at.max(now_ms());
        if session.system.is_none() {
            session.system.clone_from(&head.system);
        }
        let number = session.turns.len() as i64 + 1;
        session.turns.push(SessionTurn {
            turn: number,
            ..turn.clone()
        });
        number
    }

    /// Session `id`, copied out of the lock, with its executions.
    fn session_now(&self, id: &str) -> Result<StoredSession, StoreError> {
        let (summary, system, turns) = {
            let sessions = self.sessions_lock();
            let s = sessions
                .get(id)
                .ok_or_else(|| StoreError::SessionNotFound {
                    id: id.to_owned(),
                    store: MEMORY.to_owned(),
                })?;
            (s.summary.clone(), s.system.clone(), s.turns.clone())
        };
        let mut executions: Vec<ExecutionSummary> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(eid, e)| e.summary(eid))
            .collect();
        executions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(StoredSession {
            summary,
            system,
            turns,
            executions,
        })
    }

    fn cache_lock(&self) -> MutexGuard<'_, BTreeMap<String, (String, i64)>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, plan: &Plan, config: &ParallelExecutorConfig, session: Option<&str>) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(session) = session {
            // As the SQL store does: an execution's session exists from then on.
            let now = now_ms();
            self.sessions_lock()
                .entry(session.to_owned())
                .or_insert_with(|| Session {
                    summary: SessionSummary {
                        id: session.to_owned(),
                        title: None,
                        provider: None,
                        model: None,
                        turns: 0,
                        input_tokens: 0,
                        output_tokens: 0,
                        created_at: now,
                        updated_at: now,
                    },
                    system: None,
                    turns: Vec::new(),
                });
        }
        let levels = plan.levels();
        let calls = plan
            .calls()
            .iter()
            .enumerate()
            .map(|(i, c)| CallRecord::pending(c.call.clone(), levels[i]))
            .collect();
        let edges = plan
            .edges()
            .iter()
            .map(|e| (e.from, e.to, e.reason.to_string()))
            .collect();
        let execution = Execution {
            created_at: now_ms(),
            session: session.map(str::to_owned),
            status: "running",
            config: config.clone(),
            resumed: 0,
            owner: None,
            figures: None,
            adaptive: None,
            calls,
            edges,
        };
        self.lock().insert(id.clone(), execution);
        id
    }

    /// Execution `id` rebuilt; the copy is made under the lock, the figures outside it.
    fn snapshot(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let (summary, config, calls, edges) = {
            let executions = self.lock();
            let e = executions
                .get(id)
                .ok_or_else(|| StoreError::not_found(id, MEMORY))?;
            (
                e.summary(id),
                e.config.clone(),
                e.calls.clone(),
                e.edges.clone(),
            )
        };
        stored::rebuild(summary, config, calls, edges)
    }

    fn finish(&self, id: &str) -> Result<StoredExecution, StoreError> {
        let mut stored = self.snapshot(id)?;
        let r = &stored.result;
        if let Some(e) = self.lock().get_mut(id) {
            e.status = "finished";
            e.figures = Some(Figures {
                success: r.success,
                makespan_ms: r.total_time_ms,
                speedup: r.speedup,
                efficiency: r.efficiency,
                levels: r.batches.len(),
                metrics: stored::metrics(r).len(),
            });
        }
        stored::mark_finished(&mut stored);
        Ok(stored)
    }

    fn history_now(&self, limit: i64) -> Vec<ExecutionSummary> {
        let executions = self.lock();
        let mut lines: Vec<ExecutionSummary> =
            executions.iter().map(|(id, e)| e.summary(id)).collect();
        drop(executions);
        // As the SQL store orders them: newest first, ties by id.
        lines.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        lines.truncate(usize::try_from(limit).unwrap_or(0));
        lines
    }

    fn stats_now(&self, since_ms: i64, tool: Option<&str>) -> PerformanceStats {
        let executions = self.lock();
        let mut finished = 0u64;
        let (mut speedup, mut makespan, mut efficiency) = (0.0, 0.0, 0.0);
        let (mut calls, mut ok) = (0u64, 0u64);
        let mut tally = ToolTally::default();
        // Only finished executions count, for the averages and per tool alike (as in the
        // SQL store): the figures never disagree with one another.
        for e in executions.values().filter(|e| e.created_at >= since_ms) {
            let (Some(f), "finished") = (&e.figures, e.status) else {
                continue;
            };
            finished += 1;
            speedup += f.speedup;
            makespan += f.makespan_ms;
            efficiency += f.efficiency;
            calls += e.calls.len() as u64;
            ok += e.calls.iter().filter(|c| c.state == "ok").count() as u64;
            for c in &e.calls {
                if TOOL_STATS_STATES.contains(&c.state.as_str())
                    && tool.is_none_or(|t| t == c.call.name)
                {
                    tally.add(c.call.name.clone(), &c.state, c.duration_ms, c.cached);
                }
            }
        }
        let mut recorded: Vec<&(u64, BTreeMap<String, usize>)> = executions
            .values()
            .filter(|e| e.created_at >= since_ms)
            .filter_map(|e| e.adaptive.as_ref())
            .collect();
        recorded.sort_by_key(|(order, _)| *order);
        let adaptive_limits: BTreeMap<String, usize> = recorded
            .into_iter()
            .flat_map(|(_, limits)| limits.iter().map(|(k, l)| (k.clone(), *l)))
            .collect();
        drop(executions);
        let mean = |sum: f64| {
            if finished == 0 {
                0.0
            } else {
                sum / finished as f64
            }
        };
        PerformanceStats {
            total_executions: finished,
            avg_speedup: mean(speedup),
            avg_execution_time_ms: mean(makespan),
            avg_success_rate: if calls == 0 {
                0.0
            } else {
                ok as f64 / calls as f64
            },
            avg_efficiency: mean(efficiency),
            total_calls: calls,
            tools: tally.finish(),
            adaptive_limits,
        }
    }

    fn counts(&self, id: &str) -> BTreeMap<String, i64> {
        let executions = self.lock();
        let e = executions.get(id);
        let count = |f: fn(&Execution) -> usize| e.map_or(0, |e| f(e) as i64);
        [
            ("tool_calls", count(|e| e.calls.len())),
            (
                "tool_results",
                count(|e| e.calls.iter().filter(|c| c.output.is_some()).count()),
            ),
            ("dependency_edges", count(|e| e.edges.len())),
            (
                "batches",
                count(|e| e.figures.as_ref().map_or(0, |f| f.levels)),
            ),
            (
                "performance_metrics",
                count(|e| e.figures.as_ref().map_or(0, |f| f.metrics)),
            ),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
    }

    /// Executions whose id starts with `prefix`, in id order: a range of the ordered map.
    fn by_prefix(&self, prefix: &str, limit: usize) -> Vec<ExecutionSummary> {
        let executions = self.lock();
        executions
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(id, _)| id.starts_with(prefix))
            .take(limit)
            .map(|(id, e)| e.summary(id))
            .collect()
    }

    /// Chooses and deletes under one lock, as the SQL store does in one statement.
    fn prune_now(&self, request: &PruneRequest) -> Pruned {
        let mut executions = self.lock();
        let old = executions
            .iter()
            .filter(|(id, e)| request.selects(id, e.created_at))
            .map(|(id, e)| e.summary(id))
            .collect();
        let pruned = Pruned::sort(old, request, now_ms());
        if !request.dry_run {
            for s in &pruned.deleted {
                executions.remove(&s.id);
            }
        }
        pruned
    }

    /// Applies `change` to call `position` of execution `id`, if both exist (as the SQL
    /// store's updates touch no row otherwise). Returns whether they did.
    fn update(&self, id: &str, position: usize, change: impl FnOnce(&mut CallRecord)) -> bool {
        match self
            .lock()
            .get_mut(id)
            .and_then(|e| e.calls.get_mut(position))
        {
            Some(call) => {
                change(call);
                true
            }
            None => false,
        }
    }
}

/// How a memory store names itself.
const MEMORY: &str = "memory:";

impl ExecutionStore for MemoryStore {
    fn describe(&self) -> String {
        MEMORY.to_owned()
    }

    fn begin_execution<'a>(
        &'a self,
        plan: &'a Plan,
        config: &'a ParallelExecutorConfig,
        session: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move { Ok(self.begin(plan, config, session)) })
    }

    fn recorder(
        &self,
        id: &str,
        _calls: usize,
        skip: Vec<bool>,
        offset_ms: f64,
    ) -> Arc<dyn ExecutionRecorder> {
        Arc::new(MemoryRecorder {
            store: self.clone(),
            id: id.to_owned(),
            skip,
            offset_ms,
            base_ms: now_ms(),
            written: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        })
    }

    fn finish_execution<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        Box::pin(async move { self.finish(id) })
    }

    fn record_adaptive_limits<'a>(
        &'a self,
        id: &'a str,
        limits: &'a BTreeMap<String, usize>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let order = ADAPTIVE_RECORDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.lock().get_mut(id) {
                Some(e) => {
                    e.adaptive = Some((order, limits.clone()));
                    Ok(())
                }
                None => Err(StoreError::not_found(id, MEMORY)),
            }
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredExecution, StoreError>> {
        Box::pin(async move { self.snapshot(id) })
    }

    fn history(&self, limit: i64) -> BoxFuture<'_, Result<Vec<ExecutionSummary>, StoreError>> {
        Box::pin(async move { Ok(self.history_now(limit)) })
    }

    fn executions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ExecutionSummary>, StoreError>> {
        Box::pin(async move { Ok(self.by_prefix(prefix, limit)) })
    }

    fn record_session_turn<'a>(
        &'a self,
        head: &'a SessionHead,
        turn: &'a SessionTurn,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move { Ok(self.add_session_turn(head, turn)) })
    }

    fn sessions(&self, limit: i64) -> BoxFuture<'_, Result<Vec<SessionSummary>, StoreError>> {
        Box::pin(async move {
            let mut all: Vec<SessionSummary> = self
                .sessions_lock()
                .values()
                .map(|s| s.summary.clone())
                .collect();
            all.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
            all.truncate(usize::try_from(limit).unwrap_or(0));
            Ok(all)
        })
    }

    fn sessions_by_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SessionSummary>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .sessions_lock()
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(id, _)| id.starts_with(prefix))
                .take(limit)
                .map(|(_, s)| s.summary.clone())
                .collect())
        })
    }

    fn load_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<StoredSession, StoreError>> {
        Box::pin(async move { self.session_now(id) })
    }

    fn performance_stats<'a>(
        &'a self,
        since_ms: i64,
        tool: Option<&'a str>,
    ) -> BoxFuture<'a, Result<PerformanceStats, StoreError>> {
        Box::pin(async move { Ok(self.stats_now(since_ms, tool)) })
    }

    fn resume_point<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<ResumePoint, StoreError>> {
        Box::pin(async move { self.snapshot(id).map(stored::resume_point) })
    }

    fn mark_resumed<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(e) = self.lock().get_mut(id) {
                if e.status == "cancelled" {
                    for call in &mut e.calls {
                        call.reopen_cancelled();
                    }
                }
                e.status = "running";
                e.resumed += 1;
            }
            Ok(())
        })
    }

    fn mark_cancelled<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(e) = self.lock().get_mut(id)
                && e.status == "finished"
            {
                e.status = "cancelled";
            }
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        stale_ms: i64,
        dead: Option<&'a str>,
    ) -> BoxFuture<'a, Result<crate::Claim, StoreError>> {
        Box::pin(async move {
            let now = crate::now_ms();
            let mut executions = self.lock();
            let e = executions
                .get_mut(id)
                .ok_or_else(|| StoreError::not_found(id, MEMORY))?;
            match &e.owner {
                Some((holder, beat))
                    if holder != owner
                        && Some(holder.as_str()) != dead
                        && now.saturating_sub(*beat) <= stale_ms =>
                {
                    Ok(crate::Claim::Held {
                        owner: holder.clone(),
                        heartbeat_age_ms: now.saturating_sub(*beat),
                    })
                }
                _ => {
                    e.owner = Some((owner.to_owned(), now));
                    Ok(crate::Claim::Granted)
                }
            }
        })
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut executions = self.lock();
            match executions.get_mut(id).and_then(|e| e.owner.as_mut()) {
                Some((holder, beat)) if holder == owner => {
                    *beat = crate::now_ms();
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(e) = self.lock().get_mut(id)
                && e.owner.as_ref().is_some_and(|(holder, _)| holder == owner)
            {
                e.owner = None;
            }
            Ok(())
        })
    }

    fn prune<'a>(&'a self, request: &'a PruneRequest) -> BoxFuture<'a, Result<Pruned, StoreError>> {
        Box::pin(async move { Ok(self.prune_now(request)) })
    }

    fn cache_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let now = now_ms();
        let value = self
            .cache_lock()
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone());
        Box::pin(async move { Ok(value) })
    }

    fn cache_put<'a>(
        &'a self,
        key: &'a str,
        _tool: &'a str,
        value: &'a str,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let expires = now_ms().saturating_add(ttl_ms.max(0));
        self.cache_lock()
            .insert(key.to_owned(), (value.to_owned(), expires));
        Box::pin(async { Ok(()) })
    }

    fn cache_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let removed = self.cache_lock().remove(key).is_some();
        Box::pin(async move { Ok(removed) })
    }

    fn cache_prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let now = now_ms();
        let mut cache = self.cache_lock();
        let before = cache.len();
        cache.retain(|_, (_, expires)| *expires > now);
        let gone = (before - cache.len()) as u64;
        drop(cache);
        Box::pin(async move { Ok(gone) })
    }

    fn row_counts<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, StoreError>> {
        Box::pin(async move { Ok(self.counts(id)) })
    }
}

/// Records one execution's calls into a [`MemoryStore`] as they happen.
struct MemoryRecorder {
    store: MemoryStore,
    id: String,
    skip: Vec<bool>,
    offset_ms: f64,
    base_ms: i64,
    /// Starts and ends recorded, as the SQL recorder counts its rows.
    written: AtomicU64,
    /// After `close`, nothing more is recorded (as with the SQL recorder's stopped writer).
    closed: AtomicBool,
    /// The execution went from the store while it ran (pruned): recording stopped, as the
    /// SQL recorder's does when an end finds no row.
    lost: AtomicBool,
}

impl MemoryRecorder {
    fn record(&self, position: usize, change: impl FnOnce(&mut CallRecord)) {
        if self.closed.load(Ordering::Acquire) || self.lost.load(Ordering::Acquire) {
            return;
        }
        if self.store.update(&self.id, position, change) {
            self.written.fetch_add(1, Ordering::Relaxed);
        } else {
            self.lost.store(true, Ordering::Release);
        }
    }
}

impl EventSink for MemoryRecorder {
    fn on_event(&self, _event: &Event) {}

    fn before_start(&self, position: usize, _idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        // Written before returning: nothing for the call to wait for.
        self.record(position, CallRecord::start);
        None
    }

    fn on_outcome(&self, position: usize, o: &CallOutcome<'_>) {
        if self.skip.get(position).copied().unwrap_or(false) {
            return;
        }
        let ended = Ended::new(position, o, self.offset_ms, self.base_ms);
        self.record(position, |call| call.end(ended));
    }
}

impl ExecutionRecorder for MemoryRecorder {
    fn as_sink(&self) -> &dyn EventSink {
        self
    }

    fn close(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            // A second close has nothing left to drain, as with the SQL recorder.
            let written = self.written.swap(0, Ordering::AcqRel);
            if self.lost.swap(false, Ordering::AcqRel) {
                return Err(StoreError::RecordingStopped {
                    id: self.id.clone(),
                    written,
                    cause: StoreError::not_found(&self.id, MEMORY).to_string(),
                });
            }
            Ok(written)
        })
    }
}
