//! Configuration: the guide's plugins.json unchanged, TOML, interpolation, environment
//! overrides, profiles, parse errors.

use std::path::PathBuf;
use std::time::Duration;

use ixp_core::config::{ConfigLoader, Format};
use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, ConfigError, JsonSchema, Plugin, PluginContext, Secret,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DatabaseConfig {
    connection_string: Secret,
    #[serde(default = "ten")]
    pool_size: u32,
}

fn ten() -> u32 {
    10
}

#[ixp_plugin(name = "database-plugin", version = "1.0.0")]
struct DatabasePlugin;

impl Plugin for DatabasePlugin {
    type Config = DatabaseConfig;
    async fn initialize(_: DatabaseConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(DatabasePlugin)
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    host: String,
    port: u16,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct CacheConfig {
    redis: Option<RedisConfig>,
    ttl: Option<u64>,
}

#[ixp_plugin(name = "cache-plugin", version = "1.0.0")]
struct CachePlugin;

impl Plugin for CachePlugin {
    type Config = CacheConfig;
    async fn initialize(_: CacheConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(CachePlugin)
    }
}

fn catalog() -> Catalog {
    Catalog::new()
        .with::<DatabasePlugin>()
        .with::<CachePlugin>()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

const GUIDE_ENV: [(&str, &str); 3] = [
    ("DATABASE_URL", "postgres://app:s3cret-pw@db/app"),
    ("REDIS_HOST", "cache.local"),
    ("REDIS_PORT", "6380"),
];

#[test]
fn the_guides_plugins_json_loads_unchanged() {
    let config = ConfigLoader::new()
        .file(fixture("plugins.json"))
        .env_vars(GUIDE_ENV)
        .load()
        .expect("loads");
    let database = config.plugin("database-plugin").expect("section");
    assert!(database.enabled);
    assert_eq!(database.module.as_deref(), Some("./plugins/DatabasePlugin"));
    let plan = check(&catalog(), &config).expect("valid");
    assert_eq!(plan.start_order(), ["cache-plugin", "database-plugin"]);
    let entries = plan.entries();
    assert_eq!(
        entries[0].config,
        serde_json::json!({"redis": {"host": "cache.local", "port": 6380}, "ttl": null})
    );
    // The connection string is a secret: the plan shows it masked.
    assert_eq!(
        entries[1].config,
        serde_json::json!({"connectionString": "********", "poolSize": 10})
    );
}

#[test]
fn the_guides_plugins_json_without_its_variables_names_each_one() {
    let config = ConfigLoader::new()
        .file(fixture("plugins.json"))
        .env_vars(Vec::<(String, String)>::new())
        .load()
        .expect("loads");
    let report = check(&catalog(), &config).expect_err("variables unset");
    let found: Vec<String> = report.problems().iter().map(ToString::to_string).collect();
    for (var, path) in [
        ("DATABASE_URL", "plugins.database-plugin.connectionString"),
        ("REDIS_HOST", "plugins.cache-plugin.redis.host"),
        ("REDIS_PORT", "plugins.cache-plugin.redis.port"),
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(&format!("{path}: environment variable `{var}` is not set"))),
            "{var}: {found:?}"
        );
    }
}

#[test]
fn toml_and_json_are_equivalent() {
    let toml = r#"
        [plugins.cache-plugin]
        ttl = 30
        [plugins.cache-plugin.redis]
        host = "h"
        port = 1
        [plugins.database-plugin]
        connectionString = "x"
    "#;
    let json = r#"{"plugins": {"cache-plugin": {"ttl": 30, "redis": {"host": "h", "port": 1}},
                   "database-plugin": {"connectionString": "x"}}}"#;
    let a = ConfigLoader::new()
        .text(Format::Toml, toml)
        .env_vars(GUIDE_ENV)
        .load()
        .expect("toml");
    let b = ConfigLoader::new()
        .text(Format::Json, json)
        .env_vars(GUIDE_ENV)
        .load()
        .expect("json");
    assert_eq!(a.plugins(), b.plugins());
}

#[test]
fn environment_overrides_match_existing_keys_whatever_their_case() {
    let config = ConfigLoader::new()
        .file(fixture("plugins.json"))
        .env_vars(GUIDE_ENV.into_iter().chain([
            ("IXP_SERVER__PORT", "4000"),
            ("IXP_SERVER__SHUTDOWN_TIMEOUT", "5s"),
            ("IXP_PLUGINS__CACHE_PLUGIN__REDIS__PORT", "7000"),
            ("IXP_PLUGINS__CACHE_PLUGIN__TTL", "60"),
            ("IXP_PLUGINS__DATABASE_PLUGIN__POOL_SIZE", "20"),
        ]))
        .load()
        .expect("loads");
    assert_eq!(config.server().port, 4000);
    assert_eq!(config.server().shutdown_timeout, Duration::from_secs(5));
    let plan = check(&catalog(), &config).expect("valid");
    let entries = plan.entries();
    assert_eq!(entries[0].config["redis"]["port"], 7000);
    assert_eq!(entries[0].config["ttl"], 60);
    assert_eq!(entries[1].config["poolSize"], 20);
}

