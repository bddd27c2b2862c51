//! A worker process's loop: pull calls of the tools it serves, run them through the same
//! layers a local call gets, answer the coordinator, acknowledge.
//!
//! Per served tool, one task pulls from the tool's durable consumer (created or updated
//! here with the tool's cluster-wide limit as `max_ack_pending`) in batches no larger than
//! the worker's concurrency. Each call then:
//!
//! 1. is dropped (acknowledged, not run) if its coordinator already cancelled it;
//! 2. when it is not idempotent, is *claimed* from its coordinator first (a request): run
//!    only on "yes" — a call another worker started, or one nobody waits for, is not run;
//!    no answer (broker trouble) returns it to the stream for later;
//! 3. runs under the worker's concurrency, with progress acknowledgements every third of
//!    `ack_wait` so a long call keeps its lease, and stops if the coordinator cancels it;
//! 4. is answered ([`Reply::Done`], a request the coordinator confirms; sent again through
//!    broker trouble) and acknowledged right behind the answer's first send, on the same
//!    connection: a worker that dies before that leaves the call to be redelivered
//!    (idempotent) or reported interrupted.
//!
//! A heartbeat ([`WorkerInfo`]) goes into the namespace's bucket every `heartbeat`; on
//! stop the worker stops pulling, lets running calls finish within the drain time, and
//! removes its heartbeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use toolgraph_core::{CallContext, ToolSet};
use toolgraph_engine::layer::{CallPolicy, CallRequest, CallService, Meter};

use crate::wire::{Cancel, ClaimAnswer, Dispatch, Outcome, Reply, WorkerInfo};
use crate::{ClusterError, ClusterOptions, Connection, unix_ms};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The cluster.
    pub cluster: ClusterOptions,
    /// Its id (default: `<host>-<pid>-<4 random hex digits>`).
    pub id: Option<String>,
    /// Calls it runs at once at most.
    pub concurrency: usize,
    /// Serve only these tools (default: every tool of its configuration).
    pub tools: Option<Vec<String>>,
    /// How long running calls may take to finish once the worker is asked to stop.
    pub drain: Duration,
    /// Append one JSON line per call start and end here (`{"event", "tool", "call_id",
    /// "key", "worker", "at_us"}`, Unix µs; `event` is `start`, `end`, or `duplicate` for a
    /// call delivered again while it ran here), flushed at once: an audit of what ran where,
    /// and how tests measure overlap across workers.
    pub call_log: Option<std::path::PathBuf>,
}

impl WorkerOptions {
    /// Defaults: 64 calls at once, every tool, 30 s to drain.
    pub fn new(cluster: ClusterOptions) -> WorkerOptions {
        WorkerOptions {
            cluster,
            id: None,
            concurrency: 64,
            tools: None,
            drain: Duration::from_secs(30),
            call_log: None,
        }
    }
}

/// What a worker did, when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Calls it answered.
    pub completed: u64,
    /// Calls still running when the drain time ran out (left to redelivery).
    pub abandoned: usize,
}

/// A worker, connected and ready to serve.
pub struct Worker {
    connection: Connection,
    id: String,
    /// This process of the worker (unique per start).
    instance: String,
    tools: Arc<ToolSet>,
    served: Vec<String>,
    consumers: Vec<PullConsumer>,
    concurrency: usize,
    drain: Duration,
    service: Arc<dyn CallService>,
    call_log: Option<CallLog>,
}

/// The optional log of call starts and ends.
#[derive(Clone)]
struct CallLog(Arc<Mutex<std::fs::File>>);

impl CallLog {
    fn open(path: &std::path::Path) -> Result<CallLog, ClusterError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| CallLog(Arc::new(Mutex::new(f))))
            .map_err(|e| ClusterError::Config(format!("the call log {}: {e}", path.display())))
    }

    fn write(&self, event: &str, worker: &str, dispatch: &Dispatch) {
        use std::io::Write as _;
        let at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let line = serde_json::json!({
            "event": event,
            "tool": dispatch.tool,
            "call_id": dispatch.call_id,
            "key": dispatch.key,
            "worker": worker,
            "at_us": at_us,
        });
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(file, "{line}") {
            tracing::warn!("the call log: {e}");
        }
    }
}

