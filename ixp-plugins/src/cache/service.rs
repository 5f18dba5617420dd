//! The `cache` service: one API over every backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ixp_core::PluginHealth;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::config::{CacheBackend, CacheConfig};

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend could not be reached or answered with an error.
    #[error("cache backend {backend}: {message}")]
    Backend {
        /// `memory` or `redis host:port/db`.
        backend: String,
        /// What went wrong (never contains the password).
        message: String,
    },
    /// A value could not be encoded or decoded as JSON.
    #[error("cache value at key `{key}` is not valid for this type: {source}")]
    Codec {
        /// The key (without the prefix).
        key: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// The configured backend is not compiled into this binary.
    #[error(
        "the `{backend:?}` cache backend is not compiled in; enable the Cargo feature `{feature}`"
    )]
    NotCompiledIn {
        /// The backend.
        backend: CacheBackend,
        /// The feature to enable.
        feature: &'static str,
    },
}

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 before any read.
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

pub(super) enum Store {
    #[cfg(feature = "cache-memory")]
    Memory(super::memory::MemoryStore),
    #[cfg(feature = "cache-redis")]
    Redis(super::redis_backend::RedisStore),
}

/// The `cache` service: byte values under string keys, with a default and a per-key TTL,
/// and a JSON layer for serde types.
pub struct Cache {
    store: Store,
    default_ttl: Option<Duration>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend_name())
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Connects the backend the config names (for Redis: connects and PINGs once).
    pub async fn connect(config: &CacheConfig) -> Result<Self, CacheError> {
        let default_ttl = (config.ttl > 0).then(|| Duration::from_secs(config.ttl));
        let store = match config.backend {
            #[cfg(feature = "cache-memory")]
            CacheBackend::Memory => Store::Memory(super::memory::MemoryStore::new(config.max_size)),
            #[cfg(feature = "cache-redis")]
            CacheBackend::Redis => {
                Store::Redis(super::redis_backend::RedisStore::connect(config).await?)
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(CacheError::NotCompiledIn {
                    backend: other,
                    feature: other.feature(),
                })
            }
        };
        Ok(Self {
            store,
            default_ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// `memory`, or `redis host:port/db`.
    pub fn backend_name(&self) -> String {
        match &self.store {
            #[cfg(feature = "cache-memory")]
            Store::Memory(_) => "memory".into(),
            #[cfg(feature = "cache-redis")]
            Store::Redis(r) => r.describe(),
        }
    }

    /// The value at `key`, if present and not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let found = match &self.store {
            #[cfg(feature = "cache-memory")]
            Store::Memory(m) => m.get(key).await,
            #[cfg(feature = "cache-redis")]
            Store::Redis(r) => r.get(key).await?,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    /// Stores `value` at `key` for `ttl` (the configured default when `None`).
    pub async fn set(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let ttl = ttl.or(self.default_ttl);
        let value = value.into();
        match &self.store {
            #[cfg(feature = "cache-memory")]
            Store::Memory(m) => {
                m.set(key, value, ttl).await;
                Ok(())
            }
            #[cfg(feature = "cache-redis")]
            Store::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    /// Removes `key`; true if it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        match &self.store {
            #[cfg(feature = "cache-memory")]
            Store::Memory(m) => Ok(m.delete(key).await),
            #[cfg(feature = "cache-redis")]
            Store::Redis(r) => r.delete(key).await,
        }
    }

    /// The value at `key` decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| CacheError::Codec {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    /// Stores `value` as JSON at `key` for `ttl` (the default when `None`).
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|source| CacheError::Codec {
            key: key.to_owned(),
            source,
        })?;
        self.set(key, bytes, ttl).await
    }

    /// Hits and misses since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Memory: entry count and hit rate. Redis: a PING round trip with its latency.
    pub async fn health(&self) -> PluginHealth {
        let stats = self.stats();
        let health = match &self.store {
            #[cfg(feature = "cache-memory")]
            Store::Memory(m) => PluginHealth::healthy()
                .with_message("memory cache")
                .with_detail("entries", m.entry_count().await),
            #[cfg(feature = "cache-redis")]
            Store::Redis(r) => r.health().await,
        };
        health
            .with_detail("hits", stats.hits)
            .with_detail("misses", stats.misses)
            .with_detail("hitRate", stats.hit_rate())
    }
}
