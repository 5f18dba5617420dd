//! The [`Plugin`] trait, plugin metadata and the error type plugins return.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::PluginContext;
use crate::health::PluginHealth;

/// The error a plugin hook returns: any error type converts into it with `?`, and a
/// string literal with `.into()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The static description of a plugin, emitted by `#[ixp_plugin]`.
///
/// Dependencies are written `"plugin-name"` or `"plugin-name <semver requirement>"`,
/// for example `"database-plugin >=1.2"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginMetadata {
    /// Unique plugin name, e.g. `cache-plugin`.
    pub name: &'static str,
    /// Semantic version of the plugin.
    pub version: &'static str,
    /// One line saying what the plugin does.
    pub description: &'static str,
    /// Plugins that must be enabled and started before this one.
    pub dependencies: &'static [&'static str],
    /// Plugins that, when present and enabled, start before this one.
    pub optional_dependencies: &'static [&'static str],
    /// Names of the services the plugin registers (used to explain missing services).
    pub provides: &'static [&'static str],
    /// The Cargo feature that compiles the plugin in, for built-in plugins.
    pub feature: Option<&'static str>,
    /// Whether the plugin runs when the config has no section for it. Plugins that
    /// cannot work on their defaults (they need a secret, an endpoint, a server) say
    /// `false`: compiled in, they run only once the config has a section for them.
    pub enabled_by_default: bool,
}

/// Static metadata of a plugin type. `#[ixp_plugin]` implements it; implement it by
/// hand only for plugins registered without the macro.
pub trait PluginMeta {
    /// The plugin's metadata.
    const METADATA: PluginMetadata;
}

/// What a plugin's configuration type must be: deserializable from the config file
/// (with serde defaults), serializable (so `check` can print the effective config, with
/// [`Secret`](crate::Secret)s masked) and describable as JSON Schema.
///
/// It is implemented for every type with those traits; derive them:
///
/// ```
/// use ixp_core::{JsonSchema, Secret};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Deserialize, Serialize, JsonSchema)]
/// #[serde(default, deny_unknown_fields)]
/// struct CacheConfig {
///     ttl: u64,
///     password: Option<Secret>,
/// }
///
/// impl Default for CacheConfig {
///     fn default() -> Self {
///         Self { ttl: 60, password: None }
///     }
/// }
/// ```
pub trait PluginConfig: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static {}

impl<T> PluginConfig for T where T: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static
{}

/// The configuration of a plugin that takes none. An empty section, or none, is valid;
/// any key in it is reported as unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// One problem found by [`Plugin::validate_config`]: where (a dotted path inside the
/// plugin's section) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigViolation {
    /// Dotted path of the offending value inside the plugin's config, e.g. `pool.max`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigViolation {
    /// A violation at `path` (relative to the plugin's section).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An ixp plugin.
///
/// A plugin is a struct marked with `#[ixp_plugin(...)]` that implements this trait.
/// [`initialize`](Plugin::initialize) builds the plugin value from its typed
/// configuration; the other hooks have defaults that do nothing.
///
/// Every hook runs under a timeout (30 s unless `hook_timeout` is set in the plugin's
/// config section), inside a tracing span that carries the plugin name, and a hook that
/// returns an error, panics or times out is reported as an error of that plugin; the host
/// keeps running.
///
/// ```
/// use ixp_core::{ixp_plugin, BoxError, JsonSchema, Plugin, PluginContext, PluginHealth};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Deserialize, Serialize, JsonSchema)]
/// #[serde(default, deny_unknown_fields)]
/// pub struct GreeterConfig {
///     pub greeting: String,
/// }
///
/// impl Default for GreeterConfig {
///     fn default() -> Self {
///         Self { greeting: "hello".into() }
///     }
/// }
///
/// #[ixp_plugin(name = "greeter-plugin", version = "1.0.0", description = "Says hello")]
/// pub struct GreeterPlugin {
///     greeting: String,
/// }
///
/// impl Plugin for GreeterPlugin {
///     type Config = GreeterConfig;
///
///     async fn initialize(config: GreeterConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
///         ctx.logger().info("greeter initialized");
///         Ok(Self { greeting: config.greeting })
///     }
///
///     async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
///         PluginHealth::healthy().with_message(format!("greeting is {:?}", self.greeting))
///     }
/// }
/// ```
pub trait Plugin: PluginMeta + Sized + Send + Sync + 'static {
    /// The typed configuration read from the plugin's config section.
    type Config: PluginConfig;

    /// Checks the configuration beyond what its type says (ranges, combinations).
    /// Runs during the start-up check, before any plugin is initialized.
    fn validate_config(config: &Self::Config) -> Result<(), Vec<ConfigViolation>> {
        let _ = config;
        Ok(())
    }

    /// Builds the plugin from its configuration. Services and subscriptions that other
    /// plugins need at their own initialization may be registered here.
    fn initialize(
        config: Self::Config,
        ctx: &PluginContext,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Starts the plugin's work (connections, background tasks). Runs after every
    /// dependency has started.
    fn start(&mut self, ctx: &PluginContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Stops the plugin's work. Runs before any of its dependencies stop. After it
    /// returns, the host removes the plugin's subscriptions, services and tasks.
    fn stop(&mut self, ctx: &PluginContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Restarts the plugin in place. The default stops and starts it again.
    fn restart(
        &mut self,
        ctx: &PluginContext,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        async move {
            self.stop(ctx).await?;
            self.start(ctx).await
        }
    }

    /// Reports the plugin's health. The default is healthy.
    fn health(&self, ctx: &PluginContext) -> impl Future<Output = PluginHealth> + Send {
        let _ = ctx;
        async { PluginHealth::healthy() }
    }
}
