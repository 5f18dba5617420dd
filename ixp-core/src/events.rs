//! The event bus: string topics with wildcards, typed payloads, async handlers.
//!
//! # Topics and patterns
//!
//! Topics are dot-separated (`user.created`). A subscription pattern is a topic, or has
//! `*` for exactly one segment (`order.*` matches `order.paid`, not `order.paid.late`),
//! or ends in `**` for one or more segments (`order.**`); `**` alone matches every topic.
//!
//! The name of a topic with an exact subscription, or with a [`Publisher`], is interned:
//! kept once for the life of the process (up to 256 KiB of distinct names in all; later
//! ones are reference-counted instead), so that its events carry a `&'static str` that
//! threads publishing at once do not contend over. Topics are meant to be a fixed
//! vocabulary; a program that subscribes to ever new topic names (one per user, say)
//! fills that allowance once.
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
//!   (back-pressure, nothing lost), and the subscriptions after that one get the event
//!   once it has room (an `emit` dropped while it waits, under a timeout say, delivers
//!   the event neither to that subscription nor to those after it);
//!   [`Overflow::DropNewest`] drops the new event for that
//!   subscription, counts it ([`Subscription::dropped`]) and logs a warning. Nothing is
//!   ever dropped silently.
//! * After unsubscribing (dropping the [`Subscription`], [`EventBus::off`], or the host
//!   stopping the plugin) no `emit` that starts reaches the subscription; the events
//!   already in its queue are still handled, then its worker ends. A publisher waiting
//!   for room in that queue is let go (at the latest when the running handler returns):
//!   its `emit` returns without counting the removed subscription.
//! * [`EventBus::emit_and_wait`] calls every matching handler in the caller's task, one
//!   after the other in subscription order, and returns when all are done, with the
//!   failures.
//! * [`EventBus::try_emit`] never waits: a full queue counts as a drop for that
//!   subscription (logged), whatever its policy.
//! * A [`Publisher`] ([`EventBus::publisher`]) emits on one topic as the bus does, with
//!   the same delivery, but keeps the subscriptions its topic reaches between events:
//!   for a program that sends many events to one topic (see its docs for what it holds).
//! * A subscription with [`Delivery::Inline`] has no queue: `emit` and `try_emit` call
//!   its (synchronous) handler in the publisher's task before they return. It is for
//!   handlers that only hand the event on, such as into a buffer of their own, where a
//!   queue and a worker would cost more than the handler. Calls from several publishers
//!   may run at the same time.
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

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::plugin::BoxError;

/// Calls the handlers of the subscriptions `$subs` (an iterator of the routes that match
/// `$topic`, in delivery order) one after the other in this task, after showing the
/// event to `$taps`; the [`DeliveryReport`]. The last handler gets the event itself, the
/// others a clone. The event (named [`Name::of`] `$key` and `$topic`, carrying
/// `$payload`, from `$bus`) is built here, in its `Option` at once: built by the caller
/// and moved in, it was read back in wider loads than it was written with (a
/// store-forwarding stall, ~15% of the one-handler path).
///
/// A macro, expanded in the `async fn`s of [`EventBus::emit_and_wait`] and
/// [`Publisher::emit_and_wait`], not an `async fn` they await: its arguments would be
/// copied into the inner future's state, ~50 instructions more per event (cachegrind,
/// docs/performance.md).
macro_rules! call_each {
    ($bus:expr, $taps:expr, $subs:expr, $topic:expr, $key:expr, $payload:expr) => {{
        let (bus, topic): (&$crate::events::EventBus, &str) = ($bus, $topic);
        let mut event = Some(bus.event($crate::events::Name::of($key, topic), $payload));
        if let Some(event) = &event {
            $crate::events::show_taps($taps, event);
        }
        // The report is assembled at the end (its fields as locals meanwhile).
        let mut handled = 0;
        let mut failures = Vec::new();
        let mut subs = $subs.peekable();
        while let Some(route) = subs.next() {
            if !bus.fire(route) {
                continue;
            }
            let this = match subs.peek() {
                Some(_) => event.clone(),
                None => event.take(),
            };
            let Some(this) = this else {
                break;
            };
            handled += 1;
            // `run_handler`'s dispatch, written out so that a synchronous handler runs
            // without a future at all (through `run_handler`, its future held the event
            // and was moved into this one's state on every call).
            let outcome = match &route.handler {
                $crate::events::Handler::Ready(handler) => {
                    $crate::events::run_ready(&**handler, this)
                }
                $crate::events::Handler::Async(handler) => {
                    $crate::events::run_async(&**handler, this).await
                }
            };
            if let Err(message) = outcome {
                let sub = &route.sub;
                $crate::events::report_failure(Some(&bus.inner), &sub.core, topic, &message);
                failures.push($crate::events::HandlerFailure {
                    owner: sub.core.owner.as_deref().map(str::to_owned),
                    pattern: sub.core.pattern.as_string(),
                    message,
                });
            }
        }
        $crate::events::DeliveryReport { handled, failures }
    }};
}

mod exact;
mod publisher;

use exact::ExactRoutes;
pub use publisher::Publisher;

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
    /// An inline subscription's handler is not synchronous.
    #[error("subscription to `{pattern}`: an inline handler must return `std::future::ready(..)` (it runs inside `emit`, which cannot wait for it)")]
    InlineHandlerNotReady {
        /// The subscription's pattern.
        pattern: String,
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
///
/// One allocation holds all three, and the event is a pointer to it: two words, so
/// that handing it to a handler moves it in registers, and a clone for a second handler
/// is one reference count. (As a topic, a payload `Arc` and a source side by side, the
/// event was 64 bytes, copied at every step of a delivery and read back in wider loads
/// than it had been written with: store-forwarding stalls, in `perf annotate` of a
/// one-handler `Publisher::emit_and_wait` 19.6% of the publishing closure's samples and
/// 12.6% of the handler's; docs/performance.md.)
#[derive(Clone)]
pub struct Event {
    body: Arc<dyn Body>,
}

/// What an event's allocation holds.
struct Envelope<P: ?Sized> {
    topic: Name,
    source: Option<Name>,
    payload: P,
}

/// An [`Envelope`] of any payload type, as [`Event`] holds it. `Any`, so that
/// [`Event::decode`] can take the envelope back as its own type (sharing it).
trait Body: Any + Send + Sync {
    fn topic(&self) -> &Name;
    fn source(&self) -> Option<&Name>;
    fn payload(&self) -> &dyn Payload;
}

impl<T: Payload> Body for Envelope<T> {
    #[inline]
    fn topic(&self) -> &Name {
        &self.topic
    }

    #[inline]
    fn source(&self) -> Option<&Name> {
        self.source.as_ref()
    }

    #[inline]
    fn payload(&self) -> &dyn Payload {
        &self.payload
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("topic", self.body.topic())
            .field("payload_type", &self.body.payload().type_name())
            .field("source", &self.body.source())
            .finish()
    }
}

impl Event {
    /// An event on `topic` carrying `payload`.
    pub fn new<T: Payload>(topic: impl Into<Arc<str>>, payload: T) -> Self {
        Self::with_names(Name::Shared(topic.into()), None, payload)
    }

    /// The event in one allocation.
    #[inline]
    fn with_names<T: Payload>(topic: Name, source: Option<Name>, payload: T) -> Self {
        Self {
            body: Arc::new(Envelope {
                topic,
                source,
                payload,
            }),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.body.topic().as_str()
    }

    /// The topic's [`Name`].
    #[inline]
    fn name(&self) -> &Name {
        self.body.topic()
    }

    /// The name of the plugin that emitted the event, if a plugin did.
    pub fn source(&self) -> Option<&str> {
        self.body.source().map(Name::as_str)
    }

    /// The payload, if it is a `T`.
    pub fn payload<T: 'static>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.body;
        any.downcast_ref::<Envelope<T>>()
            .map(|envelope| &envelope.payload)
    }

    /// The payload as a `T`: the event's own payload if it is one (shared, not
    /// copied), else decoded from its JSON form (events that came from another process
    /// carry JSON).
    ///
    /// ```
    /// use ixp_core::events::Event;
    ///
    /// let event = Event::new("order.created", 42u32);
    /// let id = event.decode::<u32>()?;
    /// assert_eq!(*id, 42);
    /// assert_eq!(id.topic(), "order.created");
    /// // From the JSON form, as a bridge's events arrive:
    /// let remote = Event::new("order.created", serde_json::json!(42));
    /// assert_eq!(*remote.decode::<u64>()?, 42);
    /// # Ok::<(), ixp_core::events::EventError>(())
    /// ```
    pub fn decode<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<Typed<T>, EventError> {
        let any: Arc<dyn Any + Send + Sync> = self.body.clone();
        match any.downcast::<Envelope<T>>() {
            Ok(envelope) => Ok(Typed { envelope }),
            Err(_) => {
                let payload = self.body.payload();
                let fail = |reason: String| EventError::PayloadType {
                    topic: self.topic().to_owned(),
                    expected: std::any::type_name::<T>(),
                    actual: payload.type_name(),
                    reason,
                };
                let json = payload.to_json().map_err(|e| fail(e.to_string()))?;
                let value: T = serde_json::from_value(json).map_err(|e| fail(e.to_string()))?;
                Ok(Typed {
                    envelope: Arc::new(Envelope {
                        topic: self.name().clone(),
                        source: self.body.source().cloned(),
                        payload: value,
                    }),
                })
            }
        }
    }

    /// The payload as JSON.
    pub fn to_json(&self) -> Result<Value, EventError> {
        self.body
            .payload()
            .to_json()
            .map_err(|source| EventError::Serialize {
                topic: self.topic().to_owned(),
                source,
            })
    }
}

/// An event's payload as a `T` ([`Event::decode`], the handlers of
/// [`EventBus::subscribe`]): dereferences to the `T`, and still knows the event's topic
/// and source. Cheap to clone. When the payload was a `T` already, it shares the event's
/// allocation (holding it keeps the event alive); decoded from JSON, it is a copy of its
/// own. Comparisons, hashing and `Display` are the `T`'s.
///
/// ```
/// use ixp_core::events::{Event, Typed};
///
/// let event = Event::new("user.created", "ada".to_string());
/// let name: Typed<String> = event.decode()?;
/// assert_eq!(name.len(), 3);
/// assert_eq!(&*name, "ada");
/// assert_eq!(name.topic(), "user.created");
/// # Ok::<(), ixp_core::events::EventError>(())
/// ```
pub struct Typed<T> {
    envelope: Arc<Envelope<T>>,
}

impl<T> Typed<T> {
    /// The event's topic.
    pub fn topic(&self) -> &str {
        self.envelope.topic.as_str()
    }

    /// The name of the plugin that emitted the event, if a plugin did.
    pub fn source(&self) -> Option<&str> {
        self.envelope.source.as_ref().map(Name::as_str)
    }
}

impl<T: Clone> Typed<T> {
    /// The `T` itself: moved out when nothing else holds the event, else a clone.
    ///
    /// ```
    /// use ixp_core::events::Event;
    ///
    /// let event = Event::new("user.created", "ada".to_string());
    /// let name = event.decode::<String>()?;
    /// drop(event);
    /// assert_eq!(name.into_inner(), "ada");
    /// # Ok::<(), ixp_core::events::EventError>(())
    /// ```
    pub fn into_inner(self) -> T {
        match Arc::try_unwrap(self.envelope) {
            Ok(envelope) => envelope.payload,
            Err(shared) => shared.payload.clone(),
        }
    }
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Self {
            envelope: self.envelope.clone(),
        }
    }
}

