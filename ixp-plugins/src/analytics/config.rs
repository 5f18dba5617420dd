//! The typed configuration of `analytics-plugin`.

use std::time::Duration;

use ixp_core::{ConfigViolation, EventBus, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// The topics tracked when the config names none: the four of the guide.
pub const DEFAULT_EVENTS: [&str; 4] = [
    "request.started",
    "request.completed",
    "user.action",
    "error.occurred",
];

/// A duration: a number of milliseconds (as the guide's `flushInterval: 10000`), or text
/// such as `"5s"`, `"250ms"`, `"1m"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Millis {
    /// A number of milliseconds.
    Number(u64),
    /// A duration with a unit (`ms`, `s`, `m`, `h`; e.g. `"1m 30s"`), or digits alone
    /// (milliseconds, as environment overrides arrive).
    Text(String),
}

impl Millis {
    /// The duration, or why the text is not one.
    pub fn duration(&self) -> Result<Duration, String> {
        match self {
            Millis::Number(ms) => Ok(Duration::from_millis(*ms)),
            Millis::Text(text) => {
                let text = text.trim();
                if let Ok(ms) = text.parse::<u64>() {
                    return Ok(Duration::from_millis(ms));
                }
                humantime::parse_duration(text).map_err(|e| {
                    format!("`{text}` is not a duration ({e}; use e.g. \"5s\", \"250ms\" or a number of milliseconds)")
                })
            }
        }
    }

    fn ms(ms: u64) -> Self {
        Millis::Number(ms)
    }
}

