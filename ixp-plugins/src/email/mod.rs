//! `email-plugin`: the guide's EmailPlugin, over SMTP with [`lettre`] (tokio, rustls)
//! and templates rendered with [`minijinja`] (feature `email`).
//!
//! * `smtp = { host, port, secure, username, password }`: `secure = true` is TLS from
//!   the first byte (SMTPS, port 465 by default); `secure = false` is a plain connection
//!   (port 587 by default) upgraded with `STARTTLS` when the server offers it
//!   (`starttls = "required"` refuses to go on without it, `"never"` never upgrades).
//!   Certificates are checked against the Mozilla roots (`webpki-roots`).
//! * At initialization the server is checked as the guide's `transporter.verify()`
//!   does: connect, EHLO, STARTTLS and AUTH as configured, `NOOP`, `QUIT`. An
//!   unreachable server fails the initialization with its `host:port` (the password
//!   appears nowhere: not in errors, logs, health or `Debug`). `verifyOnStart = false`
//!   skips the check. `health` repeats it, with its latency (`latencyMs`) and the
//!   counters (`sent`, `failed`, `retries`).
//! * The `email` service ([`Email`]): [`send`](Email::send) an [`EmailMessage`],
//!   [`send_template`](Email::send_template) a template with any serde context; both
//!   return the `Message-ID` and the tries it took ([`SentEmail`]).
//! * Events, as in the guide: `email.send` ([`EmailMessage`]) and `email.template`
//!   ([`TemplateEmail`]) in; `email.sent` ([`EmailSent`]) and `email.failed`
//!   ([`EmailFailed`]: recipients, subject, attempts, error) out, for every message,
//!   whether it came by event or by a call. Events are handled one at a time, in order.
//!   A payload that is not a message (JSON of the wrong shape) is reported on
//!   `error.occurred`.
//! * Retries: a failed submission (connection refused or lost, timeout, 4xx reply) is
//!   tried again after `retryBackoffMs`, doubling each time up to `retryMaxBackoffMs`,
//!   at most `maxRetries` times; then `email.failed`. A permanent refusal (5xx reply:
//!   unknown mailbox, AUTH refused, message rejected) is **not** retried: it is reported
//!   at once. A message whose acceptance reply was lost may be delivered twice.
//! * Templates ([`Templates`]): for template `NAME`, `NAME.subject.txt` (required),
//!   `NAME.html` and/or `NAME.txt` in the `templates` directory; with both bodies the
//!   mail is `multipart/alternative`. A missing template or variable is an error naming
//!   the template, the file and the variable.
//!
//! ```toml
//! [plugins.email-plugin]
//! defaultFrom = "My App <noreply@example.com>"
//! templates = "templates/email"   # welcome.subject.txt, welcome.html, welcome.txt, ...
//! maxRetries = 3                  # tries after the first; 5xx refusals are not retried
//! retryBackoffMs = 500            # then 1000, 2000, ... up to retryMaxBackoffMs
//! retryMaxBackoffMs = 30000
//! verifyOnStart = true
//!
//! [plugins.email-plugin.smtp]
//! host = "smtp.example.com"
//! port = 587                      # default: 465 if secure, else 587
//! secure = false                  # true: TLS from the start (SMTPS)
//! starttls = "required"           # opportunistic (default), required, never
//! username = "apikey"
//! password = "${SMTP_PASSWORD}"
//! timeoutMs = 10000               # connect and each SMTP command
//! ```
//!
//! Rendering needs no server:
//!
//! ```
//! # #[cfg(feature = "email")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ixp_plugins::email::{Email, EmailConfig};
//!
//! let dir = std::env::temp_dir().join(format!("ixp-email-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("welcome.subject.txt"), "Welcome, {{ name }}!")?;
//! std::fs::write(dir.join("welcome.html"), "<p>Hello <b>{{ name }}</b></p>")?;
//! std::fs::write(dir.join("welcome.txt"), "Hello {{ name }}")?;
//!
//! let email = Email::new(&EmailConfig {
//!     templates: Some(dir.clone()),
//!     default_from: Some("My App <noreply@example.com>".into()),
//!     ..EmailConfig::default()
//! })?;
//! let welcome = email.render("welcome", &serde_json::json!({ "name": "Ada & Bob" }))?;
//! assert_eq!(welcome.subject, "Welcome, Ada & Bob!");
//! assert_eq!(welcome.html.as_deref(), Some("<p>Hello <b>Ada &amp; Bob</b></p>"));
//! assert_eq!(welcome.text.as_deref(), Some("Hello Ada & Bob"));
//!
//! let error = email.render("welcome", &serde_json::json!({})).expect_err("no name");
//! assert!(error.to_string().contains("`name` is undefined"), "{error}");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! # #[cfg(not(feature = "email"))] fn main() {}
//! ```
//!
//! Other plugins depend on `email-plugin` and take the service by type, or emit events:
//!
//! ```no_run
//! # #[cfg(feature = "email")] mod example {
//! use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};
//! use ixp_plugins::email::{Email, EmailMessage};
//!
//! #[ixp_plugin(name = "signup-plugin", version = "1.0.0", dependencies = ["email-plugin"])]
//! pub struct SignupPlugin {
//!     email: std::sync::Arc<Email>,
//! }
//!
//! impl Plugin for SignupPlugin {
//!     type Config = NoConfig;
//!
//!     async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
//!         Ok(Self { email: ctx.services().get::<Email>("email")? })
//!     }
//!
//!     async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
//!         // By a call: waits for the server's answer (and the retries).
//!         let sent = self
//!             .email
//!             .send_template("welcome", "ada@example.com", &serde_json::json!({ "name": "Ada" }))
//!             .await?;
//!         ctx.logger().info(format_args!("welcome mail {}", sent.message_id));
//!         // By an event: fire and forget; the outcome comes on email.sent / email.failed.
//!         ctx.events()
//!             .publish(EmailMessage::new("ops@example.com", "signup-plugin started").text("ok"))
//!             .await;
//!         Ok(())
//!     }
//! }
//! # }
//! # fn main() {}
//! ```

