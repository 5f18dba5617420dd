//! The typed configuration of `email-plugin`.

use std::path::PathBuf;
use std::time::Duration;

use ixp_core::{ConfigViolation, JsonSchema, Secret};
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

/// The most `maxRetries` accepted: a send is tried at most this many times plus one.
pub const MAX_RETRIES_LIMIT: u32 = 10;

/// When a plain connection (`secure = false`) is upgraded with `STARTTLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade when the server offers `STARTTLS`, else stay in plain text (the default,
    /// as in the guide's nodemailer; open to a man in the middle who hides the offer).
    #[default]
    Opportunistic,
    /// Refuse to go on (no AUTH, no mail) unless the connection is upgraded.
    Required,
    /// Never upgrade: plain text only (local relays and test servers).
    Never,
}

/// `smtp = { ... }`: the server mail is submitted to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SmtpConfig {
    /// Host name or IP address of the SMTP server.
    pub host: String,
    /// Port; when absent 465 if `secure`, else 587.
    pub port: Option<u16>,
    /// `true`: TLS from the first byte (SMTPS, usually port 465). `false`: a plain
    /// connection, upgraded with `STARTTLS` as `starttls` says.
    pub secure: bool,
    /// With `secure = false`: `opportunistic` (default), `required` or `never`.
    pub starttls: StartTls,
    /// AUTH user name; set with `password`, or leave both out for no AUTH.
    pub username: Option<String>,
    /// AUTH password (shown as `********` everywhere).
    pub password: Option<Secret>,
    /// Time allowed to connect, and for each SMTP command, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            secure: false,
            starttls: StartTls::Opportunistic,
            username: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

impl SmtpConfig {
    /// The port connected to: `port`, else 465 when `secure`, else 587.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.secure { 465 } else { 587 })
    }

    /// `host:port`, as errors and health name the server.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.effective_port())
    }

    /// The connect and per-command timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Configuration of `email-plugin` (keys in camelCase, as in the guide).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailConfig {
    /// The SMTP server.
    pub smtp: SmtpConfig,
    /// The sender of messages that name none, e.g. `"App <noreply@example.com>"`.
    pub default_from: Option<String>,
    /// The directory of the templates (`NAME.subject.txt`, `NAME.html`, `NAME.txt`).
    pub templates: Option<PathBuf>,
    /// How many times a failed send is tried again (0 to 10); permanent (5xx) refusals
    /// are never retried.
    pub max_retries: u32,
    /// The wait before the first retry, in milliseconds; it doubles for each further one.
    pub retry_backoff_ms: u64,
    /// The longest wait between two tries, in milliseconds.
    pub retry_max_backoff_ms: u64,
    /// Check the server (connect, EHLO, AUTH, NOOP) during initialization, failing it
    /// when the server is unreachable.
    pub verify_on_start: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp: SmtpConfig::default(),
            default_from: None,
            templates: None,
            max_retries: 3,
            retry_backoff_ms: 500,
            retry_max_backoff_ms: 30_000,
            verify_on_start: true,
        }
    }
}

