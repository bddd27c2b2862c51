//! The shared limiter: one per [`ParallelExecutor`](crate::ParallelExecutor) and every clone
//! of it, so a limit means the same thing whether one batch runs or fifty.
//!
//! It counts running calls per key — the global limit, each tool, each resource key with a
//! limit (`host:…` and `mcpserver:…` are resource kinds), and the CPU and memory budgets —
//! across every execution that shares it. Each execution's scheduler keeps its own
//! counters too (the execution's own limits, layered under these); a call it admits then
//! asks here. A call that fits is granted a [`Permit`] at once — no await, one uncontended
//! lock — which frees its slots when dropped. A call that does not fit waits in a queue of
//! the limit that blocks it (never rescanned) and is handed its permit when that limit frees
//! a slot.
//!
//! **Fairness across executions.** A freed slot goes to the waiting call with the earliest
//! *virtual deadline*: the instant it began waiting, moved earlier by [`PRIORITY_STEP`] per
//! priority level (priorities beyond ±[`PRIORITY_CAP`] count as the cap) and by its
//! remaining critical path in milliseconds (at most [`RANK_CAP`]). Priority and the
//! critical path therefore still decide who goes first, across executions too, but their
//! advantage is bounded: a call can be overtaken only by calls that began waiting less than
//! `2 × PRIORITY_CAP × PRIORITY_STEP + RANK_CAP` after it, so no execution starves while
//! slots keep freeing. Ties go to the earlier arrival.
//!
//! Invariants: no key's count ever exceeds its limit; every permit granted is released
//! exactly once (dropping a permit, or a waiter that went away before its grant, gives the
//! slots back); nothing here awaits while holding the lock.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use toolgraph_core::{ParallelExecutorConfig, ResourceCost, ToolSet};

/// One priority level is worth this much waiting time.
pub const PRIORITY_STEP: Duration = Duration::from_secs(1);
/// Priorities beyond ± this count as ± this in the fairness rule.
pub const PRIORITY_CAP: i64 = 10;
/// The remaining critical path counts for at most this much waiting time.
pub const RANK_CAP: Duration = Duration::from_secs(10);

/// What a call asks the limiter for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The tool's position in the executor's tool set.
    pub tool: usize,
    /// Every resource key the call touches (only keys with a limit are counted).
    pub resources: &'a [String],
    /// The call's declared cost.
    pub cost: ResourceCost,
    /// The call's priority.
    pub priority: i64,
    /// Its remaining critical path (the scheduler's estimate, in ms).
    pub rank: f64,
}

/// The answer to a [`Request`].
pub(crate) enum Acquire {
    /// The slots are the caller's until the permit drops.
    Granted(Permit),
    /// The call waits; the permit arrives through this when its slots free up.
    Waiting(Waiting),
    /// The call can never fit (it costs more than a whole budget).
    Never(String),
}

/// A call waiting for its slots: resolves to its permit (or to an error when the limits
/// changed so that it can never run). Dropping it withdraws the call from the queue.
pub(crate) struct Waiting {
    rx: oneshot::Receiver<Permit>,
    _withdraw: Withdraw,
}

impl std::future::Future for Waiting {
    type Output = Result<Permit, oneshot::error::RecvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx)
    }
}

/// Removes a waiter that went away (its execution cancelled or dropped) from the queue.
struct Withdraw {
    shared: Arc<Shared>,
    seq: u64,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        // A no-op once the permit was sent (the waiter left the queue then).
        self.shared.lock().waiters.remove(&self.seq);
    }
}

/// Slots held by one running call; dropping it frees them and hands them on.
pub struct Permit {
    shared: Option<Arc<Shared>>,
    held: Held,
}

/// Which counters a permit incremented (limits may change while it is held).
#[derive(Debug, Default)]
struct Held {
    tool: usize,
    resources: Vec<String>,
    cost: ResourceCost,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let held = std::mem::take(&mut self.held);
            shared.release_and_grant(held);
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("held", &self.held).finish()
    }
}

/// Peak running calls per key, over the limiter's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LimiterPeaks {
    /// Across every call.
    pub global: usize,
    /// Per tool name (tools that ran at least once).
    pub tools: BTreeMap<String, usize>,
    /// Per resource key with a limit.
    pub resources: BTreeMap<String, usize>,
}

