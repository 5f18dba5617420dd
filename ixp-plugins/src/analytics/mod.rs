//! `analytics-plugin`: the guide's AnalyticsPlugin (feature `analytics`).
//!
//! It tracks `request.started`, `request.completed`, `user.action` and `error.occurred`
//! from the event bus (the topics in `events`), and whatever user code passes to the
//! `analytics` service ([`Analytics::track`]), and POSTs them in batches as JSON to
//! `endpoint` with `apiKey` as a bearer token (reqwest, rustls).
//!
//! ```toml
//! [plugins.analytics-plugin]
//! endpoint = "https://analytics.example.com/v1/batch"   # required
//! apiKey = "${ANALYTICS_API_KEY}"     # sent as `Authorization: Bearer ...`; optional
//! batchSize = 100                     # events per request at most
//! flushInterval = 10000               # ms (or "10s"): the longest an event waits
//! bufferSize = 10000                  # events held at most; beyond it, new ones are dropped
//! # maxRetries = 5                    # absent: a failed batch is retried until delivered
//! retryBackoff = "200ms"              # first retry's wait, doubling ...
//! maxBackoff = "10s"                  # ... up to this
//! requestTimeout = "10s"
//! flushTimeout = "10s"                # stop/SIGTERM sends what is buffered for at most this
//! events = ["request.started", "request.completed", "user.action", "error.occurred"]
//! ```
//!
//! # What is sent
//!
//! `POST <endpoint>` with `Content-Type: application/json` and, when `apiKey` is set,
//! `Authorization: Bearer <apiKey>`; the body is
//!
//! ```json
//! { "events": [
//!   { "id": "5f0c3a9e1b2d4c6f-17", "timestamp": "2025-01-31T12:00:00.123Z",
//!     "event": "request_completed", "topic": "request.completed",
//!     "properties": { "requestId": 17, "method": "GET", "url": "/hello",
//!                     "statusCode": 200, "duration": 0.84, "responseSize": 14 } },
//!   { "id": "5f0c3a9e1b2d4c6f-18", "timestamp": "2025-01-31T12:00:00.125Z",
//!     "event": "signup", "topic": "user.action", "userId": "u-42",
//!     "properties": { "plan": "pro" } }
//! ] }
//! ```
//!
//! * `id`: unique per event (a random per-instance prefix and a sequence number). A
//!   batch sent again after a failure carries the same ids, so a collector that keeps
//!   the first copy of each id stores every event exactly once.
//! * `timestamp`: when the event was tracked, RFC 3339 UTC with milliseconds.
//! * `event`: `request_started` (properties `requestId`, `method`, `url`),
//!   `request_completed` (also `statusCode`, `duration` in ms, `responseSize` when
//!   known), `error_occurred` (`error`: what failed, `message`, `plugin`, `topic`), the
//!   `action` of a `user.action` ([`UserAction`]: with `userId`, `sessionId` and its
//!   `properties`), the name given to [`Analytics::track`]; for any other topic, the
//!   topic with `_` for `.` and the payload's JSON as properties.
//! * `topic`: the bus topic, absent for events tracked by user code; `userId` and
//!   `sessionId` only when known.
//!
//! Any 2xx answer accepts the whole batch.
//!
//! # When the collector is slow or away
//!
//! The bus calls the plugin's handlers inline ([`Delivery::Inline`](ixp_core::events::Delivery)):
//! a tracked event is serialized into the plugin's own buffer while `emit` runs, and
//! nothing on a request's path ever waits for the collector.
//!
//! * Failed requests (connection errors, timeouts, HTTP 408, 429, 5xx) are retried with
//!   exponential backoff, the batch kept (the guide's re-queue); with `maxRetries` set,
//!   a batch still failing after that many retries is given up and counted in `failed`.
//!   A 3xx or another 4xx (a wrong key, a refused body) is not retried: the batch is
//!   counted in `failed`. Give-ups are logged as errors.
//! * **The buffer is bounded**: at most `bufferSize` events wait or are being sent.
//!   When it is full, the **newest** event is dropped: [`Analytics::track`] returns
//!   [`TrackError::BufferFull`], `dropped` grows, a warning is logged at the 1st, 2nd,
//!   4th, 8th ... drop, and the health is *degraded* until a minute after the last drop.
//! * **On stop** (and so on SIGTERM or Ctrl-C to `ixp-app`, which stops the plugins after
//!   the in-flight requests), everything buffered is sent at once, retrying until
//!   `flushTimeout`; what is unconfirmed by then is counted in `lost` and logged. Keep
//!   `flushTimeout` below the plugin's `hook_timeout` (30 s by default).
//!
//! Health: *degraded* while the last request failed or after a recent drop, never
//! unhealthy (analytics trouble should not take the server out of a load balancer); the
//! details carry `endpoint`, `queued`, `inFlight`, `bufferSize`, `sent`, `dropped`,
//! `failed`, `failedRequests`, `lost`, `batches` and `lastSend`
//! ([`AnalyticsStats`]).
//!
//! Overlapping patterns in `events` (say `user.*` and `user.action`) track a matching
//! event once per pattern.

mod client;
mod config;
mod tracking;
mod wire;

