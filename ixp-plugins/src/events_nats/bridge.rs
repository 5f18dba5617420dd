//! The running bridge: the outgoing buffer and publisher, and the incoming subscriber
//! or JetStream consumer.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use ixp_core::{EventBus, PluginContext, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::config::{topic_matches, EventsNatsConfig};
use super::PLUGIN_NAME;

/// How many recent event ids an instance remembers to emit each event once.
const SEEN_IDS: usize = 10_000;

/// Counters of the bridge (the `events-bridge` service).
#[derive(Debug, Default)]
pub struct BridgeStats {
    published: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    unserializable: AtomicU64,
    lost: AtomicU64,
    rejected: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl BridgeStats {
    /// Events published to NATS (acknowledged, with JetStream).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Events from other instances emitted on this bus.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Events not bridged because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Events not bridged because their payload is not serializable.
    pub fn unserializable(&self) -> u64 {
        self.unserializable.load(Ordering::Relaxed)
    }
    /// Events still buffered when the stop deadline passed.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
    /// Events NATS can never take (larger than its max_payload, a refused subject):
    /// dropped, counted and logged instead of blocking the events behind them.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
    /// Failed publish attempts (each retried).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// The last publish failure, while publishing is failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
}

/// What travels on NATS.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: String,
    origin: String,
    topic: String,
    payload: Value,
}

struct Outgoing {
    id: String,
    subject: String,
    body: Bytes,
}

struct Shared {
    stopping: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    wake: Notify,
    /// The stop began: the publisher closes its queue, publishes what is in it and
    /// ends, whoever still holds a sender of it (a bus handler kept by a `Publisher`,
    /// say).
    closing: Notify,
    /// Events this bridge queued for publishing, and those of them the publisher
    /// settled (published, rejected or given up on): the difference is what a stop that
    /// aborts the publisher loses.
    accepted: AtomicU64,
    settled: AtomicU64,
}

/// A connected bridge.
pub(crate) struct Bridge {
    client: async_nats::Client,
    instance_id: String,
    queue: Option<mpsc::Sender<Outgoing>>,
    subscription: Option<Subscription>,
    publisher: JoinHandle<()>,
    receiver: JoinHandle<()>,
    shared: Arc<Shared>,
    flush_timeout: Duration,
    /// Counts what a stop could not publish (`lost`).
    stats: Arc<BridgeStats>,
}

fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Bridge {
    /// Connects, sets up JetStream if asked, subscribes on both sides.
    pub(crate) async fn connect(
        config: &EventsNatsConfig,
        ctx: &PluginContext,
        stats: Arc<BridgeStats>,
    ) -> Result<Self, String> {
        let kept_stats = stats.clone();
        // With JetStream the instance must keep its name across restarts (its durable
        // consumer and the origin of its unacknowledged events); the config check
        // requires `instanceId` or `jetstream.durable` there.
        let instance_id = config
            .instance_id
            .clone()
            .or_else(|| {
                config
                    .jetstream
                    .enabled
                    .then(|| config.jetstream.durable.clone())
                    .flatten()
            })
            .unwrap_or_else(|| format!("ixp-{}-{}", std::process::id(), nuid::next()));
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ixp {instance_id}"))
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100u64.saturating_mul(1 << attempts.min(5)))
                    .min(Duration::from_secs(2))
            });
        if let Some(user) = &config.username {
            let password = config
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(token) = &config.token {
            options = options.token(token.expose().to_owned());
        }
        let servers: Vec<String> = config.url.split(',').map(|u| u.trim().to_owned()).collect();
        // `connection_timeout` bounds the TCP connect only: a server that accepts and
        // never answers would hold the handshake (and the plugin's start) for good.
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let client = match tokio::time::timeout(connect_timeout, options.connect(servers)).await {
            Ok(connected) => connected.map_err(|e| {
                format!(
                    "cannot connect to NATS at {}: {}",
                    crate::url_text::without_userinfo(&config.url),
                    error_text(&e)
                )
            })?,
            Err(_) => {
                return Err(format!(
                    "cannot connect to NATS at {}: no answer within {connect_timeout:?} (connectTimeoutMs)",
                    crate::url_text::without_userinfo(&config.url)
                ))
            }
        };

        let prefix = config.subject_prefix.clone();
        let patterns: Arc<[String]> = config.topics.clone().into();
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            deadline: Mutex::new(None),
            wake: Notify::new(),
            closing: Notify::new(),
            accepted: AtomicU64::new(0),
            settled: AtomicU64::new(0),
        });
        let (queue, outgoing) = mpsc::channel::<Outgoing>(config.buffer_size.max(1));

        let (publisher, receiver) = if config.jetstream.enabled {
            let js = {
                let mut js = jetstream::new(client.clone());
                js.set_timeout(Duration::from_millis(config.jetstream.ack_timeout_ms));
                js
            };
            let parse = |text: &str| humantime::parse_duration(text).map_err(|e| e.to_string());
            let stream_config = jetstream::stream::Config {
                name: config.jetstream.stream.clone(),
                subjects: vec![format!("{prefix}.>")],
                storage: jetstream::stream::StorageType::File,
                max_age: parse(&config.jetstream.max_age)?,
                duplicate_window: parse(&config.jetstream.duplicate_window)?,
                ..Default::default()
            };
            let stream = js
                .get_or_create_stream(stream_config.clone())
                .await
                .map_err(|e| {
                    format!(
                        "JetStream stream `{}` on {}: {}",
                        config.jetstream.stream,
                        crate::url_text::without_userinfo(&config.url),
                        error_text(&e)
                    )
                })?;
            let durable = config
                .jetstream
                .durable
                .clone()
                .unwrap_or_else(|| format!("ixp-{instance_id}"));
            let consumer_config = jetstream::consumer::pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            };
            stream
                .get_or_create_consumer(&durable, consumer_config.clone())
                .await
                .map_err(|e| format!("JetStream consumer `{durable}`: {}", error_text(&e)))?;
            let publisher = tokio::spawn(publish_loop(
                Publisher::JetStream {
                    client: client.clone(),
                    js: js.clone(),
                    stream: Box::new(stream_config),
                },
                outgoing,
                stats.clone(),
                shared.clone(),
            ));
            let receiver = tokio::spawn(consume_jetstream(
                stream,
                consumer_config,
                Inbound::new(
                    &instance_id,
                    patterns.clone(),
                    ctx.events().clone(),
                    stats.clone(),
                ),
            ));
            (publisher, receiver)
        } else {
            let subscriber = client.subscribe(format!("{prefix}.>")).await.map_err(|e| {
                format!(
                    "cannot subscribe on {}: {}",
                    crate::url_text::without_userinfo(&config.url),
                    error_text(&e)
                )
            })?;
            // A round trip, so the server has the subscription before start returns.
            client.flush().await.map_err(|e| {
                format!(
                    "cannot subscribe on {}: {}",
                    crate::url_text::without_userinfo(&config.url),
                    error_text(&e)
                )
            })?;
            let publisher = tokio::spawn(publish_loop(
                Publisher::Core(client.clone()),
                outgoing,
                stats.clone(),
                shared.clone(),
            ));
            let inbound = Inbound::new(
                &instance_id,
                patterns.clone(),
                ctx.events().clone(),
                stats.clone(),
            );
            let receiver = tokio::spawn(async move {
                let mut subscriber = subscriber;
                let mut inbound = inbound;
                while let Some(message) = subscriber.next().await {
                    inbound.handle(&message.payload).await;
                }
            });
            (publisher, receiver)
        };

        // One bus subscription to every topic, matched here against the patterns, so an
        // event that matches two patterns is still published once.
        let sender = queue.clone();
        let origin = instance_id.clone();
        let for_handler = stats.clone();
        let shared_for_handler = shared.clone();
        let subscription = ctx
            .events()
            .on("**", move |event: ixp_core::Event| {
                // Queued here, synchronously: the emitter never waits for NATS.
                let bridged = event.source() != Some(PLUGIN_NAME)
                    && !shared_for_handler.stopping.load(Ordering::Relaxed)
                    && patterns.iter().any(|p| topic_matches(p, event.topic()));
                if bridged {
                    outgoing_for(
                        &event,
                        &origin,
                        &prefix,
                        &for_handler,
                        &sender,
                        &shared_for_handler.accepted,
                    );
                }
                async {}
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            instance_id,
            queue: Some(queue),
            subscription: Some(subscription),
            publisher,
            receiver,
            shared,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
            stats: kept_stats,
        })
    }

    pub(crate) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Events waiting to be published.
    pub(crate) fn pending(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Stops taking events, publishes what is buffered (until the flush timeout), stops
    /// receiving; returns how many events were lost.
    pub(crate) async fn shutdown(mut self) -> u64 {
        if let Some(subscription) = self.subscription.take() {
            subscription.cancel();
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.flush_timeout);
        self.shared.wake.notify_one();
        self.shared.closing.notify_one();
        drop(self.queue.take());
        let grace = self.flush_timeout + Duration::from_secs(2);
        let mut lost = 0;
        if tokio::time::timeout(grace, &mut self.publisher)
            .await
            .is_err()
        {
            self.publisher.abort();
            // Ended (at its next `.await`), so that nothing it settles meanwhile is
            // counted both ways.
            let _ = (&mut self.publisher).await;
            // What it had not settled: the event it held (busy with one to outlast the
            // grace) and those still queued.
            let shared = &self.shared;
            lost = shared
                .accepted
                .load(Ordering::Relaxed)
                .saturating_sub(shared.settled.load(Ordering::Relaxed));
            self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        }
        self.receiver.abort();
        // Core NATS publishes into the client's buffer: what is still there is only sent
        // by this flush.
        match tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                target: "ixp_plugins::events_nats",
                "flushing the NATS client at stop failed ({e}): events published just before may be lost"
            ),
            Err(_) => tracing::warn!(
                target: "ixp_plugins::events_nats",
                "flushing the NATS client at stop took over 2 s: events published just before may be lost"
            ),
        }
        lost
    }
}

