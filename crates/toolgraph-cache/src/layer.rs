//! [`CacheLayer`]: answers idempotent calls from a [`CacheBackend`] and runs identical
//! calls in flight at the same time once (single-flight).
//!
//! For a call whose tool is idempotent (`CallPolicy::idempotent`: declared, MCP
//! `idempotentHint`, or the operator's override) and not opted out, the layer computes the
//! call's key ([`cache_key`]) and looks it up. A hit answers at once: the call is marked
//! cached on its `Meter` (no attempt, its run time the lookup's). A miss joins the flight
//! of that key, or starts one:
//!
//! - a flight runs in a task of its own, so no caller owns it: each caller waits for its
//!   result under its *own* timeout and can be dropped (cancelled) alone; the flight is
//!   aborted only when no caller waits any more;
//! - the flight looks the key up once more (an identical call may have just finished), then,
//!   when the backend is shared by other processes (Redis), takes the key's lock (renewed
//!   every third of its lease while the call runs) — or waits, polling, for the holder's
//!   entry (or failure), taking over if the lock goes (its holder died);
//! - it runs the call through the layers below with no deadline of its own (the callers'
//!   deadlines bound it) and a cancel flag of its own, keeps a success for the tool's ttl —
//!   and a permanent error for `negative_ttl`, when set — and answers every caller.
//!
//! The caller that started the flight reports the tool's attempts; every other caller is
//! marked cached (it ran no tool). A backend that fails or holds an entry that cannot be
//! read is a miss, logged once as a warning; the fresh result overwrites the bad entry.
//!
//! Invariants: no lock is held across an await; a call never fails because of the cache;
//! a flight outlives no caller. Unlike the engine's own layers, a miss spawns a task (the
//! flight): the cost of a call that runs a tool anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use toolgraph_core::{CallError, CancelFlag, ErrorKind};
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Failure, Layer};
use tracing::Instrument;

use crate::backend::{CacheBackend, CacheError, Entry};
use crate::key::cache_key;

/// What and how long to cache: data, decided once (from `[cache]` and `[tools.NAME]`).
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// How long a result answers, unless its tool says otherwise.
    pub ttl: Duration,
    /// How long a permanent error answers; `None`: errors are never cached.
    pub negative_ttl: Option<Duration>,
    /// How long a process holds a key's lock in a shared backend before another may take
    /// the call over.
    pub lock_lease: Duration,
    /// Per tool name.
    pub tools: HashMap<String, ToolCachePolicy>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(3600),
            negative_ttl: None,
            lock_lease: Duration::from_secs(30),
            tools: HashMap::new(),
        }
    }
}

/// One tool's caching.
#[derive(Debug, Clone, Default)]
pub struct ToolCachePolicy {
    /// False: this tool's calls are never cached.
    pub enabled: bool,
    /// Its own ttl.
    pub ttl: Option<Duration>,
    /// Part of the key: bump it when the tool's behaviour changes.
    pub version: String,
}

/// How long a shared flight's failure tells waiting processes about it.
const FAILURE_NOTICE: Duration = Duration::from_secs(5);

/// Hits and misses seen by one layer (and its clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Calls answered from the backend.
    pub hits: u64,
    /// Calls that joined a flight another call had started.
    pub joined: u64,
    /// Calls that started a flight.
    pub misses: u64,
}

/// The cache and single-flight layer. Clones share the backend and the flights: one per
/// process serves every execution.
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Arc<dyn CacheBackend>,
    policy: CachePolicy,
    flights: Mutex<HashMap<String, Flight>>,
    next_flight: AtomicU64,
    warned: AtomicBool,
    hits: AtomicU64,
    joined: AtomicU64,
    misses: AtomicU64,
}

struct Flight {
    id: u64,
    tx: watch::Sender<Option<Arc<Outcome>>>,
    waiters: usize,
    abort: Option<tokio::task::AbortHandle>,
}

struct Outcome {
    result: Result<Value, Failure>,
    /// The flight ran the tool (rather than finding an entry).
    ran: bool,
}

