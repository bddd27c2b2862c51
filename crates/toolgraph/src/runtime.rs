//! [`Runtime`]: what every front end (the CLI now; the HTTP service, workers and the Python
//! package next) runs executions through. One per process, cheap to clone, shared by every
//! execution: it owns the executor (tools, live configuration, the shared limiter, the layer
//! stack, the history), the store, and the MCP servers the tools talk to.
//!
//! It owns recording too: [`Runtime::execute`] writes the execution ahead (every call
//! pending, every edge) before anything runs, records starts and ends as they happen (a call
//! that must not run twice waits for its start to be durable), and finishes the record from
//! what was stored; [`Runtime::resume`] classifies what a crash left and runs the rest;
//! [`Runtime::batch_runner`] records a chat's turns the same way, under one session.
//!
//! An execution is run by one process at a time: the runtime holds the store's lease on each
//! execution it records (renewed every [`LEASE_RENEW`]) and `resume` must take it — refused
//! while the holder is alive, granted once its heartbeat is older than the lease timeout
//! ([`LEASE_TIMEOUT`] unless [`Runtime::with_lease_timeout`] says otherwise), so no call runs
//! twice because two processes ran one execution.
//!
//! A store that fails while an execution runs never stops it (the store's recorder gives
//! up after bounded retries and lets every call go on): once the run is over, the runtime
//! tries once more to complete the record from the results, and reports what went wrong —
//! and whether the stored record is complete — in [`Execution::recording_error`] and the
//! result's `metadata.recording_error`.
//!
//! Invariant: front ends translate input into a runtime call and its result into output;
//! nothing here prints, reads the environment or exits.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use toolgraph_core::{
    CallError, CallStatus, ErrorKind, EventSink, InputError, ParallelExecutionResult,
    ParallelExecutorConfig, ToolCall, ToolSet,
};
use toolgraph_engine::{CancellationToken, ParallelExecutor, Plan, Preset, RunOptions};
use toolgraph_llm::BatchRunner;
use toolgraph_mcp::McpServer;
use toolgraph_store::{
    Claim, ExecutionRecorder, ExecutionStore, ResumePoint, StoreError, StoredExecution,
};
use tracing::Instrument;

use crate::{Config, SetupError};

/// How often a runtime renews the lease of an execution it runs.
pub const LEASE_RENEW: Duration = Duration::from_secs(2);

/// How old a holder's last heartbeat must be before another process may take its lease:
/// five missed renewals.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes a fresh event sink for each execution (see [`Runtime::with_sink_per_execution`]).
pub type SinkFactory = Arc<dyn Fn() -> Arc<dyn EventSink> + Send + Sync>;

/// The process-wide runtime.
#[derive(Clone)]
pub struct Runtime {
    executor: ParallelExecutor,
    /// A sink of its own for each execution, besides the executor's.
    per_execution: Option<SinkFactory>,
    store: Option<Arc<dyn ExecutionStore>>,
    servers: Arc<Vec<Arc<McpServer>>>,
    /// This runtime's name as a lease holder, unique per runtime.
    owner: Arc<str>,
    lease_timeout: Duration,
    /// The cluster's dispatch layer, when calls run on workers (`[cluster] nats_url`).
    cluster: Option<toolgraph_cluster::RemoteLayer>,
    /// The cache of idempotent calls (`[cache] enabled`).
    cache: Option<toolgraph_cache::CacheLayer>,
}

/// A lease holder's name: the process, the host, and a random part (two runtimes in one
/// process are two owners).
fn owner_name() -> Arc<str> {
    let host = hostname().unwrap_or_else(|| "?".to_owned());
    let unique = uuid::Uuid::new_v4().simple().to_string();
    format!("pid {} on {host} ({})", std::process::id(), &unique[..8]).into()
}

/// This host's name, as lease owners carry it.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

