//! Adaptive concurrency and rate limits, per tool and per host, around **each attempt**.
//!
//! A [`Throttle`] holds, once per executor (so once per process for every execution that
//! shares it), a state per *key*: `tool:NAME` for each tool, and each `host:…` resource a
//! call declares (what `http_fetch` declares for its URL's host). [`AdaptiveLayer`] sits
//! *below* the retry layer (`timeout ▸ retry ▸ adaptive ▸ catch_panic ▸ tool`), so every
//! attempt — the first and each retry — passes through it, in this order:
//!
//! 1. **adaptive slot**: when `[executor.adaptive] enabled`, the attempt takes a slot of
//!    each of its keys' adaptive limits (keys in name order, so two calls never wait on
//!    each other crosswise);
//! 2. **`Retry-After` pause**: a key a server asked to wait (`ToolError::retry_after_ms`)
//!    sends nothing until the pause ends — every execution of the process waits with it;
//! 3. **token bucket**: a key with a rate limit (`per_tool_rate_limits`,
//!    `per_resource_rate_limits`) lets the attempt go when a token is there (`governor`'s
//!    GCRA on tokio's clock, so paused-clock tests are exact).
//!
//! All of it happens before the tool's attempt begins (`Meter::begin_attempt` runs in
//! `Invoke` after these waits), so the first attempt's waiting counts as the call's queue
//! time; the waits are plain awaits, so the call's timeout (the layer above) and its
//! cancellation (dropping the future) end them, and a slot taken is given back when the
//! attempt's future is dropped.
//!
//! **The algorithm: AIMD** (additive increase, multiplicative decrease — TCP's congestion
//! control) rather than a gradient algorithm (Netflix's Gradient2 or Vegas). The signals
//! here are explicit: a 429 or 503 (transient errors), a transient failure or a timeout
//! *says* the service is overloaded, while latency — the gradient algorithms' only signal —
//! is noisy for tools (a search, a page fetch and an LLM call vary by 10× from one request
//! to the next for reasons unrelated to load), and would shrink limits on slow-but-healthy
//! services. AIMD needs no latency baseline, converges to a fair share when several
//! executions share a service, and is easy to bound: the limit starts at `initial_limit`,
//! grows by one per success while no overload has been seen (slow start, doubling per round
//! trip), then by one per limit's worth of successes; on overload it is multiplied by
//! `decrease_factor`. Only one decrease per round: an overload reported by an attempt that
//! began before the last decrease says nothing new (the attempts sent before a cut all
//! fail together) and is ignored. Growth needs the limit to be used (at least half of it in
//! flight), so an idle key does not climb to its ceiling on no evidence.
//!
//! Invariants: a key's limit never exceeds its ceiling (the tool's or host's configured
//! limit, else `max_parallel_calls`) and never drops below 1; attempts in flight never
//! exceed the limit as it was when each started (a shrink takes effect as attempts end:
//! their slots are destroyed instead of returned); every slot taken is returned or
//! destroyed exactly once; no lock is held across an await.

mod aimd;
mod bucket;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::Clock;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use toolgraph_core::{ParallelExecutorConfig, RateLimit, Tool};

pub use aimd::Aimd;
use bucket::{Bucket, TokioClock, quota};

use super::{CallFuture, CallRequest, CallService, Failure, Layer, Meter};

/// One key's adaptive limit, as the metrics and events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdaptiveLimit {
    /// `tool:NAME` or the resource key (`host:api.example.com`).
    pub key: String,
    /// The limit in force.
    pub limit: usize,
    /// Its ceiling (the configured limit).
    pub ceiling: usize,
    /// Attempts running under it now.
    pub in_flight: usize,
}

/// The process-wide state of adaptive limits, `Retry-After` pauses and token buckets:
/// one per executor, shared by its clones and every execution they run.
#[derive(Clone)]
pub struct Throttle {
    state: Arc<State>,
}

struct State {
    config: Mutex<Arc<ParallelExecutorConfig>>,
    keys: Mutex<HashMap<String, Arc<Key>>>,
    /// Bumped whenever a key's limit changes (so watchers need not compare every key).
    version: AtomicU64,
}

impl Throttle {
    /// A throttle under `config` (its `adaptive` section and rate limits).
    pub fn new(config: Arc<ParallelExecutorConfig>) -> Self {
        Throttle {
            state: Arc::new(State {
                config: Mutex::new(config),
                keys: Mutex::new(HashMap::new()),
                version: AtomicU64::new(0),
            }),
        }
    }

