//! The `database` service: the pool of the configured server, typed.

use std::path::Path;
use std::time::{Duration, Instant};

use ixp_core::PluginHealth;

use super::config::{DatabaseConfig, DatabaseType};

/// Why a database operation of the plugin failed. Messages name the server, never
/// the password or the connection string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// Connecting failed.
    #[error("cannot connect to {server}: {message}")]
    Connect {
        /// `sqlite <file>` or `postgresql host:port/db`.
        server: String,
        /// The cause.
        message: String,
    },
    /// A migration failed.
    #[error("migrations in `{dir}` on {server}: {message}")]
    Migrate {
        /// The directory.
        dir: String,
        /// The server.
        server: String,
        /// The cause.
        message: String,
    },
    /// The configured backend is not compiled in.
    #[error("the `{0}` database backend is not compiled in; enable the Cargo feature `{1}`")]
    NotCompiledIn(&'static str, &'static str),
}

/// The pool, by backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Pool {
    /// A SQLite pool.
    #[cfg(feature = "database-sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL pool.
    #[cfg(feature = "database-postgres")]
    Postgres(sqlx::PgPool),
    /// A MongoDB database handle (its client holds the connection pool).
    #[cfg(feature = "database-mongodb")]
    Mongo(mongodb::Database),
}

/// The `database` service: the connection pool of the configured server.
#[derive(Debug)]
pub struct Database {
    pool: Pool,
    server: String,
    timeout: Duration,
    /// [`close`](Database::close) was called: the pool takes no new connection.
    closed: std::sync::atomic::AtomicBool,
}