pub use client::{Analytics, AnalyticsStats, LastSend, TrackError, TrackEvent};
pub use config::{AnalyticsConfig, Millis, DEFAULT_EVENTS};
pub use tracking::UserAction;

use std::sync::Arc;

use ixp_core::events::{Delivery, SubscribeOptions};
use ixp_core::{
    ixp_plugin, BoxError, ConfigViolation, Event, HealthStatus, Plugin, PluginContext, PluginHealth,
};
use tokio::task::JoinHandle;

/// The guide's AnalyticsPlugin: registers the `analytics` service ([`Analytics`]) and
/// tracks the configured bus topics.
#[ixp_plugin(
    name = "analytics-plugin",
    version = "0.1.0",
    description = "Tracks request, user-action and error events and sends them in batches to an HTTP collector",
    provides = ["analytics"],
    optional_dependencies = ["logging-plugin"],
    feature = "analytics",
    enabled_by_default = false,
)]
pub struct AnalyticsPlugin {
    config: AnalyticsConfig,
    analytics: Arc<Analytics>,
    client: reqwest::Client,
    /// `endpoint`, parsed.
    url: reqwest::Url,
    sender: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AnalyticsPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsPlugin")
            .field("config", &self.config)
            .field("running", &self.sender.is_some())
            .finish()
    }
}

impl Plugin for AnalyticsPlugin {
    type Config = AnalyticsConfig;

    fn validate_config(config: &AnalyticsConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: AnalyticsConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let timing = config.timing();
        let client = reqwest::Client::builder()
            .timeout(timing.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ixp-analytics/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // `validate_config` has checked it; the URL itself is not repeated (its query
        // may hold a key).
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| format!("endpoint is not a valid URL: {e}"))?;
        let hook_timeout = ctx.hook_timeout();
        if timing.flush_timeout + std::time::Duration::from_secs(1) >= hook_timeout {
            ctx.logger().warn(format_args!(
                "flushTimeout ({}) is not below hook_timeout ({}): a stop that needs the whole flush time will be cut short",
                humantime::format_duration(timing.flush_timeout),
                humantime::format_duration(hook_timeout)
            ));
        }
        Ok(Self {
            analytics: Arc::new(Analytics::new(&config)),
            config,
            client,
            url,
            sender: None,
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        if self.sender.is_none() {
            self.sender = Some(self.analytics.open(
                self.client.clone(),
                self.url.clone(),
                self.config.api_key.clone(),
            ));
        }
        ctx.services()
            .register_arc("analytics", self.analytics.clone())?;
        // Inline: the handler only serializes the event into the service's buffer, so
        // the publisher calls it directly (a queue and a worker task per event would
        // cost more than the handler).
        let inline = SubscribeOptions {
            delivery: Delivery::Inline,
            ..SubscribeOptions::default()
        };
        for pattern in &self.config.events {
            let analytics = self.analytics.clone();
            ctx.events()
                .on_with(pattern, inline, move |event: Event| {
                    // A refusal is counted and logged by the service; never waits for
                    // the collector.
                    let _ = tracking::track(&analytics, &event);
                    std::future::ready(())
                })?
                .detach();
        }
        let timing = self.config.timing();
        ctx.logger().info(format_args!(
            "tracking [{}] to {} in batches of {} (at most every {})",
            self.config.events.join(", "),
            self.analytics.endpoint(),
            self.config.batch_size,
            humantime::format_duration(timing.flush_interval)
        ));
        Ok(())
    }

    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        if let Some(sender) = self.sender.take() {
            let (sent, lost) = self.analytics.close(sender).await;
            if lost == 0 {
                ctx.logger().info(format_args!(
                    "stopped: flushed {sent} event(s) to {}",
                    self.analytics.endpoint()
                ));
            } else {
                ctx.logger().warn(format_args!(
                    "stopped: flushed {sent} event(s) to {}; {lost} event(s) lost",
                    self.analytics.endpoint()
                ));
            }
        }
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        let stats = self.analytics.stats();
        let mut health = PluginHealth::healthy()
            .with_message(format!("sending to {}", self.analytics.endpoint()))
            .with_detail("endpoint", self.analytics.endpoint());
        if let Ok(serde_json::Value::Object(details)) = serde_json::to_value(&stats) {
            for (key, value) in details {
                health = health.with_detail(key, value);
            }
        }
        let waiting = stats.queued + stats.in_flight;
        let failing = stats
            .last_send
            .as_ref()
            .filter(|last| !last.ok)
            .and_then(|last| last.error.clone());
        if let Some(error) = failing {
            health = health
                .with_status(HealthStatus::Degraded)
                .with_message(format!(
                    "collector {} failing: {error}; {waiting} event(s) waiting",
                    self.analytics.endpoint()
                ));
        } else if self.analytics.dropped_recently() || waiting >= stats.buffer_size {
            health = health
                .with_status(HealthStatus::Degraded)
                .with_message(format!(
                    "buffer full ({} events): {} event(s) dropped so far",
                    stats.buffer_size, stats.dropped
                ));
        }
        health
    }
}

impl Drop for AnalyticsPlugin {
    fn drop(&mut self) {
        // Dropped without a stop (a failed start, a rollback): nothing more can be sent.
        if let Some(sender) = self.sender.take() {
            sender.abort();
            self.analytics.abandon();
        }
    }
}