/// True when `owner` names a process of this host that no longer exists (a crash, a
/// SIGKILL): its lease may be taken at once. Unsure (another host, a name of another form,
/// a reused pid) means no.
fn died_here(owner: &str) -> bool {
    let Some(rest) = owner.strip_prefix("pid ") else {
        return false;
    };
    let Some((pid, rest)) = rest.split_once(" on ") else {
        return false;
    };
    let Some((host, _)) = rest.rsplit_once(" (") else {
        return false;
    };
    let Some(here) = hostname() else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == here
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Renews a lease until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(store: Arc<dyn ExecutionStore>, id: String, owner: Arc<str>) -> Heartbeat {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                match store.heartbeat(&id, &owner).await {
                    Ok(true) => {}
                    // Taken over (this process was presumed dead) or the store failed: the
                    // run goes on; its record may be finished by another process.
                    Ok(false) => {
                        tracing::warn!(execution = %id, "lost the execution's lease");
                        return;
                    }
                    Err(e) => tracing::warn!(execution = %id, error = %e, "lease heartbeat failed"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Told an execution's id once it is recorded (see [`ExecuteOptions::on_begin`]).
pub type OnBegin = Arc<dyn Fn(&str) + Send + Sync>;

/// Per-execution choices.
#[derive(Default, Clone)]
pub struct ExecuteOptions {
    /// Fires to cancel the execution: unfinished calls end `cancelled`, and the record says
    /// so — the execution is stored `cancelled`, and [`Runtime::resume`] finishes it.
    pub cancel: CancellationToken,
    /// The session (a chat) the execution belongs to.
    pub session: Option<String>,
    /// The execution's own limits and policies, layered under the runtime's shared limits.
    pub config: Option<Arc<ParallelExecutorConfig>>,
    /// A sink of this execution's own (a server's live event log), besides the runtime's
    /// sinks and the store's recorder: it sees this execution's plan, events and outcomes
    /// only. Its `before_start` futures are awaited after the recorder's.
    pub sink: Option<Arc<dyn EventSink>>,
    /// Called once with the execution's id as soon as it is recorded (written ahead and
    /// claimed), before any call runs — what a server answers a client that does not wait.
    /// Not called when the runtime records nothing, nor by `resume` (its caller names the id).
    pub on_begin: Option<OnBegin>,
}

/// One execution's outcome.
#[derive(Debug, Clone)]
pub struct Execution {
    /// What ran, with its figures (its `metadata.execution_id` names the record).
    pub result: ParallelExecutionResult,
    /// The stored execution's id, when it was recorded.
    pub id: Option<String>,
    /// Why recording did not go as promised (the result is complete regardless): the
    /// store failed while the calls ran, or calls went ahead before their start was
    /// durable. The text says whether the stored record is complete. Also in the result's
    /// `metadata.recording_error`.
    pub recording_error: Option<String>,
}

/// What `resume` did with each call a crash left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResumeCounts {
    /// Calls that had ended: their recorded outcome is kept (outputs feed dependants).
    pub kept: usize,
    /// Calls running at the crash whose tool is idempotent: run again.
    pub rerun: usize,
    /// Calls running at the crash whose tool is not idempotent: not run again, reported
    /// `interrupted`.
    pub interrupted: usize,
}

/// A resumed execution: as stored now, its figures covering every run.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The execution, rebuilt from the store after this run.
    pub stored: StoredExecution,
    /// What was done with each call.
    pub counts: ResumeCounts,
}

/// Why the runtime could not run or resume an execution.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The batch was rejected before anything ran.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The store failed before anything ran (or, for resume, while reading what is there).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Resume was asked of a runtime without a store.
    #[error("no store is configured (recording is off)")]
    NoStore,
    /// Every call of the execution has ended.
    #[error("execution {0} has no call left to run: nothing to resume")]
    NothingToResume(String),
    /// Another live process runs the execution: resuming it would run calls twice.
    #[error(
        "execution {id} is being run by {owner} (its last heartbeat {age_ms} ms ago); resume \
         refuses to run its calls a second time — wait for it to end, or resume after it has \
         been silent for {timeout_ms} ms"
    )]
    Owned {
        /// The execution.
        id: String,
        /// Who runs it.
        owner: String,
        /// How long ago that owner's last heartbeat was.
        age_ms: i64,
        /// The lease timeout after which it counts as crashed.
        timeout_ms: u128,
    },
}

