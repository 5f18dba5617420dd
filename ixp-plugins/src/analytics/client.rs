//! The `analytics` service ([`Analytics`]): a bounded buffer that [`track`](Analytics::track)
//! fills without ever waiting, and one background task that sends it in batches.
//!
//! * Every event gets an id (`<instance>-<sequence>`) and a timestamp when it is tracked;
//!   a batch that is sent again after a failure (a refused connection, a timeout, an
//!   HTTP 408/429/5xx, a lost response) is the same request body with the same ids, so a
//!   collector that keeps the first copy of each id stores every event once.
//! * The buffer holds at most `bufferSize` events, the batch being sent included. When
//!   it is full, the *newest* event is dropped: `track` returns
//!   [`TrackError::BufferFull`], the `dropped` counter grows, a warning is logged at the
//!   1st, 2nd, 4th, 8th, ... drop, and the plugin's health is degraded for a minute after
//!   the last drop.
//! * A failed request is retried with exponential backoff (`retryBackoff` doubling up to
//!   `maxBackoff`, or the collector's `Retry-After` if longer) while the events behind it
//!   wait in the buffer; with `maxRetries` set, a batch that failed `maxRetries + 1`
//!   times is given up and counted in `failed`. An answer that retrying cannot fix (a
//!   3xx, or a 4xx other than 408 and 429: a bad key, a refused body) gives the batch up
//!   at once, counted in `failed`. Every give-up is logged.
//! * On stop, intake closes (later `track` calls get [`TrackError::NotRunning`]) and
//!   everything buffered is sent at once, retrying until `flushTimeout`; what is still
//!   unconfirmed then is counted in `lost` and logged.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ixp_core::{Logger, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{AnalyticsConfig, Timing};
use super::wire::{self, EventId, Fields, Properties};

/// The serialized size of a typical request event (a batch body's first allocation is
/// this times `batchSize`, up to [`PIECE_BYTES`]).
const TYPICAL_EVENT_BYTES: usize = 256;

/// The size of each piece of a batch body. A piece is allocated once and never grown
/// (an event that does not fit starts the next piece), so tracking never copies a large
/// body under the buffer's lock, whatever `batchSize` is; the pieces are joined when
/// the batch is sent, outside the lock.
const PIECE_BYTES: usize = 64 * 1024;

/// How a batch's request body starts; [`BATCH_END`] closes it.
const BATCH_START: &[u8] = br#"{"events":["#;

/// How a batch's request body ends.
const BATCH_END: &[u8] = b"]}";

/// How long the health stays degraded after an event was dropped.
const DROP_DEGRADES_FOR: Duration = Duration::from_secs(60);

/// One event as user code tracks it. On the wire it gains `id` and `timestamp` (see the
/// [module docs](super) for the payload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackEvent {
    /// The event name, e.g. `signup` or `request_completed`.
    pub event: String,
    /// The user concerned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session concerned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The bus topic the event came from (absent for events tracked by user code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Free-form properties (a JSON object).
    #[serde(default)]
    pub properties: Map<String, Value>,
}

impl TrackEvent {
    /// An event named `event` with no property.
    pub fn new(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            ..Self::default()
        }
    }

    /// Sets the user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the session.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Adds one property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

/// Why an event was not accepted. Every refusal is also counted in `dropped`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// The buffer holds `bufferSize` events already (the collector is slow or away).
    #[error("analytics buffer full ({capacity} events): event dropped")]
    BufferFull {
        /// The configured `bufferSize`.
        capacity: usize,
    },
    /// The plugin is not running (stopped, or not started yet).
    #[error("analytics-plugin is not running: event dropped")]
    NotRunning,
    /// The properties are not a JSON value.
    #[error("analytics event properties cannot be serialized: {0}")]
    Properties(String),
}

