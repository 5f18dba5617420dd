//! The Redis backend: a `ConnectionManager` (one multiplexed connection that reconnects
//! by itself), keys under `keyPrefix`.

use std::time::{Duration, Instant};

use ixp_core::PluginHealth;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::config::CacheConfig;
use super::service::CacheError;

pub(crate) struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    address: String,
}

impl RedisStore {
    pub(super) async fn connect(config: &CacheConfig) -> Result<Self, CacheError> {
        let address = format!("redis {}:{}/{}", config.host, config.port, config.db);
        let fail = |e: redis::RedisError| CacheError::Backend {
            backend: address.clone(),
            message: e.to_string(),
        };
        let mut settings = RedisConnectionInfo::default().set_db(i64::from(config.db));
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose());
        }
        let info = ConnectionAddr::Tcp(config.host.clone(), config.port)
            .into_connection_info()
            .map_err(fail)?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(fail)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(fail)?;
        Ok(Self {
            connection,
            prefix: config.key_prefix.clone(),
            address,
        })
    }

    pub(super) fn describe(&self) -> String {
        self.address.clone()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn fail(&self, e: redis::RedisError) -> CacheError {
        CacheError::Backend {
            backend: self.address.clone(),
            message: e.to_string(),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut connection = self.connection.clone();
        connection
            .get::<_, Option<Vec<u8>>>(self.key(key))
            .await
            .map_err(|e| self.fail(e))
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let key = self.key(key);
        let result = match ttl {
            Some(ttl) => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                connection.pset_ex::<_, _, ()>(key, value, millis).await
            }
            None => connection.set::<_, _, ()>(key, value).await,
        };
        result.map_err(|e| self.fail(e))
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        connection
            .del::<_, u64>(self.key(key))
            .await
            .map(|n| n > 0)
            .map_err(|e| self.fail(e))
    }

    pub(super) async fn health(&self) -> PluginHealth {
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let answer: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok(_) => PluginHealth::healthy()
                .with_message(format!("{}: PING answered", self.address))
                .with_detail("latencyMs", latency_ms),
            Err(e) => PluginHealth::unhealthy(format!("{}: {e}", self.address))
                .with_detail("latencyMs", latency_ms),
        }
    }
}
