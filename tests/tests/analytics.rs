//! analytics-plugin against an HTTP collector the test runs on a free loopback port:
//! config checks, every event (from real requests to an in-process server, `user.action`
//! events and `track` calls) arriving exactly once through failed requests, the same ids
//! after a lost response, the flush on stop, a full buffer (dropped, counted, degraded),
//! give-ups, and what a stop cannot deliver counted as lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixp_core::axum::extract::State;
use ixp_core::axum::http::{HeaderMap, StatusCode};
use ixp_core::axum::routing::{get, post};
use ixp_core::axum::Router;
use ixp_core::config::{ConfigLoader, Format};
use ixp_core::testing::TestServer;
use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, HealthStatus, IxpServer, NoConfig, Plugin, PluginContext,
    PluginHealth, Secret,
};
use ixp_plugins::analytics::{
    Analytics, AnalyticsConfig, AnalyticsPlugin, Millis, TrackError, UserAction,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "test-key-7f3a9";

// ---------------------------------------------------------------------------------
// The collector.

#[derive(Debug, Default)]
struct CollectorState {
    /// Answer 500/503 (alternately) without storing, while set.
    fail_all: AtomicBool,
    /// Store the batch, then answer 500 (the client never hears of it), this many times.
    lose_response_next: AtomicUsize,
    /// Hold requests (answer nothing yet) while set.
    hold: AtomicBool,
    /// Requests seen.
    requests: AtomicUsize,
    /// Requests answered with an injected failure.
    injected: AtomicUsize,
    /// Requests without `Authorization: Bearer <KEY>`.
    unauthorized: AtomicUsize,
    /// Requests whose body was not `{"events": [...]}` JSON.
    malformed: AtomicUsize,
    /// Stored batches, in arrival order.
    batches: Mutex<Vec<Vec<Value>>>,
}

struct Collector {
    url: String,
    state: Arc<CollectorState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let address = listener.local_addr().expect("addr");
        let state = Arc::new(CollectorState::default());
        let app = Router::new()
            .route("/v1/batch", post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = ixp_core::axum::serve(listener, app).await;
        });
        Collector {
            url: format!("http://{address}/v1/batch"),
            state,
            task,
        }
    }

    /// Every stored event, in arrival order (duplicates included).
    fn events(&self) -> Vec<Value> {
        self.state
            .batches
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn batches(&self) -> Vec<Vec<Value>> {
        self.state.batches.lock().expect("lock").clone()
    }

    fn ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["id"].as_str().expect("an id").to_owned())
            .collect()
    }

    async fn wait_for_events(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.events().len() < count {
            assert!(
                Instant::now() < deadline,
                "the collector has {} event(s), expected {count}",
                self.events().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<CollectorState>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    while state.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if bearer.as_deref() != Some(format!("Bearer {KEY}").as_str()) {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad key".into());
    }
    if state.fail_all.load(Ordering::SeqCst) {
        state.injected.fetch_add(1, Ordering::SeqCst);
        let status = if n % 2 == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return (status, "injected failure".into());
    }
    let is_json = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let events = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("events").and_then(Value::as_array).cloned());
    let Some(events) = events.filter(|_| is_json) else {
        state.malformed.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"events\": [...]}".into(),
        );
    };
    state.batches.lock().expect("lock").push(events);
    let lose = state
        .lose_response_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if lose {
        state.injected.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored, but answer lost".into(),
        );
    }
    (StatusCode::OK, "{}".into())
}

// ---------------------------------------------------------------------------------
// Helpers.

fn config(collector: &Collector, tune: impl FnOnce(&mut AnalyticsConfig)) -> AnalyticsConfig {
    let mut config = AnalyticsConfig {
        endpoint: collector.url.clone(),
        api_key: Some(Secret::new(KEY)),
        batch_size: 7,
        flush_interval: Millis::Number(50),
        retry_backoff: Millis::Text("20ms".into()),
        max_backoff: Millis::Text("100ms".into()),
        request_timeout: Millis::Text("5s".into()),
        flush_timeout: Millis::Text("5s".into()),
        ..AnalyticsConfig::default()
    };
    tune(&mut config);
    config
}

async fn analytics_server(config: AnalyticsConfig) -> (TestServer, Arc<Analytics>) {
    let server = TestServer::builder()
        .plugin::<AnalyticsPlugin>(config)
        .start()
        .await
        .expect("starts");
    let analytics = server
        .services()
        .get::<Analytics>("analytics")
        .expect("the analytics service");
    (server, analytics)
}

