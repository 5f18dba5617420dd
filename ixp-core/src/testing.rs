//! Test utilities for plugin authors (feature `testing`): a mock plugin context that
//! records what a plugin registers, subscribes and emits (the TypeScript SDK's
//! `createMockPluginContext`), and a test server that runs real plugins in-process
//! (`createTestServer`).
//!
//! Neither mocks the runtime: the mock context has a real event bus and service
//! registry, and only records what goes through them.
//!
//! ```
//! use ixp_core::testing::MockPluginContext;
//! use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};
//!
//! #[ixp_plugin(name = "notifier-plugin", version = "1.0.0")]
//! struct Notifier;
//!
//! impl Plugin for Notifier {
//!     type Config = NoConfig;
//!     async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
//!         ctx.services().register("notifier", 7_u32)?;
//!         ctx.events().on("user.created", |_| async {})?.detach();
//!         ctx.events().emit("notifier.ready", true).await;
//!         Ok(Notifier)
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), BoxError> {
//! let mock = MockPluginContext::new("notifier-plugin");
//! let _plugin = Notifier::initialize(NoConfig {}, mock.context()).await?;
//! assert_eq!(mock.registered_services(), ["notifier"]);
//! assert_eq!(mock.subscriptions(), ["user.created"]);
//! assert_eq!(mock.emitted_topics(), ["notifier.ready"]);
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use crate::config::IxpConfig;
use crate::context::{PluginContext, Registries};
use crate::events::{Event, EventBus};
use crate::health::HealthReport;
use crate::host::{Host, HostBuilder, HostError, ServerHandle};
use crate::plugin::Plugin;
use crate::problem::CheckReport;
use crate::registry::Catalog;
use crate::services::ServiceRegistry;

/// A plugin context outside any host, recording what the plugin does through it.
pub struct MockPluginContext {
    plugin: String,
    ctx: PluginContext,
    events: EventBus,
    services: ServiceRegistry,
    emitted: Arc<Mutex<Vec<Event>>>,
}

impl std::fmt::Debug for MockPluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPluginContext")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl MockPluginContext {
    /// A context for `plugin` with the default configuration.
    pub fn new(plugin: &str) -> Self {
        Self::with_config(plugin, IxpConfig::default())
    }

    /// A context for `plugin` with this configuration.
    pub fn with_config(plugin: &str, config: IxpConfig) -> Self {
        let events = EventBus::new();
        let services = ServiceRegistry::new();
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let record = emitted.clone();
        events.tap(move |event| {
            record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event.clone())
        });
        #[cfg(feature = "http")]
        let http = crate::http::HttpRoutes::new(ServerHandle::detached());
        let registries = Registries {
            events: &events,
            services: &services,
            #[cfg(feature = "http")]
            http: &http,
        };
        let ctx = PluginContext::new(
            &Arc::from(plugin),
            None,
            Arc::new(config),
            registries,
            ServerHandle::detached(),
        );
        Self {
            plugin: plugin.to_owned(),
            ctx,
            events,
            services,
            emitted,
        }
    }

    /// The context to pass to the plugin's hooks.
    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }

    /// The bus, not scoped to the plugin: emit through it to reach the plugin's handlers.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The registry, not scoped to the plugin: register the services of the plugin's
    /// dependencies here.
    pub fn services(&self) -> &ServiceRegistry {
        &self.services
    }

    /// Names of the services the plugin registered, sorted.
    pub fn registered_services(&self) -> Vec<String> {
        self.services.names_owned_by(&self.plugin)
    }

    /// Patterns the plugin is subscribed to, in subscription order.
    pub fn subscriptions(&self) -> Vec<String> {
        self.events
            .subscriptions()
            .into_iter()
            .filter(|s| s.owner.as_deref() == Some(self.plugin.as_str()))
            .map(|s| s.pattern)
            .collect()
    }

    /// Every event the plugin emitted, in order.
    pub fn emitted(&self) -> Vec<Event> {
        self.emitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.source() == Some(self.plugin.as_str()))
            .cloned()
            .collect()
    }

    /// The topics of the events the plugin emitted, in order.
    pub fn emitted_topics(&self) -> Vec<String> {
        self.emitted()
            .iter()
            .map(|e| e.topic().to_owned())
            .collect()
    }
}

/// Why a test server did not start.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// The start-up check failed.
    #[error(transparent)]
    Check(#[from] CheckReport),
    /// A plugin failed to initialize or start.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Builds a [`TestServer`]. Only the plugins added here are in it (not every linked one).
pub struct TestServerBuilder {
    builder: HostBuilder,
}

impl std::fmt::Debug for TestServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServerBuilder").finish_non_exhaustive()
    }
}

impl TestServerBuilder {
    /// Adds a plugin with its typed config.
    pub fn plugin<P: Plugin>(mut self, config: P::Config) -> Self {
        self.builder = self.builder.plugin::<P>(config);
        self
    }

    /// Adds a plugin whose config comes from the configuration (or its defaults).
    pub fn plugin_type<P: Plugin>(mut self) -> Self {
        self.builder = self.builder.plugin_type::<P>();
        self
    }

    /// Uses this configuration.
    pub fn config(mut self, config: IxpConfig) -> Self {
        self.builder = self.builder.config(config);
        self
    }

    /// Checks, initializes and starts the plugins.
    pub async fn start(self) -> Result<TestServer, TestServerError> {
        let host = self.builder.build()?;
        host.launch().await?;
        Ok(TestServer { host })
    }
}

/// Real plugins running in-process on a real host.
#[derive(Debug)]
pub struct TestServer {
    host: Host,
}

impl TestServer {
    /// A builder with no plugin.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            builder: Host::builder().catalog(Catalog::new()),
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        self.host.events()
    }

    /// The service registry.
    pub fn services(&self) -> &ServiceRegistry {
        self.host.services()
    }

    /// The health of every plugin.
    pub async fn health(&self) -> HealthReport {
        self.host.health().await
    }

    /// Stops every plugin.
    pub async fn stop(self) -> Result<(), HostError> {
        self.host.stop().await
    }
}