/// One limit and what runs under it now (see [`Limiter::usage`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LimitUsage {
    /// `global`, `tool:NAME`, or a resource key (`host:api.example.com`, `mcpserver:fs`).
    pub key: String,
    /// Calls holding a slot of it now.
    pub in_flight: usize,
    /// Its size.
    pub limit: usize,
}

/// The limits in force, derived from a configuration: the shared limiter's and each
/// execution's own, rebuilt when the configuration changes.
pub(crate) struct Limits {
    pub(crate) config: Arc<ParallelExecutorConfig>,
    pub(crate) global: usize,
    pub(crate) per_tool: Vec<Option<usize>>,
}

impl Limits {
    pub(crate) fn new(config: Arc<ParallelExecutorConfig>, tools: &ToolSet) -> Self {
        let global = if config.enable_parallel {
            config.max_parallel_calls.max(1)
        } else {
            1
        };
        let per_tool = tools
            .entries()
            .iter()
            .map(|e| {
                let spec = e.tool.spec();
                config
                    .per_tool_parallel_limits
                    .get(&spec.name)
                    .copied()
                    .or(spec.traits.max_concurrency)
            })
            .collect();
        Limits {
            config,
            global,
            per_tool,
        }
    }
}

/// What runs now under a set of [`Limits`], borrowed for one check.
pub(crate) struct InUse<'a> {
    pub(crate) tool: &'a [usize],
    pub(crate) resources: &'a HashMap<String, usize>,
    pub(crate) cpu: f64,
    pub(crate) memory_mb: u64,
}

/// Why a call does not fit beside what runs (the global limit aside).
pub(crate) enum Misfit {
    Tool(usize),
    Resource(String),
    Budget,
    /// It can never fit: it costs more than a whole budget.
    Never(String),
}

impl Limits {
    /// Whether a call of `tool` touching `resources` at `cost` fits beside `in_use`.
    pub(crate) fn misfit(
        &self,
        in_use: &InUse<'_>,
        tool: usize,
        resources: &[String],
        cost: ResourceCost,
    ) -> Option<Misfit> {
        if let Some(limit) = self.per_tool.get(tool).copied().flatten()
            && in_use.tool.get(tool).copied().unwrap_or(0) >= limit
        {
            return Some(Misfit::Tool(tool));
        }
        for key in resources {
            if let Some(limit) = self.config.resource_limit(key)
                && in_use.resources.get(key).copied().unwrap_or(0) >= limit
            {
                return Some(Misfit::Resource(key.clone()));
            }
        }
        if let Some(cpu) = self.config.resource_limit_cpu {
            if cost.cpu > cpu {
                return Some(Misfit::Never(format!(
                    "declares {} CPU units but resource_limit_cpu is {cpu}",
                    cost.cpu
                )));
            }
            if in_use.cpu + cost.cpu > cpu + 1e-9 {
                return Some(Misfit::Budget);
            }
        }
        if let Some(mem) = self.config.resource_limit_memory_mb {
            if cost.memory_mb > mem {
                return Some(Misfit::Never(format!(
                    "declares {} MB but resource_limit_memory_mb is {mem}",
                    cost.memory_mb
                )));
            }
            if in_use.memory_mb + cost.memory_mb > mem {
                return Some(Misfit::Budget);
            }
        }
        None
    }
}

/// The shared limits, their counters and their waiting calls.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A waiting call's place: earliest virtual deadline first, then earliest arrival.
#[derive(Debug, Clone)]
struct Slot {
    deadline: i128,
    seq: u64,
    /// The limit whose freed slot moved this call to the ready heap: if the call turns out
    /// gone or blocked elsewhere, that slot is handed to the next waiter of the limit.
    woken_by: Option<Wake>,
}

/// A limit that wakes one waiter at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wake {
    Tool(usize),
    Resource(String),
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    // A max-heap pops the greatest: the earliest deadline must compare greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .cmp(&self.deadline)
            .then(other.seq.cmp(&self.seq))
    }
}

