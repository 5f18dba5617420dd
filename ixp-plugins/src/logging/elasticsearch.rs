//! The `elasticsearch` transport: records become JSON documents, wait in a bounded
//! buffer, and are sent in `_bulk` requests by one background task.
//!
//! * The caller never waits: a record is queued with `try_send`; when the buffer is
//!   full the record is dropped, counted (`dropped` in the plugin's health, which is
//!   degraded for a minute after a drop) and logged (to the other transports).
//! * Every document carries an `_id` fixed when the record is made, so a batch sent
//!   again after a failure (a refused connection, an HTTP error, a lost response, a
//!   per-item 429/5xx) updates the same documents instead of adding copies: each record
//!   arrives once.
//! * Failed requests are retried with exponential backoff (100 ms doubling to 5 s);
//!   documents the server rejects for what they are (a 4xx item) are counted in
//!   `rejected` and not retried.
//! * On stop the buffer is closed and drained, and what is left is sent, retrying until
//!   `flushTimeoutMs`; whatever still could not be sent is counted in `lost` and
//!   reported.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::config::ElasticsearchTransport;

/// Targets whose records never go to Elasticsearch: this transport's own warnings and
/// the HTTP stack it sends with (either would feed back into the next batch).
const EXCLUDED_TARGETS: &[&str] = &[
    "ixp_plugins::logging",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tower",
];

/// Counters of the transport, shown in the plugin's health.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Documents the server stored.
    pub sent: AtomicU64,
    /// Records dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Documents the server refused for their content (4xx items).
    pub rejected: AtomicU64,
    /// Documents still unsent when the stop deadline passed.
    pub lost: AtomicU64,
    /// `_bulk` requests that failed (and were retried).
    pub failed_requests: AtomicU64,
    /// When a record was last dropped (ms since the Unix epoch; 0 = never).
    pub last_drop_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    stop_deadline: Mutex<Option<Instant>>,
    /// Told when `stop_deadline` is set: a request in flight then gets the deadline too.
    stopping: tokio::sync::Notify,
}

impl TransportStats {
    /// The last failure, if the last request failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Whether a record was dropped within `window`.
    pub fn dropped_within(&self, window: Duration) -> bool {
        let last = self.last_drop_ms.load(Ordering::Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        last != 0 && now_ms.saturating_sub(last) < window.as_millis() as u64
    }

    fn deadline(&self) -> Option<Instant> {
        *self.stop_deadline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One queued document.
struct Document {
    id: String,
    source: String,
}

/// The layer that turns records into documents and queues them.
pub struct ElasticsearchLayer {
    queue: mpsc::Sender<Document>,
    stats: Arc<TransportStats>,
    id_prefix: String,
    next_id: AtomicU64,
}

impl fmt::Debug for ElasticsearchLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchLayer").finish_non_exhaustive()
    }
}

/// The running sender task of one transport.
#[derive(Debug)]
pub struct ElasticsearchSender {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<TransportStats>,
    flush_timeout: Duration,
}

/// Why the transport could not be created.
#[derive(Debug, thiserror::Error)]
#[error("elasticsearch transport to {host}: {message}")]
pub struct TransportError {
    host: String,
    message: String,
}

/// Creates the layer and spawns its sender on the current tokio runtime.
pub fn start(
    config: &ElasticsearchTransport,
) -> Result<(ElasticsearchLayer, ElasticsearchSender), TransportError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .build()
        .map_err(|e| TransportError {
            host: crate::url_text::without_userinfo(&config.host),
            message: e.to_string(),
        })?;
    let (queue, receiver) = mpsc::channel(config.buffer_size.max(1));
    let stats = Arc::new(TransportStats::default());
    let sender = Sender {
        client,
        url: format!("{}/_bulk", config.host.trim_end_matches('/')),
        shown_url: crate::url_text::without_userinfo(&format!(
            "{}/_bulk",
            config.host.trim_end_matches('/')
        )),
        index: config.index.clone(),
        auth: match (&config.api_key, &config.username) {
            (Some(key), _) => Auth::ApiKey(key.clone()),
            (None, Some(user)) => Auth::Basic(user.clone(), config.password.clone()),
            (None, None) => Auth::None,
        },
        batch_size: config.batch_size.max(1),
        flush_interval: Duration::from_millis(config.flush_interval_ms),
        stats: stats.clone(),
    };
    let task = tokio::spawn(sender.run(receiver));
    let layer = ElasticsearchLayer {
        queue,
        stats: stats.clone(),
        id_prefix: instance_id(),
        next_id: AtomicU64::new(0),
    };
    Ok((
        layer,
        ElasticsearchSender {
            task,
            stats,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
        },
    ))
}

