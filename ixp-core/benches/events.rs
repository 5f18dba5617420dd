//! Event bus throughput: deliveries per second (criterion `Throughput::Elements` counts
//! one element per handler call), each scenario in its own group with its same-run
//! baselines: calling the handler directly (the limit) and a `tokio::sync::broadcast`
//! fan-out to the same number of receiver tasks.
//!
//! Paths measured:
//! * `direct_call`: the handler closure called and awaited in the bench task, on an
//!   event built once (the limit: no routing, no allocation).
//! * `direct_call_new_event`: the same with an event built per call (one allocation
//!   for the payload, as on every publish of a new value).
//! * `emit_and_wait`: the bus's inline path (handlers run in the caller's task).
//! * `publisher_emit_and_wait`: the same through a `Publisher` per topic, which keeps
//!   its topic's routes between events (no look-up, no guard on the routing table).
//! * `emit_inline_delivery`: `emit` to subscriptions made with `Delivery::Inline`
//!   (synchronous handlers called by `emit` itself, no queue); sync scenarios only.
//! * `emit`, `try_emit`: the queued path (one queue and one worker task per
//!   subscription); timed until every handler call has finished.
//! * `broadcast`: `tokio::sync::broadcast`, one receiver task per handler, same handler
//!   body, timed until every receiver has handled every event.
//!
//! * `events/emit_on_2_threads`: one topic published from two threads at once, by
//!   `emit_and_wait`, `emit` and `publish` (typed, static topic), against building and
//!   handling the event directly with a topic `Arc<str>` per thread or shared.
//!
//! Queued paths are driven in batches of [`BATCH`] events (below every queue's
//! capacity, so nothing waits on a full queue and broadcast receivers never lag), then
//! the bench waits until every delivery of the batch is done.
//!
//! `cargo bench -p ixp-core --bench events`; see docs/performance.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

mod support;

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::FutureExt;
use ixp_core::events::{
    Delivery, Event, EventBus, Publisher, SubscribeOptions, Subscription, TypedEvent,
};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

/// Events sent before waiting for their deliveries on the queued paths.
const BATCH: u64 = 256;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime for the benches")
}

/// A counter that lives for the whole bench run, so that handlers need no `Arc` clone.
fn counter() -> &'static AtomicU64 {
    Box::leak(Box::new(AtomicU64::new(0)))
}

/// The handler every path runs: reads the payload and counts the call.
fn sync_handler(count: &'static AtomicU64) -> impl Fn(Event) -> std::future::Ready<()> + Clone {
    move |event: Event| {
        black_box(event.payload::<u64>());
        count.fetch_add(1, Ordering::Relaxed);
        std::future::ready(())
    }
}