impl Database {
    /// Opens the pool the config describes (connecting `pool.min` connections, at least
    /// one, so that a wrong address fails here).
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DatabaseError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let server = describe(config);
        #[cfg(any(feature = "database-sqlite", feature = "database-postgres"))]
        let fail = |e: sqlx::Error| DatabaseError::Connect {
            server: server.clone(),
            message: e.to_string(),
        };
        let pool = match config.kind {
            #[cfg(feature = "database-sqlite")]
            DatabaseType::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
                if let Some(dir) = config
                    .filename
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| DatabaseError::Connect {
                        server: server.clone(),
                        message: format!("cannot create `{}`: {e}", dir.display()),
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(&config.filename)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(timeout);
                let pool = SqlitePoolOptions::new()
                    .min_connections(config.pool.min)
                    .max_connections(config.pool.max)
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(fail)?;
                Pool::Sqlite(pool)
            }
            #[cfg(feature = "database-postgres")]
            DatabaseType::Postgresql => {
                use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
                let options = match &config.connection_string {
                    Some(url) => url.expose().parse::<PgConnectOptions>().map_err(|_| {
                        DatabaseError::Connect {
                            server: server.clone(),
                            message: "connectionString is not a valid postgres:// URL".into(),
                        }
                    })?,
                    None => {
                        let mut options = PgConnectOptions::new()
                            .host(&config.host)
                            .port(config.effective_port())
                            .username(config.username.as_deref().unwrap_or("postgres"))
                            .database(config.effective_database());
                        if let Some(password) = &config.password {
                            options = options.password(password.expose());
                        }
                        options
                    }
                };
                let options = if config.ssl {
                    options.ssl_mode(PgSslMode::Require)
                } else {
                    options
                };
                let pool = PgPoolOptions::new()
                    .min_connections(config.pool.min)
                    .max_connections(config.pool.max)
                    .acquire_timeout(timeout)
                    .connect_with(options)
                    .await
                    .map_err(fail)?;
                Pool::Postgres(pool)
            }
            #[cfg(feature = "database-mongodb")]
            DatabaseType::Mongodb => Pool::Mongo(super::mongo::connect(config, &server).await?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(DatabaseError::NotCompiledIn(
                    other.as_str(),
                    other.feature(),
                ))
            }
        };
        Ok(Self {
            pool,
            server,
            timeout,
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether [`close`](Self::close) was called (a closed pool cannot be opened again:
    /// connect a new [`Database`]).
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The SQLite pool, if the backend is SQLite.
    #[cfg(feature = "database-sqlite")]
    pub fn sqlite(&self) -> Option<&sqlx::SqlitePool> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            _ => None,
        }
    }

    /// The PostgreSQL pool, if the backend is PostgreSQL.
    #[cfg(feature = "database-postgres")]
    pub fn postgres(&self) -> Option<&sqlx::PgPool> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            _ => None,
        }
    }

    /// `sqlite <file>` or `postgresql host:port/db`.
    pub fn describe(&self) -> &str {
        &self.server
    }

    /// Runs the `sqlx` migrations in `dir`; returns how many the directory holds.
    pub async fn migrate(&self, dir: &Path) -> Result<usize, DatabaseError> {
        let fail = |message: String| DatabaseError::Migrate {
            dir: dir.display().to_string(),
            server: self.server.clone(),
            message,
        };
        #[cfg(any(feature = "database-sqlite", feature = "database-postgres"))]
        {
            let migrator = sqlx::migrate::Migrator::new(dir)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let result = match &self.pool {
                #[cfg(feature = "database-sqlite")]
                Pool::Sqlite(pool) => migrator.run(pool).await,
                #[cfg(feature = "database-postgres")]
                Pool::Postgres(pool) => migrator.run(pool).await,
                #[cfg(feature = "database-mongodb")]
                Pool::Mongo(_) => return Err(fail("SQL migrations cannot run on MongoDB".into())),
            };
            result.map_err(|e| fail(e.to_string()))?;
            Ok(migrator.iter().count())
        }
        #[cfg(not(any(feature = "database-sqlite", feature = "database-postgres")))]
        Err(fail("SQL migrations cannot run on MongoDB".into()))
    }

    /// The MongoDB database handle, if the backend is MongoDB (`handle.client()` gives
    /// the client).
    #[cfg(feature = "database-mongodb")]
    pub fn mongo(&self) -> Option<&mongodb::Database> {
        #[allow(unreachable_patterns)]
        match &self.pool {
            Pool::Mongo(database) => Some(database),
            _ => None,
        }
    }

    /// A round trip (`SELECT 1`, or MongoDB `ping`), with its latency in
    /// `details.latencyMs`.
    pub async fn health(&self) -> PluginHealth {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, self.ping()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let health = match answer {
            Ok(Ok(())) => PluginHealth::healthy().with_message(format!(
                "{}: {} answered",
                self.server,
                self.probe_name()
            )),
            Ok(Err(e)) => PluginHealth::unhealthy(format!("{}: {e}", self.server)),
            Err(_) => PluginHealth::unhealthy(format!(
                "{}: no answer within {} ms",
                self.server,
                self.timeout.as_millis()
            )),
        };
        let health = health.with_detail("latencyMs", latency_ms);
        match &self.pool {
            #[cfg(feature = "database-sqlite")]
            Pool::Sqlite(pool) => health
                .with_detail("connections", pool.size())
                .with_detail("idle", pool.num_idle()),
            #[cfg(feature = "database-postgres")]
            Pool::Postgres(pool) => health
                .with_detail("connections", pool.size())
                .with_detail("idle", pool.num_idle()),
            #[cfg(feature = "database-mongodb")]
            Pool::Mongo(database) => health.with_detail("database", database.name()),
        }
    }

    fn probe_name(&self) -> &'static str {
        match &self.pool {
            #[cfg(feature = "database-mongodb")]
            Pool::Mongo(_) => "ping",
            #[allow(unreachable_patterns)]
            _ => "SELECT 1",
        }
    }

    async fn ping(&self) -> Result<(), String> {
        match &self.pool {
            #[cfg(feature = "database-sqlite")]
            Pool::Sqlite(pool) => sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "database-postgres")]
            Pool::Postgres(pool) => sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "database-mongodb")]
            Pool::Mongo(database) => super::mongo::ping(database).await,
        }
    }

    /// Closes the pool: no new connection from now on; waits up to `grace` for the
    /// connections in use to be returned, then closes without them (each closes when
    /// its holder lets it go; MongoDB ends its cursors and sessions). `Err` when some
    /// were still in use at the end of the grace: how many, where the driver says
    /// (not MongoDB's).
    pub async fn close(&self, grace: Duration) -> Result<(), Option<usize>> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        match &self.pool {
            #[cfg(feature = "database-sqlite")]
            Pool::Sqlite(pool) => close_sqlx(pool, grace).await,
            #[cfg(feature = "database-postgres")]
            Pool::Postgres(pool) => close_sqlx(pool, grace).await,
            #[cfg(feature = "database-mongodb")]
            Pool::Mongo(database) => {
                let client = database.client().clone();
                match tokio::time::timeout(grace, client.clone().shutdown()).await {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        client.shutdown().immediate(true).await;
                        Err(None)
                    }
                }
            }
        }
    }
}

