//! The start-up check: every problem reported, each once, before anything runs.

use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, CheckReport, ConfigViolation, JsonSchema, NoConfig,
    Plugin, PluginContext, Problem, Secret,
};
use ixp_tests::{probe, toml_config, toml_config_env};
use serde::{Deserialize, Serialize};

probe!(Alpha, "alpha", []);
probe!(Beta, "beta", ["alpha"]);
probe!(NeedsNewAlpha, "needs-new-alpha", ["alpha >=2.0"]);
probe!(NeedsDatabase, "needs-database", ["database-plugin"]);
probe!(NeedsGhost, "needs-ghost", ["ghost-plugin"]);
probe!(CycleA, "cycle-a", ["cycle-b"]);
probe!(CycleB, "cycle-b", ["cycle-c"]);
probe!(CycleC, "cycle-c", ["cycle-a"]);
probe!(SelfLoop, "self-loop", ["self-loop"]);
probe!(
    OptionalUser,
    "optional-user",
    [],
    ["beta", "missing-optional"]
);

/// Same name as `Alpha`, another type.
#[ixp_plugin(name = "alpha", version = "1.5.0")]
struct AlphaImpostor;

impl Plugin for AlphaImpostor {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(AlphaImpostor)
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    password: Option<Secret>,
}

fn default_port() -> u16 {
    6379
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct CacheConfig {
    ttl: u64,
    #[serde(rename = "maxSize")]
    max_size: u64,
    redis: Option<RedisSection>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: 60,
            max_size: 1000,
            redis: None,
        }
    }
}

#[ixp_plugin(name = "cache-plugin", version = "1.2.0", provides = ["cache"])]
struct CachePlugin;

impl Plugin for CachePlugin {
    type Config = CacheConfig;