impl CacheLayer {
    /// A layer over `backend` under `policy`.
    pub fn new(backend: Arc<dyn CacheBackend>, policy: CachePolicy) -> CacheLayer {
        CacheLayer {
            shared: Arc::new(Shared {
                backend,
                policy,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                warned: AtomicBool::new(false),
                hits: AtomicU64::new(0),
                joined: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn CacheBackend> {
        &self.shared.backend
    }

    /// Hits, joins and misses so far.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.shared.hits.load(Ordering::Relaxed),
            joined: self.shared.joined.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
        }
    }

    /// Calls in flight now (distinct keys).
    pub fn flights(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Layer for CacheLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(CacheService {
            shared: self.shared.clone(),
            inner,
        })
    }
}

struct CacheService {
    shared: Arc<Shared>,
    inner: Arc<dyn CallService>,
}

impl CallService for CacheService {
    fn call(&self, request: CallRequest) -> CallFuture {
        let name = request.tool.spec().name.as_str();
        let tool = self.shared.policy.tools.get(name);
        if !request.policy.idempotent || tool.is_some_and(|t| !t.enabled) {
            return self.inner.call(request);
        }
        let version = tool.map_or("", |t| t.version.as_str());
        let key = cache_key(name, version, &request.args);
        let ttl = tool.and_then(|t| t.ttl).unwrap_or(self.shared.policy.ttl);
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        let timeout = request.policy.timeout;
        let work = async move {
            let lookup = Instant::now();
            if let Some(entry) = shared.get(&key).await {
                shared.hits.fetch_add(1, Ordering::Relaxed);
                request.meter.set_cached(lookup);
                return answer(entry);
            }
            let meter = request.meter.clone();
            let (mut waiter, leader) = Shared::join(&shared, key, ttl, request, inner);
            let outcome = waiter.result().await;
            match outcome {
                Some(o) => {
                    if !(leader && o.ran) {
                        meter.set_cached(if leader { lookup } else { Instant::now() });
                    }
                    o.result.clone()
                }
                None => Err(Failure::Call(CallError {
                    kind: ErrorKind::Transient,
                    message: "the shared run of this call ended without a result".into(),
                })),
            }
        };
        // The caller's own deadline bounds everything it waits for: the lookup (a backend
        // that accepts but never answers) as much as the flight.
        match timeout {
            None => Box::pin(work),
            Some(limit) => Box::pin(async move {
                match tokio::time::timeout(limit, work).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::Timeout(limit)),
                }
            }),
        }
    }
}

fn answer(entry: Entry) -> Result<Value, Failure> {
    match entry {
        Entry::Output(v) => Ok(Arc::unwrap_or_clone(v)),
        Entry::Error(e) => Err(Failure::Call(e)),
    }
}

/// A caller waiting for a flight; dropping it leaves the flight (the last one out aborts it).
struct Waiter {
    shared: Arc<Shared>,
    key: String,
    id: u64,
    rx: watch::Receiver<Option<Arc<Outcome>>>,
}

impl Waiter {
    async fn result(&mut self) -> Option<Arc<Outcome>> {
        let got = self.rx.wait_for(Option::is_some).await.ok()?;
        got.clone()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut flights = self.shared.lock();
        let Some(flight) = flights.get_mut(&self.key) else {
            return;
        };
        if flight.id != self.id {
            return;
        }
        flight.waiters = flight.waiters.saturating_sub(1);
        if flight.waiters == 0 {
            if let Some(abort) = flight.abort.take() {
                abort.abort();
            }
            flights.remove(&self.key);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry under `key`; a failing backend or a corrupt entry is a miss (warned once).
    async fn get(&self, key: &str) -> Option<Entry> {
        match self.backend.get(key).await {
            Ok(found) => found,
            Err(e) => {
                self.warn(&e);
                None
            }
        }
    }

    fn warn(&self, e: &CacheError) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = %self.backend.describe(), error = %e, "cache: treated as a miss (warned once)");
        } else {
            tracing::debug!(error = %e, "cache: treated as a miss");
        }
    }

    async fn put(&self, key: &str, tool: &str, entry: &Entry, ttl: Duration) {
        if let Err(e) = self.backend.put(key, tool, entry, ttl).await {
            self.warn(&e);
        }
    }

    /// Joins the flight of `key`, or starts one with `request`. True when this caller
    /// started it.
    fn join(
        this: &Arc<Shared>,
        key: String,
        ttl: Duration,
        request: CallRequest,
        inner: Arc<dyn CallService>,
    ) -> (Waiter, bool) {
        let mut flights = this.lock();
        if let Some(flight) = flights.get_mut(&key) {
            flight.waiters += 1;
            let waiter = Waiter {
                shared: this.clone(),
                key,
                id: flight.id,
                rx: flight.tx.subscribe(),
            };
            drop(flights);
            this.joined.fetch_add(1, Ordering::Relaxed);
            return (waiter, false);
        }
        this.misses.fetch_add(1, Ordering::Relaxed);
        let id = this.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        // The run keeps the leader's task-local context (an embedder's, e.g. the Python
        // package's event-loop bridge).
        // …and the leader's span: the run's attempt spans nest under the leader's call.
        let task = tokio::spawn(toolgraph_engine::layer::carry_context(Box::pin(
            fly(this.clone(), key.clone(), id, ttl, request, inner)
                .instrument(tracing::Span::current()),
        )));
        flights.insert(
            key.clone(),
            Flight {
                id,
                tx,
                waiters: 1,
                abort: Some(task.abort_handle()),
            },
        );
        drop(flights);
        (
            Waiter {
                shared: this.clone(),
                key,
                id,
                rx,
            },
            true,
        )
    }

    /// Ends flight `id` of `key`: its callers get `outcome`.
    fn land(&self, key: &str, id: u64, outcome: Outcome) {
        let mut flights = self.lock();
        if flights.get(key).is_some_and(|f| f.id == id)
            && let Some(flight) = flights.remove(key)
        {
            flight.tx.send_replace(Some(Arc::new(outcome)));
        }
    }
}

