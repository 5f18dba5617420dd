//! What a bus event becomes when it is tracked (the guide's `trackRequestStarted`,
//! `trackRequestCompleted`, `trackUserAction`, `trackError`).

use ixp_core::events::ErrorOccurred;
use ixp_core::http::{RequestCompleted, RequestStarted};
use ixp_core::{Event, TypedEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::{Analytics, TrackError};
use super::wire::{self, Fields, Properties};

/// The payload of `user.action` (the guide's `UserActionEvent`): publish it with
/// [`EventBus::publish`](ixp_core::EventBus::publish), or emit the same JSON shape
/// (`{"action": "...", "userId": "...", "properties": {...}}`) on `user.action`.
///
/// ```
/// # async fn demo(events: &ixp_core::EventBus) {
/// use ixp_plugins::analytics::UserAction;
///
/// events
///     .publish(UserAction::new("signup").user("u-42").property("plan", "pro"))
///     .await;
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAction {
    /// What the user did; it becomes the tracked event's name.
    pub action: String,
    /// The user, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Free-form properties.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

impl UserAction {
    /// An action with no property.
    pub fn new(action: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            ..Self::default()
        }
    }

    /// Sets the user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the session.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Adds one property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

impl TypedEvent for UserAction {
    const TOPIC: &'static str = "user.action";
}

/// The properties of `request_started` and `request_completed`, borrowed from the
/// bus event. They are written by hand ([`Properties`]); the derived `Serialize` is the
/// reference the tests compare that with.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestProperties<'a> {
    request_id: u64,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_size: Option<u64>,
}

impl Properties for RequestProperties<'_> {
    /// By hand (the same bytes as the derived `Serialize`; tested): two of these are
    /// written for every request.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(br#"{"requestId":"#);
        out.extend_from_slice(number.format(self.request_id).as_bytes());
        out.extend_from_slice(br#","method":"#);
        wire::string(out, self.method)?;
        out.extend_from_slice(br#","url":"#);
        wire::string(out, self.url)?;
        if let Some(status) = self.status_code {
            out.extend_from_slice(br#","statusCode":"#);
            out.extend_from_slice(number.format(status).as_bytes());
        }
        if let Some(duration) = self.duration {
            out.extend_from_slice(br#","duration":"#);
            serde_json::to_writer(&mut *out, &duration)?;
        }
        if let Some(size) = self.response_size {
            out.extend_from_slice(br#","responseSize":"#);
            out.extend_from_slice(number.format(size).as_bytes());
        }
        out.push(b'}');
        Ok(())
    }
}

/// The properties of `error_occurred`, borrowed from the bus event.
#[derive(Serialize)]
struct ErrorProperties<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
}

impl Properties for ErrorProperties<'_> {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

/// An event named `name` from the bus topic `topic`.
fn from_topic<'a, P: Properties + ?Sized>(
    topic: &'a str,
    name: &'a str,
    properties: &'a P,
) -> Fields<'a, P> {
    Fields {
        event: name,
        user_id: None,
        session_id: None,
        topic: Some(topic),
        properties,
    }
}

/// Tracks a bus event. Known topics get the guide's names and properties; any other
/// topic (or a payload of another shape) becomes `<topic with _ for .>` with the
/// payload's JSON as properties. The known events are serialized straight from the
/// payload (no JSON tree in between: this runs for every request).
pub(crate) fn track(analytics: &Analytics, event: &Event) -> Result<(), TrackError> {
    let topic = event.topic();
    let tracked = match topic {
        RequestStarted::TOPIC => event.decode::<RequestStarted>().ok().map(|e| {
            let properties = RequestProperties {
                request_id: e.id,
                method: &e.method,
                url: &e.path,
                status_code: None,
                duration: None,
                response_size: None,
            };
            analytics.enqueue(&from_topic(topic, "request_started", &properties))
        }),
        RequestCompleted::TOPIC => event.decode::<RequestCompleted>().ok().map(|e| {
            let properties = RequestProperties {
                request_id: e.id,
                method: &e.method,
                url: &e.path,
                status_code: Some(e.status),
                duration: Some(e.duration_ms).filter(|ms| ms.is_finite()),
                response_size: e.response_size,
            };
            analytics.enqueue(&from_topic(topic, "request_completed", &properties))
        }),
        ErrorOccurred::TOPIC => event.decode::<ErrorOccurred>().ok().map(|e| {
            let properties = ErrorProperties {
                error: &e.source,
                message: &e.message,
                plugin: e.plugin.as_deref(),
                topic: e.topic.as_deref(),
            };
            analytics.enqueue(&from_topic(topic, "error_occurred", &properties))
        }),
        UserAction::TOPIC => event
            .decode::<UserAction>()
            .ok()
            .filter(|a| !a.action.is_empty())
            .map(|a| {
                analytics.enqueue(&Fields {
                    user_id: a.user_id.as_deref(),
                    session_id: a.session_id.as_deref(),
                    ..from_topic(topic, &a.action, &a.properties)
                })
            }),
        _ => None,
    };
    if let Some(result) = tracked {
        return result.map(drop);
    }
    let properties = match event.to_json() {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => Map::new(),
        Ok(other) => Map::from_iter([("value".to_owned(), other)]),
        Err(e) => Map::from_iter([("unserializable".to_owned(), e.to_string().into())]),
    };
    analytics
        .enqueue(&from_topic(topic, &topic.replace('.', "_"), &properties))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::AnalyticsConfig;

    /// What `track` buffered for `event`, as JSON.
    fn tracked(event: Event) -> Value {
        let analytics = Analytics::new(&AnalyticsConfig::default());
        analytics.open_intake();
        track(&analytics, &event).expect("tracked");
        let mut queued = analytics.queued();
        assert_eq!(queued.len(), 1);
        queued.remove(0)
    }

    #[test]
    fn request_events_get_the_guides_names_and_properties() {
        let completed = tracked(Event::new(
            "request.completed",
            RequestCompleted {
                id: 7,
                method: "GET".into(),
                path: "/hello".into(),
                status: 200,
                duration_ms: 1.5,
                response_size: None,
            },
        ));
        assert_eq!(completed["event"], "request_completed");
        assert_eq!(completed["topic"], "request.completed");
        assert_eq!(
            completed["properties"],
            serde_json::json!({"requestId": 7, "method": "GET", "url": "/hello", "statusCode": 200, "duration": 1.5})
        );
        let started = tracked(Event::new(
            "request.started",
            RequestStarted {
                id: 8,
                method: "POST".into(),
                path: "/a".into(),
            },
        ));
        assert_eq!(started["event"], "request_started");
        assert_eq!(
            started["properties"],
            serde_json::json!({"requestId": 8, "method": "POST", "url": "/a"})
        );
        // Every event carries an id and a millisecond RFC 3339 timestamp.
        let id = started["id"].as_str().expect("id");
        assert!(
            id.split_once('-').is_some_and(|(_, seq)| seq == "1"),
            "{id}"
        );
        let at = started["timestamp"].as_str().expect("timestamp");
        assert!(
            humantime::parse_rfc3339(at).is_ok() && at.len() == 24,
            "{at}"
        );
    }

    #[test]
    fn request_properties_by_hand_are_what_serde_json_writes() {
        let strings = ["GET", "/hello", "/a\"b\\c\td\u{1}", "/é/日本", ""];
        let numbers = [
            None,
            Some(0.0),
            Some(0.032949),
            Some(1e21),
            Some(12.5),
            Some(f64::NAN),
        ];
        for method in strings {
            for url in strings {
                for duration in numbers {
                    let properties = RequestProperties {
                        request_id: u64::MAX,
                        method,
                        url,
                        status_code: duration.map(|_| 503),
                        duration,
                        response_size: duration.map(|_| 0),
                    };
                    let mut by_hand = Vec::new();
                    properties.write_json(&mut by_hand).expect("written");
                    assert_eq!(
                        String::from_utf8(by_hand).expect("UTF-8"),
                        serde_json::to_string(&properties).expect("serialized")
                    );
                }
            }
        }
    }

    #[test]
    fn the_same_events_as_json_from_another_process() {
        let remote = tracked(Event::new(
            "request.completed",
            serde_json::json!({"id": 3, "method": "GET", "path": "/x", "status": 503,
                               "duration_ms": 2.0, "response_size": 12}),
        ));
        assert_eq!(remote["event"], "request_completed");
        assert_eq!(remote["properties"]["responseSize"], 12);
        let error = tracked(Event::new(
            "error.occurred",
            serde_json::json!({"source": "http", "message": "boom", "plugin": null, "topic": null}),
        ));
        assert_eq!(error["event"], "error_occurred");
        assert_eq!(
            error["properties"],
            serde_json::json!({"error": "http", "message": "boom"})
        );
    }

    #[test]
    fn user_actions_from_json_and_other_topics() {
        let action = tracked(Event::new(
            "user.action",
            serde_json::json!({"action": "signup", "userId": "u1", "properties": {"plan": "pro"}}),
        ));
        assert_eq!(action["event"], "signup");
        assert_eq!(action["userId"], "u1");
        assert!(action.get("sessionId").is_none());
        assert_eq!(action["properties"]["plan"], "pro");

        let odd = tracked(Event::new("user.action", 42));
        assert_eq!(odd["event"], "user_action");
        assert_eq!(odd["properties"]["value"], 42);

        let order = tracked(Event::new("order.paid", serde_json::json!({"total": 3})));
        assert_eq!(order["event"], "order_paid");
        assert_eq!(order["properties"]["total"], 3);
    }
}