/// The same, but it awaits once (`yield_now`) before counting.
fn async_handler(
    count: &'static AtomicU64,
) -> impl Fn(Event) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone {
    move |event: Event| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            black_box(event.payload::<u64>());
            count.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// Waits (yielding) until `count` reaches `target`.
async fn wait_for(count: &AtomicU64, target: u64) {
    while count.load(Ordering::Acquire) < target {
        tokio::task::yield_now().await;
    }
}

/// Which handler body a scenario uses.
#[derive(Clone, Copy)]
enum Body {
    Sync,
    Async,
}

/// One scenario: subscriptions of `per_topic` handlers on each of `topics` exact topics
/// (or one wildcard pattern), events published round-robin over `emit_topics`.
struct Scenario {
    group: &'static str,
    /// Patterns subscribed to, each `per_topic` times.
    patterns: Vec<String>,
    per_topic: usize,
    /// Topics published, round-robin.
    emit_topics: Vec<String>,
    body: Body,
}

impl Scenario {
    fn deliveries_per_event(&self) -> u64 {
        // Every published topic is matched by exactly one pattern.
        self.per_topic as u64
    }

    /// A bus with the scenario's subscriptions (made on first use, so that a filtered
    /// run sets up only what it measures).
    fn setup(
        &self,
        rt: &Runtime,
        count: &'static AtomicU64,
        delivery: Delivery,
    ) -> (EventBus, Vec<Subscription>) {
        let bus = EventBus::new();
        let subs = rt.block_on(async { self.subscribe(&bus, count, delivery) });
        (bus, subs)
    }

    fn subscribe(
        &self,
        bus: &EventBus,
        count: &'static AtomicU64,
        delivery: Delivery,
    ) -> Vec<Subscription> {
        let options = SubscribeOptions {
            delivery,
            ..SubscribeOptions::default()
        };
        let mut subs = Vec::new();
        for pattern in &self.patterns {
            for _ in 0..self.per_topic {
                let sub = match self.body {
                    Body::Sync => bus.on_with(pattern, options, sync_handler(count)),
                    Body::Async => bus.on_with(pattern, options, async_handler(count)),
                };
                subs.push(sub.expect("valid pattern"));
            }
        }
        subs
    }
}

/// The `direct_call` baselines, topics round-robin: `direct_call` calls the handlers of
/// topic `k` directly with a clone of an event built once per topic (the limit: no
/// routing, no allocation); `direct_call_new_event` builds the event per call, as any
/// publisher of a new payload needs (one allocation), and hands it to the handlers (the
/// last one gets it, the others a clone, as on the bus).
fn bench_direct_calls<H, Fut>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    handlers: &[Vec<H>],
    topics: &[String],
) where
    H: Fn(Event) -> Fut,
    Fut: Future<Output = ()>,
{
    let events: &[Event] = &topics
        .iter()
        .map(|t| Event::new(t.as_str(), 7u64))
        .collect::<Vec<_>>();
    group.bench_function("direct_call", |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let start = Instant::now();
            for i in 0..iters as usize {
                let k = i % events.len();
                for handler in &handlers[k] {
                    handler(events[k].clone()).await;
                }
            }
            start.elapsed()
        })
    });
    let names: &[std::sync::Arc<str>] =
        &topics.iter().map(|t| t.as_str().into()).collect::<Vec<_>>();
    group.bench_function("direct_call_new_event", |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let start = Instant::now();
            for i in 0..iters {
                let k = i as usize % names.len();
                let event = Event::new(names[k].clone(), i);
                if let Some((last, others)) = handlers[k].split_last() {
                    for handler in others {
                        handler(event.clone()).await;
                    }
                    last(event).await;
                }
            }
            start.elapsed()
        })
    });
}

