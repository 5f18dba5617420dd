//! Fixtures shared by the workspace tests: probe plugins whose hooks fail, panic or hang
//! on demand, a journal of hook calls, and log capture.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use ixp_core::config::{ConfigLoader, Format};
use ixp_core::{
    BoxError, Catalog, CheckReport, Host, HostBuilder, IxpConfig, JsonSchema, PluginHealth,
    ServiceRegistry,
};
use serde::{Deserialize, Serialize};

pub use ixp_core;

pub mod http_fault;
pub mod proxy;

/// Records hook calls as `plugin:hook`, in order.
#[derive(Debug, Default)]
pub struct Journal(Mutex<Vec<String>>);

impl Journal {
    /// Appends an entry.
    pub fn record(&self, plugin: &str, hook: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{plugin}:{hook}"));
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The entries of one hook, as plugin names.
    pub fn plugins_for(&self, hook: &str) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|e| e.strip_suffix(&format!(":{hook}")).map(str::to_owned))
            .collect()
    }
}

/// What a probe plugin does in each hook, from its config section:
/// `fail = ["start"]`, `panic = ["stop"]`, `hang = ["health"]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Hooks that return an error.
    pub fail: Vec<String>,
    /// Hooks that panic.
    pub panic: Vec<String>,
    /// Hooks that never finish.
    pub hang: Vec<String>,
    /// Status `health` reports: `healthy` (default), `degraded`, `unhealthy`.
    pub health: Option<String>,
}

impl Behavior {
    /// Acts out `hook`.
    pub async fn act(&self, plugin: &str, hook: &str) -> Result<(), BoxError> {
        if self.fail.iter().any(|h| h == hook) {
            return Err(format!("{plugin} {hook} failed on purpose").into());
        }
        if self.panic.iter().any(|h| h == hook) {
            panic!("{plugin} {hook} panicked on purpose");
        }
        if self.hang.iter().any(|h| h == hook) {
            futures::future::pending::<()>().await;
        }
        Ok(())
    }

    /// The health to report.
    pub fn health(&self) -> PluginHealth {
        match self.health.as_deref() {
            Some("degraded") => PluginHealth::degraded("degraded on purpose"),
            Some("unhealthy") => PluginHealth::unhealthy("unhealthy on purpose"),
            _ => PluginHealth::healthy(),
        }
    }
}

/// Defines a probe plugin type: `probe!(Type, "name", ["dep", ...]);`.
#[macro_export]
macro_rules! probe {
    ($ty:ident, $name:tt, [$($dep:tt),*]) => {
        $crate::probe!($ty, $name, [$($dep),*], []);
    };
    ($ty:ident, $name:tt, [$($dep:tt),*], [$($opt:tt),*]) => {
        /// A probe plugin.
        #[$crate::ixp_core::ixp_plugin(
            name = $name,
            version = "1.0.0",
            dependencies = [$($dep),*],
            optional_dependencies = [$($opt),*]
        )]
        pub struct $ty {
            behavior: $crate::Behavior,
            journal: std::sync::Arc<$crate::Journal>,
        }

        impl $crate::ixp_core::Plugin for $ty {
            type Config = $crate::Behavior;

            async fn initialize(
                config: $crate::Behavior,
                ctx: &$crate::ixp_core::PluginContext,
            ) -> Result<Self, $crate::ixp_core::BoxError> {
                let journal = ctx.services().get::<$crate::Journal>("journal")?;
                journal.record(ctx.plugin_name(), "initialize");
                config.act(ctx.plugin_name(), "initialize").await?;
                Ok(Self { behavior: config, journal })
            }

            async fn start(&mut self, ctx: &$crate::ixp_core::PluginContext) -> Result<(), $crate::ixp_core::BoxError> {
                self.journal.record(ctx.plugin_name(), "start");
                self.behavior.act(ctx.plugin_name(), "start").await
            }

            async fn stop(&mut self, ctx: &$crate::ixp_core::PluginContext) -> Result<(), $crate::ixp_core::BoxError> {
                self.journal.record(ctx.plugin_name(), "stop");
                self.behavior.act(ctx.plugin_name(), "stop").await
            }

            async fn restart(&mut self, ctx: &$crate::ixp_core::PluginContext) -> Result<(), $crate::ixp_core::BoxError> {
                self.journal.record(ctx.plugin_name(), "restart");
                self.behavior.act(ctx.plugin_name(), "restart").await
            }

            async fn health(&self, ctx: &$crate::ixp_core::PluginContext) -> $crate::ixp_core::PluginHealth {
                if self.behavior.act(ctx.plugin_name(), "health").await.is_err() {
                    return $crate::ixp_core::PluginHealth::unhealthy("health failed on purpose");
                }
                self.behavior.health()
            }
        }
    };
}