async fn analytics_health(server: &TestServer) -> PluginHealth {
    server.health().await.plugins["analytics-plugin"].clone()
}

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<AnalyticsPlugin>(toml)
}

async fn get_path(port: u16, path: &str) -> u16 {
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
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The events called `name`.
fn named<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == name).collect()
}

/// A plugin with a route that answers 500 (so `error.occurred` is published).
#[ixp_plugin(name = "failing-routes-plugin", version = "1.0.0")]
struct FailingRoutes;

impl Plugin for FailingRoutes {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(FailingRoutes)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.http().route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "it broke") }),
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Config.

#[test]
fn a_full_config_parses_and_each_bad_field_is_reported() {
    assert_eq!(
        problems(
            r#"[plugins.analytics-plugin]
endpoint = "https://analytics.example.com/v1/batch?source=ixp"
apiKey = "k-123"
batchSize = 100
flushInterval = 10000
bufferSize = 10000
maxRetries = 5
retryBackoff = "200ms"
maxBackoff = "10s"
requestTimeout = "10s"
flushTimeout = "5s"
events = ["request.started", "request.completed", "user.action", "error.occurred", "order.*"]
"#
        ),
        ""
    );
    assert_eq!(
        problems("[plugins.analytics-plugin]\nendpoint = \"http://127.0.0.1:9/c\"\nflushInterval = \"5s\"\n"),
        ""
    );

    let report = problems(
        r#"[plugins.analytics-plugin]
endpoint = "ftp://analytics.example.com/batch"
apiKey = ""
batchSize = 0
flushInterval = "5 parsecs"
bufferSize = 0
retryBackoff = "2s"
maxBackoff = "1s"
requestTimeout = 0
flushTimeout = "forever"
events = ["request.started", "user..action", "request.started"]
"#,
    );
    for expected in [
        "plugins.analytics-plugin.endpoint: must be an http:// or https:// URL, not ftp://",
        "plugins.analytics-plugin.apiKey: must not be empty",
        "plugins.analytics-plugin.batchSize: must be at least 1",
        "plugins.analytics-plugin.flushInterval: `5 parsecs` is not a duration",
        "plugins.analytics-plugin.bufferSize: must be at least 1",
        "plugins.analytics-plugin.maxBackoff: must be at least retryBackoff (2s)",
        "plugins.analytics-plugin.requestTimeout: must be at least 1ms",
        "plugins.analytics-plugin.flushTimeout: `forever` is not a duration",
        "plugins.analytics-plugin.events[1]: invalid topic pattern `user..action`",
        "plugins.analytics-plugin.events[2]: `request.started` is listed twice",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }

    let report = problems(
        "[plugins.analytics-plugin]\nendpoint = \"not a url\"\nbatchSize = 50\nbufferSize = 10\nmaxRetries = -1\napikey = \"x\"\n",
    );
    for expected in [
        "plugins.analytics-plugin.endpoint: is not a URL",
        "plugins.analytics-plugin.bufferSize: must be at least batchSize (50)",
        "plugins.analytics-plugin.maxRetries: invalid value: integer `-1`, expected u32",
        "plugins.analytics-plugin.apikey: unknown key; did you mean `apiKey`?",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }

    let report = problems("[plugins.analytics-plugin]\n");
    assert!(
        report.contains("plugins.analytics-plugin.endpoint: is required"),
        "{report}"
    );
    let report = problems(
        "[plugins.analytics-plugin]\nendpoint = \"https://user:pw@c.example/v1\"\napiKey = \"has space\"\n",
    );
    assert!(
        report.contains("plugins.analytics-plugin.endpoint: must not carry credentials"),
        "{report}"
    );
    assert!(
        report.contains("plugins.analytics-plugin.apiKey: must not contain spaces"),
        "{report}"
    );
    assert!(!report.contains("has space"), "{report}");
}

