//! cache-plugin with the memory backend: config checks, the service API, TTLs, the
//! size bound, health, and use by a plugin that depends on it.

use std::time::Duration;

use ixp_core::config::{ConfigLoader, Format};
use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, HealthStatus, Host, NoConfig, Plugin, PluginContext,
};
use ixp_plugins::cache::{Cache, CacheBackend, CacheConfig, CachePlugin};

fn config(toml: &str) -> ixp_core::IxpConfig {
    ConfigLoader::new()
        .text(Format::Toml, toml)
        .env_vars(Vec::<(String, String)>::new())
        .load()
        .expect("config loads")
}

fn problems(toml: &str) -> Vec<String> {
    let catalog = Catalog::new().with::<CachePlugin>();
    match check(&catalog, &config(toml)) {
        Ok(_) => Vec::new(),
        Err(report) => report.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_guide_memory_config_is_accepted() {
    assert!(
        problems("[plugins.cache-plugin]\ntype = \"memory\"\nmaxSize = 1000\nttl = 3600\n")
            .is_empty()
    );
}

#[test]
fn each_bad_field_is_reported_with_its_path() {
    let found = problems(
        "[plugins.cache-plugin]\ntype = \"memcached\"\nmaxSize = -1\nttl = \"soon\"\nkeyprefix = \"x\"\n",
    );
    let joined = found.join("\n");
    for expected in [
        "plugins.cache-plugin.type: unknown variant `memcached`",
        "plugins.cache-plugin.maxSize: invalid value: integer `-1`",
        "plugins.cache-plugin.ttl: invalid type: string \"soon\", expected u64",
        "plugins.cache-plugin.keyprefix: unknown key; did you mean `keyPrefix`?",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in\n{joined}"
        );
    }
    let zero = problems("[plugins.cache-plugin]\nmaxSize = 0\n").join("\n");
    assert!(
        zero.contains("plugins.cache-plugin.maxSize: must be at least 1"),
        "{zero}"
    );
}

#[cfg(not(feature = "services"))]
#[test]
fn a_backend_that_is_not_compiled_in_names_its_feature() {
    let found = problems("[plugins.cache-plugin]\ntype = \"redis\"\n").join("\n");
    assert!(
        found.contains("plugins.cache-plugin.type: the `redis` backend is not compiled in; enable the Cargo feature `cache-redis`"),
        "{found}"
    );
}

async fn memory_cache(max_size: u64, ttl: u64) -> Cache {
    Cache::connect(&CacheConfig {
        backend: CacheBackend::Memory,
        max_size,
        ttl,
        ..CacheConfig::default()
    })
    .await
    .expect("memory cache")
}

#[tokio::test]
async fn get_set_delete_and_the_typed_layer() {
    let cache = memory_cache(100, 0).await;
    assert_eq!(cache.get("k").await.expect("get"), None);
    cache.set("k", b"v".to_vec(), None).await.expect("set");
    assert_eq!(cache.get("k").await.expect("get"), Some(b"v".to_vec()));
    assert!(cache.delete("k").await.expect("delete"));
    assert!(!cache.delete("k").await.expect("delete again"));
    cache
        .set_json("n", &[1, 2, 3], None)
        .await
        .expect("set_json");
    assert_eq!(
        cache.get_json::<Vec<u8>>("n").await.expect("get_json"),
        Some(vec![1, 2, 3])
    );
    let wrong = cache
        .get_json::<String>("n")
        .await
        .expect_err("not a string");
    assert!(wrong.to_string().contains("key `n`"), "{wrong}");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
}

#[tokio::test]
async fn entries_expire_after_their_own_ttl_or_the_default() {
    let cache = memory_cache(100, 1).await;
    cache
        .set("short", "a", Some(Duration::from_millis(100)))
        .await
        .expect("set");
    cache.set("default", "b", None).await.expect("set");
    cache
        .set("long", "c", Some(Duration::from_secs(60)))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get("short").await.expect("get"), None);
    assert!(cache.get("default").await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(cache.get("default").await.expect("get"), None);
    assert!(cache.get("long").await.expect("get").is_some());
}

#[tokio::test]
async fn the_size_bound_holds() {
    let cache = memory_cache(50, 0).await;
    for i in 0..500 {
        cache
            .set(&format!("k{i}"), vec![0u8; 8], None)
            .await
            .expect("set");
    }
    let health = cache.health().await;
    let entries = health
        .details
        .get("entries")
        .and_then(|v| v.as_u64())
        .expect("entries");
    assert!(entries <= 50, "{entries} entries kept with maxSize 50");
}

#[ixp_plugin(name = "cache-user-plugin", version = "1.0.0", dependencies = ["cache-plugin >=0.1"])]
struct CacheUser {
    cache: std::sync::Arc<Cache>,
}

impl Plugin for CacheUser {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            cache: ctx.services().get::<Cache>("cache")?,
        })
    }
    async fn start(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        self.cache
            .set("started-by", "cache-user-plugin", None)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_dependent_plugin_uses_the_service_and_stop_removes_it() {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<CachePlugin>(CacheConfig::default())
        .plugin::<CacheUser>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let cache = host
        .services()
        .get::<Cache>("cache")
        .expect("cache service");
    assert_eq!(
        cache.get("started-by").await.expect("get"),
        Some(b"cache-user-plugin".to_vec())
    );
    let health = host.health().await;
    assert_eq!(health.status, HealthStatus::Healthy);
    let cache_health = &health.plugins["cache-plugin"];
    assert!(
        cache_health.details.contains_key("hitRate"),
        "{cache_health:?}"
    );
    host.stop().await.expect("stop");
    assert!(host.services().get::<Cache>("cache").is_err());
}

/// A restart keeps the cache and the `cache` service registered (the host removes a
/// plugin's services before its `restart`).
#[tokio::test]
async fn a_restart_keeps_the_cache_and_the_service() {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<CachePlugin>(CacheConfig::default())
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let cache = host.services().get::<Cache>("cache").expect("service");
    cache.set("kept", "yes", None).await.expect("set");
    host.restart("cache-plugin").await.expect("restart");
    let after = host
        .services()
        .get::<Cache>("cache")
        .expect("the service after the restart");
    assert_eq!(after.get("kept").await.expect("get"), Some(b"yes".to_vec()));
    host.stop().await.expect("stop");
}
