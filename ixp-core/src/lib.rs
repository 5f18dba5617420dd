//! # ixp-core
//!
//! The runtime of ixp, an SDK for IXP (Intent Exchange Protocol) servers whose features
//! come from plugins composed at compile time.
//!
//! * A plugin is a struct marked [`#[ixp_plugin]`](ixp_plugin) that implements
//!   [`Plugin`]; the attribute registers it at link time, so the binary's plugins are
//!   exactly the ones linked into it ([`Catalog::linked`]). Nothing is loaded at run time.
//! * Before anything runs, [`check`] resolves the enabled plugins against the
//!   configuration ([`config`]) and reports every problem at once ([`CheckReport`]):
//!   duplicates, missing/disabled dependencies, version requirements, cycles, unknown
//!   plugins (with the Cargo feature to enable), config values of the wrong type (with
//!   their full path), unknown keys, unset `${VAR}`s.
//! * [`Host`] runs the lifecycle (initialize, start, stop, restart, health) in dependency
//!   order with timeouts, panic isolation and rollback, and owns everything a plugin
//!   registers: [`events`] subscriptions, [`services`], tasks.
//!
//! ```
//! use ixp_core::{ixp_plugin, BoxError, Host, JsonSchema, Plugin, PluginContext};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
//! #[serde(default, deny_unknown_fields)]
//! struct CounterConfig { start: u64 }
//!
//! #[ixp_plugin(name = "counter-plugin", version = "1.0.0", provides = ["counter"])]
//! struct CounterPlugin;
//!
//! struct Counter(std::sync::atomic::AtomicU64);
//!
//! impl Plugin for CounterPlugin {
//!     type Config = CounterConfig;
//!
//!     async fn initialize(config: CounterConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
//!         ctx.services().register("counter", Counter(config.start.into()))?;
//!         Ok(CounterPlugin)
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::builder().plugin::<CounterPlugin>(CounterConfig { start: 41 }).build()?;
//! host.launch().await?;
//! let counter = host.services().get::<Counter>("counter")?;
//! assert_eq!(counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 41);
//! host.stop().await?;
//! assert!(host.services().get::<Counter>("counter").is_err());
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod context;
pub mod events;
pub mod health;
pub mod host;
#[cfg(feature = "http")]
pub mod http;
pub mod plan;
pub mod plugin;
pub mod problem;
pub mod registry;
pub mod schema;
pub mod secret;
pub mod services;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, ConfigLoader, IxpConfig};
pub use context::{Logger, PluginContext};
pub use events::{Event, EventBus, Subscription, Typed, TypedEvent};
pub use health::{HealthReport, HealthStatus, PluginHealth};
pub use host::{
    Hook, HookFailure, Host, HostBuilder, HostError, PluginInfo, PluginState, ServerHandle,
};
#[cfg(feature = "http")]
pub use http::IxpServer;
pub use plan::{check, Plan};
pub use plugin::{
    BoxError, ConfigViolation, NoConfig, Plugin, PluginConfig, PluginMeta, PluginMetadata,
};
pub use problem::{CheckReport, Problem};
pub use registry::{Catalog, FeatureHint, PluginRegistration};
pub use secret::Secret;
pub use services::{ServiceError, ServiceRegistry};

/// Marks a struct as an ixp plugin and registers it at link time.
///
/// ```
/// use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};
///
/// #[ixp_plugin(
///     name = "report-plugin",
///     version = "2.1.0",
///     description = "Builds reports from the database",
///     dependencies = ["database-plugin >=1.2"],
///     optional_dependencies = ["cache-plugin"],
///     provides = ["reports"],
/// )]
/// pub struct ReportPlugin;
///
/// impl Plugin for ReportPlugin {
///     type Config = NoConfig;
///     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
///         Ok(ReportPlugin)
///     }
/// }
/// ```
///
/// See the [crate-level docs](crate) and `docs/plugins.md` for the keys and for what a
/// misuse reports.
pub use ixp_macros::ixp_plugin;

/// `schemars::JsonSchema`, re-exported for deriving on plugin configs.
pub use schemars::JsonSchema;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// axum, re-exported so that plugins mount routes with the same version (feature `http`).
#[cfg(feature = "http")]
pub use axum;