#[test]
fn the_api_key_never_shows_in_the_plan_or_debug() {
    let config = ConfigLoader::new()
        .text(
            Format::Toml,
            "[plugins.analytics-plugin]\nendpoint = \"http://127.0.0.1:9/c\"\napiKey = \"${ANALYTICS_API_KEY}\"\n",
        )
        .env_vars([("ANALYTICS_API_KEY", "sk-very-secret-123")])
        .load()
        .expect("loads");
    let plan = check(&Catalog::new().with::<AnalyticsPlugin>(), &config).expect("valid");
    let shown = format!(
        "{} {plan:?}",
        serde_json::to_string(&plan.entries()).expect("json")
    );
    assert!(!shown.contains("sk-very-secret-123"), "{shown}");
    assert!(shown.contains(r#""apiKey":"********""#), "{shown}");
    let typed = AnalyticsConfig {
        api_key: Some(Secret::new("sk-very-secret-123")),
        ..AnalyticsConfig::default()
    };
    assert!(!format!("{typed:?}").contains("sk-very-secret-123"));
}

// ---------------------------------------------------------------------------------
// Delivery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_through_failed_batches() {
    let collector = Collector::start().await;
    // The collector fails every request (500, 503, 500, ...) until the test says so.
    collector.state.fail_all.store(true, Ordering::SeqCst);
    let server = IxpServer::builder()
        .catalog(Catalog::new())
        .plugin::<AnalyticsPlugin>(config(&collector, |_| {}))
        .plugin::<FailingRoutes>(NoConfig {})
        .build()
        .expect("plan");
    server.start().await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    let analytics = server
        .host()
        .services()
        .get::<Analytics>("analytics")
        .expect("the analytics service");

    // Real requests: 12 answered 200, 3 answered 500 (each also an error.occurred), 2 404.
    let mut expected_status = BTreeMap::new();
    for (path, times, status) in [
        ("/health/live", 12, 200),
        ("/fail", 3, 500),
        ("/nope", 2, 404),
    ] {
        for _ in 0..times {
            assert_eq!(get_path(port, path).await, status, "{path}");
        }
        expected_status.insert(path, (times, status));
    }
    // user.action, typed and as plain JSON, and track calls from user code.
    let events = server.host().events();
    for i in 0..10 {
        events
            .publish(
                UserAction::new("signup")
                    .user(format!("u{i}"))
                    .property("i", i),
            )
            .await;
    }
    for i in 0..5 {
        events
            .emit(
                "user.action",
                json!({"action": "download", "sessionId": format!("s{i}"), "properties": {"file": i}}),
            )
            .await;
    }
    for i in 0..5 {
        analytics
            .track("custom", json!({ "n": i }))
            .expect("accepted");
    }
    const EXPECTED: usize = 2 * 17 + 3 + 10 + 5 + 5;

    // While the collector fails: retried, nothing given up, health degraded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.state.injected.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the client stopped retrying");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = server.host().health().await.plugins["analytics-plugin"].clone();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    let message = health.message.clone().unwrap_or_default();
    assert!(message.contains("failing: HTTP 50"), "{message}");
    assert!(
        health.details["failedRequests"].as_u64() >= Some(4),
        "{health:?}"
    );
    assert_eq!(health.details["lastSend"]["ok"], false, "{health:?}");
    assert_eq!(health.details["sent"], 0, "{health:?}");
    assert_eq!(health.details["failed"], 0, "{health:?}");
    assert!(collector.events().is_empty());

    // The collector recovers: every event arrives.
    collector.state.fail_all.store(false, Ordering::SeqCst);
    collector.wait_for_events(EXPECTED).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while analytics.stats().sent < EXPECTED as u64 {
        assert!(Instant::now() < deadline, "{:?}", analytics.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = server.host().health().await.plugins["analytics-plugin"].clone();
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(health.details["lastSend"]["ok"], true, "{health:?}");
    assert_eq!(health.details["queued"], 0, "{health:?}");

    stop.send(()).ok();
    serving.await.expect("join").expect("serve stops cleanly");

    // Exactly once: no duplicate, nothing missing, nothing refused.
    let ids = collector.ids();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), EXPECTED, "{ids:?}");
    assert_eq!(unique.len(), EXPECTED);
    assert_eq!(collector.state.unauthorized.load(Ordering::SeqCst), 0);
    assert_eq!(collector.state.malformed.load(Ordering::SeqCst), 0);
    assert!(collector.batches().iter().all(|b| b.len() <= 7));
    let stats = analytics.stats();
    assert_eq!(stats.sent, EXPECTED as u64, "{stats:?}");
    assert_eq!(
        (
            stats.dropped,
            stats.failed,
            stats.lost,
            stats.queued,
            stats.in_flight
        ),
        (0, 0, 0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.failed_requests >= 4, "{stats:?}");

    // What arrived: one started and one completed per request, with its status.
    let all = collector.events();
    let named = |name: &str| named(&all, name);
    let started = named("request_started");
    let completed = named("request_completed");
    assert_eq!((started.len(), completed.len()), (17, 17));
    let started_ids: BTreeSet<u64> = started
        .iter()
        .filter_map(|e| e["properties"]["requestId"].as_u64())
        .collect();
    let completed_ids: BTreeSet<u64> = completed
        .iter()
        .filter_map(|e| e["properties"]["requestId"].as_u64())
        .collect();
    assert_eq!(started_ids.len(), 17);
    assert_eq!(started_ids, completed_ids);
    for (path, (times, status)) in &expected_status {
        let matching = completed
            .iter()
            .filter(|e| e["properties"]["url"] == *path)
            .collect::<Vec<_>>();
        assert_eq!(matching.len(), *times, "{path}");
        assert!(matching
            .iter()
            .all(|e| e["properties"]["statusCode"] == *status
                && e["properties"]["method"] == "GET"
                && e["properties"]["duration"].is_number()
                && e["topic"] == "request.completed"));
    }
    let errors = named("error_occurred");
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e["properties"]["error"] == "http"
        && e["properties"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GET /fail answered 500"))));
    let signups = named("signup");
    assert_eq!(signups.len(), 10);
    let users: BTreeSet<&str> = signups
        .iter()
        .filter_map(|e| e["userId"].as_str())
        .collect();
    assert_eq!(users.len(), 10);
    assert!(signups
        .iter()
        .all(|e| e["topic"] == "user.action" && e["properties"]["i"].is_number()));
    let downloads = named("download");
    assert_eq!(downloads.len(), 5);
    assert!(downloads.iter().all(|e| e["sessionId"].is_string()));
    let custom = named("custom");
    assert_eq!(custom.len(), 5);
    assert!(custom
        .iter()
        .all(|e| e.get("topic").is_none() && e["properties"]["n"].is_number()));
    assert!(all.iter().all(|e| e["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.len() == 24)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_lost_response_carries_the_same_ids() {
    let collector = Collector::start().await;
    // The second request is stored, but its answer is a 500: the client sends it again.
    collector
        .state
        .lose_response_next
        .store(0, Ordering::SeqCst);
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.batch_size = 5;
        c.flush_interval = Millis::Text("1h".into());
    }))
    .await;
    let mut tracked = Vec::new();
    for i in 0..5 {
        tracked.push(
            analytics
                .track("step", json!({ "i": i }))
                .expect("accepted"),
        );
    }
    collector.wait_for_events(5).await;
    collector
        .state
        .lose_response_next
        .store(1, Ordering::SeqCst);
    for i in 5..20 {
        tracked.push(
            analytics
                .track("step", json!({ "i": i }))
                .expect("accepted"),
        );
    }
    tokio::time::timeout(Duration::from_secs(10), analytics.flush())
        .await
        .expect("flushed");
    server.stop().await.expect("stop");

    let batches = collector.batches();
    // 4 batches of 5, the second one twice, identical.
    assert_eq!(batches.len(), 5, "{batches:?}");
    assert_eq!(batches[1], batches[2]);
    let ids = collector.ids();
    assert_eq!(ids.len(), 25);
    let unique: BTreeSet<String> = ids.into_iter().collect();
    let tracked: BTreeSet<String> = tracked.into_iter().collect();
    assert_eq!(unique, tracked, "every tracked id stored, nothing else");
    let stats = analytics.stats();
    assert_eq!(
        (stats.sent, stats.failed_requests, stats.batches),
        (20, 1, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_flushes_what_is_buffered() {
    let collector = Collector::start().await;
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.batch_size = 1000;
        c.flush_interval = Millis::Text("1h".into());
    }))
    .await;
    for i in 0..30 {
        analytics
            .track("kept", json!({ "i": i }))
            .expect("accepted");
    }
    server
        .events()
        .publish(UserAction::new("on-the-bus").user("u1"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(collector.state.requests.load(Ordering::SeqCst), 0);
    let health = analytics_health(&server).await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert_eq!(health.details["queued"], 31, "{health:?}");

    server.stop().await.expect("stop");
    let ids = collector.ids();
    assert_eq!(ids.len(), 31);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 31);
    assert_eq!(collector.batches().len(), 1);
    let stats = analytics.stats();
    assert_eq!((stats.sent, stats.lost, stats.queued), (31, 0, 0));
    // After stop, the service refuses (and counts) instead of buffering for nobody.
    assert_eq!(
        analytics.track("late", json!({})),
        Err(TrackError::NotRunning)
    );
    assert_eq!(analytics.stats().dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_newest_events_counts_them_and_degrades_health() {
    let collector = Collector::start().await;
    collector.state.hold.store(true, Ordering::SeqCst);
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.batch_size = 5;
        c.buffer_size = 5;
        c.flush_interval = Millis::Number(10);
        c.request_timeout = Millis::Text("30s".into());
    }))
    .await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..12 {
        match analytics.track("burst", json!({ "i": i })) {
            Ok(id) => accepted.push(id),
            Err(TrackError::BufferFull { capacity: 5 }) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted.len(), refused), (5, 7));
    let health = analytics_health(&server).await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    let message = health.message.clone().unwrap_or_default();
    assert!(
        message.contains("buffer full (5 events): 7 event(s) dropped"),
        "{message}"
    );
    assert_eq!(health.details["dropped"], 7, "{health:?}");
    assert_eq!(health.details["bufferSize"], 5, "{health:?}");

    // The collector answers again: the 5 accepted ones arrive; the drops stay counted.
    collector.state.hold.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), analytics.flush())
        .await
        .expect("flushed");
    assert_eq!(collector.ids(), accepted);
    let health = analytics_health(&server).await;
    assert_eq!(
        health.status,
        HealthStatus::Degraded,
        "recent drops: {health:?}"
    );
    assert_eq!(health.details["sent"], 5, "{health:?}");
    server.stop().await.expect("stop");
    let stats = analytics.stats();
    assert_eq!((stats.sent, stats.dropped, stats.lost), (5, 7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stop_cannot_deliver_in_time_is_counted_as_lost() {
    let collector = Collector::start().await;
    collector.state.fail_all.store(true, Ordering::SeqCst);
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.batch_size = 2;
        c.flush_interval = Millis::Text("1h".into());
        c.flush_timeout = Millis::Text("300ms".into());
    }))
    .await;
    for i in 0..3 {
        analytics
            .track("doomed", json!({ "i": i }))
            .expect("accepted");
    }
    let started = Instant::now();
    server.stop().await.expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let stats = analytics.stats();
    assert_eq!(
        (stats.sent, stats.lost, stats.queued, stats.in_flight),
        (0, 3, 0, 0)
    );
    assert!(collector.state.injected.load(Ordering::SeqCst) >= 1);

    // A collector that never answers: the request in flight is cut at the deadline.
    let collector = Collector::start().await;
    collector.state.hold.store(true, Ordering::SeqCst);
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.batch_size = 2;
        c.request_timeout = Millis::Text("30s".into());
        c.flush_timeout = Millis::Text("300ms".into());
    }))
    .await;
    for i in 0..2 {
        analytics
            .track("stuck", json!({ "i": i }))
            .expect("accepted");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.state.requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no request made");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    server.stop().await.expect("stop");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    let stats = analytics.stats();
    assert_eq!((stats.sent, stats.lost, stats.in_flight), (0, 2, 0));
    collector.state.hold.store(false, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_given_up_after_max_retries_and_at_once_on_a_refusal() {
    let collector = Collector::start().await;
    collector.state.fail_all.store(true, Ordering::SeqCst);
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.max_retries = Some(2);
    }))
    .await;
    analytics.track("given-up", json!({})).expect("accepted");
    tokio::time::timeout(Duration::from_secs(10), analytics.flush())
        .await
        .expect("handled");
    let stats = analytics.stats();
    assert_eq!((stats.failed, stats.failed_requests, stats.sent), (1, 3, 0));
    assert_eq!(collector.state.requests.load(Ordering::SeqCst), 3);
    server.stop().await.expect("stop");

    // A wrong key: 401 is not retried.
    let collector = Collector::start().await;
    let (server, analytics) = analytics_server(config(&collector, |c| {
        c.api_key = Some(Secret::new("wrong-key"));
    }))
    .await;
    analytics.track("refused", json!({})).expect("accepted");
    tokio::time::timeout(Duration::from_secs(10), analytics.flush())
        .await
        .expect("handled");
    let stats = analytics.stats();
    assert_eq!((stats.failed, stats.failed_requests), (1, 0));
    assert_eq!(collector.state.unauthorized.load(Ordering::SeqCst), 1);
    let last = stats.last_send.expect("a request was made");
    assert_eq!((last.ok, last.status), (false, Some(401)));
    let health = analytics_health(&server).await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    let shown = format!("{health:?}");
    assert!(!shown.contains("wrong-key"), "{shown}");
    server.stop().await.expect("stop");
}
