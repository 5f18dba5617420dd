//! database-plugin with MongoDB, against the MongoDB-wire server the project's script
//! starts (`bash scripts/test-servers/start-mongo.sh`: secantusdb on 127.0.0.1:27017, or
//! the port in `.test-servers/mongo.port`; `IXP_TEST_MONGO_PORT` overrides), reached
//! through a TCP proxy the test can cut to play an outage.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::net::SocketAddr;
use std::time::Duration;

use ixp_core::{
    ixp_plugin, BoxError, Catalog, HealthStatus, Host, NoConfig, Plugin, PluginContext, Secret,
};
use ixp_plugins::database::{
    Database, DatabaseConfig, DatabasePlugin, DatabaseType, OptionValue, PoolConfig,
};
use ixp_plugins::mongodb::bson::{doc, Document};
use ixp_tests::proxy::Proxy;

fn mongo_address() -> SocketAddr {
    let from_env = std::env::var("IXP_TEST_MONGO_PORT").ok();
    let from_file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.test-servers/mongo.port"),
    )
    .ok();
    let port = from_env
        .or(from_file)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(27017);
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mongo_config(port: u16, database: &str) -> DatabaseConfig {
    DatabaseConfig {
        kind: DatabaseType::Mongodb,
        host: "127.0.0.1".into(),
        port: Some(port),
        database: Some(database.into()),
        options: [("directConnection".to_owned(), OptionValue::Bool(true))].into(),
        pool: PoolConfig { min: 0, max: 4 },
        connect_timeout_ms: 1500,
        ..DatabaseConfig::default()
    }
}

#[ixp_plugin(name = "orders-plugin", version = "1.0.0", dependencies = ["database-plugin"])]
struct OrdersPlugin {
    orders: ixp_plugins::mongodb::Collection<Document>,
}

impl Plugin for OrdersPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let database = ctx.services().get::<Database>("database")?;
        let handle = database.mongo().ok_or("database-plugin is not MongoDB")?;
        Ok(Self {
            orders: handle.collection("orders"),
        })
    }
}

#[tokio::test]
async fn a_dependent_plugin_uses_the_typed_handle_on_a_real_mongodb_server() {
    let name = ixp_tests::unique_name("ixp_orders");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(mongo_config(mongo_address().port(), &name))
        .plugin::<OrdersPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let database = host
        .services()
        .get::<Database>("database")
        .expect("service");
    let handle = database.mongo().expect("a MongoDB handle").clone();
    assert_eq!(handle.name(), name);

    let orders = OrdersPlugin {
        orders: handle.collection("orders"),
    };
    orders
        .orders
        .insert_many([
            doc! { "item": "book", "qty": 2 },
            doc! { "item": "pen", "qty": 5 },
        ])
        .await
        .expect("insert");
    let found = orders
        .orders
        .find_one(doc! { "item": "pen" })
        .await
        .expect("find")
        .expect("the pen");
    assert_eq!(found.get_i32("qty").expect("qty"), 5);
    assert_eq!(
        orders
            .orders
            .count_documents(doc! { "qty": { "$gte": 2 } })
            .await
            .expect("count"),
        2
    );

    let health = host.health().await.plugins["database-plugin"].clone();
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(health.details.contains_key("latencyMs"), "{health:?}");
    assert!(
        health.message.as_deref().unwrap_or("").contains("ping"),
        "{health:?}"
    );
    handle.drop().await.expect("drop the test database");
    host.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_connection_string_with_options_is_used_as_given() {
    let address = mongo_address();
    let config = DatabaseConfig {
        kind: DatabaseType::Mongodb,
        connection_string: Some(Secret::new(format!(
            "mongodb://{address}/fromuri?directConnection=true"
        ))),
        options: [("appName".to_owned(), OptionValue::Text("ixp tests".into()))].into(),
        connect_timeout_ms: 1500,
        ..DatabaseConfig::default()
    };
    let database = Database::connect(&config).await.expect("connect");
    assert_eq!(database.mongo().expect("mongo").name(), "fromuri");
    assert_eq!(
        database.close(std::time::Duration::from_secs(5)).await,
        Ok(())
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_initialization_naming_it_and_not_the_password() {
    let unused = ixp_tests::free_port();
    let config = DatabaseConfig {
        username: Some("app".into()),
        password: Some(Secret::new("mongo-password-do-not-leak")),
        ..mongo_config(unused, "ixp")
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
    assert!(!message.contains("mongo-password-do-not-leak"), "{message}");
}

async fn wait_for(host: &Host, wanted: HealthStatus) -> ixp_core::PluginHealth {
    ixp_tests::wait_for_health(host, "database-plugin", wanted, Duration::from_secs(30)).await
}

#[tokio::test]
async fn health_follows_the_server_away_and_back_without_a_restart() {
    let mut proxy = Proxy::start(mongo_address()).await.expect("proxy");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<DatabasePlugin>(mongo_config(proxy.address().port(), "ixp_health"))
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