impl<T> std::ops::Deref for Typed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.envelope.payload
    }
}

impl<T> AsRef<T> for Typed<T> {
    fn as_ref(&self) -> &T {
        &self.envelope.payload
    }
}

impl<T: fmt::Debug> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.envelope.payload, f)
    }
}

impl<T: fmt::Display> fmt::Display for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.envelope.payload, f)
    }
}

impl<T> std::borrow::Borrow<T> for Typed<T> {
    fn borrow(&self) -> &T {
        &self.envelope.payload
    }
}

impl<T: PartialEq> PartialEq for Typed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.envelope.payload == other.envelope.payload
    }
}

impl<T: Eq> Eq for Typed<T> {}

impl<T: PartialOrd> PartialOrd for Typed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.envelope.payload.partial_cmp(&other.envelope.payload)
    }
}

impl<T: Ord> Ord for Typed<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.envelope.payload.cmp(&other.envelope.payload)
    }
}

impl<T: std::hash::Hash> std::hash::Hash for Typed<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.envelope.payload.hash(state);
    }
}

/// An event's topic (or source): a `&'static str` when its publisher named it with one
/// (typed events, [`EventBus::publish`]; [`EventBus::scoped_static`]) or when the topic
/// has an exact route (its key, the interned name: [`intern`]), else an `Arc<str>`. A
/// static name costs no reference count: threads that publish on one topic at once do
/// not fight over the count's cache line (`events/emit_on_2_threads` bench).
#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// The name for the events on `topic`: the key of the topic's exact route when it
    /// has one (no allocation; an interned `&'static str` as a rule), else a new
    /// `Arc<str>`.
    /// `topic` as its interned `&'static str` ([`intern`]), or the `Arc` itself past
    /// the interning allowance.
    fn interned(topic: &Arc<str>) -> Self {
        intern(topic).map_or_else(|| Name::Shared(topic.clone()), Name::Static)
    }

    #[inline]
    fn of(key: Option<&Name>, topic: &str) -> Self {
        match key {
            Some(key) => key.clone(),
            None => Name::Shared(topic.into()),
        }
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How many bytes of topic names [`intern`] keeps at most, process-wide.
const INTERNED_BYTES: usize = 256 * 1024;

/// The topic names interned so far.
static INTERNED: std::sync::LazyLock<Mutex<Interner>> =
    std::sync::LazyLock::new(|| Mutex::new(Interner::new(INTERNED_BYTES)));

/// The `&'static str` of `topic` (the same for every bus): the key of an exact route,
/// so that events on a subscribed topic carry it without a reference count shared by
/// every publishing thread. Each distinct name is kept for the life of the process, up
/// to [`INTERNED_BYTES`] in all; past that `None` (the route keeps an `Arc<str>`).
/// Called when a bus gets its first subscription to a topic, never per event.
fn intern(topic: &str) -> Option<&'static str> {
    INTERNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .intern(topic)
}

/// Names kept for the life of the process, up to a total length.
struct Interner {
    names: std::collections::HashSet<&'static str, foldhash::fast::RandomState>,
    bytes: usize,
    limit: usize,
}

impl Interner {
    fn new(limit: usize) -> Self {
        Self {
            names: Default::default(),
            bytes: 0,
            limit,
        }
    }

    /// The kept copy of `name`, kept now if there is room.
    fn intern(&mut self, name: &str) -> Option<&'static str> {
        if let Some(kept) = self.names.get(name) {
            return Some(kept);
        }
        if self.bytes + name.len() > self.limit {
            return None;
        }
        let kept: &'static str = Box::leak(name.into());
        self.names.insert(kept);
        self.bytes += kept.len();
        Some(kept)
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

/// How a subscription's handler gets its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Through the subscription's own queue and worker task: publishers never run the
    /// handler, and it sees one event at a time, in each publisher's order.
    #[default]
    Queued,
    /// Called by `emit` / `try_emit` in the publisher's task (and tracing span) before
    /// they return; no queue, so `capacity` and `overflow` do not apply. Only for a
    /// synchronous handler (returning `std::future::ready(..)`) that never blocks and
    /// does not publish itself; calls from several publishers may overlap. Failures and
    /// panics are reported as for a queued handler.
    ///
    /// ```
    /// use ixp_core::events::{Delivery, Event, EventBus, SubscribeOptions};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = EventBus::new();
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let buffer = seen.clone();
    /// let inline = SubscribeOptions { delivery: Delivery::Inline, ..Default::default() };
    /// let _sub = bus.on_with("order.*", inline, move |event: Event| {
    ///     buffer.lock().unwrap().push(event.topic().to_owned());
    ///     std::future::ready(())
    /// })?;
    /// bus.emit("order.paid", 42).await;
    /// // Already handled when `emit` returns.
    /// assert_eq!(*seen.lock().unwrap(), ["order.paid"]);
    /// # Ok(()) }
    /// ```
    Inline,
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
    /// Queued (the default) or called inline by the publisher.
    pub delivery: Delivery,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Wait,
            once: false,
            delivery: Delivery::Queued,
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

/// What a publish does when a subscription's queue is full.
#[derive(Clone, Copy)]
enum WhenFull {
    /// What the subscription asked for ([`Overflow`]).
    AsSubscribed,
    /// Drop the event for that subscription (counted and logged): `try_emit`.
    Drop,
}

/// A subscription's handler, type-erased. Shared (`Arc`) between the subscription and
/// its [`Route`]s.
#[derive(Clone)]
enum Handler {
    /// The handler returns `std::future::Ready` (a synchronous body): it is called
    /// without boxing a future.
    Ready(Arc<ReadyFn>),
    /// Any other future, boxed.
    Async(Arc<AsyncFn>),
}

/// A handler with a synchronous body, type-erased.
type ReadyFn = dyn Fn(Event) -> Result<(), BoxError> + Send + Sync;
/// A handler returning any other future, type-erased.
type AsyncFn = dyn Fn(Event) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync;

impl Handler {
    fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        if TypeId::of::<Fut>() == TypeId::of::<std::future::Ready<Fut::Output>>() {
            return Handler::Ready(Arc::new(move |event| {
                // A `Ready` future is done in its first poll: no waker is ever used.
                let future = std::pin::pin!(handler(event));
                match future.poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(output) => output.into_result(),
                    Poll::Pending => {
                        Err("internal error: a ready handler's future was pending".into())
                    }
                }
            }));
        }
        Handler::Async(Arc::new(move |event| {
            handler(event).map(HandlerOutput::into_result).boxed()
        }))
    }
}

