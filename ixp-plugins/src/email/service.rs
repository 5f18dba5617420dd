//! The `email` service: builds messages, submits them over SMTP with retries, and
//! reports each outcome on the event bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ixp_core::{EventBus, Logger, PluginHealth, Secret};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use super::config::{parse_mailbox, EmailConfig, StartTls};
use super::message::{EmailFailed, EmailMessage, EmailSent, Recipients, SentEmail, TemplateEmail};
use super::templates::{RenderedEmail, TemplateError, Templates};

/// Why a message was not sent, or the server not reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmailError {
    /// The server refused the message or could not be reached, on the last try.
    #[error("SMTP server {address}: {message} (after {attempts} {})", tries_word(.attempts))]
    Send {
        /// `host:port`.
        address: String,
        /// The last error (never contains the password).
        message: String,
        /// How many tries were made.
        attempts: u32,
        /// Whether the refusal was permanent (5xx), so it was not retried.
        permanent: bool,
    },
    /// The connection check (connect, EHLO, STARTTLS, AUTH, NOOP) failed: the server
    /// is unreachable, refuses the credentials, or does not answer.
    #[error("SMTP connection to {address} failed: {message}")]
    Connection {
        /// `host:port`.
        address: String,
        /// What went wrong (never contains the password).
        message: String,
    },
    /// An address of the message is not an email address.
    #[error("invalid address in `{field}`: {reason}")]
    Address {
        /// `from`, `to[0]`, `cc[1]`, `replyTo`, `defaultFrom`...
        field: String,
        /// Why.
        reason: String,
    },
    /// The message names no sender and there is no `defaultFrom`.
    #[error("no sender: the message has no `from` and the email-plugin has no `defaultFrom`")]
    NoSender,
    /// The message has no recipient at all.
    #[error("no recipient: `to`, `cc` and `bcc` are all empty")]
    NoRecipient,
    /// The message could not be assembled.
    #[error("the message cannot be built: {0}")]
    Message(String),
    /// A template was asked for, but `templates` is not configured.
    #[error("no email templates: set `templates` (a directory) in the email-plugin config")]
    NoTemplates,
    /// A template could not be found or rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// TLS could not be set up for the server.
    #[error("SMTP server {address}: TLS setup failed: {message}")]
    Tls {
        /// `host:port`.
        address: String,
        /// What went wrong.
        message: String,
    },
}

impl EmailError {
    /// Whether sending the same message again cannot work: a permanent (5xx) refusal,
    /// or a fault of the message itself (address, template).
    pub fn is_permanent(&self) -> bool {
        match self {
            EmailError::Send { permanent, .. } => *permanent,
            EmailError::Connection { .. } | EmailError::Tls { .. } => false,
            _ => true,
        }
    }