impl EmailConfig {
    /// The wait after the `failed_attempt`-th failure (1-based): `retryBackoffMs`
    /// doubled for each earlier failure, at most `retryMaxBackoffMs`.
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(32);
        let millis = self
            .retry_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retry_max_backoff_ms);
        Duration::from_millis(millis)
    }

    /// Problems the types cannot express, with dotted paths.
    pub(crate) fn violations(&self) -> Result<(), Vec<ConfigViolation>> {
        let mut found = Vec::new();
        let smtp = &self.smtp;
        if smtp.host.trim().is_empty() {
            found.push(ConfigViolation::new("smtp.host", "must not be empty"));
        } else if smtp
            .host
            .contains(|c: char| c.is_whitespace() || "/@".contains(c))
        {
            found.push(ConfigViolation::new(
                "smtp.host",
                format!(
                    "`{}` is not a host name or IP address (no scheme, user or path)",
                    // What precedes an `@` may be a user and password: not shown.
                    match smtp.host.rsplit_once('@') {
                        Some((_, host)) => format!("…@{host}"),
                        None => smtp.host.clone(),
                    }
                ),
            ));
        }
        if smtp.port == Some(0) {
            found.push(ConfigViolation::new("smtp.port", "must not be 0"));
        }
        if smtp.timeout_ms == 0 {
            found.push(ConfigViolation::new("smtp.timeoutMs", "must be at least 1"));
        }
        match (&smtp.username, &smtp.password) {
            (None, Some(_)) => found.push(ConfigViolation::new(
                "smtp.password",
                "is set but smtp.username is not; set both for AUTH, or neither",
            )),
            (Some(_), None) => found.push(ConfigViolation::new(
                "smtp.username",
                "is set but smtp.password is not; set both for AUTH, or neither",
            )),
            (Some(user), Some(_)) if user.trim().is_empty() => {
                found.push(ConfigViolation::new("smtp.username", "must not be empty"));
            }
            (Some(_), Some(password)) if password.is_empty() => {
                found.push(ConfigViolation::new("smtp.password", "must not be empty"));
            }
            _ => {}
        }
        if let Some(from) = &self.default_from {
            if let Err(reason) = parse_mailbox(from) {
                found.push(ConfigViolation::new("defaultFrom", reason));
            }
        }
        if let Some(dir) = &self.templates {
            if dir.as_os_str().is_empty() {
                found.push(ConfigViolation::new("templates", "must not be empty"));
            } else if !dir.exists() {
                found.push(ConfigViolation::new(
                    "templates",
                    format!("the directory `{}` does not exist", dir.display()),
                ));
            } else if !dir.is_dir() {
                found.push(ConfigViolation::new(
                    "templates",
                    format!("`{}` is not a directory", dir.display()),
                ));
            }
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            found.push(ConfigViolation::new(
                "maxRetries",
                format!("must be at most {MAX_RETRIES_LIMIT}"),
            ));
        }
        if self.max_retries > 0 && self.retry_backoff_ms == 0 {
            found.push(ConfigViolation::new(
                "retryBackoffMs",
                "must be at least 1 when maxRetries is above 0",
            ));
        }
        if self.retry_max_backoff_ms < self.retry_backoff_ms {
            found.push(ConfigViolation::new(
                "retryMaxBackoffMs",
                format!(
                    "must be at least retryBackoffMs ({})",
                    self.retry_backoff_ms
                ),
            ));
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

/// Parses `name@example.com` or `Name <name@example.com>`, or says why not.
pub(crate) fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim().parse::<Mailbox>().map_err(|e| {
        format!(
            "`{text}` is not an email address (expected `name@example.com` or `Name <name@example.com>`): {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_with_a_user_is_refused_without_showing_the_password() {
        let config = EmailConfig {
            smtp: SmtpConfig {
                host: "apikey:SG.hunter2@smtp.example.com".into(),
                ..SmtpConfig::default()
            },
            ..EmailConfig::default()
        };
        let problems = config.violations().expect_err("a user is refused");
        let shown = format!("{problems:?}");
        assert!(
            shown.contains("`…@smtp.example.com` is not a host name"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = EmailConfig {
            retry_backoff_ms: 100,
            retry_max_backoff_ms: 350,
            ..EmailConfig::default()
        };
        let waits: Vec<u128> = (1..=4).map(|n| config.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        assert_eq!(
            EmailConfig::default().backoff(u32::MAX),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_port_follows_secure_when_absent() {
        let mut smtp = SmtpConfig::default();
        assert_eq!(smtp.effective_port(), 587);
        smtp.secure = true;
        assert_eq!(smtp.address(), "localhost:465");
        smtp.port = Some(2525);
        assert_eq!(smtp.address(), "localhost:2525");
    }
}