impl Runtime {
    /// The runtime a configuration describes: its tools (MCP servers connected), its limits,
    /// its store when recording is on, and — when `[cluster] nats_url` is set — the
    /// cluster's dispatch layer, so that every call runs on the namespace's workers.
    pub async fn start(config: &Config) -> Result<Runtime, SetupError> {
        Self::start_with_tools(config, Vec::new()).await
    }

    /// [`Runtime::start`] with an embedder's own tools besides the configured ones (the
    /// Python package's functions), under the same limits, overrides and store.
    pub async fn start_with_tools(
        config: &Config,
        extra: Vec<Arc<dyn toolgraph_core::Tool>>,
    ) -> Result<Runtime, SetupError> {
        let (mut executor, servers) = crate::build_executor_with(config, extra).await?;
        let store = if config.store.record {
            Some(
                toolgraph_store::open(&config.store.url)
                    .await
                    .map_err(|source| SetupError::Store {
                        url: toolgraph_store::hide_password(&config.store.url),
                        source,
                    })
                    .inspect(|store| tracing::info!(store = %store.describe(), "store opened"))?,
            )
        } else {
            None
        };
        // Outside the cluster's dispatch: a hit never leaves this process, and a cluster
        // whose coordinators share a Redis cache shares its entries and flights.
        let cache = crate::cache_layer(config, store.as_ref(), &servers).await?;
        if let Some(layer) = &cache {
            executor = executor.layer(Arc::new(layer.clone()));
        }
        let mut cluster = None;
        if let Some(options) = crate::cluster_options(config)? {
            let remote = toolgraph_cluster::RemoteLayer::connect(&options).await?;
            tracing::info!(
                coordinator = remote.coordinator(),
                "calls run on the cluster's workers"
            );
            executor = executor.layer(Arc::new(remote.clone()));
            cluster = Some(remote);
        }
        Ok(Runtime {
            executor,
            per_execution: None,
            store,
            servers: Arc::new(servers),
            owner: owner_name(),
            lease_timeout: LEASE_TIMEOUT,
            cluster,
            cache,
        })
    }

    /// A runtime over an executor and (optionally) a store, for embedders and tests.
    pub fn new(executor: ParallelExecutor, store: Option<Arc<dyn ExecutionStore>>) -> Self {
        Runtime {
            executor,
            per_execution: None,
            store,
            servers: Arc::new(Vec::new()),
            owner: owner_name(),
            lease_timeout: LEASE_TIMEOUT,
            cluster: None,
            cache: None,
        }
    }

    /// This runtime, counting a lease holder as crashed once its heartbeat is older than
    /// `timeout` (default [`LEASE_TIMEOUT`]; keep it several times [`LEASE_RENEW`]).
    pub fn with_lease_timeout(&self, timeout: Duration) -> Runtime {
        Runtime {
            lease_timeout: timeout,
            ..self.clone()
        }
    }

    /// This runtime's name as the holder of the executions it runs.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// This runtime recording into `store` (or not at all). The clone shares everything else.
    pub fn with_store(&self, store: Option<Arc<dyn ExecutionStore>>) -> Runtime {
        Runtime {
            store,
            ..self.clone()
        }
    }

    /// This runtime, also sending every execution's events to `sink` (a progress display).
    /// The clone shares everything else.
    pub fn with_sink(&self, sink: Arc<dyn EventSink>) -> Runtime {
        Runtime {
            executor: self.executor.clone().with_sink(sink),
            ..self.clone()
        }
    }

    /// This runtime, giving every execution a sink of its own from `make` (called once per
    /// execution, before it starts). Unlike [`with_sink`](Runtime::with_sink), whose one
    /// sink sees the events of every execution with nothing to tell them apart, each sink
    /// made here sees one execution's plan and events only — what a display needs when
    /// executions run at once (a chat's early calls). It takes the place of a sink given
    /// to `with_sink`. The clone shares everything else.
    pub fn with_sink_per_execution(&self, make: SinkFactory) -> Runtime {
        Runtime {
            per_execution: Some(make),
            ..self.clone()
        }
    }