/// What the tasks of one worker share.
struct State {
    id: String,
    instance: String,
    namespace: crate::Namespace,
    client: async_nats::Client,
    tools: Arc<ToolSet>,
    service: Arc<dyn CallService>,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, CancellationToken>>,
    cancelled: Mutex<Cancelled>,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    call_log: Option<CallLog>,
    link: Arc<crate::Link>,
    /// Raised when the worker stops taking calls.
    stopping: CancellationToken,
}

impl Worker {
    /// Checks the tools to serve, connects, and sets up one consumer per tool.
    pub async fn start(options: WorkerOptions, tools: ToolSet) -> Result<Worker, ClusterError> {
        if options.concurrency == 0 {
            return Err(ClusterError::Config(
                "--concurrency must be at least 1".into(),
            ));
        }
        // Served by their own names (an alias would name a subject nobody publishes on),
        // each once.
        let mut served: Vec<String> = Vec::new();
        match &options.tools {
            Some(names) => {
                let unknown: Vec<&str> = names
                    .iter()
                    .filter(|n| tools.get(n).is_none())
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    return Err(ClusterError::Config(format!(
                        "this worker's configuration has no tool {}; it has: {}",
                        unknown
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        tools.names().join(", ")
                    )));
                }
                for name in names {
                    if let Some(entry) = tools.get(name) {
                        served.push(entry.tool.spec().name.clone());
                    }
                }
            }
            None => served.extend(tools.entries().iter().map(|e| e.tool.spec().name.clone())),
        }
        let mut seen = std::collections::HashSet::new();
        served.retain(|n| seen.insert(n.clone()));
        if served.is_empty() {
            return Err(ClusterError::Config("this worker serves no tool".into()));
        }
        let id = options.id.clone().unwrap_or_else(default_id);
        let id_ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && !id.ends_with('.')
            && !id.contains("..")
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(ClusterError::Config(format!(
                "worker id `{id}`: use 1 to 128 ASCII letters, digits, `-`, `_` or `.` (a `.` \
                 neither first, last nor doubled)"
            )));
        }
        let call_log = options.call_log.as_deref().map(CallLog::open).transpose()?;
        let connection =
            Connection::open(&options.cluster, &format!("toolgraph worker {id}")).await?;
        let mut worker = Worker {
            connection,
            id,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            tools: Arc::new(tools),
            served,
            consumers: Vec::new(),
            concurrency: options.concurrency,
            drain: options.drain,
            service: toolgraph_engine::layer::stack(&[]),
            call_log,
        };
        for tool in worker.served.clone() {
            let consumer = worker.consumer(&tool).await?;
            worker.consumers.push(consumer);
        }
        Ok(worker)
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tools it serves.
    pub fn served(&self) -> &[String] {
        &self.served
    }

    /// The tool's consumer, created if missing. A worker with a cluster-wide limit for the
    /// tool sets it on the consumer (the last one started wins if two disagree); one
    /// without leaves an existing consumer as it is.
    async fn consumer(&self, tool: &str) -> Result<PullConsumer, ClusterError> {
        let options = &self.connection.options;
        let ns = &options.namespace;
        let limit = options
            .tool_limits
            .get(tool)
            .map(|l| i64::try_from(*l).unwrap_or(i64::MAX));
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(ns.consumer(tool)),
            description: Some(format!("toolgraph calls of tool {tool}")),
            filter_subject: ns.call_subject(tool),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: limit.unwrap_or(100_000),
            ..Default::default()
        };
        let stream = self
            .connection
            .jetstream
            .get_stream(ns.stream())
            .await
            .map_err(|e| options.broker_error(format!("the call stream: {e}")))?;
        let fail = |e: &dyn std::fmt::Display| {
            options.broker_error(format!("the consumer of tool `{tool}`: {e}"))
        };
        let mut consumer = match stream
            .get_consumer::<jetstream::consumer::pull::Config>(&ns.consumer(tool))
            .await
        {
            Ok(existing) => existing,
            Err(_) => stream
                .create_consumer(config.clone())
                .await
                .map_err(|e| fail(&e))?,
        };
        let current = consumer.cached_info().config.max_ack_pending;
        if let Some(limit) = limit
            && current != limit
        {
            tracing::info!(
                tool,
                from = current,
                to = limit,
                "setting the cluster-wide limit"
            );
            let mut update = config;
            // Keep what other workers set that this one does not care about.
            update.ack_wait = consumer.cached_info().config.ack_wait;
            consumer = stream.create_consumer(update).await.map_err(|e| fail(&e))?;
        }
        Ok(PullConsumer {
            tool: tool.to_owned(),
            // Progress every third of the consumer's own `ack_wait`, whoever set it.
            progress_every: (consumer.cached_info().config.ack_wait / 3)
                .max(Duration::from_millis(100)),
            consumer,
        })
    }

    /// Serves calls until `stop`; then drains and says goodbye.
    pub async fn run(self, stop: CancellationToken) -> Result<WorkerSummary, ClusterError> {
        let options = self.connection.options.clone();
        let state = Arc::new(State {
            id: self.id.clone(),
            instance: self.instance.clone(),
            namespace: options.namespace.clone(),
            client: self.connection.client.clone(),
            tools: self.tools.clone(),
            service: self.service.clone(),
            slots: Arc::new(Semaphore::new(self.concurrency)),
            running: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(Cancelled::default()),
            in_flight: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            call_log: self.call_log.clone(),
            link: self.connection.link.clone(),
            stopping: CancellationToken::new(),
        });
        let started_at_ms = unix_ms();
        let mut pullers = tokio::task::JoinSet::new();

        // Cancellations from every coordinator of the namespace, heard until the drain ends.
        let listening = CancellationToken::new();
        let mut cancels = self
            .connection
            .client
            .subscribe(options.namespace.cancel_subjects())
            .await
            .map_err(|e| options.broker_error(format!("subscribing to cancellations: {e}")))?;
        let listener = {
            let state = state.clone();
            let listening = listening.clone();
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        () = listening.cancelled() => return,
                        m = cancels.next() => m,
                    };
                    let Some(message) = message else { return };
                    if let Ok(cancel) = serde_json::from_slice::<Cancel>(&message.payload) {
                        state.cancel(cancel.key);
                    }
                }
            })
        };

        // Heartbeats.
        let heartbeat = {
            let state = state.clone();
            let store = self.connection.workers.clone();
            let every = options.heartbeat_period();
            let mut info = WorkerInfo {
                id: self.id.clone(),
                instance: self.instance.clone(),
                heartbeat_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                host: host_name(),
                pid: std::process::id(),
                tools: self.served.clone(),
                concurrency: self.concurrency,
                in_flight: 0,
                completed: 0,
                started_at_ms,
                heartbeat_at_ms: started_at_ms,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let beating = CancellationToken::new();
            let stop_beating = beating.clone();
            let task = tokio::spawn(async move {
                loop {
                    info.in_flight = state.in_flight.load(Ordering::Relaxed);
                    info.completed = state.completed.load(Ordering::Relaxed);
                    info.heartbeat_at_ms = unix_ms();
                    match serde_json::to_vec(&info) {
                        Ok(bytes) => {
                            if let Err(e) = store.put(&info.id, bytes.into()).await {
                                tracing::warn!("heartbeat: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("heartbeat: {e}"),
                    }
                    tokio::select! {
                        () = beating.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                }
            });
            (task, stop_beating)
        };

        let batch = self.concurrency.min(256);
        for consumer in self.consumers {
            let state = state.clone();
            pullers.spawn(async move {
                pull(consumer, batch, state).await;
            });
        }
        tracing::info!(worker = %self.id, tools = ?self.served, "serving");

        stop.cancelled().await;
        tracing::info!(worker = %self.id, "stopping: no new calls; draining running ones");
        state.stopping.cancel();
        while pullers.join_next().await.is_some() {}
        // Running calls hold a slot each: all slots back means all calls answered.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.drain, state.slots.acquire_many(all)).await;
        let abandoned = if drained.is_ok() {
            0
        } else {
            state.in_flight.load(Ordering::Relaxed)
        };
        listening.cancel();
        let _ = listener.await;
        heartbeat.1.cancel();
        let _ = heartbeat.0.await;
        let bye = async {
            if let Err(e) = self.connection.workers.delete(&self.id).await {
                tracing::warn!("removing heartbeat: {e}");
            }
            let _ = self.connection.client.flush().await;
        };
        // A broker that is away must not keep a stopping worker.
        let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
        Ok(WorkerSummary {
            completed: state.completed.load(Ordering::Relaxed),
            abandoned,
        })
    }
}

/// One served tool's consumer and how often its running calls renew their lease.
struct PullConsumer {
    tool: String,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    progress_every: Duration,
}

/// Calls cancelled before they arrived here: looked up by key, forgotten after 10 minutes
/// (oldest first).
#[derive(Default)]
struct Cancelled {
    keys: std::collections::HashSet<String>,
    order: std::collections::VecDeque<(Instant, String)>,
}

impl Cancelled {
    fn insert(&mut self, key: String) {
        let now = Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < Duration::from_secs(600) && self.order.len() < 100_000 {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        if self.keys.insert(key.clone()) {
            self.order.push_back((now, key));
        }
    }

    fn take(&mut self, key: &str) -> bool {
        self.keys.remove(key)
    }
}

/// Pulls calls of one tool until the worker stops; each call runs in its own task.
async fn pull(consumer: PullConsumer, batch: usize, state: Arc<State>) {
    let tool = consumer.tool.clone();
    let outstanding = Arc::new(Semaphore::new(batch));
    let stopping = state.stopping.clone();
    loop {
        let messages = consumer
            .consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages();
        let mut messages = tokio::select! {
            () = stopping.cancelled() => return,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("pulling calls of {tool}: {e}; trying again");
                    tokio::select! {
                        () = stopping.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        loop {
            // At most `batch` calls of this tool pulled and not yet answered here: a tool
            // waiting for calls never holds a slot another tool's call could use.
            let pulled = tokio::select! {
                () = stopping.cancelled() => return,
                p = outstanding.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = stopping.cancelled() => return,
                n = messages.next() => n,
            };
            match next {
                Some(Ok(message)) => {
                    let state = state.clone();
                    let tool = tool.clone();
                    let progress_every = consumer.progress_every;
                    tokio::spawn(async move {
                        state.take(message, &tool, progress_every).await;
                        drop(pulled);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!("pulling calls of {tool}: {e}");
                    if e.kind() != jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat {
                        // Let the stream recover (it re-requests), but do not spin.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                None => break,
            }
        }
    }
}

/// After a reconnection, a coordinator's subscriptions may not be back yet, and a
/// coordinator may itself be reconnecting: "no responders" is believed only when this
/// worker has been connected that long and has heard it for that long.
const RESUBSCRIBE_TIME: Duration = Duration::from_secs(5);

/// How long a worker keeps asking for a claim or repeating an answer.
const PERSIST: Duration = Duration::from_secs(60);

impl State {
    /// True when "no responders" first heard at `since` can be believed.
    fn gone(&self, since: Instant) -> bool {
        since.elapsed() >= RESUBSCRIBE_TIME
            && self
                .link
                .up_since()
                .is_some_and(|up| up.elapsed() >= RESUBSCRIBE_TIME)
    }

    fn cancel(&self, key: String) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        match running {
            Some(token) => token.cancel(),
            None => self
                .cancelled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key),
        }
    }

    /// A call pulled for `tool`: waits for a slot (renewing its lease meanwhile), then
    /// serves it — unless the worker is stopping, which hands it back at once.
    async fn take(&self, message: jetstream::Message, tool: &str, progress_every: Duration) {
        let mut progress =
            tokio::time::interval_at(Instant::now() + progress_every, progress_every);
        let slot = loop {
            tokio::select! {
                biased;
                () = self.stopping.cancelled() => {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return;
                }
                s = self.slots.clone().acquire_owned() => match s {
                    Ok(s) => break s,
                    Err(_) => return,
                },
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        };
        self.handle(message, tool, progress).await;
        drop(slot);
    }

    async fn handle(
        &self,
        message: jetstream::Message,
        tool: &str,
        progress: tokio::time::Interval,
    ) {
        let dispatch: Dispatch = match serde_json::from_slice(&message.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("dropping a malformed call message: {e}");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        // What comes from the wire is checked: the tool is the one this consumer serves,
        // and the answer goes to the coordinator the key names, in this namespace.
        let Some(reply_to) = self.reply_subject(&dispatch.key) else {
            tracing::warn!(key = %dispatch.key, "dropping a call with a malformed key");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        };
        if dispatch.tool != tool {
            tracing::warn!(call = %dispatch.call_id, "dropping a call of `{}` delivered for `{tool}`", dispatch.tool);
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        let token = CancellationToken::new();
        let (cancelled, duplicate) = {
            // One lock order (cancelled, then running), both checked before a cancel can
            // land between them.
            let mut cancelled = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let was_cancelled = cancelled.take(&dispatch.key);
            let duplicate = running.contains_key(&dispatch.key);
            if !was_cancelled && !duplicate {
                running.insert(dispatch.key.clone(), token.clone());
            }
            (was_cancelled, duplicate)
        };
        if cancelled {
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        if duplicate {
            // Delivered again while it runs here (a progress acknowledgement was late): the
            // run in progress answers and acknowledges.
            if let Some(log) = &self.call_log {
                log.write("duplicate", &self.id, &dispatch);
            }
            return;
        }
        let key = dispatch.key.clone();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.serve(&message, dispatch, reply_to, token, progress)
            .await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// The reply subject of the coordinator a dispatch key names (`<32 hex>:<n>`).
    fn reply_subject(&self, key: &str) -> Option<String> {
        let (coordinator, n) = key.rsplit_once(':')?;
        let valid = coordinator.len() == 32
            && coordinator.bytes().all(|b| b.is_ascii_hexdigit())
            && n.parse::<u64>().is_ok();
        valid.then(|| self.namespace.reply_subject(coordinator))
    }

    async fn serve(
        &self,
        message: &jetstream::Message,
        mut dispatch: Dispatch,
        reply_to: String,
        token: CancellationToken,
        mut progress: tokio::time::Interval,
    ) {
        let Some(entry) = self.tools.get(&dispatch.tool) else {
            let failure = crate::wire::unavailable(format!(
                "worker {} does not serve tool `{}`",
                self.id, dispatch.tool
            ));
            let failure = Outcome::Failure(failure.into());
            self.answer(&dispatch, &reply_to, 0, failure, Some(message))
                .await;
            return;
        };
        if !dispatch.idempotent {
            match self
                .claim(message, &dispatch, &reply_to, &mut progress)
                .await
            {
                Claimed::Run => {}
                Claimed::Refused => {
                    let _ = message.ack_with(AckKind::Term).await;
                    return;
                }
                Claimed::Elsewhere => return,
                Claimed::Later => {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return;
                }
            }
        }
        if token.is_cancelled() {
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        let tool = entry.tool.clone();
        let blocking = tool.spec().traits.blocking;
        let ctx = CallContext::detached(&dispatch.call_id);
        let cancel_flag = ctx.cancel.clone();
        let meter = Arc::new(Meter::default());
        let request = CallRequest {
            position: 0,
            tool,
            args: Arc::new(std::mem::take(&mut dispatch.args)),
            ctx,
            policy: CallPolicy {
                timeout: dispatch.timeout_ms.map(Duration::from_millis),
                retry: dispatch.retry,
                idempotent: dispatch.idempotent,
                blocking,
            },
            gates: Vec::new(),
            meter: meter.clone(),
            slots: None,
        };
        if let Some(log) = &self.call_log {
            log.write("start", &self.id, &dispatch);
        }
        let mut call = self.service.call(request);
        let result = loop {
            tokio::select! {
                biased;
                () = token.cancelled() => break None,
                r = &mut call => break Some(r),
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        };
        let Some(result) = result else {
            // The coordinator no longer waits: stop the tool and release the call.
            cancel_flag.cancel();
            drop(call);
            if let Some(log) = &self.call_log {
                log.write("end", &self.id, &dispatch);
            }
            let _ = message.ack().await;
            return;
        };
        if let Some(log) = &self.call_log {
            log.write("end", &self.id, &dispatch);
        }
        let outcome = match result {
            Ok(value) => Outcome::Output(value),
            Err(failure) => Outcome::Failure(failure.into()),
        };
        // The answer goes out first, the acknowledgement right behind it on the same
        // connection (so the broker sees them in that order); the answer is then repeated
        // until the coordinator confirms it. Acknowledging without waiting for the
        // confirmation frees the tool's limit slot one round trip sooner.
        self.answer(
            &dispatch,
            &reply_to,
            meter.attempts(),
            outcome,
            Some(message),
        )
        .await;
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks the coordinator whether this worker may run a call that is not idempotent,
    /// renewing the call's lease while it asks; asks again through broker trouble.
    async fn claim(
        &self,
        message: &jetstream::Message,
        dispatch: &Dispatch,
        reply_to: &str,
        progress: &mut tokio::time::Interval,
    ) -> Claimed {
        let claim = Reply::Claim {
            key: dispatch.key.clone(),
            worker: self.id.clone(),
            instance: self.instance.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&claim) else {
            return Claimed::Refused;
        };
        let payload = bytes::Bytes::from(payload);
        let give_up = Instant::now() + PERSIST;
        let mut no_responders: Option<Instant> = None;
        loop {
            let asked = async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client.request(reply_to.to_owned(), payload.clone()),
                )
                .await
            };
            let asked = tokio::select! {
                a = asked => a,
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                    continue;
                }
            };
            match asked {
                Ok(Ok(answer)) => {
                    return match serde_json::from_slice::<ClaimAnswer>(&answer.payload) {
                        Ok(ClaimAnswer { run: true, .. }) => Claimed::Run,
                        Ok(ClaimAnswer {
                            elsewhere, reason, ..
                        }) => {
                            tracing::info!(
                                call = %dispatch.call_id,
                                "not run: {}",
                                reason.as_deref().unwrap_or("refused by its coordinator")
                            );
                            if elsewhere {
                                Claimed::Elsewhere
                            } else {
                                Claimed::Refused
                            }
                        }
                        Err(e) => {
                            tracing::warn!("claim answer for {}: {e}", dispatch.call_id);
                            Claimed::Refused
                        }
                    };
                }
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    let since = *no_responders.get_or_insert_with(Instant::now);
                    if self.gone(since) {
                        tracing::info!(call = %dispatch.call_id, "not run: its coordinator is gone");
                        return Claimed::Refused;
                    }
                }
                _ => no_responders = None,
            }
            if Instant::now() >= give_up {
                return Claimed::Later;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends the result until its coordinator confirms it (a request), through broker
    /// trouble, for up to a minute, acknowledging `message` right after the first send;
    /// false when nobody confirmed it.
    async fn answer(
        &self,
        dispatch: &Dispatch,
        reply_to: &str,
        attempts: u32,
        outcome: Outcome,
        mut message: Option<&jetstream::Message>,
    ) -> bool {
        let reply = Reply::Done {
            key: dispatch.key.clone(),
            worker: self.id.clone(),
            attempts,
            outcome,
        };
        let mut payload = match serde_json::to_vec(&reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("answering {}: {e}", dispatch.call_id);
                return false;
            }
        };
        let max = self.client.max_payload();
        if max > 0 && payload.len() > max.saturating_sub(1024) {
            // Too large for the broker: say so instead of losing the call slowly.
            let failure = crate::wire::WireFailure::Call {
                error: toolgraph_core::CallError {
                    kind: toolgraph_core::ErrorKind::TooLarge,
                    message: format!(
                        "the result ({} bytes) passes the broker's max_payload ({max} bytes)",
                        payload.len()
                    ),
                },
            };
            let small = Reply::Done {
                key: dispatch.key.clone(),
                worker: self.id.clone(),
                attempts,
                outcome: Outcome::Failure(failure),
            };
            payload = serde_json::to_vec(&small).unwrap_or_default();
        }
        let payload = bytes::Bytes::from(payload);
        let give_up = Instant::now() + PERSIST;
        let mut pause = Duration::from_millis(100);
        let mut no_responders: Option<Instant> = None;
        loop {
            let request = tokio::time::timeout(
                Duration::from_secs(2),
                self.client.request(reply_to.to_owned(), payload.clone()),
            );
            let sent = match message.take() {
                // The request is polled first: its publish is queued before the ack's.
                Some(message) => tokio::join!(request, message.ack()).0,
                None => request.await,
            };
            match sent {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    let since = *no_responders.get_or_insert_with(Instant::now);
                    if self.gone(since) {
                        tracing::info!(call = %dispatch.call_id, "its coordinator is gone: result dropped");
                        // Nobody waits: acknowledging is right.
                        return true;
                    }
                }
                Ok(Err(e)) => {
                    no_responders = None;
                    tracing::debug!("answering {}: {e}; again", dispatch.call_id);
                }
                Err(_) => {
                    no_responders = None;
                    tracing::debug!("answering {}: no confirmation; again", dispatch.call_id);
                }
            }
            if Instant::now() + pause >= give_up {
                tracing::warn!(call = %dispatch.call_id, "no coordinator confirmed the result for a minute: dropped");
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// What a claim came to.
enum Claimed {
    /// Granted: run it.
    Run,
    /// Nobody wants it run (settled, cancelled, coordinator gone): drop it for good.
    Refused,
    /// Another live worker runs it: leave the message to that worker's acknowledgement.
    Elsewhere,
    /// No answer for long: hand it back to the stream for later.
    Later,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned())
}

fn default_id() -> String {
    let host: String = host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}-{:04x}", std::process::id(), fastrand_u16())
}

fn fastrand_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_be_bytes([bytes[0], bytes[1]])
}
