//! email-plugin against a real SMTP server: the aiosmtpd server the project's script
//! starts (`bash scripts/test-servers/start-smtp.sh`: 127.0.0.1:2525, AUTH user `ixp`
//! password `ixp-secret`, every message saved as `.eml` + `.json` in
//! `.test-servers/smtp-mail/`; `IXP_SMTP_PORT` and `IXP_SMTP_MAILDIR` override), and a
//! tiny SMTP server in this file that refuses every message (451 or 550) to prove the
//! retries. Mail is read back from the maildir.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ixp_core::events::Typed;
use ixp_core::{
    ixp_plugin, BoxError, Catalog, EventBus, HealthStatus, Host, NoConfig, Plugin, PluginContext,
    Secret, Subscription, TypedEvent,
};
use ixp_plugins::email::{
    Email, EmailConfig, EmailError, EmailFailed, EmailMessage, EmailPlugin, EmailSent, SmtpConfig,
    StartTls, TemplateEmail,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn smtp_port() -> u16 {
    std::env::var("IXP_SMTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(2525)
}

fn maildir() -> PathBuf {
    std::env::var_os("IXP_SMTP_MAILDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.test-servers/smtp-mail"))
}

fn config(port: u16) -> EmailConfig {
    EmailConfig {
        smtp: SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            timeout_ms: 5000,
            ..SmtpConfig::default()
        },
        default_from: Some("IXP Tests <sender@ixp.test>".into()),
        retry_backoff_ms: 100,
        ..EmailConfig::default()
    }
}

/// One message the server saved: the raw `.eml` and the envelope `.json`.
#[derive(Debug)]
struct Received {
    eml: String,
    envelope: Value,
}

impl Received {
    /// A top-level header, unfolded.
    fn header(&self, name: &str) -> Option<String> {
        let head = self.eml.split("\r\n\r\n").next().unwrap_or_default();
        let mut found: Option<String> = None;
        let mut in_wanted = false;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if in_wanted {
                    if let Some(value) = &mut found {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                }
                continue;
            }
            in_wanted = false;
            if let Some((key, value)) = line.split_once(':') {
                if key.eq_ignore_ascii_case(name) && found.is_none() {
                    found = Some(value.trim().to_owned());
                    in_wanted = true;
                }
            }
        }
        found
    }

    fn rcpt_tos(&self) -> Vec<String> {
        self.envelope["rcpt_tos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Waits (up to 10 s) for the message whose raw text contains `marker`.
async fn received(marker: &str) -> Received {
    let dir = maildir();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                    continue;
                }
                let Ok(eml) = std::fs::read_to_string(&path) else {
                    continue;
                };
                if eml.contains(marker) {
                    let envelope = std::fs::read_to_string(path.with_extension("json"))
                        .ok()
                        .and_then(|j| serde_json::from_str(&j).ok())
                        .unwrap_or(Value::Null);
                    return Received { eml, envelope };
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no mail with {marker:?} in {} (is `bash scripts/test-servers/start-smtp.sh` running?)",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn marker(label: &str) -> String {
    ixp_tests::unique_name(label).replace('_', "-")
}

async fn launch(config: EmailConfig) -> Host {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EmailPlugin>(config)
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    host
}

/// Every event of type `E` published on `bus` from now on.
fn collect<E: TypedEvent + Clone>(bus: &EventBus) -> (Subscription, UnboundedReceiver<E>) {
    let (tx, rx) = unbounded_channel();
    let subscription = bus
        .subscribe(move |event: Typed<E>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(E::clone(&event));
            }
        })
        .expect("subscribe");
    (subscription, rx)
}

/// The next event matching `wanted`, within 20 s.
async fn next<E>(rx: &mut UnboundedReceiver<E>, wanted: impl Fn(&E) -> bool) -> E {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the expected event did not come"),
        }
    }
}

fn templates_dir() -> PathBuf {
    let dir = ixp_tests::temp_dir("smtp-templates");
    for (file, text) in [
        ("welcome.subject.txt", "Welcome {{ name }} {{ marker }}"),
        (
            "welcome.html",
            "<html><body><p>Hello <b>{{ name }}</b>, your code is {{ code }}.</p></body></html>",
        ),
        ("welcome.txt", "Hello {{ name }}, your code is {{ code }}."),
    ] {
        std::fs::write(dir.join(file), text).expect("write template");
    }
    dir
}