/// The result of the last request to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastSend {
    /// When the answer (or the failure) came, RFC 3339.
    pub at: String,
    /// Whether the collector accepted the batch.
    pub ok: bool,
    /// Events in the batch.
    pub events: usize,
    /// The HTTP status, if an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A snapshot of the service's counters (all since the plugin was initialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsStats {
    /// Events waiting in the buffer.
    pub queued: usize,
    /// Events in the batch being sent.
    pub in_flight: usize,
    /// The bound of `queued + in_flight` (`bufferSize`).
    pub buffer_size: usize,
    /// Events the collector accepted.
    pub sent: u64,
    /// Events refused by `track` (buffer full, or the plugin not running).
    pub dropped: u64,
    /// Events given up: refused by the collector (3xx, 4xx but 408/429), or still failing
    /// after `maxRetries` retries.
    pub failed: u64,
    /// Requests that failed and were retried.
    pub failed_requests: u64,
    /// Events still unconfirmed when a stop's `flushTimeout` passed.
    pub lost: u64,
    /// Requests the collector accepted.
    pub batches: u64,
    /// The last request's result.
    pub last_send: Option<LastSend>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    failed_requests: AtomicU64,
    lost: AtomicU64,
    batches: AtomicU64,
    gave_up_batches: AtomicU64,
}

/// Up to `batchSize` tracked events, already joined into the request body that sends
/// them (`{"events":[e1,e2,...` without the closing `]}`), in pieces of at most
/// [`PIECE_BYTES`] (a bigger event has a piece of its own): an event is serialized once
/// and appended here; a body of more than one piece is joined once when sent.
struct Batch {
    /// The full pieces, oldest first.
    full: Vec<Vec<u8>>,
    /// The piece being filled; its capacity is never exceeded once it holds an event.
    last: Vec<u8>,
    /// The size of a new piece (the first one's capacity: small batches stay small).
    piece_bytes: usize,
    events: usize,
    /// When the batch's first event was tracked (`flushInterval` counts from there).
    opened: Instant,
}

impl Batch {
    fn new(batch_size: usize) -> Self {
        let piece_bytes = TYPICAL_EVENT_BYTES
            .saturating_mul(batch_size)
            .clamp(BATCH_START.len(), PIECE_BYTES);
        let mut last = Vec::with_capacity(piece_bytes);
        last.extend_from_slice(BATCH_START);
        Self {
            full: Vec::new(),
            last,
            piece_bytes,
            events: 0,
            opened: Instant::now(),
        }
    }

    fn push(&mut self, event: &[u8]) {
        let needed = event.len() + usize::from(self.events > 0);
        if self.last.capacity() - self.last.len() < needed {
            if self.events == 0 {
                // Only the body's start so far: growing it copies a dozen bytes.
                self.last.reserve_exact(needed);
            } else {
                let next = Vec::with_capacity(self.piece_bytes.max(needed));
                self.full.push(std::mem::replace(&mut self.last, next));
            }
        }
        if self.events > 0 {
            self.last.push(b',');
        }
        self.last.extend_from_slice(event);
        self.events += 1;
    }

    /// The bytes so far, piece by piece.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.full
            .iter()
            .map(Vec::as_slice)
            .chain(std::iter::once(self.last.as_slice()))
    }

    /// The finished request body (shared, not copied, by the retries of the batch).
    /// Called outside the buffer's lock: closing the body may reallocate or join it.
    fn into_body(self) -> Bytes {
        let mut body = if self.full.is_empty() {
            self.last
        } else {
            let len = self.pieces().map(<[u8]>::len).sum::<usize>() + BATCH_END.len();
            let mut joined = Vec::with_capacity(len);
            self.pieces()
                .for_each(|piece| joined.extend_from_slice(piece));
            joined
        };
        body.extend_from_slice(BATCH_END);
        if body.capacity() > 2 * body.len() {
            // A batch sent before it filled: its retries do not keep the preallocation.
            body.shrink_to_fit();
        }
        Bytes::from(body)
    }
}

#[derive(Default)]
struct Buffer {
    /// Oldest first; every batch but the last is full.
    batches: VecDeque<Batch>,
    /// Events in `batches`.
    queued: usize,
    in_flight: usize,
    open: bool,
    flush_requested: bool,
    deadline: Option<Instant>,
    accepted: u64,
    last_drop: Option<Instant>,
}

impl Buffer {
    /// Appends one serialized event to the last batch, or to a new one when that is full.
    /// Returns whether the sender should look again: the first event of an empty
    /// buffer (it starts the `flushInterval` wait) or a batch just filled.
    fn push(&mut self, event: &[u8], batch_size: usize) -> bool {
        let filled = match self.batches.back_mut() {
            Some(last) if last.events < batch_size => {
                last.push(event);
                last.events == batch_size
            }
            _ => {
                let mut batch = Batch::new(batch_size);
                batch.push(event);
                let filled = batch.events == batch_size;
                self.batches.push_back(batch);
                filled
            }
        };
        self.queued += 1;
        self.accepted += 1;
        self.queued == 1 || filled
    }
}

