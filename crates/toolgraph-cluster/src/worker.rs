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
//!    broker trouble) and only then acknowledged: a worker that dies before acknowledging
//!    leaves the call to be redelivered (idempotent) or reported interrupted.
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
    tools: Arc<ToolSet>,
    served: Vec<String>,
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
    client: async_nats::Client,
    tools: Arc<ToolSet>,
    service: Arc<dyn CallService>,
    slots: Arc<Semaphore>,
    progress_every: Duration,
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Calls cancelled before they arrived here, and when (forgotten after 10 minutes).
    cancelled: Mutex<HashMap<String, Instant>>,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    call_log: Option<CallLog>,
    link: Arc<crate::Link>,
}

impl Worker {
    /// Checks the tools to serve, connects, and sets up one consumer per tool.
    pub async fn start(options: WorkerOptions, tools: ToolSet) -> Result<Worker, ClusterError> {
        if options.concurrency == 0 {
            return Err(ClusterError::Config(
                "--concurrency must be at least 1".into(),
            ));
        }
        let served: Vec<String> = match &options.tools {
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
                names.clone()
            }
            None => tools.names().iter().map(|n| (*n).to_owned()).collect(),
        };
        if served.is_empty() {
            return Err(ClusterError::Config("this worker serves no tool".into()));
        }
        let id = options.id.clone().unwrap_or_else(default_id);
        let id_ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(ClusterError::Config(format!(
                "worker id `{id}`: use 1 to 128 ASCII letters, digits, `-`, `_` or `.`"
            )));
        }
        let call_log = options.call_log.as_deref().map(CallLog::open).transpose()?;
        let connection =
            Connection::open(&options.cluster, &format!("toolgraph worker {id}")).await?;
        let worker = Worker {
            connection,
            id,
            tools: Arc::new(tools),
            served,
            concurrency: options.concurrency,
            drain: options.drain,
            service: toolgraph_engine::layer::stack(&[]),
            call_log,
        };
        for tool in &worker.served {
            worker.consumer(tool).await?;
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

    async fn consumer(
        &self,
        tool: &str,
    ) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, ClusterError>
    {
        let options = &self.connection.options;
        let ns = &options.namespace;
        let limit = options.tool_limits.get(tool).copied();
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(ns.consumer(tool)),
            description: Some(format!("toolgraph calls of tool {tool}")),
            filter_subject: ns.call_subject(tool),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: limit.map_or(100_000, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let stream = self
            .connection
            .jetstream
            .get_stream(ns.stream())
            .await
            .map_err(|e| options.broker_error(format!("the call stream: {e}")))?;
        // Creating a durable consumer that exists updates what may be updated (its
        // `max_ack_pending` and `ack_wait`): the last worker started sets the limit.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| options.broker_error(format!("the consumer of tool `{tool}`: {e}")))
    }

    /// Serves calls until `stop`; then drains and says goodbye.
    pub async fn run(self, stop: CancellationToken) -> Result<WorkerSummary, ClusterError> {
        let options = self.connection.options.clone();
        let state = Arc::new(State {
            id: self.id.clone(),
            client: self.connection.client.clone(),
            tools: self.tools.clone(),
            service: self.service.clone(),
            slots: Arc::new(Semaphore::new(self.concurrency)),
            progress_every: (options.ack_wait / 3).max(Duration::from_millis(100)),
            running: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            call_log: self.call_log.clone(),
            link: self.connection.link.clone(),
        });
        let started_at_ms = unix_ms();
        let pulling = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();

        // Cancellations from every coordinator of the namespace.
        let mut cancels = self
            .connection
            .client
            .subscribe(options.namespace.cancel_subjects())
            .await
            .map_err(|e| options.broker_error(format!("subscribing to cancellations: {e}")))?;
        {
            let state = state.clone();
            let pulling = pulling.clone();
            tasks.spawn(async move {
                loop {
                    let message = tokio::select! {
                        () = pulling.cancelled() => return,
                        m = cancels.next() => m,
                    };
                    let Some(message) = message else { return };
                    if let Ok(cancel) = serde_json::from_slice::<Cancel>(&message.payload) {
                        state.cancel(cancel.key);
                    }
                }
            });
        }

        // Heartbeats.
        let heartbeat = {
            let state = state.clone();
            let store = self.connection.workers.clone();
            let mut info = WorkerInfo {
                id: self.id.clone(),
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
            let every = options.heartbeat;
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

        for tool in &self.served {
            let consumer = self.consumer(tool).await?;
            let state = state.clone();
            let pulling = pulling.clone();
            let batch = self.concurrency.min(256);
            let tool = tool.clone();
            tasks.spawn(async move {
                pull(consumer, &tool, batch, state, pulling).await;
            });
        }
        tracing::info!(worker = %self.id, tools = ?self.served, "serving");

        stop.cancelled().await;
        tracing::info!(worker = %self.id, "stopping: no new calls; draining running ones");
        pulling.cancel();
        while tasks.join_next().await.is_some() {}
        // Running calls hold a slot each: all slots back means all calls answered.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.drain, state.slots.acquire_many(all)).await;
        let abandoned = if drained.is_ok() {
            0
        } else {
            state.in_flight.load(Ordering::Relaxed)
        };
        heartbeat.1.cancel();
        let _ = heartbeat.0.await;
        if let Err(e) = self.connection.workers.delete(&self.id).await {
            tracing::warn!("removing heartbeat: {e}");
        }
        let _ = self.connection.client.flush().await;
        Ok(WorkerSummary {
            completed: state.completed.load(Ordering::Relaxed),
            abandoned,
        })
    }
}

/// Pulls calls of one tool until `pulling` is cancelled; each call runs in its own task.
async fn pull(
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    tool: &str,
    batch: usize,
    state: Arc<State>,
    pulling: CancellationToken,
) {
    let outstanding = Arc::new(Semaphore::new(batch));
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages();
        let mut messages = tokio::select! {
            () = pulling.cancelled() => return,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("pulling calls of {tool}: {e}; trying again");
                    tokio::select! {
                        () = pulling.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        loop {
            // At most `batch` calls of this tool pulled and not yet answered here: a tool
            // waiting for calls never holds a slot another tool's call could use.
            let pulled = tokio::select! {
                () = pulling.cancelled() => return,
                p = outstanding.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = pulling.cancelled() => return,
                n = messages.next() => n,
            };
            match next {
                Some(Ok(message)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        // Then a slot of the worker's concurrency, first come first served.
                        if let Ok(slot) = state.slots.clone().acquire_owned().await {
                            state.handle(message).await;
                            drop(slot);
                        }
                        drop(pulled);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!("pulling calls of {tool}: {e}");
                    if e.kind() != jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat {
                        // Let the stream recover (it re-requests), but do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                None => break,
            }
        }
    }
}

/// After a reconnection, a coordinator's subscriptions may not be back yet: "no
/// responders" then does not mean it is gone.
const RESUBSCRIBE_TIME: Duration = Duration::from_secs(5);

impl State {
    /// True when "no responders" can be believed: connected, and not just reconnected.
    fn settled(&self) -> bool {
        self.link
            .up_since()
            .is_some_and(|since| since.elapsed() >= RESUBSCRIBE_TIME)
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
            None => {
                let mut cancelled = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if cancelled.len() > 10_000 {
                    cancelled.retain(|_, at| now.duration_since(*at) < Duration::from_secs(600));
                }
                cancelled.insert(key, now);
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let dispatch: Dispatch = match serde_json::from_slice(&message.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("dropping a malformed call message: {e}");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let was_cancelled = self
            .cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dispatch.key)
            .is_some();
        if was_cancelled {
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        let token = CancellationToken::new();
        let duplicate = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let duplicate = running.contains_key(&dispatch.key);
            if !duplicate {
                running.insert(dispatch.key.clone(), token.clone());
            }
            duplicate
        };
        if duplicate {
            // Delivered again while it runs here (a progress acknowledgement was late): the
            // run in progress answers and acknowledges.
            if let Some(log) = &self.call_log {
                log.write("duplicate", &self.id, &dispatch);
            }
            return;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.serve(&message, dispatch.clone(), token).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dispatch.key);
    }

    async fn serve(
        &self,
        message: &jetstream::Message,
        dispatch: Dispatch,
        token: CancellationToken,
    ) {
        let Some(entry) = self.tools.get(&dispatch.tool) else {
            let failure = crate::wire::unavailable(format!(
                "worker {} does not serve tool `{}`",
                self.id, dispatch.tool
            ));
            self.answer(&dispatch, 0, Outcome::Failure(failure.into()))
                .await;
            let _ = message.ack().await;
            return;
        };
        if !dispatch.idempotent && !self.claim(message, &dispatch).await {
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
            args: Arc::new(dispatch.args.clone()),
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
        let mut progress =
            tokio::time::interval_at(Instant::now() + self.progress_every, self.progress_every);
        let result = loop {
            tokio::select! {
                r = &mut call => break Some(r),
                _ = progress.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                () = token.cancelled() => break None,
            }
        };
        if let Some(log) = &self.call_log {
            log.write("end", &self.id, &dispatch);
        }
        let Some(result) = result else {
            // The coordinator no longer waits: stop the tool and release the call.
            cancel_flag.cancel();
            drop(call);
            let _ = message.ack().await;
            return;
        };
        let outcome = match result {
            Ok(value) => Outcome::Output(value),
            Err(failure) => Outcome::Failure(failure.into()),
        };
        self.answer(&dispatch, meter.attempts(), outcome).await;
        // Answer first, acknowledge after: a worker dying in between leaves a redelivery
        // the coordinator deduplicates, never a lost result.
        let _ = message.ack().await;
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks the coordinator whether this worker may run a call that is not idempotent.
    async fn claim(&self, message: &jetstream::Message, dispatch: &Dispatch) -> bool {
        let claim = Reply::Claim {
            key: dispatch.key.clone(),
            worker: self.id.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&claim) else {
            return false;
        };
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            self.client
                .request(dispatch.reply_to.clone(), payload.into()),
        )
        .await;
        match asked {
            Ok(Ok(answer)) => match serde_json::from_slice::<ClaimAnswer>(&answer.payload) {
                Ok(ClaimAnswer { run: true, .. }) => true,
                Ok(ClaimAnswer { reason, .. }) => {
                    tracing::info!(
                        call = %dispatch.call_id,
                        "not run: {}",
                        reason.as_deref().unwrap_or("refused by its coordinator")
                    );
                    let _ = message.ack_with(AckKind::Term).await;
                    false
                }
                Err(e) => {
                    tracing::warn!("claim answer for {}: {e}", dispatch.call_id);
                    let _ = message.ack_with(AckKind::Term).await;
                    false
                }
            },
            Ok(Err(e))
                if e.kind() == async_nats::RequestErrorKind::NoResponders && self.settled() =>
            {
                // Its coordinator is gone: nobody waits for the result.
                tracing::info!(call = %dispatch.call_id, "not run: its coordinator is gone");
                let _ = message.ack_with(AckKind::Term).await;
                false
            }
            _ => {
                // No answer: leave the call in the stream and ask again later.
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                false
            }
        }
    }

    /// Sends the result until its coordinator confirms it (a request), through broker
    /// trouble, for up to a minute; gives up at once when the coordinator is gone.
    async fn answer(&self, dispatch: &Dispatch, attempts: u32, outcome: Outcome) {
        let reply = Reply::Done {
            key: dispatch.key.clone(),
            worker: self.id.clone(),
            attempts,
            outcome,
        };
        let payload = match serde_json::to_vec(&reply) {
            Ok(bytes) => bytes::Bytes::from(bytes),
            Err(e) => {
                tracing::warn!("answering {}: {e}", dispatch.call_id);
                return;
            }
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                self.client
                    .request(dispatch.reply_to.clone(), payload.clone()),
            )
            .await;
            match sent {
                Ok(Ok(_)) => return,
                Ok(Err(e))
                    if e.kind() == async_nats::RequestErrorKind::NoResponders && self.settled() =>
                {
                    tracing::info!(call = %dispatch.call_id, "its coordinator is gone: result dropped");
                    return;
                }
                Ok(Err(e)) => tracing::debug!("answering {}: {e}; again", dispatch.call_id),
                Err(_) => tracing::debug!("answering {}: no confirmation; again", dispatch.call_id),
            }
            if Instant::now() + pause >= give_up {
                tracing::warn!(call = %dispatch.call_id, "no coordinator confirmed the result for a minute: dropped");
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
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
