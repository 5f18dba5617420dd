//! The typed configuration of `database-plugin`.

use std::path::PathBuf;

use ixp_core::{ConfigViolation, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// Which database server (the guide's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    /// SQLite, embedded (feature `database-sqlite`).
    Sqlite,
    /// PostgreSQL (feature `database-postgres`).
    Postgresql,
}

impl DatabaseType {
    /// The Cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            DatabaseType::Sqlite => "database-sqlite",
            DatabaseType::Postgresql => "database-postgres",
        }
    }

    /// Whether this build has the backend.
    pub fn is_compiled_in(self) -> bool {
        match self {
            DatabaseType::Sqlite => cfg!(feature = "database-sqlite"),
            DatabaseType::Postgresql => cfg!(feature = "database-postgres"),
        }
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseType::Sqlite => "sqlite",
            DatabaseType::Postgresql => "postgresql",
        }
    }
}

/// Pool bounds (the guide's `pool.min` / `pool.max`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections kept open even when idle.
    pub min: u32,
    /// The most connections open at once.
    pub max: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { min: 0, max: 10 }
    }
}

/// Configuration of `database-plugin` (keys in camelCase, as in the guide).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DatabaseConfig {
    /// `sqlite` or `postgresql`.
    #[serde(rename = "type")]
    pub kind: DatabaseType,
    /// sqlite: the database file, created (with its directory) if absent.
    pub filename: PathBuf,
    /// postgresql: server host.
    pub host: String,
    /// postgresql: server port.
    pub port: u16,
    /// postgresql: user name.
    pub username: String,
    /// postgresql: password.
    pub password: Option<Secret>,
    /// postgresql: database name.
    pub database: String,
    /// postgresql: require TLS (rustls).
    pub ssl: bool,
    /// postgresql: a `postgres://` URL used instead of the fields above (may hold a
    /// password, so it is a secret).
    pub connection_string: Option<Secret>,
    /// Pool bounds.
    pub pool: PoolConfig,
    /// How long to wait for a connection (connect or from the pool), in milliseconds.
    pub connect_timeout_ms: u64,
    /// A directory of `sqlx` migrations (`<version>_<name>.sql`) run at start.
    pub migrations: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            kind: if cfg!(feature = "database-sqlite") || !cfg!(feature = "database-postgres") {
                DatabaseType::Sqlite
            } else {
                DatabaseType::Postgresql
            },
            filename: PathBuf::from("data/ixp.db"),
            host: "127.0.0.1".into(),
            port: 5432,
            username: "postgres".into(),
            password: None,
            database: "postgres".into(),
            ssl: false,
            connection_string: None,
            pool: PoolConfig::default(),
            connect_timeout_ms: 5000,
            migrations: None,
        }
    }
}

impl DatabaseConfig {
    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        if !self.kind.is_compiled_in() {
            found.push(ConfigViolation::new(
                "type",
                format!(
                    "the `{}` backend is not compiled in; enable the Cargo feature `{}`",
                    self.kind.as_str(),
                    self.kind.feature()
                ),
            ));
        }
        if self.pool.max == 0 {
            found.push(ConfigViolation::new("pool.max", "must be at least 1"));
        }
        if self.pool.min > self.pool.max {
            found.push(ConfigViolation::new(
                "pool.min",
                format!("must not exceed pool.max ({})", self.pool.max),
            ));
        }
        if self.connect_timeout_ms == 0 {
            found.push(ConfigViolation::new(
                "connectTimeoutMs",
                "must be at least 1",
            ));
        }
        match self.kind {
            DatabaseType::Sqlite => {
                if self.filename.as_os_str().is_empty() {
                    found.push(ConfigViolation::new("filename", "must not be empty"));
                }
            }
            DatabaseType::Postgresql => {
                if let Some(url) = &self.connection_string {
                    let url = url.expose();
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        found.push(ConfigViolation::new(
                            "connectionString",
                            "must be a postgres:// or postgresql:// URL",
                        ));
                    }
                } else {
                    if self.host.trim().is_empty() {
                        found.push(ConfigViolation::new("host", "must not be empty"));
                    }
                    if self.port == 0 {
                        found.push(ConfigViolation::new("port", "must not be 0"));
                    }
                }
            }
        }
        if let Some(dir) = &self.migrations {
            if !dir.is_dir() {
                found.push(ConfigViolation::new(
                    "migrations",
                    format!("`{}` is not a directory", dir.display()),
                ));
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}
