//! The application's own plugin, written like the guide's BasicPlugin: it logs its
//! lifecycle, serves `GET /hello` and counts the greetings it gave in its health. Like
//! the guide's event-driven plugin it also publishes and handles an event:
//! `POST /hello/{name}` publishes `user.greeted`, and every `user.greeted` it hears (from
//! this instance, or from others through the events-nats plugin) is listed by
//! `GET /hello/greeted`. Put your own plugins next to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use ixp_core::events::Typed;
use ixp_core::{ixp_plugin, BoxError, JsonSchema, Plugin, PluginContext, PluginHealth, TypedEvent};
use serde::{Deserialize, Serialize};

/// Published on `user.greeted` by `POST /hello/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Greeted {
    /// Who was greeted.
    pub name: String,
}

impl TypedEvent for Greeted {
    const TOPIC: &'static str = "user.greeted";
}

/// How many greeted names `GET /hello/greeted` keeps.
const KEPT: usize = 100;

/// `[plugins.hello-plugin]` in `ixp.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HelloConfig {
    /// What `GET /hello` answers.
    pub greeting: String,
}

impl Default for HelloConfig {
    fn default() -> Self {
        Self {
            greeting: "Hello from ixp".into(),
        }
    }
}

/// Answers `GET /hello` with the configured greeting.
#[ixp_plugin(
    name = "hello-plugin",
    version = "1.0.0",
    description = "The application's own example plugin: GET /hello",
    optional_dependencies = ["database-plugin", "cache-plugin", "logging-plugin"]
)]
pub struct HelloPlugin {
    greeting: Arc<str>,
    served: Arc<AtomicU64>,
    greeted: Arc<Mutex<VecDeque<String>>>,
}

impl Plugin for HelloPlugin {
    type Config = HelloConfig;

    async fn initialize(config: HelloConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        ctx.logger()
            .info(format_args!("initialized, greeting {:?}", config.greeting));
        Ok(Self {
            greeting: config.greeting.into(),
            served: Arc::default(),
            greeted: Arc::default(),
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let greeting = self.greeting.clone();
        let served = self.served.clone();
        ctx.http().route(
            "/hello",
            get(move || {
                served.fetch_add(1, Ordering::Relaxed);
                let greeting = greeting.clone();
                async move { greeting.to_string() }
            }),
        )?;
        let events = ctx.events().clone();
        ctx.http().route(
            "/hello/{name}",
            post(move |Path(name): Path<String>| {
                let events = events.clone();
                async move {
                    events.publish(Greeted { name: name.clone() }).await;
                    (StatusCode::ACCEPTED, format!("greeted {name}"))
                }
            }),
        )?;
        let greeted = self.greeted.clone();
        ctx.events()
            .subscribe(move |event: Typed<Greeted>| {
                let mut names = greeted.lock().unwrap_or_else(|e| e.into_inner());
                if names.len() == KEPT {
                    names.pop_front();
                }
                names.push_back(event.name.clone());
                async {}
            })?
            .detach();
        let greeted = self.greeted.clone();
        ctx.http().route(
            "/hello/greeted",
            get(move || {
                let names: Vec<String> = greeted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                async move { Json(names) }
            }),
        )?;
        ctx.logger()
            .info("started: serving GET /hello, POST /hello/{name}, GET /hello/greeted");
        Ok(())
    }

    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.logger().info("stopped");
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        PluginHealth::healthy()
            .with_message("operating normally")
            .with_detail("served", self.served.load(Ordering::Relaxed))
    }
}