fn run_scenario(c: &mut Criterion, rt: &Runtime, scenario: &Scenario) {
    let mut group = c.benchmark_group(scenario.group);
    let per_event = scenario.deliveries_per_event();
    group.throughput(Throughput::Elements(per_event));
    let topics = &scenario.emit_topics;
    let n_topics = topics.len();

    // Baseline: the handlers called directly (one per topic, `per_topic` each).
    {
        let count = counter();
        let per_topic = scenario.per_topic;
        match scenario.body {
            Body::Sync => {
                let handlers: Vec<Vec<_>> = (0..n_topics)
                    .map(|_| (0..per_topic).map(|_| sync_handler(count)).collect())
                    .collect();
                bench_direct_calls(&mut group, rt, &handlers, topics);
            }
            Body::Async => {
                let handlers: Vec<Vec<_>> = (0..n_topics)
                    .map(|_| (0..per_topic).map(|_| async_handler(count)).collect())
                    .collect();
                bench_direct_calls(&mut group, rt, &handlers, topics);
            }
        }
    }

    // The inline paths: `emit_and_wait`, and `emit` to inline subscriptions (which
    // need synchronous handlers). Both are done when the call returns.
    for (path, delivery) in [
        ("emit_and_wait", Delivery::Queued),
        ("emit_inline_delivery", Delivery::Inline),
    ] {
        if delivery == Delivery::Inline && matches!(scenario.body, Body::Async) {
            continue;
        }
        let mut state = None;
        group.bench_function(path, |b| {
            let (bus, _subs) = state.get_or_insert_with(|| scenario.setup(rt, counter(), delivery));
            b.to_async(rt).iter_custom(|iters| {
                let bus = &*bus;
                async move {
                    let start = Instant::now();
                    for i in 0..iters {
                        let topic = &topics[i as usize % n_topics];
                        if delivery == Delivery::Inline {
                            black_box(bus.emit(topic, i).await);
                        } else {
                            black_box(bus.emit_and_wait(topic, i).await);
                        }
                    }
                    start.elapsed()
                }
            })
        });
    }

    // The inline path through a `Publisher` per topic (made, and its routes looked up,
    // before the clock starts).
    {
        let mut state = None;
        group.bench_function("publisher_emit_and_wait", |b| {
            let (bus, _subs) =
                state.get_or_insert_with(|| scenario.setup(rt, counter(), Delivery::Queued));
            b.to_async(rt).iter_custom(|iters| {
                let bus = &*bus;
                async move {
                    let mut publishers = ready_publishers(bus, topics).await;
                    let start = Instant::now();
                    for i in 0..iters {
                        let publisher = &mut publishers[i as usize % n_topics];
                        black_box(publisher.emit_and_wait(i).await);
                    }
                    start.elapsed()
                }
            })
        });
    }

    // The queued paths.
    for path in ["emit", "try_emit"] {
        let count = counter();
        let mut state = None;
        group.bench_function(path, |b| {
            let (bus, _subs) =
                state.get_or_insert_with(|| scenario.setup(rt, count, Delivery::Queued));
            b.to_async(rt).iter_custom(|iters| {
                let bus = &*bus;
                async move {
                    let start = Instant::now();
                    let mut sent = 0;
                    while sent < iters {
                        let batch = BATCH.min(iters - sent);
                        let target = count.load(Ordering::Acquire) + batch * per_event;
                        for i in sent..sent + batch {
                            let topic = &topics[i as usize % n_topics];
                            let queued = if path == "emit" {
                                bus.emit(topic, i).await
                            } else {
                                bus.try_emit(topic, i)
                            };
                            debug_assert_eq!(queued as u64, per_event);
                        }
                        wait_for(count, target).await;
                        sent += batch;
                    }
                    start.elapsed()
                }
            })
        });
    }

    // Baseline: tokio broadcast, one channel per topic, one receiver task per handler.
    {
        let count = counter();
        let body = scenario.body;
        let senders: Vec<broadcast::Sender<Event>> = rt.block_on(async {
            (0..n_topics)
                .map(|_| {
                    let (tx, _) = broadcast::channel::<Event>(1024);
                    for _ in 0..scenario.per_topic {
                        let mut rx = tx.subscribe();
                        tokio::spawn(async move {
                            let sync = sync_handler(count);
                            let asynch = async_handler(count);
                            while let Ok(event) = rx.recv().await {
                                match body {
                                    Body::Sync => sync(event).await,
                                    Body::Async => asynch(event).await,
                                }
                            }
                        });
                    }
                    tx
                })
                .collect()
        });
        group.bench_function("broadcast", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let senders = &senders;
                async move {
                    let start = Instant::now();
                    let mut sent = 0;
                    while sent < iters {
                        let batch = BATCH.min(iters - sent);
                        let target = count.load(Ordering::Acquire) + batch * per_event;
                        for i in sent..sent + batch {
                            let k = i as usize % n_topics;
                            let event = Event::new(topics[k].as_str(), i);
                            let _ = senders[k].send(event);
                        }
                        wait_for(count, target).await;
                        sent += batch;
                    }
                    start.elapsed()
                }
            })
        });
        drop(senders);
    }
    group.finish();
}

/// A publisher per topic, its routes already looked up (by one event each).
async fn ready_publishers(bus: &EventBus, topics: &[String]) -> Vec<Publisher> {
    let mut publishers = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut publisher = bus.publisher(topic.as_str());
        let report = publisher.emit_and_wait(0u64).await;
        assert!(report.handled > 0, "{topic} has subscribers");
        publishers.push(publisher);
    }
    publishers
}

/// The order topics are published in by the `routing` rows: a stride through them, so
/// that consecutive events hit unrelated topics (and unrelated memory).
fn spread(i: u64, topics: usize) -> usize {
    (i as usize).wrapping_mul(7919) % topics
}

/// A bus with one synchronous subscription on each of `topics` topics, and their names.
fn routing_bus(topics: usize) -> (EventBus, Vec<String>, Vec<Subscription>) {
    let bus = EventBus::new();
    let count = counter();
    let names: Vec<String> = (0..topics).map(|i| format!("topic{i}.event")).collect();
    let subs = names
        .iter()
        .map(|t| bus.on(t, sync_handler(count)).expect("valid topic"))
        .collect();
    (bus, names, subs)
}