    fn validate_config(config: &CacheConfig) -> Result<(), Vec<ConfigViolation>> {
        let mut violations = Vec::new();
        if config.max_size == 0 {
            violations.push(ConfigViolation::new("maxSize", "must be at least 1"));
        }
        if config.ttl > 86_400 {
            violations.push(ConfigViolation::new("ttl", "must be at most 86400 seconds"));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    async fn initialize(_: CacheConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(CachePlugin)
    }
}

fn problems(catalog: &Catalog, toml: &str) -> Vec<String> {
    problems_env(catalog, toml, Vec::<(String, String)>::new())
}

fn problems_env(
    catalog: &Catalog,
    toml: &str,
    env: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
) -> Vec<String> {
    match check(catalog, &toml_config_env(toml, env)) {
        Ok(plan) => panic!("expected problems, got a plan {plan:?}"),
        Err(report) => report.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_valid_composition_plans_in_dependency_order() {
    let catalog = Catalog::new()
        .with::<Beta>()
        .with::<Alpha>()
        .with::<CachePlugin>();
    let plan = check(&catalog, &toml_config("[plugins.cache-plugin]\nttl = 5\n")).expect("valid");
    assert_eq!(plan.start_order(), ["alpha", "beta", "cache-plugin"]);
    let entries = plan.entries();
    assert_eq!(entries[1].starts_after, ["alpha"]);
    assert_eq!(
        entries[2].config,
        serde_json::json!({"ttl": 5, "maxSize": 1000, "redis": null})
    );
}

#[test]
fn duplicate_names() {
    let catalog = Catalog::new().with::<Alpha>().with::<AlphaImpostor>();
    let found = problems(&catalog, "");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("duplicate plugin name `alpha`: registered by `"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("Alpha`") && found[0].contains("AlphaImpostor`"),
        "{}",
        found[0]
    );
}

#[test]
fn missing_dependency_with_and_without_feature_hint() {
    let catalog = Catalog::new()
        .with::<NeedsDatabase>()
        .with::<NeedsGhost>()
        .hint("database-plugin", "database-sqlite");
    assert_eq!(
        problems(&catalog, ""),
        [
            "plugin `needs-database` depends on `database-plugin`, which is not compiled in (enable the Cargo feature `database-sqlite`)",
            "plugin `needs-ghost` depends on `ghost-plugin`, which is not compiled in",
        ]
    );
}

#[test]
fn disabled_dependency() {
    let catalog = Catalog::new().with::<Alpha>().with::<Beta>();
    assert_eq!(
        problems(&catalog, "[plugins.alpha]\nenabled = false\n"),
        ["plugin `beta` depends on `alpha`, which is disabled (plugins.alpha.enabled = false)"]
    );
    // Disabling the dependent as well is fine.
    let plan = check(
        &catalog,
        &toml_config("[plugins.alpha]\nenabled = false\n[plugins.beta]\nenabled = false\n"),
    )
    .expect("valid");
    assert!(plan.start_order().is_empty());
    assert_eq!(plan.disabled(), ["alpha", "beta"]);
}

#[test]
fn dependency_outside_its_version_requirement() {
    let catalog = Catalog::new().with::<Alpha>().with::<NeedsNewAlpha>();
    assert_eq!(
        problems(&catalog, ""),
        ["plugin `needs-new-alpha` requires `alpha >=2.0`, but version 1.0.0 is compiled in"]
    );
}

#[test]
fn cycles_are_printed_as_paths_once_each() {
    let catalog = Catalog::new()
        .with::<CycleC>()
        .with::<CycleA>()
        .with::<CycleB>()
        .with::<SelfLoop>()
        .with::<Alpha>();
    assert_eq!(
        problems(&catalog, ""),
        [
            "dependency cycle: cycle-a -> cycle-b -> cycle-c -> cycle-a",
            "dependency cycle: self-loop -> self-loop",
        ]
    );
}

#[test]
fn optional_dependencies_order_when_present_and_are_ignored_when_absent() {
    let catalog = Catalog::new()
        .with::<OptionalUser>()
        .with::<Beta>()
        .with::<Alpha>();
    let plan = check(&catalog, &toml_config("")).expect("valid");
    assert_eq!(plan.start_order(), ["alpha", "beta", "optional-user"]);
    let catalog = Catalog::new().with::<OptionalUser>();
    let plan = check(&catalog, &toml_config("")).expect("valid without its optional deps");
    assert_eq!(plan.start_order(), ["optional-user"]);
}

#[test]
fn unknown_plugins_get_a_suggestion_or_the_feature_to_enable() {
    let catalog = Catalog::new()
        .with::<CachePlugin>()
        .hint("database-plugin", "database-sqlite")
        .hint("database-plugin", "database-postgres");
    assert_eq!(
        problems(&catalog, "[plugins.cache-plugn]\n[plugins.database-plugin]\n[plugins.zzz]\n"),
        [
            "plugins.cache-plugn: unknown plugin `cache-plugn`; did you mean `cache-plugin`?",
            "plugins.database-plugin: unknown plugin `database-plugin` (enable the Cargo feature `database-sqlite` or `database-postgres`)",
            "plugins.zzz: unknown plugin `zzz`",
        ]
    );
    // A disabled section for a plugin that is not compiled in is not a problem.
    check(
        &catalog,
        &toml_config("[plugins.database-plugin]\nenabled = false\n"),
    )
    .expect("valid");
}

#[test]
fn config_of_the_wrong_type_is_reported_with_its_full_path() {
    let catalog = Catalog::new().with::<CachePlugin>();
    assert_eq!(
        problems(&catalog, "[plugins.cache-plugin]\nttl = \"abc\"\n"),
        ["plugins.cache-plugin.ttl: invalid type: string \"abc\", expected u64"]
    );
    assert_eq!(
        problems(
            &catalog,
            "[plugins.cache-plugin.redis]\nhost = \"h\"\nport = 70000\n"
        ),
        ["plugins.cache-plugin.redis.port: invalid value: integer `70000`, expected u16"]
    );
    assert_eq!(
        problems(&catalog, "[plugins.cache-plugin.redis]\nport = 1\n"),
        ["plugins.cache-plugin.redis: missing field `host`"]
    );
}

#[test]
fn unknown_keys_are_reported_with_the_closest_known_key() {
    let catalog = Catalog::new().with::<CachePlugin>();
    assert_eq!(
        problems(&catalog, "[plugins.cache-plugin]\nttll = 5\n"),
        ["plugins.cache-plugin.ttll: unknown key; did you mean `ttl`?"]
    );
    assert_eq!(
        problems(
            &catalog,
            "[plugins.cache-plugin.redis]\nhost = \"h\"\npasword = \"x\"\n"
        ),
        ["plugins.cache-plugin.redis.pasword: unknown key; did you mean `password`?"]
    );
    assert_eq!(
        problems(&catalog, "[server]\nprot = 1\n"),
        ["server.prot: unknown key; did you mean `port`?"]
    );
}

#[test]
fn validation_reports_every_violation() {
    let catalog = Catalog::new().with::<CachePlugin>();
    assert_eq!(
        problems(
            &catalog,
            "[plugins.cache-plugin]\nttl = 100000\nmaxSize = 0\n"
        ),
        [
            "plugins.cache-plugin.maxSize: must be at least 1",
            "plugins.cache-plugin.ttl: must be at most 86400 seconds",
        ]
    );
}

#[test]
fn unset_environment_variables() {
    let catalog = Catalog::new().with::<CachePlugin>();
    assert_eq!(
        problems(&catalog, "[plugins.cache-plugin.redis]\nhost = \"${REDIS_HOST}\"\n"),
        ["plugins.cache-plugin.redis.host: environment variable `REDIS_HOST` is not set (write `${REDIS_HOST:-default}` to give a default)"]
    );
    // Set, it fills even numeric fields.
    let config = toml_config_env(
        "[plugins.cache-plugin.redis]\nhost = \"${REDIS_HOST}\"\nport = \"${REDIS_PORT}\"\n",
        [("REDIS_HOST", "cache.local"), ("REDIS_PORT", "6380")],
    );
    let plan = check(&catalog, &config).expect("valid");
    assert_eq!(plan.entries()[0].config["redis"]["port"], 6380);
}

#[test]
fn one_config_with_every_problem_reports_all_of_them_once() {
    let catalog = Catalog::new()
        .with::<Alpha>()
        .with::<AlphaImpostor>()
        .with::<Beta>()
        .with::<NeedsNewAlpha>()
        .with::<NeedsDatabase>()
        .with::<CycleA>()
        .with::<CycleB>()
        .with::<CycleC>()
        .with::<CachePlugin>()
        .with::<OptionalUser>()
        .hint("database-plugin", "database-sqlite");
    let toml = r#"
        [server]
        port = "not-a-port"

        [plugins.beta]
        enabled = false

        [plugins.cache-plugin]
        ttl = "abc"

        [plugins.cache-plugn]
        ttl = 1

        [plugins.alpha]
        hang = ["${HANG_HOOK}"]
        typo_key = 1
    "#;
    let report: CheckReport = check(&catalog, &toml_config(toml)).expect_err("problems");
    let found: Vec<String> = report.problems().iter().map(ToString::to_string).collect();
    let expected = [
        "plugins.alpha.hang[0]: environment variable `HANG_HOOK` is not set (write `${HANG_HOOK:-default}` to give a default)",
        "server.port: invalid type: string \"not-a-port\", expected u16",
        "duplicate plugin name `alpha`",
        "plugins.cache-plugn: unknown plugin `cache-plugn`; did you mean `cache-plugin`?",
        "plugin `needs-new-alpha` requires `alpha >=2.0`, but version 1.0.0 is compiled in",
        "plugin `needs-database` depends on `database-plugin`, which is not compiled in (enable the Cargo feature `database-sqlite`)",
        "dependency cycle: cycle-a -> cycle-b -> cycle-c -> cycle-a",
        "plugins.alpha.typo_key: unknown key",
        "plugins.cache-plugin.ttl: invalid type: string \"abc\", expected u64",
    ];
    for want in expected {
        let hits = found.iter().filter(|f| f.starts_with(want)).count();
        assert_eq!(
            hits,
            1,
            "expected once: {want}\nall problems:\n{}",
            found.join("\n")
        );
    }
    // optional-user's optional dependency `beta` is disabled: not a problem.
    assert!(
        !found.iter().any(|f| f.contains("optional-user")),
        "{}",
        found.join("\n")
    );
    assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
    let text = report.to_string();
    assert!(text.starts_with("the plugin composition has 9 problems; nothing was started:\n  - "));
}

#[test]
fn problems_are_values_that_can_be_matched() {
    let catalog = Catalog::new().with::<NeedsDatabase>();
    let report = check(&catalog, &toml_config("")).expect_err("problems");
    assert!(matches!(
        &report.problems()[0],
        Problem::MissingDependency { plugin, dependency, .. } if plugin == "needs-database" && dependency == "database-plugin"
    ));
}

#[test]
fn a_problem_with_a_value_the_file_does_not_hold_says_where_it_was_set() {
    let toml = "[server]\nport = 3001\n[plugins.cache-plugin]\nttl = 10\n[profiles.production.plugins.cache-plugin]\nmaxSize = 0\n";
    let config = toml_config_env(
        toml,
        [
            ("IXP_ENV", "production"),
            ("IXP_SERVER__PROT", "4000"),
            ("IXP_PLUGINS__CACHE_PLUGIN__TTL", "abc"),
            ("IXP_PLUGINS__CACHE_PLUGIN__MAXSIZE_TYPO", "1"),
        ],
    );
    let report = check(&Catalog::new().with::<CachePlugin>(), &config)
        .expect_err("problems")
        .to_string();
    for expected in [
        "server.prot: unknown key; did you mean `port`? (set by `IXP_SERVER__PROT`)",
        "(set by `IXP_PLUGINS__CACHE_PLUGIN__TTL`)",
        "(set by `IXP_PLUGINS__CACHE_PLUGIN__MAXSIZE_TYPO`)",
        "plugins.cache-plugin.maxSize: must be at least 1 (set by `profiles.production`)",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    // A value from the file itself says nothing more, nor does a profile's empty table
    // over it (it sets nothing).
    let report = check(
        &Catalog::new().with::<CachePlugin>(),
        &toml_config_env(
            "[plugins.cache-plugin]\nmaxSize = 0\n[profiles.production.plugins.cache-plugin]\n",
            [("IXP_ENV", "production")],
        ),
    )
    .expect_err("problems")
    .to_string();
    assert!(
        report.ends_with("plugins.cache-plugin.maxSize: must be at least 1"),
        "{report}"
    );
    // A key an override created above the problem's path: the problem is at that key.
    let config = toml_config_env("[server]\nport = 3001\n", [("IXP_SERVR__PORT", "4000")]);
    let report = check(&Catalog::new(), &config)
        .expect_err("problems")
        .to_string();
    assert!(
        report.contains("servr: unknown key; did you mean `server`? (set by `IXP_SERVR__PORT`)"),
        "{report}"
    );
}

#[tokio::test]
async fn a_config_given_in_code_is_not_said_to_come_from_the_environment() {
    // The override names the plugin's section, but the typed config from code is used.
    let config = toml_config_env("", [("IXP_PLUGINS__CACHE_PLUGIN__TTL", "5")]);
    let err = ixp_core::Host::builder()
        .catalog(Catalog::new())
        .config(config)
        .plugin::<CachePlugin>(CacheConfig {
            max_size: 0,
            ..CacheConfig::default()
        })
        .build()
        .expect_err("maxSize 0");
    let report = err.to_string();
    assert!(
        report.contains("plugins.cache-plugin.maxSize: must be at least 1"),
        "{report}"
    );
    assert!(!report.contains("set by"), "{report}");
}
