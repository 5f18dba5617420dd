//! The typed configuration of `logging-plugin`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use ixp_core::{ConfigViolation, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (the default).
    Info,
    /// Something unusual.
    Warn,
    /// Something failed.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The level as an `EnvFilter` directive word.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        }
    }
}

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per record (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A size: a number of bytes, or text such as `10m`, `512k`, `1g`, `10MB`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ByteSize {
    /// A number of bytes.
    Bytes(u64),
    /// A number with a unit: `k`, `m`, `g` (powers of 1024), optionally followed by `b`.
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or why the text is not a size.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(text) => parse_size(text).ok_or_else(|| {
                format!("`{text}` is not a size (use e.g. 10m, 512k, 1g or a number of bytes)")
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, factor) = match lower.chars().last()? {
        'k' => (&lower[..lower.len() - 1], 1u64 << 10),
        'm' => (&lower[..lower.len() - 1], 1 << 20),
        'g' => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(factor)
}

/// One place records go (the guide's `transports`, chosen by `type`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Transport {
    /// Standard error.
    Console(ConsoleTransport),
    /// A file rotated by size.
    File(FileTransport),
    /// An Elasticsearch or OpenSearch index, by `_bulk` requests (feature
    /// `logging-elasticsearch`).
    Elasticsearch(ElasticsearchTransport),
}

/// `type = "console"`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleTransport {
    /// Color the level and fields (ANSI).
    pub colorize: bool,
}

/// `type = "file"`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FileTransport {
    /// The file written to; its directory is created if absent.
    pub filename: PathBuf,
    /// Rotate when the file would grow past this size (`10m` style or bytes).
    pub max_size: ByteSize,
    /// The most files kept, the current one included (`app.log`, `app.log.1`, ...).
    pub max_files: u32,
}

impl Default for FileTransport {
    fn default() -> Self {
        Self {
            filename: PathBuf::from("logs/app.log"),
            max_size: ByteSize::Text("10m".into()),
            max_files: 5,
        }
    }
}

/// `type = "elasticsearch"`: records are batched and sent with `_bulk`; a failed
/// request is retried with backoff; records wait in a bounded buffer, and when it is
/// full new records are dropped and counted (the caller never waits); stop sends what
/// is left.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ElasticsearchTransport {
    /// The server, e.g. `http://127.0.0.1:9200`. Shown (in `Debug` and in the effective
    /// config `ixp-app check` prints) without a user and password.
    #[serde(serialize_with = "serialize_shown_host")]
    pub host: String,
    /// The index documents go to.
    pub index: String,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<Secret>,
    /// An API key (sent as `Authorization: ApiKey <key>`).
    pub api_key: Option<Secret>,
    /// Records per `_bulk` request.
    pub batch_size: usize,
    /// The longest a record waits before its batch is sent, in milliseconds.
    pub flush_interval_ms: u64,
    /// Records held while the server is slow or away; beyond it, new records are
    /// dropped and counted.
    pub buffer_size: usize,
    /// Timeout of one `_bulk` request, in milliseconds.
    pub request_timeout_ms: u64,
    /// The longest stop waits to send what is left, in milliseconds.
    pub flush_timeout_ms: u64,
}

/// The most records one `_bulk` request may carry (`batchSize`).
const MAX_ES_BATCH_SIZE: usize = 100_000;
/// The most records the Elasticsearch transport may hold (`bufferSize`): its queue is
/// made that size.
pub(crate) const MAX_BUFFER_SIZE: usize = 10_000_000;

/// `host` as [`ElasticsearchTransport`] shows it: without user and password.
fn serialize_shown_host<S: serde::Serializer>(
    host: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::url_text::without_userinfo(host))
}

impl std::fmt::Debug for ElasticsearchTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchTransport")
            .field("host", &crate::url_text::without_userinfo(&self.host))
            .field("index", &self.index)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("api_key", &self.api_key)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("buffer_size", &self.buffer_size)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("flush_timeout_ms", &self.flush_timeout_ms)
            .finish()
    }
}

