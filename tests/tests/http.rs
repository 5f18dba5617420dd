//! The HTTP front in-process on a free loopback port: /health and its status codes,
//! /health/ready around start, request events, plugin routes (mounted, conflicting,
//! removed on stop), and a panicking handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ixp_core::axum::http::StatusCode;
use ixp_core::axum::routing::get;
use ixp_core::config::Format;
use ixp_core::events::Typed;
use ixp_core::http::{RequestCompleted, RequestStarted};
use ixp_core::{
    ixp_plugin, BoxError, Catalog, ConfigLoader, Event, HealthStatus, IxpConfig, IxpServer,
    NoConfig, Plugin, PluginContext, PluginHealth,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static SICK: AtomicBool = AtomicBool::new(false);

/// A config whose `GET /health` answers are reused for `cache` (`"0s"`: never).
fn health_cache(cache: &str) -> IxpConfig {
    ConfigLoader::new()
        .text(
            Format::Toml,
            format!("[server]\nhealth_cache = \"{cache}\"\n"),
        )
        .load()
        .expect("valid config")
}

#[ixp_plugin(name = "routes-plugin", version = "1.0.0")]
struct RoutesPlugin;

impl Plugin for RoutesPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(RoutesPlugin)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.http()
            .route("/items/{id}", get(|| async { "an item" }))?;
        ctx.http().route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down for the test") }),
        )?;
        ctx.http().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler exploded");
                }
                "unreachable"
            }),
        )?;
        Ok(())
    }
    async fn health(&self, _: &PluginContext) -> PluginHealth {
        if SICK.load(Ordering::SeqCst) {
            PluginHealth::unhealthy("switched off by the test").with_detail("switch", true)
        } else {
            PluginHealth::healthy()
        }
    }
}

#[ixp_plugin(name = "greedy-plugin", version = "1.0.0", dependencies = ["routes-plugin"])]
struct GreedyPlugin;

impl Plugin for GreedyPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(GreedyPlugin)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        // Same shape as routes-plugin's `/items/{id}`: refused.
        ctx.http()
            .route("/items/{name}", get(|| async { "mine" }))?;
        Ok(())
    }
}

async fn get_path(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The next message of `rx`, within 5 s.
async fn next_message(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5 s")
        .expect("open")
}

async fn serve_router(server: &IxpServer) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = server.router();
    tokio::spawn(async move { ixp_core::axum::serve(listener, router).await });
    port
}

