//! The typed configuration of `events-nats-plugin`.

use ixp_core::{ConfigViolation, EventBus, JsonSchema, Secret};
use serde::{Deserialize, Serialize};

/// JetStream settings: at-least-once delivery through a persistent stream and a durable
/// consumer per instance.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct JetStreamConfig {
    /// Use JetStream (otherwise core NATS: at-most-once, nothing kept while an
    /// instance is away).
    pub enabled: bool,
    /// The stream that keeps the bridged events (created if absent, file storage).
    pub stream: String,
    /// This instance's durable consumer (default: `ixp-<instanceId>`). An instance that
    /// comes back with the same name gets what it missed.
    pub durable: Option<String>,
    /// How long the stream keeps events, e.g. `"24h"`.
    pub max_age: String,
    /// The window in which a re-sent event (same id) is stored only once, e.g. `"2m"`.
    pub duplicate_window: String,
    /// How long to wait for the server's acknowledgement of one event, in ms.
    pub ack_timeout_ms: u64,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            stream: "IXP_EVENTS".into(),
            durable: None,
            max_age: "24h".into(),
            duplicate_window: "2m".into(),
            ack_timeout_ms: 5000,
        }
    }
}

/// Configuration of `events-nats-plugin`. Its `Debug` and `Serialize` (the effective
/// config `ixp-app check` prints) show `url` without user and password.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EventsNatsConfig {
    /// The NATS server(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    #[serde(serialize_with = "serialize_shown_url")]
    pub url: String,
    /// The event topics bridged, as bus patterns (`user.*`, `order.**`, `audit.login`).
    pub topics: Vec<String>,
    /// The NATS subject prefix: topic `user.created` travels as `<prefix>.user.created`.
    pub subject_prefix: String,
    /// This instance's id (default: made up at start). Events carry it, so an instance
    /// never handles its own events twice.
    pub instance_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// Events waiting to be published (while NATS is slow or away); beyond it new events
    /// are dropped, counted and logged.
    pub buffer_size: usize,
    /// How long to wait for the first connection, in ms.
    pub connect_timeout_ms: u64,
    /// How long stop waits to publish what is still buffered, in ms.
    pub flush_timeout_ms: u64,
    /// JetStream (at-least-once) settings.
    pub jetstream: JetStreamConfig,
}

/// The most events the bridge may hold (`bufferSize`): its queue is made that size.
const MAX_BUFFER_SIZE: usize = 10_000_000;

/// `url` as [`EventsNatsConfig`] shows it: each server without user and password.
fn serialize_shown_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::url_text::without_userinfo(url))
}

impl std::fmt::Debug for EventsNatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsNatsConfig")
            .field("url", &crate::url_text::without_userinfo(&self.url))
            .field("topics", &self.topics)
            .field("subject_prefix", &self.subject_prefix)
            .field("instance_id", &self.instance_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("buffer_size", &self.buffer_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("flush_timeout_ms", &self.flush_timeout_ms)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

impl Default for EventsNatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            topics: vec!["user.*".into()],
            subject_prefix: "ixp.events".into(),
            instance_id: None,
            username: None,
            password: None,
            token: None,
            buffer_size: 10_000,
            connect_timeout_ms: 5000,
            flush_timeout_ms: 10_000,
            jetstream: JetStreamConfig::default(),
        }
    }
}

fn valid_token(token: &str) -> bool {
    !token.is_empty() && !token.contains(['*', '>', ' ', '\t', '\r', '\n'])
}

