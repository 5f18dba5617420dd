//! `logging-plugin`: the guide's LoggingPlugin, on `tracing`.
//!
//! It makes its transports the output of the process-wide subscriber
//! ([`ixp_core::telemetry`]), so every plugin's scoped logger
//! ([`PluginContext::logger`](ixp_core::PluginContext::logger)), every `tracing` record
//! of the process, and the host's own records go through it. [`Secret`](ixp_core::Secret)s
//! print masked wherever they are logged. When the plugin stops, its transports are
//! flushed and the console takes over again.
//!
//! * `level` (`trace` ... `error`, `off`) and `format` (`text` or `json`);
//! * `plugins = { "cache-plugin" = "debug" }`: a level for one plugin's records;
//! * `directives = ["sqlx=warn", "ixp_plugins::cache=debug"]`: `tracing` filter
//!   directives by target;
//! * transports: `console` (`colorize`), `file` (`filename`, rotated by `maxSize`,
//!   keeping `maxFiles` files), `elasticsearch` (`host`, `index`; batched `_bulk`
//!   requests with retries, a bounded buffer and a flush on stop; feature
//!   `logging-elasticsearch`).
//!
//! A file is written by a thread of its own, so a slow disk does not hold up the code
//! that logs, until 128,000 records wait for it (then logging waits: records are never
//! dropped for a slow disk). On stop the plugin waits for that thread to write every
//! record it was handed, at most half the plugin's hook timeout (15 s by default); what
//! is unwritten by then is counted in `lost` ([`FileStats`]) and logged: the thread
//! goes on writing while the process lives, but a process that exits after the stop
//! loses it. A disk that takes nothing while the buffer is full holds up the stop
//! itself (putting the console back waits for the threads writing into the file's
//! buffer), which no timeout can interrupt. The health details carry each file's
//! `written`, `pending`, `failed` and `lost`.
//!
//! ```toml
//! [plugins.logging-plugin]
//! level = "info"
//! format = "json"
//! plugins = { "cache-plugin" = "debug" }
//! transports = [
//!   { type = "console", colorize = true },
//!   { type = "file", filename = "logs/app.log", maxSize = "10m", maxFiles = 5 },
//!   { type = "elasticsearch", host = "http://127.0.0.1:9200", index = "ixp-logs" },
//! ]
//! ```
//!
//! The `logger` service ([`LogService`]) gives components that are not plugins a
//! logger of their own and the transports' counters.

mod config;
#[cfg(feature = "logging-elasticsearch")]
mod elasticsearch;
mod file;
mod json;

pub use config::{
    ByteSize, ConsoleTransport, ElasticsearchTransport, FileTransport, LogFormat, LogLevel,
    LoggingConfig, Transport,
};
#[cfg(feature = "logging-elasticsearch")]
pub use elasticsearch::TransportStats;
pub use file::{FileStats, RotatingFile};

use std::sync::Arc;
use std::time::Duration;

use ixp_core::telemetry::{self, BoxedLayer};
use ixp_core::{
    ixp_plugin, BoxError, ConfigViolation, Logger, Plugin, PluginContext, PluginHealth,
};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, Layer};

/// The `logger` service.
#[derive(Debug, Default)]
pub struct LogService {
    files: std::sync::Mutex<Vec<Arc<FileStats>>>,
    #[cfg(feature = "logging-elasticsearch")]
    elasticsearch: std::sync::Mutex<Vec<Arc<TransportStats>>>,
}

impl LogService {
    /// A logger whose records carry `plugin = <component>`, so `plugins = { ... }` levels
    /// apply to it too.
    pub fn logger(&self, component: &str) -> Logger {
        Logger::new(component)
    }

    /// The counters of each `file` transport, in config order, while the plugin runs.
    pub fn file_stats(&self) -> Vec<Arc<FileStats>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes the counters of the transports `installed` runs.
    fn publish(&self, installed: &Installed) {
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = installed
            .files
            .iter()
            .map(|(_, stats)| stats.clone())
            .collect();
        #[cfg(feature = "logging-elasticsearch")]
        {
            *self.elasticsearch.lock().unwrap_or_else(|e| e.into_inner()) = installed
                .senders
                .iter()
                .map(|sender| sender.stats().clone())
                .collect();
        }
    }

