//! logging-plugin: config checks, the process's log output replaced by the plugin's
//! transports (levels per plugin, JSON format, secrets masked), size rotation keeping at
//! most `maxFiles` files, and the console back after stop.
//! The tests replace the process-wide log output, so they take `global_log_lock`.

use std::path::Path;
use std::sync::atomic::Ordering;

use ixp_core::{ixp_plugin, BoxError, Catalog, Host, NoConfig, Plugin, PluginContext, Secret};
use ixp_plugins::logging::{
    ByteSize, FileStats, FileTransport, LogFormat, LogLevel, LogService, LoggingConfig,
    LoggingPlugin, Transport,
};

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<LoggingPlugin>(toml)
}

#[test]
fn the_guide_config_parses_and_each_bad_field_is_reported() {
    assert_eq!(
        problems(
            r#"[plugins.logging-plugin]
level = "info"
format = "json"
plugins = { "cache-plugin" = "debug" }
directives = ["sqlx=warn"]
transports = [
  { type = "console", colorize = true },
  { type = "file", filename = "logs/app.log", maxSize = "10m", maxFiles = 5 },
]
"#
        ),
        ""
    );
    let report = problems(
        r#"[plugins.logging-plugin]
level = "loud"
format = "xml"
directives = ["sqlx=very"]
transports = [
  { type = "console", colour = true },
  { type = "file", filename = "a.log", maxSize = "10x", maxFiles = 0 },
  { type = "file", filename = "a.log", maxSize = 0 },
  { type = "syslog" },
]
"#,
    );
    for expected in [
        "plugins.logging-plugin.level: unknown variant `loud`",
        "plugins.logging-plugin.format: unknown variant `xml`, expected `text` or `json`",
        "plugins.logging-plugin.directives[0]: `sqlx=very` is not a filter directive",
        "plugins.logging-plugin.transports[1].maxSize: `10x` is not a size (use e.g. 10m, 512k, 1g or a number of bytes)",
        "plugins.logging-plugin.transports[1].maxFiles: must be at least 1",
        "plugins.logging-plugin.transports[2].filename: `a.log` is written by another transport",
        "plugins.logging-plugin.transports[2].maxSize: must be at least 1 byte",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }
    assert!(report.contains("colour"), "{report}");
    assert!(report.contains("syslog"), "{report}");
}

#[cfg(not(feature = "services"))]
#[test]
fn elasticsearch_without_its_feature_names_the_feature() {
    let report = problems(
        "[plugins.logging-plugin]\ntransports = [{ type = \"elasticsearch\", host = \"http://127.0.0.1:9200\", index = \"Bad Index\" }]\n",
    );
    for expected in [
        "plugins.logging-plugin.transports[0].type: the `elasticsearch` transport is not compiled in; enable the Cargo feature `logging-elasticsearch`",
        "plugins.logging-plugin.transports[0].index: `Bad Index` is not a valid index name",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }
}

#[ixp_plugin(name = "chatty-plugin", version = "1.0.0", dependencies = ["logging-plugin"])]
struct ChattyPlugin;

impl Plugin for ChattyPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        ctx.logger().debug("chatty debug record");
        // The `logger` service, used by a dependent plugin for a component of its own.
        let service = ctx.services().get::<LogService>("logger")?;
        service
            .logger("chatty-worker")
            .warn("a record from a component logger");
        Ok(Self)
    }
    async fn start(&mut self, _ctx: &PluginContext) -> Result<(), BoxError> {
        tracing::debug!(answer = 42, "chatty hook record");
        Ok(())
    }
}

#[ixp_plugin(name = "quiet-plugin", version = "1.0.0", dependencies = ["logging-plugin"])]
struct QuietPlugin;

impl Plugin for QuietPlugin {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        ctx.logger().debug("quiet debug record");
        let password = Secret::new("hunter2-do-not-log");
        ctx.logger().info(format_args!(
            "connecting with password {password} ({password:?})"
        ));
        Ok(Self)
    }
}

