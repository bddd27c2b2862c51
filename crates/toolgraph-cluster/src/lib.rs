//! toolgraph over NATS JetStream: calls run in worker processes, anywhere the broker reaches.
//!
//! The coordinator plans, resolves references, schedules, records and reports exactly as
//! for a local run; only the innermost step changes. [`RemoteLayer`] is a layer of the
//! engine's stack (`ParallelExecutor::layer`): instead of calling the tool it publishes the
//! call ([`wire::Dispatch`]) on its tool's subject into the namespace's work-queue stream
//! and waits for a worker's answer. A [`Worker`] serves the tools of its own configuration:
//! it pulls calls from one durable consumer per tool (shared by every worker serving that
//! tool), runs each through the same timeout ▸ retry ▸ panic layers a local call gets, and
//! answers on the coordinator's reply subject.
//!
//! - **Cluster-wide limits**: a tool's consumer has `max_ack_pending` = the tool's limit
//!   ([`ClusterOptions::tool_limits`]); JetStream hands out no more unacknowledged calls
//!   of that tool than that, across every worker and coordinator.
//! - **Delivery**: idempotent calls are at-least-once (a worker that dies mid-call stops
//!   acknowledging; after `ack_wait` JetStream redelivers the call to another worker; the
//!   coordinator keeps the first result per call and drops the rest). Other calls are
//!   at-most-once: the worker *claims* the call from its coordinator before running it; a
//!   call claimed by a worker that stopped heartbeating is reported `interrupted` with that
//!   worker named, never run again.
//! - **Liveness**: workers put a [`wire::WorkerInfo`] heartbeat into the namespace's
//!   key-value bucket; the coordinator watches it, fails a call whose tool no live worker
//!   serves after [`ClusterOptions::no_worker_wait`], and bounds every call by its timeout
//!   plus [`ClusterOptions::grace`].
//! - **Cancellation**: a call the coordinator stops waiting for (timeout, cancel, fail-fast)
//!   is announced on the cancel subject; the worker running it cancels it and acknowledges,
//!   a worker that has not started it drops it.
//!
//! [`names`] says where each message goes; [`wire`] what it holds.

mod dispatch;
pub mod names;
mod registry;
pub mod wire;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

pub use crate::dispatch::RemoteLayer;
pub use crate::names::Namespace;
pub use crate::registry::{ClusterState, ToolQueue, WorkerEntry, cluster_state, list_workers};
pub use crate::worker::{Worker, WorkerOptions, WorkerSummary};

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The broker could not be reached or refused a request.
    #[error("NATS at {url}: {message}")]
    Broker {
        /// The server's URL.
        url: String,
        /// What failed.
        message: String,
    },
}

/// How to reach the cluster and how patient to be with it.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The NATS server (`nats://127.0.0.1:4222`; several comma-separated for a cluster).
    pub url: String,
    /// The namespace (streams, subjects and buckets are prefixed by it).
    pub namespace: Namespace,
    /// How long the first connection may take before it fails.
    pub connect_timeout: Duration,
    /// How often workers heartbeat; a worker silent for three periods is taken for dead.
    pub heartbeat: Duration,
    /// How long JetStream waits for a worker's acknowledgement before it redelivers a call
    /// (workers send progress every third of it while a call runs).
    pub ack_wait: Duration,
    /// How long a call waits for a live worker serving its tool before it fails.
    pub no_worker_wait: Duration,
    /// How long past a call's timeout the coordinator waits for its result.
    pub grace: Duration,
    /// Cluster-wide limits per tool (set on the tool's consumer by the workers serving it).
    pub tool_limits: BTreeMap<String, usize>,
}

