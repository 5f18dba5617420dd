//! events-nats-plugin: two instances (hosts) share one event bus through NATS. Core NATS
//! against the machine's server (127.0.0.1:4222, `IXP_TEST_NATS_URL` overrides); the
//! JetStream restart test runs its own `nats-server` (Debian package, on the machine) on
//! a free port and restarts it mid-stream.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixp_core::{Catalog, Event, HealthStatus, Host};
use ixp_plugins::events_nats::{BridgeStats, EventsNatsConfig, EventsNatsPlugin, JetStreamConfig};
use serde_json::{json, Value};

fn machine_nats() -> String {
    std::env::var("IXP_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<EventsNatsPlugin>(toml)
}

#[test]
fn config_parses_and_each_bad_field_is_reported() {
    assert_eq!(
        problems("[plugins.events-nats-plugin]\nurl = \"nats://127.0.0.1:4222\"\ntopics = [\"user.*\", \"order.**\"]\njetstream = { enabled = true, durable = \"api-1\" }\n"),
        ""
    );
    let report = problems(
        r#"[plugins.events-nats-plugin]
url = "http://127.0.0.1:4222"
topics = ["user..x", "a.*b"]
subjectPrefix = "ixp events"
instanceId = "bad id"
password = "p"
bufferSize = 0
jetstream = { stream = "A.B", maxAge = "forever" }
"#,
    );
    let js_report = problems("[plugins.events-nats-plugin]\njetstream = { enabled = true }\n");
    assert!(
        js_report.contains("plugins.events-nats-plugin.instanceId: is required with JetStream"),
        "{js_report}"
    );
    for expected in [
        "plugins.events-nats-plugin.url: `http://127.0.0.1:4222`: the scheme must be nats://",
        "plugins.events-nats-plugin.topics[0]:",
        "plugins.events-nats-plugin.topics[1]:",
        "plugins.events-nats-plugin.subjectPrefix: `ixp events` is not a NATS subject prefix",
        "plugins.events-nats-plugin.instanceId: may hold letters, digits, `-` and `_` only",
        "plugins.events-nats-plugin.password: is set but `username` is not",
        "plugins.events-nats-plugin.bufferSize: must be at least 1",
        "plugins.events-nats-plugin.jetstream.stream: `A.B` is not a stream name",
        "plugins.events-nats-plugin.jetstream.maxAge: `forever` is not a duration",
        "plugins.events-nats-plugin.instanceId: may hold letters",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
}

fn config(url: &str, prefix: &str, instance: &str) -> EventsNatsConfig {
    EventsNatsConfig {
        url: url.into(),
        topics: vec!["user.*".into()],
        subject_prefix: prefix.into(),
        instance_id: Some(instance.into()),
        ..EventsNatsConfig::default()
    }
}

/// A host with the bridge, and what its bus saw on `user.*`.
async fn instance(config: EventsNatsConfig) -> (Host, Arc<Mutex<Vec<(String, Value)>>>) {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EventsNatsPlugin>(config)
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    host.events()
        .on("user.*", move |event: Event| {
            let payload = event.to_json().unwrap_or(Value::Null);
            sink.lock()
                .expect("lock")
                .push((event.topic().to_owned(), payload));
            async {}
        })
        .expect("subscribe")
        .detach();
    (host, seen)
}

async fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !ready() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_emitted_on_one_instance_is_handled_on_the_other_and_not_echoed() {
    let prefix = ixp_tests::unique_name("ixp_test").replace('_', "-");
    let (a, seen_a) = instance(config(&machine_nats(), &prefix, "inst-a")).await;
    let (b, seen_b) = instance(config(&machine_nats(), &prefix, "inst-b")).await;

    a.events()
        .emit("user.created", json!({ "id": 7, "name": "ada" }))
        .await;
    a.events().emit("order.placed", json!({ "id": 1 })).await; // not a bridged topic
    b.events().emit("user.deleted", json!({ "id": 8 })).await;
    wait_until("both events to cross", Duration::from_secs(10), || {
        seen_a.lock().expect("lock").len() >= 2 && seen_b.lock().expect("lock").len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // room for an echo to show up

    // Local and remote events race, so compare in topic order.
    let mut a_saw = seen_a.lock().expect("lock").clone();
    let mut b_saw = seen_b.lock().expect("lock").clone();
    a_saw.sort_by(|x, y| x.0.cmp(&y.0));
    b_saw.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        a_saw,
        [
            ("user.created".to_owned(), json!({ "id": 7, "name": "ada" })),
            ("user.deleted".to_owned(), json!({ "id": 8 })),
        ],
        "A sees its own event once (no echo) and B's"
    );
    assert_eq!(
        b_saw,
        [
            ("user.created".to_owned(), json!({ "id": 7, "name": "ada" })),
            ("user.deleted".to_owned(), json!({ "id": 8 })),
        ]
    );
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("service");
    assert_eq!((stats.published(), stats.received()), (1, 1));
    let health = a.health().await.plugins["events-nats-plugin"].clone();
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    // A publisher that published keeps the routes it saw, the bridge's handler (and its
    // queue's sender) among them, until it publishes again.
    let mut publisher = a.events().publisher("order.placed");
    publisher.emit(json!({ "id": 2 })).await;
    // Nothing is left to publish: the stop ends at once (not after `flushTimeoutMs`
    // plus its grace, 12 s by default) and loses nothing.
    let started = Instant::now();
    a.stop().await.expect("stop");
    let took = started.elapsed();
    // Well under the 12 s it took when it waited for the handler's sender.
    assert!(took < Duration::from_secs(6), "the stop took {took:?}");
    assert_eq!(stats.lost(), 0);
    drop(publisher);
    b.stop().await.expect("stop");
}

/// A restart connects the bridge again and keeps the `events-bridge` service registered
/// (the host removes a plugin's services before its `restart`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bridge_carries_events_again() {
    let prefix = ixp_tests::unique_name("ixp_restart").replace('_', "-");
    let (a, _) = instance(config(&machine_nats(), &prefix, "restart-a")).await;
    let (b, seen_b) = instance(config(&machine_nats(), &prefix, "restart-b")).await;
    a.restart("events-nats-plugin").await.expect("restart");
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("the service after the restart");
    a.events().emit("user.created", json!({ "id": 9 })).await;
    wait_until("the event on B", Duration::from_secs(10), || {
        !seen_b.lock().expect("lock").is_empty()
    })
    .await;
    wait_until("A to count it published", Duration::from_secs(10), || {
        stats.published() == 1
    })
    .await;
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unreachable_server_fails_initialization_naming_it() {
    let url = format!("nats://127.0.0.1:{}", ixp_tests::free_port());
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EventsNatsPlugin>(EventsNatsConfig {
            connect_timeout_ms: 500,
            ..config(&url, "ixp-unreachable", "x")
        })
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("nothing listens");
    let message = format!("{error}");
    assert!(message.contains("events-nats-plugin"), "{message}");
    assert!(message.contains(&url), "{message}");
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_initialization_by_the_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "nats://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EventsNatsPlugin>(EventsNatsConfig {
            connect_timeout_ms: 300,
            ..config(&url, "ixp-silent", "x")
        })
        .build()
        .expect("plan");
    let started = std::time::Instant::now();
    let error = host.launch().await.expect_err("no handshake");
    let took = started.elapsed();
    holding.abort();
    let message = format!("{error}");
    assert!(
        message.contains("no answer within 300ms (connectTimeoutMs)"),
        "{message}"
    );
    // Not the hook timeout (30 s by default): the connect timeout.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A `nats-server` with JetStream on `port`, storing in `dir`.
fn nats_server(port: u16, dir: &Path) -> Child {
    Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the `nats-server` command (Debian package nats-server)")
}

async fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < until,
            "nats-server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_a_nats_restart_mid_stream_loses_nothing() {
    let dir = ixp_tests::temp_dir("nats-js");
    let port = ixp_tests::free_port();
    let mut server = nats_server(port, &dir);
    wait_for_port(port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let js = |instance: &str| EventsNatsConfig {
        jetstream: JetStreamConfig {
            enabled: true,
            ack_timeout_ms: 1000,
            ..JetStreamConfig::default()
        },
        ..config(&url, "ixp.js", instance)
    };
    let (a, seen_a) = instance(js("js-a")).await;
    let (b, seen_b) = instance(js("js-b")).await;

    const N: i64 = 300;
    for seq in 0..N {
        a.events().emit("user.tick", json!({ "seq": seq })).await;
        if seq == 100 {
            server.kill().expect("kill nats-server");
            server.wait().expect("reap");
        }
        if seq == 200 {
            server = nats_server(port, &dir);
            wait_for_port(port).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_until("every event on B", Duration::from_secs(60), || {
        seen_b.lock().expect("lock").len() >= N as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seqs: Vec<i64> = seen_b
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(_, p)| p["seq"].as_i64())
        .collect();
    let counts = seqs.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(*s).or_insert(0) += 1;
        m
    });
    assert_eq!(counts.len(), N as usize, "every event arrived");
    assert!(counts.values().all(|&n| n == 1), "each event once on B");
    assert_eq!(
        seen_a.lock().expect("lock").len(),
        N as usize,
        "no echo on A"
    );
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("service");
    assert_eq!(stats.published(), N as u64);
    assert!(stats.failures() > 0, "the outage was seen by the publisher");
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
    server.kill().ok();
    server.wait().ok();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_nats_is_refused_without_blocking_the_next() {
    let prefix = ixp_tests::unique_name("ixp_big").replace('_', "-");
    let (a, _) = instance(config(&machine_nats(), &prefix, "big-a")).await;
    let (b, seen_b) = instance(config(&machine_nats(), &prefix, "big-b")).await;
    let huge = "x".repeat(2 << 20); // more than the default max_payload of 1 MiB
    a.events().emit("user.huge", json!({ "blob": huge })).await;
    a.events().emit("user.small", json!({ "ok": true })).await;
    wait_until("the small event", Duration::from_secs(10), || {
        !seen_b.lock().expect("lock").is_empty()
    })
    .await;
    assert_eq!(seen_b.lock().expect("lock")[0].0, "user.small");
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("service");
    assert_eq!((stats.rejected(), stats.published()), (1, 1));
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

/// A `nats-server` of the test's own (JetStream, a fresh directory, a free port) that
/// the test can make hang; killed and its directory removed when dropped.
struct OwnNats {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl OwnNats {
    async fn start(label: &str) -> Self {
        let dir = ixp_tests::temp_dir(label);
        let port = ixp_tests::free_port();
        let child = nats_server(port, &dir);
        wait_for_port(port).await;
        Self {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }

    /// Sends `signal` (`STOP`: the server hangs, its connections stay open; `CONT`).
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("the `kill` command");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.signal("CONT");
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// JetStream, and NATS hangs (the server process is stopped: connections stay open,
/// nothing answers) while events wait to be published. The stop gives up after
/// `flushTimeoutMs` plus its grace and counts every event it could not publish as `lost`:
/// the queued ones and the one waiting for its acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_nats_hangs_counts_every_unpublished_event_as_lost() {
    let logs = ixp_tests::CapturedLogs::install();
    let server = OwnNats::start("nats-hang").await;
    let (a, _) = instance(EventsNatsConfig {
        flush_timeout_ms: 200,
        jetstream: JetStreamConfig {
            enabled: true,
            // Longer than the stop's grace: the publisher is still waiting for the
            // acknowledgement when the stop gives up on it.
            ack_timeout_ms: 30_000,
            ..JetStreamConfig::default()
        },
        ..config(&server.url, "ixp.hang", "hang-a")
    })
    .await;
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("service");
    a.events().emit("user.before", json!({ "seq": 0 })).await;
    wait_until("the first event published", Duration::from_secs(10), || {
        stats.published() == 1
    })
    .await;

    server.signal("STOP");
    const HELD: u64 = 5;
    for seq in 1..=HELD {
        a.events().emit("user.during", json!({ "seq": seq })).await;
    }
    // The publisher has taken the first of them and waits for its acknowledgement.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    a.stop().await.expect("stop");
    let took = started.elapsed();
    drop(server);

    assert_eq!(stats.published(), 1);
    assert_eq!(
        stats.lost(),
        HELD,
        "every event emitted after the hang is lost"
    );
    // flushTimeoutMs + the 2 s grace, then at most 2 s for the client's flush.
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    let text = logs.text();
    let expected = "5 event(s) could not be published before the flush timeout";
    assert!(
        text.contains(expected),
        "no {expected:?} in the logs:\n{text}"
    );
}

/// Core NATS, and the server hangs while large events are published: the client takes
/// them (`published`: core NATS has no acknowledgement) but cannot write them out, the
/// socket being full, so its final flush cannot finish. The stop still ends in bounded
/// time, every event is accounted for, and the unfinished flush is logged (those events
/// may be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_nats_hangs_with_a_full_socket_ends_and_logs_the_unfinished_flush() {
    let logs = ixp_tests::CapturedLogs::install();
    let server = OwnNats::start("nats-full").await;
    let (a, _) = instance(EventsNatsConfig {
        flush_timeout_ms: 200,
        ..config(&server.url, "ixp.full", "full-a")
    })
    .await;
    let stats = a
        .services()
        .get::<BridgeStats>("events-bridge")
        .expect("service");
    server.signal("STOP");
    // 64 MiB in all: more than the loopback socket buffers hold.
    const EVENTS: u64 = 128;
    let blob = "x".repeat(512 << 10);
    for seq in 0..EVENTS {
        a.events()
            .emit("user.big", json!({ "seq": seq, "blob": blob }))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    a.stop().await.expect("stop");
    let took = started.elapsed();
    drop(server);

    assert_eq!(
        stats.published() + stats.lost(),
        EVENTS,
        "published {} + lost {}",
        stats.published(),
        stats.lost()
    );
    // flushTimeoutMs + the 2 s grace, then at most 2 s for the client's flush.
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    let text = logs.text();
    let expected = "flushing the NATS client at stop took over 2 s";
    assert!(
        text.contains(expected),
        "no {expected:?} in the logs:\n{text}"
    );
}
