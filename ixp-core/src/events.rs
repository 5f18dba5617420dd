//! The event bus: string topics with wildcards, typed payloads, async handlers.
//!
//! # Topics and patterns
//!
//! Topics are dot-separated (`user.created`). A subscription pattern is a topic, or has
//! `*` for exactly one segment (`order.*` matches `order.paid`, not `order.paid.late`),
//! or ends in `**` for one or more segments (`order.**`); `**` alone matches every topic.
//!
//! # Delivery, ordering and slow subscribers
//!
//! * [`EventBus::emit`] is fire and forget: it hands the event to each matching
//!   subscription's queue and returns without waiting for any handler. Each subscription
//!   has one queue and one worker, so **a subscription receives the events of one
//!   publisher in the order they were emitted**, one handler call at a time. There is no
//!   order across subscriptions.
//! * Queues are bounded ([`SubscribeOptions::capacity`], 1024 by default). When a queue is
//!   full, the subscription's [`Overflow`] policy applies: [`Overflow::Wait`] (the
//!   default) makes `emit` wait for room, so a slow subscriber slows its publishers down
//!   (back-pressure, nothing lost); [`Overflow::DropNewest`] drops the new event for that
//!   subscription, counts it ([`Subscription::dropped`]) and logs a warning. Nothing is
//!   ever dropped silently.
//! * [`EventBus::emit_and_wait`] calls every matching handler in the caller's task, one
//!   after the other in subscription order, and returns when all are done, with the
//!   failures.
//! * [`EventBus::try_emit`] never waits: a full queue counts as a drop for that
//!   subscription (logged), whatever its policy.
//!
//! # Failures
//!
//! A handler that returns an error or panics does not disturb other handlers, its own
//! later events, or the publisher: the failure is logged and published as
//! `error.occurred` with an [`ErrorOccurred`] payload (failures of `error.occurred`
//! handlers themselves are only logged).
//!
//! # Example
//!
//! ```
//! use ixp_core::events::{Event, EventBus};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = EventBus::new();
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let _subscription = bus.on("user.*", move |event: Event| {
//!     let tx = tx.clone();
//!     async move {
//!         let name = event.payload::<String>().cloned().unwrap_or_default();
//!         tx.send((event.topic().to_owned(), name)).ok();
//!     }
//! })?;
//! bus.emit("user.created", "ada".to_string()).await;
//! assert_eq!(rx.recv().await, Some(("user.created".into(), "ada".into())));
//! # Ok(()) }
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::plugin::BoxError;

/// The topic on which handler failures (and other unhandled errors) are published.
pub const ERROR_TOPIC: &str = "error.occurred";

/// Errors of the event bus API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The subscription pattern is malformed.
    #[error("invalid topic pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The payload is not of the requested type and cannot be decoded into it.
    #[error("event `{topic}` carries a `{actual}` payload, which cannot be read as `{expected}`: {reason}")]
    PayloadType {
        /// The event's topic.
        topic: String,
        /// The type asked for.
        expected: &'static str,
        /// The payload's type.
        actual: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// The payload could not be serialized to JSON.
    #[error("event `{topic}`: payload cannot be serialized: {source}")]
    Serialize {
        /// The event's topic.
        topic: String,
        /// The serde error.
        source: serde_json::Error,
    },
}

/// A value that can travel on the bus: any `Serialize + Send + Sync + 'static` type.
pub trait Payload: Any + Send + Sync {
    /// The payload as JSON (used by bridges to other processes).
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    /// The Rust type name, for error messages.
    fn type_name(&self) -> &'static str;
}

impl<T: Serialize + Send + Sync + 'static> Payload for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// An event as handlers receive it: topic, payload, and the plugin that emitted it.
#[derive(Clone)]
pub struct Event {
    topic: Arc<str>,
    payload: Arc<dyn Payload>,
    source: Option<Arc<str>>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("topic", &self.topic)
            .field("payload_type", &self.payload.type_name())
            .field("source", &self.source)
            .finish()
    }
}

impl Event {
    /// An event on `topic` carrying `payload`.
    pub fn new<T: Payload>(topic: impl Into<Arc<str>>, payload: T) -> Self {
        Self {
            topic: topic.into(),
            payload: Arc::new(payload),
            source: None,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The name of the plugin that emitted the event, if a plugin did.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The payload, if it is a `T`.
    pub fn payload<T: 'static>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.payload;
        any.downcast_ref::<T>()
    }

    /// The payload as a `T`: the value itself if it is one, else decoded from its JSON
    /// form (events that came from another process carry JSON).
    pub fn decode<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<Arc<T>, EventError> {
        let any: Arc<dyn Any + Send + Sync> = self.payload.clone();
        match any.downcast::<T>() {
            Ok(value) => Ok(value),
            Err(_) => {
                let fail = |reason: String| EventError::PayloadType {
                    topic: self.topic.to_string(),
                    expected: std::any::type_name::<T>(),
                    actual: self.payload.type_name(),
                    reason,
                };
                let json = self.payload.to_json().map_err(|e| fail(e.to_string()))?;
                serde_json::from_value(json)
                    .map(Arc::new)
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }

    /// The payload as JSON.
    pub fn to_json(&self) -> Result<Value, EventError> {
        self.payload
            .to_json()
            .map_err(|source| EventError::Serialize {
                topic: self.topic.to_string(),
                source,
            })
    }
}

/// An event type that names its own topic, for the typed API
/// ([`EventBus::publish`], [`EventBus::subscribe`]).
///
/// ```
/// use ixp_core::events::TypedEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct UserCreated { id: u64 }
///
/// impl TypedEvent for UserCreated {
///     const TOPIC: &'static str = "user.created";
/// }
/// ```
pub trait TypedEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic events of this type are published on.
    const TOPIC: &'static str;
}

/// The payload of `error.occurred`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorOccurred {
    /// What failed: `event-handler`, `http`, `plugin`.
    pub source: String,
    /// The plugin concerned, if any.
    pub plugin: Option<String>,
    /// The topic being handled, for handler failures.
    pub topic: Option<String>,
    /// The error message (or panic message).
    pub message: String,
}

impl TypedEvent for ErrorOccurred {
    const TOPIC: &'static str = ERROR_TOPIC;
}

/// What a subscription does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The publisher waits for room (back-pressure). Nothing is lost.
    #[default]
    Wait,
    /// The new event is dropped for this subscription, counted and logged.
    DropNewest,
}

/// Options of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Queue length (events waiting for the handler). At least 1.
    pub capacity: usize,
    /// What happens when the queue is full.
    pub overflow: Overflow,
    /// Handle one event and unsubscribe.
    pub once: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Wait,
            once: false,
        }
    }
}