impl ClusterOptions {
    /// Defaults for `url` in the default namespace.
    pub fn new(url: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            url: url.into(),
            namespace: Namespace::default(),
            connect_timeout: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            no_worker_wait: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            tool_limits: BTreeMap::new(),
        }
    }

    /// The servers of `url`, which may list several, comma-separated.
    pub(crate) fn servers(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// How often workers heartbeat, never under 100 ms.
    pub fn heartbeat_period(&self) -> Duration {
        self.heartbeat.max(Duration::from_millis(100))
    }

    /// When a worker is taken for dead: three heartbeats missed.
    pub fn stale_after(&self) -> Duration {
        self.heartbeat_period() * 3
    }

    pub(crate) fn broker_error(&self, message: impl std::fmt::Display) -> ClusterError {
        ClusterError::Broker {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }
}

/// A connection to the cluster with its stream and bucket in place.
#[derive(Clone)]
pub(crate) struct Connection {
    pub options: ClusterOptions,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub workers: jetstream::kv::Store,
    pub link: Arc<Link>,
}

/// Whether the connection is up, and since when: silence from workers while this process
/// was cut off from the broker (or just after) says nothing about them.
#[derive(Debug)]
pub(crate) struct Link {
    up: std::sync::atomic::AtomicBool,
    since: std::sync::Mutex<tokio::time::Instant>,
}

impl Link {
    fn new() -> Link {
        Link {
            up: std::sync::atomic::AtomicBool::new(true),
            since: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
        if up {
            *self.since.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        }
    }

    /// Connected now, and since when; `None` while disconnected.
    pub fn up_since(&self) -> Option<tokio::time::Instant> {
        self.up
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| *self.since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Connection {
    /// Connects (failing within `connect_timeout`, the cause named once), then creates
    /// the namespace's stream and worker bucket unless they exist.
    pub async fn open(options: &ClusterOptions, name: &str) -> Result<Connection, ClusterError> {
        let link = Arc::new(Link::new());
        let events = link.clone();
        let connect_options = async_nats::ConnectOptions::new()
            .name(name)
            // Reconnect within half a second of the server's return (the default backs off
            // to 4 s, longer than the three heartbeats that make a worker look dead).
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 * 2u64.saturating_pow(attempts.min(10) as u32))
                    .min(Duration::from_millis(500))
            })
            .event_callback(move |event| {
                let link = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            link.set(true);
                            tracing::info!("NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            link.set(false);
                            tracing::warn!("NATS disconnected; reconnecting");
                        }
                        other => tracing::debug!("NATS: {other}"),
                    }
                }
            });
        let client = connect(options, connect_options).await?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(5));
        let ns = &options.namespace;
        jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: ns.stream(),
                description: Some(format!("toolgraph calls of namespace {}", ns.as_str())),
                subjects: vec![ns.call_subjects()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                storage: jetstream::stream::StorageType::File,
                // Longer than a publish is ever repeated (30 s).
                duplicate_window: Duration::from_secs(60),
                // A call nobody takes is dropped after a day.
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| options.broker_error(jetstream_message("creating the call stream", &e)))?;
        let workers = match jetstream.get_key_value(ns.workers_bucket()).await {
            Ok(store) => store,
            Err(_) => {
                // The bucket's stream, made as a key-value bucket is made (async-nats's
                // `create_key_value` first reads account information in a shape
                // nats-server 2.9 does not send).
                let bucket = ns.workers_bucket();
                jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        description: Some(format!(
                            "toolgraph workers of namespace {}",
                            ns.as_str()
                        )),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        max_age: options.stale_after().max(Duration::from_secs(3)),
                        // On disk, so the bucket outlives a restart of the server.
                        storage: jetstream::stream::StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        options.broker_error(jetstream_message("creating the worker bucket", &e))
                    })?;
                jetstream.get_key_value(bucket).await.map_err(|e| {
                    options.broker_error(jetstream_message("opening the worker bucket", &e))
                })?
            }
        };
        Ok(Connection {
            options: options.clone(),
            client,
            jetstream,
            workers,
            link,
        })
    }
}

/// Deletes a namespace's call stream (its consumers with it) and its worker bucket; one
/// that does not exist is no error. For throwaway namespaces (`toolgraph bench --nats`,
/// tests): calls still queued there are lost, and workers still serving it stop receiving.
pub async fn delete_namespace(options: &ClusterOptions) -> Result<(), ClusterError> {
    let client = connect(
        options,
        async_nats::ConnectOptions::new().name("toolgraph namespace cleanup"),
    )
    .await?;
    let mut jetstream = jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(5));
    let ns = &options.namespace;
    for stream in [ns.stream(), format!("KV_{}", ns.workers_bucket())] {
        match jetstream.delete_stream(&stream).await {
            Ok(_) => {}
            Err(e) => {
                let not_found = matches!(
                    e.kind(),
                    jetstream::context::DeleteStreamErrorKind::JetStream(ref js)
                        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                if !not_found {
                    return Err(options.broker_error(jetstream_message(
                        &format!("deleting the stream {stream}"),
                        &e,
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Connects to `options`' servers with `with`, failing within the connect timeout with
/// the cause named once.
async fn connect(
    options: &ClusterOptions,
    with: async_nats::ConnectOptions,
) -> Result<async_nats::Client, ClusterError> {
    let connecting = with
        .connection_timeout(options.connect_timeout)
        .connect(options.servers());
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(options.broker_error(connect_message(&e))),
        Err(_) => Err(options.broker_error(format!(
            "no connection within {} ms",
            options.connect_timeout.as_millis()
        ))),
    }
}

fn connect_message(e: &async_nats::ConnectError) -> String {
    let text = e.to_string();
    let source = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if source.is_empty() || text.contains(&source) {
        text
    } else {
        format!("{text}: {source}")
    }
}

fn jetstream_message(what: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("no responders") || text.contains("503") {
        format!("{what}: JetStream is not enabled on this server (start nats-server with -js)")
    } else {
        format!("{what}: {text}")
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