/// What a subscription's worker needs; it outlives the routing entry so that queued
/// events are still handled after unsubscribing.
struct SubCore {
    pattern: Pattern,
    owner: Option<Arc<str>>,
    handler: Handler,
}

/// A subscription's worker, started on the first queued event, and how to tell it the
/// subscription was removed.
#[derive(Default)]
struct Worker {
    task: Option<JoinHandle<()>>,
    /// Fired (or dropped) when the subscription is removed: the worker closes the
    /// queue to new events and ends once it has handled the queued ones.
    closing: Option<oneshot::Sender<()>>,
}

struct Sub {
    id: u64,
    core: Arc<SubCore>,
    options: SubscribeOptions,
    fired: AtomicBool,
    dropped: AtomicU64,
    /// The subscription was removed: no new events (a queued one's worker drains and
    /// ends). Set under the worker's lock, so that no worker starts after it; read
    /// without it by publishers.
    closed: AtomicBool,
    /// The queue's sending half, set once with the worker. Publishers send through a
    /// reference to it: no lock and no count shared between publishing threads (beyond
    /// the channel's own).
    sender: OnceLock<mpsc::Sender<Event>>,
    worker: Mutex<Worker>,
}

impl Sub {
    fn lock_worker(&self) -> std::sync::MutexGuard<'_, Worker> {
        self.worker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the queue (its worker ends once the queued events are handled); the
    /// worker, to wait for.
    fn close(&self) -> Option<JoinHandle<()>> {
        let mut worker = self.lock_worker();
        self.closed.store(true, Ordering::Release);
        if let Some(closing) = worker.closing.take() {
            // An error means the worker has ended already.
            let _ = closing.send(());
        }
        worker.task.take()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A subscription as the routing table holds it: next to the subscription, a copy of
/// what delivering an event reads first (the handler, `once`, the delivery), so that
/// the inline path to an exact topic goes from the table's slot straight to the handler
/// (a wildcard route still reads its subscription's pattern to match). On a bus with
/// many topics each step of that chain is a likely cache miss (`events/routing` bench).
#[derive(Clone)]
struct Route {
    handler: Handler,
    once: bool,
    delivery: Delivery,
    sub: Arc<Sub>,
}

impl Route {
    fn new(sub: Arc<Sub>) -> Self {
        Self {
            handler: sub.core.handler.clone(),
            once: sub.options.once,
            delivery: sub.options.delivery,
            sub,
        }
    }
}

/// A [`EventBus::hand_over`] as a future: done when it returns, as a rule.
enum HandOver<'a> {
    /// Every subscription got the event or was skipped; how many got it.
    Done(usize),
    /// A full queue of a subscription that waits for room: the rest, to await.
    Waiting(BoxFuture<'a, usize>),
}

impl Future for HandOver<'_> {
    type Output = usize;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        match self.get_mut() {
            HandOver::Done(handed) => Poll::Ready(*handed),
            HandOver::Waiting(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// Where a hand-over stopped for room in a queue: what it had handed, the subscription
/// whose queue is full and its event, the subscriptions after it and their event.
struct Blocked {
    handed: usize,
    route: Route,
    this: Event,
    others: Vec<Route>,
    event: Option<Event>,
}

/// The routes of one topic or one first segment: most have one subscription, held in
/// place (one pointer less to follow than a `Vec`).
type RouteList = SmallVec<[Route; 1]>;

type Tap = Arc<dyn Fn(&Event) + Send + Sync>;

/// Shows `event` to every tap.
#[inline]
fn show_taps(taps: &[Tap], event: &Event) {
    for tap in taps {
        tap(event);
    }
}
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The routing table: exact topics by hash, wildcard patterns by their first segment.
/// Every list is in subscription order (ascending id).
#[derive(Default, Clone)]
struct Routes {
    /// By the topic, named by its interned name where it could be interned ([`intern`]).
    exact: ExactRoutes,
    /// Wildcard patterns whose first segment is a literal, by that literal.
    wild_by_first: FastMap<Box<str>, RouteList>,
    /// Wildcard patterns that start with `*` or `**`.
    wild_any: RouteList,
    taps: Vec<Tap>,
}

impl Routes {
    /// The exact subscriptions of `topic`, and the key of its route if it has one (the
    /// name its events carry: [`Name::of`]). One lookup.
    /// (`#[inline(always)]` here measured slower: 67 -> 71 ns for one handler.)
    #[inline]
    fn exact_route(&self, topic: &str) -> (Option<&Name>, &[Route]) {
        match self.exact.get(topic) {
            Some((key, routes)) => (Some(key), routes),
            None => (None, &[]),
        }
    }

    /// The exact subscriptions of `topic`.
    fn exact_subs(&self, topic: &str) -> &[Route] {
        self.exact_route(topic).1
    }

    /// `exact` (the topic's exact subscriptions), then the matching wildcard ones in
    /// subscription order. Only the wildcard patterns that share the topic's first
    /// segment (or start with a wildcard) are tried.
    ///
    /// Always inlined: returned from a call, the iterator went through memory and was
    /// read back in wider loads than it was written with (a store-forwarding stall:
    /// ~20% of the one-handler `emit_and_wait` in `perf annotate`).
    #[inline(always)]
    fn matching<'a>(&'a self, exact: &'a [Route], topic: &'a str) -> Matching<'a> {
        let by_first = if self.wild_by_first.is_empty() {
            &[][..]
        } else {
            let first = topic.find('.').map_or(topic, |dot| &topic[..dot]);
            self.wild_by_first
                .get(first)
                .map_or(&[][..], SmallVec::as_slice)
        };
        Matching {
            exact: exact.iter(),
            by_first,
            any: &self.wild_any,
            topic,
        }
    }

    fn has_subscribers(&self, topic: &str) -> bool {
        !self.taps.is_empty()
            || !self.exact_subs(topic).is_empty()
            || self.matching(&[], topic).next().is_some()
    }

    fn subscriptions(&self) -> impl Iterator<Item = &Arc<Sub>> {
        self.exact
            .routes()
            .chain(self.wild_by_first.values())
            .flatten()
            .chain(self.wild_any.iter())
            .map(|route| &route.sub)
    }

    /// Adds `sub`'s route at the end of its topic's (or first segment's) list. A topic
    /// new to these routes is keyed by its interned name: the global lock is taken when
    /// the routes change (for the table and each copy brought up to date), never per
    /// event.
    fn insert(&mut self, sub: Arc<Sub>) {
        let route = Route::new(sub);
        match &route.sub.core.pattern {
            Pattern::Exact(topic) => {
                let topic = Arc::clone(topic);
                self.exact.push(&topic, route, || Name::interned(&topic));
            }
            Pattern::Wild(segments) => match segments.first() {
                Some(Segment::Literal(first)) => self
                    .wild_by_first
                    .entry(first.as_str().into())
                    .or_default()
                    .push(route),
                _ => self.wild_any.push(route),
            },
        }
    }

    /// Removes `sub`'s route, and its topic's (or first segment's) entry once empty.
    /// Looks the entry up without making one (nor interning its name again): it may be
    /// gone already (a fired `once`, then its `Subscription` dropped).
    fn remove(&mut self, sub: &Sub) {
        fn without(list: &mut RouteList, sub: &Sub) -> bool {
            list.retain(|route| route.sub.id != sub.id);
            list.is_empty()
        }
        match &sub.core.pattern {
            Pattern::Exact(topic) => self.exact.retain(topic, |route| route.sub.id != sub.id),
            Pattern::Wild(segments) => match segments.first() {
                Some(Segment::Literal(first)) => {
                    let first = first.as_str();
                    if self
                        .wild_by_first
                        .get_mut(first)
                        .is_some_and(|l| without(l, sub))
                    {
                        self.wild_by_first.remove(first);
                    }
                }
                _ => {
                    without(&mut self.wild_any, sub);
                }
            },
        }
    }
}

/// The subscriptions an event on `topic` reaches, in delivery order: its exact
/// subscriptions, then the wildcard ones that match it in subscription order (the two
/// wildcard lists, each in ascending id order, merged). A plain struct rather than
/// iterator adapters with closures, so that the futures holding it stay `Send`.
struct Matching<'a> {
    exact: std::slice::Iter<'a, Route>,
    /// Wildcard patterns whose first segment is the topic's.
    by_first: &'a [Route],
    /// Wildcard patterns that start with a wildcard.
    any: &'a [Route],
    topic: &'a str,
}

impl<'a> Iterator for Matching<'a> {
    type Item = &'a Route;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(sub) = self.exact.next() {
            return Some(sub);
        }
        loop {
            // Most buses have wildcard patterns of one kind only: then this is a plain walk.
            let next = match (self.by_first.split_first(), self.any.split_first()) {
                (Some((x, rest)), Some((y, _))) if x.sub.id < y.sub.id => {
                    self.by_first = rest;
                    x
                }
                (_, Some((y, rest))) => {
                    self.any = rest;
                    y
                }
                (Some((x, rest)), None) => {
                    self.by_first = rest;
                    x
                }
                (None, None) => return None,
            };
            if next.sub.core.pattern.matches(self.topic) {
                return Some(next);
            }
        }
    }
}