#[tokio::test]
async fn health_ready_plugins_events_routes_and_panics() {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .config(health_cache("0s"))
        .plugin::<RoutesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let port = serve_router(&server).await;

    // Before start: live but not ready.
    assert_eq!(get_path(port, "/health/live").await.0, 200);
    let (status, body) = get_path(port, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("configured"), "{body}");

    server.start().await.expect("start");
    assert_eq!(get_path(port, "/health/ready").await.0, 200);

    // Request events reach a subscriber, with method, path, status and size.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tx2 = tx.clone();
    let _started = server
        .host()
        .events()
        .subscribe(move |e: Typed<RequestStarted>| {
            let tx = tx2.clone();
            async move {
                tx.send(format!("started {} {}", e.method, e.path)).ok();
            }
        });
    let _completed = server
        .host()
        .events()
        .subscribe(move |e: Typed<RequestCompleted>| {
            let tx = tx.clone();
            async move {
                tx.send(format!(
                    "completed {} {} {} {:?}",
                    e.method, e.path, e.status, e.response_size
                ))
                .ok();
            }
        });
    let (status, body) = get_path(port, "/items/7").await;
    assert_eq!((status, body.as_str()), (200, "an item"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event")
                .expect("open"),
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        ["completed GET /items/7 200 Some(7)", "started GET /items/7"]
    );

    // /health: healthy -> 200; one unhealthy plugin -> 503 with its message and details.
    let (status, body) = get_path(port, "/health").await;
    assert_eq!(status, 200, "{body}");
    SICK.store(true, Ordering::SeqCst);
    let (status, body) = get_path(port, "/health").await;
    SICK.store(false, Ordering::SeqCst);
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(
        health["plugins"]["routes-plugin"]["message"],
        "switched off by the test"
    );
    assert_eq!(
        health["plugins"]["routes-plugin"]["details"]["switch"],
        true
    );

    // /plugins
    let (_, body) = get_path(port, "/plugins").await;
    let plugins: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(plugins[0]["name"], "routes-plugin");
    assert_eq!(plugins[0]["state"], "running");

    // A panicking handler answers 500 and publishes error.occurred; the server goes on.
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let _errors = server
        .host()
        .events()
        .on("error.occurred", move |event: Event| {
            let etx = etx.clone();
            async move {
                etx.send(event.to_json().map(|v| v.to_string()).unwrap_or_default())
                    .ok();
            }
        });
    assert_eq!(get_path(port, "/boom").await.0, 500);
    let error = tokio::time::timeout(Duration::from_secs(5), erx.recv())
        .await
        .expect("error event")
        .expect("open");
    assert!(error.contains("handler exploded"), "{error}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), erx.recv())
            .await
            .is_err(),
        "one error.occurred per failed request"
    );
    assert_eq!(get_path(port, "/items/8").await.0, 200);

    // The plugin's routes go with it.
    server.stop().await.expect("stop");
    assert_eq!(get_path(port, "/items/7").await.0, 404);
    assert_eq!(get_path(port, "/health/ready").await.0, 503);

    // With `health_cache`, polling /health reuses the last report (the checks do not
    // run per call); Host::health is never cached. (Here, not in a test of its own:
    // SICK is shared by the tests of this file.)
    let cached = IxpServer::builder()
        .catalog(Catalog::new())
        .config(health_cache("1h"))
        .plugin::<RoutesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let port = serve_router(&cached).await;
    cached.start().await.expect("start");
    let (status, first) = get_path(port, "/health").await;
    assert_eq!(status, 200, "{first}");
    SICK.store(true, Ordering::SeqCst);
    let (status, again) = get_path(port, "/health").await;
    let fresh = cached.host().health().await;
    SICK.store(false, Ordering::SeqCst);
    assert_eq!((status, again), (200, first), "the cached report");
    assert_eq!(fresh.status, HealthStatus::Unhealthy);
    cached.stop().await.expect("stop");
}

/// Without subscribers on the request events a request takes another path (a smaller
/// future, `Unobserved` in `ixp_core::http`): it still answers a panic with 500 and
/// publishes one `error.occurred` per failed request, for a panic and for a 5xx answer.
#[tokio::test]
async fn a_request_nobody_observes_still_reports_a_panic_or_a_5xx_answer_once() {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<RoutesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let port = serve_router(&server).await;
    server.start().await.expect("start");
    let events = server.host().events();
    assert!(!events.has_subscribers("request.started"));
    assert!(!events.has_subscribers("request.completed"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _errors = events
        .on("error.occurred", move |event: Event| {
            let tx = tx.clone();
            async move {
                tx.send(event.to_json().map(|v| v.to_string()).unwrap_or_default())
                    .ok();
            }
        })
        .expect("valid pattern");
    let failures = [
        (
            "/boom",
            500,
            "internal server error",
            "handler of GET /boom panicked: handler exploded",
        ),
        (
            "/unavailable",
            503,
            "down for the test",
            "GET /unavailable answered 503 Service Unavailable",
        ),
    ];
    for (path, status, body, reported) in failures {
        let (got_status, got_body) = get_path(port, path).await;
        assert_eq!(got_status, status, "{path}");
        assert!(got_body.contains(body), "{path}: {got_body}");
        let error = next_message(&mut rx).await;
        assert!(error.contains(reported), "{path}: {error}");
    }
    assert_eq!(
        get_path(port, "/items/3").await,
        (200, "an item".to_owned())
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "one error.occurred per failed request, none for a 200"
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn two_plugins_claiming_one_path_fail_to_start_naming_both() {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<RoutesPlugin>(NoConfig {})
        .plugin::<GreedyPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let error = server.start().await.expect_err("conflict").to_string();
    assert!(error.contains("greedy-plugin"), "{error}");
    assert!(error.contains("routes-plugin"), "{error}");
    assert!(error.contains("/items/{id}"), "{error}");
    // Rolled back: routes-plugin was stopped and its routes removed.
    let port = serve_router(&server).await;
    assert_eq!(get_path(port, "/items/1").await.0, 404);
}

/// Set by the shutdown future of the test below when it is first polled.
static SHUTDOWN_WATCHED: AtomicBool = AtomicBool::new(false);
/// Set when [`SlowStartPlugin`] stops.
static SLOW_START_STOPPED: AtomicBool = AtomicBool::new(false);

/// A plugin whose start waits (up to 2 s) until the server watches its shutdown future
/// (then longer still), as a start that takes long while a SIGTERM arrives.
#[ixp_plugin(name = "slow-start-plugin", version = "1.0.0")]
struct SlowStartPlugin;

impl Plugin for SlowStartPlugin {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self)
    }

    async fn start(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        for _ in 0..200 {
            if SHUTDOWN_WATCHED.load(Ordering::SeqCst) {
                // Cut short from here on: the shutdown does not wait for this start.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the shutdown future was not watched while the plugins started".into())
    }

    async fn stop(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        SLOW_START_STOPPED.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_shutdown_while_the_plugins_start_cuts_the_start_short_and_stops_them() {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<SlowStartPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let host = server.host().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // `run`'s shutdown future installs the signal handlers when first polled: until
    // then a SIGTERM kills the process, plugins unstopped.
    let shutdown = async {
        SHUTDOWN_WATCHED.store(true, Ordering::SeqCst);
    };
    tokio::time::timeout(Duration::from_secs(5), server.serve(listener, shutdown))
        .await
        .expect("serve returns without waiting for the start")
        .expect("cut short, then stopped");
    assert!(SLOW_START_STOPPED.load(Ordering::SeqCst), "stop hook ran");
    assert_eq!(
        host.state("slow-start-plugin"),
        Some(ixp_core::PluginState::Stopped)
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the listener was closed"
    );
}

#[tokio::test]
async fn a_router_that_outlives_its_server_answers_unhealthy_and_not_ready() {
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .config(health_cache("0s"))
        .plugin::<RoutesPlugin>(NoConfig {})
        .build()
        .expect("plan");
    let port = serve_router(&server).await;
    server.start().await.expect("start");
    assert_eq!(get_path(port, "/health").await.0, 200);
    server.stop().await.expect("stop");
    drop(server);
    let (status, body) = get_path(port, "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"status\":\"unhealthy\""), "{body}");
    assert_eq!(get_path(port, "/health/ready").await.0, 503);
}