/// How the inline path's cost changes with the number of topics and of (non-matching)
/// wildcard subscriptions on the bus.
///
/// Baseline per size, `direct_call_new_event/topics/N`: what publishing to N topics
/// costs with no routing at all. The publisher already holds handler `k` of topic `k`
/// (each boxed on its own) and the topic as an `Arc<str>`; per event it builds the
/// event and calls the handler, in the same order as `emit_and_wait/topics/N`. The
/// difference between the two rows at each size is what the bus adds: the look-up,
/// and the layout of its memory (the baseline's names and handlers are allocated one
/// after the other, densely; a subscription's handler sits among its other records).
fn routing(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("events/routing");
    group.throughput(Throughput::Elements(1));
    type BoxedHandler = Box<dyn Fn(Event) -> std::future::Ready<()> + Send + Sync>;
    for topics in [1usize, 100, 10_000] {
        let mut state = None;
        group.bench_with_input(
            BenchmarkId::new("direct_call_new_event/topics", topics),
            &topics,
            |b, &topics| {
                let (names, handlers) = state.get_or_insert_with(|| {
                    let count = counter();
                    let names: Vec<std::sync::Arc<str>> = (0..topics)
                        .map(|i| format!("topic{i}.event").into())
                        .collect();
                    let handlers: Vec<BoxedHandler> = (0..topics)
                        .map(|_| Box::new(sync_handler(count)) as BoxedHandler)
                        .collect();
                    (names, handlers)
                });
                b.to_async(rt).iter_custom(|iters| {
                    let names = &*names;
                    let handlers = &*handlers;
                    async move {
                        let start = Instant::now();
                        for i in 0..iters {
                            let k = spread(i, topics);
                            handlers[k](Event::new(names[k].clone(), i)).await;
                        }
                        start.elapsed()
                    }
                })
            },
        );
    }
    for topics in [1usize, 100, 10_000] {
        let mut state = None;
        group.bench_with_input(
            BenchmarkId::new("emit_and_wait/topics", topics),
            &topics,
            |b, &topics| {
                let (bus, names, _subs) = state.get_or_insert_with(|| routing_bus(topics));
                b.to_async(rt).iter_custom(|iters| {
                    let bus = &*bus;
                    let names = &*names;
                    async move {
                        let start = Instant::now();
                        for i in 0..iters {
                            let topic = &names[spread(i, topics)];
                            black_box(bus.emit_and_wait(topic, i).await);
                        }
                        start.elapsed()
                    }
                })
            },
        );
    }
    for topics in [1usize, 100, 10_000] {
        let mut state = None;
        group.bench_with_input(
            BenchmarkId::new("publisher_emit_and_wait/topics", topics),
            &topics,
            |b, &topics| {
                let (bus, names, _subs) = state.get_or_insert_with(|| routing_bus(topics));
                b.to_async(rt).iter_custom(|iters| {
                    let bus = &*bus;
                    let names = &*names;
                    async move {
                        let mut publishers = ready_publishers(bus, names).await;
                        let start = Instant::now();
                        for i in 0..iters {
                            let publisher = &mut publishers[spread(i, topics)];
                            black_box(publisher.emit_and_wait(i).await);
                        }
                        start.elapsed()
                    }
                })
            },
        );
    }
    for wildcards in [0usize, 10, 100] {
        let mut state = None;
        group.bench_with_input(
            BenchmarkId::new("emit_and_wait/non_matching_wildcards", wildcards),
            &wildcards,
            |b, &wildcards| {
                let (bus, _subs) = state.get_or_insert_with(|| {
                    let bus = EventBus::new();
                    let count = counter();
                    let mut subs =
                        vec![bus.on("user.created", sync_handler(count)).expect("topic")];
                    for i in 0..wildcards {
                        subs.push(
                            bus.on(&format!("other{i}.*"), sync_handler(count))
                                .expect("valid pattern"),
                        );
                    }
                    (bus, subs)
                });
                b.to_async(rt).iter_custom(|iters| {
                    let bus = &*bus;
                    async move {
                        let start = Instant::now();
                        for i in 0..iters {
                            black_box(bus.emit_and_wait("user.created", i).await);
                        }
                        start.elapsed()
                    }
                })
            },
        );
    }
    group.finish();
}

/// Subscribing to `n` distinct topics, then dropping every subscription (what a
/// composition of many plugins does at start and stop). Throughput: subscriptions.
fn subscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("events/subscribe_then_unsubscribe");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for n in [100usize, 1_000, 10_000] {
        let names: Vec<String> = (0..n).map(|i| format!("topic{i}.event")).collect();
        let count = counter();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let bus = EventBus::new();
                let subs: Vec<Subscription> = names
                    .iter()
                    .map(|t| bus.on(t, sync_handler(count)).expect("valid topic"))
                    .collect();
                drop(subs);
                bus
            })
        });
    }
    group.finish();
}