    /// How many tries were made (0 if the message never reached the server).
    pub fn attempts(&self) -> u32 {
        match self {
            EmailError::Send { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

/// Counters since start, shown in the plugin's health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailStats {
    /// Messages the server accepted.
    pub sent: u64,
    /// Messages given up on (after retries, permanent refusals, bad messages).
    pub failed: u64,
    /// Retries made (tries after a first failure).
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What `email.sent` / `email.failed` say about a message.
struct Summary {
    to: Vec<String>,
    recipients: Vec<String>,
    subject: String,
    template: Option<String>,
}

impl Summary {
    fn of(message: &EmailMessage, template: Option<&str>) -> Self {
        Self {
            to: message.to.0.clone(),
            recipients: [&message.to, &message.cc, &message.bcc]
                .iter()
                .flat_map(|r| r.0.iter().cloned())
                .collect(),
            subject: message.subject.clone(),
            template: template.map(str::to_owned),
        }
    }
}

/// The `email` service: `send`, `send_template`, and the connection check.
///
/// Every message sent through it, by a call or by an `email.send` / `email.template`
/// event, ends in one `email.sent` or one `email.failed` event (when the service has
/// the plugin's bus). A failed submission is tried again after `retryBackoffMs`,
/// doubling each time (at most `retryMaxBackoffMs`), up to `maxRetries` times;
/// permanent refusals (5xx: unknown mailbox, AUTH refused, message rejected) and faulty
/// messages are not retried. A message whose acceptance reply was lost may be
/// delivered twice by a retry (SMTP offers nothing better).
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    address: String,
    password: Option<Secret>,
    default_from: Option<Mailbox>,
    templates: Option<Templates>,
    config: EmailConfig,
    events: Option<EventBus>,
    logger: Logger,
    counters: Counters,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("server", &self.address)
            .field("default_from", &self.config.default_from)
            .field("templates", &self.templates.as_ref().map(Templates::dir))
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Builds the service from its config: the SMTP client (no connection yet), the
    /// sender and the templates (every file parsed, so syntax errors show now).
    pub fn new(config: &EmailConfig) -> Result<Self, EmailError> {
        let smtp = &config.smtp;
        let address = smtp.address();
        let tls_error = |e: lettre::transport::smtp::Error| EmailError::Tls {
            address: address.clone(),
            message: e.to_string(),
        };
        let tls = if smtp.secure {
            Tls::Wrapper(TlsParameters::new(smtp.host.clone()).map_err(tls_error)?)
        } else {
            match smtp.starttls {
                StartTls::Never => Tls::None,
                StartTls::Opportunistic => {
                    Tls::Opportunistic(TlsParameters::new(smtp.host.clone()).map_err(tls_error)?)
                }
                StartTls::Required => {
                    Tls::Required(TlsParameters::new(smtp.host.clone()).map_err(tls_error)?)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.effective_port())
            .timeout(Some(smtp.timeout()))
            .tls(tls);
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let default_from = match &config.default_from {
            Some(from) => Some(parse_mailbox(from).map_err(|reason| EmailError::Address {
                field: "defaultFrom".into(),
                reason,
            })?),
            None => None,
        };
        let templates = config.templates.as_ref().map(Templates::open).transpose()?;
        Ok(Self {
            transport: builder.build(),
            address,
            password: smtp.password.clone(),
            default_from,
            templates,
            config: config.clone(),
            events: None,
            logger: Logger::new("email-plugin"),
            counters: Counters::default(),
        })
    }

    /// The same service, reporting `email.sent` and `email.failed` on `events`.
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = Some(events);
        self
    }

    /// The server, as `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The templates, if `templates` is configured.
    pub fn templates(&self) -> Option<&Templates> {
        self.templates.as_ref()
    }

    /// Connects, greets (EHLO, STARTTLS and AUTH as configured), sends `NOOP` and quits;
    /// returns how long it took.
    pub async fn verify(&self) -> Result<Duration, EmailError> {
        let started = Instant::now();
        match self.transport.test_connection().await {
            Ok(true) => Ok(started.elapsed()),
            Ok(false) => Err(EmailError::Connection {
                address: self.address.clone(),
                message: "the server did not answer NOOP".into(),
            }),
            Err(e) => Err(EmailError::Connection {
                address: self.address.clone(),
                message: self.scrub(&e.to_string()),
            }),
        }
    }

    /// Renders template `name` with `context` (see [`Templates`] for the files).
    pub fn render<C: Serialize + ?Sized>(
        &self,
        name: &str,
        context: &C,
    ) -> Result<RenderedEmail, EmailError> {
        let templates = self.templates.as_ref().ok_or(EmailError::NoTemplates)?;
        Ok(templates.render(name, context)?)
    }

    /// Sends `message`, retrying as configured. Returns the `Message-ID` and the tries
    /// it took; reports `email.sent` or `email.failed`.
    pub async fn send(&self, message: EmailMessage) -> Result<SentEmail, EmailError> {
        self.deliver(message, None).await
    }

    /// Renders template `name` with `context` and sends it to `to` from `defaultFrom`.
    pub async fn send_template<C: Serialize + ?Sized>(
        &self,
        name: &str,
        to: impl Into<Recipients>,
        context: &C,
    ) -> Result<SentEmail, EmailError> {
        let message = EmailMessage {
            to: to.into(),
            ..EmailMessage::default()
        };
        self.send_rendered(name, message, context).await
    }

    /// Sends a [`TemplateEmail`] (the `email.template` payload): template, recipients,
    /// sender and data.
    pub async fn send_template_email(
        &self,
        request: &TemplateEmail,
    ) -> Result<SentEmail, EmailError> {
        let message = EmailMessage {
            from: request.from.clone(),
            to: request.to.clone(),
            cc: request.cc.clone(),
            bcc: request.bcc.clone(),
            reply_to: request.reply_to.clone(),
            ..EmailMessage::default()
        };
        self.send_rendered(&request.template, message, &request.data)
            .await
    }

    /// Counters since start.
    pub fn stats(&self) -> EmailStats {
        EmailStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
        }
    }

    /// The connection check ([`verify`](Self::verify)) with its latency, and the
    /// counters: healthy if the server answered, unhealthy otherwise.
    pub async fn health(&self) -> PluginHealth {
        let started = Instant::now();
        let check = self.verify().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let health = match check {
            Ok(_) => PluginHealth::healthy()
                .with_message(format!("SMTP connection to {} is working", self.address)),
            Err(e) => PluginHealth::unhealthy(e.to_string()),
        };
        let stats = self.stats();
        let mut health = health
            .with_detail("server", self.address.clone())
            .with_detail("latencyMs", latency_ms)
            .with_detail("sent", stats.sent)
            .with_detail("failed", stats.failed)
            .with_detail("retries", stats.retries);
        if let Some(error) = self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            health = health.with_detail("lastSendError", error);
        }
        health
    }

    async fn send_rendered<C: Serialize + ?Sized>(
        &self,
        name: &str,
        mut message: EmailMessage,
        context: &C,
    ) -> Result<SentEmail, EmailError> {
        match self.render(name, context) {
            Ok(rendered) => {
                message.subject = rendered.subject;
                message.html = rendered.html;
                message.text = rendered.text;
                self.deliver(message, Some(name)).await
            }
            Err(e) => {
                self.report_failure(&Summary::of(&message, Some(name)), &e)
                    .await;
                Err(e)
            }
        }
    }

    async fn deliver(
        &self,
        message: EmailMessage,
        template: Option<&str>,
    ) -> Result<SentEmail, EmailError> {
        let summary = Summary::of(&message, template);
        let built = match self.build(&message) {
            Ok(built) => built,
            Err(e) => {
                self.report_failure(&summary, &e).await;
                return Err(e);
            }
        };
        let message_id = built
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .to_owned();
        let tries = self.config.max_retries.saturating_add(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transport.send(built.clone()).await {
                Ok(response) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    let reply = std::iter::once(response.code().to_string())
                        .chain(response.message().map(str::to_owned))
                        .collect::<Vec<_>>()
                        .join(" ");
                    self.logger.debug(format_args!(
                        "sent {message_id} to {:?} (try {attempt}): {reply}",
                        summary.recipients
                    ));
                    if let Some(events) = &self.events {
                        events
                            .publish(EmailSent {
                                message_id: message_id.clone(),
                                to: summary.to.clone(),
                                recipients: summary.recipients.clone(),
                                subject: summary.subject.clone(),
                                template: summary.template.clone(),
                                attempts: attempt,
                            })
                            .await;
                    }
                    return Ok(SentEmail {
                        message_id,
                        recipients: summary.recipients,
                        attempts: attempt,
                        response: reply,
                    });
                }
                Err(e) => {
                    let permanent = e.is_permanent() || e.is_client();
                    let reason = self.scrub(&e.to_string());
                    if permanent || attempt >= tries {
                        let error = EmailError::Send {
                            address: self.address.clone(),
                            message: reason,
                            attempts: attempt,
                            permanent,
                        };
                        self.report_failure(&summary, &error).await;
                        return Err(error);
                    }
                    let wait = self.config.backoff(attempt);
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    self.logger.warn(format_args!(
                        "sending {message_id} via {} failed (try {attempt} of {tries}): {reason}; retrying in {} ms",
                        self.address,
                        wait.as_millis()
                    ));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Counts, logs and publishes a message given up on.
    async fn report_failure(&self, summary: &Summary, error: &EmailError) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        let text = error.to_string();
        *self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(text.clone());
        self.logger.error(format_args!(
            "email to {:?} (subject {:?}) not sent: {text}",
            summary.to, summary.subject
        ));
        if let Some(events) = &self.events {
            events
                .publish(EmailFailed {
                    error: text,
                    to: summary.to.clone(),
                    recipients: summary.recipients.clone(),
                    subject: summary.subject.clone(),
                    template: summary.template.clone(),
                    attempts: error.attempts(),
                    permanent: error.is_permanent(),
                })
                .await;
        }
    }

    /// Assembles the MIME message: text, HTML, or both as `multipart/alternative`.
    fn build(&self, message: &EmailMessage) -> Result<Message, EmailError> {
        let from = match &message.from {
            Some(from) => mailbox("from", from)?,
            None => self.default_from.clone().ok_or(EmailError::NoSender)?,
        };
        if message.to.is_empty() && message.cc.is_empty() && message.bcc.is_empty() {
            return Err(EmailError::NoRecipient);
        }
        let subject: String = message
            .subject
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        let mut builder = Message::builder()
            .from(from)
            .subject(subject)
            .message_id(None);
        for (i, to) in message.to.as_slice().iter().enumerate() {
            builder = builder.to(mailbox(&format!("to[{i}]"), to)?);
        }
        for (i, cc) in message.cc.as_slice().iter().enumerate() {
            builder = builder.cc(mailbox(&format!("cc[{i}]"), cc)?);
        }
        for (i, bcc) in message.bcc.as_slice().iter().enumerate() {
            builder = builder.bcc(mailbox(&format!("bcc[{i}]"), bcc)?);
        }
        if let Some(reply_to) = &message.reply_to {
            builder = builder.reply_to(mailbox("replyTo", reply_to)?);
        }
        let built = match (&message.text, &message.html) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            )),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
            (Some(text), None) => builder.singlepart(SinglePart::plain(text.clone())),
            (None, None) => builder.singlepart(SinglePart::plain(String::new())),
        };
        built.map_err(|e| EmailError::Message(e.to_string()))
    }

    /// `text` with the password, should a server ever echo it, masked.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(password) if !password.is_empty() => {
                text.replace(password.expose(), ixp_core::secret::MASK)
            }
            _ => text.to_owned(),
        }
    }
}

fn tries_word(attempts: &u32) -> &'static str {
    if *attempts == 1 {
        "try"
    } else {
        "tries"
    }
}

fn mailbox(field: &str, text: &str) -> Result<Mailbox, EmailError> {
    parse_mailbox(text).map_err(|reason| EmailError::Address {
        field: field.to_owned(),
        reason,
    })
}
