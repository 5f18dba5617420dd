//! Secrets never appear in logs, errors, `Debug` or the printed plan.

use ixp_core::config::{ConfigLoader, Format};
use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, Host, JsonSchema, Plugin, PluginContext, Secret,
};
use ixp_tests::CapturedLogs;
use serde::{Deserialize, Serialize};

const SECRET: &str = "hunter2-very-secret-value";

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VaultConfig {
    url: String,
    token: Secret,
    api_key: Option<Secret>,
}

#[ixp_plugin(name = "vault-plugin", version = "1.0.0")]
struct VaultPlugin {
    config: VaultConfig,
}

impl Plugin for VaultPlugin {
    type Config = VaultConfig;

    async fn initialize(config: VaultConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        // A careless plugin logs its whole config, at every level.
        ctx.logger().info(format!("initialized with {config:?}"));
        tracing::debug!(?config, "config");
        tracing::error!(token = %config.token, "token");
        if config.url == "fail" {
            return Err(format!("cannot reach vault with {config:?}").into());
        }
        Ok(Self { config })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.logger().warn(format!("token is {}", self.config.token));
        assert_eq!(self.config.token.expose(), SECRET);
        Ok(())
    }
}

fn load(toml: &str) -> ixp_core::IxpConfig {
    ConfigLoader::new()
        .text(Format::Toml, toml)
        .env_vars([
            ("VAULT_TOKEN", SECRET),
            ("IXP_PLUGINS__VAULT_PLUGIN__API_KEY", SECRET),
        ])
        .load()
        .expect("loads")
}

#[test]
fn a_config_file_that_does_not_parse_is_reported_without_its_lines() {
    // Each breaks the line that holds the secret: an unterminated string, a value with
    // no quotes, the key given twice, a bad table header after it.
    let broken = [
        (
            format!("[plugins.vault-plugin]\nurl = \"x\"\ntoken = \"{SECRET}\n"),
            3,
        ),
        (
            format!("[plugins.vault-plugin]\nurl = \"x\"\ntoken = {SECRET}\n"),
            3,
        ),
        (
            format!("[plugins.vault-plugin]\ntoken = \"{SECRET}\"\ntoken = \"{SECRET}\"\n"),
            3,
        ),
        (
            format!("[plugins.vault-plugin]\ntoken = \"{SECRET}\"\n[plugins.other\n"),
            3,
        ),
    ];
    for (text, line) in broken {
        let err = ConfigLoader::new()
            .text(Format::Toml, &text)
            .load()
            .expect_err("does not parse");
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(SECRET), "the secret leaked: {shown}");
        assert!(
            shown.contains("config file <inline> is not valid TOML")
                && shown.contains(&format!("line {line}, column ")),
            "{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_error_debug_or_plan() {
    let logs = CapturedLogs::install();
    let catalog = Catalog::new().with::<VaultPlugin>();
    let mut shown = Vec::new();

    // The plan (what `check` prints).
    let config =
        load("[plugins.vault-plugin]\nurl = \"https://vault\"\ntoken = \"${VAULT_TOKEN}\"\n");
    let plan = check(&catalog, &config).expect("valid");
    shown.push(serde_json::to_string(&plan.entries()).expect("json"));
    shown.push(format!("{plan:?} {config:?}"));

    // A full lifecycle with a plugin that logs its config.
    let host = Host::builder()
        .catalog(catalog.clone())
        .config(config)
        .build()
        .expect("valid");
    host.launch().await.expect("launch");
    shown.push(format!("{:?}", host.effective_config("vault-plugin")));
    host.stop().await.expect("stop");

    // A plugin error that formats the config.
    let config = load("[plugins.vault-plugin]\nurl = \"fail\"\ntoken = \"${VAULT_TOKEN}\"\n");
    let host = Host::builder()
        .catalog(catalog.clone())
        .config(config)
        .build()
        .expect("valid");
    shown.push(host.launch().await.expect_err("fails").to_string());

    // Secrets of the wrong type, or under a mistyped key, in the config.
    for toml in [
        format!("[plugins.vault-plugin]\nurl = 1\ntoken = [\"{SECRET}\"]\n"),
        format!("[plugins.vault-plugin]\nurl = \"u\"\ntoken = {{ value = \"{SECRET}\" }}\n"),
        format!("[plugins.vault-plugin]\nurl = \"u\"\ntoken = \"t\"\ntokne = \"{SECRET}\"\n"),
    ] {
        let report = check(&catalog, &load(&toml)).expect_err("invalid");
        shown.push(report.to_string());
        shown.push(format!("{report:?}"));
    }

    let logs = logs.text();
    assert!(
        logs.contains("initialized with VaultConfig"),
        "the log capture works: {logs}"
    );
    assert!(
        logs.contains("plugin=vault-plugin"),
        "records carry the plugin name: {logs}"
    );
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(SECRET), "secret leaked in: {text}");
    }
    assert!(shown.iter().any(|t| t.contains("expected a secret string")));
    assert!(shown
        .iter()
        .any(|t| t.contains("plugins.vault-plugin.tokne: unknown key; did you mean `token`?")));
}
