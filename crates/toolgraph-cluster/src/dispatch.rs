//! The coordinator's side: [`RemoteLayer`], the innermost step of the engine's layer stack
//! when calls run on workers.
//!
//! Each call gets a dispatch key (`<coordinator>:<n>`), waits for a live worker serving its
//! tool (at most `no_worker_wait`), is published into the work-queue stream with the key as
//! `Nats-Msg-Id` (a publish retried after a broker hiccup is deduplicated), and waits for
//! its answer on the coordinator's reply subject — at most its timeout plus `grace`. One
//! task reads the reply subject: a result resolves its call once (later duplicates find
//! nothing to resolve); a claim is granted to the first worker that asks, and to nobody
//! after. A monitor looks at the waiting calls every heartbeat: a claimed call whose worker
//! went silent is `interrupted`; a call whose tool no live worker serves any more fails
//! after `no_worker_wait`. A call the scheduler stops waiting for (timeout, cancel,
//! fail-fast: its future is dropped) is announced on the cancel subject.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use toolgraph_core::{CallError, ErrorKind};
use toolgraph_engine::layer::{CallFuture, CallRequest, CallService, Failure, Layer, Meter};

use crate::registry::Registry;
use crate::wire::{Cancel, ClaimAnswer, Dispatch, Outcome, Reply, interrupted, unavailable};
use crate::{ClusterError, ClusterOptions, Connection};

/// Runs every call on the cluster's workers instead of in this process.
#[derive(Clone)]
pub struct RemoteLayer {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

struct Shared {
    options: ClusterOptions,
    coordinator: String,
    reply_subject: String,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    registry: Registry,
    pending: Mutex<HashMap<u64, Pending>>,
    next: AtomicU64,
    cancels: mpsc::UnboundedSender<Outbound>,
}

/// What the coordinator's publishing task sends besides calls.
enum Outbound {
    /// Announce a call nobody waits for any more, and delete its message if stored.
    Cancel(String, Option<u64>),
    /// Answer once everything queued before is on the wire.
    Flush(oneshot::Sender<()>),
}

/// A call waiting for its answer.
struct Pending {
    answer: oneshot::Sender<Answer>,
    tool: Arc<str>,
    call_id: Arc<str>,
    /// The worker, and its process, the claim was granted to.
    claimed_by: Option<(String, String)>,
    /// Its message's place in the stream, once stored (to delete it when nobody waits).
    sequence: Option<u64>,
    /// Since when no live worker serves its tool.
    orphaned_since: Option<Instant>,
}

enum Answer {
    Done {
        worker: String,
        attempts: u32,
        result: Result<Value, Failure>,
    },
    /// Settled without a result: the worker that had it, if one did.
    Failed(Failure, Option<String>),
}

impl RemoteLayer {
    /// Connects as a coordinator: the reply subscription, the worker registry, the
    /// monitor and the cancel publisher start here and stop when the last clone is dropped.
    pub async fn connect(options: &ClusterOptions) -> Result<RemoteLayer, ClusterError> {
        let coordinator = uuid::Uuid::new_v4().simple().to_string();
        let connection =
            Connection::open(options, &format!("toolgraph coordinator {coordinator}")).await?;
        let stop = CancellationToken::new();
        let registry = Registry::start(&connection, stop.clone()).await?;
        let ns = &options.namespace;
        let reply_subject = ns.reply_subject(&coordinator);
        let cancel_subject = ns.cancel_subject(&coordinator);
        let mut replies = connection
            .client
            .subscribe(reply_subject.clone())
            .await
            .map_err(|e| options.broker_error(format!("subscribing to replies: {e}")))?;
        let (cancels, mut cancel_queue) = mpsc::unbounded_channel::<Outbound>();
        let shared = Arc::new(Shared {
            options: options.clone(),
            coordinator,
            reply_subject,
            client: connection.client.clone(),
            jetstream: connection.jetstream.clone(),
            registry,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            cancels,
        });

        let client = connection.client.clone();
        let on_reply = Arc::downgrade(&shared);
        let stopping = stop.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = stopping.cancelled() => return,
                    m = replies.next() => m,
                };
                let Some(message) = message else { return };
                let Some(shared) = on_reply.upgrade() else {
                    return;
                };
                shared.on_reply(&client, message).await;
            }
        });

        let client = connection.client.clone();
        let stopping = stop.clone();
        let calls = connection.jetstream.get_stream(ns.stream()).await.ok();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = stopping.cancelled() => return,
                    k = cancel_queue.recv() => k,
                };
                match next {
                    None => return,
                    Some(Outbound::Cancel(key, sequence)) => {
                        if let Ok(bytes) = serde_json::to_vec(&Cancel { key }) {
                            let _ = client.publish(cancel_subject.clone(), bytes.into()).await;
                        }
                        // A call not yet taken must not run later for nobody.
                        if let (Some(seq), Some(stream)) = (sequence, &calls) {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                stream.delete_message(seq),
                            )
                            .await;
                        }
                    }
                    Some(Outbound::Flush(done)) => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
                        let _ = done.send(());
                    }
                }
            }
        });

        let watched = Arc::downgrade(&shared);
        let stopping = stop.clone();
        let every = options.heartbeat_period().min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(shared) = watched.upgrade() else {
                    return;
                };
                shared.monitor();
            }
        });

        Ok(RemoteLayer {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// Waits (at most 2 s) until the cancellations of calls already dropped are on the
    /// wire: a process about to exit calls this so its workers hear of them.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.shared.cancels.send(Outbound::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
        }
    }

    /// The cluster it dispatches to.
    pub fn options(&self) -> &ClusterOptions {
        &self.shared.options
    }

    /// This coordinator's id (its reply subject ends with it).
    pub fn coordinator(&self) -> &str {
        &self.shared.coordinator
    }
}

