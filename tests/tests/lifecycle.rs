//! Lifecycle: order, rollback, failures/panics/timeouts in every hook, restart with
//! dependents, cleanup of subscriptions, services and tasks on stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ixp_core::{
    Catalog, HealthStatus, Hook, HookFailure, HostError, NoConfig, Plugin, PluginContext,
    PluginState,
};
use ixp_tests::{host as new_host, probe};

// A chain: p1 <- p2 <- p3 <- p4 (each depends on the previous one), and a side plugin
// that depends on p2 as well.
probe!(P1, "p1", []);
probe!(P2, "p2", ["p1"]);
probe!(P3, "p3", ["p2"]);
probe!(P4, "p4", ["p3"]);
probe!(Side, "side", ["p2"]);

fn chain() -> Catalog {
    // Registered out of order on purpose: the plan sorts them.
    Catalog::new()
        .with::<P4>()
        .with::<P2>()
        .with::<P3>()
        .with::<P1>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_in_dependency_order_and_stops_in_reverse() {
    let (host, journal) = new_host(chain(), "").expect("valid composition");
    host.initialize().await.expect("initialize");
    host.start().await.expect("start");
    assert!(host.is_ready());
    assert_eq!(journal.plugins_for("initialize"), ["p1", "p2", "p3", "p4"]);
    assert_eq!(journal.plugins_for("start"), ["p1", "p2", "p3", "p4"]);
    host.stop().await.expect("stop");
    assert_eq!(journal.plugins_for("stop"), ["p4", "p3", "p2", "p1"]);
    for name in ["p1", "p2", "p3", "p4"] {
        assert_eq!(host.state(name), Some(PluginState::Stopped));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_are_observable_through_the_lifecycle() {
    let (host, _) = new_host(chain(), "").expect("valid composition");
    assert_eq!(host.state("p1"), Some(PluginState::Configured));
    host.initialize().await.expect("initialize");
    assert_eq!(host.state("p1"), Some(PluginState::Initialized));
    assert!(!host.is_ready());
    host.start().await.expect("start");
    assert_eq!(host.state("p4"), Some(PluginState::Running));
    let infos = host.plugins();
    assert_eq!(infos[1].name, "p2");
    assert_eq!(infos[1].starts_after, ["p1"]);
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_when_the_kth_of_n_fails_to_start_for_every_k() {
    let names = ["p1", "p2", "p3", "p4"];
    for k in 0..names.len() {
        let toml = format!("[plugins.{}]\nfail = [\"start\"]\n", names[k]);
        let (host, journal) = new_host(chain(), &toml).expect("valid composition");
        host.initialize().await.expect("initialize");
        let err = host.start().await.expect_err("start must fail");
        match &err {
            HostError::Hook {
                plugin,
                hook,
                failure,
                rolled_back,
                ..
            } => {
                assert_eq!(plugin, names[k]);
                assert_eq!(*hook, Hook::Start);
                assert!(matches!(failure, HookFailure::Error(_)));
                let expected: Vec<&str> = names[..k].iter().rev().copied().collect();
                assert_eq!(rolled_back, &expected, "k = {k}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("plugin `{}` failed to start", names[k])));
        // Started before k, stopped in reverse; nothing after k started.
        assert_eq!(journal.plugins_for("start"), names[..=k].to_vec());
        let stopped: Vec<&str> = names[..k].iter().rev().copied().collect();
        assert_eq!(journal.plugins_for("stop"), stopped);
        assert_eq!(host.state(names[k]), Some(PluginState::Failed));
        for later in &names[k + 1..] {
            assert_eq!(host.state(later), Some(PluginState::Stopped));
        }
        assert!(!host.is_ready());
        assert!(
            host.start().await.is_err(),
            "a failed host does not start again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_failure_cleans_up_the_initialized_plugins() {
    let toml = "[plugins.p3]\nfail = [\"initialize\"]\n";
    let (host, journal) = new_host(chain(), toml).expect("valid composition");
    let err = host.initialize().await.expect_err("must fail");
    assert!(
        err.to_string()
            .starts_with("plugin `p3` failed to initialize: p3 initialize failed on purpose; rolled back: p2, p1"),
        "{err}"
    );
    assert_eq!(journal.plugins_for("start"), Vec::<String>::new());
    assert_eq!(host.state("p3"), Some(PluginState::Failed));
    assert_eq!(host.state("p1"), Some(PluginState::Stopped));
    assert_eq!(host.state("p4"), Some(PluginState::Configured));
}

fn hook_of(name: &str) -> Hook {
    match name {
        "initialize" => Hook::Initialize,
        "start" => Hook::Start,
        "stop" => Hook::Stop,
        _ => Hook::Restart,
    }
}

/// Drives the host up to (and through) the hook, returning the error of that hook.
async fn run_until(hook: &str, toml: &str) -> (HostError, ixp_core::Host) {
    let (host, _) = new_host(chain(), toml).expect("valid composition");
    let result = async {
        host.initialize().await?;
        host.start().await?;
        match hook {
            "restart" => host.restart("p2").await,
            "stop" => host.stop().await,
            _ => Ok(()),
        }
    }
    .await;
    (result.expect_err("the hook must fail"), host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_each_hook_is_an_error_of_that_plugin() {
    for hook in ["initialize", "start", "stop", "restart"] {
        let toml = format!("[plugins.p2]\npanic = [\"{hook}\"]\n");
        let (err, _host) = run_until(hook, &toml).await;
        let text = err.to_string();
        match err {
            HostError::Hook {
                plugin,
                hook: h,
                failure: HookFailure::Panicked(message),
                ..
            } => {
                assert_eq!(plugin, "p2");
                assert_eq!(h, hook_of(hook));
                assert_eq!(message, format!("p2 {hook} panicked on purpose"));
            }
            HostError::Stop(failures) => {
                assert_eq!(hook, "stop");
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].0, "p2");
                assert!(matches!(failures[0].1, HookFailure::Panicked(_)), "{text}");
            }
            other => panic!("{hook}: unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_in_each_hook_times_out_as_an_error_of_that_plugin() {
    for hook in ["initialize", "start", "stop", "restart"] {
        let toml = format!("[plugins.p2]\nhang = [\"{hook}\"]\nhook_timeout = \"150ms\"\n");
        let (err, host) = run_until(hook, &toml).await;
        let text = err.to_string();
        assert!(text.contains("p2"), "{text}");
        assert!(text.contains("timed out after 150ms"), "{hook}: {text}");
        if hook == "stop" {
            // Every other plugin still stopped.
            for name in ["p1", "p3", "p4"] {
                assert_eq!(host.state(name), Some(PluginState::Stopped), "{name}");
            }
            assert_eq!(host.state("p2"), Some(PluginState::Failed));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_panicking_and_hanging_health_checks_are_unhealthy_not_fatal() {
    let toml = r#"
        [server]
        health_timeout = "150ms"
        [plugins.p1]
        panic = ["health"]
        [plugins.p2]
        hang = ["health"]
        [plugins.p3]
        fail = ["health"]
        [plugins.p4]
        health = "degraded"
    "#;
    let (host, _) = new_host(chain(), toml).expect("valid composition");
    host.launch().await.expect("launch");
    let report = host.health().await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    let message = |name: &str| report.plugins[name].message.clone().unwrap_or_default();
    assert!(message("p1").contains("health check panicked: p1 health panicked on purpose"));
    assert!(message("p2").contains("health check timed out after 150ms"));
    assert_eq!(message("p3"), "health failed on purpose");
    assert_eq!(report.plugins["p4"].status, HealthStatus::Degraded);
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_health_is_the_worst_status() {
    let (host, _) = new_host(chain(), "[plugins.p3]\nhealth = \"degraded\"\n").expect("valid");
    host.launch().await.expect("launch");
    assert_eq!(host.health().await.status, HealthStatus::Degraded);
    host.stop().await.expect("stop");
    let (host, _) = new_host(chain(), "").expect("valid");
    host.launch().await.expect("launch");
    assert_eq!(host.health().await.status, HealthStatus::Healthy);
    host.stop().await.expect("stop");
    // Stopped plugins are unhealthy.
    assert_eq!(host.health().await.status, HealthStatus::Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restarts_the_dependents_too() {
    let catalog = chain().with::<Side>();
    let (host, journal) = new_host(catalog, "").expect("valid composition");
    host.launch().await.expect("launch");
    let before = journal.entries().len();
    host.restart("p2").await.expect("restart");
    let after: Vec<String> = journal.entries()[before..].to_vec();
    // Dependents of p2 (p3, p4, side) stop in reverse start order, p2 restarts, the
    // dependents start again in order; p1 is untouched.
    assert_eq!(
        after,
        [
            "side:stop",
            "p4:stop",
            "p3:stop",
            "p2:restart",
            "p3:start",
            "p4:start",
            "side:start"
        ]
    );
    assert!(host.is_ready());
    assert!(matches!(
        host.restart("nope").await,
        Err(HostError::UnknownPlugin(_))
    ));
    host.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_is_a_no_op_and_starting_before_initializing_is_an_error() {
    let (host, journal) = new_host(chain(), "").expect("valid composition");
    let err = host.start().await.expect_err("not initialized");
    assert!(matches!(err, HostError::NotInitialized));
    assert_eq!(
        err.to_string(),
        "cannot start: the plugins are not initialized (call initialize() first)"
    );
    host.initialize().await.expect("initialize");
    host.start().await.expect("start");
    host.start().await.expect("second start is a no-op");
    assert_eq!(journal.plugins_for("start").len(), 4);
    host.stop().await.expect("stop");
    host.stop().await.expect("second stop is a no-op");
    assert_eq!(journal.plugins_for("stop").len(), 4);
}

static TASK_DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct SetOnDrop(&'static std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A plugin that subscribes, registers a service and spawns a task in `start`.
#[ixp_core::ixp_plugin(name = "busy-plugin", version = "1.0.0", provides = ["busy"])]
struct BusyPlugin {
    handled: Arc<AtomicUsize>,
}

impl Plugin for BusyPlugin {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, ixp_core::BoxError> {
        Ok(Self {
            handled: Arc::new(AtomicUsize::new(0)),
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), ixp_core::BoxError> {
        let handled = self.handled.clone();
        ctx.events()
            .on("work.*", move |_| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                }
            })?
            .detach();
        ctx.services().register("busy", self.handled.clone())?;
        let guard = SetOnDrop(&TASK_DROPPED);
        ctx.spawn(async move {
            let _guard = guard;
            futures::future::pending::<()>().await;
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_removes_the_plugins_subscriptions_services_and_tasks() {
    let host = ixp_core::Host::builder()
        .catalog(Catalog::new())
        .plugin::<BusyPlugin>(NoConfig {})
        .build()
        .expect("valid");
    host.launch().await.expect("launch");
    assert_eq!(host.events().subscriptions().len(), 1);
    assert!(!TASK_DROPPED.load(Ordering::SeqCst));
    let counter = host
        .services()
        .get::<Arc<AtomicUsize>>("busy")
        .expect("service");
    for _ in 0..50 {
        host.events().emit("work.item", 1_u32).await;
    }
    host.stop().await.expect("stop");
    // Queued events were handled before the plugin stopped; nothing is left behind.
    assert_eq!(counter.load(Ordering::SeqCst), 50);
    assert!(host.events().subscriptions().is_empty());
    let err = host
        .services()
        .get::<Arc<AtomicUsize>>("busy")
        .expect_err("gone");
    assert!(
        err.to_string().contains("provided by plugin `busy-plugin`"),
        "{err}"
    );
    assert_eq!(host.events().emit("work.item", 1_u32).await, 0);
    // The never-ending task was aborted.
    for _ in 0..100 {
        if TASK_DROPPED.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        TASK_DROPPED.load(Ordering::SeqCst),
        "the plugin's task is still running"
    );
}

/// How many events [`SlowPlugin`]'s handler has finished.
static SLOW_HANDLED: AtomicUsize = AtomicUsize::new(0);

/// A plugin whose queued handler takes 40 ms per event.
#[ixp_core::ixp_plugin(name = "slow-plugin", version = "1.0.0")]
struct SlowPlugin;

impl Plugin for SlowPlugin {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, ixp_core::BoxError> {
        Ok(Self)
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), ixp_core::BoxError> {
        ctx.events()
            .on("slow.work", |_| async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                SLOW_HANDLED.fetch_add(1, Ordering::SeqCst);
            })?
            .detach();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_of_a_plugin_runs_once_its_stop_gave_up_waiting_for_its_queue() {
    let logs = ixp_tests::CapturedLogs::install();
    let (host, _) = new_host(
        Catalog::new().with::<SlowPlugin>(),
        "[plugins.slow-plugin]\nhook_timeout = \"150ms\"\n",
    )
    .expect("valid");
    host.launch().await.expect("launch");
    // 50 events of 40 ms each: far more than the 150 ms the stop waits for.
    for _ in 0..50 {
        host.events().emit("slow.work", ()).await;
    }
    host.stop().await.expect("stop");
    let at_stop = SLOW_HANDLED.load(Ordering::SeqCst);
    assert!(at_stop < 50, "the queue was not cut short: {at_stop}");
    // The events dropped are counted: all but those handled and the one in hand (the
    // worker may finish one more between the count and the abort).
    let text = logs.text();
    let said = text
        .lines()
        .find(|l| l.contains("event handlers of [slow.work] still busy"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    let dropped: usize = said
        .split("): ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {said}"));
    assert!(
        (49..=51).contains(&(dropped + at_stop)),
        "{dropped} dropped, {at_stop} handled: {said}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        SLOW_HANDLED.load(Ordering::SeqCst),
        at_stop,
        "the plugin's handler still ran after the host stopped"
    );
    assert!(host.events().subscriptions().is_empty());
}

/// Set when a [`Dependent`] value is dropped.
static DEPENDENT_DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A plugin whose `restart` fails.
#[ixp_core::ixp_plugin(name = "unrestartable", version = "1.0.0")]
struct Unrestartable;

impl Plugin for Unrestartable {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, ixp_core::BoxError> {
        Ok(Self)
    }

    async fn restart(&mut self, _: &PluginContext) -> Result<(), ixp_core::BoxError> {
        Err("cannot restart".into())
    }
}

/// A plugin that depends on [`Unrestartable`] and says when it is dropped.
#[ixp_core::ixp_plugin(name = "dependent", version = "1.0.0", dependencies = ["unrestartable"])]
struct Dependent {
    _dropped: SetOnDrop,
}

impl Plugin for Dependent {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, ixp_core::BoxError> {
        Ok(Self {
            _dropped: SetOnDrop(&DEPENDENT_DROPPED),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drops_the_dependents_a_failed_restart_left_stopped() {
    let host = ixp_core::Host::builder()
        .catalog(Catalog::new())
        .plugin::<Unrestartable>(NoConfig {})
        .plugin::<Dependent>(NoConfig {})
        .build()
        .expect("valid");
    host.launch().await.expect("launch");
    host.restart("unrestartable")
        .await
        .expect_err("its restart fails");
    assert_eq!(host.state("dependent"), Some(PluginState::Stopped));
    host.stop().await.expect("stop");
    // The host is still alive: the value was dropped by the stop, not by the host's drop.
    assert!(
        DEPENDENT_DROPPED.load(Ordering::SeqCst),
        "the dependent's value outlived the stop"
    );
    drop(host);
}

/// A plugin that declares a service and registers it in `initialize` only.
#[ixp_core::ixp_plugin(name = "forgetful-plugin", version = "1.0.0", provides = ["kept"])]
struct ForgetfulPlugin;

impl Plugin for ForgetfulPlugin {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, ixp_core::BoxError> {
        ctx.services().register("kept", 1_u32)?;
        Ok(Self)
    }
}

/// A restart removes the plugin's services before its hook; the host says which
/// declared service the plugin did not register again, instead of leaving dependents
/// to fail on a look-up later.
#[tokio::test]
async fn a_restart_that_loses_a_declared_service_is_said() {
    let logs = ixp_tests::CapturedLogs::install();
    let (host, _) = new_host(Catalog::new().with::<ForgetfulPlugin>(), "").expect("valid");
    host.launch().await.expect("launch");
    let warning =
        "declares that it provides [kept], but after its start the registry has no such service";
    assert!(!logs.text().contains(warning), "not at launch");
    host.restart("forgetful-plugin").await.expect("restart");
    assert!(host.services().get::<u32>("kept").is_err());
    let text = logs.text();
    let said = text
        .lines()
        .find(|line| line.contains(warning))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(said.contains("forgetful-plugin"), "{said}");
    host.stop().await.expect("stop");
}
