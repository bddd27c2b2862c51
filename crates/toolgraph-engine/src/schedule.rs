//! The event-driven scheduler: runs a [`Plan`] under every limit, as fast as its
//! dependencies allow.
//!
//! One coordinator loop owns all state (no locks): an in-degree count per call, a ready
//! queue ordered by priority then remaining critical path, and counters for the global,
//! per-tool, per-resource and CPU/memory limits. Admitted calls' futures are polled
//! together by the loop itself (a `FuturesUnordered`): no spawn and no cross-thread wake per
//! call, and dropping the loop drops every call. Tools that compute or block declare
//! `blocking` and run on tokio's blocking pool, awaited here. The loop wakes only when a
//! call ends, then releases its dependants and admits whatever now fits. A call blocked by one limit waits
//! in a queue of that limit and returns to the ready queue when the limit frees a slot, so
//! no scan is ever repeated over waiting calls. Under an approval policy (`approval`), a call
//! that must be asked about waits for the decision outside every queue and limit, as one more
//! future the loop polls, and joins the ready queue once approved.
//!
//! Invariants: no limit is ever exceeded; a call starts only after every call it depends on
//! ended; every call ends exactly once; dropping the scheduler aborts every task it started.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use toolgraph_core::reference::{RenderError, json_size};
use toolgraph_core::{
    ApprovalDecision, ApprovalRequest, CallContext, CallError, CallOutcome, CallStatus, CancelFlag,
    ErrorKind, Event, EventSink, ParallelExecutorConfig, ToolSet,
};
use tracing::Instrument;

use crate::approval::{Approvals, Verdict};
use crate::layer::{CallPolicy, CallRequest, CallService, Meter};
use crate::limiter::{Acquire, InUse, Limiter, Limits, Misfit, Permit, Request};
use crate::plan::Plan;
use crate::trace::{self, CallEnd, Waited};

/// The live configuration: swapped by `update_config`, read by running executions at
/// their next admission.
pub(crate) struct ConfigCell {
    current: RwLock<Arc<ParallelExecutorConfig>>,
    generation: AtomicU64,
}

impl ConfigCell {
    pub(crate) fn new(config: ParallelExecutorConfig) -> Self {
        ConfigCell {
            current: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn load(&self) -> Arc<ParallelExecutorConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn store_arc(&self, config: Arc<ParallelExecutorConfig>) {
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        self.generation.fetch_add(1, AtomicOrdering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(AtomicOrdering::Acquire)
    }
}

/// What a resumed execution already knows about a call: it is not run again.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// How it ended.
    pub status: CallStatus,
    /// Its output (feeds references of dependants).
    pub output: Option<Arc<Value>>,
    /// Its error.
    pub error: Option<CallError>,
    /// Attempts it took.
    pub attempts: u32,
}

/// How one call ended, as the scheduler saw it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub status: CallStatus,
    pub output: Option<Arc<Value>>,
    pub error: Option<CallError>,
    pub attempts: u32,
    pub ready_at: Option<Instant>,
    pub started: Option<Instant>,
    pub finished: Instant,
    /// The worker process that ran the call, as its layers reported it (`Meter`).
    pub worker: Option<Arc<str>>,
    /// The outcome came from a cache or a shared flight (`Meter::set_cached`): no tool ran.
    pub cached: bool,
    /// The arguments the approver edited the call to run with.
    pub edited: Option<Arc<Value>>,
}

/// Everything the scheduler measured.
pub(crate) struct RunReport {
    pub records: Vec<Record>,
    pub peak_in_flight: usize,
    pub retries: u32,
    pub config: Arc<ParallelExecutorConfig>,
}

/// A ready call's place in a queue: priority, then remaining critical path, then input order.
#[derive(Debug, Clone, Copy)]
struct Ready {
    priority: i64,
    rank: f64,
    index: u32,
}

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(self.rank.total_cmp(&other.rank))
            .then(other.index.cmp(&self.index))
    }
}

/// What a call task returns.
struct Finished {
    index: u32,
    result: Result<Value, CallError>,
    attempts: u32,
    started: Instant,
    finished: Instant,
    worker: Option<Arc<str>>,
    cached: bool,
    /// The call's span (`Span::none()` when nobody traces), to record how it ended.
    span: tracing::Span,
}

/// What the scheduler keeps for the call spans' `limit` field, only while the execution is
/// traced (an untraced execution pays nothing for it).
struct LimitTrace {
    /// Per call: the last limit it waited on.
    waited: Vec<Option<Waited>>,
    /// The last time calls stayed ready because the global limit was full.
    global_full_at: Option<Instant>,
}

