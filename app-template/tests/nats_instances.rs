//! Two `ixp-app` processes on one machine share one event bus through the machine's
//! NATS (127.0.0.1:4222, `IXP_TEST_NATS_URL` overrides): `POST /hello/{name}` on one
//! publishes `user.greeted`, and the other's hello-plugin handles it; neither sees an
//! event twice. And a SIGTERM while the plugin still waits for a server that never
//! answers stops the process cleanly. Needs the `events-nats` feature:
//! `cargo test -p app-template --features events-nats --test nats_instances`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get, request, tempdir, Guard, BIN};

/// `ixp-app run` in a fresh directory: the database plugin's file there, `nats` the
/// settings of the events-nats-plugin section. Its output goes to `out.log` in that
/// directory when `logged`, else nowhere. The child and the directory.
fn spawn(name: &str, nats: &str, port: u16, logged: bool) -> (Guard, PathBuf) {
    let dir = tempdir(&format!("ixp-app-nats-{name}"));
    let config = dir.join("ixp.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.database-plugin]\nfilename = \"{}\"\n\n[plugins.events-nats-plugin]\n{nats}",
            dir.join("ixp.db").display()
        ),
    )
    .expect("config");
    let (stdout, stderr) = if logged {
        let log = std::fs::File::create(dir.join("out.log")).expect("log file");
        (
            Stdio::from(log.try_clone().expect("log file")),
            Stdio::from(log),
        )
    } else {
        (Stdio::null(), Stdio::null())
    };
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env("IXP_SERVER__PORT", port.to_string())
        .env_remove("IXP_ENV")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("ixp-app starts");
    (Guard(child), dir)
}

fn start(name: &str, prefix: &str) -> (Guard, u16) {
    let url = std::env::var("IXP_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let port = free_port();
    let nats = format!(
        "url = \"{url}\"\ntopics = [\"user.*\"]\nsubjectPrefix = \"{prefix}\"\ninstanceId = \"{name}\"\n"
    );
    let (guard, _) = spawn(name, &nats, port, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(get(port, "/health/ready"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "{name} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, port)
}

fn greeted(port: u16) -> Vec<String> {
    let (status, body) = get(port, "/hello/greeted").expect("GET /hello/greeted");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a JSON list")
}

#[test]
fn an_event_published_on_one_process_is_handled_on_the_other() {
    let prefix = format!("ixp-app-test-{}-{}", std::process::id(), free_port());
    let (mut a, port_a) = start("app-a", &prefix);
    let (mut b, port_b) = start("app-b", &prefix);

    assert_eq!(
        request(port_a, "POST", "/hello/alice").expect("POST").0,
        202
    );
    assert_eq!(request(port_b, "POST", "/hello/bob").expect("POST").0, 202);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (on_a, on_b) = (greeted(port_a), greeted(port_b));
        if on_a.len() >= 2 && on_b.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "A saw {on_a:?}, B saw {on_b:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // room for an echo to show up
    for port in [port_a, port_b] {
        let mut names = greeted(port);
        names.sort();
        assert_eq!(names, ["alice", "bob"], "each greeting once on port {port}");
    }

    // Nothing is left to publish: each process stops at once, well before the bridge's
    // flushTimeoutMs plus its grace (12 s by default), which it used to wait out.
    for guard in [&mut a, &mut b] {
        let sent = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &guard.0.id().to_string()])
            .status();
        let exit = guard.0.wait().expect("exits");
        assert!(exit.success(), "{exit}");
        let took = sent.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "exited {took:?} after SIGTERM"
        );
    }
}

#[test]
fn a_sigterm_while_the_plugins_start_is_handled_not_fatal() {
    use std::os::unix::process::ExitStatusExt;
    // A "NATS server" that accepts and never speaks: events-nats-plugin waits for it for
    // its 20 s connect timeout, so the SIGTERM below lands mid-start.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in silent.incoming().flatten() {
            held.push(socket);
        }
    });
    let nats = format!(
        "url = \"nats://127.0.0.1:{silent_port}\"\ntopics = [\"user.*\"]\nconnectTimeoutMs = 20000\n"
    );
    let (mut guard, dir) = spawn("sigterm-starting", &nats, free_port(), true);
    let log = dir.join("out.log");
    // The database plugin has started (the signal handler is in place from before the
    // first plugin's start); events-nats-plugin is then waiting for its server.
    let started = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("connected to sqlite")
    {
        assert!(
            Instant::now() < started,
            "the database plugin never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-TERM", &guard.0.id().to_string()])
        .status();
    // The start is cut short: no waiting for the 20 s connect timeout.
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = guard.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "ixp-app still runs 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    // Not killed by the signal's default action: what had started was stopped.
    assert_eq!(
        exit.signal(),
        None,
        "killed by the signal: {exit}\n{logged}"
    );
    assert!(exit.success(), "{exit}\n{logged}");
    assert!(
        logged.contains("shutdown requested while the plugins start")
            && logged.contains("plugin=database-plugin state=stopped"),
        "{logged}"
    );
}
