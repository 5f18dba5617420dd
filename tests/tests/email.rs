//! email-plugin without an SMTP server: config checks (the guide's config, each bad
//! field with its path, the password never shown), template rendering and its errors,
//! messages refused before any connection (reported on `email.failed`), and an
//! unreachable server at start and in health.
//! The SMTP round trips are in `service_smtp.rs` (service-backed suite).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ixp_core::events::Typed;
use ixp_core::{Catalog, EventBus, HealthStatus, Host, Secret};
use ixp_plugins::email::{
    Email, EmailConfig, EmailError, EmailFailed, EmailMessage, EmailPlugin, SmtpConfig,
    TemplateError, Templates,
};
use serde_json::json;

fn problems(toml: &str) -> String {
    ixp_tests::check_problems::<EmailPlugin>(toml)
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write template");
}

/// A templates directory with good templates and a few incomplete ones.
fn templates_dir() -> PathBuf {
    let dir = ixp_tests::temp_dir("email-templates");
    write(
        &dir,
        "welcome.subject.txt",
        "  Welcome,\n  {{ user.name }}!  \n",
    );
    write(
        &dir,
        "welcome.html",
        "<p>Hello <b>{{ user.name }}</b>, you have {{ count }} new message{{ '' if count == 1 else 's' }}.</p>\n",
    );
    write(
        &dir,
        "welcome.txt",
        "Hello {{ user.name }}, you have {{ count }} new messages.\n",
    );
    write(&dir, "text-only.subject.txt", "Plain {{ n }}");
    write(&dir, "text-only.txt", "just text {{ n }}");
    write(&dir, "html-only.subject.txt", "Rich");
    write(&dir, "html-only.html", "<i>{{ n }}</i>");
    write(&dir, "no-subject.html", "<p>body</p>");
    write(&dir, "no-body.subject.txt", "subject only");
    write(
        &dir,
        "layout/base.html",
        "<html><body>{% block content %}{% endblock %}</body></html>",
    );
    write(&dir, "auth/reset.subject.txt", "Reset your password");
    write(
        &dir,
        "auth/reset.html",
        "{% extends \"layout/base.html\" %}{% block content %}<a href=\"{{ link }}\">reset</a>{% endblock %}",
    );
    write(&dir, "broken-include.subject.txt", "Broken");
    write(
        &dir,
        "broken-include.txt",
        "line one\n{% include \"partials/missing.txt\" %}",
    );
    dir
}

#[test]
fn the_guide_config_is_accepted() {
    let dir = templates_dir();
    let toml = format!(
        r#"[plugins.email-plugin]
defaultFrom = "My App <noreply@example.com>"
templates = "{}"
maxRetries = 3
retryBackoffMs = 500
retryMaxBackoffMs = 30000
verifyOnStart = false

[plugins.email-plugin.smtp]
host = "smtp.test.com"
port = 587
secure = false
starttls = "required"
username = "test@test.com"
password = "password"
timeoutMs = 5000
"#,
        dir.display()
    );
    assert_eq!(problems(&toml), "");
    // The guide's minimal test config (no templates, no credentials) is valid too.
    assert_eq!(
        problems(
            "[plugins.email-plugin]\nsmtp = { host = \"localhost\", port = 1025, secure = false }\n"
        ),
        ""
    );
}

