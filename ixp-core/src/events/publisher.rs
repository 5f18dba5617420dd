//! [`Publisher`]: a publisher of one topic that keeps the topic's routes between events.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;

use super::{DeliveryReport, EventBus, Name, Payload, RouteList, Tap, WhenFull};

/// A publisher of one topic, from [`EventBus::publisher`].
///
/// It publishes as [`EventBus::emit`], [`try_emit`](EventBus::try_emit) and
/// [`emit_and_wait`](EventBus::emit_and_wait) do, with the same delivery, ordering,
/// back-pressure and failure handling, and events carry the bus's owner as their
/// source. The difference: it keeps the subscriptions its topic reaches (exact and
/// wildcard) between events, and looks them up again only after the bus's
/// subscriptions changed (one atomic load per event tells). An event then costs no
/// hash or look-up of its topic and no guard on the bus's routing table, so its
/// instructions do not grow with the number of topics: with one synchronous handler
/// about 0.7x those of [`EventBus::emit_and_wait`] and 1.6x those of building the event
/// and calling the handler directly (`publisher_emit_and_wait` rows of the `events`
/// bench, `scripts/bench-routing-cachegrind.sh`; docs/performance.md).
///
/// It takes `&mut self`: give each task its own. A clone is cheap: it starts without
/// routes and looks them up on its first event. Suited to buses whose subscriptions
/// rarely change: any change on the bus (a `once` subscription firing included) makes
/// every publisher's next event look its routes up again and clone them.
///
/// **What it holds**: the routes it last looked up hold their handlers. A handler
/// unsubscribed since (or removed with its plugin), and what it captured, are dropped
/// when this publisher next publishes or is dropped, not at once (the bus's own routes
/// let go of them at once, or on the runtime's next turn: see
/// [`Subscription::cancel`](crate::events::Subscription::cancel)). An unsubscribed handler
/// is never called: the next event sees the change. A handler should not own a
/// publisher whose topic reaches that handler: the two would hold each other after it
/// is unsubscribed.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ixp_core::events::{Event, EventBus};
///
/// let bus = EventBus::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let _sub = bus.on("order.*", move |event: Event| {
///     tx.send(event.payload::<u32>().copied()).ok();
///     std::future::ready(())
/// })?;
/// let mut paid = bus.publisher("order.paid");
/// assert_eq!(paid.emit_and_wait(7u32).await.handled, 1);
/// assert_eq!(rx.recv().await, Some(Some(7)));
/// # Ok(()) }
/// ```
pub struct Publisher {
    bus: EventBus,
    topic: Arc<str>,
    cache: Option<Kept>,
}

impl Clone for Publisher {
    /// The same topic on the same bus, without routes yet (looked up on its first
    /// event), so that a clone holds no handler until it publishes.
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            topic: self.topic.clone(),
            cache: None,
        }
    }
}

/// The routes of a publisher's topic as of one version of the bus's subscriptions.
struct Kept {
    /// The bus's version ([`super::BusInner::version`]) they were looked up at.
    version: u64,
    /// The topic as its events name it: the key of its exact route (an interned
    /// `&'static str` as a rule), else the topic interned here (a topic only wildcards
    /// match), so that clones publishing on several threads share no reference count;
    /// past the interning allowance the publisher's own `Arc`.
    name: Name,
    taps: Vec<Tap>,
    /// The subscriptions an event on the topic reaches, in delivery order.
    subs: RouteList,
}

impl Kept {
    /// The routes of `topic` on `bus` now.
    #[cold]
    fn look_up(bus: &EventBus, topic: &Arc<str>) -> Self {
        // The version first: a change made meanwhile makes the next event look again.
        let version = bus.inner.version.load(Ordering::Acquire);
        let routes = bus.inner.snapshot();
        let (key, exact) = routes.exact_route(topic);
        Self {
            version,
            name: key.cloned().unwrap_or_else(|| Name::interned(topic)),
            taps: routes.taps.clone(),
            subs: routes.matching(exact, topic).cloned().collect(),
        }
    }
}

impl EventBus {
    /// A [`Publisher`] of `topic` on this bus: for sending many events to one topic.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let bus = ixp_core::events::EventBus::new().scoped_static("orders");
    /// let mut created = bus.publisher("order.created");
    /// assert_eq!(created.topic(), "order.created");
    /// assert!(!created.has_subscribers());
    /// assert_eq!(created.emit(1u64).await, 0);
    /// # }
    /// ```
    pub fn publisher(&self, topic: impl Into<Arc<str>>) -> Publisher {
        Publisher {
            bus: self.clone(),
            topic: topic.into(),
            cache: None,
        }
    }
}

impl Publisher {
    /// The topic it publishes on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The routes as of the bus's current version, looked up again if they changed;
    /// with the bus and the topic.
    #[inline]
    fn current(&mut self) -> (&EventBus, &Kept, &str) {
        let version = self.bus.inner.version.load(Ordering::Acquire);
        if self
            .cache
            .as_ref()
            .is_some_and(|kept| kept.version != version)
        {
            // Dropped first, with no lock held: the last handle on an unsubscribed
            // handler may be here, and what it captured may use the bus when dropped.
            self.cache = None;
        }
        let kept = self
            .cache
            .get_or_insert_with(|| Kept::look_up(&self.bus, &self.topic));
        (&self.bus, kept, &self.topic)
    }

    /// Whether an event would reach anything now (see [`EventBus::has_subscribers`]):
    /// from its routes if they are current, else from the bus's.
    pub fn has_subscribers(&self) -> bool {
        let version = self.bus.inner.version.load(Ordering::Acquire);
        match &self.cache {
            Some(kept) if kept.version == version => !kept.taps.is_empty() || !kept.subs.is_empty(),
            _ => self.bus.has_subscribers(&self.topic),
        }
    }

    /// [`EventBus::emit`] on this publisher's topic.
    pub async fn emit<T: Payload>(&mut self, payload: T) -> usize {
        let (bus, kept, topic) = self.current();
        let event = bus.event(kept.name.clone(), payload);
        let subs = kept.subs.iter();
        bus.hand_over(&kept.taps, subs, topic, event, WhenFull::AsSubscribed)
            .await
    }

    /// [`EventBus::try_emit`] on this publisher's topic.
    pub fn try_emit<T: Payload>(&mut self, payload: T) -> usize {
        let (bus, kept, topic) = self.current();
        let event = bus.event(kept.name.clone(), payload);
        // With `WhenFull::Drop` nothing in `hand_over` waits: done in its first poll.
        bus.hand_over(&kept.taps, kept.subs.iter(), topic, event, WhenFull::Drop)
            .now_or_never()
            .unwrap_or(0)
    }

    /// [`EventBus::emit_and_wait`] on this publisher's topic.
    pub async fn emit_and_wait<T: Payload>(&mut self, payload: T) -> DeliveryReport {
        let (bus, kept, topic) = self.current();
        let subs = kept.subs.iter();
        call_each!(bus, &kept.taps, subs, topic, Some(&kept.name), payload)
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("source", &self.bus.source)
            .field(
                "kept_routes",
                &self.cache.as_ref().map(|kept| kept.subs.len()),
            )
            .finish()
    }
}