    /// Forgets the counters of transports that are gone.
    fn unpublish(&self) {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clear();
        #[cfg(feature = "logging-elasticsearch")]
        self.elasticsearch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The counters of each `elasticsearch` transport, in config order.
    #[cfg(feature = "logging-elasticsearch")]
    pub fn elasticsearch_stats(&self) -> Vec<Arc<TransportStats>> {
        self.elasticsearch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the plugin runs while it is installed.
#[derive(Default)]
struct Installed {
    /// Each `file` transport's writer thread (dropping the guard ends it) and counters.
    files: Vec<(WorkerGuard, Arc<FileStats>)>,
    #[cfg(feature = "logging-elasticsearch")]
    senders: Vec<elasticsearch::ElasticsearchSender>,
}

/// The guide's LoggingPlugin: installs its transports as the process's log output and
/// registers the `logger` service ([`LogService`]).
#[ixp_plugin(
    name = "logging-plugin",
    version = "0.1.0",
    description = "Log output (console, rotated files, Elasticsearch) for the whole process",
    provides = ["logger"],
    feature = "logging, logging-elasticsearch",
)]
pub struct LoggingPlugin {
    config: LoggingConfig,
    #[cfg_attr(not(feature = "logging-elasticsearch"), allow(dead_code))]
    service: Arc<LogService>,
    installed: Option<Installed>,
}

impl std::fmt::Debug for LoggingPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingPlugin")
            .field("config", &self.config)
            .field("installed", &self.installed.is_some())
            .finish()
    }
}

impl Plugin for LoggingPlugin {
    type Config = LoggingConfig;

    fn validate_config(config: &LoggingConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: LoggingConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let service = Arc::new(LogService::default());
        let mut plugin = Self {
            config,
            service: service.clone(),
            installed: None,
        };
        plugin.install()?;
        ctx.services().register_arc("logger", service)?;
        ctx.logger().info(format_args!(
            "log output: {} at level {}",
            plugin.describe_transports(),
            plugin.config.level.as_str()
        ));
        Ok(plugin)
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        if self.installed.is_none() {
            self.install()?;
        }
        // A restart removed the service (see `register_arc_again`).
        ctx.services()
            .register_arc_again("logger", self.service.clone())?;
        Ok(())
    }

    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.logger().info("log output goes back to the console");
        self.uninstall(ctx.hook_timeout() / 2).await;
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        let health = PluginHealth::healthy()
            .with_message(format!("writing to {}", self.describe_transports()));
        let health = self.file_health(health);
        #[cfg(feature = "logging-elasticsearch")]
        let health = self.elasticsearch_health(health);
        health
    }
}

impl LoggingPlugin {
    /// Each file transport's counters; *degraded* once a file refused a record.
    fn file_health(&self, mut health: PluginHealth) -> PluginHealth {
        use std::sync::atomic::Ordering;
        for (i, stats) in self.service.file_stats().iter().enumerate() {
            let failed = stats.failed.load(Ordering::Relaxed);
            health = health.with_detail(
                format!("file[{i}]"),
                serde_json::json!({
                    "written": stats.written.load(Ordering::Relaxed),
                    "pending": stats.pending(),
                    "failed": failed,
                    "lost": stats.lost.load(Ordering::Relaxed),
                }),
            );
            if failed > 0 {
                health = health
                    .with_status(ixp_core::HealthStatus::Degraded)
                    .with_message(format!(
                        "{failed} record(s) could not be written to `{}`",
                        stats.path.display()
                    ));
            }
        }
        health
    }

    #[cfg(feature = "logging-elasticsearch")]
    fn elasticsearch_health(&self, mut health: PluginHealth) -> PluginHealth {
        for (i, stats) in self.service.elasticsearch_stats().iter().enumerate() {
            use std::sync::atomic::Ordering;
            let dropped = stats.dropped.load(Ordering::Relaxed);
            let last_error = stats.last_error();
            health = health.with_detail(
                format!("elasticsearch[{i}]"),
                serde_json::json!({
                    "sent": stats.sent.load(Ordering::Relaxed),
                    "dropped": dropped,
                    "rejected": stats.rejected.load(Ordering::Relaxed),
                    "lost": stats.lost.load(Ordering::Relaxed),
                    "failedRequests": stats.failed_requests.load(Ordering::Relaxed),
                    "lastError": last_error,
                }),
            );
            if let Some(error) = last_error {
                health = health
                    .with_status(ixp_core::HealthStatus::Degraded)
                    .with_message(format!("elasticsearch transport failing: {error}"));
            } else if stats.dropped_within(std::time::Duration::from_secs(60)) {
                health = health
                    .with_status(ixp_core::HealthStatus::Degraded)
                    .with_message(format!(
                        "elasticsearch transport dropped {dropped} record(s) (buffer full)"
                    ));
            }
        }
        health
    }

    fn describe_transports(&self) -> String {
        let names: Vec<String> = self
            .config
            .transports
            .iter()
            .map(|t| match t {
                Transport::Console(_) => "console".to_owned(),
                Transport::File(f) => format!("file {}", f.filename.display()),
                Transport::Elasticsearch(es) => {
                    format!(
                        "elasticsearch {}/{}",
                        crate::url_text::without_userinfo(&es.host),
                        es.index
                    )
                }
            })
            .collect();
        if names.is_empty() {
            "nowhere".into()
        } else {
            names.join(", ")
        }
    }

