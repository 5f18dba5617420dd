//! `events-nats-plugin`: one event bus across many instances. Events whose topic matches
//! `topics` are published to NATS (`async-nats`) and re-emitted on every other instance's
//! bus; an instance never gets its own events back.
//!
//! * **Core NATS** (default): at-most-once; an instance that is away misses what was
//!   sent meanwhile.
//! * **JetStream** (`jetstream.enabled = true`): the events go into a stream (file
//!   storage); each instance reads them through its own durable consumer and
//!   acknowledges each after its local handlers ran, so delivery is at-least-once and an
//!   instance that comes back (under the same `instanceId` or `jetstream.durable`, which
//!   JetStream mode requires) gets what it missed. Every event carries an id, sent as
//!   `Nats-Msg-Id`: a publish retried after a lost acknowledgement is stored once, and
//!   an event seen twice is emitted locally once (ids remembered: the last 10,000).
//!
//! Outgoing events wait in a bounded buffer (`bufferSize`) while NATS is slow or away
//! and are published in order, retried with backoff until the server acknowledges them
//! (JetStream) or takes them (core). **Policy when the buffer is full: the new event is
//! dropped, counted (`dropped` in health, which turns degraded) and logged** (the 1st,
//! 2nd, 4th, 8th ... drop). An event NATS can never take (larger than the server's
//! `max_payload`) is dropped, counted in `rejected` and logged, so it cannot hold up
//! the events behind it. The emitter never waits. On stop, what is buffered is
//! published until `flushTimeoutMs`; what is left then is counted as `lost` and logged.
//!
//! ```toml
//! [plugins.events-nats-plugin]
//! url = "nats://127.0.0.1:4222"
//! topics = ["user.*", "order.**"]
//! subjectPrefix = "ixp.events"       # user.created travels as ixp.events.user.created
//! jetstream = { enabled = true, stream = "IXP_EVENTS", durable = "ixp-api-1" }
//! ```
//!
//! Payloads travel as JSON: a handler on another instance decodes them with
//! [`Event::decode`](ixp_core::Event::decode) or a typed subscription, as it would a
//! local event. An event whose payload cannot be serialized is not bridged (counted and
//! logged).

mod bridge;
mod config;

pub use bridge::BridgeStats;
pub use config::{EventsNatsConfig, JetStreamConfig};

use std::sync::Arc;

use ixp_core::{
    ixp_plugin, BoxError, ConfigViolation, HealthStatus, Plugin, PluginContext, PluginHealth,
};

/// The plugin's name; events it re-emits carry it as their source.
pub const PLUGIN_NAME: &str = "events-nats-plugin";

/// Bridges event topics between instances over NATS; registers the `events-bridge`
/// service ([`BridgeStats`]).
#[ixp_plugin(
    name = "events-nats-plugin",
    version = "0.1.0",
    description = "Bridges chosen event topics to NATS so every instance sees them",
    provides = ["events-bridge"],
    optional_dependencies = ["logging-plugin"],
    feature = "events-nats",
    enabled_by_default = false,
)]
pub struct EventsNatsPlugin {
    config: EventsNatsConfig,
    bridge: Option<bridge::Bridge>,
    stats: Arc<BridgeStats>,
}

impl Plugin for EventsNatsPlugin {
    type Config = EventsNatsConfig;

    fn validate_config(config: &EventsNatsConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: EventsNatsConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let stats = Arc::new(BridgeStats::default());
        let bridge = bridge::Bridge::connect(&config, ctx, stats.clone()).await?;
        ctx.services()
            .register_arc("events-bridge", stats.clone())?;
        ctx.logger().info(format_args!(
            "bridging {:?} over {} as instance {} ({})",
            config.topics,
            crate::url_text::without_userinfo(&config.url),
            bridge.instance_id(),
            if config.jetstream.enabled {
                "JetStream"
            } else {
                "core NATS"
            }
        ));
        Ok(Self {
            config,
            bridge: Some(bridge),
            stats,
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        // A restart removed the service (see `register_arc_again`).
        ctx.services()
            .register_arc_again("events-bridge", self.stats.clone())?;
        if self.bridge.is_none() {
            self.bridge =
                Some(bridge::Bridge::connect(&self.config, ctx, self.stats.clone()).await?);
        }
        Ok(())
    }

    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        if let Some(bridge) = self.bridge.take() {
            let lost = bridge.shutdown().await;
            if lost > 0 {
                ctx.logger().warn(format_args!(
                    "{lost} event(s) could not be published before the flush timeout"
                ));
            }
        }
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        let Some(bridge) = &self.bridge else {
            return PluginHealth::unhealthy("stopped");
        };
        let stats = &self.stats;
        let health = PluginHealth::healthy()
            .with_detail("instanceId", bridge.instance_id())
            .with_detail("published", stats.published())
            .with_detail("received", stats.received())
            .with_detail("dropped", stats.dropped())
            .with_detail("rejected", stats.rejected())
            .with_detail("pending", bridge.pending())
            .with_detail("lastError", stats.last_error());
        if !bridge.is_connected() {
            return health
                .with_status(HealthStatus::Unhealthy)
                .with_message(format!(
                    "NATS at {} is not connected",
                    crate::url_text::without_userinfo(&self.config.url)
                ));
        }
        if let Some(error) = stats.last_error() {
            return health
                .with_status(HealthStatus::Degraded)
                .with_message(format!("publishing is failing: {error}"));
        }
        if stats.dropped() > 0 {
            return health
                .with_status(HealthStatus::Degraded)
                .with_message(format!(
                    "{} event(s) dropped: the buffer was full",
                    stats.dropped()
                ));
        }
        health.with_message(format!(
            "connected to {}",
            crate::url_text::without_userinfo(&self.config.url)
        ))
    }
}