impl EventsNatsConfig {
    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        if self.url.trim().is_empty() {
            found.push(ConfigViolation::new("url", "must not be empty"));
        }
        for url in self.url.split(',') {
            let url = url.trim();
            if let Some((scheme, _)) = url.split_once("://") {
                if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
                    found.push(ConfigViolation::new(
                        "url",
                        format!(
                            "`{}`: the scheme must be nats://, tls://, ws:// or wss://",
                            crate::url_text::without_userinfo(url)
                        ),
                    ));
                }
            }
        }
        if self.topics.is_empty() {
            found.push(ConfigViolation::new(
                "topics",
                "must list at least one pattern",
            ));
        }
        let probe = EventBus::new();
        for (i, topic) in self.topics.iter().enumerate() {
            match probe.on(topic, |_| async {}) {
                Err(e) => found.push(ConfigViolation::new(format!("topics[{i}]"), e.to_string())),
                Ok(_) if topic.contains([' ', '>']) => found.push(ConfigViolation::new(
                    format!("topics[{i}]"),
                    format!("`{topic}` cannot travel as a NATS subject (no spaces or `>`)"),
                )),
                Ok(_) => {}
            }
        }
        if !self.subject_prefix.split('.').all(valid_token) {
            found.push(ConfigViolation::new(
                "subjectPrefix",
                format!(
                    "`{}` is not a NATS subject prefix (dot-separated tokens without spaces, `*` or `>`)",
                    self.subject_prefix
                ),
            ));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                found.push(ConfigViolation::new(
                    "instanceId",
                    "may hold letters, digits, `-` and `_` only",
                ));
            }
        }
        if self.token.is_some() && self.username.is_some() {
            found.push(ConfigViolation::new(
                "token",
                "set either token or username/password",
            ));
        }
        if self.password.is_some() && self.username.is_none() {
            found.push(ConfigViolation::new(
                "password",
                "is set but `username` is not",
            ));
        }
        for (field, value) in [
            ("bufferSize", self.buffer_size as u64),
            ("connectTimeoutMs", self.connect_timeout_ms),
            ("jetstream.ackTimeoutMs", self.jetstream.ack_timeout_ms),
        ] {
            if value == 0 {
                found.push(ConfigViolation::new(field, "must be at least 1"));
            }
        }
        if self.buffer_size > MAX_BUFFER_SIZE {
            found.push(ConfigViolation::new(
                "bufferSize",
                format!("must be at most {MAX_BUFFER_SIZE}"),
            ));
        }
        let js = &self.jetstream;
        if js.enabled && self.instance_id.is_none() && js.durable.is_none() {
            found.push(ConfigViolation::new(
                "instanceId",
                "is required with JetStream (or set jetstream.durable): a stable name lets a restarted instance resume where it stopped",
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&js.stream) {
            found.push(ConfigViolation::new(
                "jetstream.stream",
                format!(
                    "`{}` is not a stream name (letters, digits, `-`, `_`)",
                    js.stream
                ),
            ));
        }
        if let Some(durable) = &js.durable {
            if !name_ok(durable) {
                found.push(ConfigViolation::new(
                    "jetstream.durable",
                    format!("`{durable}` is not a consumer name (letters, digits, `-`, `_`)"),
                ));
            }
        }
        for (field, text) in [
            ("jetstream.maxAge", &js.max_age),
            ("jetstream.duplicateWindow", &js.duplicate_window),
        ] {
            if let Err(e) = humantime::parse_duration(text) {
                found.push(ConfigViolation::new(
                    field,
                    format!("`{text}` is not a duration like \"2m\": {e}"),
                ));
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

/// Whether `topic` matches bus pattern `pattern` (`*` one segment, `**` the rest).
pub(crate) fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut parts = topic.split('.');
    let segments: Vec<&str> = pattern.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "**" && i + 1 == segments.len() {
            return parts.next().is_some();
        }
        match parts.next() {
            Some(part) if *segment == "*" || *segment == part => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::{topic_matches, EventsNatsConfig};

    #[test]
    fn a_rejected_url_is_shown_without_its_user_and_password() {
        let config = EventsNatsConfig {
            url: "http://bridge:hunter2@nats:4222".into(),
            ..EventsNatsConfig::default()
        };
        let problems = config.violations().expect_err("http:// is refused");
        let shown = format!("{problems:?}");
        assert!(
            shown.contains("`http://nats:4222`: the scheme must be"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_buffer_its_queue_cannot_be_made_of_is_a_problem() {
        let config = EventsNatsConfig {
            buffer_size: usize::MAX,
            ..EventsNatsConfig::default()
        };
        let problems = format!("{:?}", config.violations().expect_err("too large"));
        assert!(problems.contains("must be at most 10000000"), "{problems}");
    }

    #[test]
    fn debug_and_the_effective_config_show_the_url_without_credentials() {
        let config = EventsNatsConfig {
            url: "nats://bridge:hunter2@a:4222, nats://b:4222".into(),
            ..EventsNatsConfig::default()
        };
        let serialized = serde_json::to_string(&config).expect("serializes");
        let debug = format!("{config:?}");
        for shown in [&serialized, &debug] {
            assert!(shown.contains("nats://a:4222,nats://b:4222"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn patterns_match_like_the_bus() {
        assert!(topic_matches("user.*", "user.created"));
        assert!(!topic_matches("user.*", "user.created.now"));
        assert!(!topic_matches("user.*", "user"));
        assert!(topic_matches("order.**", "order.a.b"));
        assert!(!topic_matches("order.**", "order"));
        assert!(topic_matches("audit.login", "audit.login"));
        assert!(!topic_matches("audit.login", "audit.logout"));
    }
}