#[test]
fn an_environment_override_can_disable_a_plugin() {
    let config = ConfigLoader::new()
        .file(fixture("plugins.json"))
        .env_vars(
            GUIDE_ENV
                .into_iter()
                .chain([("IXP_PLUGINS__DATABASE_PLUGIN__ENABLED", "false")]),
        )
        .load()
        .expect("loads");
    let plan = check(&catalog(), &config).expect("valid");
    assert_eq!(plan.start_order(), ["cache-plugin"]);
}

#[test]
fn profiles_are_selected_by_ixp_env() {
    let toml = r#"
        [server]
        port = 3001
        [plugins.cache-plugin]
        ttl = 10
        [profiles.production.server]
        port = 80
        [profiles.production.plugins.cache-plugin]
        ttl = 600
        [profiles.test.plugins.cache-plugin]
        ttl = 1
        [plugins.database-plugin]
        connectionString = "x"
    "#;
    let load = |env: &str| {
        ConfigLoader::new()
            .text(Format::Toml, toml)
            .env_vars([("IXP_ENV", env)])
            .load()
            .expect("loads")
    };
    let production = load("production");
    assert_eq!(production.profile(), "production");
    assert_eq!(production.server().port, 80);
    assert_eq!(
        production.plugin("cache-plugin").expect("section").config["ttl"],
        600
    );
    assert_eq!(
        load("test").plugin("cache-plugin").expect("section").config["ttl"],
        1
    );
    let development = load("development");
    assert_eq!(development.server().port, 3001);
    assert_eq!(
        development.plugin("cache-plugin").expect("section").config["ttl"],
        10
    );
}

#[test]
fn a_profile_the_file_lacks_is_an_error_naming_the_profiles_it_has() {
    let toml = "[server]\nport = 3001\n[profiles.production.server]\nport = 80\n[profiles.test.server]\nport = 81\n";
    let err = ConfigLoader::new()
        .text(Format::Toml, toml)
        .env_vars([("IXP_ENV", "prod")])
        .load()
        .expect_err("a typo");
    assert_eq!(
        err.to_string(),
        "config file <inline>: IXP_ENV names the profile `prod`, which is not in `profiles` (it has: production, test)"
    );
    let err = ConfigLoader::new()
        .text(Format::Toml, toml)
        .profile("staging")
        .load()
        .expect_err("not there either");
    assert!(
        err.to_string()
            .contains("ConfigLoader::profile names the profile `staging`"),
        "{err}"
    );
    // `development` is the root settings: no profile of that name is needed.
    let development = ConfigLoader::new()
        .text(Format::Toml, toml)
        .env_vars([("IXP_ENV", "development")])
        .load()
        .expect("the root settings");
    assert_eq!(development.server().port, 3001);
    // A file without profiles takes any name (nothing to pick from).
    let plain = ConfigLoader::new()
        .text(Format::Toml, "[server]\nport = 3002\n")
        .env_vars([("IXP_ENV", "production")])
        .load()
        .expect("no profiles at all");
    assert_eq!(plain.server().port, 3002);
    let err = ConfigLoader::new()
        .text(Format::Toml, "profiles = 3\n")
        .load()
        .expect_err("not a table");
    assert!(
        err.to_string().contains("`profiles` must be a table"),
        "{err}"
    );
    let err = ConfigLoader::new()
        .text(Format::Toml, "[profiles]\nproduction = \"x\"\n")
        .env_vars([("IXP_ENV", "production")])
        .load()
        .expect_err("a profile that is not a table");
    assert!(
        err.to_string()
            .contains("`profiles.production` must be a table of settings"),
        "{err}"
    );
}

#[test]
fn parse_errors_name_the_file_and_position() {
    let dir = std::env::temp_dir().join(format!("ixp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.toml");
    std::fs::write(&path, "[plugins.cache-plugin\nttl = 1\n").expect("write");
    let err = ConfigLoader::new().file(&path).load().expect_err("broken");
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(text.contains("broken.toml is not valid TOML"), "{text}");
    assert!(text.contains("line 1"), "{text}");
    let missing = ConfigLoader::new()
        .file(dir.join("nope.toml"))
        .load()
        .expect_err("missing");
    assert!(
        missing.to_string().starts_with("cannot read config file "),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_enabled_or_hook_timeout_is_a_problem_with_its_path() {
    let config = ConfigLoader::new()
        .text(
            Format::Toml,
            "[plugins.cache-plugin]\nenabled = \"maybe\"\n[plugins.database-plugin]\nconnectionString = \"x\"\nhook_timeout = \"soon\"\n",
        )
        .env_vars(Vec::<(String, String)>::new())
        .load()
        .expect("loads");
    let report = check(&catalog(), &config).expect_err("problems");
    let found: Vec<String> = report.problems().iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with(
            "plugins.cache-plugin.enabled: invalid type: string \"maybe\", expected a boolean"
        ),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("plugins.database-plugin.hook_timeout: invalid duration \"soon\""),
        "{found:?}"
    );
}
