//! The driver of `scripts/bench-routing-cachegrind.sh`: one synchronous subscription on
//! each of TOPICS topics, then EVENTS events published in the `events/routing` bench's
//! order (a stride through the topics), by `emit_and_wait`, through a `Publisher` per
//! topic (`publisher`), by `emit` to subscriptions made with `Delivery::Inline`
//! (`emit_inline`: the fire-and-forget path, handlers called by `emit` itself), by
//! `emit` to queued subscriptions (`emit_queued`: each event sent to the subscription's
//! queue and handled by its worker task; the publisher waits when a queue is full), or with
//! no bus (`direct`: the event built and the topic's handler called directly, the
//! baseline `direct_call_new_event`). Run under cachegrind at two event counts, the difference
//! gives instructions and simulated cache misses per event: figures that do not depend
//! on what the machine's neighbours do.
//!
//! ```sh
//! cargo run --release -p ixp-core --example routing_cost -- 10000 100000 publisher
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ixp_core::events::{Delivery, Event, EventBus, SubscribeOptions};

/// Handler calls, printed at the end (so that nothing is optimised away).
static CALLS: AtomicU64 = AtomicU64::new(0);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: routing_cost TOPICS EVENTS [emit_and_wait|publisher|emit_inline|emit_queued|direct]";
    let mut args = std::env::args().skip(1);
    let (Some(topics), Some(events)) = (args.next(), args.next()) else {
        return Err(usage.into());
    };
    let (topics, events): (usize, u64) = (topics.parse()?, events.parse()?);
    let path = match args.next().as_deref() {
        None | Some("emit_and_wait") => Path::EmitAndWait,
        Some("publisher") => Path::Publisher,
        Some("emit_inline") => Path::EmitInline,
        Some("emit_queued") => Path::EmitQueued,
        Some("direct") => Path::Direct,
        Some(_) => return Err(usage.into()),
    };
    if topics == 0 {
        return Err("TOPICS must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let bus = EventBus::new();
        let names: Vec<String> = (0..topics).map(|i| format!("topic{i}.event")).collect();
        let order = |i: u64| (i as usize).wrapping_mul(7919) % topics;
        if path == Path::Direct {
            let names: Vec<Arc<str>> = names.iter().map(|name| name.as_str().into()).collect();
            let handlers: Vec<Box<dyn Fn(Event) -> std::future::Ready<()>>> =
                (0..topics).map(|_| Box::new(handler()) as Box<_>).collect();
            for i in 0..events {
                let k = order(i);
                handlers[k](Event::new(names[k].clone(), i)).await;
            }
            return Ok(());
        }
        let delivery = match path {
            Path::EmitInline => Delivery::Inline,
            _ => Delivery::Queued,
        };
        let options = SubscribeOptions {
            delivery,
            ..SubscribeOptions::default()
        };
        let _subscriptions = names
            .iter()
            .map(|topic| bus.on_with(topic, options, handler()))
            .collect::<Result<Vec<_>, _>>()?;
        if path == Path::Publisher {
            // Each looks its routes up on its first event (in both runs of the script, which
            // cancel out).
            let mut publishers: Vec<_> = names.iter().map(|t| bus.publisher(t.as_str())).collect();
            for i in 0..events {
                publishers[order(i)].emit_and_wait(i).await;
            }
        } else if matches!(path, Path::EmitInline | Path::EmitQueued) {
            for i in 0..events {
                bus.emit(&names[order(i)], i).await;
            }
        } else {
            for i in 0..events {
                bus.emit_and_wait(&names[order(i)], i).await;
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!("{}", CALLS.load(Ordering::Relaxed));
    Ok(())
}

/// How events are published.
#[derive(PartialEq)]
enum Path {
    EmitAndWait,
    Publisher,
    EmitInline,
    EmitQueued,
    Direct,
}

/// A topic's handler, as in the `events/routing` bench: it holds a reference to the
/// counter, so that each boxed baseline handler is an allocation of its own.
fn handler() -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let calls: &'static AtomicU64 = &CALLS;
    move |event: Event| {
        std::hint::black_box(event.payload::<u64>());
        calls.fetch_add(1, Ordering::Relaxed);
        std::future::ready(())
    }
}