    /// This runtime, asking or refusing calls before they run: `policy`, answered by
    /// `approver` where it says `ask` (none: such calls are denied, saying nothing can ask).
    /// Clones of the returned runtime share the "always" answers.
    pub fn with_approvals(
        &self,
        policy: toolgraph_core::ApprovalPolicy,
        approver: Option<toolgraph_core::SharedApprover>,
    ) -> Runtime {
        let approvals = Arc::new(toolgraph_engine::Approvals::new(policy, approver));
        Runtime {
            executor: self.executor.clone().with_approvals(approvals),
            ..self.clone()
        }
    }

    /// The executor: tools, configuration, shared limiter, history.
    pub fn executor(&self) -> &ParallelExecutor {
        &self.executor
    }

    /// The cluster's dispatch layer, when calls run on workers.
    pub fn cluster(&self) -> Option<&toolgraph_cluster::RemoteLayer> {
        self.cluster.as_ref()
    }

    /// The cache of idempotent calls, when `[cache] enabled`.
    pub fn cache(&self) -> Option<&toolgraph_cache::CacheLayer> {
        self.cache.as_ref()
    }

    /// Before the process exits: makes sure what must reach others has (the cancellations
    /// of calls running on workers). Nothing to do for a local runtime.
    pub async fn settle(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.flush().await;
        }
    }

    /// The store, when recording is on.
    pub fn store(&self) -> Option<&Arc<dyn ExecutionStore>> {
        self.store.as_ref()
    }

    /// The MCP servers the tools talk to.
    pub fn mcp_servers(&self) -> &[Arc<McpServer>] {
        &self.servers
    }

    /// Checks a batch and builds its plan, without running anything.
    pub fn plan(&self, calls: Vec<ToolCall>) -> Result<Plan, InputError> {
        self.executor.plan(calls)
    }

    /// Plans and runs a batch (recorded when the runtime has a store).
    pub async fn execute_calls(
        &self,
        calls: Vec<ToolCall>,
        options: ExecuteOptions,
    ) -> Result<Execution, RuntimeError> {
        let plan = self.plan(calls)?;
        self.execute(&plan, options).await
    }

    /// Runs a planned batch. With a store, the execution is written ahead before anything
    /// runs (a failure there is an error, and nothing ran); a store that fails while the
    /// calls run, or a failure to finish the record afterwards, is reported in
    /// [`Execution::recording_error`], never by losing the result or stopping the calls.
    pub async fn execute(
        &self,
        plan: &Plan,
        options: ExecuteOptions,
    ) -> Result<Execution, RuntimeError> {
        let Some(store) = &self.store else {
            let result = self.run(plan, options, None, Vec::new(), None).await;
            return Ok(Execution {
                result,
                id: None,
                recording_error: None,
            });
        };
        let config = options
            .config
            .clone()
            .unwrap_or_else(|| self.executor.config());
        let id = store
            .begin_execution(plan, &config, options.session.as_deref())
            .await?;
        // A fresh record: the claim is granted (it only marks this process as the runner).
        store.claim(&id, &self.owner, self.lease_ms(), None).await?;
        let heartbeat = Heartbeat::start(store.clone(), id.clone(), self.owner.clone());
        if let Some(on_begin) = &options.on_begin {
            on_begin(&id);
        }
        let recorder = store.recorder(&id, plan.len(), Vec::new(), 0.0);
        let cancel = options.cancel.clone();
        let mut result = self
            .run(
                plan,
                options,
                Some(recorder.as_sink()),
                Vec::new(),
                Some(&id),
            )
            .await;
        let mut recording_error =
            match finish_record(&**store, &id, &*recorder, &result, Vec::new(), 0.0).await {
                Ok((_, problem)) => problem,
                Err(e) => Some(e.to_string()),
            };
        self.record_adaptive_limits(&**store, &id).await;
        if was_cancelled(&cancel, &result)
            && let Err(e) = store.mark_cancelled(&id).await
        {
            recording_error = Some(format!("marking the execution cancelled failed: {e}"));
        }
        drop(heartbeat);
        // Best effort: a lease left behind lapses by itself.
        let _ = store.release(&id, &self.owner).await;
        result.metadata.execution_id = Some(id.clone());
        result.metadata.recording_error = recording_error.clone();
        Ok(Execution {
            result,
            id: Some(id),
            recording_error,
        })
    }

    async fn run(
        &self,
        plan: &Plan,
        options: ExecuteOptions,
        sink: Option<&dyn EventSink>,
        preset: Vec<Option<Preset>>,
        execution_id: Option<&str>,
    ) -> ParallelExecutionResult {
        // A clone shares the limiter, tools and history: only the sink is this execution's.
        let own;
        let executor = match &self.per_execution {
            Some(make) => {
                own = self.executor.clone().with_sink(make());
                &own
            }
            None => &self.executor,
        };
        let own_sink = options.sink.clone();
        let tee;
        let sink = match &own_sink {
            Some(second) => {
                tee = Tee {
                    first: sink,
                    second: &**second,
                };
                Some(&tee as &dyn EventSink)
            }
            None => sink,
        };
        tracing::info!(calls = plan.len(), "execution started");
        let result = executor
            .execute_plan_with(
                plan,
                RunOptions {
                    cancel: options.cancel,
                    sink,
                    preset,
                    config: options.config,
                    // The engine's `execution` span carries them; the approver is told the id.
                    execution_id: execution_id.map(Arc::from),
                    session_id: options.session,
                },
            )
            .await;
        tracing::info!(
            success = result.success,
            makespan_ms = result.total_time_ms,
            speedup = result.speedup,
            "execution ended"
        );
        result
    }

    /// Finishes execution `id`, which a crash (or Ctrl-C) interrupted: calls that ended keep
    /// their recorded outcome, calls that never started run, calls that were running run
    /// again only when their tool is idempotent for their arguments (otherwise they end
    /// `interrupted`: what they did is unknown). The batch runs with the limits it was
    /// recorded with, under the runtime's shared limits, with today's tools. A store that
    /// fails while it runs does not stop it; if the record cannot be completed afterwards,
    /// that is the error.
    pub async fn resume(&self, id: &str, options: ExecuteOptions) -> Result<Resumed, RuntimeError> {
        let store = self.store.as_ref().ok_or(RuntimeError::NoStore)?;
        let point = store.resume_point(id).await?;
        if point.ended.iter().all(Option::is_some) {
            return Err(RuntimeError::NothingToResume(id.to_owned()));
        }
        let plan = self.plan(point.calls.clone())?;
        let mut claim = store.claim(id, &self.owner, self.lease_ms(), None).await?;
        if let Claim::Held { owner, .. } = &claim
            && died_here(owner)
        {
            // Its process is gone from this host: no need to wait for the timeout. Only
            // one claimant can replace that owner.
            let dead = owner.clone();
            claim = store
                .claim(id, &self.owner, self.lease_ms(), Some(&dead))
                .await?;
        }
        if let Claim::Held {
            owner,
            heartbeat_age_ms,
        } = claim
        {
            return Err(RuntimeError::Owned {
                id: id.to_owned(),
                owner,
                age_ms: heartbeat_age_ms,
                timeout_ms: self.lease_timeout.as_millis(),
            });
        }
        let heartbeat = Heartbeat::start(store.clone(), id.to_owned(), self.owner.clone());
        // What was stored may have changed while the lease was with another process.
        let point = store.resume_point(id).await?;
        if point.ended.iter().all(Option::is_some) {
            let _ = store.release(id, &self.owner).await;
            return Err(RuntimeError::NothingToResume(id.to_owned()));
        }
        let (preset, counts) = classify_resume(&point, self.executor.tools());
        let skip: Vec<bool> = point.ended.iter().map(Option::is_some).collect();
        let offset_ms = (toolgraph_store::now_ms() - point.created_at).max(0) as f64;
        store.mark_resumed(id).await?;
        let recorder = store.recorder(id, plan.len(), skip.clone(), offset_ms);
        let options = ExecuteOptions {
            config: Some(
                options
                    .config
                    .unwrap_or_else(|| Arc::new(point.config.clone())),
            ),
            ..options
        };
        let cancel = options.cancel.clone();
        let result = self
            .run(&plan, options, Some(recorder.as_sink()), preset, Some(id))
            .instrument(tracing::info_span!("resume", id = %id))
            .await;
        let mut finished = finish_record(&**store, id, &*recorder, &result, skip, offset_ms).await;
        if finished.is_ok() {
            self.record_adaptive_limits(&**store, id).await;
        }
        let mut marked = Ok(());
        if let (Ok((stored, _)), true) = (&mut finished, was_cancelled(&cancel, &result)) {
            // Cancelled again: resumable again.
            marked = store.mark_cancelled(id).await;
            stored.summary.status = "cancelled".to_owned();
        }
        drop(heartbeat);
        let _ = store.release(id, &self.owner).await;
        let (mut stored, recording_error) = finished?;
        marked?;
        stored.result.metadata.execution_id = Some(id.to_owned());
        // Why recording did not go as promised while it ran (the record is complete).
        stored.result.metadata.recording_error = recording_error;
        stored.result.metadata.resume = Some(toolgraph_core::ResumeMetadata {
            kept: counts.kept,
            rerun: counts.rerun,
            interrupted: counts.interrupted,
        });
        Ok(Resumed { stored, counts })
    }

    /// Records the adaptive limits in force now as execution `id`'s (for `toolgraph
    /// stats`), when adaptive concurrency is on. Best effort: they are statistics, so a
    /// failure is a warning, never the execution's error.
    async fn record_adaptive_limits(&self, store: &dyn ExecutionStore, id: &str) {
        let Some(throttle) = self.executor.throttle() else {
            return;
        };
        let limits: std::collections::BTreeMap<String, usize> = throttle
            .limits()
            .into_iter()
            .map(|l| (l.key, l.limit))
            .collect();
        if limits.is_empty() {
            return;
        }
        if let Err(e) = store.record_adaptive_limits(id, &limits).await {
            tracing::warn!(execution = id, error = %e, "recording the adaptive limits failed");
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease_timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs a chat's batches (one per turn, and one per call started early) through this
    /// runtime, each written ahead into the store under `session` with its real plan —
    /// dependencies, priorities and timeouts as the model sent them.
    pub fn batch_runner(&self, session: Option<String>) -> Arc<dyn BatchRunner> {
        Arc::new(SessionRunner {
            runtime: self.clone(),
            session,
        })
    }

    /// A new session id.
    pub fn new_session_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Two sinks as one: the recorder (if any) first, then the execution's own sink.
struct Tee<'a> {
    first: Option<&'a dyn EventSink>,
    second: &'a dyn EventSink,
}

impl EventSink for Tee<'_> {
    fn on_event(&self, event: &toolgraph_core::Event) {
        if let Some(first) = self.first {
            first.on_event(event);
        }
        self.second.on_event(event);
    }

    fn on_plan(&self, calls: &[&ToolCall]) {
        if let Some(first) = self.first {
            first.on_plan(calls);
        }
        self.second.on_plan(calls);
    }

    fn on_outcome(&self, position: usize, outcome: &toolgraph_core::CallOutcome<'_>) {
        if let Some(first) = self.first {
            first.on_outcome(position, outcome);
        }
        self.second.on_outcome(position, outcome);
    }

    fn before_start(&self, position: usize, idempotent: bool) -> Option<BoxFuture<'static, ()>> {
        let first = self
            .first
            .and_then(|first| first.before_start(position, idempotent));
        let second = self.second.before_start(position, idempotent);
        match (first, second) {
            (Some(a), Some(b)) => Some(Box::pin(async move {
                a.await;
                b.await;
            })),
            (a, b) => a.or(b),
        }
    }
}