struct Waiter {
    tool: usize,
    resources: Vec<String>,
    cost: ResourceCost,
    reply: oneshot::Sender<Permit>,
}

enum Blocked {
    Global,
    Tool(usize),
    Resource(String),
    Budget,
    Never(String),
}

struct State {
    limits: Limits,
    tool_names: Vec<String>,
    in_flight: usize,
    tool_in_flight: Vec<usize>,
    resource_in_flight: HashMap<String, usize>,
    cpu_used: f64,
    memory_used: u64,
    peak_global: usize,
    peak_tool: Vec<usize>,
    peak_resource: HashMap<String, usize>,
    waiters: HashMap<u64, Waiter>,
    ready: BinaryHeap<Slot>,
    parked_tool: Vec<BinaryHeap<Slot>>,
    parked_resource: HashMap<String, BinaryHeap<Slot>>,
    parked_budget: BinaryHeap<Slot>,
    seq: u64,
}

impl Limiter {
    /// A limiter for `tools` under `config`'s limits.
    pub fn new(tools: &ToolSet, config: Arc<ParallelExecutorConfig>) -> Self {
        let n = tools.len();
        let tool_names = tools
            .entries()
            .iter()
            .map(|e| e.tool.spec().name.clone())
            .collect();
        let state = State {
            limits: Limits::new(config, tools),
            tool_names,
            in_flight: 0,
            tool_in_flight: vec![0; n],
            resource_in_flight: HashMap::new(),
            cpu_used: 0.0,
            memory_used: 0,
            peak_global: 0,
            peak_tool: vec![0; n],
            peak_resource: HashMap::new(),
            waiters: HashMap::new(),
            ready: BinaryHeap::new(),
            parked_tool: vec![BinaryHeap::new(); n],
            parked_resource: HashMap::new(),
            parked_budget: BinaryHeap::new(),
            seq: 0,
        };
        Limiter {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                epoch: Instant::now(),
            }),
        }
    }

    /// Applies new limits: waiting calls are reconsidered at once.
    pub fn set_limits(&self, tools: &ToolSet, config: Arc<ParallelExecutorConfig>) {
        let mut state = self.shared.lock();
        state.set_limits(config, tools);
        state.unpark_all();
        state.grant(&self.shared);
    }

    /// Asks for the slots of one call.
    pub(crate) fn acquire(&self, request: Request<'_>) -> Acquire {
        let mut state = self.shared.lock();
        let mut blocked = state.blocked(request.tool, request.resources, request.cost);
        if blocked.is_none() && state.budget_queue_ahead(request.cost) {
            // Budget waiters are served in order: a small call does not jump the queue.
            blocked = Some(Blocked::Budget);
        }
        match blocked {
            None => {
                let held = state.take(request.tool, request.resources, request.cost);
                Acquire::Granted(Permit {
                    shared: Some(self.shared.clone()),
                    held,
                })
            }
            Some(Blocked::Never(why)) => Acquire::Never(why),
            Some(blocked) => {
                let (tx, rx) = oneshot::channel();
                let now = Instant::now().saturating_duration_since(self.shared.epoch);
                let priority = request.priority.clamp(-PRIORITY_CAP, PRIORITY_CAP);
                let rank = Duration::from_secs_f64(request.rank.max(0.0) / 1e3).min(RANK_CAP);
                let deadline = now.as_micros() as i128
                    - i128::from(priority) * PRIORITY_STEP.as_micros() as i128
                    - rank.as_micros() as i128;
                state.seq += 1;
                let slot = Slot {
                    deadline,
                    seq: state.seq,
                    woken_by: None,
                };
                // Every key, not only limited ones: a limit may be added while it waits.
                let resources = request.resources.to_vec();
                state.waiters.insert(
                    slot.seq,
                    Waiter {
                        tool: request.tool,
                        resources,
                        cost: request.cost,
                        reply: tx,
                    },
                );
                state.park(slot, blocked);
                Acquire::Waiting(Waiting {
                    rx,
                    _withdraw: Withdraw {
                        shared: self.shared.clone(),
                        seq: state.seq,
                    },
                })
            }
        }
    }

    /// Calls running now, across every execution.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Calls waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// What runs now under each limit: the global limit first, then every tool with a
    /// limit (idle ones too, at 0), then every limited resource key in use. One short lock;
    /// for metrics and monitors.
    pub fn usage(&self) -> Vec<LimitUsage> {
        let state = self.shared.lock();
        let mut usage = vec![LimitUsage {
            key: "global".to_owned(),
            in_flight: state.in_flight,
            limit: state.limits.global,
        }];
        for (tool, limit) in state.limits.per_tool.iter().enumerate() {
            if let Some(limit) = limit {
                usage.push(LimitUsage {
                    key: format!("tool:{}", state.tool_names[tool]),
                    in_flight: state.tool_in_flight.get(tool).copied().unwrap_or(0),
                    limit: *limit,
                });
            }
        }
        let mut resources: Vec<LimitUsage> = state
            .resource_in_flight
            .iter()
            .filter_map(|(key, n)| {
                Some(LimitUsage {
                    key: key.clone(),
                    in_flight: *n,
                    limit: state.limits.config.resource_limit(key)?,
                })
            })
            .collect();
        resources.sort_by(|a, b| a.key.cmp(&b.key));
        usage.extend(resources);
        usage
    }

    /// The most calls that ran at once, per key, since the limiter was made.
    pub fn peaks(&self) -> LimiterPeaks {
        let state = self.shared.lock();
        LimiterPeaks {
            global: state.peak_global,
            tools: state
                .peak_tool
                .iter()
                .enumerate()
                .filter(|(_, p)| **p > 0)
                .map(|(t, p)| (state.tool_names[t].clone(), *p))
                .collect(),
            resources: state
                .peak_resource
                .iter()
                .map(|(k, p)| (k.clone(), *p))
                .collect(),
        }
    }
}

