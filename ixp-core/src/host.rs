//! The lifecycle host: initialize and start plugins in dependency order, stop them in
//! reverse, roll back on failure, restart with dependents, aggregate health.
//!
//! Every hook runs under the plugin's hook timeout with its panics caught, so a hook that
//! returns an error, panics or hangs is an error *of that plugin*; the host keeps going.
//! A hook is first polled in the host's task (most hooks finish there, without a task
//! or a wake-up); one that has to wait moves to its own task, which the host awaits under
//! the timeout and aborts when it expires. A hook that blocks its thread without ever
//! awaiting cannot be bounded (no async code can be): do blocking work in
//! `tokio::task::spawn_blocking`.
//!
//! ```
//! use ixp_core::{ixp_plugin, BoxError, Catalog, Host, NoConfig, Plugin, PluginContext, PluginState};
//!
//! #[ixp_plugin(name = "hello-plugin", version = "1.0.0")]
//! struct Hello;
//! impl Plugin for Hello {
//!     type Config = NoConfig;
//!     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> { Ok(Hello) }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::builder().catalog(Catalog::new()).plugin::<Hello>(NoConfig {}).build()?;
//! host.initialize().await?;
//! host.start().await?;
//! assert_eq!(host.state("hello-plugin"), Some(PluginState::Running));
//! host.stop().await?;
//! assert_eq!(host.state("hello-plugin"), Some(PluginState::Stopped));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{watch, RwLock};
use tracing::Instrument;

use crate::config::IxpConfig;
use crate::context::{PluginContext, Registries};
use crate::events::{panic_message, Draining, EventBus};
use crate::health::{HealthReport, HealthStatus, PluginHealth};
use crate::plan::{plan_with, Plan};
use crate::plugin::{BoxError, Plugin, PluginMetadata};
use crate::problem::CheckReport;
use crate::registry::{AnyConfig, Catalog, DynPlugin, PluginRegistration};
use crate::services::ServiceRegistry;

/// Where a plugin is in its lifecycle:
/// Configured → Initializing → Initialized → Starting → Running → Stopping → Stopped
/// (or Failed at any step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Registered and its config checked; not initialized yet.
    Configured,
    /// `initialize` is running.
    Initializing,
    /// Initialized, not started.
    Initialized,
    /// `start` is running.
    Starting,
    /// Started.
    Running,
    /// `stop` is running.
    Stopping,
    /// Stopped and cleaned up.
    Stopped,
    /// A hook failed, panicked or timed out.
    Failed,
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            PluginState::Configured => "configured",
            PluginState::Initializing => "initializing",
            PluginState::Initialized => "initialized",
            PluginState::Starting => "starting",
            PluginState::Running => "running",
            PluginState::Stopping => "stopping",
            PluginState::Stopped => "stopped",
            PluginState::Failed => "failed",
        };
        f.write_str(text)
    }
}

/// A lifecycle hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `initialize`.
    Initialize,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `restart`.
    Restart,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Initialize => "initialize",
            Hook::Start => "start",
            Hook::Stop => "stop",
            Hook::Restart => "restart",
        })
    }
}

/// How a hook failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookFailure {
    /// The hook returned an error.
    #[error("{0}")]
    Error(#[source] BoxError),
    /// The hook panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The hook did not finish in time.
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The hook's task was cancelled.
    #[error("was cancelled")]
    Cancelled,
}

/// Errors of the host's lifecycle operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A plugin's hook failed; the plugins started before it were stopped again.
    #[error("plugin `{plugin}` failed to {hook}: {failure}{}", rollback_note(.rolled_back, .rollback_failures))]
    Hook {
        /// The plugin.
        plugin: String,
        /// The hook.
        hook: Hook,
        /// What happened.
        #[source]
        failure: HookFailure,
        /// The plugins stopped (or cleaned up) again, in that order.
        rolled_back: Vec<String>,
        /// Failures while rolling back, as messages.
        rollback_failures: Vec<String>,
    },
    /// `start` was called before `initialize`.
    #[error("cannot start: the plugins are not initialized (call initialize() first)")]
    NotInitialized,
    /// The host has stopped or failed; build a new one.
    #[error("the host is {0}; build a new host to run the plugins again")]
    Finished(&'static str),
    /// No plugin of that name in this host.
    #[error("no plugin named `{0}` in this host")]
    UnknownPlugin(String),
    /// The plugin is not running.
    #[error("plugin `{plugin}` is {state}, not running")]
    NotRunning {
        /// The plugin.
        plugin: String,
        /// Its state.
        state: PluginState,
    },
    /// Some plugins failed to stop cleanly (all were stopped and cleaned up anyway).
    #[error("{} plugin(s) did not stop cleanly: {}", .0.len(), stop_list(.0))]
    Stop(Vec<(String, HookFailure)>),
}