/// A change to the table's routes, logged for the next rebuild to apply to the copies
/// ([`Table`]).
enum Change {
    Insert(Arc<Sub>),
    /// Holds the subscription, so that applying the removal to a copy does not drop
    /// its handler there (under the table's lock): it goes with the change.
    Remove(Arc<Sub>),
    Tap(Tap),
}

impl Routes {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Insert(sub) => self.insert(sub.clone()),
            Change::Remove(sub) => self.remove(sub),
            Change::Tap(tap) => self.taps.push(tap.clone()),
        }
    }
}

/// Changes kept for a rebuild before it copies the whole table instead: beyond this
/// many, applying them would cost about what the copy does at a few thousand routes.
const MAX_CHANGES: usize = 4096;

/// The table subscriptions change, with the subscriptions of each owner.
///
/// Publishers read an immutable copy of `routes` ([`BusInner::routes`]). A rebuild does
/// not copy the whole table when it can help it: it keeps the copy it replaced (the
/// `spare`, once no publisher holds it) and brings that one up to date with the
/// `changes` made since (left-right), so that removing one plugin's subscriptions costs
/// what it removes, not the table's size.
#[derive(Default)]
struct Table {
    routes: Routes,
    by_owner: FastMap<Arc<str>, Vec<Arc<Sub>>>,
    /// The changes since the current copy was built, in order: all of them, unless
    /// `changes_dropped`.
    changes: Vec<Change>,
    /// More than [`MAX_CHANGES`] changes came since the current copy was built: the
    /// later ones were not logged, and the next rebuild copies the table. (The log is
    /// kept as it is rather than dropped: its entries may hold the last handle on a
    /// handler, which must not be dropped under the table's lock.)
    changes_dropped: bool,
    /// The copy before the current one, brought up to date with it: the next rebuild
    /// applies `changes` to it instead of copying the table.
    spare: Option<Arc<Routes>>,
}

/// What a rebuild let go of, dropped by its caller once the table's lock is released:
/// the removed handlers may hold a [`Subscription`] of the same bus, whose drop locks
/// the table.
#[derive(Default)]
#[must_use]
struct Released {
    /// The spare copy, when the log could not bring it up to date (it overflowed).
    _spare: Option<Arc<Routes>>,
    /// The copy replaced, when it could not become the spare.
    _routes: Option<Arc<Routes>>,
    /// The changes applied, holding the removed subscriptions.
    _changes: Vec<Change>,
}

impl Table {
    /// Changes `routes`, and logs the change for the copies. (A change not logged is
    /// dropped here, under the lock: the caller holds what it refers to.)
    fn change(&mut self, change: Change) {
        self.routes.apply(&change);
        if self.changes_dropped || self.changes.len() >= MAX_CHANGES {
            self.changes_dropped = true;
        } else {
            self.changes.push(change);
        }
    }

    fn remove(&mut self, sub: &Arc<Sub>) {
        self.change(Change::Remove(sub.clone()));
        if let Some(owner) = &sub.core.owner {
            if let Some(subs) = self.by_owner.get_mut(owner) {
                subs.retain(|s| s.id != sub.id);
                if subs.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
        }
    }
}

/// Whether events on `N` topics would reach anything ([`EventBus::has_subscribers`]),
/// kept between calls and looked up again only after the bus's subscriptions changed,
/// as a [`Publisher`] keeps its routes: one atomic load per call otherwise. For a path
/// that asks on every call from any thread (the HTTP front, for the request events, on
/// every request: the look-up of both topics was ~250 instructions of it,
/// `scripts/bench-http-cachegrind.sh`).
#[cfg(feature = "http")]
pub(crate) struct Listening<const N: usize> {
    topics: [&'static str; N],
    /// `version << N | answers` (bit `i` for `topics[i]`) as of that version of the
    /// bus's subscriptions; [`Listening::UNKNOWN`] before the first look-up.
    known: AtomicU64,
}

#[cfg(feature = "http")]
impl<const N: usize> Listening<N> {
    /// No answer kept yet (no version reaches it: it counts changes one by one).
    const UNKNOWN: u64 = u64::MAX;

    /// Answers for `topics`, looked up on first use.
    pub(crate) const fn new(topics: [&'static str; N]) -> Self {
        const { assert!(N < 16, "a few topics, so that the version keeps its bits") };
        Self {
            topics,
            known: AtomicU64::new(Self::UNKNOWN),
        }
    }

    /// Whether each topic has subscribers on `bus` now. `bus` must be the same bus at
    /// every call (its version is what the answers are kept by).
    pub(crate) fn on(&self, bus: &EventBus) -> [bool; N] {
        // The version first: a change made meanwhile makes the next call look again.
        let version = bus.inner.version.load(Ordering::Acquire) & (u64::MAX >> N);
        let known = self.known.load(Ordering::Relaxed);
        if known != Self::UNKNOWN && known >> N == version {
            return std::array::from_fn(|i| known & (1 << i) != 0);
        }
        let routes = bus.inner.snapshot();
        let answers = self.topics.map(|topic| routes.has_subscribers(topic));
        let bits = answers
            .iter()
            .enumerate()
            .fold(0, |bits, (i, &yes)| bits | (u64::from(yes) << i));
        self.known.store(version << N | bits, Ordering::Relaxed);
        answers
    }
}

/// The bus's state. Changes go to `table`; publishers read `routes`, an immutable copy
/// of it that is rebuilt on the first read after a change (so a burst of subscriptions,
/// as when plugins start, costs one copy, not one per subscription).
struct BusInner {
    table: Mutex<Table>,
    routes: ArcSwap<Routes>,
    /// `routes` is older than `table`.
    stale: AtomicBool,
    /// How many times `table` changed: a [`Publisher`] looks its routes up again when
    /// this is not what it was at its last look.
    version: AtomicU64,
    next_id: AtomicU64,
    /// A task is due to drop the routes that unsubscribed handlers are still in
    /// ([`BusInner::release_soon`]).
    release_due: AtomicBool,
}

/// Clears the bus's `release_due` when dropped: a release task dropped before it ran (its
/// runtime shutting down) must not leave it set, which would stop every later one.
struct ReleaseDue(Weak<BusInner>);

impl ReleaseDue {
    /// Clears the flag; the bus, if it is still there.
    fn clear(bus: &Weak<BusInner>) -> Option<Arc<BusInner>> {
        let bus = bus.upgrade()?;
        bus.release_due.store(false, Ordering::Release);
        Some(bus)
    }
}

impl Drop for ReleaseDue {
    fn drop(&mut self) {
        Self::clear(&self.0);
    }
}

impl BusInner {
    /// The current routes (a guard that costs no reference count in the common case).
    #[inline]
    fn snapshot(&self) -> arc_swap::Guard<Arc<Routes>> {
        if self.stale.load(Ordering::Acquire) {
            // Dropped here, after the lock is released: the old routes may hold the last
            // handle on an unsubscribed handler, and what it captured may use this bus
            // when dropped (a `Subscription` of it unsubscribes).
            let _released = self.refresh();
        }
        self.routes.load()
    }

    /// Rebuilds the routes from the table, if still stale: the spare copy brought up to
    /// date if no one holds it, else a copy of the table. The copy it replaced becomes
    /// the spare (brought up to date too) if no one holds it; else it is released.
    #[cold]
    fn refresh(&self) -> Released {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !self.stale.load(Ordering::Acquire) {
            return Released::default();
        }
        let table = &mut *guard;
        let changes = std::mem::take(&mut table.changes);
        let complete = !std::mem::replace(&mut table.changes_dropped, false);
        let mut spare = table.spare.take();
        let brought_up = match spare.as_mut().and_then(Arc::get_mut) {
            Some(routes) if complete => {
                changes.iter().for_each(|change| routes.apply(change));
                true
            }
            _ => false,
        };
        let fresh = brought_up
            .then(|| spare.take())
            .flatten()
            .unwrap_or_else(|| Arc::new(table.routes.clone()));
        let mut replaced = self.routes.swap(fresh);
        self.stale.store(false, Ordering::Release);
        // `swap` counted every reader still holding the replaced copy.
        let mut released = Released {
            _spare: spare,
            _routes: None,
            _changes: Vec::new(),
        };
        match Arc::get_mut(&mut replaced) {
            Some(routes) if complete => {
                changes.iter().for_each(|change| routes.apply(change));
                table.spare = Some(replaced);
            }
            _ => released._routes = Some(replaced),
        }
        released._changes = changes;
        released
    }

    /// Rebuilds the routes now if they are stale, and drops the ones they replace after
    /// the lock is released. After a removal, that drops the removed handlers (and what
    /// they captured: a channel's sender, a plugin's state) now rather than at the next
    /// publish, which may never come: a plugin waiting in its `stop` for its queue to
    /// close relies on it. Routes still held by a publish in progress or by a
    /// [`Publisher`] go when those let go of them.
    fn release_removed(&self) {
        drop(self.refresh());
    }

