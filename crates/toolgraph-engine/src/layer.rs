//! How one call is carried out: a stack of small layers around a [`Tool`], tower-style.
//!
//! The scheduler decides *when* a call runs; the layers decide *how*. Each layer is a
//! [`Layer`] value that wraps a [`CallService`] in another, and each lives in its own module
//! with its own tests:
//!
//! - [`durable`]: waits for the call's start to be durable (the write-ahead gate a recorder
//!   asks for) before anything below runs;
//! - [`timeout`]: the call's deadline, over every attempt and every backoff;
//! - [`retry`]: transient failures of idempotent calls, with exponential backoff
//!   (`backon`), honouring a tool's retry-after hint;
//! - [`adaptive`] (only when adaptive concurrency or a rate limit is configured): each
//!   *attempt* waits for its tool's and host's adaptive limit, `Retry-After` pause and token
//!   bucket — it sits below [`retry`], so retries pass through it too;
//! - [`catch_panic`]: a panicking tool becomes a failed call;
//! - [`Invoke`], the innermost service: calls the tool, on the blocking pool if it blocks.
//!
//! Layers added with [`ParallelExecutor::layer`](crate::ParallelExecutor::layer) (a cache,
//! a rate limit, remote dispatch) wrap the timeout, retry and panic layers and sit inside the
//! durability gate, so they see each call once, after its start is durable.
//!
//! Policy is data: a call's timeout, retry policy, idempotency and blocking flag travel in
//! its [`CallRequest`]; a layer with nothing to do for a call passes the inner future through
//! without wrapping it (a no-op call pays for no layer it does not use).
//!
//! Invariant: no layer holds a lock across an await or spawns per call (only [`Invoke`]
//! hands a blocking tool to the blocking pool).

pub mod adaptive;
pub mod catch_panic;
pub mod durable;
pub mod retry;
pub mod timeout;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;
use toolgraph_core::{CallContext, CallError, ErrorKind, RetryPolicy, Tool, ToolError};
use tracing::Instrument;

/// One call, as the layers see it.
pub struct CallRequest {
    /// The call's position in its execution.
    pub position: usize,
    /// The tool that carries it out.
    pub tool: Arc<dyn Tool>,
    /// Its arguments (references already resolved); shared, so a retry does not copy them
    /// until the tool takes them.
    pub args: Arc<Value>,
    /// What the tool learns about the call.
    pub ctx: CallContext,
    /// How the call may be carried out.
    pub policy: CallPolicy,
    /// Futures that must resolve before the call starts (a recorder's write-ahead).
    pub gates: Vec<BoxFuture<'static, ()>>,
    /// Attempts made and when the first began, shared with the scheduler.
    pub meter: Arc<Meter>,
    /// The call's shared slots, held until its tool is done — on the blocking pool, until
    /// the thread returns, even when the call timed out or was cancelled before.
    pub slots: Option<Arc<crate::limiter::Permit>>,
}

impl CallRequest {
    /// A request for one call of `tool` (tests, direct use): no timeout, no retry, no gate.
    pub fn new(tool: Arc<dyn Tool>, args: Value, call_id: &str) -> Self {
        let idempotent = tool.is_idempotent(&args);
        let blocking = tool.spec().traits.blocking;
        CallRequest {
            position: 0,
            tool,
            args: Arc::new(args),
            ctx: CallContext::detached(call_id),
            policy: CallPolicy {
                timeout: None,
                retry: RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                },
                idempotent,
                blocking,
            },
            gates: Vec::new(),
            meter: Arc::new(Meter::default()),
            slots: None,
        }
    }
}

/// How a call may be carried out: data, decided once when the call is admitted.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    /// The call's deadline over all its attempts.
    pub timeout: Option<Duration>,
    /// Retries of transient failures (only when `idempotent`).
    pub retry: RetryPolicy,
    /// Safe to run twice.
    pub idempotent: bool,
    /// Runs on the blocking pool.
    pub blocking: bool,
}

/// Attempts made, when the first began, which worker process ran the call, and whether a
/// cache answered it — shared by the layers and the scheduler, which reads it when the call
/// ends.
///
/// A layer that carries a call out elsewhere (remote dispatch) reports what happened there:
/// [`set_worker`](Meter::set_worker) names the worker that ran it, and
/// [`note_attempts`](Meter::note_attempts) counts the attempts the worker made.
#[derive(Debug, Default)]
pub struct Meter {
    attempts: AtomicU32,
    first_start: OnceLock<Instant>,
    /// Set by the timeout layer when the call's deadline passed, before it drops the work.
    timed_out: AtomicBool,
    /// Set at most a few times per call, read once when it ends: never held across an
    /// await, and never taken by a call that runs in this process.
    worker: Mutex<Option<Arc<str>>>,
    /// Set by a layer that answered the call without running its tool (a cache hit, or the
    /// result of an identical call in flight).
    cached: AtomicBool,
}

