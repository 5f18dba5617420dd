//! The event bus: delivery, wildcards, once/off, ordering, back-pressure, drops,
//! failure isolation, typed events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ixp_core::events::{
    Delivery, ErrorOccurred, Event, EventBus, EventError, Overflow, SubscribeOptions, TypedEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

type Seen = Arc<Mutex<Vec<String>>>;

fn recorder(bus: &EventBus, pattern: &str) -> (ixp_core::Subscription, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let sub = bus
        .on(pattern, move |event: Event| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(event.topic().to_owned());
            }
        })
        .expect("valid pattern");
    (sub, seen)
}

async fn settle(seen: &Seen, n: usize) -> Vec<String> {
    for _ in 0..200 {
        if seen.lock().expect("lock").len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen.lock().expect("lock").clone()
}

type Errors = Arc<Mutex<Vec<ErrorOccurred>>>;

/// A subscription recording every `error.occurred`.
fn error_recorder(bus: &EventBus) -> (ixp_core::Subscription, Errors) {
    let errors: Errors = Arc::default();
    let sink = errors.clone();
    let sub = bus
        .subscribe::<ErrorOccurred, _, _>(move |e| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push((*e).clone());
            }
        })
        .expect("valid");
    (sub, errors)
}

/// The recorded errors once there are `n` (or after a second).
async fn settle_errors(errors: &Errors, n: usize) -> Vec<ErrorOccurred> {
    for _ in 0..200 {
        if errors.lock().expect("lock").len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    errors.lock().expect("lock").clone()
}

#[tokio::test]
async fn exact_and_wildcard_subscriptions_receive_matching_topics() {
    let bus = EventBus::new();
    let (_exact, exact) = recorder(&bus, "order.created");
    let (_one, one) = recorder(&bus, "order.*");
    let (_rest, rest) = recorder(&bus, "order.**");
    let (_all, all) = recorder(&bus, "**");
    for topic in [
        "order.created",
        "order.paid",
        "order.paid.late",
        "user.created",
    ] {
        bus.emit(topic, ()).await;
    }
    assert_eq!(settle(&exact, 1).await, ["order.created"]);
    assert_eq!(settle(&one, 2).await, ["order.created", "order.paid"]);
    assert_eq!(
        settle(&rest, 3).await,
        ["order.created", "order.paid", "order.paid.late"]
    );
    assert_eq!(settle(&all, 4).await.len(), 4);
}

#[tokio::test]
async fn dropping_cancelling_or_off_unsubscribes() {
    let bus = EventBus::new();
    let (a, seen_a) = recorder(&bus, "t");
    let (b, seen_b) = recorder(&bus, "t");
    let (c, seen_c) = recorder(&bus, "t");
    assert_eq!(bus.emit("t", ()).await, 3);
    drop(a);
    b.cancel();
    bus.off(c);
    assert_eq!(bus.emit("t", ()).await, 0);
    assert!(bus.subscriptions().is_empty());
    for seen in [seen_a, seen_b, seen_c] {
        assert_eq!(settle(&seen, 1).await.len(), 1);
    }
}

#[tokio::test]
async fn once_handles_exactly_one_event() {
    let bus = EventBus::new();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let sub = bus
        .once("ping", move |_| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("valid");
    bus.emit("ping", ()).await;
    bus.emit("ping", ()).await;
    bus.emit_and_wait("ping", ()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(!sub.is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_receives_one_publishers_events_in_order() {
    let bus = EventBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = bus
        .on("seq", move |event: Event| {
            let tx = tx.clone();
            async move {
                tokio::task::yield_now().await;
                tx.send(*event.payload::<u32>().expect("u32")).ok();
            }
        })
        .expect("valid");
    for i in 0..2000_u32 {
        bus.emit("seq", i).await;
    }
    for expected in 0..2000_u32 {
        assert_eq!(rx.recv().await, Some(expected));
    }
}

#[tokio::test]
async fn emit_and_wait_returns_after_every_handler_with_the_failures() {
    let bus = EventBus::new();
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let done = done.clone();
        bus.on("job", move |_| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("valid")
        .detach();
    }
    bus.on("job", |_| async { Err::<(), _>("bad job") })
        .expect("valid")
        .detach();
    let report = bus.emit_and_wait("job", ()).await;
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert_eq!(report.handled, 4);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].message, "bad job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_handler_disturbs_nobody_and_is_published_as_error_occurred() {
    let bus = EventBus::new();
    let (_errors, errors) = error_recorder(&bus);
    let scoped = bus.scoped("flaky-plugin");
    let _panics = scoped
        .on("work", |_| async {
            if true {
                panic!("boom");
            }
        })
        .expect("valid");
    let _fails = scoped
        .on("work", |_| async { Err::<(), _>("no luck") })
        .expect("valid");
    let (_good, good) = recorder(&bus, "work");
    for _ in 0..3 {
        bus.emit("work", ()).await;
    }
    // The healthy handler saw every event; the failing ones kept receiving theirs.
    assert_eq!(settle(&good, 3).await.len(), 3);
    let errors = settle_errors(&errors, 6).await;
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(errors
        .iter()
        .all(|e| e.plugin.as_deref() == Some("flaky-plugin")));
    assert!(errors.iter().all(|e| e.topic.as_deref() == Some("work")));
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.message == "handler panicked: boom")
            .count(),
        3
    );
    assert_eq!(errors.iter().filter(|e| e.message == "no luck").count(), 3);
}

/// Options of a queued subscription with a queue of `capacity` and `overflow`.
fn bounded(capacity: usize, overflow: Overflow) -> SubscribeOptions {
    SubscribeOptions {
        capacity,
        overflow,
        ..SubscribeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_with_wait_applies_back_pressure_and_loses_nothing() {
    let bus = EventBus::new();
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (g, h) = (gate.clone(), handled.clone());
    let options = bounded(2, Overflow::Wait);
    let _sub = bus
        .on_with("slow", options, move |_| {
            let (g, h) = (g.clone(), h.clone());
            async move {
                g.acquire().await.expect("open").forget();
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("valid");
    // One event in the handler, two in the queue: the fourth emit must wait.
    for _ in 0..3 {
        bus.emit("slow", ()).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let blocked = tokio::time::timeout(Duration::from_millis(100), bus.emit("slow", ())).await;
    assert!(blocked.is_err(), "emit should wait for room in the queue");
    gate.add_permits(10);
    let bus2 = bus.clone();
    let publisher = tokio::spawn(async move {
        for _ in 0..6 {
            bus2.emit("slow", ()).await;
        }
    });
    gate.add_permits(100);
    publisher.await.expect("publisher");
    for _ in 0..200 {
        if handled.load(Ordering::SeqCst) == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 3 + 6 accepted; the timed-out emit was cancelled before it was accepted.
    assert_eq!(handled.load(Ordering::SeqCst), 9);
}

/// An `emit` that finds a full queue waits there, then hands the event to the
/// subscriptions after it, in order: an inline one is not called before the waiting
/// one got the event, a `once` one that fired before is skipped, taps see the event
/// once, the count covers every subscription that got it, and an emit given up while
/// it waits reaches none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_waiting_for_room_still_reaches_the_subscriptions_after_the_full_queue() {
    let bus = EventBus::new();
    let tapped = Arc::new(AtomicUsize::new(0));
    let t = tapped.clone();
    bus.tap(move |_| {
        t.fetch_add(1, Ordering::SeqCst);
    });
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    let _slow = bus
        .on_with("work.slow", bounded(1, Overflow::Wait), move |_| {
            let (g, e) = (g.clone(), e.clone());
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.expect("open").forget();
            }
        })
        .expect("valid");
    let inline = Arc::new(AtomicUsize::new(0));
    let i = inline.clone();
    let inline_options = SubscribeOptions {
        delivery: Delivery::Inline,
        ..SubscribeOptions::default()
    };
    let _inline = bus
        .on_with("work.slow", inline_options, move |_| {
            i.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        })
        .expect("valid");
    let once_options = SubscribeOptions {
        once: true,
        ..SubscribeOptions::default()
    };
    let (once_tx, mut once_rx) = mpsc::unbounded_channel();
    let _once = bus
        .on_with("work.*", once_options, move |_| {
            once_tx.send(()).ok();
            std::future::ready(())
        })
        .expect("valid");

    // The first event in the slow handler, the second in its queue (of one).
    assert_eq!(bus.emit("work.slow", 1u32).await, 3);
    for _ in 0..400 {
        if entered.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), 1, "the slow handler runs");
    assert_eq!(bus.emit("work.slow", 2u32).await, 2, "`once` fired already");
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.emit("work.slow", 3u32).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the third emit waits for room");
    assert_eq!(
        inline.load(Ordering::SeqCst),
        2,
        "not before the full queue"
    );
    assert_eq!(tapped.load(Ordering::SeqCst), 3, "taps see it at once");
    // An emit given up while it waits reaches neither the full queue nor what follows.
    let given_up =
        tokio::time::timeout(Duration::from_millis(50), bus.emit("work.slow", 4u32)).await;
    assert!(given_up.is_err(), "the fourth emit waits too");

    gate.add_permits(100);
    let handed = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room is made")
        .expect("publisher");
    assert_eq!(handed, 2, "the slow and the inline subscription");
    assert_eq!(inline.load(Ordering::SeqCst), 3, "not the given-up event");
    assert_eq!(tapped.load(Ordering::SeqCst), 4, "taps saw each event once");
    for _ in 0..400 {
        if entered.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        entered.load(Ordering::SeqCst),
        3,
        "the slow one got 1, 2 and 3"
    );
    assert_eq!(once_rx.recv().await, Some(()));
    assert!(once_rx.try_recv().is_err(), "`once` got one event");
}

/// A queued subscription that is removed handles what was queued before, takes
/// nothing after, and its worker ends; a publisher waiting for room in its full queue
/// is let go (the event is not delivered) instead of waiting for a subscriber that is
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_queued_subscription_drains_what_it_took_and_lets_waiting_publishers_go() {
    let bus = EventBus::new();
    let scoped = bus.scoped("leaving-plugin");
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (g, h) = (gate.clone(), handled.clone());
    let options = bounded(2, Overflow::Wait);
    scoped
        .on_with("slow", options, move |_| {
            let (g, h) = (g.clone(), h.clone());
            async move {
                g.acquire().await.expect("open").forget();
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("valid")
        .detach();
    // One event in the handler, two in the queue; the fourth publisher waits.
    for _ in 0..3 {
        assert_eq!(bus.emit("slow", ()).await, 1);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let waiting = tokio::spawn({
        let (bus, started) = (bus.clone(), started.clone());
        async move {
            started.notify_one();
            bus.emit("slow", ()).await
        }
    });
    // The publisher runs, then has time to reach the full queue.
    started.notified().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "the fourth emit waits for room");

    let workers = bus.remove_owner("leaving-plugin");
    assert_eq!(workers.len(), 1, "the subscription's worker");
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting publisher is let go")
        .expect("publisher");
    assert_eq!(waited, 0, "not delivered to a removed subscription");
    assert_eq!(bus.emit("slow", ()).await, 0);

    gate.add_permits(100);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("the worker ends once its queue is drained")
            .expect("worker");
    }
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "what was queued is handled"
    );
}

/// The same with a synchronous handler, which the removal does not interrupt: the
/// waiting publisher is let go once the running handler returns, before the queued
/// events are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waiting_on_a_removed_synchronous_subscription_is_let_go_after_its_handler() {
    let bus = EventBus::new();
    // Each handler call blocks its worker thread until the test sends a token (or 10 s
    // pass, so that a failing test cannot leave it blocked for good).
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let options = bounded(2, Overflow::Wait);
    let sub = bus
        .on_with("slow", options, move |_| {
            let gate = gate.lock().expect("gate");
            gate.recv_timeout(Duration::from_secs(10)).ok();
            h.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        })
        .expect("valid");
    for _ in 0..3 {
        assert_eq!(bus.emit("slow", ()).await, 1);
    }
    // On a thread of its own: a task woken by the worker would wait in that worker
    // thread's own run slot, which the next (blocking) handler call holds.
    let waiting = std::thread::spawn({
        let (bus, runtime) = (bus.clone(), tokio::runtime::Handle::current());
        move || runtime.block_on(bus.emit("slow", ()))
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the fourth emit waits for room");
    drop(sub);
    // Lets the running handler return; the worker then sees the removal first.
    go.send(()).expect("the gate is open");
    for _ in 0..1000 {
        if waiting.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(waiting.is_finished(), "the waiting publisher is let go");
    let waited = waiting.join().expect("publisher");
    assert_eq!(waited, 0, "not delivered to a removed subscription");
    // The two queued events are still handled.
    for _ in 0..2 {
        go.send(()).expect("the gate is open");
    }
    for _ in 0..200 {
        if handled.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3);
}

/// A queued `once` subscription's worker ends after its one event, while its
/// `Subscription` is still held.
#[tokio::test]
async fn a_queued_once_subscription_s_worker_ends_after_its_event() {
    let bus = EventBus::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .once("t", move |_| {
            tx.send(()).ok();
            std::future::ready(())
        })
        .expect("valid");
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    assert_eq!(tasks(), 0);
    assert_eq!(bus.emit("t", ()).await, 1);
    assert_eq!(bus.emit("t", ()).await, 0);
    rx.recv().await.expect("handled once");
    for _ in 0..200 {
        if tasks() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(tasks(), 0, "the worker ended");
    assert!(!sub.is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_with_drop_newest_counts_its_drops() {
    let bus = EventBus::new();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let options = bounded(1, Overflow::DropNewest);
    let sub = bus
        .on_with("burst", options, move |_| {
            let g = g.clone();
            async move {
                g.acquire().await.expect("open").forget();
            }
        })
        .expect("valid");
    let mut accepted = 0;
    for _ in 0..10 {
        accepted += bus.emit("burst", ()).await;
        tokio::task::yield_now().await;
    }
    assert!(accepted < 10);
    assert_eq!(sub.dropped() as usize, 10 - accepted);
    // try_emit never waits, whatever the policy.
    let (_w, _) = recorder(&bus, "other");
    assert_eq!(bus.try_emit("other", ()), 1);
    gate.add_permits(100);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserCreated {
    id: u64,
    email: String,
}

impl TypedEvent for UserCreated {
    const TOPIC: &'static str = "user.created";
}

#[tokio::test]
async fn typed_events_name_their_topic_and_decode_json_payloads() {
    let bus = EventBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = bus
        .subscribe::<UserCreated, _, _>(move |user| {
            let tx = tx.clone();
            async move {
                tx.send((*user).clone()).ok();
            }
        })
        .expect("valid");
    bus.publish(UserCreated {
        id: 1,
        email: "a@example.com".into(),
    })
    .await;
    // What a bridge from another process delivers: JSON.
    bus.emit(
        "user.created",
        serde_json::json!({"id": 2, "email": "b@example.com"}),
    )
    .await;
    assert_eq!(rx.recv().await.map(|u| u.id), Some(1));
    assert_eq!(rx.recv().await.map(|u| u.id), Some(2));
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_is_a_handler_error_naming_both_types() {
    let bus = EventBus::new();
    let _sub = bus
        .subscribe::<UserCreated, _, _>(|_| async {})
        .expect("valid");
    let report = bus.emit_and_wait("user.created", 42_u8).await;
    assert_eq!(report.failures.len(), 1);
    let message = &report.failures[0].message;
    assert!(message.contains("carries a `u8` payload"), "{message}");
    assert!(message.contains("UserCreated"), "{message}");
}

#[test]
fn invalid_patterns_are_errors_not_panics() {
    let bus = EventBus::new();
    for pattern in ["", "a..b", "a.**.b", "a.b*"] {
        let err = bus.on(pattern, |_| async {}).expect_err("invalid");
        assert!(err
            .to_string()
            .starts_with(&format!("invalid topic pattern `{pattern}`")));
    }
}

#[tokio::test]
async fn a_scoped_bus_marks_the_source_of_its_events() {
    let bus = EventBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = bus
        .on("hello", move |event: Event| {
            let tx = tx.clone();
            async move {
                tx.send(event.source().map(str::to_owned)).ok();
            }
        })
        .expect("valid");
    bus.scoped("greeter").emit("hello", ()).await;
    bus.emit("hello", ()).await;
    bus.scoped_static("static-greeter").emit("hello", ()).await;
    assert_eq!(rx.recv().await, Some(Some("greeter".to_owned())));
    assert_eq!(rx.recv().await, Some(None));
    assert_eq!(rx.recv().await, Some(Some("static-greeter".to_owned())));

    // A bus scoped with a static name owns its subscriptions like any scoped bus.
    let scoped = bus.scoped_static("static-greeter");
    scoped
        .on("bye", |_e: Event| async {})
        .expect("valid")
        .detach();
    assert_eq!(
        bus.subscriptions()
            .iter()
            .filter(|s| s.owner.as_deref() == Some("static-greeter"))
            .count(),
        1
    );
    for worker in bus.remove_owner("static-greeter") {
        worker.await.expect("the worker ends");
    }
    assert_eq!(bus.emit_and_wait("bye", ()).await.handled, 0);
}

#[tokio::test]
async fn inline_handlers_run_exact_first_then_wildcards_in_subscription_order() {
    let bus = EventBus::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut subs = Vec::new();
    // Wildcards by first segment and leading wildcards, interleaved, around an exact one.
    for (label, pattern) in [
        ("any-1", "*.paid"),
        ("first-1", "order.*"),
        ("exact", "order.paid"),
        ("any-2", "**"),
        ("other", "user.*"),
        ("first-2", "order.**"),
        ("sync", "order.paid"),
    ] {
        let order = order.clone();
        let sub = if label == "sync" {
            // A synchronous body (std::future::Ready) takes the unboxed path.
            bus.on(pattern, move |_event: Event| {
                order.lock().expect("lock").push(label);
                std::future::ready(())
            })
        } else {
            bus.on(pattern, move |_event: Event| {
                let order = order.clone();
                async move { order.lock().expect("lock").push(label) }
            })
        };
        subs.push(sub.expect("subscribed"));
    }
    let report = bus.emit_and_wait("order.paid", 1u32).await;
    assert_eq!(report.handled, 6);
    assert_eq!(
        *order.lock().expect("lock"),
        ["exact", "sync", "any-1", "first-1", "any-2", "first-2"]
    );
}

#[tokio::test]
async fn has_subscribers_follows_subscriptions_taps_and_owners() {
    let bus = EventBus::new();
    assert!(!bus.has_subscribers("order.paid"));
    let sub = bus.on("order.*", |_e: Event| async {}).expect("subscribed");
    assert!(bus.has_subscribers("order.paid"));
    assert!(!bus.has_subscribers("order.paid.late"));
    assert!(!bus.has_subscribers("user.created"));
    drop(sub);
    assert!(!bus.has_subscribers("order.paid"));
    bus.scoped("shop-plugin")
        .on("user.created", |_e: Event| async {})
        .expect("subscribed")
        .detach();
    assert!(bus.has_subscribers("user.created"));
    assert!(bus.remove_owner("shop-plugin").is_empty());
    assert!(!bus.has_subscribers("user.created"));
    bus.tap(|_| {});
    assert!(bus.has_subscribers("anything"), "a tap sees every event");
}

const INLINE: SubscribeOptions = SubscribeOptions {
    capacity: 1,
    overflow: Overflow::Wait,
    once: false,
    delivery: Delivery::Inline,
};

/// An inline subscription recording topics (and panicking on `boom`).
fn inline_recorder(bus: &EventBus, pattern: &str) -> (ixp_core::Subscription, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let sub = bus
        .on_with(pattern, INLINE, move |event: Event| {
            assert!(event.topic() != "boom", "boom");
            sink.lock().expect("lock").push(event.topic().to_owned());
            std::future::ready(())
        })
        .expect("valid pattern");
    (sub, seen)
}

#[tokio::test]
async fn an_inline_subscription_is_called_before_emit_returns() {
    let bus = EventBus::new();
    let (sub, seen) = inline_recorder(&bus, "order.*");
    let (_queued, queued) = recorder(&bus, "order.*");
    assert_eq!(bus.emit("order.paid", 1).await, 2);
    assert_eq!(bus.try_emit("order.sent", 2), 2);
    bus.emit_event(Event::new("order.late", 3)).await;
    assert_eq!(bus.emit("user.created", 4).await, 0);
    // No waiting: the inline handler already ran, in order.
    assert_eq!(
        *seen.lock().expect("lock"),
        ["order.paid", "order.sent", "order.late"]
    );
    assert_eq!(settle(&queued, 3).await.len(), 3);
    drop(sub);
    assert_eq!(bus.emit("order.paid", 5).await, 1);
    assert_eq!(
        seen.lock().expect("lock").len(),
        3,
        "not called once removed"
    );
}

#[tokio::test]
async fn an_inline_once_subscription_sees_one_event() {
    let bus = EventBus::new();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let sub = bus
        .on_with(
            "tick",
            SubscribeOptions {
                once: true,
                ..INLINE
            },
            move |event: Event| {
                sink.lock().expect("lock").push(event.topic().to_owned());
                std::future::ready(())
            },
        )
        .expect("valid");
    assert_eq!(bus.emit("tick", ()).await, 1);
    assert_eq!(bus.emit("tick", ()).await, 0);
    assert_eq!(seen.lock().expect("lock").len(), 1);
    assert!(!sub.is_active());
}

#[tokio::test]
async fn an_inline_subscription_needs_a_synchronous_handler() {
    let bus = EventBus::new();
    let refused = bus
        .on_with("order.*", INLINE, |_e: Event| async {})
        .expect_err("an async handler cannot run inline");
    assert!(
        matches!(&refused, EventError::InlineHandlerNotReady { pattern } if pattern == "order.*")
    );
    assert!(refused.to_string().contains("`order.*`"), "{refused}");
    assert!(!bus.has_subscribers("order.paid"));
}

#[tokio::test]
async fn a_panicking_inline_handler_is_reported_and_keeps_receiving() {
    let bus = EventBus::new();
    let (_errors, errors) = error_recorder(&bus);
    let (_sub, seen) = inline_recorder(&bus.scoped("inline-plugin"), "*");
    assert_eq!(bus.emit("boom", ()).await, 1);
    assert_eq!(bus.emit("calm", ()).await, 1);
    assert_eq!(*seen.lock().expect("lock"), ["calm"]);
    let errors = settle_errors(&errors, 1).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].plugin.as_deref(), Some("inline-plugin"));
    assert_eq!(errors[0].topic.as_deref(), Some("boom"));
    assert_eq!(errors[0].message, "handler panicked: boom");
}

#[tokio::test]
async fn a_panic_while_making_the_handler_future_is_caught_too() {
    let bus = EventBus::new();
    let _sub = bus
        .on("boom", |_e: Event| -> std::future::Ready<()> {
            panic!("sync body")
        })
        .expect("subscribed");
    let _late = bus
        .on(
            "boom",
            |_e: Event| -> futures::future::BoxFuture<'static, ()> { panic!("before the future") },
        )
        .expect("subscribed");
    let report = bus.emit_and_wait("boom", ()).await;
    assert_eq!(report.handled, 2);
    let messages: Vec<&str> = report.failures.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "handler panicked: sync body",
            "handler panicked: before the future"
        ]
    );
}

#[tokio::test]
async fn thousands_of_subscriptions_come_and_go_and_a_once_subscription_ends_inactive() {
    let bus = EventBus::new();
    let scoped = bus.scoped("many-plugin");
    let subs: Vec<_> = (0..5000)
        .map(|i| {
            scoped
                .on(&format!("topic.{i}"), |_e: Event| async {})
                .expect("subscribed")
        })
        .collect();
    assert_eq!(bus.emit_and_wait("topic.4999", ()).await.handled, 1);
    drop(subs);
    assert_eq!(bus.emit_and_wait("topic.4999", ()).await.handled, 0);
    assert!(bus.subscriptions().is_empty());

    let once = bus.once("tick", |_e: Event| async {}).expect("subscribed");
    assert!(once.is_active());
    assert_eq!(bus.emit_and_wait("tick", ()).await.handled, 1);
    assert!(!once.is_active());
    assert_eq!(bus.emit_and_wait("tick", ()).await.handled, 0);
}

/// A handler that holds `marker` (as a plugin's handler holds its state).
fn holding(marker: Arc<()>) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    move |_e: Event| {
        let _held = &marker;
        std::future::ready(())
    }
}

#[tokio::test]
async fn an_unsubscribed_handler_and_what_it_holds_are_dropped_once_the_bus_is_used_again() {
    let bus = EventBus::new();
    let scoped = bus.scoped("leaving-plugin");
    let inline = SubscribeOptions {
        delivery: Delivery::Inline,
        ..SubscribeOptions::default()
    };
    let (exact, wild, owned) = (Arc::new(()), Arc::new(()), Arc::new(()));
    let weak = [&exact, &wild, &owned].map(Arc::downgrade);
    let exact_sub = bus
        .on_with("order.paid", inline, holding(exact))
        .expect("subscribed");
    let wild_sub = bus.on("order.*", holding(wild)).expect("subscribed");
    let owned_sub = scoped.on("order.paid", holding(owned)).expect("subscribed");
    owned_sub.detach();
    assert_eq!(bus.emit_and_wait("order.paid", ()).await.handled, 3);
    assert_eq!(bus.emit("order.paid", ()).await, 3);

    drop(exact_sub);
    wild_sub.cancel();
    for worker in bus.remove_owner("leaving-plugin") {
        worker.await.expect("the worker ends");
    }
    // The next publish reads the routes without them; the queued ones' workers end
    // once their queues are drained.
    assert_eq!(bus.emit_and_wait("order.paid", ()).await.handled, 0);
    for (name, weak) in ["exact", "wildcard", "owner's"].iter().zip(&weak) {
        let mut waited = Duration::ZERO;
        while weak.strong_count() > 0 && waited < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        assert_eq!(weak.strong_count(), 0, "the {name} handler is still alive");
    }
}

#[test]
fn a_handler_holding_a_subscription_of_its_own_bus_is_dropped_without_a_deadlock() {
    // The last handle on `outer`'s handler is the bus's old routing table, dropped when
    // the next publish rebuilds it; the handler holds `inner`, whose drop unsubscribes
    // from the same bus. Run on its own thread: a deadlock fails the test, not hangs it.
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let bus = EventBus::new();
            let inner = bus
                .on("inner.topic", |_e: Event| async {})
                .expect("subscribed");
            let outer = bus
                .on("outer.topic", move |_e: Event| {
                    let _held = &inner;
                    std::future::ready(())
                })
                .expect("subscribed");
            assert_eq!(bus.emit_and_wait("outer.topic", ()).await.handled, 1);
            drop(outer);
            assert_eq!(bus.emit_and_wait("outer.topic", ()).await.handled, 0);
            assert_eq!(bus.emit_and_wait("inner.topic", ()).await.handled, 0);
            assert!(bus.subscriptions().is_empty());
        });
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => worker.join().expect("the test thread"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("dropping a handler that holds a subscription deadlocked the bus")
        }
    }
}

#[tokio::test]
async fn a_published_event_carries_its_topic_and_source_to_exact_and_wildcard_subscribers() {
    let bus = EventBus::new();
    let seen: Seen = Arc::default();
    let mut subs = Vec::new();
    for (pattern, delivery) in [
        ("user.created", Delivery::Inline),
        ("user.*", Delivery::Inline),
        ("user.created", Delivery::Queued),
    ] {
        let sink = seen.clone();
        let options = SubscribeOptions {
            delivery,
            ..SubscribeOptions::default()
        };
        let sub = bus
            .on_with(pattern, options, move |event: Event| {
                let source = event.source().unwrap_or("-");
                let seen = format!("{pattern} {} {source} {event:?}", event.topic());
                sink.lock().expect("lock").push(seen);
                std::future::ready(())
            })
            .expect("valid pattern");
        subs.push(sub);
    }
    let user = UserCreated {
        id: 7,
        email: "c@example.com".into(),
    };
    assert_eq!(bus.scoped_static("users-plugin").publish(user).await, 3);
    let mut seen = settle(&seen, 3).await;
    seen.sort();
    let debug = format!(
        r#"Event {{ topic: "user.created", payload_type: "{}", source: Some("users-plugin") }}"#,
        std::any::type_name::<UserCreated>()
    );
    assert_eq!(
        seen,
        [
            format!("user.* user.created users-plugin {debug}"),
            format!("user.created user.created users-plugin {debug}"),
            format!("user.created user.created users-plugin {debug}"),
        ]
    );
}

#[tokio::test]
async fn a_publisher_follows_every_change_of_the_bus_s_subscriptions() {
    let bus = EventBus::new();
    let mut paid = bus.scoped_static("shop-plugin").publisher("order.paid");
    assert_eq!(paid.topic(), "order.paid");
    assert!(!paid.has_subscribers());
    assert_eq!(paid.emit_and_wait(0u32).await.handled, 0);

    // Subscriptions made after its first event: exact, wildcard, queued.
    let (exact, exact_seen) = inline_recorder(&bus, "order.paid");
    let (_wild, wild_seen) = inline_recorder(&bus, "order.*");
    let (_other, other_seen) = inline_recorder(&bus, "order.sent");
    let sources: Seen = Arc::default();
    let sink = sources.clone();
    let _queued = bus
        .on("order.paid", move |event: Event| {
            let source = event.source().unwrap_or("-").to_owned();
            sink.lock().expect("lock").push(source);
            std::future::ready(())
        })
        .expect("subscribed");
    assert!(paid.has_subscribers());
    assert_eq!(paid.emit(1u32).await, 3);
    assert_eq!(paid.try_emit(2u32), 3);
    assert_eq!(paid.emit_and_wait(3u32).await.handled, 3);
    assert_eq!(settle(&sources, 3).await, ["shop-plugin"; 3]);

    // Removed: not called by the next event.
    drop(exact);
    assert_eq!(paid.emit_and_wait(4u32).await.handled, 2);
    assert_eq!(exact_seen.lock().expect("lock").len(), 3);
    assert_eq!(wild_seen.lock().expect("lock").len(), 4);
    assert!(other_seen.lock().expect("lock").is_empty());

    // A `once` subscription, a failing handler and a tap, through a clone in a task.
    let _once = bus
        .once("order.paid", |_e: Event| std::future::ready(()))
        .expect("subscribed");
    let _failing = bus
        .on("order.paid", |_e: Event| async { Err::<(), _>("declined") })
        .expect("subscribed");
    let tapped = Arc::new(AtomicUsize::new(0));
    let count = tapped.clone();
    bus.tap(move |event| {
        if event.topic() == "order.paid" {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut clone = paid.clone();
    let reports = tokio::spawn(async move {
        [
            clone.emit_and_wait(5u32).await,
            clone.emit_and_wait(6u32).await,
        ]
    })
    .await
    .expect("the task");
    // wildcard + queued + once + failing, then the same without the once.
    assert_eq!(reports.each_ref().map(|r| r.handled), [4, 3]);
    for report in &reports {
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].pattern, "order.paid");
        assert_eq!(report.failures[0].message, "declined");
    }
    assert_eq!(tapped.load(Ordering::Relaxed), 2);
    assert_eq!(
        paid.emit_and_wait(7u32).await.handled,
        3,
        "its own routes too"
    );
    assert!(format!("{paid:?}").contains("order.paid"));
}

#[tokio::test]
async fn a_publisher_lets_go_of_an_unsubscribed_handler_when_it_next_publishes_or_is_dropped() {
    let bus = EventBus::new();
    let marker = Arc::new(());
    let weak = Arc::downgrade(&marker);
    let sub = bus.on("order.paid", holding(marker)).expect("subscribed");
    let mut first = bus.publisher("order.paid");
    let mut second = bus.publisher("order.paid");
    assert_eq!(first.emit_and_wait(()).await.handled, 1);
    assert_eq!(second.emit_and_wait(()).await.handled, 1);

    drop(sub);
    // The bus used again: its routes no longer hold the handler, both publishers do.
    assert_eq!(bus.emit_and_wait("order.paid", ()).await.handled, 0);
    assert_eq!(weak.strong_count(), 1, "held by the publishers' routes");
    assert_eq!(first.emit_and_wait(()).await.handled, 0);
    assert_eq!(weak.strong_count(), 1, "still held by the second publisher");
    drop(second);
    assert_eq!(
        weak.strong_count(),
        0,
        "dropped with the last publisher holding it"
    );
}

#[tokio::test]
async fn a_publisher_stops_reaching_a_plugin_s_subscriptions_once_the_plugin_is_removed() {
    let bus = EventBus::new();
    bus.scoped("shop-plugin")
        .on("order.paid", |_e: Event| std::future::ready(()))
        .expect("subscribed")
        .detach();
    let mut paid = bus.publisher("order.paid");
    assert_eq!(paid.emit_and_wait(1u32).await.handled, 1);
    assert!(paid.has_subscribers());
    assert!(
        bus.remove_owner("shop-plugin").is_empty(),
        "no queued worker"
    );
    assert!(!paid.has_subscribers());
    assert_eq!(paid.emit_and_wait(2u32).await.handled, 0);
}

#[tokio::test]
async fn long_and_non_ascii_topics_are_routed_exactly() {
    // 24 bytes and more: the routing table keeps only a topic's first 24 bytes in place.
    let long = "analytics.request.completed.for.tenant";
    let same_start = "analytics.request.completed.for.other";
    let non_ascii = "bestellung.größe.geändert";
    let bus = EventBus::new();
    let (first, _) = inline_recorder(&bus, long);
    let (second, _) = inline_recorder(&bus, long);
    let (_other, _) = inline_recorder(&bus, same_start);
    let (_umlaut, _) = inline_recorder(&bus, non_ascii);
    let handled = |topic: &'static str| {
        let bus = bus.clone();
        async move { bus.emit_and_wait(topic, ()).await.handled }
    };
    assert_eq!(handled(long).await, 2);
    assert_eq!(handled(same_start).await, 1);
    assert_eq!(handled(non_ascii).await, 1);
    assert_eq!(
        handled(&long[..24]).await,
        0,
        "the first 24 bytes are no topic"
    );
    assert_eq!(handled("analytics.request.completed.for.tenanT").await, 0);
    assert_eq!(handled("bestellung.größe.geändert.").await, 0);
    drop(first);
    assert_eq!(handled(long).await, 1);
    drop(second);
    assert_eq!(handled(long).await, 0);
    assert_eq!(
        handled(same_start).await,
        1,
        "its neighbour's removal left it"
    );
    assert_eq!(bus.subscriptions().len(), 2);
}