impl State {
    fn set_limits(&mut self, config: Arc<ParallelExecutorConfig>, tools: &ToolSet) {
        self.limits = Limits::new(config, tools);
    }

    fn blocked(&self, tool: usize, resources: &[String], cost: ResourceCost) -> Option<Blocked> {
        if self.in_flight >= self.limits.global {
            return Some(Blocked::Global);
        }
        let in_use = InUse {
            tool: &self.tool_in_flight,
            resources: &self.resource_in_flight,
            cpu: self.cpu_used,
            memory_mb: self.memory_used,
        };
        Some(match self.limits.misfit(&in_use, tool, resources, cost)? {
            Misfit::Tool(t) => Blocked::Tool(t),
            Misfit::Resource(key) => Blocked::Resource(key),
            Misfit::Budget => Blocked::Budget,
            Misfit::Never(why) => Blocked::Never(why),
        })
    }

    /// Counts a call in; returns what it holds.
    fn take(&mut self, tool: usize, resources: &[String], cost: ResourceCost) -> Held {
        self.in_flight += 1;
        self.peak_global = self.peak_global.max(self.in_flight);
        if let Some(n) = self.tool_in_flight.get_mut(tool) {
            *n += 1;
            self.peak_tool[tool] = self.peak_tool[tool].max(*n);
        }
        let mut held = Vec::new();
        for key in resources {
            if self.limits.config.resource_limit(key).is_none() {
                continue;
            }
            let n = self.resource_in_flight.entry(key.clone()).or_insert(0);
            *n += 1;
            let n = *n;
            let peak = self.peak_resource.entry(key.clone()).or_insert(0);
            *peak = (*peak).max(n);
            held.push(key.clone());
        }
        self.cpu_used += cost.cpu;
        self.memory_used += cost.memory_mb;
        Held {
            tool,
            resources: held,
            cost,
        }
    }