/// Raises a flight's own cancel flag when the flight is aborted (a blocking tool learns
/// that nobody waits any more).
struct RaiseOnDrop(CancelFlag);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One flight: look again, coordinate with other processes, run, keep, answer.
async fn fly(
    shared: Arc<Shared>,
    key: String,
    id: u64,
    ttl: Duration,
    mut request: CallRequest,
    inner: Arc<dyn CallService>,
) {
    let mut guard = LandOnDrop {
        shared: shared.clone(),
        key: key.clone(),
        id,
        landed: false,
    };
    let outcome = fly_inner(&shared, &key, ttl, &mut request, inner).await;
    guard.landed = true;
    shared.land(&key, id, outcome);
}

/// Answers a flight's waiters when its task ends without an outcome — a panic in a layer
/// below (or in a tool's `resources`) — so no waiter, and no later identical call that
/// would join the flight, waits for ever. (When the flight was aborted because nobody
/// waits, it is gone from the map and this does nothing.)
struct LandOnDrop {
    shared: Arc<Shared>,
    key: String,
    id: u64,
    landed: bool,
}

impl Drop for LandOnDrop {
    fn drop(&mut self) {
        if !self.landed {
            let failure = Failure::Panic("the shared run of this call panicked".into());
            self.shared.land(
                &self.key,
                self.id,
                Outcome {
                    result: Err(failure),
                    ran: true,
                },
            );
        }
    }
}

/// Gives a cross-process lock back when its flight ends without doing so (aborted because
/// nobody waits, or panicked): the next identical call does not wait out the lease.
struct UnlockOnDrop {
    backend: Arc<dyn CacheBackend>,
    key: String,
    armed: bool,
}

impl Drop for UnlockOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (backend, key) = (self.backend.clone(), std::mem::take(&mut self.key));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = backend.unlock(&key).await;
            });
        }
    }
}

async fn fly_inner(
    shared: &Shared,
    key: &str,
    ttl: Duration,
    request: &mut CallRequest,
    inner: Arc<dyn CallService>,
) -> Outcome {
    let found = |entry: Entry| Outcome {
        result: answer(entry),
        ran: false,
    };
    if let Some(entry) = shared.get(key).await {
        return found(entry);
    }
    let failure_key = format!("{key}!failed");
    let mut locked = false;
    let mut unlock_guard = UnlockOnDrop {
        backend: shared.backend.clone(),
        key: key.to_owned(),
        armed: false,
    };
    if shared.backend.shared() {
        let mut pause = Duration::from_millis(5);
        loop {
            match shared.backend.try_lock(key, shared.policy.lock_lease).await {
                Ok(true) => {
                    locked = true;
                    unlock_guard.armed = true;
                    // A failure an earlier flight announced is not this one's.
                    if let Err(e) = shared.backend.delete(&failure_key).await {
                        shared.warn(&e);
                    }
                    break;
                }
                Ok(false) => {}
                // The backend is down: run here.
                Err(e) => {
                    shared.warn(&e);
                    break;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            if let Some(entry) = shared.get(key).await {
                return found(entry);
            }
            if let Ok(Some(Entry::Error(e))) = shared.backend.get(&failure_key).await {
                return found(Entry::Error(e));
            }
        }
    }
    let tool = request.tool.spec().name.clone();
    let cancel = CancelFlag::new();
    let _raise = RaiseOnDrop(cancel.clone());
    let placeholder = CallRequest::new(request.tool.clone(), Value::Null, "");
    let mut run = std::mem::replace(request, placeholder);
    run.ctx.cancel = cancel;
    // The callers' own deadlines bound the flight; none of them is its.
    run.policy.timeout = None;
    let mut call = inner.call(run);
    let result = if locked {
        // Keep the lock while the call runs, so that no other process takes it over.
        let lease = shared.policy.lock_lease;
        let mut renew = tokio::time::interval_at(Instant::now() + lease / 3, lease / 3);
        loop {
            tokio::select! {
                r = &mut call => break r,
                _ = renew.tick() => match shared.backend.extend_lock(key, lease).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!("cache: the lock of a running call was lost"),
                    Err(e) => shared.warn(&e),
                },
            }
        }
    } else {
        call.await
    };
    match &result {
        Ok(v) => {
            let entry = Entry::Output(Arc::new(v.clone()));
            shared.put(key, &tool, &entry, ttl).await;
        }
        Err(Failure::Tool(e)) if !e.is_transient() && shared.policy.negative_ttl.is_some() => {
            let entry = Entry::Error(CallError {
                kind: ErrorKind::Permanent,
                message: e.message.clone(),
            });
            let negative = shared.policy.negative_ttl.unwrap_or_default();
            shared.put(key, &tool, &entry, negative).await;
        }
        Err(f) if locked => {
            // Not cached, but the processes waiting for this run hear how it ended.
            let entry = Entry::Error(f.clone().into_call_error(1));
            shared
                .put(&failure_key, &tool, &entry, FAILURE_NOTICE)
                .await;
        }
        Err(_) => {}
    }
    unlock_guard.armed = false;
    if locked && let Err(e) = shared.backend.unlock(key).await {
        shared.warn(&e);
    }
    Outcome { result, ran: true }
}