impl Default for ElasticsearchTransport {
    fn default() -> Self {
        Self {
            host: "http://127.0.0.1:9200".into(),
            index: "ixp-logs".into(),
            username: None,
            password: None,
            api_key: None,
            batch_size: 500,
            flush_interval_ms: 1000,
            buffer_size: 10_000,
            request_timeout_ms: 10_000,
            flush_timeout_ms: 10_000,
        }
    }
}

/// Configuration of `logging-plugin` (keys in camelCase, as in the guide).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfig {
    /// The least severe level written.
    pub level: LogLevel,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Extra `tracing` filter directives by target, e.g. `["sqlx=warn",
    /// "ixp_plugins::cache=debug"]`.
    pub directives: Vec<String>,
    /// Levels for the records of one plugin (its logger and every hook), e.g.
    /// `{ "cache-plugin" = "debug" }`.
    pub plugins: BTreeMap<String, LogLevel>,
    /// Where records go (default: the console).
    pub transports: Vec<Transport>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
            directives: Vec::new(),
            plugins: BTreeMap::new(),
            transports: vec![Transport::Console(ConsoleTransport::default())],
        }
    }
}

impl LoggingConfig {
    /// Every directive the filter is built from: the level, the per-plugin levels (as
    /// span-field directives on the span every plugin logs in), then `directives`.
    pub fn filter_directives(&self) -> Vec<String> {
        let mut all = vec![self.level.as_str().to_owned()];
        for (plugin, level) in &self.plugins {
            all.push(format!(
                "[plugin{{plugin={}}}]={}",
                regex_escape(plugin),
                level.as_str()
            ));
        }
        all.extend(self.directives.iter().cloned());
        all
    }

    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        use tracing_subscriber::filter::Directive;
        let mut found = Vec::new();
        for (i, directive) in self.directives.iter().enumerate() {
            if let Err(e) = Directive::from_str(directive) {
                found.push(ConfigViolation::new(
                    format!("directives[{i}]"),
                    format!("`{directive}` is not a filter directive: {e}"),
                ));
            }
        }
        for plugin in self.plugins.keys() {
            if plugin.is_empty() || plugin.contains(['{', '}', '[', ']', '=', ',']) {
                found.push(ConfigViolation::new(
                    format!("plugins.{plugin}"),
                    "is not a plugin name",
                ));
            }
        }
        let mut files = Vec::new();
        for (i, transport) in self.transports.iter().enumerate() {
            let at = |field: &str| format!("transports[{i}].{field}");
            match transport {
                Transport::Console(_) => {}
                Transport::File(file) => {
                    if file.filename.as_os_str().is_empty() {
                        found.push(ConfigViolation::new(at("filename"), "must not be empty"));
                    } else if files.contains(&&file.filename) {
                        found.push(ConfigViolation::new(
                            at("filename"),
                            format!(
                                "`{}` is written by another transport",
                                file.filename.display()
                            ),
                        ));
                    }
                    files.push(&file.filename);
                    match file.max_size.bytes() {
                        Ok(0) => found.push(ConfigViolation::new(
                            at("maxSize"),
                            "must be at least 1 byte",
                        )),
                        Ok(_) => {}
                        Err(message) => found.push(ConfigViolation::new(at("maxSize"), message)),
                    }
                    if file.max_files == 0 {
                        found.push(ConfigViolation::new(at("maxFiles"), "must be at least 1"));
                    }
                }
                Transport::Elasticsearch(es) => {
                    if !cfg!(feature = "logging-elasticsearch") {
                        found.push(ConfigViolation::new(
                            format!("transports[{i}].type"),
                            "the `elasticsearch` transport is not compiled in; enable the Cargo feature `logging-elasticsearch`",
                        ));
                    }
                    if !(es.host.starts_with("http://") || es.host.starts_with("https://")) {
                        found.push(ConfigViolation::new(
                            at("host"),
                            format!(
                                "`{}` must be an http:// or https:// URL",
                                crate::url_text::without_userinfo(&es.host)
                            ),
                        ));
                    }
                    if es.index.is_empty()
                        || es.index.starts_with(['_', '-', '+'])
                        || es
                            .index
                            .chars()
                            .any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c))
                    {
                        found.push(ConfigViolation::new(
                            at("index"),
                            format!("`{}` is not a valid index name (lowercase, no spaces or \\/*?\"<>|,#:)", es.index),
                        ));
                    }
                    for (field, value) in [
                        ("batchSize", es.batch_size as u64),
                        ("bufferSize", es.buffer_size as u64),
                        ("flushIntervalMs", es.flush_interval_ms),
                        ("requestTimeoutMs", es.request_timeout_ms),
                    ] {
                        if value == 0 {
                            found.push(ConfigViolation::new(at(field), "must be at least 1"));
                        }
                    }
                    for (field, value, most) in [
                        ("batchSize", es.batch_size, MAX_ES_BATCH_SIZE),
                        ("bufferSize", es.buffer_size, MAX_BUFFER_SIZE),
                    ] {
                        if value > most {
                            found.push(ConfigViolation::new(
                                at(field),
                                format!("must be at most {most}"),
                            ));
                        }
                    }
                    if es.buffer_size < es.batch_size {
                        found.push(ConfigViolation::new(
                            at("bufferSize"),
                            format!("must be at least batchSize ({})", es.batch_size),
                        ));
                    }
                    if es.api_key.is_some() && es.username.is_some() {
                        found.push(ConfigViolation::new(
                            at("apiKey"),
                            "set either apiKey or username/password, not both",
                        ));
                    }
                }
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_elasticsearch_host_that_is_no_url_is_refused_without_its_password() {
        let config: LoggingConfig = serde_json::from_value(serde_json::json!({
            "transports": [{"type": "elasticsearch", "host": "elastic:hunter2@es:9200", "index": "logs"}]
        }))
        .expect("parses");
        let problems = config.violations().expect_err("no scheme");
        let shown = format!("{problems:?}");
        assert!(
            shown.contains("`es:9200` must be an http:// or https:// URL"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn sizes_a_queue_or_a_batch_cannot_be_made_of_are_problems() {
        let config: LoggingConfig = serde_json::from_value(serde_json::json!({
            "transports": [{"type": "elasticsearch", "host": "http://es:9200", "index": "logs",
                            "batchSize": 10_000_000_000_u64, "bufferSize": 10_000_000_000_u64}]
        }))
        .expect("parses");
        let problems = format!("{:?}", config.violations().expect_err("too large"));
        assert!(problems.contains("must be at most 100000"), "{problems}");
        assert!(problems.contains("must be at most 10000000"), "{problems}");
    }

    #[test]
    fn debug_and_the_effective_config_show_the_host_without_credentials() {
        let config = LoggingConfig {
            transports: vec![Transport::Elasticsearch(ElasticsearchTransport {
                host: "https://elastic:hunter2@es:9200".into(),
                ..ElasticsearchTransport::default()
            })],
            ..LoggingConfig::default()
        };
        let serialized = serde_json::to_string(&config).expect("serializes");
        let debug = format!("{config:?}");
        for shown in [&serialized, &debug] {
            assert!(shown.contains("https://es:9200"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn sizes_parse_like_the_guide() {
        for (text, bytes) in [
            ("10m", 10 << 20),
            ("10MB", 10 << 20),
            ("512k", 512 << 10),
            ("1g", 1 << 30),
            ("100", 100),
            ("2 kb", 2048),
        ] {
            assert_eq!(ByteSize::Text(text.into()).bytes(), Ok(bytes), "{text}");
        }
        for text in ["", "m", "10x", "-1k", "1.5m"] {
            assert!(ByteSize::Text(text.into()).bytes().is_err(), "{text}");
        }
    }

    #[test]
    fn per_plugin_levels_become_span_directives() {
        let config = LoggingConfig {
            plugins: [("cache-plugin".to_owned(), LogLevel::Debug)].into(),
            directives: vec!["sqlx=warn".into()],
            ..LoggingConfig::default()
        };
        assert_eq!(
            config.filter_directives(),
            ["info", "[plugin{plugin=cache-plugin}]=debug", "sqlx=warn"]
        );
    }
}