fn file_config(dir: &Path, max_size: &str, max_files: u32) -> LoggingConfig {
    LoggingConfig {
        level: LogLevel::Info,
        format: LogFormat::Json,
        plugins: [("chatty-plugin".to_owned(), LogLevel::Debug)].into(),
        transports: vec![Transport::File(FileTransport {
            filename: dir.join("logs").join("app.log"),
            max_size: ByteSize::Text(max_size.into()),
            max_files,
        })],
        ..LoggingConfig::default()
    }
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn plugin_levels_json_records_and_masked_secrets_in_the_file() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-levels");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(file_config(&dir, "10m", 3))
        .plugin::<ChattyPlugin>(NoConfig {})
        .plugin::<QuietPlugin>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    tracing::info!(target: "outside_any_plugin", "a record from the app");
    host.stop().await.expect("stop");
    tracing::info!("after stop: goes to the console, not the file");

    let text = std::fs::read_to_string(dir.join("logs/app.log")).expect("log file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<String> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    let has = |m: &str| messages.iter().any(|x| x.contains(m));
    assert!(has("chatty debug record"), "{messages:#?}");
    assert!(
        has("chatty hook record"),
        "the plugin level applies to its hooks too: {messages:#?}"
    );
    assert!(!has("quiet debug record"), "{messages:#?}");
    assert!(has("a record from the app"), "{messages:#?}");
    let component = records
        .iter()
        .find(|r| r["message"] == "a record from a component logger")
        .expect("the component logger's record");
    assert_eq!(component["plugin"], "chatty-worker");
    assert_eq!(component["level"], "WARN");
    assert!(has("connecting with password"), "{messages:#?}");
    assert!(
        !text.contains("hunter2-do-not-log"),
        "a secret reached the log:\n{text}"
    );
    assert!(!has("after stop"), "{messages:#?}");
    let chatty = records
        .iter()
        .find(|r| r["message"] == "chatty hook record")
        .expect("record");
    assert_eq!(chatty["level"], "DEBUG");
    assert_eq!(chatty["fields"]["answer"], 42);
    assert_eq!(chatty["span"]["plugin"], "chatty-plugin", "{chatty}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn writing_past_max_size_keeps_at_most_max_files() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-rotation");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(file_config(&dir, "4k", 3))
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    for i in 0..400 {
        tracing::info!(target: "rotation_test", seq = i, "record number {i:04} with some padding to fill the file");
    }
    host.stop().await.expect("stop flushes the file");

    let names = log_files(&dir);
    assert_eq!(
        names,
        ["app.log", "app.log.1", "app.log.2"],
        "at most maxFiles files"
    );
    let mut seqs = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join("logs").join(name)).expect("read");
        assert!(
            text.len() <= 4096,
            "{name} holds {} bytes, more than maxSize",
            text.len()
        );
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            if record["target"] == "rotation_test" {
                seqs.push(record["fields"]["seq"].as_i64().expect("seq"));
            }
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs.last(), Some(&399), "the newest record is kept");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the kept records are contiguous"
    );
    assert!(seqs[0] > 0, "the oldest records were rotated away");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_log_file_that_cannot_be_opened_fails_initialization_naming_it() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-unopenable");
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "a file where a directory should be").expect("write");
    let config = LoggingConfig {
        transports: vec![Transport::File(FileTransport {
            filename: blocker.join("app.log"),
            ..FileTransport::default()
        })],
        ..LoggingConfig::default()
    };
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(config)
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("cannot open");
    let message = error.to_string();
    assert!(message.contains("logging-plugin"), "{message}");
    assert!(message.contains("not-a-dir/app.log"), "{message}");
    std::fs::remove_dir_all(dir).ok();
}

/// A restart puts the plugin's output back and the `logger` service with it (the host
/// removes a plugin's services before its `restart`).
#[tokio::test]
async fn a_restart_keeps_the_file_output_and_the_service() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-restart");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(file_config(&dir, "10m", 3))
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    host.restart("logging-plugin").await.expect("restart");
    host.services()
        .get::<LogService>("logger")
        .expect("the service after the restart");
    tracing::info!(target: "outside_any_plugin", "a record after the restart");
    host.stop().await.expect("stop");
    let text = std::fs::read_to_string(dir.join("logs/app.log")).expect("log file");
    assert!(text.contains("a record after the restart"), "{text}");
    std::fs::remove_dir_all(dir).ok();
}

/// A restart of logging-plugin restarts database-plugin, which depends on it
/// (optionally), as a dependent: a stop (its pool closed), then a start, which connects
/// a new pool and registers it again.
#[tokio::test]
async fn restarting_logging_restarts_the_database_plugin_on_a_new_pool() {
    use ixp_plugins::database::{Database, DatabaseConfig, DatabasePlugin, DatabaseType};
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-restart-db");
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(LoggingConfig::default())
        .plugin::<DatabasePlugin>(DatabaseConfig {
            kind: DatabaseType::Sqlite,
            filename: dir.join("app.db"),
            ..DatabaseConfig::default()
        })
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let before = host
        .services()
        .get::<Database>("database")
        .expect("service");
    host.restart("logging-plugin").await.expect("restart");
    assert!(before.is_closed(), "the stop closed the first pool");
    let database = host
        .services()
        .get::<Database>("database")
        .expect("the service after the restart");
    assert!(!database.is_closed());
    let (one,): (i64,) = ixp_plugins::sqlx::query_as("SELECT 1")
        .fetch_one(database.sqlite().expect("a SQLite pool"))
        .await
        .expect("a query on the new pool");
    assert_eq!(one, 1);
    host.stop().await.expect("stop");
    std::fs::remove_dir_all(dir).ok();
}