/// True when `cancel` stopped the run: it fired, and calls ended `cancelled` (a token that
/// fires after every call ended cancelled nothing).
fn was_cancelled(cancel: &CancellationToken, result: &ParallelExecutionResult) -> bool {
    cancel.is_cancelled()
        && result
            .results
            .iter()
            .any(|c| c.status == CallStatus::Cancelled)
}

/// Closes `recorder` and finishes execution `id` from what was stored. A recording that
/// stopped part-way (the store failed while the calls ran) is first completed from
/// `result` — one more try, now that the run is over; `skip` and `offset_ms` are the
/// recorder's. Returns the finished execution and, when recording did not go as promised,
/// why (saying the record is complete); an error when the record could not be completed.
async fn finish_record(
    store: &dyn ExecutionStore,
    id: &str,
    recorder: &dyn ExecutionRecorder,
    result: &ParallelExecutionResult,
    skip: Vec<bool>,
    offset_ms: f64,
) -> Result<(StoredExecution, Option<String>), StoreError> {
    let problem = match recorder.close().await {
        Ok(_) => None,
        // Every row was written; some calls did not wait for theirs.
        Err(late @ StoreError::NotDurable { .. }) => Some(late.to_string()),
        Err(stopped) => match store.record_outcomes(id, result, skip, offset_ms).await {
            Ok(_) | Err(StoreError::NotDurable { .. }) => Some(format!(
                "{stopped}; the record was completed from the results after the run"
            )),
            Err(again) => {
                let again = match again {
                    StoreError::RecordingStopped { cause, .. } => cause,
                    other => other.to_string(),
                };
                return Err(match stopped {
                    StoreError::RecordingStopped { id, written, cause } => {
                        let again = if again == cause {
                            "for the same reason".to_owned()
                        } else {
                            format!("({again})")
                        };
                        StoreError::RecordingStopped {
                            id,
                            written,
                            cause: format!(
                                "{cause}; completing the record from the results failed too {again}: the stored record is incomplete"
                            ),
                        }
                    }
                    other => other,
                });
            }
        },
    };
    let stored = store.finish_execution(id).await?;
    Ok((stored, problem))
}