/// What a handler may return: `()` or `Result<(), E>`.
pub trait HandlerOutput: Send + 'static {
    /// Converts into the bus's result.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerOutput for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> HandlerOutput for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

type HandlerFn = dyn Fn(Event) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(Arc<str>),
    Wild(Vec<Segment>),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, EventError> {
        let invalid = |reason| EventError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid("empty pattern"));
        }
        let parts: Vec<&str> = pattern.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                "empty segment (two dots in a row, or a leading/trailing dot)",
            ));
        }
        if !parts.iter().any(|p| p.contains('*')) {
            return Ok(Pattern::Exact(pattern.into()));
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => return Err(invalid("`**` may only be the last segment")),
                p if p.contains('*') => return Err(invalid("`*` must be a whole segment")),
                p => Segment::Literal(p.to_owned()),
            });
        }
        Ok(Pattern::Wild(segments))
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(t) => &**t == topic,
            Pattern::Wild(segments) => {
                let mut parts = topic.split('.');
                for segment in segments {
                    match segment {
                        Segment::Rest => return parts.next().is_some(),
                        Segment::One => {
                            if parts.next().is_none() {
                                return false;
                            }
                        }
                        Segment::Literal(l) => {
                            if parts.next() != Some(l.as_str()) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }

    fn as_string(&self) -> String {
        match self {
            Pattern::Exact(t) => t.to_string(),
            Pattern::Wild(segments) => segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.as_str(),
                    Segment::One => "*",
                    Segment::Rest => "**",
                })
                .collect::<Vec<_>>()
                .join("."),
        }
    }
}