/// A prefix unique to this transport instance: process id, start time and address.
fn instance_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

impl ElasticsearchSender {
    /// The transport's counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// Gives the sender until the flush timeout from now: what it has not sent then
    /// is counted `lost`, and it ends (unless it is stopping already).
    fn stop_by_flush_timeout(&self) {
        let mut deadline = self
            .stats
            .stop_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if deadline.is_none() {
            *deadline = Some(Instant::now() + self.flush_timeout);
        }
        drop(deadline);
        self.stats.stopping.notify_waiters();
    }
}

/// Waits until each sender has sent everything queued (the layers must have been
/// dropped, which closes the queues), retrying until its flush timeout. The transports
/// finish together, each with its flush timeout from now: a stop takes the longest of
/// them, not their sum.
pub async fn finish_all(senders: Vec<ElasticsearchSender>) {
    for sender in &senders {
        sender.stop_by_flush_timeout();
    }
    futures::future::join_all(senders.into_iter().map(|mut sender| async move {
        let grace = sender.flush_timeout + Duration::from_secs(2);
        if tokio::time::timeout(grace, &mut sender.task).await.is_err() {
            sender.task.abort();
            tracing::warn!("elasticsearch transport: the sender did not finish within {grace:?}");
        }
    }))
    .await;
}

impl Drop for ElasticsearchSender {
    /// A sender dropped without [`finish_all`] (its plugin dropped without `stop`)
    /// still ends by its flush timeout, counting what it could not send.
    fn drop(&mut self) {
        self.stop_by_flush_timeout();
    }
}

