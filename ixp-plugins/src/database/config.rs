//! The typed configuration of `database-plugin`.

use std::collections::BTreeMap;
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
    /// MongoDB (feature `database-mongodb`).
    Mongodb,
}

/// The longest `connectTimeoutMs` (SQLite's busy timeout is an `i32` of milliseconds).
const MAX_CONNECT_TIMEOUT_MS: u64 = i32::MAX as u64;

impl DatabaseType {
    /// The Cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            DatabaseType::Sqlite => "database-sqlite",
            DatabaseType::Postgresql => "database-postgres",
            DatabaseType::Mongodb => "database-mongodb",
        }
    }

    /// Whether this build has the backend.
    pub fn is_compiled_in(self) -> bool {
        match self {
            DatabaseType::Sqlite => cfg!(feature = "database-sqlite"),
            DatabaseType::Postgresql => cfg!(feature = "database-postgres"),
            DatabaseType::Mongodb => cfg!(feature = "database-mongodb"),
        }
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseType::Sqlite => "sqlite",
            DatabaseType::Postgresql => "postgresql",
            DatabaseType::Mongodb => "mongodb",
        }
    }

    /// The server port used when the config gives none.
    pub fn default_port(self) -> u16 {
        match self {
            DatabaseType::Sqlite => 0,
            DatabaseType::Postgresql => 5432,
            DatabaseType::Mongodb => 27017,
        }
    }

    /// Whether the backend speaks SQL (and so can run migrations).
    pub fn is_sql(self) -> bool {
        !matches!(self, DatabaseType::Mongodb)
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
    /// `sqlite`, `postgresql` or `mongodb`.
    #[serde(rename = "type")]
    pub kind: DatabaseType,
    /// sqlite: the database file, created (with its directory) if absent.
    pub filename: PathBuf,
    /// postgresql, mongodb: server host.
    pub host: String,
    /// postgresql, mongodb: server port (default 5432 for PostgreSQL, 27017 for MongoDB).
    pub port: Option<u16>,
    /// postgresql, mongodb: user name (PostgreSQL default `postgres`; MongoDB
    /// authenticates only when a user name is given).
    pub username: Option<String>,
    /// postgresql, mongodb: password.
    pub password: Option<Secret>,
    /// postgresql, mongodb: database name (default `postgres` for PostgreSQL, `ixp` for
    /// MongoDB unless the connection string names one).
    pub database: Option<String>,
    /// postgresql, mongodb: require TLS (rustls).
    pub ssl: bool,
    /// postgresql, mongodb: a `postgres://` or `mongodb://` / `mongodb+srv://` URL used
    /// instead of host, port, username and password (it may hold a password, so it is a
    /// secret).
    pub connection_string: Option<Secret>,
    /// mongodb: extra connection-string options, e.g. `{ appName = "ixp",
    /// directConnection = true, replicaSet = "rs0" }` (the MongoDB URI option names).
    pub options: BTreeMap<String, OptionValue>,
    /// Pool bounds.
    pub pool: PoolConfig,
    /// How long to wait for a connection (connect or from the pool), in milliseconds.
    pub connect_timeout_ms: u64,
    /// sql backends: a directory of `sqlx` migrations (`<version>_<name>.sql`) run at
    /// start.
    pub migrations: Option<PathBuf>,
}

/// The value of one MongoDB connection-string option.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OptionValue {
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(i64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Number(n) => write!(f, "{n}"),
            OptionValue::Text(t) => f.write_str(t),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            kind: if cfg!(feature = "database-sqlite") {
                DatabaseType::Sqlite
            } else if cfg!(feature = "database-postgres") {
                DatabaseType::Postgresql
            } else if cfg!(feature = "database-mongodb") {
                DatabaseType::Mongodb
            } else {
                DatabaseType::Sqlite
            },
            filename: PathBuf::from("data/ixp.db"),
            host: "127.0.0.1".into(),
            port: None,
            username: None,
            password: None,
            database: None,
            ssl: false,
            connection_string: None,
            options: BTreeMap::new(),
            pool: PoolConfig::default(),
            connect_timeout_ms: 5000,
            migrations: None,
        }
    }
}

impl DatabaseConfig {
    /// The port to connect to: the configured one or the backend's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.kind.default_port())
    }

    /// The database to use: the configured one or the backend's default (`postgres`
    /// for PostgreSQL, `ixp` for MongoDB).
    pub fn effective_database(&self) -> &str {
        match (&self.database, self.kind) {
            (Some(name), _) => name,
            (None, DatabaseType::Mongodb) => "ixp",
            (None, _) => "postgres",
        }
    }

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
        } else if self.connect_timeout_ms > MAX_CONNECT_TIMEOUT_MS {
            // SQLite takes it as its busy timeout, a signed 32-bit count of ms.
            found.push(ConfigViolation::new(
                "connectTimeoutMs",
                format!("must be at most {MAX_CONNECT_TIMEOUT_MS} (about 24 days)"),
            ));
        }
        match self.kind {
            DatabaseType::Sqlite => {
                if self.filename.as_os_str().is_empty() {
                    found.push(ConfigViolation::new("filename", "must not be empty"));
                }
            }
            DatabaseType::Postgresql | DatabaseType::Mongodb => {
                let schemes: &[&str] = if self.kind == DatabaseType::Postgresql {
                    &["postgres://", "postgresql://"]
                } else {
                    &["mongodb://", "mongodb+srv://"]
                };
                if let Some(url) = &self.connection_string {
                    let url = url.expose();
                    if !schemes.iter().any(|scheme| url.starts_with(scheme)) {
                        found.push(ConfigViolation::new(
                            "connectionString",
                            format!("must be a {} URL", schemes.join(" or ")),
                        ));
                    }
                } else {
                    if self.host.trim().is_empty() {
                        found.push(ConfigViolation::new("host", "must not be empty"));
                    }
                    if self.port == Some(0) {
                        found.push(ConfigViolation::new("port", "must not be 0"));
                    }
                }
                if self.password.is_some()
                    && self.username.is_none()
                    && self.connection_string.is_none()
                    && self.kind == DatabaseType::Mongodb
                {
                    found.push(ConfigViolation::new(
                        "password",
                        "is set but `username` is not; MongoDB needs both to authenticate",
                    ));
                }
            }
        }
        if !self.options.is_empty() && self.kind != DatabaseType::Mongodb {
            found.push(ConfigViolation::new(
                "options",
                format!(
                    "are MongoDB connection-string options; the `{}` backend takes none",
                    self.kind.as_str()
                ),
            ));
        }
        for key in self.options.keys() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                found.push(ConfigViolation::new(
                    format!("options.{key}"),
                    "is not a MongoDB connection-string option name",
                ));
            }
        }
        if self.migrations.is_some() && !self.kind.is_sql() {
            found.push(ConfigViolation::new(
                "migrations",
                format!("SQL migrations cannot run on `{}`", self.kind.as_str()),
            ));
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