/// What a subscription's worker needs; it outlives the routing entry so that queued
/// events are still handled after unsubscribing.
struct SubCore {
    pattern: Pattern,
    owner: Option<Arc<str>>,
    handler: Arc<HandlerFn>,
}

struct Sub {
    id: u64,
    core: Arc<SubCore>,
    options: SubscribeOptions,
    fired: AtomicBool,
    dropped: Arc<AtomicU64>,
    queue: OnceLock<mpsc::Sender<Event>>,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

type Tap = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Default, Clone)]
struct Routes {
    exact: HashMap<Arc<str>, Vec<Arc<Sub>>>,
    wild: Vec<Arc<Sub>>,
    taps: Vec<Tap>,
}

impl Routes {
    fn tap(&self, event: &Event) {
        for tap in &self.taps {
            tap(event);
        }
    }

    /// The exact subscriptions of `topic`, and the topic as an `Arc<str>`: the key of
    /// its route when there is one (no allocation), else a new one. One lookup.
    fn exact_route(&self, topic: &str) -> (Arc<str>, &[Arc<Sub>]) {
        match self.exact.get_key_value(topic) {
            Some((key, subs)) => (key.clone(), subs),
            None => (topic.into(), &[]),
        }
    }

    /// The exact subscriptions of `topic`.
    fn exact_subs(&self, topic: &str) -> &[Arc<Sub>] {
        self.exact.get(topic).map_or(&[], Vec::as_slice)
    }

    /// `exact` (the topic's exact subscriptions), then the matching wildcard ones.
    fn matching<'a>(
        &'a self,
        exact: &'a [Arc<Sub>],
        topic: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Sub>> + 'a {
        let exact = exact.iter();
        let wild = self
            .wild
            .iter()
            .filter(move |s| s.core.pattern.matches(topic));
        exact.chain(wild)
    }

    fn remove(&mut self, keep: impl Fn(&Sub) -> bool) -> Vec<Arc<Sub>> {
        let mut removed = Vec::new();
        for subs in self.exact.values_mut() {
            subs.retain(|s| {
                keep(s) || {
                    removed.push(s.clone());
                    false
                }
            });
        }
        self.exact.retain(|_, subs| !subs.is_empty());
        self.wild.retain(|s| {
            keep(s) || {
                removed.push(s.clone());
                false
            }
        });
        removed
    }
}

struct BusInner {
    routes: RwLock<Arc<Routes>>,
    next_id: AtomicU64,
}

impl BusInner {
    fn snapshot(&self) -> Arc<Routes> {
        match self.routes.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update<R>(&self, change: impl FnOnce(&mut Routes) -> R) -> R {
        let mut guard = match self.routes.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut routes = (**guard).clone();
        let result = change(&mut routes);
        *guard = Arc::new(routes);
        result
    }

    fn unsubscribe(&self, id: u64) -> Vec<Arc<Sub>> {
        self.update(|routes| routes.remove(|s| s.id != id))
    }
}

/// The event bus. Cheap to clone; clones share subscriptions.
///
/// The bus a plugin gets from its context is *scoped*: events it emits carry the plugin
/// as their [`source`](Event::source), and the host removes every subscription made
/// through it when the plugin stops.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
    owner: Option<Arc<str>>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.inner.snapshot();
        f.debug_struct("EventBus")
            .field("owner", &self.owner)
            .field("topics", &routes.exact.len())
            .field("wildcard_subscriptions", &routes.wild.len())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// A subscription. Dropping it or calling [`cancel`](Subscription::cancel)
/// unsubscribes; [`detach`](Subscription::detach) keeps it until its plugin stops.
#[must_use = "dropping a Subscription unsubscribes at once; keep it, or call .detach()"]
pub struct Subscription {
    bus: Weak<BusInner>,
    id: u64,
    pattern: String,
    dropped: Arc<AtomicU64>,
    detached: bool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .finish()
    }
}

impl Subscription {
    /// Unsubscribes now. Events already queued for it are still handled.
    pub fn cancel(self) {}

