//! The application's own plugin, written like the guide's BasicPlugin: it logs its
//! lifecycle, serves `GET /hello` and counts the greetings it gave in its health.
//! Put your own plugins next to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use ixp_core::{ixp_plugin, BoxError, JsonSchema, Plugin, PluginContext, PluginHealth};
use serde::{Deserialize, Serialize};

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
}

impl Plugin for HelloPlugin {
    type Config = HelloConfig;

    async fn initialize(config: HelloConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        ctx.logger()
            .info(format_args!("initialized, greeting {:?}", config.greeting));
        Ok(Self {
            greeting: config.greeting.into(),
            served: Arc::default(),
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
        ctx.logger().info("started: serving GET /hello");
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