#[test]
fn each_bad_field_is_reported_with_its_path() {
    let report = problems(
        r#"[plugins.email-plugin]
defaultFrom = "not an address"
templates = "/definitely/not/a/dir/ixp-email"
maxRetries = 11
retryBackoffMs = 0
retryMaxBackoffMs = 0
verifyonstart = true

[plugins.email-plugin.smtp]
host = "smtp://mail.example.com"
port = 0
password = "hunter2-do-not-show"
timeoutMs = 0
"#,
    );
    for expected in [
        "plugins.email-plugin.defaultFrom: `not an address` is not an email address (expected `name@example.com` or `Name <name@example.com>`)",
        "plugins.email-plugin.templates: the directory `/definitely/not/a/dir/ixp-email` does not exist",
        "plugins.email-plugin.maxRetries: must be at most 10",
        "plugins.email-plugin.retryBackoffMs: must be at least 1 when maxRetries is above 0",
        "plugins.email-plugin.smtp.host: `smtp://mail.example.com` is not a host name or IP address",
        "plugins.email-plugin.smtp.port: must not be 0",
        "plugins.email-plugin.smtp.password: is set but smtp.username is not; set both for AUTH, or neither",
        "plugins.email-plugin.smtp.timeoutMs: must be at least 1",
        "plugins.email-plugin.verifyonstart: unknown key; did you mean `verifyOnStart`?",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }
    assert!(!report.contains("hunter2-do-not-show"), "{report}");

    let report = problems(
        "[plugins.email-plugin]\nsmtp = { username = \"ixp\", port = \"x\", secure = \"yes\", starttls = \"always\", hostname = \"h\" }\n",
    );
    for expected in [
        "plugins.email-plugin.smtp.username: is set but smtp.password is not",
        "plugins.email-plugin.smtp.port: invalid type: string \"x\"",
        "plugins.email-plugin.smtp.secure: invalid type: string \"yes\", expected a boolean",
        "plugins.email-plugin.smtp.starttls: unknown variant `always`, expected one of `opportunistic`, `required`, `never`",
        "plugins.email-plugin.smtp.hostname: unknown key",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }

    let file = ixp_tests::temp_dir("email-not-a-dir").join("file.txt");
    std::fs::write(&file, "x").expect("write");
    let report = problems(&format!(
        "[plugins.email-plugin]\ntemplates = \"{}\"\nretryBackoffMs = 900\nretryMaxBackoffMs = 100\nsmtp = {{ host = \"\", username = \"ixp\", password = \"\" }}\n",
        file.display()
    ));
    for expected in [
        format!(
            "plugins.email-plugin.templates: `{}` is not a directory",
            file.display()
        ),
        "plugins.email-plugin.retryMaxBackoffMs: must be at least retryBackoffMs (900)".into(),
        "plugins.email-plugin.smtp.host: must not be empty".into(),
        "plugins.email-plugin.smtp.password: must not be empty".into(),
    ] {
        assert!(
            report.contains(&expected),
            "missing {expected:?} in\n{report}"
        );
    }
}

#[test]
fn the_password_never_shows_in_debug_or_errors() {
    let config = EmailConfig {
        smtp: SmtpConfig {
            username: Some("ixp".into()),
            password: Some(Secret::new("smtp-pass-do-not-leak")),
            ..SmtpConfig::default()
        },
        ..EmailConfig::default()
    };
    let email = Email::new(&config).expect("builds without connecting");
    let shown = format!(
        "{config:?} {email:?} {}",
        serde_json::to_string(&config).expect("json")
    );
    assert!(!shown.contains("smtp-pass-do-not-leak"), "{shown}");
    assert!(shown.contains("********"), "{shown}");
}

fn email_with_templates(dir: &Path) -> Email {
    Email::new(&EmailConfig {
        templates: Some(dir.to_path_buf()),
        default_from: Some("App <noreply@example.com>".into()),
        ..EmailConfig::default()
    })
    .expect("email service")
}

#[test]
fn templates_render_subject_html_and_text() {
    let dir = templates_dir();
    let email = email_with_templates(&dir);
    let welcome = email
        .render(
            "welcome",
            &json!({ "user": { "name": "Ada <& Bob>" }, "count": 1 }),
        )
        .expect("renders");
    assert_eq!(welcome.subject, "Welcome, Ada <& Bob>!");
    assert_eq!(
        welcome.html.as_deref(),
        Some("<p>Hello <b>Ada &lt;&amp; Bob&gt;</b>, you have 1 new message.</p>"),
        "HTML is escaped"
    );
    assert_eq!(
        welcome.text.as_deref(),
        Some("Hello Ada <& Bob>, you have 1 new messages."),
        "text is not escaped"
    );

    #[derive(serde::Serialize)]
    struct Count {
        n: u32,
    }
    let text_only = email
        .render("text-only", &Count { n: 7 })
        .expect("struct context");
    assert_eq!(
        (
            text_only.subject.as_str(),
            text_only.html,
            text_only.text.as_deref()
        ),
        ("Plain 7", None, Some("just text 7"))
    );
    let html_only = email.render("html-only", &json!({ "n": 2 })).expect("html");
    assert_eq!(
        (html_only.html.as_deref(), html_only.text),
        (Some("<i>2</i>"), None)
    );
    let reset = email
        .render(
            "auth/reset",
            &json!({ "link": "https://example.com/r?a=1&b=2" }),
        )
        .expect("nested template with extends");
    // minijinja's HTML escaping also writes `/` as `&#x2f;` (the same URL to a browser).
    assert_eq!(
        reset.html.as_deref(),
        Some("<html><body><a href=\"https:&#x2f;&#x2f;example.com&#x2f;r?a=1&amp;b=2\">reset</a></body></html>")
    );
}