/// Removing the subscriptions of `n` owners one owner at a time, each with one topic of
/// its own, after an event was published (so the routes publishers read hold them):
/// what the host does when a composition of `n` subscribed plugins stops. Each removal
/// also drops the owner's handlers at once, which rebuilds the routes publishers read.
/// Throughput: owners.
fn remove_owners(c: &mut Criterion) {
    let mut group = c.benchmark_group("events/remove_owner");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let inline = SubscribeOptions {
        delivery: Delivery::Inline,
        ..SubscribeOptions::default()
    };
    for n in [100usize, 1_000, 10_000] {
        let owners: Vec<String> = (0..n).map(|i| format!("plugin-{i}")).collect();
        let count = counter();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    let bus = EventBus::new();
                    for (i, owner) in owners.iter().enumerate() {
                        bus.scoped(owner.as_str())
                            .on_with(&format!("topic{i}.event"), inline, sync_handler(count))
                            .expect("valid topic")
                            .detach();
                    }
                    assert_eq!(bus.try_emit("topic0.event", 1u64), 1);
                    bus
                },
                |bus| {
                    for owner in owners.iter().rev() {
                        black_box(bus.remove_owner(owner));
                    }
                    bus
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let rt = runtime();
    let one = |s: &str| vec![s.to_owned()];
    let hundred: Vec<String> = (0..100).map(|i| format!("topic{i}.event")).collect();
    let scenarios = [
        Scenario {
            group: "events/one_topic_one_handler",
            patterns: one("user.created"),
            per_topic: 1,
            emit_topics: one("user.created"),
            body: Body::Sync,
        },
        Scenario {
            group: "events/one_topic_ten_handlers",
            patterns: one("user.created"),
            per_topic: 10,
            emit_topics: one("user.created"),
            body: Body::Sync,
        },
        Scenario {
            group: "events/hundred_topics_round_robin",
            patterns: hundred.clone(),
            per_topic: 1,
            emit_topics: hundred,
            body: Body::Sync,
        },
        Scenario {
            group: "events/wildcard_user_star",
            patterns: one("user.*"),
            per_topic: 1,
            emit_topics: ["user.created", "user.updated", "user.deleted"]
                .map(str::to_owned)
                .to_vec(),
            body: Body::Sync,
        },
        Scenario {
            group: "events/async_handler_yield",
            patterns: one("user.created"),
            per_topic: 1,
            emit_topics: one("user.created"),
            body: Body::Async,
        },
    ];
    for scenario in &scenarios {
        run_scenario(c, &rt, scenario);
    }
    routing(c, &rt);
    on_two_threads(c);
    queued_on_two_threads(c);
    subscribe(c);
    remove_owners(c);
}

/// A typed event on the topic of [`on_two_threads`], for `publish`.
#[derive(serde::Serialize, serde::Deserialize)]
struct UserCreated(u64);

impl TypedEvent for UserCreated {
    const TOPIC: &'static str = "user.created";
}

/// One topic, one synchronous handler that writes nothing shared (subscribed with
/// `Delivery::Inline`), published from two threads at once, each `iters` times
/// (`now_or_never`: nothing on these paths waits); the time is the wall time until both
/// are done, per event of one thread. Baselines: `direct_call_new_event` with one
/// topic `Arc<str>` shared by both threads (as the bus's route key is), and with one
/// per thread (nothing shared at all). `publish` names its topic with a `&'static str`;
/// `publish_scoped/*` publish through a plugin's scoped bus, whose name is the events'
/// source: an `Arc<str>` shared by its events (`scoped`), or a `&'static str`
/// (`scoped_static`, as the host scopes plugins).
fn on_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("events/emit_on_2_threads");
    group.throughput(Throughput::Elements(2));
    let handler = |event: Event| {
        black_box(event.payload::<u64>());
        std::future::ready(())
    };
    let shared: std::sync::Arc<str> = "user.created".into();
    let bus = EventBus::new();
    let inline = SubscribeOptions {
        delivery: Delivery::Inline,
        ..SubscribeOptions::default()
    };
    let _sub = bus
        .on_with("user.created", inline, handler)
        .expect("valid topic");
    let scoped_shared = bus.scoped("users-plugin");
    let scoped_static = bus.scoped_static("users-plugin");
    type Publish<'a> = &'a (dyn Fn(&std::sync::Arc<str>, u64) + Sync);
    let paths: [(&str, Publish); 7] = [
        ("direct_call_new_event/own_topic", &|own, i| {
            black_box(handler(Event::new(own.clone(), i)).now_or_never());
        }),
        ("direct_call_new_event/shared_topic", &|_, i| {
            black_box(handler(Event::new(shared.clone(), i)).now_or_never());
        }),
        ("emit_and_wait", &|_, i| {
            let report = bus.emit_and_wait(black_box("user.created"), i);
            black_box(report.now_or_never().expect("a ready handler"));
        }),
        ("emit", &|_, i| {
            let handed = bus.emit(black_box("user.created"), i);
            black_box(handed.now_or_never().expect("an inline subscription"));
        }),
        ("publish", &|_, i| {
            let handed = bus.publish(UserCreated(i));
            black_box(handed.now_or_never().expect("an inline subscription"));
        }),
        ("publish_scoped/shared_name", &|_, i| {
            let handed = scoped_shared.publish(UserCreated(i));
            black_box(handed.now_or_never().expect("an inline subscription"));
        }),
        ("publish_scoped/static_name", &|_, i| {
            let handed = scoped_static.publish(UserCreated(i));
            black_box(handed.now_or_never().expect("an inline subscription"));
        }),
    ];
    for (name, publish) in paths {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                support::on_two_threads(|| {
                    let own: std::sync::Arc<str> = "user.created".into();
                    for i in 0..iters {
                        publish(&own, i);
                    }
                })
            })
        });
    }
    group.finish();
}