/// [`Database::close`] for an sqlx pool.
#[cfg(any(feature = "database-sqlite", feature = "database-postgres"))]
async fn close_sqlx<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    grace: Duration,
) -> Result<(), Option<usize>> {
    match tokio::time::timeout(grace, pool.close()).await {
        Ok(()) => Ok(()),
        // Closed already (no new connection); those in use close when returned.
        Err(_) => Err(Some((pool.size() as usize).saturating_sub(pool.num_idle()))),
    }
}

fn describe(config: &DatabaseConfig) -> String {
    match config.kind {
        DatabaseType::Sqlite => format!("sqlite {}", config.filename.display()),
        DatabaseType::Postgresql | DatabaseType::Mongodb => match &config.connection_string {
            Some(url) => {
                let (hosts, database) = connection_target(url.expose());
                // What each backend connects to: PostgreSQL the string's database (its
                // server's default without one); MongoDB `database`, else the string's,
                // else `ixp` (see `mongo::connect`).
                let database = match config.kind {
                    DatabaseType::Mongodb => config
                        .database
                        .as_deref()
                        .or(database)
                        .unwrap_or(config.effective_database()),
                    _ => database.unwrap_or("(the server's default database)"),
                };
                format!("{} {hosts}/{database}", config.kind.as_str())
            }
            None => format!(
                "{} {}:{}/{}",
                config.kind.as_str(),
                config.host,
                config.effective_port(),
                config.effective_database()
            ),
        },
    }
}

/// The hosts and the database a connection string names, without its user, password or
/// options (`postgres://u:pw@db:5432/app?sslmode=require` -> `db:5432`, `app`), for
/// messages and logs.
fn connection_target(url: &str) -> (&str, Option<&str>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    // Everything up to the last `@` goes first: a password may hold an unencoded `/`,
    // `?` or `#` (the price: an `@` in the options hides the hosts, never a secret).
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    (hosts, Some(path).filter(|path| !path.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_string_is_described_by_its_hosts_and_database_only() {
        let described = |kind, url: &str, database: Option<&str>| {
            describe(&DatabaseConfig {
                kind,
                connection_string: Some(ixp_core::Secret::new(url)),
                database: database.map(str::to_owned),
                ..DatabaseConfig::default()
            })
        };
        assert_eq!(
            described(
                DatabaseType::Postgresql,
                "postgres://app:hunter2@db:5432/orders?sslmode=require",
                None
            ),
            "postgresql db:5432/orders"
        );
        assert_eq!(
            described(DatabaseType::Postgresql, "postgres://db", None),
            "postgresql db/(the server's default database)"
        );
        assert_eq!(
            described(
                DatabaseType::Mongodb,
                "mongodb://u:hunter2@a:1,b:2/shop?w=1",
                None
            ),
            "mongodb a:1,b:2/shop"
        );
        assert_eq!(
            described(DatabaseType::Mongodb, "mongodb://a:1/shop", Some("other")),
            "mongodb a:1/other"
        );
        assert_eq!(
            described(DatabaseType::Mongodb, "mongodb://a:1", None),
            "mongodb a:1/ixp"
        );
        // A password with the characters that end a host or a path, unencoded.
        for password in ["pa/ss", "p#ss", "p?ss", "p@ss/x"] {
            let url = format!("postgres://app:{password}@db:5432/orders");
            let shown = described(DatabaseType::Postgresql, &url, None);
            assert_eq!(shown, "postgresql db:5432/orders", "{url}");
        }
    }
}
