//! The real `ixp-app` binary with analytics-plugin, against an HTTP collector this test
//! runs on a free loopback port: with a long `flushInterval` and a large `batchSize`
//! nothing is sent while it serves, and a SIGTERM makes it send every request event
//! before it exits with status 0.
//!
//! `cargo test -p app-template --features analytics --test analytics_sigterm`

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{free_port, Guard, BIN};
const KEY: &str = "sigterm-test-key-41";

/// What the collector saw.
#[derive(Debug, Default)]
struct Received {
    /// Events of every accepted batch, in arrival order.
    events: Vec<Value>,
    /// Requests answered 200.
    batches: usize,
    /// Requests without the right bearer token, or not `{"events": [...]}`.
    refused: usize,
}

/// A minimal HTTP/1.1 collector (keep-alive, `Content-Length` bodies) on a thread.
fn start_collector() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind collector");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let shared = shared.clone();
            std::thread::spawn(move || serve_connection(stream, &shared));
        }
    });
    (port, received)
}

fn serve_connection(stream: TcpStream, received: &Mutex<Received>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let authorized =
            headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {KEY}"));
        let events = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("events").and_then(Value::as_array).cloned());
        let status = {
            let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
            match events {
                Some(events) if authorized && request_line.starts_with("POST /v1/batch ") => {
                    received.events.extend(events);
                    received.batches += 1;
                    "200 OK"
                }
                _ => {
                    received.refused += 1;
                    "401 Unauthorized"
                }
            }
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{{}}"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A bare HTTP/1.1 GET: its status.
fn get(port: u16, path: &str) -> std::io::Result<u16> {
    common::get(port, path).map(|(status, _)| status)
}

fn tempdir() -> PathBuf {
    common::tempdir("ixp-app-analytics")
}

#[test]
fn sigterm_flushes_every_request_event_before_exit() {
    let (collector_port, received) = start_collector();
    let dir = tempdir();
    let config = dir.join("ixp.toml");
    std::fs::write(
        &config,
        format!(
            r#"[plugins.analytics-plugin]
endpoint = "http://127.0.0.1:{collector_port}/v1/batch"
apiKey = "{KEY}"
batchSize = 10000
bufferSize = 10000
flushInterval = "1h"
flushTimeout = "10s"
"#
        ),
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env_remove("IXP_CONFIG")
        .env_remove("IXP_ENV")
        .env("IXP_SERVER__PORT", port.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ixp-app starts");
    let mut child = Guard(child);
    let stderr = child.0.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    // Ready: every answered request (the listener is bound before the plugins start,
    // and served after) is a tracked request.
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "never became ready");
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("ixp-app exited early with {status}");
        }
        if let Ok(status) = get(port, "/health/ready") {
            *sent.entry("/health/ready").or_default() += 1;
            if status == 200 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, times, status) in [("/hello", 5, 200), ("/health", 3, 200), ("/nope", 1, 404)] {
        for _ in 0..times {
            assert_eq!(get(port, path).expect("GET"), status, "{path}");
        }
        *sent.entry(path).or_default() += times;
    }
    let requests: usize = sent.values().sum();

    // Nothing is sent while serving (one batch of 10000 or one hour).
    std::thread::sleep(Duration::from_millis(300));
    assert!(received.lock().expect("lock").events.is_empty());

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exit = child.0.wait().expect("ixp-app exits");
    let lines = log.join().expect("log reader");
    let all_log = lines.join("\n");
    assert!(exit.success(), "exit {exit}:\n{all_log}");

    // The process is gone: what the collector holds was sent before it exited.
    let received = received.lock().expect("lock");
    assert_eq!(received.refused, 0, "{all_log}");
    assert!(received.batches >= 1, "{all_log}");
    let events = &received.events;
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "ids are unique");
    let of = |name: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == name).collect() };
    let started = of("request_started");
    let completed = of("request_completed");
    assert_eq!(started.len(), requests, "{all_log}");
    assert_eq!(completed.len(), requests, "{all_log}");
    assert_eq!(
        events.len(),
        2 * requests,
        "only request events: {events:?}"
    );
    for (path, times) in &sent {
        let status = match *path {
            "/nope" => 404,
            "/health/ready" => 0, // 503 or 200
            _ => 200,
        };
        let matching: Vec<&&Value> = completed
            .iter()
            .filter(|e| e["properties"]["url"] == *path)
            .collect();
        assert_eq!(matching.len(), *times, "{path}");
        if status != 0 {
            assert!(
                matching
                    .iter()
                    .all(|e| e["properties"]["statusCode"] == status),
                "{path}"
            );
        }
    }
    let started_ids: BTreeSet<u64> = started
        .iter()
        .filter_map(|e| e["properties"]["requestId"].as_u64())
        .collect();
    let completed_ids: BTreeSet<u64> = completed
        .iter()
        .filter_map(|e| e["properties"]["requestId"].as_u64())
        .collect();
    assert_eq!(started_ids.len(), requests);
    assert_eq!(started_ids, completed_ids);
    assert!(
        all_log.contains(&format!("stopped: flushed {} event(s)", 2 * requests)),
        "{all_log}"
    );
    assert!(!all_log.contains(KEY), "the key is never logged");
    let _ = std::fs::remove_dir_all(&dir);
}