impl Drop for Bridge {
    /// A bridge dropped without [`shutdown`](Bridge::shutdown) (its plugin failed to
    /// start, say) leaves nothing running.
    fn drop(&mut self) {
        self.publisher.abort();
        self.receiver.abort();
    }
}

fn outgoing_for(
    event: &ixp_core::Event,
    origin: &str,
    prefix: &str,
    stats: &BridgeStats,
    sender: &mpsc::Sender<Outgoing>,
    accepted: &AtomicU64,
) {
    let payload = match event.to_json() {
        Ok(payload) => payload,
        Err(e) => {
            let n = stats.unserializable.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(target: "ixp_plugins::events_nats", "event `{}` not bridged: {e} ({n} so far)", event.topic());
            }
            return;
        }
    };
    let id = nuid::next().to_string();
    let envelope = Envelope {
        id: id.clone(),
        origin: origin.to_owned(),
        topic: event.topic().to_owned(),
        payload,
    };
    let Ok(body) = serde_json::to_vec(&envelope) else {
        stats.unserializable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let outgoing = Outgoing {
        id,
        subject: format!("{prefix}.{}", event.topic()),
        body: body.into(),
    };
    if sender.try_send(outgoing).is_ok() {
        accepted.fetch_add(1, Ordering::Relaxed);
    } else {
        let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                target: "ixp_plugins::events_nats",
                "the NATS buffer is full: event `{}` dropped ({n} dropped so far)",
                event.topic()
            );
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per bridge, never moved around
enum Publisher {
    Core(async_nats::Client),
    JetStream {
        client: async_nats::Client,
        js: jetstream::Context,
        stream: Box<jetstream::stream::Config>,
    },
}

/// Why one publish failed.
enum Failure {
    /// Worth retrying (NATS away, no acknowledgement in time).
    Transient(String),
    /// Never going to work (too large, a subject NATS refuses): dropped and counted.
    Permanent(String),
}

impl Publisher {
    fn client(&self) -> &async_nats::Client {
        match self {
            Publisher::Core(client) | Publisher::JetStream { client, .. } => client,
        }
    }

    async fn publish(&self, message: &Outgoing) -> Result<(), Failure> {
        let max = self.client().server_info().max_payload;
        if max > 0 && message.body.len() > max {
            return Err(Failure::Permanent(format!(
                "{} bytes is more than the server's max_payload of {max}",
                message.body.len()
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.id.as_str());
        match self {
            Publisher::Core(client) => client
                .publish_with_headers(message.subject.clone(), headers, message.body.clone())
                .await
                .map_err(|e| match e.kind() {
                    async_nats::client::PublishErrorKind::MaxPayloadExceeded
                    | async_nats::client::PublishErrorKind::BadSubject => {
                        Failure::Permanent(error_text(&e))
                    }
                    _ => Failure::Transient(error_text(&e)),
                }),
            Publisher::JetStream { js, stream, .. } => {
                let outcome = match js
                    .publish_with_headers(message.subject.clone(), headers, message.body.clone())
                    .await
                {
                    Ok(ack) => ack.await.map(drop),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                            // The stream was deleted (or never covered the subject): make
                            // it again, then retry.
                            let _ = js.get_or_create_stream((**stream).clone()).await;
                        }
                        Err(Failure::Transient(error_text(&e)))
                    }
                }
            }
        }
    }
}

async fn publish_loop(
    publisher: Publisher,
    mut queue: mpsc::Receiver<Outgoing>,
    stats: Arc<BridgeStats>,
    shared: Arc<Shared>,
) {
    let mut closed = false;
    loop {
        let message = if closed {
            queue.recv().await
        } else {
            tokio::select! {
                message = queue.recv() => message,
                () = shared.closing.notified() => {
                    // What is queued still comes out; then `recv` ends.
                    queue.close();
                    closed = true;
                    continue;
                }
            }
        };
        let Some(message) = message else {
            break;
        };
        let mut attempt: u32 = 0;
        loop {
            match publisher.publish(&message).await {
                Ok(()) => {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                    shared.settled.fetch_add(1, Ordering::Relaxed);
                    if attempt > 0 {
                        stats.set_error(None);
                    }
                    break;
                }
                Err(Failure::Permanent(error)) => {
                    let n = stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    shared.settled.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target: "ixp_plugins::events_nats",
                        "event on `{}` not bridged: {error} ({n} refused so far)",
                        message.subject
                    );
                    break;
                }
                Err(Failure::Transient(error)) => {
                    let failures = stats.failures.fetch_add(1, Ordering::Relaxed);
                    if failures.is_multiple_of(20) {
                        tracing::warn!(
                            target: "ixp_plugins::events_nats",
                            "publishing `{}` failed ({error}); retrying",
                            message.subject
                        );
                    }
                    stats.set_error(Some(error));
                }
            }
            attempt = attempt.saturating_add(1);
            let delay = Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5)))
                .min(Duration::from_secs(2));
            let deadline = *shared.deadline.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(deadline) = deadline {
                if Instant::now() + delay > deadline {
                    let left = 1 + queue.len() as u64;
                    stats.lost.fetch_add(left, Ordering::Relaxed);
                    shared.settled.fetch_add(left, Ordering::Relaxed);
                    tracing::warn!(
                        target: "ixp_plugins::events_nats",
                        "{left} event(s) not published before the stop deadline"
                    );
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shared.wake.notified() => {}
            }
        }
    }
}