/// The most a thread's [`SCRATCH`] keeps between events.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Where `enqueue` serializes an event before it takes the buffer's lock (reused:
    /// tracking allocates nothing once batches are warm).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(TYPICAL_EVENT_BYTES));
}

struct Shared {
    logger: Logger,
    batch_size: usize,
    buffer_size: usize,
    max_retries: Option<u32>,
    timing: Timing,
    endpoint: String,
    id_prefix: String,
    next_seq: AtomicU64,
    buffer: Mutex<Buffer>,
    /// Wakes the sender: the first event of a batch, a full batch, a flush, a stop.
    wake: Notify,
    /// Cuts a retry's backoff short when a stop begins.
    closing: Notify,
    /// Events that left the buffer for good (sent, failed or lost), in order.
    handled: watch::Sender<u64>,
    counters: Counters,
    last_send: Mutex<Option<LastSend>>,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Option<Instant> {
        self.buffer().deadline
    }

    /// The batch of `count` events left the buffer: counted, and `flush` waiters told.
    fn settle(&self, count: usize, counter: &AtomicU64) {
        {
            let mut buffer = self.buffer();
            buffer.in_flight = buffer.in_flight.saturating_sub(count);
        }
        counter.fetch_add(count as u64, Ordering::Relaxed);
        self.handled.send_modify(|h| *h += count as u64);
    }

    fn record(&self, ok: bool, events: usize, status: Option<u16>, error: Option<String>) {
        *self.last_send.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastSend {
            at: crate::time::rfc3339_millis(SystemTime::now()),
            ok,
            events,
            status,
            error,
        });
    }
}

/// The `analytics` service: [`track`](Self::track) events from user code, read the
/// counters. Every method returns at once except [`flush`](Self::flush).
///
/// ```no_run
/// # async fn handler(services: &ixp_core::ServiceRegistry) -> Result<(), Box<dyn std::error::Error>> {
/// use ixp_plugins::analytics::{Analytics, TrackEvent};
///
/// let analytics = services.get::<Analytics>("analytics")?;
/// analytics.track("signup", serde_json::json!({ "plan": "pro" }))?;
/// analytics.track_event(TrackEvent::new("checkout").user("u-42").property("total", 99.5))?;
/// # Ok(()) }
/// ```
pub struct Analytics {
    shared: Arc<Shared>,
}