pub(crate) struct Scheduler<'a> {
    plan: &'a Plan,
    tools: &'a ToolSet,
    cell: &'a ConfigCell,
    /// The execution's own limits, when it has them (else the live configuration's).
    own: Option<Arc<ParallelExecutorConfig>>,
    /// The limits every execution of the executor shares.
    limiter: &'a Limiter,
    /// Calls of this execution holding a shared permit: running now, and the most at once.
    running_now: Arc<Gauge>,
    sinks: Vec<&'a dyn EventSink>,
    origin: Instant,
    preset: &'a [Option<Preset>],
    limits: Limits,
    seen_generation: u64,
    rank: Vec<f64>,
    remaining: Vec<u32>,
    /// The dependency (by data edge) whose failure dooms this call.
    /// Per call: the data dependency that did not succeed, and the call where the failure
    /// began (itself not skipped), so a skip message names the root cause in one line.
    doomed_by: Vec<Option<(u32, u32)>>,
    records: Vec<Option<Record>>,
    ready_at: Vec<Option<Instant>>,
    admitted_at: Vec<Option<Instant>>,
    ready: BinaryHeap<Ready>,
    /// Calls ready at the start, sorted: the best is last.
    sources: Vec<Ready>,
    parked_tool: Vec<BinaryHeap<Ready>>,
    parked_resource: HashMap<String, BinaryHeap<Ready>>,
    parked_budget: BinaryHeap<Ready>,
    in_flight: usize,
    tool_in_flight: Vec<usize>,
    resource_in_flight: HashMap<String, usize>,
    cpu_used: f64,
    memory_used: u64,
    /// The running calls' futures, polled by this loop (blocking tools hand their work to
    /// the blocking pool and await it here).
    tasks: FuturesUnordered<BoxFuture<'static, Finished>>,
    /// Calls admitted by this execution's limits, waiting for their shared slots.
    waiting: FuturesUnordered<BoxFuture<'static, (u32, Option<Permit>)>>,
    waiting_for_slots: HashMap<u32, CallRequest>,
    running: Vec<bool>,
    finished: usize,
    peak_in_flight: usize,
    /// Bytes of outputs this execution holds (compact JSON), against `output_budget_bytes`.
    held_output_bytes: usize,
    retries: u32,
    /// How calls are carried out: the executor's layer stack.
    service: Arc<dyn CallService>,
    cancelled: Option<String>,
    fail_fast_trigger: Option<String>,
    limit_trace: Option<LimitTrace>,
    /// The executor's approvals, when some call may have to ask or be refused.
    approvals: Option<Arc<Approvals>>,
    /// The stored execution's id, told to the approver.
    execution_id: Option<Arc<str>>,
    /// Decisions awaited: ready calls that hold no slot until they are approved.
    deciding: FuturesUnordered<BoxFuture<'static, (u32, ApprovalDecision)>>,
    /// Per call awaiting a decision: its resolved arguments.
    awaiting_approval: HashMap<u32, Value>,
    /// Per approved call not yet started: the arguments it runs with (resolved once).
    approved_args: HashMap<u32, Value>,
    /// Per call running with arguments its approver edited: those arguments.
    edited: HashMap<u32, Arc<Value>>,
}

