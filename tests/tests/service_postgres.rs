//! database-plugin with PostgreSQL, against the machine's server (127.0.0.1:5432,
//! trust auth, database `test`; `IXP_TEST_PG_PORT` to change the port), reached through
//! a TCP proxy the test can cut to play an outage.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::net::SocketAddr;
use std::time::Duration;

use ixp_core::{
    ixp_plugin, BoxError, Catalog, HealthStatus, Host, NoConfig, Plugin, PluginContext, Secret,
};
use ixp_plugins::database::{Database, DatabaseConfig, DatabasePlugin, DatabaseType, PoolConfig};
use ixp_plugins::sqlx;
use ixp_tests::proxy::Proxy;

fn pg_address() -> SocketAddr {
    let port = std::env::var("IXP_TEST_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn pg_config(port: u16) -> DatabaseConfig {
    DatabaseConfig {
        kind: DatabaseType::Postgresql,
        host: "127.0.0.1".into(),
        port: Some(port),
        username: Some("postgres".into()),
        database: Some("test".into()),
        pool: PoolConfig { min: 1, max: 4 },
        connect_timeout_ms: 1000,
        ..DatabaseConfig::default()
    }
}

#[ixp_plugin(name = "orders-plugin", version = "1.0.0", dependencies = ["database-plugin >=0.1"])]
struct OrdersPlugin {
    database: std::sync::Arc<Database>,
}

impl Plugin for OrdersPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            database: ctx.services().get::<Database>("database")?,
        })
    }
}

impl OrdersPlugin {
    async fn count(&self, table: &str) -> Result<i64, sqlx::Error> {
        let pool = self.database.postgres().ok_or(sqlx::Error::PoolClosed)?;
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(pool)
            .await?;
        Ok(n)
    }
}

#[tokio::test]
async fn a_dependent_plugin_uses_the_typed_pool_on_a_real_postgresql() {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(pg_config(pg_address().port()))
        .plugin::<OrdersPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let database = host
        .services()
        .get::<Database>("database")
        .expect("service");
    let pool = database.postgres().expect("a PostgreSQL pool");
    let table = ixp_tests::unique_name("ixp_orders");
    sqlx::query(&format!(
        "CREATE TABLE {table} (id SERIAL PRIMARY KEY, item TEXT NOT NULL)"
    ))
    .execute(pool)
    .await
    .expect("create");
    sqlx::query(&format!("INSERT INTO {table} (item) VALUES ($1)"))
        .bind("book")
        .execute(pool)
        .await
        .expect("insert");
    let (item,): (String,) = sqlx::query_as(&format!("SELECT item FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("select");
    assert_eq!(item, "book");
    let orders = OrdersPlugin {
        database: host
            .services()
            .get::<Database>("database")
            .expect("service"),
    };
    assert_eq!(orders.count(&table).await.expect("count"), 1);
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(pool)
        .await
        .expect("drop");
    let health = host.health().await;
    assert_eq!(
        health.plugins["database-plugin"].status,
        HealthStatus::Healthy
    );
    let pool = pool.clone();
    host.stop().await.expect("stop");
    assert!(pool.is_closed());
}

#[tokio::test]
async fn migrations_run_against_postgresql() {
    let dir = std::env::temp_dir().join(ixp_tests::unique_name("ixp-pg-migrations"));
    std::fs::create_dir_all(&dir).expect("dir");
    let table = ixp_tests::unique_name("ixp_migrated");
    std::fs::write(
        dir.join("0001_create.sql"),
        format!("CREATE TABLE {table} (id INT PRIMARY KEY);"),
    )
    .expect("write");
    // A database of its own, so the _sqlx_migrations table of other runs is not shared.
    let admin = Database::connect(&pg_config(pg_address().port()))
        .await
        .expect("connect");
    let db_name = ixp_tests::unique_name("ixp_mig_db");
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(admin.postgres().expect("pg"))
        .await
        .expect("create database");
    let config = DatabaseConfig {
        database: Some(db_name.clone()),
        migrations: Some(dir.clone()),
        ..pg_config(pg_address().port())
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .build()
        .expect("plan");
    host.launch().await.expect("launch with migrations");
    let database = host
        .services()
        .get::<Database>("database")
        .expect("service");
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(database.postgres().expect("pg"))
        .await
        .expect("the migrated table exists");
    assert_eq!(n, 0);
    host.stop().await.expect("stop");
    // WITH (FORCE): the server may not have ended the closed pool's backends yet.
    sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)"))
        .execute(admin.postgres().expect("pg"))
        .await
        .expect("drop database");
    assert_eq!(admin.close(std::time::Duration::from_secs(5)).await, Ok(()));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_unreachable_server_fails_initialization_naming_it_and_not_the_password() {
    let unused = ixp_tests::free_port();
    let config = DatabaseConfig {
        password: Some(Secret::new("pg-password-do-not-leak")),
        ..pg_config(unused)
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(config)
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("nothing listens");
    let message = format!("{error} {error:?}");
    assert!(message.contains("database-plugin"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{unused}")),
        "{message}"
    );
    assert!(!message.contains("pg-password-do-not-leak"), "{message}");
}

async fn wait_for(host: &Host, wanted: HealthStatus) -> ixp_core::PluginHealth {
    ixp_tests::wait_for_health(host, "database-plugin", wanted, Duration::from_secs(20)).await
}

#[tokio::test]
async fn health_follows_the_server_away_and_back_without_a_restart() {
    let mut proxy = Proxy::start(pg_address()).await.expect("proxy");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(pg_config(proxy.address().port()))
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    assert_eq!(
        wait_for(&host, HealthStatus::Healthy).await.status,
        HealthStatus::Healthy
    );

    proxy.cut().await;
    let down = wait_for(&host, HealthStatus::Unhealthy).await;
    assert_eq!(down.status, HealthStatus::Unhealthy, "{down:?}");
    assert!(
        down.message
            .as_deref()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{}", proxy.address().port())),
        "{down:?}"
    );

    proxy.restore().await.expect("restore");
    let up = wait_for(&host, HealthStatus::Healthy).await;
    assert_eq!(up.status, HealthStatus::Healthy, "{up:?}");
    host.stop().await.expect("clean stop");
}