impl fmt::Debug for Analytics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analytics")
            .field("endpoint", &self.shared.endpoint)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Analytics {
    pub(crate) fn new(config: &AnalyticsConfig) -> Self {
        let (handled, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                logger: Logger::new("analytics-plugin"),
                batch_size: config.batch_size.max(1),
                buffer_size: config.buffer_size.max(1),
                max_retries: config.max_retries,
                timing: config.timing(),
                endpoint: display_endpoint(&config.endpoint),
                id_prefix: instance_id(),
                next_seq: AtomicU64::new(1),
                buffer: Mutex::new(Buffer::default()),
                wake: Notify::new(),
                closing: Notify::new(),
                handled,
                counters: Counters::default(),
                last_send: Mutex::new(None),
            }),
        }
    }

    /// Tracks `event` with `properties` (any value that serializes to a JSON object; a
    /// non-object value is sent as `{"value": ...}`). Returns the event's id, or why it
    /// was dropped; never waits.
    pub fn track(&self, event: &str, properties: impl Serialize) -> Result<String, TrackError> {
        let properties = match serde_json::to_value(properties) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(other) => Map::from_iter([("value".to_owned(), other)]),
            Err(e) => {
                self.count_drop(None);
                return Err(TrackError::Properties(e.to_string()));
            }
        };
        self.track_event(TrackEvent {
            event: event.to_owned(),
            properties,
            ..TrackEvent::default()
        })
    }

    /// Tracks a whole event (user, session, properties). Returns its id, or why it was
    /// dropped; never waits.
    pub fn track_event(&self, event: TrackEvent) -> Result<String, TrackError> {
        let seq = self.enqueue(&Fields {
            event: &event.event,
            user_id: event.user_id.as_deref(),
            session_id: event.session_id.as_deref(),
            topic: event.topic.as_deref(),
            properties: &event.properties,
        })?;
        Ok(EventId {
            prefix: &self.shared.id_prefix,
            seq,
        }
        .to_string())
    }

    /// Stamps `fields` with an id and the time, serializes them and buffers the result.
    /// Returns the id's sequence number, or why the event was dropped; never waits.
    pub(crate) fn enqueue<P: Properties + ?Sized>(
        &self,
        fields: &Fields<'_, P>,
    ) -> Result<u64, TrackError> {
        let shared = &self.shared;
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let id = EventId {
            prefix: &shared.id_prefix,
            seq,
        };
        let at = SystemTime::now();
        let scratch = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                let result = self.serialize_and_buffer(&id, at, fields, &mut scratch);
                if scratch.capacity() > MAX_KEPT_SCRATCH {
                    // One huge event does not pin its size to the thread.
                    *scratch = Vec::with_capacity(TYPICAL_EVENT_BYTES);
                }
                Some(result)
            }
            // Tracking from inside the properties' own serialization: not this buffer.
            Err(_) => None,
        });
        match scratch {
            Ok(Some(result)) => result?,
            // Re-entered, or the thread's locals are being destroyed: a buffer of its own.
            Ok(None) | Err(_) => self.serialize_and_buffer(&id, at, fields, &mut Vec::new())?,
        }
        Ok(seq)
    }

    /// Serializes the event into `scratch` and appends it to the buffer.
    fn serialize_and_buffer<P: Properties + ?Sized>(
        &self,
        id: &EventId<'_>,
        at: SystemTime,
        fields: &Fields<'_, P>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), TrackError> {
        let shared = &self.shared;
        scratch.clear();
        if let Err(e) = wire::write_event(scratch, id, at, fields) {
            self.count_drop(None);
            return Err(TrackError::Properties(e.to_string()));
        }
        let mut buffer = shared.buffer();
        if !buffer.open {
            drop(buffer);
            self.count_drop(None);
            return Err(TrackError::NotRunning);
        }
        if buffer.queued + buffer.in_flight >= shared.buffer_size {
            buffer.last_drop = Some(Instant::now());
            drop(buffer);
            self.count_drop(Some(shared.buffer_size));
            return Err(TrackError::BufferFull {
                capacity: shared.buffer_size,
            });
        }
        let wake = buffer.push(scratch, shared.batch_size);
        drop(buffer);
        if wake {
            shared.wake.notify_one();
        }
        Ok(())
    }

    /// Sends what is buffered now (without waiting for `flushInterval`) and waits until
    /// every event accepted before the call has left the buffer: sent, given up, or lost
    /// to a stop. While the collector is away and `maxRetries` is unset this waits for
    /// it; bound it with `tokio::time::timeout` if needed.
    pub async fn flush(&self) {
        let target = {
            let mut buffer = self.shared.buffer();
            buffer.flush_requested = true;
            buffer.accepted
        };
        self.shared.wake.notify_one();
        let mut handled = self.shared.handled.subscribe();
        let _ = handled.wait_for(|h| *h >= target).await;
    }

    /// The counters now.
    pub fn stats(&self) -> AnalyticsStats {
        let (queued, in_flight) = {
            let buffer = self.shared.buffer();
            (buffer.queued, buffer.in_flight)
        };
        let c = &self.shared.counters;
        AnalyticsStats {
            queued,
            in_flight,
            buffer_size: self.shared.buffer_size,
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            last_send: self
                .shared
                .last_send
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// The endpoint as shown in logs and health: no query string.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// Whether an event was dropped in the last minute.
    pub(crate) fn dropped_recently(&self) -> bool {
        self.shared
            .buffer()
            .last_drop
            .is_some_and(|at| at.elapsed() < DROP_DEGRADES_FOR)
    }

    fn count_drop(&self, full: Option<usize>) {
        let n = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            let why = match full {
                Some(capacity) => format!(
                    "the buffer ({capacity} events) is full because the collector is slow or away; the newest events are dropped"
                ),
                None => "the plugin is not running or the properties are not JSON".to_owned(),
            };
            self.shared.logger.warn(format_args!(
                "analytics: {n} event(s) dropped so far: {why} (next warning at {})",
                n.saturating_mul(2)
            ));
        }
    }

    /// Opens intake and spawns the sender.
    pub(crate) fn open(
        &self,
        client: reqwest::Client,
        url: reqwest::Url,
        api_key: Option<Secret>,
    ) -> JoinHandle<()> {
        {
            let mut buffer = self.shared.buffer();
            buffer.open = true;
            buffer.deadline = None;
        }
        let sender = Sender {
            shared: self.shared.clone(),
            client,
            url,
            api_key,
        };
        tokio::spawn(sender.run())
    }

    /// Closes intake, lets the sender send everything buffered until `flushTimeout`,
    /// then counts what is left as lost. Returns (events sent during the flush, lost).
    pub(crate) async fn close(&self, mut sender: JoinHandle<()>) -> (u64, u64) {
        let shared = &self.shared;
        let sent_before = shared.counters.sent.load(Ordering::Relaxed);
        let flush_timeout = shared.timing.flush_timeout;
        {
            let mut buffer = shared.buffer();
            buffer.open = false;
            buffer.deadline = Some(Instant::now() + flush_timeout);
        }
        shared.closing.notify_waiters();
        shared.wake.notify_one();
        let grace = flush_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, &mut sender).await.is_err() {
            sender.abort();
            let _ = sender.await;
        }
        let lost = self.abandon();
        (
            shared.counters.sent.load(Ordering::Relaxed) - sent_before,
            lost,
        )
    }

    /// Counts every event still buffered or in flight as lost, and logs it.
    pub(crate) fn abandon(&self) -> u64 {
        let shared = &self.shared;
        let left = {
            let mut buffer = shared.buffer();
            let left = buffer.queued + buffer.in_flight;
            buffer.batches.clear();
            buffer.queued = 0;
            buffer.in_flight = 0;
            buffer.open = false;
            left
        };
        if left > 0 {
            shared
                .counters
                .lost
                .fetch_add(left as u64, Ordering::Relaxed);
            shared.handled.send_modify(|h| *h += left as u64);
            shared.logger.warn(format_args!(
                "analytics: {left} event(s) could not be delivered to {} before the flush timeout ({}) and are lost",
                shared.endpoint,
                humantime::format_duration(shared.timing.flush_timeout)
            ));
        }
        left as u64
    }
}

