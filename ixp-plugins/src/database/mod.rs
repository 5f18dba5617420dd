//! `database-plugin`: the guide's DatabasePlugin. One pool per server, chosen by `type`:
//!
//! * `sqlite` (feature `database-sqlite`, the embedded default): a file, created if
//!   absent (SQLite is compiled into the binary);
//! * `postgresql` (feature `database-postgres`): a PostgreSQL server over TCP, TLS by
//!   rustls when `ssl = true`;
//! * `mongodb` (feature `database-mongodb`): a MongoDB server (or replica set, or
//!   `mongodb+srv://` cluster) through the official `mongodb` driver.
//!
//! The SQL backends go through `sqlx`. The `database` service ([`Database`]) hands out
//! the pool of the right kind, typed ([`Database::sqlite`], [`Database::postgres`],
//! [`Database::mongo`]). Health is a real round trip (`SELECT 1`, MongoDB `ping`) with
//! its latency; pools reconnect by themselves, so the plugin turns healthy again when
//! the server returns. Optional SQL migrations (a directory of `sqlx` migrations) run
//! at start.
//!
//! ```toml
//! [plugins.database-plugin]
//! type = "sqlite"
//! filename = "data/ixp.db"
//!
//! # PostgreSQL, with the guide's fields:
//! # type = "postgresql"
//! # host = "127.0.0.1"
//! # port = 5432
//! # username = "postgres"
//! # password = "${DB_PASSWORD:-}"
//! # database = "app"
//! # ssl = false
//! # pool = { min = 2, max = 10 }
//! # or: connectionString = "${DATABASE_URL}"
//! # migrations = "migrations"   # run at start when set
//!
//! # MongoDB, as in the guide:
//! # type = "mongodb"
//! # connectionString = "${MONGODB_URL}"      # or host/port/username/password/database
//! # options = { appName = "ixp", directConnection = true }
//! ```
//!
//! ```
//! # #[cfg(feature = "database-sqlite")]
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ixp_core::Host;
//! use ixp_plugins::database::{Database, DatabaseConfig, DatabasePlugin};
//!
//! let dir = std::env::temp_dir().join(format!("ixp-db-doc-{}", std::process::id()));
//! let config = DatabaseConfig { filename: dir.join("app.db"), ..DatabaseConfig::default() };
//! let host = Host::builder().plugin::<DatabasePlugin>(config).build()?;
//! host.launch().await?;
//! let db = host.services().get::<Database>("database")?;
//! let pool = db.sqlite().expect("a SQLite pool");
//! let (one,): (i64,) = sqlx::query_as("SELECT 1").fetch_one(pool).await?;
//! assert_eq!(one, 1);
//! host.stop().await?;
//! # std::fs::remove_dir_all(dir).ok();
//! # Ok(()) }
//! # #[cfg(not(feature = "database-sqlite"))] fn main() {}
//! ```

mod config;
#[cfg(feature = "database-mongodb")]
mod mongo;
mod service;

pub use config::{DatabaseConfig, DatabaseType, OptionValue, PoolConfig};
pub use service::{Database, DatabaseError, Pool};

use ixp_core::{ixp_plugin, BoxError, ConfigViolation, Plugin, PluginContext, PluginHealth};
use std::sync::Arc;

/// How long a stop waits for the connections in use to be returned before it closes
/// the pool without them: at most this, and at most half the plugin's hook timeout.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The guide's DatabasePlugin: registers the `database` service ([`Database`]).
#[ixp_plugin(
    name = "database-plugin",
    version = "0.1.0",
    description = "Database pool (SQLite, PostgreSQL or MongoDB) registered as the `database` service",
    provides = ["database"],
    optional_dependencies = ["logging-plugin"],
    feature = "database-sqlite, database-postgres, database-mongodb",
)]
pub struct DatabasePlugin {
    database: Arc<Database>,
    config: DatabaseConfig,
}

impl Plugin for DatabasePlugin {
    type Config = DatabaseConfig;

    fn validate_config(config: &DatabaseConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: DatabaseConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let database = Arc::new(Database::connect(&config).await?);
        ctx.logger()
            .info(format_args!("connected to {}", database.describe()));
        ctx.services().register_arc("database", database.clone())?;
        Ok(Self { database, config })
    }

    /// Applies the migrations. After a stop (this plugin restarted as a dependent of a
    /// plugin it depends on, such as logging-plugin), connects a new pool, and registers
    /// the service again: a plugin that depends on this one looks it up in its own
    /// `start`, which follows.
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        if self.database.is_closed() {
            self.database = Arc::new(Database::connect(&self.config).await?);
            ctx.logger().info(format_args!(
                "connected again to {}",
                self.database.describe()
            ));
        }
        // A restart removed the service (see `register_arc_again`).
        ctx.services()
            .register_arc_again("database", self.database.clone())?;
        if let Some(dir) = &self.config.migrations {
            let applied = self.database.migrate(dir).await?;
            ctx.logger().info(format_args!(
                "migrations in {} applied ({applied} new)",
                dir.display()
            ));
        }
        Ok(())
    }

    /// Closes the pool. Connections still in use after [`CLOSE_GRACE`] (or half the
    /// hook timeout, if shorter: a task that holds one for good, a plugin that uses the
    /// service without depending on this one) are left to close when returned, and
    /// said: the stop does not wait for them.
    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let close_grace = CLOSE_GRACE.min(ctx.hook_timeout() / 2);
        let grace = humantime::format_duration(close_grace);
        match self.database.close(close_grace).await {
            Ok(()) => ctx.logger().info("pool closed"),
            Err(Some(in_use)) => ctx.logger().warn(format_args!(
                "pool closed with {in_use} connection(s) still in use after {grace}: each closes when its holder returns it"
            )),
            Err(None) => ctx.logger().warn(format_args!(
                "pool closed with connections, cursors or sessions still in use after {grace}: ended at once"
            )),
        }
        Ok(())
    }

    /// Keeps the pool (a closed one cannot be opened again, and dependents may hold the
    /// service): registers the service again and applies the migrations, as `start`.
    async fn restart(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        self.start(ctx).await
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        self.database.health().await
    }
}