/// Configuration of `analytics-plugin` (keys in camelCase, as in the guide).
///
/// Only `endpoint` is required; see the [module docs](super) for an example and for
/// what happens when the collector is slow or away.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalyticsConfig {
    /// The collector's URL (`http://` or `https://`); batches are POSTed to it. Shown
    /// (in `Debug` and in the effective config `ixp-app check` prints) without query,
    /// fragment, user or password: a key may travel in them.
    #[serde(serialize_with = "serialize_shown_endpoint")]
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <apiKey>`; no `Authorization` header when absent.
    pub api_key: Option<Secret>,
    /// Events per request at most.
    pub batch_size: usize,
    /// The longest an event waits before its batch is sent (milliseconds, or `"5s"`).
    pub flush_interval: Millis,
    /// Events held at most (waiting or being sent). When it is full, new events are
    /// dropped and counted (`dropped`); the caller never waits.
    pub buffer_size: usize,
    /// Retries of a failed request before its batch is given up (counted in `failed`).
    /// Absent: retried until delivered (the guide's re-queue), while new events wait in
    /// the buffer.
    pub max_retries: Option<u32>,
    /// The wait before the first retry; it doubles with each retry up to `maxBackoff`.
    pub retry_backoff: Millis,
    /// The longest wait between retries.
    pub max_backoff: Millis,
    /// Timeout of one request.
    pub request_timeout: Millis,
    /// The longest `stop` (and so SIGTERM) spends sending what is buffered; what is still
    /// unsent then is counted in `lost` and logged. Keep it below the plugin's
    /// `hook_timeout` (30 s by default).
    pub flush_timeout: Millis,
    /// The bus topics tracked (patterns such as `order.*` allowed).
    pub events: Vec<String>,
}

/// The endpoint is shown without its query, fragment and credentials (a key may sit
/// there); `apiKey` is redacted by [`Secret`].
impl std::fmt::Debug for AnalyticsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsConfig")
            .field("endpoint", &super::client::display_endpoint(&self.endpoint))
            .field("api_key", &self.api_key)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("buffer_size", &self.buffer_size)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("flush_timeout", &self.flush_timeout)
            .field("events", &self.events)
            .finish()
    }
}

/// `endpoint` as [`AnalyticsConfig`] shows it.
fn serialize_shown_endpoint<S: serde::Serializer>(
    endpoint: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&super::client::display_endpoint(endpoint))
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            api_key: None,
            batch_size: 100,
            flush_interval: Millis::ms(10_000),
            buffer_size: 10_000,
            max_retries: None,
            retry_backoff: Millis::ms(200),
            max_backoff: Millis::ms(10_000),
            request_timeout: Millis::ms(10_000),
            flush_timeout: Millis::ms(10_000),
            events: DEFAULT_EVENTS.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// The durations of an [`AnalyticsConfig`], parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) flush_interval: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) flush_timeout: Duration,
}

impl AnalyticsConfig {
    /// The parsed durations (the check has validated them; a bad one falls back to its
    /// default here).
    pub(crate) fn timing(&self) -> Timing {
        let defaults = AnalyticsConfig::default();
        let pick = |value: &Millis, default: &Millis| {
            value
                .duration()
                .or_else(|_| default.duration())
                .unwrap_or(Duration::from_secs(10))
        };
        Timing {
            flush_interval: pick(&self.flush_interval, &defaults.flush_interval),
            retry_backoff: pick(&self.retry_backoff, &defaults.retry_backoff),
            max_backoff: pick(&self.max_backoff, &defaults.max_backoff),
            request_timeout: pick(&self.request_timeout, &defaults.request_timeout),
            flush_timeout: pick(&self.flush_timeout, &defaults.flush_timeout),
        }
    }

    /// Problems the type cannot express: a missing or malformed endpoint, sizes of zero,
    /// durations out of range, bad topic patterns.
    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        if self.endpoint.trim().is_empty() {
            found.push(ConfigViolation::new(
                "endpoint",
                "is required: the collector's URL, e.g. \"https://analytics.example.com/v1/batch\" (or disable the plugin with enabled = false)",
            ));
        } else {
            match reqwest::Url::parse(&self.endpoint) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    found.push(ConfigViolation::new(
                        "endpoint",
                        format!(
                            "must be an http:// or https:// URL, not {}://",
                            url.scheme()
                        ),
                    ));
                }
                Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                    found.push(ConfigViolation::new("endpoint", "has no host"));
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    found.push(ConfigViolation::new(
                        "endpoint",
                        "must not carry credentials; put the key in apiKey",
                    ));
                }
                Ok(_) => {}
                Err(e) => found.push(ConfigViolation::new(
                    "endpoint",
                    format!("is not a URL ({e})"),
                )),
            }
        }
        if let Some(key) = &self.api_key {
            if key.expose().trim().is_empty() {
                found.push(ConfigViolation::new(
                    "apiKey",
                    "must not be empty (remove the key to send no Authorization header)",
                ));
            } else if key.expose().chars().any(|c| c.is_control() || c == ' ') {
                found.push(ConfigViolation::new(
                    "apiKey",
                    "must not contain spaces or control characters (value hidden)",
                ));
            }
        }
        if self.batch_size == 0 {
            found.push(ConfigViolation::new("batchSize", "must be at least 1"));
        }
        if self.buffer_size == 0 {
            found.push(ConfigViolation::new("bufferSize", "must be at least 1"));
        } else if self.buffer_size < self.batch_size {
            found.push(ConfigViolation::new(
                "bufferSize",
                format!("must be at least batchSize ({})", self.batch_size),
            ));
        }
        let mut durations = Vec::new();
        for (field, value) in [
            ("flushInterval", &self.flush_interval),
            ("retryBackoff", &self.retry_backoff),
            ("maxBackoff", &self.max_backoff),
            ("requestTimeout", &self.request_timeout),
            ("flushTimeout", &self.flush_timeout),
        ] {
            match value.duration() {
                Ok(d) if d.is_zero() => {
                    found.push(ConfigViolation::new(field, "must be at least 1ms"));
                }
                Ok(d) if d > Duration::from_secs(24 * 3600) => {
                    found.push(ConfigViolation::new(field, "must be at most 24h"));
                }
                Ok(d) => durations.push((field, d)),
                Err(message) => found.push(ConfigViolation::new(field, message)),
            }
        }
        let get = |name: &str| durations.iter().find(|(f, _)| *f == name).map(|(_, d)| *d);
        if let (Some(first), Some(max)) = (get("retryBackoff"), get("maxBackoff")) {
            if max < first {
                found.push(ConfigViolation::new(
                    "maxBackoff",
                    format!(
                        "must be at least retryBackoff ({})",
                        humantime::format_duration(first)
                    ),
                ));
            }
        }
        let probe = EventBus::new();
        for (i, pattern) in self.events.iter().enumerate() {
            if self.events[..i].contains(pattern) {
                found.push(ConfigViolation::new(
                    format!("events[{i}]"),
                    format!("`{pattern}` is listed twice"),
                ));
                continue;
            }
            if let Err(e) = probe.on(pattern, |_event| async {}) {
                found.push(ConfigViolation::new(format!("events[{i}]"), e.to_string()));
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_config_shows_the_endpoint_without_its_query_or_credentials() {
        let config = AnalyticsConfig {
            endpoint: "https://user:hunter2@c.example/v1/batch?key=hunter2".into(),
            ..AnalyticsConfig::default()
        };
        let shown = serde_json::to_string(&config).expect("serializes");
        assert!(
            shown.contains("\"endpoint\":\"https://c.example/v1/batch\""),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn durations_are_milliseconds_or_text() {
        for (value, expected) in [
            (Millis::Number(5000), Duration::from_secs(5)),
            (Millis::Text("5s".into()), Duration::from_secs(5)),
            (Millis::Text("250ms".into()), Duration::from_millis(250)),
            (Millis::Text("1m 30s".into()), Duration::from_secs(90)),
            (Millis::Text("1500".into()), Duration::from_millis(1500)),
        ] {
            assert_eq!(value.duration(), Ok(expected), "{value:?}");
        }
        for text in ["", "5x", "-1s", "soon"] {
            assert!(Millis::Text(text.into()).duration().is_err(), "{text}");
        }
    }

    #[test]
    fn the_defaults_need_only_an_endpoint() {
        let mut config = AnalyticsConfig::default();
        let problems = config.violations().expect_err("no endpoint");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "endpoint");
        config.endpoint = "http://127.0.0.1:9/collect".into();
        assert_eq!(config.violations(), Ok(()));
        assert_eq!(config.events, DEFAULT_EVENTS);
        assert_eq!(config.timing().flush_interval, Duration::from_secs(10));
    }

    #[test]
    fn debug_shows_neither_the_endpoint_s_query_nor_the_api_key() {
        let config = AnalyticsConfig {
            endpoint: "https://user:pw@c.example/v1/batch?token=query-secret#frag".into(),
            api_key: Some(Secret::new("key-secret".to_owned())),
            ..AnalyticsConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("https://c.example/v1/batch"), "{shown}");
        for secret in ["query-secret", "key-secret", "pw", "frag"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