#[cfg(test)]
impl Analytics {
    /// Opens intake without a sender (the events stay buffered).
    pub(crate) fn open_intake(&self) {
        self.shared.buffer().open = true;
    }

    /// The buffered events, oldest first.
    pub(crate) fn queued(&self) -> Vec<Value> {
        let buffer = self.shared.buffer();
        buffer
            .batches
            .iter()
            .flat_map(|batch| {
                let mut body = batch.pieces().collect::<Vec<_>>().concat();
                body.extend_from_slice(BATCH_END);
                let mut json: Value = serde_json::from_slice(&body).expect("a batch is JSON");
                match json["events"].take() {
                    Value::Array(events) => events,
                    other => panic!("not an events array: {other}"),
                }
            })
            .collect()
    }
}

/// What one request did.
enum Attempt {
    /// Accepted, with this status.
    Delivered(u16),
    /// Worth retrying; the collector's `Retry-After`, if any.
    Retry(String, Option<u16>, Option<Duration>),
    /// Retrying cannot help.
    Refused(String, u16),
}

struct Sender {
    shared: Arc<Shared>,
    client: reqwest::Client,
    /// The endpoint, parsed once (not for every batch).
    url: reqwest::Url,
    api_key: Option<Secret>,
}

impl Sender {
    async fn run(self) {
        while let Some((body, count)) = self.next_batch().await {
            if !self.deliver(body, count).await {
                break;
            }
        }
    }