#[test]
fn a_missing_variable_names_the_template_file_line_and_variable() {
    let dir = templates_dir();
    let email = email_with_templates(&dir);
    let error = email
        .render("welcome", &json!({ "user": { "name": "Ada" } }))
        .expect_err("count is missing");
    let message = error.to_string();
    assert!(
        matches!(
            &error,
            EmailError::Template(TemplateError::Render { name, line: Some(1), .. }) if name == "welcome"
        ),
        "{error:?}"
    );
    for expected in [
        "email template `welcome`",
        "`count` is undefined",
        "welcome.html line 1",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in {message}"
        );
    }
    // A missing nested variable names the whole expression.
    let message = email
        .render("welcome", &json!({ "user": {}, "count": 2 }))
        .expect_err("user.name is missing")
        .to_string();
    assert!(
        message.contains("`user.name` is undefined") && message.contains("welcome.subject.txt"),
        "{message}"
    );
    // A context that is no map at all: every variable is missing.
    let message = email
        .render("text-only", &"just a string")
        .expect_err("n is missing")
        .to_string();
    assert!(message.contains("`n` is undefined"), "{message}");
}

#[test]
fn a_missing_template_or_part_names_the_files() {
    let dir = templates_dir();
    let email = email_with_templates(&dir);
    let context = json!({});
    let cases = [
        (
            "nope",
            format!(
                "email template `nope` not found: none of `nope.subject.txt`, `nope.html`, `nope.txt` is in `{}`",
                dir.display()
            ),
        ),
        (
            "no-subject",
            format!(
                "email template `no-subject`: the subject file `no-subject.subject.txt` is missing in `{}`",
                dir.display()
            ),
        ),
        (
            "no-body",
            format!(
                "email template `no-body` has no body: neither `no-body.html` nor `no-body.txt` is in `{}`",
                dir.display()
            ),
        ),
        (
            "../etc/passwd",
            "`../etc/passwd` is not an email template name (letters, digits, `-` and `_`, with `/` between folders)".into(),
        ),
    ];
    for (name, expected) in cases {
        let message = email
            .render(name, &context)
            .expect_err("must fail")
            .to_string();
        assert_eq!(message, expected);
    }
    let message = email
        .render("broken-include", &context)
        .expect_err("include of a missing file")
        .to_string();
    assert!(
        message.contains("partials/missing.txt") && message.contains("broken-include.txt line 2"),
        "{message}"
    );

    let no_templates = Email::new(&EmailConfig::default()).expect("email");
    let message = no_templates
        .render("welcome", &context)
        .expect_err("no templates dir")
        .to_string();
    assert_eq!(
        message,
        "no email templates: set `templates` (a directory) in the email-plugin config"
    );
}

#[test]
fn a_syntax_error_fails_at_open_with_file_and_line() {
    let dir = ixp_tests::temp_dir("email-syntax");
    write(&dir, "ok.subject.txt", "fine");
    write(&dir, "ok.txt", "fine");
    write(&dir, "bad.subject.txt", "Hi");
    write(&dir, "bad.html", "<p>\n{% if user %}\n<b>{{ user }</b>\n");
    let error = Templates::open(&dir).expect_err("syntax error");
    let message = error.to_string();
    assert!(
        message.starts_with("email template `bad`: syntax error")
            && message.contains("(in bad.html line 3)"),
        "{message}"
    );
    let missing = Templates::open(dir.join("absent"))
        .expect_err("no dir")
        .to_string();
    assert!(missing.ends_with("does not exist"), "{missing}");
}

async fn failed_events(
    bus: &EventBus,
) -> (
    ixp_core::Subscription,
    tokio::sync::mpsc::UnboundedReceiver<EmailFailed>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let subscription = bus
        .subscribe(move |failed: Typed<EmailFailed>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(EmailFailed::clone(&failed));
            }
        })
        .expect("subscribe");
    (subscription, rx)
}

async fn next_failed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<EmailFailed>) -> EmailFailed {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("email.failed in time")
        .expect("email.failed")
}

