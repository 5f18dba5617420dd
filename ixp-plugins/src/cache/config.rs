//! The typed configuration of `cache-plugin`.

use ixp_core::{ConfigViolation, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// Which store backs the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// In-process memory (feature `cache-memory`).
    Memory,
    /// A Redis server (feature `cache-redis`).
    Redis,
}

impl CacheBackend {
    /// The Cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            CacheBackend::Memory => "cache-memory",
            CacheBackend::Redis => "cache-redis",
        }
    }

    /// Whether this build has the backend.
    pub fn is_compiled_in(self) -> bool {
        match self {
            CacheBackend::Memory => cfg!(feature = "cache-memory"),
            CacheBackend::Redis => cfg!(feature = "cache-redis"),
        }
    }
}

/// Configuration of `cache-plugin` (keys in camelCase, as in the guide).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// `memory` or `redis`.
    #[serde(rename = "type")]
    pub backend: CacheBackend,
    /// Default time to live of an entry, in seconds; 0 keeps entries until evicted.
    pub ttl: u64,
    /// memory: the most entries kept (TinyLFU admission, LRU eviction beyond it).
    pub max_size: u64,
    /// redis: server host.
    pub host: String,
    /// redis: server port.
    pub port: u16,
    /// redis: user name (Redis 6 ACL), if any.
    pub username: Option<String>,
    /// redis: password, if any.
    pub password: Option<Secret>,
    /// redis: database number.
    pub db: u32,
    /// redis: prefix of every key, so that apps sharing a server stay apart.
    pub key_prefix: String,
    /// redis: time allowed to connect, and for each command, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: if cfg!(feature = "cache-memory") || !cfg!(feature = "cache-redis") {
                CacheBackend::Memory
            } else {
                CacheBackend::Redis
            },
            ttl: 3600,
            max_size: 1000,
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
            key_prefix: "ixp:".into(),
            timeout_ms: 2000,
        }
    }
}

impl CacheConfig {
    /// Problems the type cannot express: a backend this build lacks, sizes of zero.
    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        if !self.backend.is_compiled_in() {
            found.push(ConfigViolation::new(
                "type",
                format!(
                    "the `{}` backend is not compiled in; enable the Cargo feature `{}`",
                    serde_json::to_value(self.backend)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    self.backend.feature()
                ),
            ));
        }
        if self.backend == CacheBackend::Memory && self.max_size == 0 {
            found.push(ConfigViolation::new("maxSize", "must be at least 1"));
        }
        if self.backend == CacheBackend::Redis {
            if self.host.trim().is_empty() {
                found.push(ConfigViolation::new("host", "must not be empty"));
            }
            if self.port == 0 {
                found.push(ConfigViolation::new("port", "must not be 0"));
            }
            if self.timeout_ms == 0 {
                found.push(ConfigViolation::new("timeoutMs", "must be at least 1"));
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}