    /// Keeps the subscription alive without holding this value: it ends when the plugin
    /// that made it stops (or never, for a bus that is not a plugin's).
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Events dropped for this subscription because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the subscription is still registered on its bus.
    pub fn is_active(&self) -> bool {
        self.bus.upgrade().is_some_and(|bus| {
            let routes = bus.snapshot();
            routes
                .exact
                .values()
                .flatten()
                .chain(routes.wild.iter())
                .any(|s| s.id == self.id)
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            if let Some(bus) = self.bus.upgrade() {
                bus.unsubscribe(self.id);
            }
        }
    }
}

/// A handler failure reported by [`EventBus::emit_and_wait`].
#[derive(Debug)]
pub struct HandlerFailure {
    /// The plugin that owns the failing subscription, if any.
    pub owner: Option<String>,
    /// The subscription's pattern.
    pub pattern: String,
    /// The error or panic message.
    pub message: String,
}

/// The result of [`EventBus::emit_and_wait`].
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// How many handlers ran.
    pub handled: usize,
    /// The handlers that failed.
    pub failures: Vec<HandlerFailure>,
}

/// Describes one subscription, for introspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The pattern.
    pub pattern: String,
    /// The plugin that made it, if any.
    pub owner: Option<String>,
}

impl EventBus {
    /// A new bus with no subscription.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(BusInner {
                routes: RwLock::new(Arc::new(Routes::default())),
                next_id: AtomicU64::new(1),
            }),
            owner: None,
        }
    }

    /// The same bus, acting for `owner` (a plugin name).
    pub fn scoped(&self, owner: &str) -> Self {
        Self {
            inner: self.inner.clone(),
            owner: Some(owner.into()),
        }
    }

    /// Subscribes `handler` to `pattern` with default options.
    pub fn on<F, Fut>(&self, pattern: &str, handler: F) -> Result<Subscription, EventError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        self.on_with(pattern, SubscribeOptions::default(), handler)
    }

    /// Subscribes `handler` for one event only.
    pub fn once<F, Fut>(&self, pattern: &str, handler: F) -> Result<Subscription, EventError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let options = SubscribeOptions {
            once: true,
            ..SubscribeOptions::default()
        };
        self.on_with(pattern, options, handler)
    }

    /// Subscribes `handler` to `pattern` with these options.
    pub fn on_with<F, Fut>(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        handler: F,
    ) -> Result<Subscription, EventError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let parsed = Pattern::parse(pattern)?;
        let handler: Arc<HandlerFn> =
            Arc::new(move |event| handler(event).map(HandlerOutput::into_result).boxed());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let sub = Arc::new(Sub {
            id,
            core: Arc::new(SubCore {
                pattern: parsed,
                owner: self.owner.clone(),
                handler,
            }),
            options: SubscribeOptions {
                capacity: options.capacity.max(1),
                ..options
            },
            fired: AtomicBool::new(false),
            dropped: dropped.clone(),
            queue: OnceLock::new(),
            worker: std::sync::Mutex::new(None),
        });
        self.inner.update(|routes| match &sub.core.pattern {
            Pattern::Exact(topic) => routes
                .exact
                .entry(topic.clone())
                .or_default()
                .push(sub.clone()),
            Pattern::Wild(_) => routes.wild.push(sub.clone()),
        });
        Ok(Subscription {
            bus: Arc::downgrade(&self.inner),
            id,
            pattern: pattern.to_owned(),
            dropped,
            detached: false,
        })
    }

    /// Unsubscribes (the same as dropping the subscription).
    pub fn off(&self, subscription: Subscription) {
        subscription.cancel();
    }

    /// Emits an event without waiting for handlers (see the module docs for ordering
    /// and back-pressure). Returns how many subscriptions it was queued for.
    pub async fn emit<T: Payload>(&self, topic: &str, payload: T) -> usize {
        let routes = self.inner.snapshot();
        let (topic, exact) = routes.exact_route(topic);
        let event = self.event(topic, payload);
        self.queue_event(&routes, exact, event).await
    }

    /// Emits an already built event (its source is kept).
    pub async fn emit_event(&self, event: Event) -> usize {
        let routes = self.inner.snapshot();
        let exact = routes.exact_subs(&event.topic);
        self.queue_event(&routes, exact, event).await
    }

    async fn queue_event(&self, routes: &Routes, exact: &[Arc<Sub>], event: Event) -> usize {
        routes.tap(&event);
        let mut queued = 0;
        for sub in routes.matching(exact, &event.topic) {
            if sub.options.once && sub.fired.swap(true, Ordering::AcqRel) {
                continue;
            }
            let sender = self.queue_of(sub);
            let delivered = match sub.options.overflow {
                Overflow::Wait => sender.send(event.clone()).await.is_ok(),
                Overflow::DropNewest => self.try_queue(sub, &sender, &event),
            };
            queued += usize::from(delivered);
            if sub.options.once {
                self.inner.unsubscribe(sub.id);
            }
        }
        queued
    }

    /// Emits without ever waiting: a full queue is a counted, logged drop for that
    /// subscription. Needs a tokio runtime for the handlers to run.
    pub fn try_emit<T: Payload>(&self, topic: &str, payload: T) -> usize {
        let routes = self.inner.snapshot();
        let (topic, exact) = routes.exact_route(topic);
        let event = self.event(topic, payload);
        routes.tap(&event);
        let mut queued = 0;
        for sub in routes.matching(exact, &event.topic) {
            if sub.options.once && sub.fired.swap(true, Ordering::AcqRel) {
                continue;
            }
            let sender = self.queue_of(sub);
            queued += usize::from(self.try_queue(sub, &sender, &event));
            if sub.options.once {
                self.inner.unsubscribe(sub.id);
            }
        }
        queued
    }

    /// Calls every matching handler in this task, one after the other, and returns when
    /// all are done. Failures are also logged and published as `error.occurred`.
    pub async fn emit_and_wait<T: Payload>(&self, topic: &str, payload: T) -> DeliveryReport {
        let routes = self.inner.snapshot();
        let (topic, exact) = routes.exact_route(topic);
        let event = self.event(topic, payload);
        routes.tap(&event);
        let mut report = DeliveryReport::default();
        for sub in routes.matching(exact, &event.topic) {
            if sub.options.once {
                if sub.fired.swap(true, Ordering::AcqRel) {
                    continue;
                }
                self.inner.unsubscribe(sub.id);
            }
            report.handled += 1;
            if let Err(message) = run_handler(&sub.core, event.clone()).await {
                report_failure(Some(&self.inner), &sub.core, &event.topic, &message);
                report.failures.push(HandlerFailure {
                    owner: sub.core.owner.as_deref().map(str::to_owned),
                    pattern: sub.core.pattern.as_string(),
                    message,
                });
            }
        }
        report
    }

    /// Publishes a typed event on its topic (fire and forget).
    pub async fn publish<E: TypedEvent>(&self, event: E) -> usize {
        self.emit(E::TOPIC, event).await
    }

    /// Subscribes to a typed event; payloads from other processes are decoded from JSON.
    pub fn subscribe<E, F, Fut>(&self, handler: F) -> Result<Subscription, EventError>
    where
        E: TypedEvent,
        F: Fn(Arc<E>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let handler = Arc::new(handler);
        self.on(E::TOPIC, move |event: Event| {
            let handler = handler.clone();
            async move {
                let typed = event.decode::<E>()?;
                handler(typed).await.into_result()
            }
        })
    }

    /// Calls `tap` synchronously with every event emitted on this bus from now on,
    /// before any handler runs (for recording in tests and for bridges). Taps cannot be
    /// removed; they live as long as the bus.
    pub fn tap(&self, tap: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.update(|routes| routes.taps.push(Arc::new(tap)));
    }

    /// Every current subscription (pattern and owner).
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let routes = self.inner.snapshot();
        let mut subs: Vec<&Arc<Sub>> = routes
            .exact
            .values()
            .flatten()
            .chain(routes.wild.iter())
            .collect();
        subs.sort_by_key(|s| s.id);
        subs.iter()
            .map(|s| SubscriptionInfo {
                pattern: s.core.pattern.as_string(),
                owner: s.core.owner.as_deref().map(str::to_owned),
            })
            .collect()
    }

    /// Removes every subscription made for `owner`; returns the workers still draining
    /// their queues (the host waits for them, bounded by the plugin's hook timeout).
    pub fn remove_owner(&self, owner: &str) -> Vec<JoinHandle<()>> {
        let removed = self
            .inner
            .update(|routes| routes.remove(|s| s.core.owner.as_deref() != Some(owner)));
        drain_handles(removed)
    }

    fn event<T: Payload>(&self, topic: Arc<str>, payload: T) -> Event {
        Event {
            topic,
            payload: Arc::new(payload),
            source: self.owner.clone(),
        }
    }

    fn try_queue(&self, sub: &Arc<Sub>, sender: &mpsc::Sender<Event>, event: &Event) -> bool {
        match sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = sub.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        topic = %event.topic,
                        pattern = %sub.core.pattern.as_string(),
                        plugin = sub.core.owner.as_deref().unwrap_or("-"),
                        dropped_total = n,
                        "event dropped: subscriber queue is full"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn queue_of(&self, sub: &Arc<Sub>) -> mpsc::Sender<Event> {
        sub.queue
            .get_or_init(|| {
                let (tx, mut rx) = mpsc::channel::<Event>(sub.options.capacity);
                let core = sub.core.clone();
                let bus = Arc::downgrade(&self.inner);
                let span = tracing::info_span!(
                    "subscription",
                    plugin = core.owner.as_deref().unwrap_or("-"),
                    pattern = %core.pattern.as_string()
                );
                // The worker ends once every sender is gone (the subscription was
                // removed) and the queue is empty.
                let worker = tokio::spawn(
                    async move {
                        while let Some(event) = rx.recv().await {
                            let topic = event.topic.clone();
                            if let Err(message) = run_handler(&core, event).await {
                                let bus = bus.upgrade();
                                report_failure(bus.as_ref(), &core, &topic, &message);
                            }
                        }
                    }
                    .instrument(span),
                );
                *sub.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker);
                tx
            })
            .clone()
    }
}