impl<'a> Scheduler<'a> {
    /// A scheduler for `plan`; `estimate` gives each call's expected duration (any unit)
    /// for the critical-path ordering.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        plan: &'a Plan,
        tools: &'a ToolSet,
        cell: &'a ConfigCell,
        own: Option<Arc<ParallelExecutorConfig>>,
        limiter: &'a Limiter,
        service: Arc<dyn CallService>,
        sinks: Vec<&'a dyn EventSink>,
        origin: Instant,
        preset: &'a [Option<Preset>],
        estimate: impl Fn(usize) -> f64,
    ) -> Self {
        let n = plan.len();
        let seen_generation = cell.generation();
        let limits = Limits::new(own.clone().unwrap_or_else(|| cell.load()), tools);
        let rank = if limits.config.enable_parallel {
            plan.remaining_path(estimate)
        } else {
            vec![0.0; n]
        };
        Scheduler {
            plan,
            tools,
            cell,
            own,
            limiter,
            running_now: Arc::new(Gauge::default()),
            sinks,
            origin,
            preset,
            limits,
            seen_generation,
            rank,
            remaining: (0..plan.node_count()).map(|i| plan.in_degree(i)).collect(),
            doomed_by: vec![None; n],
            records: (0..n).map(|_| None).collect(),
            ready_at: vec![None; n],
            admitted_at: vec![None; n],
            ready: BinaryHeap::new(),
            sources: Vec::new(),
            parked_tool: vec![BinaryHeap::new(); tools.len()],
            parked_resource: HashMap::new(),
            parked_budget: BinaryHeap::new(),
            in_flight: 0,
            tool_in_flight: vec![0; tools.len()],
            resource_in_flight: HashMap::new(),
            cpu_used: 0.0,
            memory_used: 0,
            tasks: FuturesUnordered::new(),
            waiting: FuturesUnordered::new(),
            waiting_for_slots: HashMap::new(),
            running: vec![false; n],
            finished: 0,
            peak_in_flight: 0,
            held_output_bytes: 0,
            retries: 0,
            service,
            cancelled: None,
            fail_fast_trigger: None,
            limit_trace: None,
            approvals: None,
            execution_id: None,
            deciding: FuturesUnordered::new(),
            awaiting_approval: HashMap::new(),
            approved_args: HashMap::new(),
            edited: HashMap::new(),
        }
    }

    /// Keeps what the call spans' `limit` field needs (when the execution is traced).
    pub(crate) fn traced(mut self, traced: bool) -> Self {
        self.limit_trace = traced.then(|| LimitTrace {
            waited: vec![None; self.plan.len()],
            global_full_at: None,
        });
        self
    }

    /// Notes that call `i` waits on `limit` (traced executions only).
    fn note_wait(&mut self, i: usize, limit: Waited) {
        if let Some(t) = &mut self.limit_trace {
            t.waited[i] = Some(limit);
        }
    }

    /// The limit call `i` last waited on, if any (traced executions only).
    fn waited_on(&self, i: usize) -> Option<Waited> {
        let t = self.limit_trace.as_ref()?;
        t.waited[i].or_else(|| match (t.global_full_at, self.ready_at[i]) {
            (Some(full), Some(ready)) if ready <= full => Some(Waited::Global),
            _ => None,
        })
    }

    /// Calls are asked about or refused under `approvals` (unless it lets everything run),
    /// the approver told they belong to `execution_id`.
    pub(crate) fn with_approvals(
        mut self,
        approvals: Option<Arc<Approvals>>,
        execution_id: Option<Arc<str>>,
    ) -> Self {
        self.approvals = approvals.filter(|a| !a.is_auto());
        self.execution_id = execution_id;
        self
    }

    /// Runs every call to its end (or until `cancel` fires) and reports what happened.
    pub(crate) async fn run(mut self, cancel: &CancellationToken) -> RunReport {
        let n = self.plan.len();
        let now = Instant::now();
        // The calls ready at the start go into a vector sorted once, not through the heap:
        // a wide fan-out would otherwise pay a heap push and pop per call.
        // Which calls are sources is decided before any is finalized: finalizing a resumed
        // call's preset outcome readies its dependants, which are not sources.
        let initial: Vec<u32> = (0..n as u32)
            .filter(|&i| self.remaining[i as usize] == 0)
            .collect();
        let mut sources = Vec::with_capacity(initial.len());
        for i in initial {
            let i = i as usize;
            match self.preset_record(i, now) {
                Some(record) => self.finalize(i, record),
                None => {
                    self.ready_at[i] = Some(now);
                    self.emit(Event::CallReady { position: i });
                    match self.approve(i, now) {
                        Gate::Run => sources.push(self.ready_entry(i)),
                        Gate::Asked => {}
                        Gate::Ended(record) => self.finalize(i, record),
                    }
                }
            }
        }
        sources.sort_unstable();
        self.sources = sources;
        while self.finished < n {
            if let Some(reason) = self.fail_fast_reason() {
                self.cancel_all(reason);
                continue;
            }
            self.admit();
            if self.fail_fast_trigger.is_some() {
                continue;
            }
            if self.finished == n {
                break;
            }
            if self.in_flight == 0 && self.deciding.is_empty() {
                self.unstick();
                continue;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if self.cancelled.is_none() => {
                    self.cancel_all("the execution was cancelled".into());
                }
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => {
                    self.on_done(done);
                    while let Some(Some(more)) = self.tasks.next().now_or_never() {
                        self.on_done(more);
                    }
                }
                Some((index, permit)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    self.on_slots(index, permit);
                }
                Some((index, decision)) = self.deciding.next(), if !self.deciding.is_empty() => {
                    self.on_decision(index, decision);
                }
                else => self.lose_in_flight(),
            }
        }
        let records = self
            .records
            .into_iter()
            .map(|r| {
                r.unwrap_or(Record {
                    status: CallStatus::Error,
                    output: None,
                    error: Some(CallError {
                        kind: ErrorKind::Unschedulable,
                        message: "call was never scheduled".into(),
                    }),
                    attempts: 0,
                    ready_at: None,
                    started: None,
                    finished: Instant::now(),
                    worker: None,
                    cached: false,
                    edited: None,
                })
            })
            .collect();
        RunReport {
            records,
            peak_in_flight: self.running_now.peak(),
            retries: self.retries,
            config: self.limits.config,
        }
    }

    fn emit(&self, event: Event) {
        for sink in &self.sinks {
            sink.on_event(&event);
        }
    }

    fn entry(&self, i: usize) -> Ready {
        Ready {
            priority: self.plan.calls()[i].call.priority,
            rank: self.rank[i],
            index: i as u32,
        }
    }

    /// The outcome a resumed execution already knows for call `i`, as a record.
    fn preset_record(&self, i: usize, now: Instant) -> Option<Record> {
        let p = self.preset.get(i)?.as_ref()?;
        Some(Record {
            status: p.status,
            output: p.output.clone(),
            error: p.error.clone(),
            attempts: p.attempts,
            ready_at: None,
            started: None,
            finished: now,
            worker: None,
            cached: false,
            edited: None,
        })
    }

    /// Call `i`'s dependencies are done: it joins the ready queue, or waits for a decision,
    /// or ends at once (refused; the record is returned for the caller's work list).
    fn make_ready(&mut self, i: usize, now: Instant) -> Option<Record> {
        self.ready_at[i] = Some(now);
        self.emit(Event::CallReady { position: i });
        match self.approve(i, now) {
            Gate::Run => {
                let entry = self.ready_entry(i);
                self.ready.push(entry);
                None
            }
            Gate::Asked => None,
            Gate::Ended(record) => Some(record),
        }
    }

    /// Whether ready call `i` may run now, must wait for a decision (the question is sent,
    /// and the call holds nothing while it waits), or is refused.
    fn approve(&mut self, i: usize, now: Instant) -> Gate {
        let Some(approvals) = self.approvals.clone() else {
            return Gate::Run;
        };
        let planned = &self.plan.calls()[i];
        let tool = &self.tools.entry(planned.tool).tool;
        let args = match self.resolve_args(i) {
            Ok(args) => args,
            Err((kind, message)) => return Gate::Ended(self.refused_record(i, kind, message, now)),
        };
        let request = ApprovalRequest {
            execution_id: self.execution_id.as_deref().map(str::to_owned),
            call_id: planned.call.id.clone(),
            position: i,
            tool: planned.call.name.clone(),
            class: tool.approval_class(&args),
            resources: tool.resources(&args),
            arguments: args,
        };
        let index = i as u32;
        match approvals.verdict(request.clone()) {
            Verdict::Run => {
                self.approved_args.insert(index, request.arguments);
                Gate::Run
            }
            Verdict::Deny(message) => {
                Gate::Ended(self.refused_record(i, ErrorKind::Denied, message, now))
            }
            Verdict::Ask(decision) => {
                self.awaiting_approval.insert(index, request.arguments);
                self.deciding
                    .push(Box::pin(async move { (index, decision.await) }));
                self.emit(Event::CallAwaitingApproval { position: i });
                Gate::Asked
            }
        }
    }

    /// The approver decided about call `index`.
    fn on_decision(&mut self, index: u32, decision: ApprovalDecision) {
        let Some(args) = self.awaiting_approval.remove(&index) else {
            return;
        };
        let i = index as usize;
        let tool = &self.plan.calls()[i].call.name;
        let args = match decision {
            ApprovalDecision::Approve => args,
            ApprovalDecision::ApproveAlways => {
                if let Some(approvals) = &self.approvals {
                    approvals.remember_always(tool);
                }
                args
            }
            ApprovalDecision::Deny { reason } => {
                let why = reason
                    .filter(|r| !r.trim().is_empty())
                    .map(|r| format!(": {}", r.trim()))
                    .unwrap_or_default();
                let message = format!("denied by the user: {tool} was not allowed to run{why}");
                self.fail_before_start(i, ErrorKind::Denied, message);
                return;
            }
            ApprovalDecision::Edit { arguments } => {
                let entry = self.tools.entry(self.plan.calls()[i].tool);
                if let Some((path, message)) =
                    entry.schema_violations(&arguments).into_iter().next()
                {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at {path}")
                    };
                    let message = format!("the edited arguments break the schema{at}: {message}");
                    self.fail_before_start(i, ErrorKind::Schema, message);
                    return;
                }
                // The plan ordered and limits the call by what its arguments touch, and the
                // person approved a call of its class: an edit may change neither.
                let tool = &entry.tool;
                let (was, now) = (tool.resources(&args), tool.resources(&arguments));
                if was != now {
                    let shown = |r: &[toolgraph_core::ResourceAccess]| {
                        let keys: Vec<&str> = r.iter().map(|a| a.key.as_str()).collect();
                        if keys.is_empty() {
                            "nothing".to_owned()
                        } else {
                            keys.join(", ")
                        }
                    };
                    let message = format!(
                        "denied: the edited arguments change what {name} touches (was {}, now {}); \
                         an edit may not, as the call was ordered and limited by what it touched",
                        shown(&was),
                        shown(&now),
                        name = self.plan.calls()[i].call.name,
                    );
                    self.fail_before_start(i, ErrorKind::Denied, message);
                    return;
                }
                let (was, now) = (tool.approval_class(&args), tool.approval_class(&arguments));
                if was != now {
                    let message = format!(
                        "denied: the edited arguments make the {} call {now} instead of {was}; \
                         an edit may not change what was approved",
                        self.plan.calls()[i].call.name,
                    );
                    self.fail_before_start(i, ErrorKind::Denied, message);
                    return;
                }
                self.edited.insert(index, Arc::new(arguments.clone()));
                arguments
            }
        };
        self.approved_args.insert(index, args);
        let entry = self.ready_entry(i);
        self.ready.push(entry);
    }

    /// Call `i` refused before it started.
    fn refused_record(&self, i: usize, kind: ErrorKind, message: String, now: Instant) -> Record {
        let mut record = cancelled_record(&message, self.ready_at[i], now);
        record.status = CallStatus::Error;
        record.error = Some(CallError { kind, message });
        record
    }

    /// Call `i`'s arguments with its references resolved and checked against the schema.
    fn resolve_args(&self, i: usize) -> Result<Value, (ErrorKind, String)> {
        let planned = &self.plan.calls()[i];
        if planned.template.is_empty() {
            return Ok(planned.call.arguments.clone());
        }
        let entry = self.tools.entry(planned.tool);
        let records = &self.records;
        let limit = usize::try_from(self.limits.config.max_argument_bytes).unwrap_or(usize::MAX);
        let rendered = planned.template.render(
            &planned.call.arguments,
            |p| records.get(p)?.as_ref()?.output.as_deref(),
            limit,
        );
        match rendered {
            Ok(args) => {
                let violations = entry.schema_violations(&args);
                if let Some((path, message)) = violations.into_iter().next() {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at {path}")
                    };
                    return Err((
                        ErrorKind::Schema,
                        format!(
                            "arguments (after references resolved) break the schema{at}: {message}"
                        ),
                    ));
                }
                Ok(args)
            }
            Err(e) => {
                let kind = match e {
                    RenderError::Unresolved(_) => ErrorKind::Reference,
                    RenderError::TooLarge { .. } => ErrorKind::TooLarge,
                };
                Err((kind, e.to_string()))
            }
        }
    }

    fn ready_entry(&self, i: usize) -> Ready {
        if self.limits.config.enable_parallel {
            self.entry(i)
        } else {
            // Sequential mode: plain input order among ready calls.
            Ready {
                priority: 0,
                rank: 0.0,
                index: i as u32,
            }
        }
    }

    /// The best ready call: from the heap or from the sorted sources, whichever is better.
    fn pop_ready(&mut self) -> Option<Ready> {
        match (self.ready.peek(), self.sources.last()) {
            (Some(h), Some(s)) if s > h => self.sources.pop(),
            (Some(_), _) => self.ready.pop(),
            (None, _) => self.sources.pop(),
        }
    }

    fn reload_limits_if_changed(&mut self) {
        let generation = self.cell.generation();
        if generation == self.seen_generation || self.own.is_some() {
            return;
        }
        self.seen_generation = generation;
        self.limits = Limits::new(self.cell.load(), self.tools);
        // Which keys are limited may have changed: count the running calls again under the
        // new limits, so every later release matches a count.
        self.resource_in_flight.clear();
        for i in 0..self.plan.len() {
            if !self.running[i] {
                continue;
            }
            for key in &self.plan.calls()[i].resources {
                if self.limits.config.resource_limit(key).is_some() {
                    *self.resource_in_flight.entry(key.clone()).or_insert(0) += 1;
                }
            }
        }
        self.unpark_all();
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

    /// Starts ready calls while the limits allow.
    fn admit(&mut self) {
        if self.cancelled.is_some() {
            return;
        }
        self.reload_limits_if_changed();
        while self.in_flight < self.limits.global {
            let Some(top) = self.pop_ready() else { break };
            let i = top.index as usize;
            match self.blocked(i) {
                None => self.start(i),
                Some(Misfit::Tool(t)) => {
                    self.note_wait(i, Waited::Tool);
                    self.parked_tool[t].push(top)
                }
                Some(Misfit::Resource(key)) => {
                    self.note_wait(i, Waited::Resource);
                    self.parked_resource.entry(key).or_default().push(top)
                }
                Some(Misfit::Budget) => {
                    self.note_wait(i, Waited::Budget);
                    self.parked_budget.push(top)
                }
                Some(Misfit::Never(message)) => {
                    self.fail_before_start(i, ErrorKind::Unschedulable, message);
                }
            }
        }
        if let Some(t) = &mut self.limit_trace
            && self.in_flight >= self.limits.global
            && (!self.ready.is_empty() || !self.sources.is_empty())
        {
            t.global_full_at = Some(Instant::now());
        }
    }

    fn blocked(&self, i: usize) -> Option<Misfit> {
        let call = &self.plan.calls()[i];
        let in_use = InUse {
            tool: &self.tool_in_flight,
            resources: &self.resource_in_flight,
            cpu: self.cpu_used,
            memory_mb: self.memory_used,
        };
        let cost = self.tools.entry(call.tool).tool.spec().traits.cost;
        self.limits
            .misfit(&in_use, call.tool, &call.resources, cost)
    }

    fn start(&mut self, i: usize) {
        let planned = &self.plan.calls()[i];
        let entry = self.tools.entry(planned.tool);
        let approved = if self.approved_args.is_empty() {
            None
        } else {
            self.approved_args.remove(&(i as u32))
        };
        let args = match approved {
            Some(args) => args,
            None => match self.resolve_args(i) {
                Ok(args) => args,
                Err((kind, message)) => {
                    self.fail_before_start(i, kind, message);
                    return;
                }
            },
        };

        let spec = entry.tool.spec();
        let config = &self.limits.config;
        let timeout_ms = planned
            .call
            .timeout_ms
            .or(spec.traits.timeout_ms)
            .unwrap_or(config.default_timeout_ms);
        let idempotent = entry.tool.is_idempotent(&args);
        let mut retry = config.retry;
        if !idempotent {
            retry.max_attempts = 1;
        }
        let shared = self.limiter.acquire(Request {
            tool: planned.tool,
            resources: &planned.resources,
            cost: spec.traits.cost,
            priority: planned.call.priority,
            rank: self.rank[i],
        });
        let waiting = match shared {
            Acquire::Granted(permit) => Ok(permit),
            Acquire::Waiting(waiting) => {
                self.note_wait(i, Waited::Shared);
                Err(waiting)
            }
            Acquire::Never(message) => {
                self.fail_before_start(i, ErrorKind::Unschedulable, message);
                return;
            }
        };
        let request = CallRequest {
            position: i,
            tool: entry.tool.clone(),
            args: Arc::new(args),
            ctx: CallContext {
                call_id: Arc::from(planned.call.id.as_str()),
                attempt: 1,
                cancel: CancelFlag::new(),
            },
            policy: CallPolicy {
                // 0 means none at every level: call, tool and executor.
                timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
                retry,
                idempotent,
                blocking: spec.traits.blocking,
            },
            gates: Vec::new(),
            meter: Arc::new(Meter::default()),
            slots: None,
        };

        // The execution's own slots are taken now; the call holds them while it waits for
        // the shared ones.
        self.in_flight += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        self.tool_in_flight[planned.tool] += 1;
        for key in &planned.resources {
            if self.limits.config.resource_limit(key).is_some() {
                *self.resource_in_flight.entry(key.clone()).or_insert(0) += 1;
            }
        }
        self.cpu_used += spec.traits.cost.cpu;
        self.memory_used += spec.traits.cost.memory_mb;
        self.running[i] = true;
        match waiting {
            Ok(permit) => self.launch(request, permit),
            Err(waiting) => {
                let index = i as u32;
                self.waiting_for_slots.insert(index, request);
                self.waiting
                    .push(Box::pin(async move { (index, waiting.await.ok()) }));
            }
        }
    }

    /// A call got its shared slots: its start is made durable if a sink asks (the
    /// durability layer waits for that), it is announced, and it runs.
    fn launch(&mut self, mut request: CallRequest, permit: Permit) {
        let i = request.position;
        request.gates = self
            .sinks
            .iter()
            .filter_map(|s| s.before_start(i, request.policy.idempotent))
            .collect();
        // A blocking tool's thread keeps the slots until it returns, even past a timeout;
        // any other call keeps them until its future ends.
        let permit = if request.policy.blocking {
            request.slots = Some(Arc::new(permit));
            None
        } else {
            Some(permit)
        };
        self.admitted_at[i] = Some(Instant::now());
        let index = i as u32;
        let cancel = request.ctx.cancel.clone();
        let meter = request.meter.clone();
        let service = self.service.clone();
        let gauge = self.running_now.clone();
        let planned = &self.plan.calls()[i];
        let span = trace::call_span(
            &planned.call.id,
            &self.tools.entry(planned.tool).tool.spec().name,
            i,
            self.waited_on(i),
        );
        let in_span = span.clone();
        self.tasks.push(Box::pin(
            async move {
                let _running = gauge.enter();
                // A blocking tool still on its thread learns that nobody waits any more.
                let _raise = RaiseOnDrop(cancel);
                let result = service.call(request).await;
                let finished = Instant::now();
                drop(permit);
                let attempts = meter.attempts();
                Finished {
                    index,
                    result: result.map_err(|f| f.into_call_error(attempts)),
                    attempts,
                    started: meter.first_start().unwrap_or(finished),
                    finished,
                    worker: meter.worker(),
                    cached: meter.cached(),
                    span,
                }
            }
            .instrument(in_span),
        ));
        self.emit(Event::CallStarted { position: i });
    }

    /// A waiting call's shared slots arrived, or never will (the limits changed so that it
    /// cannot fit).
    fn on_slots(&mut self, index: u32, permit: Option<Permit>) {
        let Some(request) = self.waiting_for_slots.remove(&index) else {
            return;
        };
        match permit {
            Some(permit) => self.launch(request, permit),
            None => {
                let i = index as usize;
                self.running[i] = false;
                self.release(i);
                self.fail_before_start(
                    i,
                    ErrorKind::Unschedulable,
                    "the shared limits changed so that this call can never run".into(),
                );
            }
        }
    }

    /// Returns a finished call's slots and wakes one waiter of each freed limit.
    fn release(&mut self, i: usize) {
        let planned = &self.plan.calls()[i];
        self.in_flight -= 1;
        self.tool_in_flight[planned.tool] -= 1;
        if let Some(e) = self.parked_tool[planned.tool].pop() {
            self.ready.push(e);
        }
        for key in &planned.resources {
            // Counted at start only under a limit; a reload recounts (see below).
            if self.limits.config.resource_limit(key).is_none() {
                continue;
            }
            if let Some(count) = self.resource_in_flight.get_mut(key) {
                *count = count.saturating_sub(1);
                if let Some(heap) = self.parked_resource.get_mut(key)
                    && let Some(e) = heap.pop()
                {
                    self.ready.push(e);
                }
            }
        }
        let cost = self.tools.entry(planned.tool).tool.spec().traits.cost;
        self.cpu_used = (self.cpu_used - cost.cpu).max(0.0);
        self.memory_used = self.memory_used.saturating_sub(cost.memory_mb);
        if cost.cpu > 0.0 || cost.memory_mb > 0 {
            // Hand the freed budget to waiters in priority order, as far as it goes (the
            // first always gets its chance, so a large call is not starved by small ones).
            let (mut cpu, mut mem) = (cost.cpu, cost.memory_mb);
            let mut first = true;
            while let Some(top) = self.parked_budget.peek() {
                let c = self
                    .tools
                    .entry(self.plan.calls()[top.index as usize].tool)
                    .tool
                    .spec()
                    .traits
                    .cost;
                if !first && (c.cpu > cpu + 1e-9 || c.memory_mb > mem) {
                    break;
                }
                first = false;
                cpu -= c.cpu;
                mem = mem.saturating_sub(c.memory_mb);
                if let Some(e) = self.parked_budget.pop() {
                    self.ready.push(e);
                }
            }
        }
    }

    fn on_done(&mut self, done: Finished) {
        let i = done.index as usize;
        self.retries += done.attempts.saturating_sub(1);
        self.running[i] = false;
        self.release(i);
        let result = done.result.and_then(|v| self.hold_output(v));
        let (status, output, error) = match result {
            Ok(v) => (CallStatus::Ok, Some(Arc::new(v)), None),
            Err(e) if e.kind == ErrorKind::Timeout => (CallStatus::Timeout, None, Some(e)),
            Err(e) if e.kind == ErrorKind::Interrupted => (CallStatus::Interrupted, None, Some(e)),
            Err(e) => (CallStatus::Error, None, Some(e)),
        };
        let record = Record {
            status,
            output,
            error,
            attempts: done.attempts,
            ready_at: self.ready_at[i],
            started: Some(done.started),
            finished: done.finished,
            worker: done.worker,
            cached: done.cached,
            // Empty unless an approver edited a call: no hashing on the hot path then.
            edited: if self.edited.is_empty() {
                None
            } else {
                self.edited.remove(&done.index)
            },
        };
        trace::record_call_end(&done.span, call_end(&record));
        self.finalize(i, record);
    }

    /// Keeps a call's output if it fits `max_output_bytes` and the execution's
    /// `output_budget_bytes`; otherwise the output is dropped and the call fails.
    fn hold_output(&mut self, output: Value) -> Result<Value, CallError> {
        let config = &self.limits.config;
        let max = usize::try_from(config.max_output_bytes).unwrap_or(usize::MAX);
        let budget = usize::try_from(config.output_budget_bytes).unwrap_or(usize::MAX);
        let size = json_size(&output, max);
        let message = if size > max {
            format!("the output passes {max} bytes (max_output_bytes); it was dropped")
        } else if self.held_output_bytes.saturating_add(size) > budget {
            format!(
                "the output ({size} bytes) would make the execution hold more than {budget} \
                 bytes of outputs (output_budget_bytes, {} held); it was dropped",
                self.held_output_bytes
            )
        } else {
            self.held_output_bytes += size;
            return Ok(output);
        };
        Err(CallError {
            kind: ErrorKind::TooLarge,
            message,
        })
    }

    fn fail_before_start(&mut self, i: usize, kind: ErrorKind, message: String) {
        let record = Record {
            status: CallStatus::Error,
            output: None,
            error: Some(CallError { kind, message }),
            attempts: 0,
            ready_at: self.ready_at[i],
            started: None,
            finished: Instant::now(),
            worker: None,
            cached: false,
            edited: None,
        };
        self.finalize(i, record);
    }

    /// Records how call `i` ended and releases its dependants: each becomes ready, or is
    /// skipped when a data dependency failed, or cancelled when the execution is.
    fn finalize(&mut self, i: usize, record: Record) {
        let mut work = vec![(i, record)];
        while let Some((i, record)) = work.pop() {
            if record.started.is_none() && !self.preset.get(i).is_some_and(Option::is_some) {
                self.trace_unstarted(i, &record);
            }
            let ok = record.status == CallStatus::Ok;
            let status = record.status;
            if matches!(
                status,
                CallStatus::Error | CallStatus::Timeout | CallStatus::Interrupted
            ) && self.limits.config.fail_fast
                && self.fail_fast_trigger.is_none()
                && self.cancelled.is_none()
            {
                let id = &self.plan.calls()[i].call.id;
                self.fail_fast_trigger = Some(format!("fail-fast: call {id} did not succeed"));
            }
            let duration_ms = match record.started {
                Some(s) => record.finished.saturating_duration_since(s).as_secs_f64() * 1e3,
                None => 0.0,
            };
            if !self.sinks.is_empty() {
                let ms = |t: Instant| t.saturating_duration_since(self.origin).as_secs_f64() * 1e3;
                let start_or_end = record.started.unwrap_or(record.finished);
                let outcome = CallOutcome {
                    status,
                    output: record.output.as_ref(),
                    error: record.error.as_ref(),
                    attempts: record.attempts,
                    queued_ms: record.ready_at.map_or(0.0, |r| {
                        start_or_end.saturating_duration_since(r).as_secs_f64() * 1e3
                    }),
                    started_ms: record.started.map(ms),
                    finished_ms: ms(record.finished),
                    worker: record.worker.as_deref(),
                    cached: record.cached,
                };
                let event = Event::CallFinished {
                    position: i,
                    status,
                    duration_ms,
                    worker: record.worker.as_deref().map(str::to_owned),
                    cached: record.cached,
                };
                for sink in &self.sinks {
                    sink.on_event(&event);
                    sink.on_outcome(i, &outcome);
                }
            }
            self.records[i] = Some(record);
            self.finished += 1;
            let now = Instant::now();
            let plan = self.plan;
            for &(to, data) in plan.dependants(i) {
                let to = to as usize;
                if !plan.is_join(to) {
                    self.predecessor_ended(to, data, (i, ok, status), now, &mut work);
                    continue;
                }
                // A join ends with the last call of its group and releases the calls after
                // it then (its edges carry no data; a join never follows a join).
                self.remaining[to] -= 1;
                if self.remaining[to] == 0 {
                    for &(after, _) in plan.dependants(to) {
                        self.predecessor_ended(
                            after as usize,
                            false,
                            (i, ok, status),
                            now,
                            &mut work,
                        );
                    }
                }
            }
        }
    }

    /// A call that ends without being dispatched (skipped, cancelled, unschedulable) still
    /// gets its span, opened and closed at once.
    fn trace_unstarted(&self, i: usize, record: &Record) {
        let planned = &self.plan.calls()[i];
        let span = trace::call_span(
            &planned.call.id,
            &self.tools.entry(planned.tool).tool.spec().name,
            i,
            self.waited_on(i),
        );
        trace::record_call_end(&span, call_end(record));
    }

    /// One of call `to`'s predecessors ended (`ended`: its position, whether it succeeded, its
    /// status): `to` is marked doomed when the edge carries data and the predecessor failed,
    /// and once nothing is left to wait for it becomes ready, or ends at once (preset,
    /// cancelled or skipped, pushed onto `work`).
    fn predecessor_ended(
        &mut self,
        to: usize,
        data: bool,
        ended: (usize, bool, CallStatus),
        now: Instant,
        work: &mut Vec<(usize, Record)>,
    ) {
        let (i, ok, status) = ended;
        if data && !ok && self.doomed_by[to].is_none() {
            let root = match self.doomed_by[i] {
                Some((_, root)) if status == CallStatus::Skipped => root,
                _ => i as u32,
            };
            self.doomed_by[to] = Some((i as u32, root));
        }
        self.remaining[to] -= 1;
        if self.remaining[to] > 0 {
            return;
        }
        if let Some(record) = self.preset_record(to, now) {
            work.push((to, record));
        } else if let Some(why) = &self.cancelled {
            work.push((to, cancelled_record(why, None, now)));
        } else if let Some((dep, root)) = self.doomed_by[to] {
            let record = self.skipped_record(to, dep as usize, root as usize, now);
            work.push((to, record));
        } else if let Some(record) = self.make_ready(to, now) {
            work.push((to, record));
        }
    }

    /// Call `i` is skipped because `dep` did not succeed, a failure that began at `root`.
    /// The message names both and the root's own error, shortened: one line per call, however
    /// long the chain (no message nests another).
    fn skipped_record(&self, i: usize, dep: usize, root: usize, now: Instant) -> Record {
        let calls = self.plan.calls();
        let dep_id = &calls[dep].call.id;
        let root_id = &calls[root].call.id;
        let cause = match &self.records[root] {
            Some(r) => {
                let why = r.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
                format!("{}: {}", r.status.as_str(), shorten(why, 200))
            }
            None => "did not succeed".to_owned(),
        };
        let message = if dep == root {
            format!("dependency {dep_id} did not succeed ({cause})")
        } else {
            format!("dependency {dep_id} was skipped: {root_id} did not succeed ({cause})")
        };
        Record {
            status: CallStatus::Skipped,
            output: None,
            error: Some(CallError {
                kind: ErrorKind::Dependency,
                message,
            }),
            attempts: 0,
            ready_at: self.ready_at[i],
            started: None,
            finished: now,
            worker: None,
            cached: false,
            edited: None,
        }
    }

    fn fail_fast_reason(&mut self) -> Option<String> {
        let trigger = self.fail_fast_trigger.take();
        if self.cancelled.is_some() {
            None
        } else {
            trigger
        }
    }

    /// Cancels everything: running calls are dropped (their tools see the cancellation),
    /// nothing new starts, every unfinished call ends `cancelled`.
    fn cancel_all(&mut self, why: String) {
        self.cancelled = Some(why.clone());
        // Calls that already finished keep their results.
        while let Some(Some(done)) = self.tasks.next().now_or_never() {
            self.on_done(done);
        }
        self.tasks = FuturesUnordered::new();
        // Calls waiting for a decision never started: the questions are withdrawn.
        self.deciding = FuturesUnordered::new();
        let undecided: Vec<u32> = self.awaiting_approval.drain().map(|(i, _)| i).collect();
        for i in undecided {
            let i = i as usize;
            self.finalize(i, cancelled_record(&why, self.ready_at[i], Instant::now()));
        }
        // Calls still waiting for shared slots never started: they withdraw from the queue.
        self.waiting = FuturesUnordered::new();
        let never_started: Vec<u32> = self.waiting_for_slots.drain().map(|(i, _)| i).collect();
        let now = Instant::now();
        for i in never_started {
            let i = i as usize;
            self.running[i] = false;
            self.release(i);
            self.finalize(i, cancelled_record(&why, self.ready_at[i], now));
        }
        for i in 0..self.plan.len() {
            if self.running[i] {
                self.running[i] = false;
                self.release(i);
                let mut record = cancelled_record(&why, self.ready_at[i], now);
                record.started = self.admitted_at[i];
                record.attempts = 1;
                self.finalize(i, record);
            }
        }
        let now = Instant::now();
        let waiting: Vec<usize> = self
            .ready
            .drain()
            .chain(std::mem::take(&mut self.sources))
            .chain(self.parked_budget.drain())
            .chain(
                self.parked_tool
                    .iter_mut()
                    .flat_map(|h| h.drain())
                    .collect::<Vec<_>>(),
            )
            .chain(self.parked_resource.drain().flat_map(|(_, h)| h.into_vec()))
            .map(|r| r.index as usize)
            .collect();
        for i in waiting {
            let record = cancelled_record(&why, self.ready_at[i], now);
            self.finalize(i, record);
        }
        // Calls still waiting on dependencies end as those dependencies are finalized; any
        // left (all dependencies cancelled) are finalized here.
        for i in 0..self.plan.len() {
            if self.records[i].is_none() && self.remaining[i] == 0 {
                let record = cancelled_record(&why, self.ready_at[i], now);
                self.finalize(i, record);
            }
        }
    }

    /// Nothing runs and nothing could start: give waiting calls another chance, and end
    /// whatever can never run so the execution always terminates.
    fn unstick(&mut self) {
        self.unpark_all();
        self.admit();
        if self.in_flight == 0 && self.finished < self.plan.len() {
            for i in 0..self.plan.len() {
                if self.records[i].is_none() && self.remaining[i] == 0 {
                    let message = "could not be scheduled under the configured limits".to_owned();
                    self.fail_before_start(i, ErrorKind::Unschedulable, message);
                }
            }
        }
    }

    /// The task set is empty while calls are counted in flight: account for them.
    fn lose_in_flight(&mut self) {
        for i in 0..self.plan.len() {
            if self.running[i] {
                self.running[i] = false;
                self.release(i);
                self.fail_before_start(
                    i,
                    ErrorKind::Panic,
                    "the call's future vanished without a result".into(),
                );
            }
        }
        self.in_flight = 0;
    }
}