fn rollback_note(rolled_back: &[String], failures: &[String]) -> String {
    let mut note = String::new();
    if !rolled_back.is_empty() {
        note.push_str(&format!("; rolled back: {}", rolled_back.join(", ")));
    }
    if !failures.is_empty() {
        note.push_str(&format!("; rollback problems: {}", failures.join("; ")));
    }
    note
}

fn stop_list(failures: &[(String, HookFailure)]) -> String {
    failures
        .iter()
        .map(|(p, f)| format!("`{p}` {f}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A public description of one hosted plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Lifecycle state.
    pub state: PluginState,
    /// Declared dependencies (required).
    pub dependencies: Vec<String>,
    /// Declared optional dependencies.
    pub optional_dependencies: Vec<String>,
    /// Plugins this one starts after (the resolved edges).
    pub starts_after: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostPhase {
    Planned,
    Initialized,
    Started,
    Stopped,
    Failed,
}

type Instance = Arc<RwLock<Option<Box<dyn DynPlugin>>>>;

/// The plugin instance for writing: taken at once when free (the usual case: no lock
/// future is created or polled), else awaited.
async fn write_instance(
    instance: &Instance,
) -> tokio::sync::RwLockWriteGuard<'_, Option<Box<dyn DynPlugin>>> {
    match instance.try_write() {
        Ok(guard) => guard,
        Err(_) => instance.write().await,
    }
}
type StopListener = Box<dyn Fn(&str) + Send + Sync>;

struct Slot {
    name: Arc<str>,
    metadata: PluginMetadata,
    registration: PluginRegistration,
    deps: Vec<usize>,
    dependents: Vec<usize>,
    config: Mutex<Option<AnyConfig>>,
    effective_config: Value,
    hook_timeout: Duration,
    state: Mutex<PluginState>,
    instance: Instance,
    ctx: PluginContext,
}

struct HostShared {
    slots: Vec<Slot>,
    /// Slot index by plugin name (a fast hasher: built for every plugin at start-up).
    index: HashMap<&'static str, usize, foldhash::fast::RandomState>,
    events: EventBus,
    services: ServiceRegistry,
    #[cfg(feature = "http")]
    http: crate::http::HttpRoutes,
    config: Arc<IxpConfig>,
    phase: tokio::sync::Mutex<HostPhase>,
    started: std::sync::atomic::AtomicBool,
    shutdown: watch::Sender<bool>,
    stop_listeners: Mutex<Vec<StopListener>>,
}

/// Builds a [`Host`]: catalog, config, plugins registered in code.
pub struct HostBuilder {
    catalog: Catalog,
    config: IxpConfig,
    typed: HashMap<String, AnyConfig>,
    events: EventBus,
    services: ServiceRegistry,
}

impl fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuilder")
            .field("catalog", &self.catalog)
            .field("typed", &self.typed.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HostBuilder {
    /// Uses this catalog instead of every linked plugin.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Uses this configuration (default: every plugin on its defaults).
    pub fn config(mut self, config: IxpConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers `P` with its config given as a typed value (the TypeScript SDK's
    /// `server.registerPlugin(new X(), config)`). The value is validated like a config
    /// section; a section for `P` in the config file is then ignored.
    pub fn plugin<P: Plugin>(mut self, config: P::Config) -> Self {
        self.catalog = self.catalog.with::<P>();
        self.typed
            .insert(P::METADATA.name.to_owned(), Box::new(config));
        self
    }

    /// Adds the plugin type `P`; its config comes from the configuration (or its
    /// defaults).
    pub fn plugin_type<P: Plugin>(mut self) -> Self {
        self.catalog = self.catalog.with::<P>();
        self
    }

    /// Uses this event bus (e.g. one shared with code outside the host).
    pub fn events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Uses this service registry.
    pub fn services(mut self, services: ServiceRegistry) -> Self {
        self.services = services;
        self
    }

    /// Runs the start-up check and builds the host, or returns every problem.
    pub fn build(self) -> Result<Host, CheckReport> {
        let plan = plan_with(&self.catalog, &self.config, self.typed)?;
        Ok(Host::from_plan_with(
            plan,
            self.config,
            self.events,
            self.services,
        ))
    }
}

/// Hosts a checked set of plugins through their lifecycle.
#[derive(Clone)]
pub struct Host {
    shared: Arc<HostShared>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field(
                "plugins",
                &self
                    .shared
                    .slots
                    .iter()
                    .map(|s| &*s.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Host {
    /// A builder over every linked plugin and the default config.
    pub fn builder() -> HostBuilder {
        HostBuilder {
            catalog: Catalog::linked(),
            config: IxpConfig::default(),
            typed: HashMap::new(),
            events: EventBus::new(),
            services: ServiceRegistry::new(),
        }
    }

    /// A host for a plan the caller checked already.
    pub fn from_plan(plan: Plan, config: IxpConfig) -> Self {
        Self::from_plan_with(plan, config, EventBus::new(), ServiceRegistry::new())
    }

    fn from_plan_with(
        plan: Plan,
        config: IxpConfig,
        events: EventBus,
        services: ServiceRegistry,
    ) -> Self {
        let config = Arc::new(config);
        let providers: Vec<(String, String)> = plan
            .plugins
            .iter()
            .flat_map(|p| {
                p.metadata
                    .provides
                    .iter()
                    .map(|s| ((*s).to_owned(), p.metadata.name.to_owned()))
            })
            .collect();
        services.set_providers(providers);
        let shared = Arc::new_cyclic(|weak: &Weak<HostShared>| {
            #[cfg(feature = "http")]
            let http = crate::http::HttpRoutes::new(ServerHandle {
                shared: weak.clone(),
            });
            let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); plan.plugins.len()];
            for (i, p) in plan.plugins.iter().enumerate() {
                for &d in &p.dependencies {
                    dependents[d].push(i);
                }
            }
            let slots: Vec<Slot> = plan
                .plugins
                .into_iter()
                .zip(dependents)
                .map(|(p, dependents)| {
                    let name: Arc<str> = p.metadata.name.into();
                    let registries = Registries {
                        events: &events,
                        services: &services,
                        #[cfg(feature = "http")]
                        http: &http,
                    };
                    let server = ServerHandle {
                        shared: weak.clone(),
                    };
                    let ctx = PluginContext::new(
                        &name,
                        Some(p.metadata.name),
                        config.clone(),
                        registries,
                        server,
                    );
                    Slot {
                        name,
                        metadata: p.metadata,
                        registration: p.registration,
                        deps: p.dependencies,
                        dependents,
                        config: Mutex::new(Some(p.config)),
                        effective_config: p.effective_config,
                        hook_timeout: p.hook_timeout,
                        state: Mutex::new(PluginState::Configured),
                        instance: Arc::new(RwLock::new(None)),
                        ctx,
                    }
                })
                .collect();
            let index = slots
                .iter()
                .enumerate()
                .map(|(i, s)| (s.metadata.name, i))
                .collect();
            HostShared {
                slots,
                index,
                events: events.clone(),
                services: services.clone(),
                #[cfg(feature = "http")]
                http,
                config,
                phase: tokio::sync::Mutex::new(HostPhase::Planned),
                started: std::sync::atomic::AtomicBool::new(false),
                shutdown: watch::channel(false).0,
                stop_listeners: Mutex::new(Vec::new()),
            }
        });
        Self { shared }
    }

    /// A handle plugins and servers use to reach the host.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The event bus (not scoped to any plugin).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// The service registry (not scoped to any plugin).
    pub fn services(&self) -> &ServiceRegistry {
        &self.shared.services
    }

    /// The HTTP routes plugins mounted (feature `http`).
    #[cfg(feature = "http")]
    pub fn http(&self) -> &crate::http::HttpRoutes {
        &self.shared.http
    }

    /// The configuration.
    pub fn config(&self) -> &IxpConfig {
        &self.shared.config
    }

    /// Each plugin's name, version, state and dependencies, in start order.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.shared.plugins()
    }

    /// The state of a plugin.
    pub fn state(&self, name: &str) -> Option<PluginState> {
        self.shared.index.get(name).map(|&i| self.shared.state(i))
    }

    /// Whether every plugin is running.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// The effective configuration of a plugin (defaults applied, secrets masked).
    pub fn effective_config(&self, name: &str) -> Option<&Value> {
        self.shared
            .index
            .get(name)
            .map(|&i| &self.shared.slots[i].effective_config)
    }

    /// Calls `listener` with the plugin name whenever a plugin stops (or restarts), after
    /// its subscriptions and services are gone. The HTTP front uses it to unmount routes.
    pub fn on_plugin_stopped(&self, listener: impl Fn(&str) + Send + Sync + 'static) {
        self.shared
            .stop_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(listener));
    }

    /// Initializes every plugin in start order. If one fails, the ones initialized before
    /// it are cleaned up (in reverse) and the error names the plugin and the cause.
    pub async fn initialize(&self) -> Result<(), HostError> {
        let shared = &self.shared;
        let mut phase = shared.phase.lock().await;
        match *phase {
            HostPhase::Planned => {}
            HostPhase::Initialized | HostPhase::Started => {
                tracing::warn!("initialize called twice; ignored");
                return Ok(());
            }
            HostPhase::Stopped => return Err(HostError::Finished("stopped")),
            HostPhase::Failed => return Err(HostError::Finished("failed")),
        }
        for i in 0..shared.slots.len() {
            shared.set_state(i, PluginState::Initializing);
            if let Err(failure) = shared.initialize_slot(i).await {
                shared.set_state(i, PluginState::Failed);
                shared.release(i).await;
                let mut rolled_back = Vec::new();
                for j in (0..i).rev() {
                    shared.release(j).await;
                    shared.set_state(j, PluginState::Stopped);
                    rolled_back.push(shared.slots[j].name.to_string());
                }
                *phase = HostPhase::Failed;
                return Err(shared.hook_error(
                    i,
                    Hook::Initialize,
                    failure,
                    rolled_back,
                    Vec::new(),
                ));
            }
            shared.set_state(i, PluginState::Initialized);
        }
        *phase = HostPhase::Initialized;
        Ok(())
    }

    /// Starts every plugin in dependency order. If the k-th fails, the k-1 started
    /// before it are stopped in reverse order and the rest are cleaned up. Starting twice
    /// is a warning and a no-op; starting before [`initialize`](Self::initialize) is an
    /// error.
    pub async fn start(&self) -> Result<(), HostError> {
        let shared = &self.shared;
        let mut phase = shared.phase.lock().await;
        match *phase {
            HostPhase::Initialized => {}
            HostPhase::Planned => return Err(HostError::NotInitialized),
            HostPhase::Started => {
                tracing::warn!("start called on a host that is already started; ignored");
                return Ok(());
            }
            HostPhase::Stopped => return Err(HostError::Finished("stopped")),
            HostPhase::Failed => return Err(HostError::Finished("failed")),
        }
        let n = shared.slots.len();
        for i in 0..n {
            shared.set_state(i, PluginState::Starting);
            let started = shared.run_hook(i, Hook::Start).await;
            if started.is_ok() {
                shared.warn_unprovided(i);
            }
            if let Err(failure) = started {
                shared.set_state(i, PluginState::Failed);
                shared.release(i).await;
                let mut rolled_back = Vec::new();
                let mut rollback_failures = Vec::new();
                for j in (0..i).rev() {
                    if let Err(f) = shared.stop_slot(j).await {
                        rollback_failures.push(format!("`{}` {f}", shared.slots[j].name));
                    }
                    rolled_back.push(shared.slots[j].name.to_string());
                }
                for j in i + 1..n {
                    shared.release(j).await;
                    shared.set_state(j, PluginState::Stopped);
                }
                *phase = HostPhase::Failed;
                return Err(shared.hook_error(
                    i,
                    Hook::Start,
                    failure,
                    rolled_back,
                    rollback_failures,
                ));
            }
            shared.set_state(i, PluginState::Running);
            shared.slots[i].ctx.logger().debug("started");
        }
        *phase = HostPhase::Started;
        shared
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// [`initialize`](Self::initialize) then [`start`](Self::start).
    pub async fn launch(&self) -> Result<(), HostError> {
        self.initialize().await?;
        self.start().await
    }

    /// Stops every running plugin in reverse start order and cleans up every plugin
    /// (subscriptions, services, tasks). A plugin that fails to stop does not keep the
    /// others from stopping; the failures are returned together.
    pub async fn stop(&self) -> Result<(), HostError> {
        let shared = &self.shared;
        let mut phase = shared.phase.lock().await;
        if matches!(*phase, HostPhase::Stopped) {
            tracing::warn!("stop called on a host that is already stopped; ignored");
            return Ok(());
        }
        shared
            .started
            .store(false, std::sync::atomic::Ordering::Release);
        let mut failures = Vec::new();
        for i in (0..shared.slots.len()).rev() {
            match shared.state(i) {
                PluginState::Running | PluginState::Starting => {
                    if let Err(f) = shared.stop_slot(i).await {
                        failures.push((shared.slots[i].name.to_string(), f));
                    }
                }
                // Stopped with its value kept: a dependent of a restart that failed.
                PluginState::Stopped => shared.drop_instance(i).await,
                _ => {
                    shared.release(i).await;
                    if shared.state(i) != PluginState::Failed {
                        shared.set_state(i, PluginState::Stopped);
                    }
                }
            }
        }
        *phase = HostPhase::Stopped;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(HostError::Stop(failures))
        }
    }

    /// Restarts a running plugin and every plugin that depends on it (directly or not):
    /// the dependents are stopped in reverse start order, the plugin's `restart` hook runs
    /// (after its subscriptions, services and tasks are removed), then the dependents
    /// start again in order.
    pub async fn restart(&self, name: &str) -> Result<(), HostError> {
        let shared = &self.shared;
        let phase = shared.phase.lock().await;
        if *phase != HostPhase::Started {
            return Err(HostError::NotRunning {
                plugin: name.to_owned(),
                state: shared
                    .index
                    .get(name)
                    .map_or(PluginState::Configured, |&i| shared.state(i)),
            });
        }
        let &target = shared
            .index
            .get(name)
            .ok_or_else(|| HostError::UnknownPlugin(name.to_owned()))?;
        let state = shared.state(target);
        if state != PluginState::Running {
            return Err(HostError::NotRunning {
                plugin: name.to_owned(),
                state,
            });
        }
        let dependents = shared.dependents_of(target);
        for &d in dependents.iter().rev() {
            if let Err(failure) = shared.stop_slot_keep(d).await {
                shared.set_state(d, PluginState::Failed);
                return Err(shared.hook_error(d, Hook::Stop, failure, Vec::new(), Vec::new()));
            }
        }
        shared.set_state(target, PluginState::Starting);
        shared.release_registrations(target).await;
        if let Err(failure) = shared.run_hook(target, Hook::Restart).await {
            shared.set_state(target, PluginState::Failed);
            return Err(shared.hook_error(target, Hook::Restart, failure, Vec::new(), Vec::new()));
        }
        shared.warn_unprovided(target);
        shared.set_state(target, PluginState::Running);
        for &d in &dependents {
            shared.set_state(d, PluginState::Starting);
            if let Err(failure) = shared.run_hook(d, Hook::Start).await {
                shared.set_state(d, PluginState::Failed);
                return Err(shared.hook_error(d, Hook::Start, failure, Vec::new(), Vec::new()));
            }
            shared.warn_unprovided(d);
            shared.set_state(d, PluginState::Running);
        }
        Ok(())
    }

    /// Every plugin's health (each under the health timeout) and the aggregate.
    pub async fn health(&self) -> HealthReport {
        self.shared.health().await
    }

    /// Resolves when a plugin or signal handler asked the server to shut down.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shared.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }
}

impl HostShared {
    /// Says which services a started plugin declares (`provides`) but has not
    /// registered: a plugin looking one up would not find it. (After a restart, the host
    /// has removed the plugin's services: one registered only in `initialize` is gone.)
    fn warn_unprovided(&self, i: usize) {
        let slot = &self.slots[i];
        let missing: Vec<&str> = slot
            .metadata
            .provides
            .iter()
            .copied()
            .filter(|service| !self.services.contains(service))
            .collect();
        if !missing.is_empty() {
            slot.ctx.logger().warn(format_args!(
                "declares that it provides [{}], but after its start the registry has no such service: register it in `start` too (a restart removes what `initialize` registered)",
                missing.join(", ")
            ));
        }
    }

    fn state(&self, i: usize) -> PluginState {
        *self.slots[i]
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, i: usize, state: PluginState) {
        let slot = &self.slots[i];
        *slot.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        match state {
            PluginState::Running | PluginState::Stopped | PluginState::Failed => {
                tracing::info!(plugin = %slot.name, state = %state, "plugin state");
            }
            _ => tracing::debug!(plugin = %slot.name, state = %state, "plugin state"),
        }
    }

    fn is_ready(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
            && (0..self.slots.len()).all(|i| self.state(i) == PluginState::Running)
    }

    fn plugins(&self) -> Vec<PluginInfo> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| PluginInfo {
                name: s.name.to_string(),
                version: s.metadata.version.to_owned(),
                description: s.metadata.description.to_owned(),
                state: self.state(i),
                dependencies: s
                    .metadata
                    .dependencies
                    .iter()
                    .map(|d| (*d).to_owned())
                    .collect(),
                optional_dependencies: s
                    .metadata
                    .optional_dependencies
                    .iter()
                    .map(|d| (*d).to_owned())
                    .collect(),
                starts_after: s
                    .deps
                    .iter()
                    .map(|&d| self.slots[d].name.to_string())
                    .collect(),
            })
            .collect()
    }

    fn hook_error(
        &self,
        i: usize,
        hook: Hook,
        failure: HookFailure,
        rolled_back: Vec<String>,
        rollback_failures: Vec<String>,
    ) -> HostError {
        let plugin = self.slots[i].name.to_string();
        tracing::error!(plugin = %plugin, hook = %hook, error = %failure, "plugin hook failed");
        HostError::Hook {
            plugin,
            hook,
            failure,
            rolled_back,
            rollback_failures,
        }
    }

    /// Transitive dependents of `target` that are running, in start order.
    fn dependents_of(&self, target: usize) -> Vec<usize> {
        let mut seen = vec![false; self.slots.len()];
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            for &d in &self.slots[i].dependents {
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        (0..self.slots.len())
            .filter(|&i| seen[i] && self.state(i) == PluginState::Running)
            .collect()
    }

    async fn initialize_slot(&self, i: usize) -> Result<(), HookFailure> {
        let slot = &self.slots[i];
        let config = slot
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| HookFailure::Error("the plugin was initialized before".into()))?;
        let ty = slot.registration.plugin_type();
        let ctx = slot.ctx.clone();
        let instance = slot.instance.clone();
        let hook = async move {
            let plugin = ty.initialize(config, ctx).await?;
            *write_instance(&instance).await = Some(plugin);
            Ok(())
        };
        run_guarded(hook, slot.ctx.logger().span(), slot.hook_timeout).await
    }

    async fn run_hook(&self, i: usize, hook: Hook) -> Result<(), HookFailure> {
        let slot = &self.slots[i];
        let instance = slot.instance.clone();
        let ctx = slot.ctx.clone();
        let run = async move {
            let mut guard = write_instance(&instance).await;
            let Some(plugin) = guard.as_mut() else {
                return Err::<(), BoxError>("the plugin is not initialized".into());
            };
            match hook {
                Hook::Start => plugin.start(&ctx).await,
                Hook::Stop => plugin.stop(&ctx).await,
                Hook::Restart => plugin.restart(&ctx).await,
                Hook::Initialize => Ok(()),
            }
        };
        run_guarded(run, slot.ctx.logger().span(), slot.hook_timeout).await
    }

    /// Removes the plugin's subscriptions (letting queued events drain, bounded by the
    /// hook timeout), services and tasks, and tells the stop listeners.
    async fn release_registrations(&self, i: usize) {
        let slot = &self.slots[i];
        self.drain_subscriptions(i).await;
        let services = self.services.remove_owner(&slot.name);
        #[cfg(feature = "http")]
        self.http.remove_owner(&slot.name);
        let tasks = slot.ctx.abort_tasks();
        if !services.is_empty() || tasks > 0 {
            tracing::debug!(plugin = %slot.name, ?services, tasks, "plugin registrations removed");
        }
        let listeners = self
            .stop_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for listener in listeners.iter() {
            listener(&slot.name);
        }
    }

    /// Removes the plugin's subscriptions and waits, up to the hook timeout, for their
    /// queue workers to handle the events queued so far. Workers still busy then are
    /// stopped (their queued events dropped, and logged), so that no handler of the
    /// plugin runs once it has stopped.
    async fn drain_subscriptions(&self, i: usize) {
        let slot = &self.slots[i];
        let mut workers = self.events.remove_owner(&slot.name);
        if workers.is_empty() {
            return;
        }
        let drained = futures::future::join_all(workers.iter_mut());
        if tokio::time::timeout(slot.hook_timeout, drained)
            .await
            .is_ok()
        {
            return;
        }
        let busy: Vec<_> = workers.into_iter().filter(|w| !w.is_finished()).collect();
        let dropped: usize = busy.iter().map(Draining::queued).sum();
        for worker in &busy {
            worker.abort();
        }
        // An aborted worker ends at its handler's next `.await`; one that never yields
        // cannot be stopped, and is only said.
        let patterns: Vec<String> = busy.iter().map(Draining::pattern).collect();
        let ended = tokio::time::timeout(slot.hook_timeout, futures::future::join_all(busy));
        let message = format!(
            "event handlers of [{}] still busy after the hook timeout ({:?}): {dropped} queued event(s) dropped",
            patterns.join(", "),
            slot.hook_timeout
        );
        if ended.await.is_ok() {
            slot.ctx.logger().warn(message);
        } else {
            slot.ctx.logger().error(format!(
                "{message}, and a handler still runs (it does not yield to be stopped)"
            ));
        }
    }

    /// Releases the registrations and drops the plugin value.
    async fn release(&self, i: usize) {
        self.release_registrations(i).await;
        self.drop_instance(i).await;
    }

    async fn drop_instance(&self, i: usize) {
        let slot = &self.slots[i];
        match tokio::time::timeout(slot.hook_timeout, slot.instance.write()).await {
            Ok(mut guard) => *guard = None,
            Err(_) => slot
                .ctx
                .logger()
                .warn("plugin value still locked by a hook; not dropped"),
        }
    }

    /// Stops a running plugin for good: subscriptions drained, `stop`, then services,
    /// tasks and the plugin value released.
    async fn stop_slot(&self, i: usize) -> Result<(), HookFailure> {
        let result = self.stop_slot_keep(i).await;
        self.drop_instance(i).await;
        result
    }

    /// Stops a running plugin but keeps its value (for restarts).
    async fn stop_slot_keep(&self, i: usize) -> Result<(), HookFailure> {
        self.set_state(i, PluginState::Stopping);
        let slot = &self.slots[i];
        self.drain_subscriptions(i).await;
        let result = self.run_hook(i, Hook::Stop).await;
        self.release_registrations(i).await;
        match &result {
            Ok(()) => self.set_state(i, PluginState::Stopped),
            Err(failure) => {
                tracing::error!(plugin = %slot.name, error = %failure, "plugin failed to stop");
                self.set_state(i, PluginState::Failed);
            }
        }
        result
    }

    async fn health(&self) -> HealthReport {
        let timeout = self.config.server().health_timeout;
        let checks = self.slots.iter().enumerate().map(|(i, slot)| {
            let state = self.state(i);
            let instance = slot.instance.clone();
            let ctx = slot.ctx.clone();
            async move {
                let health = if state != PluginState::Running {
                    PluginHealth::unhealthy(format!("plugin is {state}"))
                } else {
                    let check = async move {
                        let guard = instance.read().await;
                        match guard.as_ref() {
                            Some(plugin) => Ok(plugin.health(&ctx).await),
                            None => Ok(PluginHealth::unhealthy("plugin is not initialized")),
                        }
                    };
                    match run_guarded(check, slot.ctx.logger().span(), timeout).await {
                        Ok(health) => health,
                        Err(failure) => PluginHealth::unhealthy(format!("health check {failure}")),
                    }
                };
                (slot.name.to_string(), health)
            }
        });
        let results = futures::future::join_all(checks).await;
        HealthReport::from_plugins(results.into_iter().collect::<BTreeMap<_, _>>())
    }
}

/// A hook's outcome: its result, or the panic it raised.
type HookOutcome<T> = std::thread::Result<Result<T, BoxError>>;

/// Runs a hook (or a health check) so that an error, a panic or a hang is a
/// [`HookFailure`] of that plugin.
///
/// The hook is polled once in the caller's task: one that finishes without waiting (a
/// trivial hook, or one whose work is all synchronous) costs no task and no wake-up,
/// which is what keeps the start-up of large compositions linear and fast. A hook that
/// has to wait moves, as it is, to its own task, which the caller awaits under
/// `timeout` and aborts when it expires, or when the caller gives up (drops this
/// future: a shutdown during start-up), so that no hook outlives its caller.
async fn run_guarded<T: Send + 'static>(
    hook: impl Future<Output = Result<T, BoxError>> + Send + 'static,
    span: tracing::Span,
    timeout: Duration,
) -> Result<T, HookFailure> {
    let mut hook = Box::pin(AssertUnwindSafe(hook.instrument(span)).catch_unwind());
    if let Poll::Ready(outcome) = futures::poll!(hook.as_mut()) {
        return settle(outcome);
    }
    let task = tokio::spawn(hook);
    let abort = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(timeout, task).await {
        Err(_) => {
            abort.0.abort();
            Err(HookFailure::TimedOut(timeout))
        }
        Ok(Err(join)) if join.is_panic() => {
            Err(HookFailure::Panicked(panic_message(&*join.into_panic())))
        }
        Ok(Err(_)) => Err(HookFailure::Cancelled),
        Ok(Ok(outcome)) => settle(outcome),
    }
}

/// Aborts a task when dropped (a finished task is left as it is).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A finished hook's outcome as the host reports it.
fn settle<T>(outcome: HookOutcome<T>) -> Result<T, HookFailure> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(HookFailure::Error(err)),
        Err(panic) => Err(HookFailure::Panicked(panic_message(&*panic))),
    }
}

