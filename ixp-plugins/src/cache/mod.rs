//! `cache-plugin`: the guide's CachePlugin. One [`Cache`] service over two backends,
//! chosen by `type`:
//!
//! * `memory` (feature `cache-memory`): an in-process cache bounded by `maxSize`
//!   entries, with TinyLFU admission and LRU eviction ([`moka`]) and a TTL per entry;
//! * `redis` (feature `cache-redis`): a Redis server over one multiplexed connection
//!   that reconnects by itself; `keyPrefix` keeps apps that share a Redis apart.
//!
//! ```toml
//! [plugins.cache-plugin]
//! type = "memory"     # or "redis"
//! maxSize = 1000      # memory: the most entries kept
//! ttl = 3600          # default time to live in seconds (0 = no expiry)
//!
//! # redis:
//! # host = "127.0.0.1"
//! # port = 6379
//! # password = "${REDIS_PASSWORD}"
//! # db = 0
//! # keyPrefix = "ixp:"
//! ```
//!
//! Other plugins depend on `cache-plugin` and take the service by type:
//!
//! ```
//! # #[cfg(feature = "cache-memory")]
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ixp_core::Host;
//! use ixp_plugins::cache::{Cache, CacheConfig, CachePlugin};
//!
//! let host = Host::builder().plugin::<CachePlugin>(CacheConfig::default()).build()?;
//! host.launch().await?;
//! let cache = host.services().get::<Cache>("cache")?;
//! cache.set_json("user:1", &vec!["admin"], None).await?;
//! assert_eq!(cache.get_json::<Vec<String>>("user:1").await?, Some(vec!["admin".to_owned()]));
//! host.stop().await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "cache-memory"))] fn main() {}
//! ```

mod config;
#[cfg(feature = "cache-memory")]
mod memory;
#[cfg(feature = "cache-redis")]
mod redis_backend;
mod service;

pub use config::{CacheBackend, CacheConfig};
pub use service::{Cache, CacheError, CacheStats};

use ixp_core::{ixp_plugin, BoxError, ConfigViolation, Plugin, PluginContext, PluginHealth};

/// The guide's CachePlugin: registers the `cache` service ([`Cache`]).
#[ixp_plugin(
    name = "cache-plugin",
    version = "0.1.0",
    description = "Key-value cache (memory or Redis) registered as the `cache` service",
    provides = ["cache"],
    optional_dependencies = ["logging-plugin"],
    feature = "cache-memory, cache-redis",
)]
pub struct CachePlugin {
    cache: std::sync::Arc<Cache>,
}

impl Plugin for CachePlugin {
    type Config = CacheConfig;

    fn validate_config(config: &CacheConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: CacheConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let cache = std::sync::Arc::new(Cache::connect(&config).await?);
        ctx.services().register_arc("cache", cache.clone())?;
        ctx.logger()
            .info(format_args!("cache ready ({})", cache.backend_name()));
        Ok(Self { cache })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        // A restart removed the service (see `register_arc_again`).
        ctx.services()
            .register_arc_again("cache", self.cache.clone())?;
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        self.cache.health().await
    }
}