#[tokio::test]
async fn a_plain_mail_arrives_with_subject_from_to_and_body() {
    let host = launch(config(smtp_port())).await;
    let email = host
        .services()
        .get::<Email>("email")
        .expect("email service");
    let subject = marker("ixp-plain");
    let sent = email
        .send(
            EmailMessage::new("Ada Lovelace <ada@ixp.test>", subject.clone())
                .cc("cc@ixp.test")
                .bcc("hidden@ixp.test")
                .reply_to("replies@ixp.test")
                .text("Hello Ada,\r\nthis is a plain message."),
        )
        .await
        .expect("sent");
    assert_eq!(sent.attempts, 1);
    assert!(sent.response.starts_with("250"), "{}", sent.response);
    assert!(sent.message_id.starts_with('<') && sent.message_id.ends_with('>'));

    let mail = received(&subject).await;
    assert_eq!(mail.header("Subject").as_deref(), Some(subject.as_str()));
    assert_eq!(
        mail.header("From").as_deref(),
        Some("\"IXP Tests\" <sender@ixp.test>")
    );
    assert_eq!(
        mail.header("To").as_deref(),
        Some("\"Ada Lovelace\" <ada@ixp.test>")
    );
    assert_eq!(mail.header("Cc").as_deref(), Some("cc@ixp.test"));
    assert_eq!(mail.header("Reply-To").as_deref(), Some("replies@ixp.test"));
    assert_eq!(mail.header("Bcc"), None, "Bcc stays in the envelope");
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(sent.message_id.as_str())
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{}",
        mail.eml
    );
    assert!(
        mail.eml.contains("Hello Ada,\r\nthis is a plain message."),
        "{}",
        mail.eml
    );
    assert_eq!(mail.envelope["mail_from"], "sender@ixp.test");
    let mut rcpt = mail.rcpt_tos();
    rcpt.sort();
    assert_eq!(rcpt, ["ada@ixp.test", "cc@ixp.test", "hidden@ixp.test"]);
    assert_eq!(mail.envelope["auth_login"], Value::Null);
    host.stop().await.expect("stop");
}

#[tokio::test]
async fn a_template_mail_arrives_with_html_and_text_parts() {
    let host = launch(EmailConfig {
        templates: Some(templates_dir()),
        ..config(smtp_port())
    })
    .await;
    let email = host
        .services()
        .get::<Email>("email")
        .expect("email service");
    let tag = marker("ixp-template");
    #[derive(serde::Serialize)]
    struct Welcome<'a> {
        name: &'a str,
        code: u32,
        marker: &'a str,
    }
    let sent = email
        .send_template(
            "welcome",
            "bob@ixp.test",
            &Welcome {
                name: "Bob",
                code: 4242,
                marker: &tag,
            },
        )
        .await
        .expect("sent");
    let mail = received(&tag).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some(format!("Welcome Bob {tag}").as_str())
    );
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(sent.message_id.as_str())
    );
    let content_type = mail.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let text_at = mail
        .eml
        .find("Content-Type: text/plain")
        .expect("text part");
    let html_at = mail.eml.find("Content-Type: text/html").expect("html part");
    assert!(
        text_at < html_at,
        "the text part comes first (least preferred)"
    );
    assert!(
        mail.eml[text_at..html_at].contains("Hello Bob, your code is 4242."),
        "{}",
        mail.eml
    );
    assert!(
        mail.eml[html_at..].contains("<p>Hello <b>Bob</b>, your code is 4242.</p>"),
        "{}",
        mail.eml
    );
    assert_eq!(mail.rcpt_tos(), ["bob@ixp.test"]);
    host.stop().await.expect("stop");
}

#[tokio::test]
async fn mail_by_events_is_sent_and_reported_on_email_sent() {
    let host = launch(EmailConfig {
        templates: Some(templates_dir()),
        ..config(smtp_port())
    })
    .await;
    let (_sent_sub, mut sent) = collect::<EmailSent>(host.events());

    let subject = marker("ixp-event");
    host.events()
        .publish(EmailMessage::new("dave@ixp.test", subject.clone()).html("<p>by event</p>"))
        .await;
    let event = next(&mut sent, |e: &EmailSent| e.subject == subject).await;
    assert_eq!(event.to, ["dave@ixp.test"]);
    assert_eq!(event.attempts, 1);
    assert_eq!(event.template, None);
    let mail = received(&subject).await;
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(event.message_id.as_str())
    );
    assert!(mail.eml.contains("<p>by event</p>"), "{}", mail.eml);

    // email.template with a JSON payload, as a bridge from another process sends it.
    let tag = marker("ixp-event-template");
    host.events()
        .emit(
            TemplateEmail::TOPIC,
            json!({ "template": "welcome", "to": "erin@ixp.test",
                    "data": { "name": "Erin", "code": 7, "marker": tag } }),
        )
        .await;
    let event = next(&mut sent, |e: &EmailSent| e.subject.contains(&tag)).await;
    assert_eq!(event.template.as_deref(), Some("welcome"));
    assert_eq!(event.subject, format!("Welcome Erin {tag}"));
    let mail = received(&tag).await;
    assert!(mail.eml.contains("Hello Erin, your code is 7."));
    host.stop().await.expect("stop");
}