impl<S> Layer<S> for ElasticsearchLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        super::json::on_new_span(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        super::json::on_record(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if EXCLUDED_TARGETS
            .iter()
            .any(|t| target == *t || target.starts_with(&format!("{t}::")))
        {
            return;
        }
        let source = super::json::document(event, &ctx);
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let document = Document {
            id,
            source: source.to_string(),
        };
        if self.queue.try_send(document).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let now_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.stats.last_drop_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}

enum Auth {
    None,
    Basic(String, Option<ixp_core::Secret>),
    ApiKey(ixp_core::Secret),
}

struct Sender {
    client: reqwest::Client,
    url: String,
    /// `url` without its user and password, for the logs.
    shown_url: String,
    index: String,
    auth: Auth,
    batch_size: usize,
    flush_interval: Duration,
    stats: Arc<TransportStats>,
}

/// What a `_bulk` request did with a batch.
struct BulkOutcome {
    stored: usize,
    retry: Vec<Document>,
    rejected: Vec<String>,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Document>) {
        let mut batch: Vec<Document> = Vec::with_capacity(self.batch_size.min(1024));
        let mut reported_drops = 0;
        loop {
            match queue.recv().await {
                Some(document) => batch.push(document),
                None => break,
            }
            let until = tokio::time::Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(document)) => batch.push(document),
                    Ok(None) | Err(_) => break,
                }
            }
            self.deliver(&mut batch).await;
            let dropped = self.stats.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                tracing::warn!(
                    "elasticsearch transport: {} record(s) dropped because the buffer was full ({dropped} in all)",
                    dropped - reported_drops
                );
                reported_drops = dropped;
            }
        }
    }

    /// Sends `batch` until every document is stored or rejected, or the stop deadline
    /// passes (then the rest is counted as lost).
    async fn deliver(&self, batch: &mut Vec<Document>) {
        let mut attempt: u32 = 0;
        while !batch.is_empty() {
            if self
                .stats
                .deadline()
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                self.give_up(batch);
                return;
            }
            let sending = batch.len();
            let Some(outcome) = self
                .within_stop_deadline(self.bulk(std::mem::take(batch)))
                .await
            else {
                self.stats.lost.fetch_add(sending as u64, Ordering::Relaxed);
                tracing::warn!(
                    "elasticsearch transport: {sending} document(s) still being sent at the stop deadline"
                );
                return;
            };
            match outcome {
                Ok(outcome) => {
                    self.stats
                        .sent
                        .fetch_add(outcome.stored as u64, Ordering::Relaxed);
                    if !outcome.rejected.is_empty() {
                        self.stats
                            .rejected
                            .fetch_add(outcome.rejected.len() as u64, Ordering::Relaxed);
                        tracing::warn!(
                            "elasticsearch transport: the server refused {} document(s): {}",
                            outcome.rejected.len(),
                            outcome.rejected[0]
                        );
                    }
                    *batch = outcome.retry;
                    if batch.is_empty() {
                        self.stats.set_last_error(None);
                        return;
                    }
                    self.stats.set_last_error(Some(format!(
                        "{} document(s) refused for now (429/5xx)",
                        batch.len()
                    )));
                }
                Err((documents, error)) => {
                    *batch = documents;
                    let failures = self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    if failures.is_multiple_of(20) {
                        tracing::warn!(
                            "elasticsearch transport: `_bulk` to {} failed ({error}); retrying {} document(s)",
                            self.shown_url,
                            batch.len()
                        );
                    }
                    self.stats.set_last_error(Some(error));
                }
            }
            attempt = attempt.saturating_add(1);
            let delay = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)))
                .min(Duration::from_secs(5));
            if let Some(deadline) = self.stats.deadline() {
                if Instant::now() + delay > deadline {
                    self.give_up(batch);
                    return;
                }
            }
            // A stop that begins during the wait ends it by its deadline too.
            if self
                .within_stop_deadline(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                self.give_up(batch);
                return;
            }
        }
    }

    /// `request`'s outcome, or `None` if a stop's deadline passed first (set before or
    /// while it runs): the stop would abort this task, and what it held would be lost
    /// uncounted.
    async fn within_stop_deadline<T>(
        &self,
        request: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(request);
        loop {
            // Registered before the deadline is read: a stop setting it meanwhile wakes it.
            let stopping = self.stats.stopping.notified();
            tokio::pin!(stopping);
            stopping.as_mut().enable();
            match self.stats.deadline() {
                Some(deadline) => {
                    return tokio::time::timeout_at(deadline.into(), &mut request)
                        .await
                        .ok();
                }
                None => tokio::select! {
                    outcome = &mut request => return Some(outcome),
                    () = &mut stopping => {}
                },
            }
        }
    }

    /// Counts `batch` as lost (the stop deadline passed) and empties it.
    fn give_up(&self, batch: &mut Vec<Document>) {
        self.stats
            .lost
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            "elasticsearch transport: {} document(s) could not be sent before the stop deadline",
            batch.len()
        );
        batch.clear();
    }

    async fn bulk(&self, batch: Vec<Document>) -> Result<BulkOutcome, (Vec<Document>, String)> {
        let mut body = String::new();
        for document in &batch {
            let action = json!({ "index": { "_index": self.index, "_id": document.id } });
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(&document.source);
            body.push('\n');
        }
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-ndjson")
            .body(body);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => {
                request.basic_auth(user, password.as_ref().map(|p| p.expose()))
            }
            Auth::ApiKey(key) => {
                request.header("authorization", format!("ApiKey {}", key.expose()))
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Err((batch, describe_reqwest(&e))),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Err((batch, describe_reqwest(&e))),
        };
        if !status.is_success() {
            let excerpt: String = text.chars().take(200).collect();
            return Err((batch, format!("HTTP {status}: {excerpt}")));
        }
        let reply: Value = match serde_json::from_str(&text) {
            Ok(reply) => reply,
            Err(e) => return Err((batch, format!("unreadable `_bulk` reply: {e}"))),
        };
        let items = reply.get("items").and_then(Value::as_array);
        let all_ok = reply.get("errors") == Some(&Value::Bool(false));
        match items {
            Some(items) if items.len() == batch.len() => {
                let mut outcome = BulkOutcome {
                    stored: 0,
                    retry: Vec::new(),
                    rejected: Vec::new(),
                };
                for (document, item) in batch.into_iter().zip(items) {
                    let result = item.as_object().and_then(|o| o.values().next());
                    let code = result
                        .and_then(|r| r.get("status"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if all_ok || (200..300).contains(&code) {
                        outcome.stored += 1;
                    } else if code == 429 || code >= 500 || code == 0 {
                        outcome.retry.push(document);
                    } else {
                        let reason = result
                            .and_then(|r| r.get("error"))
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| format!("status {code}"));
                        outcome.rejected.push(reason);
                    }
                }
                Ok(outcome)
            }
            _ if all_ok => Ok(BulkOutcome {
                stored: batch.len(),
                retry: Vec::new(),
                rejected: Vec::new(),
            }),
            _ => Err((
                batch,
                "a `_bulk` reply without one item per document".into(),
            )),
        }
    }
}

fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
