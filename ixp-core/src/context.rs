//! [`PluginContext`]: what a plugin gets from the host.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;

use crate::config::IxpConfig;
use crate::events::EventBus;
use crate::host::ServerHandle;
use crate::services::ServiceRegistry;

/// A logger scoped to one plugin: every record carries `plugin = <name>` and is made
/// inside the plugin's `plugin` span.
///
/// The methods take any `Display`; for structured fields, use `tracing`'s macros inside
/// [`span`](Logger::span) (hooks already run inside it).
///
/// The span is made afresh for each record and each hook, so a subscriber installed
/// after the logger was made (a logging plugin, say) sees and filters it.
#[derive(Clone)]
pub struct Logger {
    plugin: Arc<str>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("plugin", &self.plugin)
            .finish()
    }
}

macro_rules! log_method {
    ($($name:ident => $level:ident),*) => {
        $(
            #[doc = concat!("Logs at `", stringify!($level), "` level with the plugin name.")]
            pub fn $name(&self, message: impl fmt::Display) {
                // Inside a hook the plugin's span is current already; elsewhere (a route
                // handler, a task) the record gets a span of its own.
                let current = tracing::Span::current();
                if current.metadata().is_some_and(|m| m.name() == "plugin") {
                    tracing::$level!(plugin = %self.plugin, "{message}");
                } else {
                    let span = self.span();
                    tracing::$level!(parent: &span, plugin = %self.plugin, "{message}");
                }
            }
        )*
    };
}

impl Logger {
    /// A logger for `plugin`.
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: plugin.into(),
        }
    }

    log_method!(trace => trace, debug => debug, info => info, warn => warn, error => error);

    /// A span `plugin` with the plugin name; the host runs every hook of the plugin
    /// inside one.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("plugin", plugin = &*self.plugin)
    }

    /// The plugin name.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

struct ContextInner {
    plugin: Arc<str>,
    logger: Logger,
    config: Arc<IxpConfig>,
    events: EventBus,
    services: ServiceRegistry,
    #[cfg(feature = "http")]
    http: crate::http::HttpRoutes,
    server: ServerHandle,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// The shared registries a context is scoped from.
pub(crate) struct Registries<'a> {
    pub(crate) events: &'a EventBus,
    pub(crate) services: &'a ServiceRegistry,
    #[cfg(feature = "http")]
    pub(crate) http: &'a crate::http::HttpRoutes,
}

/// What a plugin gets from the host: a logger scoped to it, the server's config, the
/// event bus and service registry (both scoped to it: what it registers is removed when
/// it stops), a handle to the server, and a way to spawn tasks that stop with it.
#[derive(Clone)]
pub struct PluginContext {
    inner: Arc<ContextInner>,
}

impl fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginContext")
            .field("plugin", &self.inner.plugin)
            .finish_non_exhaustive()
    }
}

impl PluginContext {
    /// `static_name` is `plugin` as a `&'static str` when the caller has one (the host
    /// does, from the plugin's metadata): the plugin's events then name their source
    /// without a shared reference count.
    pub(crate) fn new(
        plugin: &Arc<str>,
        static_name: Option<&'static str>,
        config: Arc<IxpConfig>,
        registries: Registries<'_>,
        server: ServerHandle,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                plugin: plugin.clone(),
                logger: Logger {
                    plugin: plugin.clone(),
                },
                config,
                events: match static_name {
                    Some(name) => registries.events.scoped_as(plugin.clone(), name),
                    None => registries.events.scoped(plugin.clone()),
                },
                services: registries.services.scoped(plugin.clone()),
                #[cfg(feature = "http")]
                http: registries.http.scoped(plugin.clone()),
                server,
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The name of the plugin this context belongs to.
    pub fn plugin_name(&self) -> &str {
        &self.inner.plugin
    }

    /// The plugin's logger.
    pub fn logger(&self) -> &Logger {
        &self.inner.logger
    }

    /// The whole server configuration (the plugin's own section arrives typed in
    /// `initialize`).
    pub fn config(&self) -> &IxpConfig {
        &self.inner.config
    }

    /// How long each of this plugin's hooks may run before the host gives up on it: the
    /// `hook_timeout` of its section, else `server.hook_timeout` (30 s by default). A
    /// `stop` that waits for something should give up on it before this.
    ///
    /// ```
    /// use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};
    ///
    /// #[ixp_plugin(name = "flusher-plugin", version = "1.0.0")]
    /// pub struct Flusher;
    ///
    /// impl Plugin for Flusher {
    ///     type Config = NoConfig;
    ///
    ///     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
    ///         Ok(Self)
    ///     }
    ///
    ///     async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
    ///         // Gives up on a flush that does not end before the host gives up on
    ///         // this hook.
    ///         let flush = std::future::pending::<()>();
    ///         if tokio::time::timeout(ctx.hook_timeout() / 2, flush).await.is_err() {
    ///             ctx.logger().warn("flush cut short");
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn hook_timeout(&self) -> std::time::Duration {
        self.inner
            .config
            .plugin(&self.inner.plugin)
            .and_then(|section| section.hook_timeout)
            .unwrap_or(self.inner.config.server().hook_timeout)
    }

    /// The event bus, acting for this plugin.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The service registry, acting for this plugin.
    pub fn services(&self) -> &ServiceRegistry {
        &self.inner.services
    }

    /// The HTTP routes and middleware, mounting for this plugin (feature `http`).
    #[cfg(feature = "http")]
    pub fn http(&self) -> &crate::http::HttpRoutes {
        &self.inner.http
    }

    /// A handle to the server hosting the plugin.
    pub fn server(&self) -> &ServerHandle {
        &self.inner.server
    }

    /// Spawns a task that runs in the plugin's span and is aborted when the plugin stops
    /// (if it has not finished by then).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(future.instrument(self.inner.logger.span()));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.abort_handle());
        handle
    }

    /// Aborts every task spawned through [`spawn`](Self::spawn); returns how many were
    /// still running.
    pub(crate) fn abort_tasks(&self) -> usize {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let running = tasks.iter().filter(|t| !t.is_finished()).count();
        for task in tasks.drain(..) {
            task.abort();
        }
        running
    }
}