#[tokio::test]
async fn auth_with_the_right_password_works_and_a_wrong_one_is_refused_without_leaking() {
    let mut good = config(smtp_port());
    good.smtp.username = Some("ixp".into());
    good.smtp.password = Some(Secret::new("ixp-secret"));
    good.smtp.starttls = StartTls::Never;
    let host = launch(good.clone()).await;
    let email = host
        .services()
        .get::<Email>("email")
        .expect("email service");
    let subject = marker("ixp-auth");
    email
        .send(EmailMessage::new("frank@ixp.test", subject.clone()).text("authenticated"))
        .await
        .expect("sent with AUTH");
    let mail = received(&subject).await;
    assert_eq!(mail.envelope["auth_login"], "ixp");
    host.stop().await.expect("stop");

    let mut bad = good;
    bad.smtp.password = Some(Secret::new("wrong-pass-do-not-leak"));
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EmailPlugin>(bad)
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("AUTH refused");
    let message = format!("{error} {error:?}");
    assert!(
        message.contains(&format!(
            "SMTP connection to 127.0.0.1:{} failed",
            smtp_port()
        )) && message.contains("535"),
        "{message}"
    );
    assert!(!message.contains("wrong-pass-do-not-leak"), "{message}");
}

/// A tiny SMTP server that greets, answers EHLO and NOOP, and gives `mail_reply` to
/// every `MAIL FROM` (recording when it came).
struct RefusingSmtp {
    port: u16,
    mail_from: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingSmtp {
    async fn start(mail_reply: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mail_from = Arc::new(Mutex::new(Vec::new()));
        let log = mail_from.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = Self::session(stream, mail_reply, log).await;
                });
            }
        });
        Self {
            port,
            mail_from,
            task,
        }
    }

    async fn session(
        stream: tokio::net::TcpStream,
        mail_reply: &str,
        log: Arc<Mutex<Vec<Instant>>>,
    ) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 refusing.ixp.test ESMTP\r\n").await?;
        while let Some(line) = lines.next_line().await? {
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let answer = match verb.as_str() {
                "EHLO" | "HELO" => "250 refusing.ixp.test",
                "NOOP" | "RSET" => "250 2.0.0 OK",
                "MAIL" => {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Instant::now());
                    mail_reply
                }
                "QUIT" => {
                    write.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 Command not recognized",
            };
            write.write_all(format!("{answer}\r\n").as_bytes()).await?;
        }
        Ok(())
    }

    fn mail_times(&self) -> Vec<Instant> {
        self.mail_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops accepting: later connections are refused.
    async fn stop(&self) {
        self.task.abort();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the listener did not close");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RefusingSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_transient_refusal_is_retried_with_backoff_then_reported_on_email_failed() {
    let server = RefusingSmtp::start("451 4.3.0 Try again later").await;
    let host = launch(EmailConfig {
        max_retries: 3,
        retry_backoff_ms: 100,
        retry_max_backoff_ms: 1000,
        ..config(server.port)
    })
    .await;

    let health = host.health().await;
    let plugin = &health.plugins["email-plugin"];
    assert_eq!(plugin.status, HealthStatus::Healthy, "{plugin:?}");
    assert!(plugin.details["latencyMs"].as_f64().is_some(), "{plugin:?}");

    let (_failed_sub, mut failed) = collect::<EmailFailed>(host.events());
    let subject = marker("ixp-retry");
    let started = Instant::now();
    host.events()
        .publish(EmailMessage::new("gina@ixp.test", subject.clone()).text("never arrives"))
        .await;
    let event = next(&mut failed, |e: &EmailFailed| e.subject == subject).await;
    let elapsed = started.elapsed();
    assert_eq!(event.attempts, 4, "maxRetries 3 = 4 tries: {event:?}");
    assert!(!event.permanent);
    assert_eq!(event.to, ["gina@ixp.test"]);
    assert!(
        event.error.contains(&format!("127.0.0.1:{}", server.port))
            && event.error.contains("451")
            && event.error.contains("after 4 tries"),
        "{}",
        event.error
    );
    let times = server.mail_times();
    assert_eq!(times.len(), 4, "the server saw every try and no more");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, backoff) in gaps.iter().zip([100, 200, 400]) {
        assert!(
            *gap >= Duration::from_millis(backoff),
            "gaps {gaps:?} must follow the 100/200/400 ms backoff"
        );
    }
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");

    let stats = host
        .services()
        .get::<Email>("email")
        .expect("email")
        .stats();
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 1, 3));
    let health = host.health().await;
    let plugin = &health.plugins["email-plugin"];
    assert_eq!(plugin.details["failed"], 1, "{plugin:?}");
    assert!(plugin.details.contains_key("lastSendError"), "{plugin:?}");

    // The server goes away: health turns unhealthy, naming it.
    server.stop().await;
    let health = host.health().await;
    let plugin = &health.plugins["email-plugin"];
    assert_eq!(plugin.status, HealthStatus::Unhealthy, "{plugin:?}");
    assert!(
        plugin
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(&format!(
                "SMTP connection to 127.0.0.1:{} failed",
                server.port
            )),
        "{plugin:?}"
    );
    host.stop().await.expect("stop");
}