    /// Builds the transports and makes them the process's log output.
    fn install(&mut self) -> Result<(), BoxError> {
        let filter = EnvFilter::builder()
            .parse(self.config.filter_directives().join(","))
            .map_err(|e| format!("invalid log filter: {e}"))?;
        let mut installed = Installed::default();
        let mut layers: Vec<BoxedLayer> = Vec::new();
        for transport in &self.config.transports {
            match transport {
                Transport::Console(console) => layers.push(format_layer(
                    std::io::stderr,
                    self.config.format,
                    console.colorize,
                )),
                Transport::File(file) => {
                    let max_bytes = file.max_size.bytes().map_err(|e| format!("maxSize: {e}"))?;
                    let writer = RotatingFile::open(&file.filename, max_bytes, file.max_files)
                        .map_err(|e| {
                            format!("cannot open log file `{}`: {e}", file.filename.display())
                        })?;
                    let (writer, stats) = file::CountedFile::new(writer);
                    let (writer, guard) =
                        tracing_appender::non_blocking::NonBlockingBuilder::default()
                            .lossy(false)
                            .thread_name("ixp-log-file")
                            .finish(writer);
                    let writer = file::CountedWriter::new(writer, stats.clone());
                    installed.files.push((guard, stats));
                    layers.push(format_layer(writer, self.config.format, false));
                }
                #[cfg(feature = "logging-elasticsearch")]
                Transport::Elasticsearch(es) => {
                    let (layer, sender) = elasticsearch::start(es)?;
                    installed.senders.push(sender);
                    layers.push(layer.boxed());
                }
                #[cfg(not(feature = "logging-elasticsearch"))]
                Transport::Elasticsearch(_) => {
                    return Err("the `elasticsearch` transport is not compiled in; enable the Cargo feature `logging-elasticsearch`".into());
                }
            }
        }
        telemetry::install(Box::new(layers), filter)?;
        // The counters are published once the transports are the output (a failed
        // install leaves none of its writers behind in the service).
        self.service.publish(&installed);
        self.installed = Some(installed);
        Ok(())
    }

    /// Puts the console back, then flushes and closes the transports: the files' writer
    /// threads get until `drain` from now to write what they were handed.
    async fn uninstall(&mut self, drain: Duration) {
        let Some(installed) = self.installed.take() else {
            return;
        };
        // A hook timeout too large to add (`hook_timeout = "500y"`): a day is as good.
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(drain)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        // Dropping the old output closes the Elasticsearch queues; a file's channel
        // stays open until its guard goes (below). The swap waits for threads still
        // writing into the old output.
        if let Err(e) = telemetry::install(telemetry::console_layer(), telemetry::default_filter())
        {
            eprintln!("logging-plugin: cannot restore the console output: {e}");
        }
        #[cfg(feature = "logging-elasticsearch")]
        elasticsearch::finish_all(installed.senders).await;
        // The writer threads have been writing meanwhile; wait for the rest. (Dropping
        // a guard alone waits at most ~1 s, then leaves the rest to a thread that the
        // process's exit may cut short.)
        let files = installed.files;
        let drained = file::drain(files.iter().map(|(_, stats)| &**stats), deadline).await;
        self.service.unpublish();
        let guards: Vec<WorkerGuard> = files.into_iter().map(|(guard, _)| guard).collect();
        // A drained writer ends at once. One stuck on its file would hold its guard's
        // drop for ~1.1 s, past the deadline: those drops are not waited for (they run
        // on a blocking thread, one guard after another).
        let dropped = tokio::task::spawn_blocking(move || drop(guards));
        if drained {
            let _ = dropped.await;
        }
    }
}

impl Drop for LoggingPlugin {
    /// A plugin dropped without `stop` (a later plugin failed to start, say) still puts
    /// the console back, so the process is not left logging into closed transports.
    fn drop(&mut self) {
        // The console first, then the old output goes (its file workers write out what
        // they hold): records logged in between still have an output.
        let Some(installed) = self.installed.take() else {
            return;
        };
        let _ = telemetry::install(telemetry::console_layer(), telemetry::default_filter());
        // No waiting here (a drop may run on a runtime's thread): what a file's writer
        // has not written yet is counted as not written by the stop, as a stop that
        // gives up counts it. Dropping each guard still lets its writer go on for ~1 s.
        file::count_unwritten(installed.files.iter().map(|(_, stats)| &**stats));
        self.service.unpublish();
        drop(installed);
    }
}

fn format_layer<W>(writer: W, format: LogFormat, ansi: bool) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => json::JsonLinesLayer::new(writer).boxed(),
    }
}