    /// [`release_removed`](Self::release_removed) on the Tokio runtime's next turn, once
    /// for a burst of removals (subscriptions dropped one by one in a loop cost one
    /// rebuild, not one each). Outside a runtime, the routes are rebuilt at the bus's
    /// next use (a publish, or a look at its subscriptions).
    fn release_soon(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.release_due.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut due = ReleaseDue(Arc::downgrade(self));
        runtime.spawn(async move {
            // Disarmed: cleared here, before the rebuild, so that a removal made while
            // it runs asks again.
            if let Some(bus) = ReleaseDue::clear(&std::mem::take(&mut due.0)) {
                bus.release_removed();
            }
        });
    }

    fn update<R>(&self, change: impl FnOnce(&mut Table) -> R) -> R {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let result = change(&mut table);
        self.changed();
        result
    }

    /// Marks `table` changed: the routes stale, then a new version. Called with the
    /// table's lock held, after every change to it.
    fn changed(&self) {
        self.stale.store(true, Ordering::Release);
        // After `stale`: who sees the new version sees the routes stale (or rebuilt).
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Removes a subscription and closes its queue; its worker, if it has one. Nothing
    /// to do for one removed already (with its owner: it was closed then).
    fn unsubscribe(self: &Arc<Self>, sub: &Arc<Sub>) -> Option<JoinHandle<()>> {
        if sub.is_closed() {
            return None;
        }
        self.update(|table| table.remove(sub));
        let worker = sub.close();
        self.release_soon();
        worker
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
    /// The `owner` as the events emitted through this bus name their source.
    source: Option<Name>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.inner.snapshot();
        f.debug_struct("EventBus")
            .field("owner", &self.owner)
            .field("topics", &routes.exact.len())
            .field(
                "wildcard_subscriptions",
                &(routes.wild_any.len()
                    + routes
                        .wild_by_first
                        .values()
                        .map(SmallVec::len)
                        .sum::<usize>()),
            )
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
    sub: Arc<Sub>,
    pattern: String,
    detached: bool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.sub.id)
            .field("pattern", &self.pattern)
            .finish()
    }
}

impl Subscription {
    /// Unsubscribes now. Events already queued for it are still handled. The handler,
    /// and what it captured, is dropped once nothing uses it: within a Tokio runtime, on
    /// the runtime's next turn after its queued events (a publish in progress, or a
    /// [`Publisher`] that has not published since, may hold it a little longer); outside
    /// one, at the bus's next use (a publish, or a look at its subscriptions).
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
        self.sub.dropped.load(Ordering::Relaxed)
    }

    /// Whether the subscription is still registered on its bus.
    pub fn is_active(&self) -> bool {
        let fired_once = self.sub.options.once && self.sub.fired.load(Ordering::Acquire);
        self.bus.strong_count() > 0 && !self.sub.is_closed() && !fired_once
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            if let Some(bus) = self.bus.upgrade() {
                bus.unsubscribe(&self.sub);
            }
        }
    }
}

/// The worker of a removed queued subscription ([`EventBus::remove_owner`]), handling
/// the events still in its queue; a future that ends with it, as its `JoinHandle`.
pub struct Draining {
    worker: JoinHandle<()>,
    sub: Arc<Sub>,
}

impl Draining {
    /// Events still waiting in the queue (not counting the one being handled).
    pub fn queued(&self) -> usize {
        self.sub
            .sender
            .get()
            .map_or(0, |sender| sender.max_capacity() - sender.capacity())
    }

    /// Whether the worker has ended.
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// Stops the worker at its handler's next `.await`; the queued events are dropped.
    pub fn abort(&self) {
        self.worker.abort();
    }