/// Loads TOML config text with no environment.
pub fn toml_config(text: &str) -> IxpConfig {
    toml_config_env(text, Vec::<(String, String)>::new())
}

/// Loads TOML config text with these environment variables.
pub fn toml_config_env(
    text: &str,
    env: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
) -> IxpConfig {
    match ConfigLoader::new()
        .text(Format::Toml, text)
        .env_vars(env)
        .load()
    {
        Ok(config) => config,
        Err(e) => panic!("test config does not load: {e}"),
    }
}

/// A host builder with a journal service pre-registered.
pub fn builder(catalog: Catalog, config: IxpConfig) -> (HostBuilder, Arc<Journal>) {
    let services = ServiceRegistry::new();
    let journal = Arc::new(Journal::default());
    if let Err(e) = services.register_arc("journal", journal.clone()) {
        panic!("journal: {e}");
    }
    (
        Host::builder()
            .catalog(catalog)
            .config(config)
            .services(services),
        journal,
    )
}

/// Builds a host from a catalog and TOML config, with a journal.
pub fn host(catalog: Catalog, toml: &str) -> Result<(Host, Arc<Journal>), CheckReport> {
    let (builder, journal) = builder(catalog, toml_config(toml));
    builder.build().map(|host| (host, journal))
}

/// A writer collecting every log line of the process, for tests that grep the logs.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Installs a global subscriber (once per test binary) that writes every record, at
    /// trace level, to the shared buffer, and returns the buffer.
    pub fn install() -> Self {
        static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = CapturedLogs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            // Another global subscriber may exist; then nothing is captured and the
            // tests that rely on it fail loudly.
            let _ = tracing::subscriber::set_global_default(subscriber);
            logs
        })
        .clone()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The examples of `docs/plugins.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/plugins.md")]
pub struct PluginsGuide;

/// `prefix` with the process id and the time appended: a name no other test run uses
/// (table names, key prefixes, directories).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// A new empty directory under the system temp dir.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(&format!("ixp-{label}")));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// A loopback port nothing listens on (at the time of the call).
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(address) => address.port(),
        Err(e) => panic!("no free loopback port: {e}"),
    }
}

/// Serializes the tests of one test binary that replace the process-wide log output
/// (it is global: two such tests at once would see each other's records).
pub async fn global_log_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Runs the start-up check of a catalog holding only `P` on a TOML config (no
/// environment variables); returns the report, or "" if the config is fine.
pub fn check_problems<P: ixp_core::Plugin>(toml: &str) -> String {
    let config = ixp_core::config::ConfigLoader::new()
        .text(ixp_core::config::Format::Toml, toml)
        .env_vars(Vec::<(String, String)>::new())
        .load()
        .expect("the TOML loads");
    match ixp_core::check(&ixp_core::Catalog::new().with::<P>(), &config) {
        Ok(_) => String::new(),
        Err(report) => report.to_string(),
    }
}

/// Polls `plugin`'s health every 100 ms until it is `wanted` or `within` has passed;
/// returns the last health seen (the caller asserts on it).
pub async fn wait_for_health(
    host: &ixp_core::Host,
    plugin: &str,
    wanted: ixp_core::HealthStatus,
    within: std::time::Duration,
) -> ixp_core::PluginHealth {
    let deadline = std::time::Instant::now() + within;
    loop {
        let health = host.health().await.plugins[plugin].clone();
        if health.status == wanted || std::time::Instant::now() > deadline {
            return health;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