/// A named pipe at `<dir>/logs/app.log` (the file transport's file), and a thread that
/// opens it for reading, waits until `hold` says so, then reads it to the end: a disk
/// that takes no more until then. Returns the thread, which counts the lines it read.
fn slow_pipe(dir: &Path, hold: std::sync::mpsc::Receiver<()>) -> std::thread::JoinHandle<usize> {
    std::fs::create_dir_all(dir.join("logs")).expect("log dir");
    let pipe = dir.join("logs").join("app.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", pipe.display());
    std::thread::spawn(move || {
        use std::io::BufRead;
        // Blocks until the transport opens the pipe for writing.
        let reader = std::fs::File::open(&pipe).expect("open the pipe");
        let _ = hold.recv();
        std::io::BufReader::new(reader).lines().count()
    })
}

/// A host whose logging-plugin writes to a [`slow_pipe`] in `dir` (released by sending
/// on the returned channel, or by dropping it), launched, after 5,000 records of ~200
/// bytes were logged: far more than a pipe holds (64 KiB). `config` is the host's TOML.
async fn logging_into_a_slow_pipe(
    dir: &Path,
    config: &str,
) -> (
    Host,
    std::sync::Arc<FileStats>,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<usize>,
) {
    let (release, hold) = std::sync::mpsc::channel();
    let reader = slow_pipe(dir, hold);
    let host = Host::builder()
        .catalog(Catalog::new())
        .config(ixp_tests::toml_config(config))
        .plugin::<LoggingPlugin>(file_config(dir, "1g", 2))
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    let service = host
        .services()
        .get::<LogService>("logger")
        .expect("the logger service");
    let [stats] = <[_; 1]>::try_from(service.file_stats()).expect("one file transport");
    for i in 0..5_000 {
        tracing::info!(target: "drain_test", seq = i, "record {i:05} {}", "x".repeat(120));
    }
    (host, stats, release, reader)
}

/// Releases the pipe and waits for its reader: nothing is left blocked on it.
async fn read_to_the_end(
    release: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<usize>,
) -> usize {
    let _ = release.send(());
    tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join")
}

#[tokio::test]
async fn a_stop_waits_until_the_file_writer_has_written_every_record() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-drain");
    let (host, stats, release, reader) = logging_into_a_slow_pipe(&dir, "").await;
    let health = host.health().await.plugins["logging-plugin"].clone();
    assert!(
        health.details["file[0]"]["pending"].as_u64() > Some(0),
        "the pipe holds up the writer: {health:?}"
    );
    // The disk takes records again 2 s from now: longer than the ~1 s that dropping
    // `tracing-appender`'s guard waits by itself.
    let later = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let _ = release.send(());
        release
    });
    host.stop().await.expect("stop");
    let accepted = stats.accepted.load(Ordering::Acquire);
    let written = stats.written.load(Ordering::Acquire);
    assert!(accepted >= 5_000, "{stats:?}");
    assert_eq!(
        written, accepted,
        "the stop returned before every record was written: {stats:?}"
    );
    assert_eq!(stats.lost.load(Ordering::Acquire), 0);
    let release = later.join().expect("the 2 s are over");
    let lines = read_to_the_end(release, reader).await;
    assert_eq!(
        lines as u64, written,
        "every written record reached the file"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_stop_gives_up_on_a_file_that_takes_nothing_and_counts_what_is_lost() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-lost");
    // The stop waits half the hook timeout for the file: 1 s.
    let (host, stats, release, reader) =
        logging_into_a_slow_pipe(&dir, "[plugins.logging-plugin]\nhook_timeout = \"2s\"\n").await;
    let started = std::time::Instant::now();
    host.stop()
        .await
        .expect("a stop that gives up still succeeds");
    let took = started.elapsed();
    // 1 s of waiting (the stuck writer's guard is not waited for); wide for a loaded
    // machine.
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let lost = stats.lost.load(Ordering::Acquire);
    let accepted = stats.accepted.load(Ordering::Acquire);
    assert!(
        lost > 0 && lost <= accepted,
        "what the pipe did not take is counted as lost: {stats:?}"
    );
    read_to_the_end(release, reader).await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_logging_plugin_dropped_without_a_stop_counts_what_its_file_has_not_written() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = ixp_tests::temp_dir("logging-dropped");
    let (host, stats, release, reader) = logging_into_a_slow_pipe(&dir, "").await;
    let service = host
        .services()
        .get::<LogService>("logger")
        .expect("the logger service");
    // Dropped on a blocking thread: each file's guard still waits ~1 s for its writer.
    tokio::task::spawn_blocking(move || drop(host))
        .await
        .expect("dropped");
    let lost = stats.lost.load(Ordering::Acquire);
    assert!(
        lost > 0 && lost <= stats.accepted.load(Ordering::Acquire),
        "{stats:?}"
    );
    assert!(
        service.file_stats().is_empty(),
        "no counters of a writer that is gone"
    );
    read_to_the_end(release, reader).await;
    std::fs::remove_dir_all(dir).ok();
}