/// What resume does with each call: keep its outcome, run it (again), or report it
/// interrupted.
pub fn classify_resume(
    point: &ResumePoint,
    tools: &ToolSet,
) -> (Vec<Option<Preset>>, ResumeCounts) {
    let mut counts = ResumeCounts::default();
    let preset = point
        .ended
        .iter()
        .enumerate()
        .map(|(i, ended)| {
            let call = &point.calls[i];
            match ended {
                Some(p) => {
                    counts.kept += 1;
                    Some(p.clone())
                }
                None if point.states[i] == "running" => {
                    let idempotent = tools
                        .get(&call.name)
                        .is_some_and(|t| t.tool.is_idempotent(&call.arguments));
                    if idempotent {
                        counts.rerun += 1;
                        None
                    } else {
                        counts.interrupted += 1;
                        Some(Preset {
                            status: CallStatus::Interrupted,
                            output: None,
                            error: Some(CallError {
                                kind: ErrorKind::Interrupted,
                                message: format!(
                                    "the process stopped while this call ran; {} is not idempotent, so it was not run again",
                                    call.name
                                ),
                            }),
                            attempts: 1,
                        })
                    }
                }
                None => None,
            }
        })
        .collect();
    (preset, counts)
}

/// A chat's batches, recorded under one session.
struct SessionRunner {
    runtime: Runtime,
    session: Option<String>,
}

impl BatchRunner for SessionRunner {
    fn tools(&self) -> &ToolSet {
        self.runtime.executor.tools()
    }

    fn run_batch(
        &self,
        calls: Vec<ToolCall>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<ParallelExecutionResult, InputError>> {
        let runtime = self.runtime.clone();
        let session = self.session.clone();
        Box::pin(async move {
            let plan = runtime.plan(calls)?;
            let options = ExecuteOptions {
                session,
                cancel,
                ..ExecuteOptions::default()
            };
            match runtime.execute(&plan, options.clone()).await {
                // A recording error is in the result's metadata already.
                Ok(execution) => Ok(execution.result),
                Err(RuntimeError::Input(e)) => Err(e),
                // The store failed before anything ran: the turn still runs, unrecorded.
                Err(e) => {
                    let mut result = runtime.run(&plan, options, None, Vec::new(), None).await;
                    result.metadata.recording_error = Some(e.to_string());
                    Ok(result)
                }
            }
        })
    }
}