#[tokio::test]
async fn faulty_messages_fail_before_any_connection_and_are_reported() {
    let bus = EventBus::new();
    let (_subscription, mut failed) = failed_events(&bus).await;
    let dir = templates_dir();
    let port = ixp_tests::free_port();
    let email = Email::new(&EmailConfig {
        smtp: SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            ..SmtpConfig::default()
        },
        templates: Some(dir),
        default_from: None,
        max_retries: 10,
        retry_backoff_ms: 60_000,
        retry_max_backoff_ms: 60_000,
        ..EmailConfig::default()
    })
    .expect("email")
    .with_events(bus.clone());

    let started = std::time::Instant::now();
    let error = email
        .send(EmailMessage::new("not-an-address", "Hi").from("a@example.com"))
        .await
        .expect_err("bad address");
    assert!(
        matches!(&error, EmailError::Address { field, .. } if field == "to[0]"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("invalid address in `to[0]`: `not-an-address` is not an email address"),
        "{error}"
    );
    let event = next_failed(&mut failed).await;
    assert_eq!(
        (
            event.to.as_slice(),
            event.subject.as_str(),
            event.attempts,
            event.permanent
        ),
        (["not-an-address".to_owned()].as_slice(), "Hi", 0, true)
    );

    let error = email
        .send(EmailMessage::new("ada@example.com", "Hi"))
        .await
        .expect_err("no sender");
    assert!(matches!(error, EmailError::NoSender), "{error:?}");
    assert!(next_failed(&mut failed)
        .await
        .error
        .contains("no `defaultFrom`"));

    let error = email
        .send(EmailMessage::new(Vec::<String>::new(), "Hi").from("a@example.com"))
        .await
        .expect_err("no recipient");
    assert!(matches!(error, EmailError::NoRecipient), "{error:?}");
    next_failed(&mut failed).await;

    let error = email
        .send_template(
            "welcome",
            "ada@example.com",
            &json!({ "user": { "name": "Ada" } }),
        )
        .await
        .expect_err("count is missing");
    assert!(error.is_permanent() && error.attempts() == 0, "{error:?}");
    let event = next_failed(&mut failed).await;
    assert_eq!(event.template.as_deref(), Some("welcome"));
    assert!(
        event.error.contains("`count` is undefined"),
        "{}",
        event.error
    );

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retry and no connection for a faulty message"
    );
    let stats = email.stats();
    assert_eq!((stats.sent, stats.failed, stats.retries), (0, 4, 0));
}

#[tokio::test]
async fn an_unreachable_server_fails_initialization_naming_host_and_port_not_the_password() {
    let port = ixp_tests::free_port();
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EmailPlugin>(EmailConfig {
            smtp: SmtpConfig {
                host: "127.0.0.1".into(),
                port: Some(port),
                username: Some("ixp".into()),
                password: Some(Secret::new("smtp-pass-do-not-leak")),
                timeout_ms: 2000,
                ..SmtpConfig::default()
            },
            ..EmailConfig::default()
        })
        .build()
        .expect("plan");
    let error = host.launch().await.expect_err("nothing listens there");
    let message = format!("{error} {error:?}");
    assert!(message.contains("email-plugin"), "{message}");
    assert!(
        message.contains(&format!("SMTP connection to 127.0.0.1:{port} failed")),
        "{message}"
    );
    assert!(!message.contains("smtp-pass-do-not-leak"), "{message}");
}

#[tokio::test]
async fn without_the_start_check_the_plugin_runs_and_health_says_unreachable() {
    let port = ixp_tests::free_port();
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<EmailPlugin>(EmailConfig {
            smtp: SmtpConfig {
                host: "127.0.0.1".into(),
                port: Some(port),
                timeout_ms: 2000,
                ..SmtpConfig::default()
            },
            verify_on_start: false,
            ..EmailConfig::default()
        })
        .build()
        .expect("plan");
    host.launch().await.expect("launch without a server");
    let email = host
        .services()
        .get::<Email>("email")
        .expect("email service");
    assert_eq!(email.address(), format!("127.0.0.1:{port}"));
    let health = host.health().await;
    let plugin = &health.plugins["email-plugin"];
    assert_eq!(plugin.status, HealthStatus::Unhealthy, "{plugin:?}");
    let message = plugin.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("SMTP connection to 127.0.0.1:{port} failed")),
        "{message}"
    );
    assert!(plugin.details.contains_key("latencyMs"), "{plugin:?}");
    host.stop().await.expect("stop");
    assert!(host.services().get::<Email>("email").is_err());
}