    /// The subscription's pattern.
    pub fn pattern(&self) -> String {
        self.sub.core.pattern.as_string()
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining")
            .field("pattern", &self.pattern())
            .field("queued", &self.queued())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Future for Draining {
    /// The worker's end: an error if it was aborted (or, which it guards against, if
    /// it panicked).
    type Output = Result<(), tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::pin::Pin::new(&mut self.worker).poll(cx)
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
                table: Mutex::new(Table::default()),
                routes: ArcSwap::from_pointee(Routes::default()),
                stale: AtomicBool::new(false),
                version: AtomicU64::new(0),
                next_id: AtomicU64::new(1),
                release_due: AtomicBool::new(false),
            }),
            owner: None,
            source: None,
        }
    }

    /// The same bus, acting for `owner` (a plugin name: a `&str`, or an `Arc<str>` to share).
    pub fn scoped(&self, owner: impl Into<Arc<str>>) -> Self {
        let owner: Arc<str> = owner.into();
        self.acting_for(owner.clone(), Name::Shared(owner))
    }

    /// [`scoped`](Self::scoped) for a name known at compile time, as a plugin's is (the
    /// host scopes each plugin's bus with its name the same way). Events emitted through
    /// it name their source with that `&'static str`, so threads emitting for the same
    /// plugin share no reference count (see [`publish`](Self::publish) for the topic's).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ixp_core::events::{Event, EventBus};
    ///
    /// let bus = EventBus::new();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let _sub = bus.on("user.created", move |event: Event| {
    ///     tx.send(event.source().map(str::to_owned)).ok();
    ///     std::future::ready(())
    /// })?;
    /// bus.scoped_static("users-plugin").emit("user.created", 1).await;
    /// assert_eq!(rx.recv().await, Some(Some("users-plugin".to_owned())));
    /// # Ok(()) }
    /// ```
    pub fn scoped_static(&self, owner: &'static str) -> Self {
        self.scoped_as(owner.into(), owner)
    }

    /// [`scoped_static`](Self::scoped_static) sharing the caller's `Arc` of the name.
    pub(crate) fn scoped_as(&self, owner: Arc<str>, name: &'static str) -> Self {
        debug_assert_eq!(&*owner, name);
        self.acting_for(owner, Name::Static(name))
    }

    /// The same bus, owning subscriptions as `owner` and naming `source` (the same
    /// name) as the source of its events.
    fn acting_for(&self, owner: Arc<str>, source: Name) -> Self {
        Self {
            inner: self.inner.clone(),
            owner: Some(owner),
            source: Some(source),
        }
    }

    /// Subscribes `handler` to `pattern` with default options.
    ///
    /// A handler that returns `std::future::ready(..)` (a synchronous body) runs without
    /// a boxed future; any other future is boxed once per call.
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
        let handler = Handler::new(handler);
        if options.delivery == Delivery::Inline && matches!(handler, Handler::Async(_)) {
            return Err(EventError::InlineHandlerNotReady {
                pattern: pattern.to_owned(),
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
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
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            sender: OnceLock::new(),
            worker: Mutex::new(Worker::default()),
        });
        self.inner.update(|table| {
            table.change(Change::Insert(sub.clone()));
            if let Some(owner) = &self.owner {
                table
                    .by_owner
                    .entry(owner.clone())
                    .or_default()
                    .push(sub.clone());
            }
        });
        Ok(Subscription {
            bus: Arc::downgrade(&self.inner),
            sub,
            pattern: pattern.to_owned(),
            detached: false,
        })
    }

    /// Unsubscribes (the same as dropping the subscription).
    pub fn off(&self, subscription: Subscription) {
        subscription.cancel();
    }

    /// Whether an event on `topic` would reach anything: a subscription whose pattern
    /// matches it, or a [`tap`](Self::tap). Publishers use it to skip building events
    /// nobody receives.
    ///
    /// ```
    /// # let bus = ixp_core::events::EventBus::new();
    /// assert!(!bus.has_subscribers("order.paid"));
    /// let _sub = bus.on("order.*", |_event| async {})?;
    /// assert!(bus.has_subscribers("order.paid"));
    /// # Ok::<(), ixp_core::events::EventError>(())
    /// ```
    pub fn has_subscribers(&self, topic: &str) -> bool {
        self.inner.snapshot().has_subscribers(topic)
    }

    /// Emits an event without waiting for handlers (see the module docs for ordering
    /// and back-pressure). Returns how many subscriptions it was queued for (or handed
    /// to, for inline ones).
    pub async fn emit<T: Payload>(&self, topic: &str, payload: T) -> usize {
        // The routes in a block of their own: not part of the future while it waits.
        let handing = {
            let routes = self.inner.snapshot();
            let (key, exact) = routes.exact_route(topic);
            let event = self.event(Name::of(key, topic), payload);
            let subs = routes.matching(exact, topic);
            self.hand_over(&routes.taps, subs, topic, event, WhenFull::AsSubscribed)
        };
        handing.await
    }

    /// Emits an already built event (its source is kept).
    pub async fn emit_event(&self, event: Event) -> usize {
        let handing = {
            let routes = self.inner.snapshot();
            let topic = event.name().clone();
            let topic = topic.as_str();
            let subs = routes.matching(routes.exact_subs(topic), topic);
            self.hand_over(&routes.taps, subs, topic, event, WhenFull::AsSubscribed)
        };
        handing.await
    }

    /// Emits without ever waiting: a full queue is a counted, logged drop for that
    /// subscription. Needs a tokio runtime for the handlers to run.
    pub fn try_emit<T: Payload>(&self, topic: &str, payload: T) -> usize {
        let routes = self.inner.snapshot();
        let (key, exact) = routes.exact_route(topic);
        let event = self.event(Name::of(key, topic), payload);
        let subs = routes.matching(exact, topic);
        // With `WhenFull::Drop` nothing in `hand_over` waits: done in its first poll.
        self.hand_over(&routes.taps, subs, topic, event, WhenFull::Drop)
            .now_or_never()
            .unwrap_or(0)
    }

    /// Hands `event` (on `topic`) to the subscriptions `subs` (those that match it, in
    /// delivery order), after showing it to `taps`: calls the inline ones, queues for
    /// the others. The last one gets the event itself, the others a clone. Resolves to
    /// how many got it.
    ///
    /// It does all it can now, in this call, and so borrows `subs` no longer than the
    /// call: the publishing `async fn`s need not hold the routes (nor their guard) while
    /// they wait, and their futures stay small (a publish in a request's future was
    /// 856-896 bytes of its state, docs/performance.md). Only a full queue of a
    /// subscription that waits for room ([`Overflow::Wait`], with
    /// [`WhenFull::AsSubscribed`]) leaves something to wait for: that event and the rest
    /// of the hand-over, boxed ([`HandOver::Waiting`]), in the same order.
    fn hand_over<'r>(
        &self,
        taps: &[Tap],
        subs: impl Iterator<Item = &'r Route>,
        topic: &str,
        event: Event,
        when_full: WhenFull,
    ) -> HandOver<'_> {
        show_taps(taps, &event);
        let mut handed = 0;
        let mut subs = subs.peekable();
        let mut event = Some(event);
        while let Some(route) = subs.next() {
            if !self.fire(route) {
                continue;
            }
            let this = match subs.peek() {
                Some(_) => event.clone(),
                None => event.take(),
            };
            let Some(this) = this else {
                break;
            };
            let delivered = if route.delivery == Delivery::Inline {
                self.call_inline(route, topic, this)
            } else if let Some(sender) = self.queue_of(&route.sub) {
                match (when_full, route.sub.options.overflow) {
                    (WhenFull::AsSubscribed, Overflow::Wait) => match sender.try_send(this) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                        Err(mpsc::error::TrySendError::Full(this)) => {
                            let rest = Blocked {
                                handed,
                                route: route.clone(),
                                this,
                                others: subs.cloned().collect(),
                                event: event.take(),
                            };
                            return HandOver::Waiting(Box::pin(self.wait_for_room(rest)));
                        }
                    },
                    _ => self.try_queue(&route.sub, sender, this),
                }
            } else {
                false
            };
            handed += usize::from(delivered);
            if route.once {
                // Done: a queued one's worker handles this event and ends, instead of
                // idling until the `Subscription` is dropped.
                drop(route.sub.close());
            }
        }
        HandOver::Done(handed)
    }

    /// The rest of a [`hand_over`](Self::hand_over) that found a full queue: waits for
    /// room in it, then hands the event to the subscriptions after it.
    async fn wait_for_room(&self, rest: Blocked) -> usize {
        let Blocked {
            mut handed,
            route,
            this,
            others,
            event,
        } = rest;
        if let Some(sender) = route.sub.sender.get() {
            handed += usize::from(sender.send(this).await.is_ok());
        }
        if route.once {
            drop(route.sub.close());
        }
        if let Some(event) = event {
            // The taps have seen it already.
            let topic = event.name().clone();
            handed += self
                .hand_over(
                    &[],
                    others.iter(),
                    topic.as_str(),
                    event,
                    WhenFull::AsSubscribed,
                )
                .await;
        }
        handed
    }

    /// Calls every matching handler in this task, one after the other, and returns when
    /// all are done. Failures are also logged and published as `error.occurred`.
    pub async fn emit_and_wait<T: Payload>(&self, topic: &str, payload: T) -> DeliveryReport {
        let routes = self.inner.snapshot();
        let (key, exact) = routes.exact_route(topic);
        let subs = routes.matching(exact, topic);
        call_each!(self, &routes.taps, subs, topic, key, payload)
    }

    /// Publishes a typed event on its topic (fire and forget).
    ///
    /// The same as [`emit`](Self::emit) on `E::TOPIC`, except that the event names its
    /// topic with that `&'static str` whether or not the topic has an exact route: no
    /// reference count shared by every event on the topic, which threads publishing at
    /// once would contend for.
    pub async fn publish<E: TypedEvent>(&self, event: E) -> usize {
        // `emit`, with the topic's static name in the event instead of the route's key.
        let handing = {
            let routes = self.inner.snapshot();
            let subs = routes.matching(routes.exact_subs(E::TOPIC), E::TOPIC);
            let event = self.event(Name::Static(E::TOPIC), event);
            self.hand_over(&routes.taps, subs, E::TOPIC, event, WhenFull::AsSubscribed)
        };
        handing.await
    }

    /// Subscribes to a typed event: the handler gets its payload as a [`Typed<E>`]
    /// (which dereferences to `E`); payloads from other processes are decoded from JSON.
    pub fn subscribe<E, F, Fut>(&self, handler: F) -> Result<Subscription, EventError>
    where
        E: TypedEvent,
        F: Fn(Typed<E>) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let handler = Arc::new(handler);
        self.on(E::TOPIC, move |event: Event| {
            let handler = handler.clone();
            async move {
                let typed = event.decode::<E>()?;
                // The handler may take the payload out ([`Typed::into_inner`]).
                drop(event);
                handler(typed).await.into_result()
            }
        })
    }

    /// Calls `tap` synchronously with every event emitted on this bus from now on,
    /// before any handler runs (for recording in tests and for bridges). Taps cannot be
    /// removed; they live as long as the bus.
    pub fn tap(&self, tap: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner
            .update(|table| table.change(Change::Tap(Arc::new(tap))));
    }

    /// Every current subscription (pattern and owner), in subscription order.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let routes = self.inner.snapshot();
        let mut subs: Vec<&Arc<Sub>> = routes.subscriptions().collect();
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
    pub fn remove_owner(&self, owner: &str) -> Vec<Draining> {
        let mut table = self.inner.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = table.by_owner.remove(owner) else {
            return Vec::new();
        };
        for sub in &subs {
            table.change(Change::Remove(sub.clone()));
        }
        self.inner.changed();
        drop(table);
        let workers = subs
            .iter()
            .filter_map(|sub| {
                sub.close().map(|worker| Draining {
                    worker,
                    sub: sub.clone(),
                })
            })
            .collect();
        drop(subs);
        // The owner's handlers go now (those of queued subscriptions when their
        // workers end): its plugin's `stop` comes next and may wait on what they hold.
        self.inner.release_removed();
        workers
    }

    /// Whether `sub` takes this event: false for a `once` subscription that fired
    /// already; a `once` subscription firing now is removed.
    #[inline]
    fn fire(&self, route: &Route) -> bool {
        if !route.once {
            return true;
        }
        if route.sub.fired.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.update(|table| table.remove(&route.sub));
        self.inner.release_soon();
        true
    }

    #[inline]
    fn event<T: Payload>(&self, topic: Name, payload: T) -> Event {
        Event::with_names(topic, self.source.clone(), payload)
    }

    /// Calls an inline subscription's handler now (failures reported); whether it was
    /// called (not once the subscription is removed).
    fn call_inline(&self, route: &Route, topic: &str, event: Event) -> bool {
        // `on_with` accepts only synchronous handlers for inline delivery.
        let Handler::Ready(handler) = &route.handler else {
            return false;
        };
        if route.sub.is_closed() {
            return false;
        }
        if let Err(message) = run_ready(&**handler, event) {
            report_failure(Some(&self.inner), &route.sub.core, topic, &message);
        }
        true
    }

    fn try_queue(&self, sub: &Arc<Sub>, sender: &mpsc::Sender<Event>, event: Event) -> bool {
        match sender.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                let n = sub.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        topic = event.topic(),
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

    /// The subscription's queue, started (with its worker) on first use; `None` once the
    /// subscription was removed.
    #[inline]
    fn queue_of<'s>(&self, sub: &'s Sub) -> Option<&'s mpsc::Sender<Event>> {
        if sub.is_closed() {
            return None;
        }
        match sub.sender.get() {
            Some(sender) => Some(sender),
            None => self.start_queue(sub),
        }
    }

    /// Starts the subscription's queue and worker (unless another publisher just did, or
    /// the subscription was removed meanwhile).
    #[cold]
    fn start_queue<'s>(&self, sub: &'s Sub) -> Option<&'s mpsc::Sender<Event>> {
        let mut worker = sub.lock_worker();
        // Read under the lock `close` sets it under: no worker starts after a close.
        if sub.is_closed() {
            return None;
        }
        if let Some(sender) = sub.sender.get() {
            return Some(sender);
        }
        let (sender, receiver) = mpsc::channel::<Event>(sub.options.capacity);
        let (closing, closed) = oneshot::channel();
        let core = sub.core.clone();
        let bus = Arc::downgrade(&self.inner);
        let span = tracing::info_span!(
            "subscription",
            plugin = core.owner.as_deref().unwrap_or("-"),
            pattern = %core.pattern.as_string()
        );
        worker.task = Some(tokio::spawn(
            drain(receiver, closed, core, bus).instrument(span),
        ));
        worker.closing = Some(closing);
        Some(sub.sender.get_or_init(|| sender))
    }
}

