//! Who is alive: workers' heartbeats in the namespace's key-value bucket.
//!
//! A coordinator watches the bucket ([`Registry`]) and judges liveness by *its own* clock —
//! when it last received a worker's heartbeat — so clocks that differ between machines do
//! not matter. The bucket's `max_age` makes the server forget a silent worker too.
//! [`list_workers`] reads the bucket once (for `toolgraph workers`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::wire::WorkerInfo;
use crate::{ClusterError, ClusterOptions, Connection, unix_ms};

/// The live workers as one coordinator sees them.
#[derive(Clone)]
pub(crate) struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    seen: Mutex<HashMap<String, Seen>>,
    changed: Notify,
    stale_after: Duration,
    link: Arc<crate::Link>,
}

struct Seen {
    info: WorkerInfo,
    at: Instant,
}

impl Seen {
    /// Three of the worker's own heartbeat periods (never under 300 ms).
    fn stale_after(&self) -> Duration {
        Duration::from_millis(self.info.heartbeat_ms.max(100)) * 3
    }

    fn fresh(&self, now: Instant, up_since: Instant) -> bool {
        now.duration_since(self.at.max(up_since)) < self.stale_after()
    }
}

impl Registry {
    /// Starts watching the bucket until `stop`; the current heartbeats are loaded first.
    pub async fn start(
        connection: &Connection,
        stop: CancellationToken,
    ) -> Result<Registry, ClusterError> {
        let registry = Registry {
            shared: Arc::new(Shared {
                seen: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                stale_after: connection.options.stale_after(),
                link: connection.link.clone(),
            }),
        };
        let watch = connection
            .workers
            .watch_with_history(">")
            .await
            .map_err(|e| {
                connection
                    .options
                    .broker_error(format!("watching workers: {e}"))
            })?;
        let store = connection.workers.clone();
        let shared = registry.shared.clone();
        tokio::spawn(async move {
            let mut watch = Some(watch);
            loop {
                let mut current = match watch.take() {
                    Some(w) => w,
                    None => match store.watch_with_history(">").await {
                        Ok(w) => w,
                        Err(e) => {
                            tracing::warn!("watching workers again: {e}");
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            }
                        }
                    },
                };
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = current.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => shared.apply(&entry),
                        Some(Err(e)) => {
                            tracing::warn!("worker heartbeats: {e}");
                            break;
                        }
                        None => break,
                    }
                }
            }
        });
        Ok(registry)
    }

    /// True when a worker serving `tool` heartbeated recently (by its own period).
    pub fn serves(&self, tool: &str) -> bool {
        let now = Instant::now();
        let up_since = self.shared.link.up_since().unwrap_or(now);
        let seen = self.shared.lock();
        seen.values()
            .any(|s| s.fresh(now, up_since) && s.info.tools.iter().any(|t| t == tool))
    }

    /// True when process `instance` of `worker` heartbeated recently — or when this
    /// process cannot tell: it is cut off from the broker, or was until less than three
    /// heartbeats ago (silence then is the broker's, not the worker's). A worker heard
    /// from under another instance was restarted: the instance asked about is dead.
    pub fn is_live(&self, worker: &str, instance: &str) -> bool {
        let now = Instant::now();
        let Some(up_since) = self.shared.link.up_since() else {
            return true;
        };
        match self.shared.lock().get(worker) {
            Some(s) if s.info.instance != instance => false,
            Some(s) => s.fresh(now, up_since),
            None => now.duration_since(up_since) < self.shared.stale_after,
        }
    }

    /// True for a while after (re)connecting: what the registry holds may be behind.
    pub fn catching_up(&self) -> bool {
        self.shared
            .link
            .up_since()
            .is_none_or(|since| since.elapsed() < self.shared.stale_after)
    }

    /// False while this process is cut off from the broker.
    pub fn connected(&self) -> bool {
        self.shared.link.up_since().is_some()
    }

    /// How long ago `worker` last heartbeated, if it ever did.
    pub fn silent_for(&self, worker: &str) -> Option<Duration> {
        let now = Instant::now();
        self.shared
            .lock()
            .get(worker)
            .map(|s| now.duration_since(s.at))
    }

    /// Waits until a live worker serves `tool`, or `deadline`; true if one does.
    pub async fn wait_for(&self, tool: &str, deadline: Instant) -> bool {
        loop {
            let changed = self.shared.changed.notified();
            if self.serves(tool) {
                return true;
            }
            // Heartbeats also go stale without any change, so look again now and then.
            let tick = Instant::now() + Duration::from_millis(200);
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(tick.min(deadline)) => {}
            }
            if Instant::now() >= deadline {
                return self.serves(tool);
            }
        }
    }

    /// The names of the live workers, for messages.
    pub fn live_names(&self) -> Vec<String> {
        let now = Instant::now();
        let up_since = self.shared.link.up_since().unwrap_or(now);
        let mut names: Vec<String> = self
            .shared
            .lock()
            .iter()
            .filter(|(_, s)| s.fresh(now, up_since))
            .map(|(id, s)| format!("{id} ({})", s.info.tools.join(", ")))
            .collect();
        names.sort();
        names
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, entry: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<WorkerInfo>(&entry.value) {
                Ok(info) => {
                    let now = Instant::now();
                    let mut seen = self.lock();
                    // Forget workers silent for long (crashed ones leave no delete).
                    seen.retain(|_, s| now.duration_since(s.at) < s.stale_after() * 20);
                    seen.insert(
                        entry.key.clone(),
                        Seen {
                            info,
                            at: Instant::now(),
                        },
                    );
                }
                Err(e) => tracing::warn!("worker heartbeat {}: {e}", entry.key),
            },
            Operation::Delete | Operation::Purge => {
                self.lock().remove(&entry.key);
            }
        }
        self.changed.notify_waiters();
    }
}