/// A handle to the host, given to plugins in their context. It does not keep the host
/// alive.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Weak<HostShared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("alive", &(self.shared.strong_count() > 0))
            .finish()
    }
}

impl ServerHandle {
    /// A handle to no host (for plugin contexts built outside a host, e.g. in tests).
    pub fn detached() -> Self {
        Self {
            shared: Weak::new(),
        }
    }

    /// Each plugin's name, version, state and dependencies (empty if the host is gone).
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.shared
            .upgrade()
            .map(|s| s.plugins())
            .unwrap_or_default()
    }

    /// The state of a plugin.
    pub fn state(&self, name: &str) -> Option<PluginState> {
        let shared = self.shared.upgrade()?;
        shared.index.get(name).map(|&i| shared.state(i))
    }

    /// Whether every plugin is running.
    pub fn is_ready(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.is_ready())
    }

    /// The health of every plugin (unhealthy and empty if the host is gone).
    pub async fn health(&self) -> HealthReport {
        match self.shared.upgrade() {
            Some(shared) => shared.health().await,
            None => HealthReport {
                status: HealthStatus::Unhealthy,
                plugins: BTreeMap::new(),
            },
        }
    }

    /// How long `GET /health` reuses its answer (`server.health_cache`).
    #[cfg(feature = "http")]
    pub(crate) fn health_cache(&self) -> Duration {
        self.shared
            .upgrade()
            .map_or(Duration::ZERO, |shared| shared.config.server().health_cache)
    }

    /// Asks the server to shut down gracefully.
    pub fn request_shutdown(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.shutdown.send_replace(true);
        }
    }
}