impl Meter {
    /// Counts an attempt beginning now; returns its number (1 = first).
    pub fn begin_attempt(&self) -> u32 {
        let _ = self.first_start.set(Instant::now());
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Attempts begun so far.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// When the first attempt began, if one did.
    pub fn first_start(&self) -> Option<Instant> {
        self.first_start.get().copied()
    }

    /// Raises the attempts counted to at least `attempts`: attempts made elsewhere (by a
    /// remote worker). Never lowers the count, and marks no start (a layer that dispatches
    /// a call calls [`begin_attempt`](Meter::begin_attempt) when it sends it).
    pub fn note_attempts(&self, attempts: u32) {
        self.attempts.fetch_max(attempts, Ordering::Relaxed);
    }

    /// Marks the call as timed out (the timeout layer, just before it drops the work), so
    /// that a layer below whose attempt is dropped can tell a timeout from a cancellation.
    pub fn note_timeout(&self) {
        self.timed_out.store(true, Ordering::Release);
    }

    /// Whether the call's deadline passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// Records the id of the worker process that ran the call; the last one set wins (a
    /// call sent again to another worker reports the one that ended it).
    pub fn set_worker(&self, worker: &str) {
        let worker: Arc<str> = Arc::from(worker);
        match self.worker.lock() {
            Ok(mut slot) => *slot = Some(worker),
            Err(poisoned) => *poisoned.into_inner() = Some(worker),
        }
    }

    /// Marks the call as answered without running its tool (a cache hit, or the result of
    /// an identical call in flight), the answer having been looked up from `started`: the
    /// call's start is `started` unless an attempt began before, and no attempt is counted,
    /// so its run time is the lookup's, not a tool's.
    pub fn set_cached(&self, started: Instant) {
        let _ = self.first_start.set(started);
        self.cached.store(true, Ordering::Relaxed);
    }

    /// True when a layer answered the call without running its tool.
    pub fn cached(&self) -> bool {
        self.cached.load(Ordering::Relaxed)
    }

    /// The worker process that ran the call; `None` when it ran in this process.
    pub fn worker(&self) -> Option<Arc<str>> {
        match self.worker.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Why a call (or one attempt) failed, before it becomes a [`CallError`].
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The tool failed (transient or not, with its retry-after hint).
    Tool(ToolError),
    /// The tool panicked.
    Panic(String),
    /// The call ran out of time.
    Timeout(Duration),
    /// A layer refused or failed the call for its own reason.
    Call(CallError),
}

impl Failure {
    /// The error a result reports; `attempts` > 1 is mentioned.
    pub fn into_call_error(self, attempts: u32) -> CallError {
        match self {
            Failure::Tool(e) => {
                let kind = if e.is_transient() {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                let message = if attempts > 1 {
                    format!("{} (after {attempts} attempts)", e.message)
                } else {
                    e.message
                };
                CallError { kind, message }
            }
            Failure::Panic(m) => CallError {
                kind: ErrorKind::Panic,
                message: format!("tool panicked: {m}"),
            },
            Failure::Timeout(limit) => CallError {
                kind: ErrorKind::Timeout,
                message: format!("timed out after {} ms", limit.as_millis()),
            },
            Failure::Call(e) => e,
        }
    }
}

/// What a service returns for a call.
pub type CallFuture = BoxFuture<'static, Result<Value, Failure>>;

/// Carries out calls. Dropping the returned future cancels the call.
pub trait CallService: Send + Sync + 'static {
    /// Carries out one call.
    fn call(&self, request: CallRequest) -> CallFuture;
}

/// Wraps a service in another.
pub trait Layer: Send + Sync + 'static {
    /// The service that carries out calls through this layer, then `inner`.
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService>;
}

/// The innermost service: calls the tool (on the blocking pool when it blocks).
pub struct Invoke;

impl CallService for Invoke {
    fn call(&self, request: CallRequest) -> CallFuture {
        let CallRequest {
            tool,
            args,
            ctx,
            policy,
            meter,
            slots,
            ..
        } = request;
        let number = meter.begin_attempt();
        let span = crate::trace::attempt_span(number);
        if span.is_disabled() {
            return invoke(tool, args, ctx, policy.blocking, slots);
        }
        // Traced: the same work inside the attempt's span, which records how it ended.
        let work = span.in_scope(|| invoke(tool, args, ctx, policy.blocking, slots));
        let ended = span.clone();
        Box::pin(
            async move {
                let result = work.await;
                crate::trace::record_attempt_end(&ended, &result);
                result
            }
            .instrument(span),
        )
    }
}

/// Calls `tool` (on the blocking pool when `blocking`), holding `slots` until it returns.
fn invoke(
    tool: Arc<dyn Tool>,
    args: Arc<Value>,
    ctx: CallContext,
    blocking: bool,
    slots: Option<Arc<crate::limiter::Permit>>,
) -> CallFuture {
    if blocking {
        let handle = tokio::runtime::Handle::current();
        // The tool runs on another thread: its own spans keep the attempt's as parent.
        let current = tracing::Span::current();
        return Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || {
                let _slots = slots;
                let _entered = current.enter();
                handle.block_on(tool.call(args, ctx))
            });
            match work.await {
                Ok(r) => r.map_err(Failure::Tool),
                Err(e) if e.is_panic() => {
                    Err(Failure::Panic(catch_panic::panic_message(e.into_panic())))
                }
                Err(e) => Err(Failure::Panic(e.to_string())),
            }
        });
    }
    Box::pin(async move {
        let _slots = slots;
        tool.call(args, ctx).await.map_err(Failure::Tool)
    })
}