impl Layer for RemoteLayer {
    fn layer(&self, _inner: Arc<dyn CallService>) -> Arc<dyn CallService> {
        // The worker runs the timeout, retry and panic layers; nothing below runs here.
        Arc::new(self.clone())
    }
}

impl CallService for RemoteLayer {
    fn call(&self, request: CallRequest) -> CallFuture {
        let shared = self.shared.clone();
        Box::pin(async move { shared.dispatch(request).await })
    }
}

/// Removes a call from the waiting ones when its future ends or is dropped; a call
/// dropped before its answer is announced as cancelled.
struct Waiting<'a> {
    shared: &'a Shared,
    n: u64,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(call) = self.shared.lock().remove(&self.n) {
            let _ = self
                .shared
                .cancels
                .send(Outbound::Cancel(self.shared.key(self.n), call.sequence));
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, n: u64) -> String {
        format!("{}:{n}", self.coordinator)
    }

    fn number(&self, key: &str) -> Option<u64> {
        let (coordinator, n) = key.rsplit_once(':')?;
        (coordinator == self.coordinator).then(|| n.parse().ok())?
    }

    async fn dispatch(&self, request: CallRequest) -> Result<Value, Failure> {
        let CallRequest {
            tool,
            args,
            ctx,
            policy,
            meter,
            slots,
            ..
        } = request;
        let _slots = slots;
        meter.begin_attempt();
        let name: Arc<str> = Arc::from(tool.spec().name.as_str());
        let options = &self.options;
        if !self.registry.serves(&name) {
            let deadline = Instant::now() + options.no_worker_wait;
            if !self.registry.wait_for(&name, deadline).await {
                return Err(unavailable(self.no_worker_message(&name)));
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let key = self.key(n);
        let dispatch = Dispatch {
            key: key.clone(),
            call_id: ctx.call_id.to_string(),
            tool: name.to_string(),
            args: Arc::unwrap_or_clone(args),
            timeout_ms: policy
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            retry: policy.retry,
            idempotent: policy.idempotent,
            reply_to: self.reply_subject.clone(),
        };
        let payload = serde_json::to_vec(&dispatch).map_err(|e| {
            Failure::Call(CallError {
                kind: ErrorKind::Permanent,
                message: format!("the call could not be encoded: {e}"),
            })
        })?;
        let max = self.client.max_payload();
        if max > 0 && payload.len() > max.saturating_sub(1024) {
            return Err(Failure::Call(CallError {
                kind: ErrorKind::TooLarge,
                message: format!(
                    "the call ({} bytes with its arguments) passes the broker's max_payload \
                     ({max} bytes)",
                    payload.len()
                ),
            }));
        }
        let (answer, answered) = oneshot::channel();
        self.lock().insert(
            n,
            Pending {
                answer,
                tool: name.clone(),
                call_id: ctx.call_id.clone(),
                claimed_by: None,
                sequence: None,
                orphaned_since: None,
            },
        );
        let mut waiting = Waiting {
            shared: self,
            n,
            answered: false,
        };
        let limit = policy.timeout.map(|t| t + options.grace);
        let deadline = limit.map(|l| Instant::now() + l);
        let sequence = self.publish(&name, &key, payload, deadline).await?;
        if let Some(call) = self.lock().get_mut(&n) {
            call.sequence = Some(sequence);
        }
        let answer = match deadline {
            Some(at) => match tokio::time::timeout_at(at, answered).await {
                Ok(a) => a,
                Err(_) => {
                    let timeout = policy.timeout.unwrap_or_default();
                    return Err(Failure::Call(CallError {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "timed out after {} ms: no result from the cluster within the \
                             timeout and {} ms of grace",
                            timeout.as_millis(),
                            options.grace.as_millis()
                        ),
                    }));
                }
            },
            None => answered.await,
        };
        waiting.answered = true;
        match answer {
            Ok(Answer::Done {
                worker,
                attempts,
                result,
            }) => {
                record_worker(&meter, &worker, attempts);
                result
            }
            Ok(Answer::Failed(failure, worker)) => {
                if let Some(worker) = worker {
                    meter.set_worker(&worker);
                }
                Err(failure)
            }
            Err(_) => Err(unavailable("the coordinator stopped waiting".into())),
        }
    }

    /// Publishes a call and waits for the stream to store it (its sequence), trying again
    /// through broker trouble until `deadline` or for 30 s: the same message id makes a
    /// repeat harmless (the stream's duplicate window is longer).
    async fn publish(
        &self,
        tool: &str,
        key: &str,
        payload: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<u64, Failure> {
        let subject = self.options.namespace.call_subject(tool);
        let payload = bytes::Bytes::from(payload);
        let cap = Instant::now() + Duration::from_secs(30);
        let give_up = deadline.map_or(cap, |d| d.min(cap));
        let mut pause = Duration::from_millis(50);
        loop {
            let sent = self
                .jetstream
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(key),
                )
                .await;
            let error = match sent {
                Ok(ack) => match ack.await {
                    Ok(stored) => return Ok(stored.sequence),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() + pause >= give_up {
                return Err(unavailable(format!(
                    "NATS at {}: the call could not be handed to the cluster: {error}",
                    self.options.url
                )));
            }
            tracing::debug!("publishing {key}: {error}; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn on_reply(&self, client: &async_nats::Client, message: async_nats::Message) {
        let reply: Reply = match serde_json::from_slice(&message.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("ignoring a malformed reply: {e}");
                return;
            }
        };
        match reply {
            Reply::Done {
                key,
                worker,
                attempts,
                outcome,
            } => {
                // Confirm receipt (a duplicate too): the worker acknowledges the call to
                // JetStream only then, so a result lost with the broker is sent again.
                if let Some(to) = message.reply.clone() {
                    let _ = client.publish(to, bytes::Bytes::new()).await;
                }
                let Some(n) = self.number(&key) else { return };
                let Some(pending) = self.lock().remove(&n) else {
                    tracing::debug!("a second answer for {key} from {worker}: dropped");
                    return;
                };
                let result = match outcome {
                    Outcome::Output(v) => Ok(v),
                    Outcome::Failure(f) => Err(Failure::from(f)),
                };
                let _ = pending.answer.send(Answer::Done {
                    worker,
                    attempts,
                    result,
                });
            }
            Reply::Claim {
                key,
                worker,
                instance,
            } => {
                let answer = self.claim(&key, &worker, &instance);
                if let (Some(to), Ok(bytes)) = (message.reply, serde_json::to_vec(&answer)) {
                    let _ = client.publish(to, bytes.into()).await;
                }
            }
        }
    }

    fn claim(&self, key: &str, worker: &str, instance: &str) -> ClaimAnswer {
        let refuse = |reason: String, elsewhere: bool| ClaimAnswer {
            run: false,
            elsewhere,
            reason: Some(reason),
        };
        let grant = ClaimAnswer {
            run: true,
            elsewhere: false,
            reason: None,
        };
        let Some(n) = self.number(key) else {
            return refuse("not this coordinator's call".into(), false);
        };
        let mut pending = self.lock();
        let Some(call) = pending.get_mut(&n) else {
            return refuse("nobody waits for this call any more".into(), false);
        };
        match call.claimed_by.clone() {
            None => {
                call.claimed_by = Some((worker.to_owned(), instance.to_owned()));
                grant
            }
            // The same process asking again (its first answer was lost).
            Some((w, i)) if w == worker && i == instance => grant,
            Some((owner, owner_instance)) if self.registry.is_live(&owner, &owner_instance) => {
                refuse(format!("already running on worker {owner}"), true)
            }
            Some((owner, _)) => {
                let message = self.interrupted_message(call, &owner);
                if let Some(call) = pending.remove(&n) {
                    let _ = call
                        .answer
                        .send(Answer::Failed(interrupted(message), Some(owner.clone())));
                    let _ = self
                        .cancels
                        .send(Outbound::Cancel(self.key(n), call.sequence));
                }
                refuse(
                    format!("it was running on worker {owner}, which stopped"),
                    false,
                )
            }
        }
    }

    /// Settles waiting calls whose worker died or whose tool nobody serves any more.
    fn monitor(&self) {
        if !self.registry.connected() {
            // Cut off from the broker: nobody's silence means anything now.
            return;
        }
        let now = Instant::now();
        let wait = self.options.no_worker_wait;
        let judge_orphans = !self.registry.catching_up();
        let mut served: HashMap<Arc<str>, bool> = HashMap::new();
        let mut settled = Vec::new();
        let mut pending = self.lock();
        for (n, call) in pending.iter_mut() {
            if let Some((owner, instance)) = &call.claimed_by {
                if !self.registry.is_live(owner, instance) {
                    let message = self.interrupted_message(call, owner);
                    settled.push((*n, interrupted(message), Some(owner.clone())));
                }
                continue;
            }
            let serves = *served
                .entry(call.tool.clone())
                .or_insert_with(|| self.registry.serves(&call.tool));
            if serves || !judge_orphans {
                call.orphaned_since = None;
            } else {
                let since = *call.orphaned_since.get_or_insert(now);
                if now.duration_since(since) >= wait {
                    settled.push((*n, unavailable(self.no_worker_message(&call.tool)), None));
                }
            }
        }
        for (n, failure, worker) in settled {
            if let Some(call) = pending.remove(&n) {
                let _ = call.answer.send(Answer::Failed(failure, worker));
                // Stop it where it runs, and delete it where it waits.
                let _ = self
                    .cancels
                    .send(Outbound::Cancel(self.key(n), call.sequence));
            }
        }
    }

    fn interrupted_message(&self, call: &Pending, owner: &str) -> String {
        let silent = self
            .registry
            .silent_for(owner)
            .map(|d| format!("no heartbeat for {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "no heartbeat".into());
        format!(
            "call {} was running on worker {owner}, which stopped ({silent}); `{}` is not safe \
             to run twice, so it was not run again: what it did is unknown",
            call.call_id, call.tool
        )
    }

    fn no_worker_message(&self, tool: &str) -> String {
        let live = self.registry.live_names();
        let live = if live.is_empty() {
            "none".to_owned()
        } else {
            live.join("; ")
        };
        format!(
            "no live worker serves tool `{tool}` in namespace `{}` (waited {} ms; live workers: \
             {live})",
            self.options.namespace.as_str(),
            self.options.no_worker_wait.as_millis()
        )
    }
}

/// Which worker ran the call, and the attempts it made, for the call's result.
fn record_worker(meter: &Meter, worker: &str, attempts: u32) {
    meter.set_worker(worker);
    meter.note_attempts(attempts);
}