/// Whether a ready call may run (see `Scheduler::approve`).
enum Gate {
    Run,
    Asked,
    Ended(Record),
}

/// `text` cut to at most `max` characters, marked when cut.
fn shorten(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((at, _)) => format!("{}…", &text[..at]).into(),
    }
}

/// What a call's span records when it ends, from its record.
fn call_end(record: &Record) -> CallEnd<'_> {
    CallEnd {
        status: record.status,
        error: record.error.as_ref(),
        attempts: record.attempts,
        ready_at: record.ready_at,
        started: record.started,
        finished: record.finished,
        worker: record.worker.as_deref(),
        cached: record.cached,
    }
}

fn cancelled_record(why: &str, ready_at: Option<Instant>, now: Instant) -> Record {
    Record {
        status: CallStatus::Cancelled,
        output: None,
        error: Some(CallError {
            kind: ErrorKind::Cancelled,
            message: why.to_owned(),
        }),
        attempts: 0,
        ready_at,
        started: None,
        finished: now,
        worker: None,
        cached: false,
        edited: None,
    }
}

/// Counts an execution's calls that hold their shared slots, and the most at once.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        self.peak.fetch_max(now, AtomicOrdering::Relaxed);
        GaugeGuard(self.clone())
    }

    fn peak(&self) -> usize {
        self.peak.load(AtomicOrdering::Relaxed)
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

/// Raises a call's cancel flag when the call's task ends or is dropped, so a blocking tool
/// still running on its thread learns that nobody waits for it any more.
struct RaiseOnDrop(CancelFlag);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