    /// Whether an executor built with `config` needs a throttle at all.
    pub fn wanted(config: &ParallelExecutorConfig) -> bool {
        config.adaptive.enabled
            || !config.per_tool_rate_limits.is_empty()
            || !config.per_resource_rate_limits.is_empty()
    }

    /// Applies a new configuration: ceilings and the decrease factor at each key's next
    /// attempt. Token buckets keep the rate they were made with; switching adaptive
    /// concurrency on or off takes a new executor.
    pub fn set_config(&self, config: Arc<ParallelExecutorConfig>) {
        *lock(&self.state.config) = config;
    }

    /// The adaptive limit of every key seen so far, by key.
    pub fn limits(&self) -> Vec<AdaptiveLimit> {
        let keys: Vec<Arc<Key>> = lock(&self.state.keys).values().cloned().collect();
        let mut out: Vec<AdaptiveLimit> = keys
            .iter()
            .filter(|k| k.adaptive)
            .map(|k| {
                let c = lock(&k.control);
                AdaptiveLimit {
                    key: k.name.to_string(),
                    limit: c.aimd.limit(),
                    ceiling: c.aimd.ceiling(),
                    in_flight: c.in_flight,
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// A number that changes whenever a limit changes.
    pub fn version(&self) -> u64 {
        self.state.version.load(Ordering::Acquire)
    }

    /// Pauses `key` (`tool:NAME`, `host:…`) for `ms`, capped by `adaptive.max_retry_after_ms`:
    /// attempts through it wait until then. A shorter pause never shortens a longer one.
    /// A key not seen yet is made (under `max_parallel_calls` until an attempt names its
    /// ceiling); with adaptive concurrency off, only a key with a rate limit can be paused.
    pub fn pause(&self, key: &str, ms: u64) {
        let config = lock(&self.state.config).clone();
        if let Some(k) = self.key(key, &config, config.max_parallel_calls) {
            k.pause(ms.min(config.adaptive.max_retry_after_ms));
        }
    }

    /// The keys an attempt of `tool` with `args` passes through, in name order.
    fn keys_for(&self, tool: &dyn Tool, args: &serde_json::Value) -> Vec<Arc<Key>> {
        let config = lock(&self.state.config).clone();
        let spec = tool.spec();
        let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
        let tool_ceiling = config
            .per_tool_parallel_limits
            .get(&spec.name)
            .copied()
            .or(spec.traits.max_concurrency)
            .unwrap_or(config.max_parallel_calls)
            .min(config.max_parallel_calls);
        wanted.insert(format!("tool:{}", spec.name), tool_ceiling);
        for access in tool.resources(args) {
            if access.key.starts_with("host:") {
                let ceiling = config
                    .resource_limit(&access.key)
                    .unwrap_or(config.max_parallel_calls)
                    .min(config.max_parallel_calls);
                wanted.insert(access.key, ceiling);
            }
        }
        wanted
            .into_iter()
            .filter_map(|(key, ceiling)| self.key(&key, &config, ceiling))
            .collect()
    }

    /// The state of `name`, made on first use; `None` when nothing applies to it.
    fn key(&self, name: &str, config: &ParallelExecutorConfig, ceiling: usize) -> Option<Arc<Key>> {
        let mut keys = lock(&self.state.keys);
        if let Some(k) = keys.get(name) {
            let k = k.clone();
            drop(keys);
            k.retune(config, ceiling, &self.state.version);
            return Some(k);
        }
        let rate = match name.strip_prefix("tool:") {
            Some(tool) => config.per_tool_rate_limits.get(tool).copied(),
            None => config.resource_rate_limit(name),
        };
        let adaptive = config.adaptive.enabled;
        if !adaptive && rate.is_none() {
            return None;
        }
        let key = Arc::new(Key::new(name, config, ceiling, adaptive, rate));
        keys.insert(name.to_owned(), key.clone());
        Some(key)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One key's state.
struct Key {
    name: Arc<str>,
    /// Whether the adaptive limit applies (else only the pause and the bucket).
    adaptive: bool,
    /// Free slots of the adaptive limit.
    slots: Semaphore,
    control: Mutex<Control>,
    paused_until: Mutex<Option<Instant>>,
    bucket: Option<Bucket>,
}

/// The adaptive limit and the slots it has handed out.
struct Control {
    aimd: Aimd,
    /// Slots in existence (free in the semaphore or held by attempts): the limit, once
    /// every debt is paid.
    granted: usize,
    /// Held slots to destroy when they come back (the limit shrank below what is held).
    debt: usize,
    in_flight: usize,
}

impl Key {
    fn new(
        name: &str,
        config: &ParallelExecutorConfig,
        ceiling: usize,
        adaptive: bool,
        rate: Option<RateLimit>,
    ) -> Self {
        let aimd = Aimd::new(
            config.adaptive.initial_limit,
            ceiling,
            config.adaptive.decrease_factor,
        );
        let granted = aimd.limit();
        Key {
            name: Arc::from(name),
            adaptive,
            slots: Semaphore::new(granted),
            control: Mutex::new(Control {
                aimd,
                granted,
                debt: 0,
                in_flight: 0,
            }),
            paused_until: Mutex::new(None),
            bucket: rate
                .and_then(quota)
                .map(|q| RateLimiter::direct_with_clock(q, TokioClock)),
        }
    }

    /// Follows a configuration change.
    fn retune(&self, config: &ParallelExecutorConfig, ceiling: usize, version: &AtomicU64) {
        if !self.adaptive {
            return;
        }
        let mut c = lock(&self.control);
        if c.aimd.ceiling() == ceiling && c.aimd.factor() == config.adaptive.decrease_factor {
            return;
        }
        let before = c.aimd.limit();
        c.aimd.set_ceiling(ceiling);
        c.aimd.set_factor(config.adaptive.decrease_factor);
        self.settle(&mut c, before, version);
    }

    /// Brings the slots in existence to the limit after it changed from `before`.
    fn settle(&self, c: &mut Control, before: usize, version: &AtomicU64) {
        let target = c.aimd.limit();
        if target > c.granted {
            let more = target - c.granted;
            let paid = more.min(c.debt);
            c.debt -= paid;
            self.slots.add_permits(more - paid);
        } else if target < c.granted {
            let fewer = c.granted - target;
            let gone = self.slots.forget_permits(fewer);
            c.debt += fewer - gone;
        }
        c.granted = target;
        if target != before {
            version.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Waits for a slot of the adaptive limit; returns the decrease epoch it began in.
    async fn acquire(&self) -> u64 {
        // Slots are returned by `release`, never by the permit; the semaphore is never
        // closed, so the error case cannot happen.
        if let Ok(permit) = self.slots.acquire().await {
            permit.forget();
        }
        let mut c = lock(&self.control);
        c.in_flight += 1;
        c.aimd.epoch()
    }

    /// An attempt that held a slot since `epoch` ended with `signal`.
    fn release(&self, epoch: u64, signal: Signal, version: &AtomicU64) {
        let mut c = lock(&self.control);
        let before = c.aimd.limit();
        match signal {
            Signal::Success => {
                let in_flight = c.in_flight;
                c.aimd.on_success(in_flight);
            }
            Signal::Overload => {
                c.aimd.on_overload(epoch);
            }
            Signal::Neutral => {}
        }
        c.in_flight = c.in_flight.saturating_sub(1);
        if c.debt > 0 {
            c.debt -= 1;
        } else {
            self.slots.add_permits(1);
        }
        self.settle(&mut c, before, version);
    }

    fn pause(&self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        let mut p = lock(&self.paused_until);
        if p.is_none_or(|at| at < until) {
            *p = Some(until);
        }
    }

    /// Waits while the key is paused (a pause may be lengthened meanwhile).
    async fn wait_pause(&self) {
        loop {
            let until = *lock(&self.paused_until);
            match until {
                Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
                _ => return,
            }
        }
    }

    /// Waits for a token of the key's bucket, if it has one.
    async fn wait_token(&self) {
        let Some(bucket) = &self.bucket else { return };
        while let Err(not_until) = bucket.check() {
            tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
        }
    }
}

/// Tells an execution's sinks, after each `CallFinished`, which adaptive limits changed
/// since they last heard (all of them the first time).
pub(crate) struct LimitWatch<'s> {
    throttle: &'s Throttle,
    sinks: Vec<&'s dyn toolgraph_core::EventSink>,
    seen: Mutex<(Option<u64>, HashMap<String, usize>)>,
}

impl<'s> LimitWatch<'s> {
    pub(crate) fn new(
        throttle: &'s Throttle,
        sinks: Vec<&'s dyn toolgraph_core::EventSink>,
    ) -> Self {
        LimitWatch {
            throttle,
            sinks,
            seen: Mutex::new((None, HashMap::new())),
        }
    }
}

impl toolgraph_core::EventSink for LimitWatch<'_> {
    fn on_event(&self, event: &toolgraph_core::Event) {
        if !matches!(event, toolgraph_core::Event::CallFinished { .. }) {
            return;
        }
        let version = self.throttle.version();
        let changed: Vec<toolgraph_core::Event> = {
            let mut seen = lock(&self.seen);
            if seen.0 == Some(version) {
                return;
            }
            seen.0 = Some(version);
            let mut changed = Vec::new();
            for l in self.throttle.limits() {
                if seen.1.get(&l.key) != Some(&l.limit) {
                    seen.1.insert(l.key.clone(), l.limit);
                    changed.push(toolgraph_core::Event::LimitChanged {
                        key: l.key,
                        limit: l.limit,
                    });
                }
            }
            changed
        };
        for event in &changed {
            for sink in &self.sinks {
                sink.on_event(event);
            }
        }
    }
}

/// What an attempt's end says about the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// It worked.
    Success,
    /// 429, 503, another transient failure, or a timeout.
    Overload,
    /// Nothing about load (a permanent error, a panic, a cancellation).
    Neutral,
}

impl Signal {
    fn of(result: &Result<serde_json::Value, Failure>) -> Self {
        match result {
            Ok(_) => Signal::Success,
            Err(Failure::Tool(e)) if e.is_transient() => Signal::Overload,
            Err(Failure::Timeout(_)) => Signal::Overload,
            Err(_) => Signal::Neutral,
        }
    }
}

/// The slots one attempt holds; dropped unfinished (the call timed out or was cancelled),
/// it gives them back — as an overload when the call's deadline passed.
struct Held {
    slots: Vec<(Arc<Key>, u64)>,
    meter: Arc<Meter>,
    state: Arc<State>,
}

impl Held {
    fn finish(&mut self, signal: Signal) {
        for (key, epoch) in self.slots.drain(..) {
            key.release(epoch, signal, &self.state.version);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            let signal = if self.meter.timed_out() {
                Signal::Overload
            } else {
                Signal::Neutral
            };
            self.finish(signal);
        }
    }
}

/// Puts every attempt through its keys' adaptive limits, pauses and token buckets.
pub struct AdaptiveLayer {
    throttle: Throttle,
}

impl AdaptiveLayer {
    /// The layer over `throttle`'s state.
    pub fn new(throttle: Throttle) -> Self {
        AdaptiveLayer { throttle }
    }
}

impl Layer for AdaptiveLayer {
    fn layer(&self, inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        Arc::new(Adaptive {
            inner,
            throttle: self.throttle.clone(),
        })
    }
}

/// The service of [`AdaptiveLayer`].
pub struct Adaptive {
    inner: Arc<dyn CallService>,
    throttle: Throttle,
}

impl CallService for Adaptive {
    fn call(&self, request: CallRequest) -> CallFuture {
        let keys = self
            .throttle
            .keys_for(request.tool.as_ref(), request.args.as_ref());
        if keys.is_empty() {
            return self.inner.call(request);
        }
        let inner = self.inner.clone();
        let state = self.throttle.state.clone();
        Box::pin(async move {
            let mut held = Held {
                slots: Vec::with_capacity(keys.len()),
                meter: request.meter.clone(),
                state,
            };
            // A paused key is waited out before any slot is taken, so an attempt to a
            // host that said Retry-After holds no slot of its tool meanwhile (calls to other
            // hosts go on); a pause set while it waited for its slots is waited out after.
            let asked = Instant::now();
            for key in &keys {
                key.wait_pause().await;
            }
            for key in keys.iter().filter(|k| k.adaptive) {
                let epoch = key.acquire().await;
                held.slots.push((key.clone(), epoch));
            }
            for key in &keys {
                key.wait_pause().await;
            }
            for key in &keys {
                key.wait_token().await;
            }
            if Instant::now() > asked {
                crate::trace::note_wait("adaptive");
            }
            let result = inner.call(request).await;
            held.finish(Signal::of(&result));
            if let Err(Failure::Tool(e)) = &result
                && let Some(ms) = e.retry_after_ms
            {
                let cap = lock(&held.state.config).adaptive.max_retry_after_ms;
                for key in &keys {
                    key.pause(ms.min(cap));
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests;
