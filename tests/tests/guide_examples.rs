//! The TypeScript guide's unit and integration tests (its "Plugin Testing" section),
//! ported: a plugin tested against the mock context, then two plugins together in a
//! test server.

use std::sync::{Arc, Mutex};

use ixp_core::testing::{MockPluginContext, TestServer};
use ixp_core::{
    ixp_plugin, BoxError, ConfigViolation, Event, HealthStatus, JsonSchema, Plugin, PluginContext,
    PluginHealth, Secret,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SmtpSettings {
    #[serde(default)]
    host: String,
    port: u16,
    #[serde(default)]
    secure: bool,
    username: Option<String>,
    password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OutboxConfig {
    smtp: SmtpSettings,
    default_from: String,
}

/// What the `email` service of this test plugin does: it keeps messages in an outbox.
/// (The real SMTP plugin is `email-plugin` of ixp-plugins.)
#[derive(Default)]
struct Outbox {
    from: String,
    sent: Mutex<Vec<(String, String)>>,
}

impl Outbox {
    fn send(&self, to: &str, subject: &str) {
        self.sent
            .lock()
            .expect("lock")
            .push((to.to_owned(), format!("{} -> {subject}", self.from)));
    }
}

#[ixp_plugin(name = "outbox-plugin", version = "1.0.0", provides = ["email"])]
struct OutboxPlugin {
    outbox: Arc<Outbox>,
}

impl Plugin for OutboxPlugin {
    type Config = OutboxConfig;

    fn validate_config(config: &OutboxConfig) -> Result<(), Vec<ConfigViolation>> {
        if config.smtp.host.is_empty() {
            return Err(vec![ConfigViolation::new("smtp.host", "is required")]);
        }
        Ok(())
    }

    async fn initialize(config: OutboxConfig, _ctx: &PluginContext) -> Result<Self, BoxError> {
        Self::validate_config(&config).map_err(|v| format!("{}: {}", v[0].path, v[0].message))?;
        Ok(Self {
            outbox: Arc::new(Outbox {
                from: config.default_from,
                sent: Mutex::default(),
            }),
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.services().register_arc("email", self.outbox.clone())?;
        let outbox = self.outbox.clone();
        ctx.events()
            .on("email.send", move |event: Event| {
                let outbox = outbox.clone();
                async move {
                    let to = event.decode::<String>()?;
                    outbox.send(&to, "hello");
                    Ok::<(), BoxError>(())
                }
            })?
            .detach();
        let outbox = self.outbox.clone();
        ctx.events()
            .on("user.registered", move |event: Event| {
                let outbox = outbox.clone();
                async move {
                    let user = event.decode::<serde_json::Value>()?;
                    outbox.send(user["email"].as_str().unwrap_or_default(), "welcome");
                    Ok::<(), BoxError>(())
                }
            })?
            .detach();
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        PluginHealth::healthy().with_message("SMTP connection is working")
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TallyConfig {
    api_key: Option<Secret>,
    endpoint: Option<String>,
}

#[derive(Default)]
struct Tally(Mutex<Vec<String>>);

#[ixp_plugin(name = "tally-plugin", version = "1.0.0", provides = ["analytics"])]
struct TallyPlugin {
    tally: Arc<Tally>,
}

impl Plugin for TallyPlugin {
    type Config = TallyConfig;

    async fn initialize(_: TallyConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            tally: Arc::default(),
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.services()
            .register_arc("analytics", self.tally.clone())?;
        let tally = self.tally.clone();
        ctx.events()
            .on("user.*", move |event: Event| {
                let tally = tally.clone();
                async move {
                    tally.0.lock().expect("lock").push(event.topic().to_owned());
                }
            })?
            .detach();
        Ok(())
    }
}

fn mock_config() -> OutboxConfig {
    OutboxConfig {
        smtp: SmtpSettings {
            host: "smtp.test.com".into(),
            port: 587,
            secure: false,
            username: Some("test@test.com".into()),
            password: Some(Secret::new("password")),
        },
        default_from: "noreply@test.com".into(),
    }
}

// describe('EmailPlugin') / describe('initialize')
#[tokio::test]
async fn initializes_with_valid_configuration() {
    let mock = MockPluginContext::new("outbox-plugin");
    OutboxPlugin::initialize(mock_config(), mock.context())
        .await
        .expect("initializes");
}

#[tokio::test]
async fn rejects_an_invalid_configuration() {
    let mock = MockPluginContext::new("outbox-plugin");
    let mut config = mock_config();
    config.smtp.host.clear();
    let err = OutboxPlugin::initialize(config, mock.context())
        .await
        .err()
        .expect("rejects");
    assert_eq!(err.to_string(), "smtp.host: is required");
}

// describe('start')
#[tokio::test]
async fn start_registers_the_email_service_and_its_event_handlers() {
    let mock = MockPluginContext::new("outbox-plugin");
    let mut plugin = OutboxPlugin::initialize(mock_config(), mock.context())
        .await
        .expect("init");
    plugin.start(mock.context()).await.expect("starts");
    assert_eq!(mock.registered_services(), ["email"]);
    assert_eq!(mock.subscriptions(), ["email.send", "user.registered"]);
    mock.events()
        .emit_and_wait("email.send", "ada@example.com".to_owned())
        .await;
    let outbox = mock.services().get::<Outbox>("email").expect("service");
    assert_eq!(outbox.sent.lock().expect("lock")[0].0, "ada@example.com");
}

// describe('health')
#[tokio::test]
async fn reports_healthy_when_working() {
    let mock = MockPluginContext::new("outbox-plugin");
    let mut plugin = OutboxPlugin::initialize(mock_config(), mock.context())
        .await
        .expect("init");
    plugin.start(mock.context()).await.expect("start");
    let health = plugin.health(mock.context()).await;
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(
        health.message.as_deref(),
        Some("SMTP connection is working")
    );
}

// describe('Plugin Integration')
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_communicate_through_the_bus_and_registry_of_a_test_server() {
    let mut config = mock_config();
    config.smtp.host = "localhost".into();
    config.smtp.port = 1025;
    let server = TestServer::builder()
        .plugin::<OutboxPlugin>(config)
        .plugin::<TallyPlugin>(TallyConfig {
            api_key: Some(Secret::new("test-key")),
            endpoint: Some("http://localhost:3001/analytics".into()),
        })
        .start()
        .await
        .expect("starts");

    // 'should handle plugin communication': one event, handled by both plugins.
    server
        .events()
        .emit_and_wait(
            "user.registered",
            serde_json::json!({"userId": "user123", "email": "test@example.com"}),
        )
        .await;
    let outbox = server
        .services()
        .get::<Outbox>("email")
        .expect("email service");
    let tally = server
        .services()
        .get::<Tally>("analytics")
        .expect("analytics service");
    assert_eq!(outbox.sent.lock().expect("lock")[0].0, "test@example.com");
    assert_eq!(*tally.0.lock().expect("lock"), ["user.registered"]);

    // 'should handle plugin dependencies': both services are there.
    assert_eq!(server.health().await.status, HealthStatus::Healthy);
    server.stop().await.expect("stops");
}
