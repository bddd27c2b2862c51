//! [`ParallelExecutor`]: the public face of the engine, with the seed's vocabulary.
//!
//! It owns the tools, the live configuration, the shared [`Limiter`] and the performance
//! history. It is cheap to clone, and every clone is the same executor: executions running
//! at once through any of its clones share one set of limits. Each `execute_parallel` plans
//! the batch, runs the scheduler and assembles the result.

use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use toolgraph_core::{
    ConfigError, Event, EventSink, InputError, ParallelExecutionResult, ParallelExecutorConfig,
    ToolCall, ToolSet,
};
use tracing::Instrument;

use crate::approval::Approvals;
use crate::layer::adaptive::{AdaptiveLayer, LimitWatch, Throttle};
use crate::layer::{self, CallService, Layer};
use crate::limiter::Limiter;
use crate::plan::{DependencyGraph, Plan};
use crate::report;
use crate::schedule::{ConfigCell, Preset, Scheduler};
use crate::stats::{History, PerformanceStats};
use crate::trace;

/// Per-run options of [`ParallelExecutor::execute_plan_with`].
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Fires to cancel the run; unfinished calls end `cancelled`.
    pub cancel: CancellationToken,
    /// A sink for this run only (besides the executor's own).
    pub sink: Option<&'a dyn EventSink>,
    /// Per call position: an outcome already known (a resumed execution); empty = none.
    pub preset: Vec<Option<Preset>>,
    /// This execution's own limits and policies (a request's `max_parallel`, a resumed
    /// execution's recorded configuration), layered under the executor's shared limits:
    /// a call starts only when both allow. `None`: the executor's configuration.
    pub config: Option<Arc<ParallelExecutorConfig>>,
    /// The execution's id (a recorded execution's), set on its `execution` span and told to
    /// the approver with each question.
    pub execution_id: Option<Arc<str>>,
    /// The session (a chat) the execution belongs to, set on its `execution` span.
    pub session_id: Option<String>,
}

/// Runs batches of tool calls in parallel where safe, in order where not.
///
/// ```
/// use toolgraph_core::{ToolCall, ToolSet, ParallelExecutorConfig};
/// use toolgraph_engine::ParallelExecutor;
/// use serde_json::json;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut tools = ToolSet::new();
/// tools.register_fn("double", |args, _ctx| async move { Ok(json!(args["n"].as_i64().unwrap_or(0) * 2)) }).unwrap();
/// let executor = ParallelExecutor::new(tools, ParallelExecutorConfig::default()).unwrap();
/// let result = executor
///     .execute_parallel(vec![
///         ToolCall::new("a", "double", json!({"n": 21})),
///         ToolCall::new("b", "double", json!({"n": "${a}"})),
///     ])
///     .await
///     .unwrap();
/// assert!(result.success);
/// assert_eq!(result.results[1].output(), Some(&json!(84)));
/// # });
/// ```
#[derive(Clone)]
pub struct ParallelExecutor {
    shared: Arc<Shared>,
    sink: Option<Arc<dyn EventSink>>,
    layers: Vec<Arc<dyn Layer>>,
    /// Layers around each attempt (the adaptive limits and rate limits), below retry.
    attempt_layers: Vec<Arc<dyn Layer>>,
    service: Arc<dyn CallService>,
    /// Which calls ask or are refused before they run (this clone's; none: all run).
    approvals: Option<Arc<Approvals>>,
}

/// What every clone of an executor shares.
struct Shared {
    tools: ToolSet,
    config: ConfigCell,
    limiter: Limiter,
    history: Mutex<History>,
    /// Serialises `update_config`, so the cell and the limiter never disagree.
    updating: Mutex<()>,
    /// Adaptive limits, `Retry-After` pauses and token buckets, when configured.
    throttle: Option<Throttle>,
}

impl ParallelExecutor {
    /// An executor for `tools` with `config` (validated here).
    pub fn new(tools: ToolSet, config: ParallelExecutorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let config = ConfigCell::new(config);
        let limiter = Limiter::new(&tools, config.load());
        let throttle = Throttle::wanted(&config.load()).then(|| Throttle::new(config.load()));
        let attempt_layers: Vec<Arc<dyn Layer>> = match &throttle {
            Some(t) => vec![Arc::new(AdaptiveLayer::new(t.clone()))],
            None => Vec::new(),
        };
        Ok(ParallelExecutor {
            shared: Arc::new(Shared {
                tools,
                config,
                limiter,
                history: Mutex::new(History::default()),
                updating: Mutex::new(()),
                throttle,
            }),
            sink: None,
            layers: Vec::new(),
            service: layer::stack_with(&[], &attempt_layers),
            attempt_layers,
            approvals: None,
        })
    }