mod config;
mod message;
mod service;
mod templates;

pub use config::{EmailConfig, SmtpConfig, StartTls, MAX_RETRIES_LIMIT};
pub use message::{
    EmailFailed, EmailMessage, EmailSent, Recipients, SentEmail, TemplateEmail, FAILED_TOPIC,
    SEND_TOPIC, SENT_TOPIC, TEMPLATE_TOPIC,
};
pub use service::{Email, EmailError, EmailStats};
pub use templates::{
    RenderedEmail, TemplateError, Templates, HTML_SUFFIX, SUBJECT_SUFFIX, TEXT_SUFFIX,
};

use std::sync::Arc;

use ixp_core::events::{Subscription, Typed};
use ixp_core::{ixp_plugin, BoxError, ConfigViolation, Plugin, PluginContext, PluginHealth};

/// The guide's EmailPlugin: registers the `email` service ([`Email`]) and handles the
/// `email.send` and `email.template` events.
#[ixp_plugin(
    name = "email-plugin",
    version = "0.1.0",
    description = "Email over SMTP with templates, registered as the `email` service",
    provides = ["email"],
    optional_dependencies = ["logging-plugin"],
    feature = "email",
    enabled_by_default = false,
)]
pub struct EmailPlugin {
    email: Arc<Email>,
    subscriptions: Vec<Subscription>,
}

impl std::fmt::Debug for EmailPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailPlugin")
            .field("email", &self.email)
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl Plugin for EmailPlugin {
    type Config = EmailConfig;

    fn validate_config(config: &EmailConfig) -> Result<(), Vec<ConfigViolation>> {
        config.violations()
    }

    async fn initialize(config: EmailConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        let email = Email::new(&config)?.with_events(ctx.events().clone());
        if config.verify_on_start {
            let latency = email.verify().await?;
            ctx.logger().info(format_args!(
                "SMTP server {} answered NOOP in {} ms",
                email.address(),
                latency.as_millis()
            ));
        } else {
            ctx.logger().info(format_args!(
                "SMTP server {} not checked (verifyOnStart = false)",
                email.address()
            ));
        }
        let email = Arc::new(email);
        ctx.services().register_arc("email", email.clone())?;
        Ok(Self {
            email,
            subscriptions: Vec::new(),
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        // A restart removed the service (see `register_arc_again`).
        ctx.services()
            .register_arc_again("email", self.email.clone())?;
        let email = self.email.clone();
        let send = ctx
            .events()
            .subscribe(move |message: Typed<EmailMessage>| {
                let email = email.clone();
                async move {
                    // The outcome is reported on email.sent / email.failed.
                    let _outcome = email.send(EmailMessage::clone(&message)).await;
                }
            })?;
        let email = self.email.clone();
        let template = ctx
            .events()
            .subscribe(move |request: Typed<TemplateEmail>| {
                let email = email.clone();
                async move {
                    let _outcome = email.send_template_email(&request).await;
                }
            })?;
        self.subscriptions = vec![send, template];
        ctx.logger().info(format_args!(
            "email plugin started: `email` service, handling {SEND_TOPIC} and {TEMPLATE_TOPIC}"
        ));
        Ok(())
    }

    async fn stop(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        self.subscriptions.clear();
        let stats = self.email.stats();
        ctx.logger().info(format_args!(
            "email plugin stopped ({} sent, {} failed, {} retries)",
            stats.sent, stats.failed, stats.retries
        ));
        Ok(())
    }

    async fn health(&self, _ctx: &PluginContext) -> PluginHealth {
        self.email.health().await
    }
}
