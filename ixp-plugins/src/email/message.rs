//! What the `email` service sends and the events it takes and emits.

use ixp_core::TypedEvent;
use serde::{Deserialize, Deserializer, Serialize};

/// The topic of [`EmailMessage`] events: a message to send.
pub const SEND_TOPIC: &str = "email.send";
/// The topic of [`TemplateEmail`] events: a template to render and send.
pub const TEMPLATE_TOPIC: &str = "email.template";
/// The topic of [`EmailSent`] events.
pub const SENT_TOPIC: &str = "email.sent";
/// The topic of [`EmailFailed`] events.
pub const FAILED_TOPIC: &str = "email.failed";

/// A list of addresses (`name@example.com` or `Name <name@example.com>`). In JSON or
/// TOML it is one string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Recipients(pub Vec<String>);

impl Recipients {
    /// No address.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Whether there is no address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Recipients {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(one) => Self(vec![one]),
            OneOrMany::Many(many) => Self(many),
        })
    }
}

impl From<&str> for Recipients {
    fn from(one: &str) -> Self {
        Self(vec![one.to_owned()])
    }
}

impl From<String> for Recipients {
    fn from(one: String) -> Self {
        Self(vec![one])
    }
}

impl From<Vec<String>> for Recipients {
    fn from(many: Vec<String>) -> Self {
        Self(many)
    }
}

impl From<&[&str]> for Recipients {
    fn from(many: &[&str]) -> Self {
        Self(many.iter().map(|s| (*s).to_owned()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Recipients {
    fn from(many: [&str; N]) -> Self {
        Self(many.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// A message to send; also the payload of `email.send`.
///
/// ```
/// # #[cfg(feature = "email")] {
/// use ixp_plugins::email::EmailMessage;
///
/// let message = EmailMessage::new("ada@example.com", "Hello")
///     .text("Hello Ada")
///     .html("<p>Hello <b>Ada</b></p>");
/// assert_eq!(message.to.as_slice(), ["ada@example.com"]);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EmailMessage {
    /// The sender; the plugin's `defaultFrom` when absent.
    pub from: Option<String>,
    /// The `To` recipients.
    pub to: Recipients,
    /// The `Cc` recipients.
    pub cc: Recipients,
    /// The `Bcc` recipients (in the envelope only, not in the sent headers).
    pub bcc: Recipients,
    /// The `Reply-To` address.
    pub reply_to: Option<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body (with `text`, the message is `multipart/alternative`).
    pub html: Option<String>,
}

impl EmailMessage {
    /// A message to `to` with `subject` and no body yet.
    pub fn new(to: impl Into<Recipients>, subject: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Sets the sender.
    pub fn from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// Sets the plain-text body.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets the HTML body.
    pub fn html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// Sets the `Cc` recipients.
    pub fn cc(mut self, cc: impl Into<Recipients>) -> Self {
        self.cc = cc.into();
        self
    }

    /// Sets the `Bcc` recipients.
    pub fn bcc(mut self, bcc: impl Into<Recipients>) -> Self {
        self.bcc = bcc.into();
        self
    }

    /// Sets the `Reply-To` address.
    pub fn reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.reply_to = Some(reply_to.into());
        self
    }
}

impl TypedEvent for EmailMessage {
    const TOPIC: &'static str = SEND_TOPIC;
}

/// A template to render and send; the payload of `email.template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TemplateEmail {
    /// The template name (see [`Templates`](super::Templates) for the files).
    pub template: String,
    /// The `To` recipients.
    pub to: Recipients,
    /// The template's variables (a JSON object).
    pub data: serde_json::Value,
    /// The sender; the plugin's `defaultFrom` when absent.
    pub from: Option<String>,
    /// The `Cc` recipients.
    pub cc: Recipients,
    /// The `Bcc` recipients.
    pub bcc: Recipients,
    /// The `Reply-To` address.
    pub reply_to: Option<String>,
}

impl TemplateEmail {
    /// Template `template` to `to` with `data` (any serde value; a JSON object usually).
    pub fn new(
        template: impl Into<String>,
        to: impl Into<Recipients>,
        data: impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            template: template.into(),
            to: to.into(),
            data: serde_json::to_value(data)?,
            ..Self::default()
        })
    }
}

impl TypedEvent for TemplateEmail {
    const TOPIC: &'static str = TEMPLATE_TOPIC;
}

/// What [`Email::send`](super::Email::send) returns for a message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentEmail {
    /// The `Message-ID` header of the message, e.g. `<...@host>`.
    pub message_id: String,
    /// Every envelope recipient (to, cc and bcc).
    pub recipients: Vec<String>,
    /// How many tries it took (1 if the first worked).
    pub attempts: u32,
    /// The server's reply to the message, e.g. `250 Message accepted for delivery`.
    pub response: String,
}

/// Emitted on `email.sent` after the server accepted a message (sent through the
/// service or an event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailSent {
    /// The `Message-ID` header.
    pub message_id: String,
    /// The `To` recipients.
    pub to: Vec<String>,
    /// Every envelope recipient (to, cc and bcc).
    pub recipients: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The template, if the message came from one.
    pub template: Option<String>,
    /// How many tries it took.
    pub attempts: u32,
}

impl TypedEvent for EmailSent {
    const TOPIC: &'static str = SENT_TOPIC;
}

/// Emitted on `email.failed` when a message could not be sent: after the last retry, at
/// once for a permanent refusal (5xx), or with `attempts = 0` when the message could not
/// be built (bad address, template error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailFailed {
    /// Why (the last error; never contains the password).
    pub error: String,
    /// The `To` recipients.
    pub to: Vec<String>,
    /// Every envelope recipient (to, cc and bcc).
    pub recipients: Vec<String>,
    /// The subject (empty when a template failed before giving one).
    pub subject: String,
    /// The template, if the message came from one.
    pub template: Option<String>,
    /// How many tries were made (0: the message was never submitted).
    pub attempts: u32,
    /// Whether the server refused for good (5xx) or the message itself is wrong, so
    /// that sending it again cannot work.
    pub permanent: bool,
}

impl TypedEvent for EmailFailed {
    const TOPIC: &'static str = FAILED_TOPIC;
}