/// A queued subscription's worker: handles its events one at a time, in order. Once
/// the subscription is removed (`closed` fires, or its sender is dropped with the
/// subscription), the queue takes no new events (publishers waiting for room are let
/// go); the queued ones are still handled, then it ends. The removal is seen before the
/// next event, and during a handler that waits (a synchronous one is not interrupted).
async fn drain(
    mut queue: mpsc::Receiver<Event>,
    mut closed: oneshot::Receiver<()>,
    core: Arc<SubCore>,
    bus: Weak<BusInner>,
) {
    // `closed` has not fired yet (a fired `oneshot` must not be polled again).
    let mut open = true;
    loop {
        let next = if open {
            // `closed` first: with events queued, `recv` is always ready, and a removal
            // must still be seen before the next one (publishers waiting for room let go).
            tokio::select! {
                biased;
                _ = &mut closed => None,
                event = queue.recv() => Some(event),
            }
        } else {
            Some(queue.recv().await)
        };
        let event = match next {
            Some(Some(event)) => event,
            // Closed and drained, or every sender is gone (the subscription was dropped).
            Some(None) => break,
            None => {
                open = false;
                queue.close();
                continue;
            }
        };
        let topic = event.name().clone();
        let handling = run_handler(&core, event);
        let outcome = if open {
            let mut handling = std::pin::pin!(handling);
            let outcome = tokio::select! {
                biased;
                outcome = &mut handling => Some(outcome),
                _ = &mut closed => None,
            };
            match outcome {
                Some(outcome) => outcome,
                None => {
                    open = false;
                    queue.close();
                    handling.await
                }
            }
        } else {
            handling.await
        };
        if let Err(message) = outcome {
            let bus = bus.upgrade();
            report_failure(bus.as_ref(), &core, topic.as_str(), &message);
        }
    }
}

/// Runs one handler call, isolating errors and panics; the error or panic message.
async fn run_handler(sub: &SubCore, event: Event) -> Result<(), String> {
    match &sub.handler {
        Handler::Ready(handler) => run_ready(&**handler, event),
        Handler::Async(handler) => run_async(&**handler, event).await,
    }
}

/// Calls a handler with a synchronous body (no future at all), isolating a panic.
#[inline]
fn run_ready(handler: &ReadyFn, event: Event) -> Result<(), String> {
    handler_outcome(std::panic::catch_unwind(AssertUnwindSafe(|| {
        handler(event)
    })))
}

/// Calls a handler and awaits its future, isolating a panic in either.
async fn run_async(handler: &AsyncFn, event: Event) -> Result<(), String> {
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(event))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    handler_outcome(outcome)
}

/// A handler call's outcome (returned, failed, or panicked) as the error message.
/// Small enough to inline into the delivery loop: the message is built out of line
/// (3-4% fewer instructions per event, `scripts/bench-routing-cachegrind.sh`).
#[inline]
fn handler_outcome(outcome: std::thread::Result<Result<(), BoxError>>) -> Result<(), String> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(failure_message(Ok(err))),
        Err(panic) => Err(failure_message(Err(panic))),
    }
}