/// What an embedder hooks in so that work a layer *spawns* for a call (the cache's shared
/// run) keeps the task-local context the call's own future has — the Python package's
/// bridge to the caller's event loop lives in a tokio task-local, which `tokio::spawn`
/// does not carry.
pub type ContextHook = dyn Fn(BoxFuture<'static, ()>) -> BoxFuture<'static, ()> + Send + Sync;

static CONTEXT_HOOK: OnceLock<Box<ContextHook>> = OnceLock::new();

/// Installs the process's [`ContextHook`] (once; later calls return false).
pub fn set_context_hook(hook: Box<ContextHook>) -> bool {
    CONTEXT_HOOK.set(hook).is_ok()
}

/// `work`, wrapped by the context hook when one is installed. A layer that spawns work for
/// a call calls this in the call's own future (where the context is) and spawns the result.
pub fn carry_context(work: BoxFuture<'static, ()>) -> BoxFuture<'static, ()> {
    match CONTEXT_HOOK.get() {
        Some(hook) => hook(work),
        None => work,
    }
}

/// The standard stack around [`Invoke`]: durability gate, then `extra` layers (first =
/// outermost), then timeout, retry and panic catching.
pub fn stack(extra: &[Arc<dyn Layer>]) -> Arc<dyn CallService> {
    stack_with(extra, &[])
}

/// [`stack`] with `per_attempt` layers (first = outermost) between retry and panic
/// catching: they see every attempt, retries included (the adaptive limit and rate limits).
pub fn stack_with(
    extra: &[Arc<dyn Layer>],
    per_attempt: &[Arc<dyn Layer>],
) -> Arc<dyn CallService> {
    let mut service: Arc<dyn CallService> = Arc::new(Invoke);
    service = catch_panic::CatchPanicLayer.layer(service);
    for layer in per_attempt.iter().rev() {
        service = layer.layer(service);
    }
    service = retry::RetryLayer.layer(service);
    service = timeout::TimeoutLayer.layer(service);
    for layer in extra.iter().rev() {
        service = layer.layer(service);
    }
    if !extra.is_empty() {
        // A panic in an added layer fails its call, not the execution.
        service = catch_panic::CatchPanicLayer.layer(service);
    }
    durable::DurableLayer.layer(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_names_no_worker_until_one_is_set_and_the_last_set_wins() {
        let meter = Meter::default();
        assert_eq!(meter.worker(), None);
        meter.set_worker("w-1");
        meter.set_worker("w-2");
        assert_eq!(meter.worker().as_deref(), Some("w-2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_call_counts_no_attempt_and_starts_at_its_lookup() {
        let meter = Meter::default();
        assert!(!meter.cached());
        let lookup = Instant::now();
        tokio::time::advance(Duration::from_millis(3)).await;
        meter.set_cached(lookup);
        assert!(meter.cached());
        assert_eq!(meter.attempts(), 0);
        assert_eq!(meter.first_start(), Some(lookup));
    }

    #[tokio::test(start_paused = true)]
    async fn noted_attempts_raise_the_count_and_never_lower_it() {
        let meter = Meter::default();
        assert_eq!(meter.begin_attempt(), 1);
        meter.note_attempts(3);
        assert_eq!(meter.attempts(), 3);
        meter.note_attempts(2);
        assert_eq!(meter.attempts(), 3, "a lower count is ignored");
        assert_eq!(
            meter.begin_attempt(),
            4,
            "counting goes on from the raised count"
        );
    }
}