    /// This executor with `layer` wrapped around how its calls are carried out (a cache, a
    /// rate limit, remote dispatch), outside the timeout, retry and panic layers and inside
    /// the durability gate; layers added earlier stay outermost. The returned clone shares
    /// the tools, limits and history.
    pub fn layer(mut self, layer: Arc<dyn Layer>) -> Self {
        self.layers.push(layer);
        self.service = layer::stack_with(&self.layers, &self.attempt_layers);
        self
    }

    /// This executor, also sending every execution's events to `sink` (progress displays,
    /// recorders). The returned clone shares the tools, limits and history.
    pub fn with_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// This executor, asking or refusing calls under `approvals` before they run (see
    /// [`crate::approval`]); its clones share the "always" answers. A call waiting for a
    /// decision holds no slot of any limit. The returned clone shares the tools, limits and
    /// history.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// The approvals in force, if any.
    pub fn approvals(&self) -> Option<&Arc<Approvals>> {
        self.approvals.as_ref()
    }

    /// The registered tools.
    pub fn tools(&self) -> &ToolSet {
        &self.shared.tools
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ParallelExecutorConfig> {
        self.shared.config.load()
    }

    /// The limits every execution of this executor (and its clones) shares: counters, waiting
    /// calls and peaks per key.
    pub fn limiter(&self) -> &Limiter {
        &self.shared.limiter
    }

    /// The adaptive limits, `Retry-After` pauses and token buckets every execution of this
    /// executor shares; `None` when the configuration it was built with asked for none
    /// (then no layer for them is in the stack).
    pub fn throttle(&self) -> Option<&Throttle> {
        self.shared.throttle.as_ref()
    }

    /// Replaces the configuration; running executions apply the new limits at their next
    /// admission, and calls waiting for a shared slot are reconsidered at once.
    pub fn update_config(&self, config: ParallelExecutorConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let _one_at_a_time = match self.shared.updating.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let config = Arc::new(config);
        self.shared.config.store_arc(config.clone());
        self.shared
            .limiter
            .set_limits(&self.shared.tools, config.clone());
        if let Some(throttle) = &self.shared.throttle {
            throttle.set_config(config);
        }
        Ok(())
    }

    /// Checks a batch and builds its dependency graph without running anything.
    pub fn plan(&self, calls: Vec<ToolCall>) -> Result<Plan, InputError> {
        Plan::build(calls, &self.shared.tools, &self.shared.config.load())
    }

    /// Runs a batch. Bad input is rejected before anything runs.
    pub async fn execute_parallel(
        &self,
        calls: Vec<ToolCall>,
    ) -> Result<ParallelExecutionResult, InputError> {
        self.execute_with_cancel(calls, CancellationToken::new())
            .await
    }

    /// Runs a batch until it ends or `cancel` fires (then unfinished calls end `cancelled`).
    /// Dropping the returned future aborts every call it started.
    pub async fn execute_with_cancel(
        &self,
        calls: Vec<ToolCall>,
        cancel: CancellationToken,
    ) -> Result<ParallelExecutionResult, InputError> {
        let origin = Instant::now();
        let plan = self.plan(calls)?;
        let options = RunOptions {
            cancel,
            ..RunOptions::default()
        };
        let span = trace::execution_span(plan.len(), plan.edges().len(), None, None);
        let (run, planned_at) = self
            .schedule(&plan, origin, &options, !span.is_disabled())
            .instrument(span.clone())
            .await;
        let track = run.config.track_performance;
        // The plan is ours: the report moves each call's id and name into its result.
        let result = report::assemble_owned(plan, run, origin, planned_at, Instant::now());
        Ok(self.finish(result, track, &options, &span))
    }

    /// Runs an already checked plan.
    pub async fn execute_plan(
        &self,
        plan: &Plan,
        cancel: CancellationToken,
    ) -> ParallelExecutionResult {
        self.execute_plan_with(
            plan,
            RunOptions {
                cancel,
                ..RunOptions::default()
            },
        )
        .await
    }

    /// Runs an already checked plan with per-run options: a cancellation token, an extra
    /// event sink (a recorder), and the outcomes a resumed execution already knows.
    pub async fn execute_plan_with(
        &self,
        plan: &Plan,
        options: RunOptions<'_>,
    ) -> ParallelExecutionResult {
        self.run(plan, Instant::now(), options).await
    }

    async fn run(
        &self,
        plan: &Plan,
        origin: Instant,
        options: RunOptions<'_>,
    ) -> ParallelExecutionResult {
        let span = trace::execution_span(
            plan.len(),
            plan.edges().len(),
            options.execution_id.as_deref(),
            options.session_id.as_deref(),
        );
        let (run, planned_at) = self
            .schedule(plan, origin, &options, !span.is_disabled())
            .instrument(span.clone())
            .await;
        let track = run.config.track_performance;
        let result = report::assemble(plan, run, origin, planned_at, Instant::now());
        self.finish(result, track, &options, &span)
    }

    /// Runs the scheduler over `plan`, telling the sinks it starts; returns what it measured
    /// and when planning ended. `traced`: the execution's span is enabled.
    async fn schedule(
        &self,
        plan: &Plan,
        origin: Instant,
        options: &RunOptions<'_>,
        traced: bool,
    ) -> (crate::schedule::RunReport, Instant) {
        let planned_at = Instant::now();
        let sinks = self.sinks(options);
        if !sinks.is_empty() {
            let calls: Vec<&toolgraph_core::ToolCall> =
                plan.calls().iter().map(|c| &c.call).collect();
            for sink in &sinks {
                sink.on_plan(&calls);
            }
        }
        let started = Event::ExecutionStarted {
            calls: plan.len(),
            edges: plan.edges().len(),
        };
        for sink in &sinks {
            sink.on_event(&started);
        }
        let estimates = self.latency_estimates();
        // Adaptive limits that change during the run are told to the run's sinks.
        let watch = match &self.shared.throttle {
            Some(t) if !sinks.is_empty() => Some(LimitWatch::new(t, sinks.clone())),
            _ => None,
        };
        let mut sinks = sinks;
        if let Some(watch) = &watch {
            sinks.push(watch);
        }
        let scheduler = Scheduler::new(
            plan,
            &self.shared.tools,
            &self.shared.config,
            options.config.clone(),
            &self.shared.limiter,
            self.service.clone(),
            sinks,
            origin,
            &options.preset,
            |i| estimates[plan.calls()[i].tool],
        )
        .traced(traced)
        .with_approvals(self.approvals.clone(), options.execution_id.clone());
        (scheduler.run(&options.cancel).await, planned_at)
    }

    fn sinks<'s>(&'s self, options: &RunOptions<'s>) -> Vec<&'s dyn EventSink> {
        let mut sinks: Vec<&dyn EventSink> = Vec::new();
        if let Some(sink) = &self.sink {
            sinks.push(sink.as_ref());
        }
        if let Some(sink) = options.sink {
            sinks.push(sink);
        }
        sinks
    }

    /// Records the result in the history (when tracking) and on the execution's span, and
    /// tells the sinks the execution ended.
    fn finish(
        &self,
        result: ParallelExecutionResult,
        track: bool,
        options: &RunOptions<'_>,
        span: &tracing::Span,
    ) -> ParallelExecutionResult {
        trace::record_execution_end(span, result.success, result.total_time_ms, result.speedup);
        if track {
            self.with_history(|h| h.record(&result));
        }
        let finished = Event::ExecutionFinished {
            success: result.success,
        };
        for sink in self.sinks(options) {
            sink.on_event(&finished);
        }
        result
    }

    /// Expected run time per tool position: its mean so far, else the median of the known
    /// means, else 1 (all equal).
    fn latency_estimates(&self) -> Vec<f64> {
        let known: Vec<Option<f64>> = self.with_history(|h| {
            self.shared
                .tools
                .entries()
                .iter()
                .map(|e| h.mean_ms(&e.tool.spec().name))
                .collect()
        });
        let mut means: Vec<f64> = known.iter().flatten().copied().collect();
        means.sort_by(f64::total_cmp);
        let fallback = means.get(means.len() / 2).copied().unwrap_or(1.0);
        known.into_iter().map(|m| m.unwrap_or(fallback)).collect()
    }

    fn with_history<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        match self.shared.history.lock() {
            Ok(mut h) => f(&mut h),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Statistics over every execution of this executor.
    pub fn get_performance_stats(&self) -> PerformanceStats {
        self.with_history(|h| h.snapshot())
    }

    /// Positions of calls with no dependency in or out (seed API).
    pub fn identify_independent_calls(&self, calls: &[ToolCall]) -> Result<Vec<usize>, InputError> {
        Ok(self.plan(calls.to_vec())?.independent())
    }

    /// Positions of calls with at least one dependency in or out (seed API).
    pub fn identify_dependent_calls(&self, calls: &[ToolCall]) -> Result<Vec<usize>, InputError> {
        Ok(self.plan(calls.to_vec())?.dependent())
    }

    /// The dependency graph, by id, with every edge's reason (seed API).
    pub fn build_dependency_graph(
        &self,
        calls: &[ToolCall],
    ) -> Result<DependencyGraph, InputError> {
        Ok(DependencyGraph::of(&self.plan(calls.to_vec())?))
    }

    /// Positions grouped by level, e.g. `[[0,1,2],[3,4],[5]]` (seed API).
    pub fn topological_sort(&self, calls: &[ToolCall]) -> Result<Vec<Vec<usize>>, InputError> {
        Ok(self.plan(calls.to_vec())?.level_groups())
    }
}
