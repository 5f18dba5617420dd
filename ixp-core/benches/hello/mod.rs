//! `bare_axum`'s `/hello` route, a plugin that mounts it, and request-event subscribers
//! like analytics-plugin's: shared by the `http` bench and the `http_cost` example
//! (which includes this file by path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::{get, MethodRouter};
use ixp_core::events::{Delivery, Event, EventError, SubscribeOptions, Subscription};
use ixp_core::http::{RequestCompleted, RequestStarted};
use ixp_core::{ixp_plugin, BoxError, EventBus, NoConfig, Plugin, PluginContext, TypedEvent};

/// `bare_axum`'s `/hello`: a counter and the greeting.
pub fn hello() -> MethodRouter {
    let greeting: Arc<str> = "Hello from ixp".into();
    let served = Arc::new(AtomicU64::new(0));
    get(move || {
        served.fetch_add(1, Ordering::Relaxed);
        let greeting = greeting.clone();
        async move { greeting.to_string() }
    })
}

/// Mounts [`hello`] on `/hello`.
#[ixp_plugin(name = "hello-bench-plugin", version = "1.0.0")]
pub struct HelloBench;

impl Plugin for HelloBench {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(HelloBench)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.http().route("/hello", hello())?;
        Ok(())
    }
}

/// Inline subscribers on `request.started` and `request.completed` that only read the
/// topic (as analytics-plugin subscribes, without its work); they hold while the
/// subscriptions are kept.
pub fn subscribe_request_events(events: &EventBus) -> Result<[Subscription; 2], EventError> {
    let inline = SubscribeOptions {
        delivery: Delivery::Inline,
        ..SubscribeOptions::default()
    };
    let count = |event: Event| {
        std::hint::black_box(event.topic().len());
        std::future::ready(())
    };
    Ok([
        events.on_with(RequestStarted::TOPIC, inline, count)?,
        events.on_with(RequestCompleted::TOPIC, inline, count)?,
    ])
}