    /// Waits until a batch is due (full, `flushInterval` old, a flush, a stop) and takes
    /// it; `None` once stopping with nothing left.
    async fn next_batch(&self) -> Option<(Bytes, usize)> {
        let shared = &self.shared;
        loop {
            let wait_until = {
                let mut buffer = shared.buffer();
                let now = Instant::now();
                let due = buffer.batches.front().is_some_and(|first| {
                    first.events >= shared.batch_size
                        || !buffer.open
                        || buffer.flush_requested
                        || first.opened + shared.timing.flush_interval <= now
                });
                if let Some(batch) = due.then(|| buffer.batches.pop_front()).flatten() {
                    let n = batch.events;
                    buffer.queued -= n;
                    buffer.in_flight += n;
                    if buffer.batches.is_empty() {
                        buffer.flush_requested = false;
                    }
                    drop(buffer);
                    return Some((batch.into_body(), n));
                }
                if !buffer.open {
                    return None;
                }
                buffer.flush_requested = false;
                buffer
                    .batches
                    .front()
                    .map(|first| first.opened + shared.timing.flush_interval)
            };
            match wait_until {
                None => shared.wake.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = shared.wake.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }

    /// Sends one batch until it is delivered or given up; `false` if the stop deadline
    /// passed first (the batch is then counted as lost by `close`).
    async fn deliver(&self, body: Bytes, count: usize) -> bool {
        let shared = &self.shared;
        let mut retries: u32 = 0;
        loop {
            let Some(attempt) = self.attempt(body.clone()).await else {
                return false;
            };
            let (error, retry_after) = match attempt {
                Attempt::Delivered(status) => {
                    shared.counters.batches.fetch_add(1, Ordering::Relaxed);
                    shared.record(true, count, Some(status), None);
                    shared.settle(count, &shared.counters.sent);
                    return true;
                }
                Attempt::Refused(error, status) => {
                    shared.record(false, count, Some(status), Some(error.clone()));
                    self.give_up(count, &error);
                    return true;
                }
                Attempt::Retry(error, status, retry_after) => {
                    shared.record(false, count, status, Some(error.clone()));
                    (error, retry_after)
                }
            };
            let failures = shared
                .counters
                .failed_requests
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if shared.max_retries.is_some_and(|max| retries >= max) {
                self.give_up(
                    count,
                    &format!(
                        "{error} (after {retries} retr{})",
                        if retries == 1 { "y" } else { "ies" }
                    ),
                );
                return true;
            }
            retries += 1;
            if failures.is_power_of_two() {
                shared.logger.warn(format_args!(
                    "analytics: sending {count} event(s) to {} failed ({error}); retrying ({failures} failed request(s) so far)",
                    shared.endpoint
                ));
            }
            let delay = backoff(&shared.timing, retries, retry_after);
            let closing = shared.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            match shared.deadline() {
                Some(deadline) => {
                    if Instant::now() + delay >= deadline {
                        return false;
                    }
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = &mut closing => {}
                    }
                }
            }
        }
    }

    /// One request; once a stop begins (before or during it), bounded by the stop
    /// deadline: `None` if the deadline passed first.
    async fn attempt(&self, body: Bytes) -> Option<Attempt> {
        let shared = &self.shared;
        let closing = shared.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        let request = self.post(body);
        tokio::pin!(request);
        if shared.deadline().is_none() {
            tokio::select! {
                attempt = &mut request => return Some(attempt),
                () = &mut closing => {}
            }
        }
        match shared.deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, request).await.ok(),
            None => Some(request.await),
        }
    }

    fn give_up(&self, count: usize, error: &str) {
        let shared = &self.shared;
        shared.settle(count, &shared.counters.failed);
        let n = shared
            .counters
            .gave_up_batches
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            shared.logger.error(format_args!(
                "analytics: gave up {count} event(s) for {}: {error} ({n} batch(es) given up so far)",
                shared.endpoint
            ));
        }
    }

    async fn post(&self, body: Bytes) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(describe(e), None, None),
        };
        let status = response.status();
        if status.is_success() {
            // Read the answer so that the connection can be reused.
            let _ = response.bytes().await;
            return Attempt::Delivered(status.as_u16());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let excerpt: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let error = if excerpt.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {}", excerpt.trim())
        };
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Attempt::Retry(error, Some(code), retry_after)
        } else {
            Attempt::Refused(error, code)
        }
    }
}

/// The wait before retry number `retry` (from 1): `retryBackoff` doubling up to
/// `maxBackoff`, or the collector's `Retry-After` (bounded by `maxBackoff`) if longer.
fn backoff(timing: &Timing, retry: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = timing
        .retry_backoff
        .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    doubled
        .max(retry_after.unwrap_or_default())
        .min(timing.max_backoff)
}

/// A reqwest error with its causes, without the URL (which may carry a query).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// `scheme://host[:port]/path` of the endpoint, without query or fragment.
pub(super) fn display_endpoint(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        Err(_) => "(invalid endpoint)".to_owned(),
    }
}

