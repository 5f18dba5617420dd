//! Runs the real `ixp-app` binary: its subcommands, its HTTP front on a free loopback
//! port, and its shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, get, BIN};

fn template_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn app(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(template_dir())
        .env_remove("IXP_CONFIG")
        .env_remove("IXP_ENV")
        .output()
        .expect("ixp-app runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Running {
    child: Child,
    cwd: PathBuf,
    port: u16,
    log: std::sync::mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let port = free_port();
        let cwd = tempdir();
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .current_dir(&cwd)
            .env("IXP_SERVER__PORT", port.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ixp-app starts");
        let (tx, log) = std::sync::mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut running = Running {
            child,
            cwd,
            port,
            log,
            lines: Vec::new(),
        };
        running.wait_until(|r| matches!(get(r.port, "/health/ready"), Ok((200, _))));
        running
    }

    fn wait_until(&mut self, mut done: impl FnMut(&mut Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                panic!(
                    "ixp-app exited early with {status}:\n{}",
                    self.lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.drain();
        panic!("timed out; log:\n{}", self.lines.join("\n"));
    }

    fn drain(&mut self) {
        while let Ok(line) = self.log.recv_timeout(Duration::from_millis(100)) {
            self.lines.push(line);
        }
    }

    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("ixp-app exits");
        self.drain();
        (exit, std::mem::take(&mut self.lines))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shipped_config() -> PathBuf {
    template_dir().join("ixp.toml")
}

#[test]
fn plugins_lists_every_compiled_in_plugin_with_its_feature() {
    let out = app(&["plugins"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    // Columns line up, however many features a plugin lists (database-plugin has three).
    let deps_at = stdout
        .lines()
        .next()
        .and_then(|header| header.find("DEPENDENCIES"))
        .expect("header");
    for line in stdout.lines().skip(1) {
        let deps = line.get(deps_at..).unwrap_or_default();
        assert!(
            deps == "-"
                || deps.starts_with("logging-plugin")
                || deps.starts_with("database-plugin"),
            "{line:?} in\n{stdout}"
        );
    }
    let cache = stdout
        .lines()
        .find(|l| l.starts_with("cache-plugin "))
        .expect("cache-plugin listed");
    assert!(
        cache.contains("0.1.0") && cache.contains("cache-memory"),
        "{cache}"
    );
    let hello = stdout
        .lines()
        .find(|l| l.starts_with("hello-plugin "))
        .expect("hello-plugin listed");
    assert!(hello.contains("cache-plugin (optional)"), "{hello}");
    let database = stdout
        .lines()
        .find(|l| l.starts_with("database-plugin "))
        .expect("database-plugin listed");
    assert!(database.contains("database-sqlite"), "{database}");
}

#[test]
fn check_prints_the_plan_for_the_shipped_config() {
    let out = app(&["check", "--config", "ixp.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("1. logging-plugin 0.1.0"), "{stdout}");
    assert!(
        stdout.contains("2. cache-plugin 0.1.0 (after logging-plugin)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3. database-plugin 0.1.0 (after logging-plugin)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "4. hello-plugin 1.0.0 (after logging-plugin, cache-plugin, database-plugin)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(r#""maxSize":1000"#), "{stdout}");
}

#[test]
fn check_masks_secrets_in_the_effective_config() {
    let dir = tempdir();
    let config = dir.join("secret.toml");
    std::fs::write(
        &config,
        "[plugins.cache-plugin]\npassword = \"hunter2-very-secret\"\n",
    )
    .expect("write config");
    let out = app(&["check", "--config", config.to_str().expect("utf-8 path")]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("hunter2-very-secret"), "{all}");
    assert!(all.contains(r#""password":"********""#), "{all}");
}

#[test]
fn check_lists_every_problem_at_once_and_fails() {
    let dir = tempdir();
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        r#"
[server]
port = "${IXP_TEST_SURELY_UNSET_VAR}"

[plugins.cache-plugin]
ttl = "abc"
maxsize = 3

[plugins.helo-plugin]
greeting = "typo in the plugin name"

[plugins.database-plugin]
type = "oracle"
"#,
    )
    .expect("write config");
    let out = app(&["check", "--config", config.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for expected in [
        "5 problems",
        "server.port: environment variable `IXP_TEST_SURELY_UNSET_VAR` is not set",
        r#"plugins.cache-plugin.ttl: invalid type: string "abc", expected u64"#,
        "plugins.cache-plugin.maxsize: unknown key; did you mean `maxSize`?",
        "plugins.helo-plugin: unknown plugin `helo-plugin`; did you mean `hello-plugin`?",
        "plugins.database-plugin.type: unknown variant `oracle`, expected one of `sqlite`, `postgresql`, `mongodb`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = app(&["check", "--config", "does-not-exist.toml"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does-not-exist.toml"), "{stderr}");
}

#[test]
fn schema_is_json_schema_that_validates_the_shipped_config() {
    let out = app(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let shipped: toml::Value =
        toml::from_str(&std::fs::read_to_string(shipped_config()).expect("read ixp.toml"))
            .expect("ixp.toml is TOML");
    let shipped = serde_json::to_value(shipped).expect("TOML as JSON");
    let errors: Vec<String> = validator
        .iter_errors(&shipped)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // And it catches what the check catches: a typo'd key and a wrong type.
    let bad = serde_json::json!({"plugins": {"cache-plugin": {"maxsize": 3, "ttl": "abc"}}});
    assert!(validator.iter_errors(&bad).count() >= 2);
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dot = text(&app(&["graph"]).stdout);
    assert!(dot.starts_with("digraph plugins {"), "{dot}");
    assert!(
        dot.contains(r#""hello-plugin" -> "cache-plugin" [style=dashed];"#),
        "{dot}"
    );
    let mermaid = text(&app(&["graph", "--mermaid"]).stdout);
    assert!(mermaid.starts_with("graph TD"), "{mermaid}");
    assert!(mermaid.contains("-.->"), "{mermaid}");
}

#[test]
fn serves_health_plugins_and_plugin_routes_then_stops_in_reverse_order_on_sigterm() {
    let running = Running::start(&shipped_config());
    let port = running.port;

    let (status, body) = get(port, "/health").expect("GET /health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(
        health["plugins"]["cache-plugin"]["status"], "healthy",
        "{health}"
    );
    assert_eq!(
        health["plugins"]["database-plugin"]["status"], "healthy",
        "{health}"
    );
    assert!(
        health["plugins"]["database-plugin"]["details"]["latencyMs"].is_number(),
        "{health}"
    );
    assert!(
        running.cwd.join("data/ixp.db").is_file(),
        "the SQLite file was created"
    );

    assert_eq!(get(port, "/health/live").expect("live").0, 200);
    assert_eq!(get(port, "/health/ready").expect("ready").0, 200);

    let (status, body) = get(port, "/hello").expect("GET /hello");
    assert_eq!((status, body.as_str()), (200, "Hello from ixp"));

    let (status, body) = get(port, "/plugins").expect("GET /plugins");
    assert_eq!(status, 200);
    let plugins: serde_json::Value = serde_json::from_str(&body).expect("plugins JSON");
    let names: Vec<&str> = plugins
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "logging-plugin",
            "cache-plugin",
            "database-plugin",
            "hello-plugin"
        ]
    );
    assert!(plugins
        .as_array()
        .expect("a list")
        .iter()
        .all(|p| p["state"] == "running"));

    assert_eq!(get(port, "/nope").expect("404").0, 404);

    let (exit, lines) = running.terminate();
    assert!(exit.success(), "exit {exit}:\n{}", lines.join("\n"));
    let stopped: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("state=stopped"))
        .filter_map(|l| {
            [
                "hello-plugin",
                "database-plugin",
                "cache-plugin",
                "logging-plugin",
            ]
            .into_iter()
            .find(|name| l.contains(&format!("plugin={name}")))
        })
        .collect();
    assert_eq!(
        stopped,
        [
            "hello-plugin",
            "database-plugin",
            "cache-plugin",
            "logging-plugin"
        ],
        "logging-plugin starts first and stops last: {}",
        lines.join("\n")
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens after exit"
    );
}

#[test]
fn runs_from_an_empty_directory_on_embedded_defaults() {
    let dir = tempdir();
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .env_remove("IXP_CONFIG")
        .env("IXP_SERVER__PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ixp-app starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        ready = matches!(get(port, "/health/ready"), Ok((200, _)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait().expect("exits");
    assert!(ready, "never became ready");
    assert!(exit.success(), "{exit}");
}

fn tempdir() -> PathBuf {
    common::tempdir("ixp-app-test")
}