#[tokio::test]
async fn a_permanent_refusal_is_not_retried() {
    let server = RefusingSmtp::start("550 5.7.1 Sender rejected").await;
    let host = launch(EmailConfig {
        max_retries: 5,
        retry_backoff_ms: 2000,
        ..config(server.port)
    })
    .await;
    let (_failed_sub, mut failed) = collect::<EmailFailed>(host.events());
    let email = host.services().get::<Email>("email").expect("email");
    let started = Instant::now();
    let error = email
        .send(EmailMessage::new("hank@ixp.test", "refused").text("x"))
        .await
        .expect_err("550");
    assert!(
        matches!(
            &error,
            EmailError::Send {
                attempts: 1,
                permanent: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("550"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no backoff wait"
    );
    let event = next(&mut failed, |e: &EmailFailed| e.subject == "refused").await;
    assert_eq!((event.attempts, event.permanent), (1, true));
    assert_eq!(server.mail_times().len(), 1);
    host.stop().await.expect("stop");
}

#[tokio::test]
async fn a_server_nobody_listens_on_fails_after_every_retry() {
    let port = ixp_tests::free_port();
    let email = Email::new(&EmailConfig {
        max_retries: 2,
        retry_backoff_ms: 50,
        verify_on_start: false,
        ..config(port)
    })
    .expect("email");
    let error = email
        .send(EmailMessage::new("ivy@ixp.test", "nobody").text("x"))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            &error,
            EmailError::Send {
                attempts: 3,
                permanent: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert_eq!(email.stats().retries, 2);
}

#[ixp_plugin(
    name = "welcome-mailer-plugin",
    version = "1.0.0",
    dependencies = ["email-plugin >=0.1"]
)]
struct WelcomeMailer {
    email: Arc<Email>,
}

/// The subject prefix the dependent plugin mails with; the test appends a count.
static MAILER_TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static MAILER_STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Plugin for WelcomeMailer {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            email: ctx.services().get::<Email>("email")?,
        })
    }
    async fn start(&mut self, _: &PluginContext) -> Result<(), BoxError> {
        let n = MAILER_STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let tag = MAILER_TAG.get().cloned().unwrap_or_default();
        self.email
            .send(EmailMessage::new("jo@ixp.test", format!("{tag} start {n}")).text("started"))
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_dependent_plugin_uses_the_service_across_a_restart_and_stop_cleans_up() {
    let tag = MAILER_TAG.get_or_init(|| marker("ixp-dependent")).clone();
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EmailPlugin>(config(smtp_port()))
        .plugin::<WelcomeMailer>(NoConfig {})
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    received(&format!("{tag} start 1")).await;

    // A restart of email-plugin restarts its dependent; the service and the event
    // handlers are back afterwards.
    host.restart("email-plugin").await.expect("restart");
    received(&format!("{tag} start 2")).await;
    let (_sent_sub, mut sent) = collect::<EmailSent>(host.events());
    let subject = format!("{tag} after restart");
    host.events()
        .publish(EmailMessage::new("jo@ixp.test", subject.clone()).text("again"))
        .await;
    next(&mut sent, |e: &EmailSent| e.subject == subject).await;

    host.stop().await.expect("clean stop");
    assert!(host.services().get::<Email>("email").is_err());
    assert!(
        host.events()
            .subscriptions()
            .iter()
            .all(|s| s.owner.as_deref() != Some("email-plugin")),
        "{:?}",
        host.events().subscriptions()
    );
}
