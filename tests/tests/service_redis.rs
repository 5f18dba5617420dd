//! cache-plugin with the Redis backend, against real Redis servers on loopback: the
//! machine's (127.0.0.1:6379, or `IXP_TEST_REDIS_PORT`) and, for the outage test, a
//! `redis-server` this test starts, stops and starts again on a free port.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ixp_core::{
    ixp_plugin, BoxError, Catalog, HealthStatus, Host, NoConfig, Plugin, PluginContext, Secret,
};
use ixp_plugins::cache::{Cache, CacheBackend, CacheConfig, CachePlugin};

fn machine_redis_port() -> u16 {
    std::env::var("IXP_TEST_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379)
}

fn redis_config(port: u16, prefix: &str) -> CacheConfig {
    CacheConfig {
        backend: CacheBackend::Redis,
        port,
        key_prefix: prefix.to_owned(),
        ttl: 60,
        timeout_ms: 500,
        ..CacheConfig::default()
    }
}

#[tokio::test]
async fn get_set_delete_ttl_and_prefix_isolation_on_a_real_redis() {
    let port = machine_redis_port();
    let a = Cache::connect(&redis_config(
        port,
        &format!("{}:", ixp_tests::unique_name("ixp-test-a")),
    ))
    .await
    .expect("connect a");
    let b = Cache::connect(&redis_config(
        port,
        &format!("{}:", ixp_tests::unique_name("ixp-test-b")),
    ))
    .await
    .expect("connect b");
    a.set("shared-name", "from a", None).await.expect("set");
    assert_eq!(
        a.get("shared-name").await.expect("get"),
        Some(b"from a".to_vec())
    );
    assert_eq!(
        b.get("shared-name").await.expect("get"),
        None,
        "keyPrefix isolates apps"
    );
    a.set_json("user", &serde_json::json!({"id": 7}), None)
        .await
        .expect("set_json");
    assert_eq!(
        a.get_json::<serde_json::Value>("user")
            .await
            .expect("get_json"),
        Some(serde_json::json!({"id": 7}))
    );
    a.set("short", "x", Some(Duration::from_millis(150)))
        .await
        .expect("set with ttl");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.get("short").await.expect("get"),
        None,
        "per-key TTL expired"
    );
    assert!(a.delete("shared-name").await.expect("delete"));
    assert!(!a.delete("shared-name").await.expect("delete again"));
    let health = a.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(health.details.contains_key("latencyMs"));
}

#[tokio::test]
async fn the_default_ttl_is_set_on_the_server() {
    let port = machine_redis_port();
    let prefix = format!("{}:", ixp_tests::unique_name("ixp-test-ttl"));
    let cache = Cache::connect(&redis_config(port, &prefix))
        .await
        .expect("connect");
    cache.set("k", "v", None).await.expect("set");
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "PTTL", &format!("{prefix}k")])
        .output();
    if let Ok(output) = output {
        let pttl: i64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(-1);
        assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_initialization_naming_the_address_not_the_password() {
    let port = ixp_tests::free_port();
    let config = CacheConfig {
        password: Some(Secret::new("redis-pass-do-not-leak")),
        ..redis_config(port, "x:")
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<CachePlugin>(config)
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("nothing listens there");
    let message = format!("{error} {error:?}");
    assert!(message.contains("cache-plugin"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("redis-pass-do-not-leak"), "{message}");
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed on this machine kind");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[ixp_plugin(name = "session-plugin", version = "1.0.0", dependencies = ["cache-plugin"])]
struct SessionPlugin {
    cache: std::sync::Arc<Cache>,
}

impl Plugin for SessionPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            cache: ctx.services().get::<Cache>("cache")?,
        })
    }
    async fn start(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        self.cache.set("session:1", "alice", None).await?;
        Ok(())
    }
}

async fn wait_for_status(host: &Host, wanted: HealthStatus) -> ixp_core::PluginHealth {
    ixp_tests::wait_for_health(host, "cache-plugin", wanted, Duration::from_secs(20)).await
}

#[tokio::test]
async fn health_goes_unhealthy_when_redis_stops_and_healthy_again_when_it_returns() {
    let server = RedisServer::start(ixp_tests::free_port());
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<CachePlugin>(redis_config(server.port, "ixp-outage:"))
        .plugin::<SessionPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let cache = host.services().get::<Cache>("cache").expect("service");
    assert_eq!(
        cache.get("session:1").await.expect("get"),
        Some(b"alice".to_vec())
    );
    assert_eq!(
        wait_for_status(&host, HealthStatus::Healthy).await.status,
        HealthStatus::Healthy
    );

    let port = server.stop();
    let down = wait_for_status(&host, HealthStatus::Unhealthy).await;
    assert_eq!(down.status, HealthStatus::Unhealthy, "{down:?}");
    assert!(
        down.message
            .as_deref()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{port}")),
        "{down:?}"
    );
    assert!(
        cache.get("session:1").await.is_err(),
        "a read while down is an error, not a hang"
    );

    let _server = RedisServer::start(port);
    let up = wait_for_status(&host, HealthStatus::Healthy).await;
    assert_eq!(up.status, HealthStatus::Healthy, "{up:?}");
    cache
        .set("after", "restart", None)
        .await
        .expect("set after the restart");
    assert_eq!(
        cache.get("after").await.expect("get"),
        Some(b"restart".to_vec())
    );

    host.stop().await.expect("clean stop");
    assert!(host.services().get::<Cache>("cache").is_err());
}