/// The error message of a handler that returned an error (`Ok`) or panicked (`Err`).
#[cold]
#[inline(never)]
fn failure_message(failure: Result<BoxError, Box<dyn Any + Send>>) -> String {
    match failure {
        Ok(err) => err.to_string(),
        Err(panic) => format!("handler panicked: {}", panic_message(&*panic)),
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
            source: None,
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

    /// An event is one pointer to its allocation (topic, source and payload): two
    /// words, handed to handlers in registers. A wider event is copied at every step of
    /// a delivery (see [`Event`]).
    #[test]
    fn an_event_is_two_words() {
        assert_eq!(
            std::mem::size_of::<Event>(),
            2 * std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<Event>>(),
            std::mem::size_of::<Event>()
        );
    }

    /// `decode` of a payload of the asked type shares the event's payload (no copy, no
    /// `Clone` needed); from JSON it builds one, and both keep the event's names.
    #[test]
    fn decode_shares_the_payload_and_keeps_the_names() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Order {
            id: u32,
        }
        let bus = EventBus::new().scoped("shop-plugin");
        let event = bus.event(Name::Static("order.created"), Order { id: 7 });
        let typed = event.decode::<Order>().expect("same type");
        let in_event: *const Order = event.payload::<Order>().expect("an Order");
        assert!(std::ptr::eq(&*typed, in_event), "decode copied the payload");
        assert_eq!(
            (typed.topic(), typed.source()),
            ("order.created", Some("shop-plugin"))
        );
        drop(event);
        assert_eq!(*typed, Order { id: 7 }, "a Typed keeps the event alive");

        let remote = bus.event(
            Name::Static("order.created"),
            serde_json::json!({ "id": 8 }),
        );
        let decoded = remote.decode::<Order>().expect("from JSON");
        assert_eq!(*decoded, Order { id: 8 });
        assert_eq!(
            (decoded.topic(), decoded.source()),
            ("order.created", Some("shop-plugin"))
        );
        let wrong = remote.decode::<String>().expect_err("not a string");
        assert!(wrong.to_string().contains("order.created"), "{wrong}");
    }

    /// `Typed` compares, hashes and prints as its `T`; `into_inner` moves the `T` out
    /// when it holds the only handle on the event, and clones it otherwise.
    #[test]
    fn typed_behaves_as_its_payload() {
        let event = Event::new("user.created", "ada".to_string());
        let one = event.decode::<String>().expect("a String");
        let two = event.decode::<String>().expect("a String");
        assert_eq!(one, two);
        assert_eq!(format!("{one}"), "ada");
        let names: std::collections::HashSet<Typed<String>> = [one.clone(), two].into();
        let key = String::from("ada");
        assert!(names.contains(&key), "Borrow<String> and Hash agree");
        assert_eq!(names.len(), 1);
        assert_eq!(one.into_inner(), "ada", "cloned while the event holds it");
        assert_eq!(event.payload::<String>().map(String::as_str), Some("ada"));
        drop(names);
        let alone = event.decode::<String>().expect("a String");
        drop(event);
        let moved: *const u8 = alone.as_ptr();
        let inner = alone.into_inner();
        assert!(std::ptr::eq(inner.as_ptr(), moved), "moved out, not cloned");
    }

    /// Publishing from a spawned task needs the publishing futures to be `Send`; a
    /// routing iterator built from closures once made them `Send` only for some
    /// lifetimes, which only crates spawning them noticed.
    #[test]
    fn publishing_futures_are_send() {
        fn spawnable<F: Future + Send + 'static>(future: F) -> F {
            future
        }
        let bus = EventBus::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let report = runtime.block_on(spawnable({
            let bus = bus.clone();
            async move {
                bus.emit("a.b", 1u64).await;
                bus.emit_event(Event::new("a.b", 2u64)).await;
                bus.publish(ErrorOccurred {
                    source: "test".into(),
                    plugin: None,
                    topic: None,
                    message: "m".into(),
                })
                .await;
                let mut publisher = bus.publisher("a.b");
                publisher.emit(4u64).await;
                publisher.try_emit(5u64);
                publisher.emit_and_wait(6u64).await;
                bus.emit_and_wait("a.b", 3u64).await
            }
        }));
        assert_eq!(report.handled, 0);
    }

    /// A subscribed handler capturing `marker`, with the routes built (one event
    /// published) so that the bus's snapshot holds the handler too.
    fn subscribed_with(bus: &EventBus, topic: &str, marker: &Arc<()>) -> Subscription {
        let held = marker.clone();
        let inline = SubscribeOptions {
            delivery: Delivery::Inline,
            ..SubscribeOptions::default()
        };
        let subscription = bus
            .on_with(topic, inline, move |_| {
                let _ = &held;
                std::future::ready(())
            })
            .expect("valid");
        assert_eq!(bus.try_emit(topic, 1u8), 1);
        subscription
    }

    /// Removing a plugin's subscriptions drops their handlers at once, though nothing
    /// publishes afterwards: a plugin whose `stop` waits for its handler's channel to
    /// close (events-nats-plugin does) would otherwise wait for its whole timeout.
    #[test]
    fn remove_owner_drops_the_owner_s_handlers_at_once() {
        let bus = EventBus::new();
        let scoped = bus.scoped("p");
        let marker = Arc::new(());
        subscribed_with(&scoped, "a.b", &marker).detach();
        assert_eq!(Arc::strong_count(&marker), 2);
        let workers = bus.remove_owner("p");
        assert!(workers.is_empty(), "inline: no worker");
        assert_eq!(Arc::strong_count(&marker), 1, "the handler is dropped");
    }

    /// A cancelled subscription's handler is dropped on the runtime's next turn, once
    /// for a burst of cancellations; not at the next publish, which may never come.
    #[test]
    fn a_cancelled_handler_is_dropped_on_the_runtime_s_next_turn() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let bus = EventBus::new();
            let markers: Vec<Arc<()>> = (0..3).map(|_| Arc::new(())).collect();
            let subscriptions: Vec<Subscription> = markers
                .iter()
                .enumerate()
                .map(|(i, marker)| subscribed_with(&bus, &format!("t{i}.e"), marker))
                .collect();
            assert!(markers.iter().all(|m| Arc::strong_count(m) == 2));
            drop(subscriptions);
            tokio::task::yield_now().await;
            assert!(
                markers.iter().all(|m| Arc::strong_count(m) == 1),
                "every handler is dropped"
            );
            assert!(!bus.inner.release_due.load(Ordering::Acquire));
        });
    }

    /// A burst of subscriptions longer than the change log ([`MAX_CHANGES`]), made with
    /// no rebuild in between.
    fn longer_than_the_change_log(bus: &EventBus) -> Vec<Subscription> {
        let inline = SubscribeOptions {
            delivery: Delivery::Inline,
            ..SubscribeOptions::default()
        };
        (0..MAX_CHANGES + 10)
            .map(|_| {
                bus.on_with("d.e", inline, |_| std::future::ready(()))
                    .expect("valid")
            })
            .collect()
    }

    /// Routes rebuilt from the spare copy (left-right) match the table through any mix
    /// of subscriptions, removals and publishes, including while a reader holds a copy
    /// (the rebuild then copies the table) and past [`MAX_CHANGES`].
    #[test]
    fn rebuilt_routes_follow_every_change() {
        let bus = EventBus::new();
        let inline = SubscribeOptions {
            delivery: Delivery::Inline,
            ..SubscribeOptions::default()
        };
        let topics = ["a.b", "a.c", "d.e"];
        let patterns = ["a.b", "a.c", "d.e", "a.*", "**"];
        let mut live: Vec<(usize, Subscription)> = Vec::new();
        let mut held: Option<Arc<Routes>> = None;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        for step in 0..20_000 {
            match next(10) {
                0..=3 => {
                    let k = next(patterns.len());
                    let sub = bus
                        .on_with(patterns[k], inline, |_| std::future::ready(()))
                        .expect("valid");
                    live.push((k, sub));
                }
                4..=6 if !live.is_empty() => {
                    let i = next(live.len());
                    drop(live.swap_remove(i));
                }
                7 => held = Some(bus.inner.snapshot().clone()),
                8 => held = None,
                _ => {
                    let topic = topics[next(topics.len())];
                    let expected = live
                        .iter()
                        .filter(|(k, _)| {
                            Pattern::parse(patterns[*k]).expect("valid").matches(topic)
                        })
                        .count();
                    assert_eq!(bus.try_emit(topic, 1u8), expected, "step {step}, {topic}");
                }
            }
            if step % 5_000 == 4_999 {
                drop(longer_than_the_change_log(&bus));
            }
        }
        drop(held);
        let mut ids: Vec<u64> = live.iter().map(|(_, s)| s.sub.id).collect();
        ids.sort_unstable();
        let routes = bus.inner.snapshot();
        let mut seen: Vec<u64> = routes.subscriptions().map(|s| s.id).collect();
        seen.sort_unstable();
        assert_eq!(seen, ids);
    }

    /// A release task dropped before it ran (its runtime shut down) does not stop later
    /// ones; and a `once` subscription's handler goes soon after it fired.
    #[test]
    fn release_tasks_survive_a_runtime_s_shutdown_and_follow_once_subscriptions() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
        };
        let bus = EventBus::new();
        let first = Arc::new(());
        let subscription = subscribed_with(&bus, "a.b", &first);
        // The release task is spawned, never polled, and dropped with its runtime.
        runtime().block_on(async move { drop(subscription) });
        runtime().block_on(async {
            let second = Arc::new(());
            drop(subscribed_with(&bus, "c.d", &second));
            tokio::task::yield_now().await;
            assert_eq!(Arc::strong_count(&second), 1, "released after the shutdown");
            assert_eq!(Arc::strong_count(&first), 1);

            let fired = Arc::new(());
            let held = fired.clone();
            let once = SubscribeOptions {
                once: true,
                delivery: Delivery::Inline,
                ..SubscribeOptions::default()
            };
            bus.on_with("e.f", once, move |_| {
                let _ = &held;
                std::future::ready(())
            })
            .expect("valid")
            .detach();
            assert_eq!(bus.try_emit("e.f", 1u8), 1);
            tokio::task::yield_now().await;
            assert_eq!(Arc::strong_count(&fired), 1, "a fired once handler goes");
        });
    }

    /// A handler whose last handle is in the change log, and which holds a subscription
    /// of the same bus, is dropped outside the table's lock even when the log overflows
    /// (dropping it under the lock would lock the table again from its `Drop`).
    #[test]
    fn a_handler_holding_a_subscription_of_its_bus_is_never_dropped_under_the_lock() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let bus = EventBus::new();
            let inline = SubscribeOptions {
                delivery: Delivery::Inline,
                ..SubscribeOptions::default()
            };
            let inner = bus
                .on_with("x.y", inline, |_| std::future::ready(()))
                .expect("valid");
            let outer = bus
                .on_with("a.b", inline, move |_| {
                    let _ = &inner;
                    std::future::ready(())
                })
                .expect("valid");
            // No runtime: nothing rebuilds the routes, and the log holds the last
            // handles on the outer handler.
            drop(outer);
            drop(longer_than_the_change_log(&bus));
            bus.try_emit("x.y", 1u8);
            let _ = done.send(bus.try_emit("x.y", 1u8));
        });
        let handled = finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("no deadlock");
        assert_eq!(
            handled, 0,
            "the inner subscription went with the outer handler"
        );
    }

    /// `Listening` answers as `has_subscribers` does after every kind of change to the
    /// bus: exact, wildcard and `once` subscriptions made, fired and removed, a tap.
    #[cfg(feature = "http")]
    #[test]
    fn listening_follows_every_change_of_the_bus_s_subscriptions() {
        let bus = EventBus::new();
        let listening = Listening::new(["a.b", "c.d"]);
        let direct = |bus: &EventBus| ["a.b", "c.d"].map(|topic| bus.has_subscribers(topic));
        let check = |bus: &EventBus, expected: [bool; 2]| {
            // Twice: the second answer is the one kept.
            assert_eq!(listening.on(bus), expected);
            assert_eq!(listening.on(bus), expected);
            assert_eq!(direct(bus), expected);
        };
        check(&bus, [false, false]);
        let exact = bus.on("a.b", |_| std::future::ready(())).expect("valid");
        check(&bus, [true, false]);
        let wildcard = bus.on("c.*", |_| std::future::ready(())).expect("valid");
        check(&bus, [true, true]);
        drop(exact);
        check(&bus, [false, true]);
        drop(wildcard);
        check(&bus, [false, false]);
        let once = SubscribeOptions {
            once: true,
            delivery: Delivery::Inline,
            ..SubscribeOptions::default()
        };
        let _once = bus
            .on_with("c.d", once, |_| std::future::ready(()))
            .expect("valid");
        check(&bus, [false, true]);
        assert_eq!(bus.try_emit("c.d", 1u8), 1);
        check(&bus, [false, false]);
        bus.tap(|_| {});
        check(&bus, [true, true]);
    }

    /// The events of a subscribed exact topic carry its interned `&'static str`, one
    /// per name across buses; a name that was not subscribed gets an `Arc<str>`.
    #[test]
    fn an_exact_route_names_its_events_with_the_interned_topic() {
        let (one, other) = (EventBus::new(), EventBus::new());
        let _a = one.on("interned.topic", |_| std::future::ready(()));
        let _b = other.on("interned.topic", |_| std::future::ready(()));
        let name = |bus: &EventBus, topic: &str| {
            Name::of(bus.inner.snapshot().exact_route(topic).0, topic)
        };
        let (Name::Static(a), Name::Static(b)) =
            (name(&one, "interned.topic"), name(&other, "interned.topic"))
        else {
            panic!("a subscribed topic's route is keyed by its interned name");
        };
        assert!(std::ptr::eq(a, b), "one interned copy per name");
        assert!(matches!(name(&one, "not.subscribed"), Name::Shared(_)));
    }

    /// Interning stops at its limit: names already kept are still found, new ones are
    /// not kept.
    #[test]
    fn interning_is_bounded() {
        let mut interner = Interner::new(12);
        let kept = interner.intern("a.b").expect("room");
        assert!(std::ptr::eq(interner.intern("a.b").expect("kept"), kept));
        assert!(interner.intern("c.d.e.f").is_some());
        assert!(interner.intern("g.h.i").is_none(), "3 + 7 + 5 bytes > 12");
        assert!(interner.intern("gh").is_some(), "3 + 7 + 2 bytes = 12");
        assert!(interner.intern("i").is_none(), "full");
        assert!(std::ptr::eq(
            interner.intern("a.b").expect("still kept"),
            kept
        ));
    }

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