/// One topic, one queued subscription (the default delivery: its own queue and worker
/// task), published from two threads at once, each `iters` times; timed until both
/// threads are done and the worker has handled every event. Each thread drives its
/// publishes in one `block_on` (a full queue makes `emit` wait, as subscribed). The
/// worker runs on a one-thread runtime, so publishers and worker share the machine's
/// cores. Baseline `mpsc_channel`: the same two threads sending events built with a
/// topic `Arc<str>` of their own into one `tokio::sync::mpsc` channel of the same
/// capacity, drained by one task that calls the same handler (what a queued
/// subscription is at least).
fn queued_on_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("events/queued_on_2_threads");
    group.throughput(Throughput::Elements(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime for the bench");
    let count = counter();
    let capacity = SubscribeOptions::default().capacity;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(capacity);
    let handler = sync_handler(count);
    rt.spawn(async move {
        while let Some(event) = rx.recv().await {
            handler(event).await;
        }
    });
    let bus = EventBus::new();
    let _sub = rt
        .block_on(async { bus.on("user.created", sync_handler(count)) })
        .expect("valid topic");
    let tx = &tx;
    let bus = &bus;
    let rt = &rt;
    bench_queued(&mut group, rt, count, "mpsc_channel", |own, i| {
        let event = Event::new(own.clone(), i);
        async move { tx.send(event).await.expect("the consumer runs") }
    });
    bench_queued(&mut group, rt, count, "emit", |_, i| async move {
        black_box(bus.emit(black_box("user.created"), i).await);
    });
    bench_queued(&mut group, rt, count, "publish", |_, i| async move {
        black_box(bus.publish(UserCreated(i)).await);
    });
    group.finish();
}

/// One row of [`queued_on_two_threads`]: `send` is one publish, `count` what the
/// handler counts.
fn bench_queued<'a, F, Fut>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    count: &AtomicU64,
    name: &str,
    send: F,
) where
    F: Fn(&std::sync::Arc<str>, u64) -> Fut + Sync + 'a,
    Fut: Future<Output = ()> + 'a,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let target = count.load(Ordering::Acquire) + 2 * iters;
            support::on_two_threads_then(
                || {
                    let own: std::sync::Arc<str> = "user.created".into();
                    rt.block_on(async {
                        for i in 0..iters {
                            send(&own, i).await;
                        }
                    });
                },
                || {
                    while count.load(Ordering::Acquire) < target {
                        std::thread::yield_now();
                    }
                },
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = events
}
criterion_main!(benches);