    /// Gives a call's slots back and wakes one waiter per freed limit.
    fn release_counts(&mut self, held: &Held) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.tool_in_flight.get_mut(held.tool) {
            *n = n.saturating_sub(1);
            self.wake(Wake::Tool(held.tool));
        }
        for key in &held.resources {
            if let Some(n) = self.resource_in_flight.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.resource_in_flight.remove(key);
                }
            }
            self.wake(Wake::Resource(key.clone()));
        }
        self.cpu_used = (self.cpu_used - held.cost.cpu).max(0.0);
        self.memory_used = self.memory_used.saturating_sub(held.cost.memory_mb);
        if held.cost.cpu > 0.0 || held.cost.memory_mb > 0 {
            self.wake_budget();
        }
    }

    fn release(&mut self, held: Held) {
        self.release_counts(&held);
    }

    /// True while a waiter still wants its slots.
    fn is_live(&self, seq: u64) -> bool {
        self.waiters.get(&seq).is_some_and(|w| !w.reply.is_closed())
    }

    /// Moves the best live waiter parked on `limit` to the ready heap (dropping dead ones).
    fn wake(&mut self, limit: Wake) {
        loop {
            let next = match &limit {
                Wake::Tool(t) => self.parked_tool.get_mut(*t).and_then(BinaryHeap::pop),
                Wake::Resource(key) => {
                    let Some(heap) = self.parked_resource.get_mut(key) else {
                        return;
                    };
                    let next = heap.pop();
                    if heap.is_empty() {
                        self.parked_resource.remove(key);
                    }
                    next
                }
            };
            let Some(mut slot) = next else { return };
            if self.is_live(slot.seq) {
                slot.woken_by = Some(limit);
                self.ready.push(slot);
                return;
            }
            self.waiters.remove(&slot.seq);
        }
    }

    /// True when `cost` uses a budget that live calls are already queued for.
    fn budget_queue_ahead(&mut self, cost: ResourceCost) -> bool {
        if cost.cpu <= 0.0 && cost.memory_mb == 0 {
            return false;
        }
        while let Some(top) = self.parked_budget.peek() {
            if self.is_live(top.seq) {
                return true;
            }
            let seq = top.seq;
            self.parked_budget.pop();
            self.waiters.remove(&seq);
        }
        false
    }

    /// Hands freed budget to budget waiters in deadline order, as far as it goes (the first
    /// always gets its chance, so a large call is not starved by small ones).
    fn wake_budget(&mut self) {
        let mut cpu = self
            .limits
            .config
            .resource_limit_cpu
            .map_or(f64::INFINITY, |c| c - self.cpu_used);
        let mut mem = self
            .limits
            .config
            .resource_limit_memory_mb
            .map_or(u64::MAX, |m| m.saturating_sub(self.memory_used));
        let mut first = true;
        while let Some(top) = self.parked_budget.peek() {
            let seq = top.seq;
            let Some(cost) = self
                .waiters
                .get(&seq)
                .filter(|w| !w.reply.is_closed())
                .map(|w| w.cost)
            else {
                self.parked_budget.pop();
                self.waiters.remove(&seq);
                continue;
            };
            if !first && (cost.cpu > cpu + 1e-9 || cost.memory_mb > mem) {
                return;
            }
            first = false;
            cpu -= cost.cpu;
            mem = mem.saturating_sub(cost.memory_mb);
            if let Some(slot) = self.parked_budget.pop() {
                self.ready.push(slot);
            }
        }
    }

    fn park(&mut self, mut slot: Slot, why: Blocked) {
        match why {
            Blocked::Global => self.ready.push(slot),
            Blocked::Tool(t) => {
                slot.woken_by = None;
                self.parked_tool[t].push(slot)
            }
            Blocked::Resource(key) => {
                slot.woken_by = None;
                self.parked_resource.entry(key).or_default().push(slot)
            }
            Blocked::Budget => {
                slot.woken_by = None;
                self.parked_budget.push(slot)
            }
            Blocked::Never(_) => {}
        }
    }

    fn unpark_all(&mut self) {
        for heap in &mut self.parked_tool {
            self.ready.extend(heap.drain());
        }
        for (_, mut heap) in self.parked_resource.drain() {
            self.ready.extend(heap.drain());
        }
        self.ready.extend(self.parked_budget.drain());
    }

    /// Hands slots to waiters, best first, while the global limit allows. A waiter that a
    /// freed limit woke but that cannot use it (gone, never fits, blocked by another limit)
    /// passes that limit on to the next waiter of it, so no freed slot sits idle.
    fn grant(&mut self, shared: &Arc<Shared>) {
        while self.in_flight < self.limits.global {
            let Some(top) = self.ready.pop() else { return };
            if !self.is_live(top.seq) {
                self.waiters.remove(&top.seq);
                if let Some(limit) = top.woken_by {
                    self.wake(limit);
                }
                continue;
            }
            let Some(waiter) = self.waiters.get(&top.seq) else {
                continue;
            };
            match self.blocked(waiter.tool, &waiter.resources, waiter.cost) {
                None => {
                    let Some(waiter) = self.waiters.remove(&top.seq) else {
                        continue;
                    };
                    let held = self.take(waiter.tool, &waiter.resources, waiter.cost);
                    let permit = Permit {
                        shared: Some(shared.clone()),
                        held,
                    };
                    if let Err(mut permit) = waiter.reply.send(permit) {
                        // The call went away between the check and the grant: take the
                        // slots back here (the lock is held, so not through Drop).
                        permit.shared = None;
                        let held = std::mem::take(&mut permit.held);
                        self.release_counts(&held);
                    }
                }
                Some(Blocked::Never(_)) => {
                    // Limits changed under it: it can never run; dropping its sender tells it.
                    self.waiters.remove(&top.seq);
                    if let Some(limit) = top.woken_by {
                        self.wake(limit);
                    }
                }
                Some(Blocked::Global) => {
                    // Keeps what woke it: it takes that slot once the global one frees.
                    self.park(top, Blocked::Global);
                    return;
                }
                Some(blocked) => {
                    let woken_by = top.woken_by.clone();
                    let same = matches!(
                        (&woken_by, &blocked),
                        (Some(Wake::Tool(a)), Blocked::Tool(b)) if a == b
                    ) || matches!(
                        (&woken_by, &blocked),
                        (Some(Wake::Resource(a)), Blocked::Resource(b)) if a == b
                    );
                    self.park(top, blocked);
                    if let (Some(limit), false) = (woken_by, same) {
                        self.wake(limit);
                    }
                }
            }
        }
    }
}