/// The receiving side: drops own and already-seen events, emits the rest locally.
struct Inbound {
    instance_id: String,
    patterns: Arc<[String]>,
    bus: EventBus,
    stats: Arc<BridgeStats>,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Inbound {
    fn new(
        instance_id: &str,
        patterns: Arc<[String]>,
        bus: EventBus,
        stats: Arc<BridgeStats>,
    ) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            patterns,
            bus,
            stats,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    async fn handle(&mut self, body: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
            tracing::warn!(target: "ixp_plugins::events_nats", "a message that is not an ixp event was ignored");
            return;
        };
        if envelope.origin == self.instance_id
            || !self
                .patterns
                .iter()
                .any(|p| topic_matches(p, &envelope.topic))
            || !self.seen.insert(envelope.id.clone())
        {
            return;
        }
        self.order.push_back(envelope.id);
        if self.order.len() > SEEN_IDS {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        // Every local handler has run when this returns, so JetStream acknowledges an
        // event only after it was handled here.
        let report = self
            .bus
            .emit_and_wait(&envelope.topic, envelope.payload)
            .await;
        if !report.failures.is_empty() {
            tracing::debug!(
                target: "ixp_plugins::events_nats",
                "handlers of `{}` failed: {:?}",
                envelope.topic,
                report.failures
            );
        }
    }
}

async fn consume_jetstream(
    stream: jetstream::stream::Stream,
    consumer_config: jetstream::consumer::pull::Config,
    mut inbound: Inbound,
) {
    let durable = consumer_config.durable_name.clone().unwrap_or_default();
    let mut attempt: u32 = 0;
    loop {
        // get_or_create: a consumer deleted by an operator (or lost) is made again.
        let messages = match stream
            .get_or_create_consumer(&durable, consumer_config.clone())
            .await
        {
            Ok(consumer) => consumer.messages().await.map_err(|e| error_text(&e)),
            Err(e) => Err(error_text(&e)),
        };
        match messages {
            Ok(mut messages) => {
                while let Some(item) = messages.next().await {
                    match item {
                        Ok(message) => {
                            attempt = 0;
                            inbound.handle(&message.payload).await;
                            if let Err(e) = message.ack().await {
                                tracing::debug!(target: "ixp_plugins::events_nats", "ack failed: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::debug!(target: "ixp_plugins::events_nats", "consumer: {}", error_text(&e));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(target: "ixp_plugins::events_nats", "JetStream consumer `{durable}`: {e}; retrying");
                }
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(
            Duration::from_millis(100u64.saturating_mul(1 << attempt.min(4)))
                .min(Duration::from_secs(2)),
        )
        .await;
    }
}