fn drain_handles(removed: Vec<Arc<Sub>>) -> Vec<JoinHandle<()>> {
    removed
        .into_iter()
        .filter_map(|sub| sub.worker.lock().unwrap_or_else(|p| p.into_inner()).take())
        .collect()
}

/// Runs one handler call, isolating errors and panics; the error or panic message.
async fn run_handler(sub: &SubCore, event: Event) -> Result<(), String> {
    let outcome = AssertUnwindSafe((sub.handler)(event)).catch_unwind().await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic))),
    }
}

/// Logs a handler failure and publishes it as `error.occurred` (unless it is the
/// failure of an `error.occurred` handler, or the bus is gone).
fn report_failure(bus: Option<&Arc<BusInner>>, sub: &SubCore, topic: &str, message: &str) {
    let plugin = sub.owner.as_deref().map(str::to_owned);
    tracing::error!(
        topic = %topic,
        pattern = %sub.pattern.as_string(),
        plugin = plugin.as_deref().unwrap_or("-"),
        error = %message,
        "event handler failed"
    );
    if topic != ERROR_TOPIC {
        let Some(inner) = bus else {
            return;
        };
        let report = EventBus {
            inner: inner.clone(),
            owner: None,
        };
        report.try_emit(
            ERROR_TOPIC,
            ErrorOccurred {
                source: "event-handler".into(),
                plugin,
                topic: Some(topic.to_owned()),
                message: message.to_owned(),
            },
        );
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |s: &str| Pattern::parse(s).expect("valid pattern");
        assert!(p("user.created").matches("user.created"));
        assert!(!p("user.created").matches("user.deleted"));
        assert!(p("order.*").matches("order.paid"));
        assert!(!p("order.*").matches("order.paid.late"));
        assert!(!p("order.*").matches("order"));
        assert!(p("order.**").matches("order.paid.late"));
        assert!(!p("order.**").matches("order"));
        assert!(p("**").matches("anything.at.all"));
        assert!(p("*.created").matches("user.created"));
        assert!(Pattern::parse("a..b").is_err());
        assert!(Pattern::parse("a.**.b").is_err());
        assert!(Pattern::parse("a.b*").is_err());
        assert!(Pattern::parse("").is_err());
    }
}