/// One worker as `toolgraph workers` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerEntry {
    /// Its last heartbeat.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Milliseconds since that heartbeat, by this machine's clock against the worker's.
    pub heartbeat_age_ms: u64,
}

/// One tool's queue as `toolgraph workers` shows it (from its consumer).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolQueue {
    /// The tool.
    pub tool: String,
    /// Calls waiting for a worker.
    pub queued: u64,
    /// Calls handed to workers and not yet acknowledged (running, or about to).
    pub taken: usize,
    /// Its cluster-wide limit, if one was set.
    pub limit: Option<u64>,
}

/// The live workers and the tools' queues of a namespace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterState {
    /// The workers whose heartbeats the bucket holds, by id.
    pub workers: Vec<WorkerEntry>,
    /// Each tool a worker ever served in the namespace, by name.
    pub tools: Vec<ToolQueue>,
}

/// The workers whose heartbeats the bucket holds, and each tool's queue.
pub async fn cluster_state(options: &ClusterOptions) -> Result<ClusterState, ClusterError> {
    let connection = Connection::open(options, "toolgraph workers").await?;
    let workers = read_workers(&connection).await?;
    let stream = connection
        .jetstream
        .get_stream(options.namespace.stream())
        .await
        .map_err(|e| options.broker_error(format!("the call stream: {e}")))?;
    let mut consumers = stream.consumers();
    let mut tools = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| options.broker_error(format!("listing tools: {e}")))?;
        let Some(tool) = info
            .config
            .filter_subject
            .rsplit('.')
            .next()
            .and_then(crate::names::untoken)
        else {
            continue;
        };
        let limit = u64::try_from(info.config.max_ack_pending).ok();
        tools.push(ToolQueue {
            tool,
            queued: info.num_pending,
            taken: info.num_ack_pending,
            // 100,000 is what a worker sets when no limit is declared.
            limit: limit.filter(|l| *l > 0 && *l != 100_000),
        });
    }
    tools.sort_by(|a, b| a.tool.cmp(&b.tool));
    Ok(ClusterState { workers, tools })
}

/// The workers whose heartbeats the bucket holds, by id.
pub async fn list_workers(options: &ClusterOptions) -> Result<Vec<WorkerEntry>, ClusterError> {
    let connection = Connection::open(options, "toolgraph workers").await?;
    read_workers(&connection).await
}

async fn read_workers(connection: &Connection) -> Result<Vec<WorkerEntry>, ClusterError> {
    let options = &connection.options;
    let mut keys = connection
        .workers
        .keys()
        .await
        .map_err(|e| options.broker_error(format!("listing workers: {e}")))?;
    let mut out = Vec::new();
    let now = unix_ms();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| options.broker_error(format!("listing workers: {e}")))?;
        let value = connection
            .workers
            .get(&key)
            .await
            .map_err(|e| options.broker_error(format!("reading worker {key}: {e}")))?;
        let Some(value) = value else { continue };
        match serde_json::from_slice::<WorkerInfo>(&value) {
            Ok(info) => out.push(WorkerEntry {
                heartbeat_age_ms: now.saturating_sub(info.heartbeat_at_ms),
                info,
            }),
            Err(e) => tracing::warn!("worker heartbeat {key}: {e}"),
        }
    }
    out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
    Ok(out)
}