impl Shared {
    fn release_and_grant(self: &Arc<Self>, held: Held) {
        let mut state = self.lock();
        state.release(held);
        state.grant(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> ToolSet {
        let mut set = ToolSet::new();
        set.register_fn("a", |_, _| async { Ok(serde_json::Value::Null) })
            .expect("a");
        set.register_fn("b", |_, _| async { Ok(serde_json::Value::Null) })
            .expect("b");
        set
    }

    fn req(tool: usize, resources: &[String], priority: i64) -> Request<'_> {
        Request {
            tool,
            resources,
            cost: ResourceCost::default(),
            priority,
            rank: 0.0,
        }
    }

    fn config(global: usize) -> Arc<ParallelExecutorConfig> {
        Arc::new(ParallelExecutorConfig {
            max_parallel_calls: global,
            ..ParallelExecutorConfig::default()
        })
    }

    fn granted(a: Acquire) -> Permit {
        match a {
            Acquire::Granted(p) => p,
            _ => panic!("expected a grant"),
        }
    }

    fn waiting(a: Acquire) -> Waiting {
        match a {
            Acquire::Waiting(w) => w,
            _ => panic!("expected to wait"),
        }
    }

    /// The permit, if it has been handed over.
    fn arrived(w: &mut Waiting) -> Option<Permit> {
        futures_util::FutureExt::now_or_never(w).and_then(Result::ok)
    }

    #[tokio::test]
    async fn a_freed_global_slot_goes_to_the_waiter_with_the_earliest_deadline() {
        let tools = tools();
        let limiter = Limiter::new(&tools, config(1));
        let first = granted(limiter.acquire(req(0, &[], 0)));
        let mut low = waiting(limiter.acquire(req(0, &[], 0)));
        let mut high = waiting(limiter.acquire(req(1, &[], 3)));
        assert_eq!(limiter.waiting(), 2);
        drop(first);
        let permit = arrived(&mut high).expect("high priority first");
        assert!(arrived(&mut low).is_none(), "only one slot");
        assert_eq!(limiter.in_flight(), 1);
        drop(permit);
        let _p = arrived(&mut low).expect("then the other");
        assert_eq!(limiter.peaks().global, 1);
    }

    #[tokio::test]
    async fn usage_counts_each_limit_and_frees_with_the_permit() {
        let tools = tools();
        let mut config = ParallelExecutorConfig {
            max_parallel_calls: 4,
            ..ParallelExecutorConfig::default()
        };
        config.per_tool_parallel_limits.insert("b".into(), 2);
        config.per_resource_parallel_limits.insert("host".into(), 3);
        let limiter = Limiter::new(&tools, Arc::new(config));
        let usage = |limiter: &Limiter| {
            limiter
                .usage()
                .into_iter()
                .map(|u| (u.key, u.in_flight, u.limit))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            usage(&limiter),
            [("global".into(), 0, 4), ("tool:b".into(), 0, 2)],
            "idle: the global and the per-tool limits, no resource key yet"
        );
        let host = ["host:api.test".to_owned(), "file:x".to_owned()];
        let a = granted(limiter.acquire(req(0, &host, 0)));
        let b = granted(limiter.acquire(req(1, &host, 0)));
        assert_eq!(
            usage(&limiter),
            [
                ("global".into(), 2, 4),
                ("tool:b".into(), 1, 2),
                ("host:api.test".into(), 2, 3),
            ],
            "a key without a limit (file:x) is not counted"
        );
        drop(a);
        drop(b);
        assert_eq!(
            usage(&limiter),
            [("global".into(), 0, 4), ("tool:b".into(), 0, 2)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn priority_cannot_starve_an_early_waiter() {
        let tools = tools();
        let limiter = Limiter::new(&tools, config(1));
        let running = granted(limiter.acquire(req(0, &[], 0)));
        let mut old = waiting(limiter.acquire(req(0, &[], -PRIORITY_CAP)));
        // Long after, a stream of the highest priority arrives.
        tokio::time::advance(2 * PRIORITY_CAP as u32 * PRIORITY_STEP + RANK_CAP).await;
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut young = waiting(limiter.acquire(req(0, &[], PRIORITY_CAP * 100)));
        drop(running);
        let _p = arrived(&mut old).expect("the old waiter is served first");
        assert!(arrived(&mut young).is_none());
    }

    #[tokio::test]
    async fn a_tool_limit_parks_only_that_tools_calls() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            max_parallel_calls: 4,
            per_tool_parallel_limits: [("a".to_owned(), 1)].into(),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let a1 = granted(limiter.acquire(req(0, &[], 0)));
        let mut a2 = waiting(limiter.acquire(req(0, &[], 0)));
        let _b = granted(limiter.acquire(req(1, &[], 0)));
        drop(a1);
        let _a2 = arrived(&mut a2).expect("a's slot handed on");
        assert_eq!(limiter.peaks().tools["a"], 1);
    }

    #[tokio::test]
    async fn resource_limits_count_only_limited_keys() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            per_resource_parallel_limits: [("host".to_owned(), 1)].into(),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let one = ["host:x".to_owned(), "file:a".to_owned()];
        let other = ["host:y".to_owned()];
        let p1 = granted(limiter.acquire(req(0, &one, 0)));
        let _p2 = granted(limiter.acquire(req(0, &other, 0)));
        let mut p3 = waiting(limiter.acquire(req(1, &one[..1], 0)));
        drop(p1);
        let _p3 = arrived(&mut p3).expect("host:x freed");
        let peaks = limiter.peaks();
        assert_eq!(peaks.resources.get("host:x"), Some(&1));
        assert!(!peaks.resources.contains_key("file:a"));
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_gives_its_grant_back() {
        let tools = tools();
        let limiter = Limiter::new(&tools, config(1));
        let running = granted(limiter.acquire(req(0, &[], 0)));
        let gone = waiting(limiter.acquire(req(0, &[], 0)));
        let mut next = waiting(limiter.acquire(req(0, &[], 0)));
        drop(gone);
        drop(running);
        let _p = arrived(&mut next).expect("skipped the departed waiter");
        assert_eq!(limiter.in_flight(), 1);
        assert_eq!(limiter.waiting(), 0);
    }

    #[tokio::test]
    async fn raising_a_limit_grants_waiters_at_once() {
        let tools = tools();
        let limiter = Limiter::new(&tools, config(1));
        let _running = granted(limiter.acquire(req(0, &[], 0)));
        let mut waiter = waiting(limiter.acquire(req(0, &[], 0)));
        limiter.set_limits(&tools, config(2));
        let _p = arrived(&mut waiter).expect("granted by the new limit");
        assert_eq!(limiter.peaks().global, 2);
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_passes_the_freed_slot_to_the_next() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            max_parallel_calls: 8,
            per_tool_parallel_limits: [("a".to_owned(), 1)].into(),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let holder = granted(limiter.acquire(req(0, &[], 0)));
        let cancelled = waiting(limiter.acquire(req(0, &[], 0)));
        let mut next = waiting(limiter.acquire(req(0, &[], 0)));
        drop(cancelled);
        assert_eq!(limiter.waiting(), 1, "withdrawn from the queue");
        drop(holder);
        let _p = arrived(&mut next).expect("the slot reached the live waiter");
        assert_eq!(limiter.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_woken_waiter_blocked_elsewhere_hands_the_slot_on() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            max_parallel_calls: 8,
            per_tool_parallel_limits: [("a".to_owned(), 1)].into(),
            per_resource_parallel_limits: [("host".to_owned(), 1)].into(),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let host = ["host:x".to_owned()];
        let tool_a = granted(limiter.acquire(req(0, &[], 0)));
        let _host_x = granted(limiter.acquire(req(1, &host, 0)));
        // First in line for tool a, but also needs host:x, which stays busy.
        let mut both = waiting(limiter.acquire(req(0, &host, 0)));
        let mut a_only = waiting(limiter.acquire(req(0, &[], 0)));
        drop(tool_a);
        let _p = arrived(&mut a_only).expect("tool a is not left idle");
        assert!(arrived(&mut both).is_none());
    }

    #[tokio::test]
    async fn budget_waiters_are_served_in_order_so_a_large_call_is_not_starved() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            max_parallel_calls: 16,
            resource_limit_cpu: Some(4.0),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let cost = |cpu| Request {
            cost: ResourceCost { cpu, memory_mb: 0 },
            ..req(0, &[], 0)
        };
        let small = granted(limiter.acquire(cost(1.0)));
        let mut big = waiting(limiter.acquire(cost(4.0)));
        // Fits right now (3 free), but waits behind the big one.
        let mut late = waiting(limiter.acquire(cost(1.0)));
        drop(small);
        let big_permit = arrived(&mut big).expect("the big call goes first");
        assert!(arrived(&mut late).is_none());
        drop(big_permit);
        let _p = arrived(&mut late).expect("then the small one");
    }

    #[tokio::test]
    async fn a_resource_limit_added_while_calls_wait_applies_to_them() {
        let tools = tools();
        let limiter = Limiter::new(&tools, config(1));
        let host = ["host:x".to_owned()];
        let running = granted(limiter.acquire(req(0, &[], 0)));
        let mut w: Vec<Waiting> = (0..4)
            .map(|_| waiting(limiter.acquire(req(0, &host, 0))))
            .collect();
        let limited = Arc::new(ParallelExecutorConfig {
            max_parallel_calls: 10,
            per_resource_parallel_limits: [("host".to_owned(), 1)].into(),
            ..ParallelExecutorConfig::default()
        });
        limiter.set_limits(&tools, limited);
        let granted_now: Vec<Permit> = w.iter_mut().filter_map(arrived).collect();
        assert_eq!(granted_now.len(), 1, "one on host:x at a time");
        assert_eq!(limiter.peaks().resources["host:x"], 1);
        drop(running);
    }

    #[tokio::test]
    async fn a_budget_larger_than_the_whole_is_refused() {
        let tools = tools();
        let config = Arc::new(ParallelExecutorConfig {
            resource_limit_cpu: Some(1.0),
            ..ParallelExecutorConfig::default()
        });
        let limiter = Limiter::new(&tools, config);
        let request = Request {
            cost: ResourceCost {
                cpu: 2.0,
                memory_mb: 0,
            },
            ..req(0, &[], 0)
        };
        assert!(matches!(limiter.acquire(request), Acquire::Never(_)));
    }
}