/// A prefix unique to this instance of the service: random, mixed with the process id
/// and the time.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let timing = Timing {
            flush_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            flush_timeout: Duration::from_secs(1),
        };
        let ms = |retry, after| backoff(&timing, retry, after).as_millis();
        assert_eq!(
            [
                ms(1, None),
                ms(2, None),
                ms(3, None),
                ms(4, None),
                ms(5, None),
                ms(40, None)
            ],
            [100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(ms(1, Some(Duration::from_millis(700))), 700);
        assert_eq!(ms(1, Some(Duration::from_secs(60))), 1000);
    }

    #[test]
    fn events_are_joined_into_batches_of_batch_size() {
        let mut buffer = Buffer::default();
        let wakes: Vec<bool> = (1..=5)
            .map(|i| buffer.push(format!("{{\"n\":{i}}}").as_bytes(), 2))
            .collect();
        // The first event starts the interval; each filled batch is due at once.
        assert_eq!(wakes, [true, true, false, true, false]);
        assert_eq!((buffer.queued, buffer.accepted), (5, 5));
        let bodies: Vec<(Bytes, usize)> = buffer
            .batches
            .drain(..)
            .map(|batch| {
                let events = batch.events;
                (batch.into_body(), events)
            })
            .collect();
        assert_eq!(
            bodies,
            [
                (Bytes::from_static(br#"{"events":[{"n":1},{"n":2}]}"#), 2),
                (Bytes::from_static(br#"{"events":[{"n":3},{"n":4}]}"#), 2),
                (Bytes::from_static(br#"{"events":[{"n":5}]}"#), 1),
            ]
        );
    }

    #[test]
    fn a_large_batch_grows_by_new_pieces_and_is_joined_when_sent() {
        let batch_size = 1000;
        let mut batch = Batch::new(batch_size);
        let mut expected = BATCH_START.to_vec();
        let big = format!("{{\"big\":\"{}\"}}", "x".repeat(PIECE_BYTES + 10));
        for i in 0..batch_size {
            let event = if i == 500 {
                big.clone()
            } else {
                format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(i % 700))
            };
            if i > 0 {
                expected.push(b',');
            }
            expected.extend_from_slice(event.as_bytes());
            let pieces_before = batch.full.len();
            let (ptr, capacity) = (batch.last.as_ptr(), batch.last.capacity());
            batch.push(event.as_bytes());
            if batch.full.len() == pieces_before {
                // Appended in place: the piece was not reallocated.
                assert_eq!(
                    (batch.last.as_ptr(), batch.last.capacity()),
                    (ptr, capacity)
                );
            }
        }
        assert!(batch.full.len() > 2, "{} full pieces", batch.full.len());
        for piece in &batch.full {
            assert!(piece.len() <= PIECE_BYTES || piece.len() == big.len() + 1);
        }
        expected.extend_from_slice(BATCH_END);
        let body = batch.into_body();
        assert_eq!(body.len(), expected.len());
        assert!(body == expected, "the joined body differs");
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["events"].as_array().map(Vec::len), Some(batch_size));
    }

    #[test]
    fn pieces_fill_exactly_and_small_batches_stay_in_one_piece() {
        // An event that fills the piece to the byte stays in it; the next starts another.
        let mut batch = Batch::new(2);
        let room = batch.last.capacity() - BATCH_START.len();
        let filling = format!("\"{}\"", "f".repeat(room - 2));
        batch.push(filling.as_bytes());
        assert_eq!(
            (batch.full.len(), batch.last.len()),
            (0, batch.last.capacity())
        );
        batch.push(b"2");
        assert_eq!(batch.full.len(), 1);
        assert!(
            batch.last.capacity() <= 2 * TYPICAL_EVENT_BYTES,
            "a small next piece"
        );
        let body = batch.into_body();
        assert_eq!(body.len(), BATCH_START.len() + room + 2 + BATCH_END.len());
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["events"][1], 2);

        // batchSize 1: an event bigger than the preallocation is still one piece.
        let mut batch = Batch::new(1);
        let big = format!("\"{}\"", "b".repeat(4 * TYPICAL_EVENT_BYTES));
        batch.push(big.as_bytes());
        assert!(batch.full.is_empty());
        let body = batch.into_body();
        assert_eq!(body.len(), BATCH_START.len() + big.len() + BATCH_END.len());
    }

    #[test]
    fn the_endpoint_shows_without_query() {
        assert_eq!(
            display_endpoint("https://c.example/v1/batch?token=abc#x"),
            "https://c.example/v1/batch"
        );
    }

    #[test]
    fn ids_differ_between_instances() {
        assert_ne!(instance_id(), instance_id());
    }
}
