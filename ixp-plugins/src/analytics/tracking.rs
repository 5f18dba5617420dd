//! What a bus event becomes when it is tracked (the guide's `trackRequestStarted`,
//! `trackRequestCompleted`, `trackUserAction`, `trackError`).

use ixp_core::events::ErrorOccurred;
use ixp_core::http::{RequestCompleted, RequestStarted};
use ixp_core::{Event, TypedEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::TrackEvent;

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

fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The tracked form of a bus event. Known topics get the guide's names and properties;
/// any other topic (or a payload of another shape) becomes `<topic with _ for .>` with
/// the payload's JSON as properties.
pub(crate) fn track_event(event: &Event) -> TrackEvent {
    let topic = event.topic();
    let known = match topic {
        RequestStarted::TOPIC => event.decode::<RequestStarted>().ok().map(|e| TrackEvent {
            event: "request_started".into(),
            properties: object([
                ("requestId", e.id.into()),
                ("method", e.method.clone().into()),
                ("url", e.path.clone().into()),
            ]),
            ..TrackEvent::default()
        }),
        RequestCompleted::TOPIC => event.decode::<RequestCompleted>().ok().map(|e| TrackEvent {
            event: "request_completed".into(),
            properties: object([
                ("requestId", e.id.into()),
                ("method", e.method.clone().into()),
                ("url", e.path.clone().into()),
                ("statusCode", e.status.into()),
                ("duration", e.duration_ms.into()),
                ("responseSize", e.response_size.into()),
            ]),
            ..TrackEvent::default()
        }),
        ErrorOccurred::TOPIC => event.decode::<ErrorOccurred>().ok().map(|e| TrackEvent {
            event: "error_occurred".into(),
            properties: object([
                ("error", e.source.clone().into()),
                ("message", e.message.clone().into()),
                ("plugin", e.plugin.clone().into()),
                ("topic", e.topic.clone().into()),
            ]),
            ..TrackEvent::default()
        }),
        UserAction::TOPIC => event
            .decode::<UserAction>()
            .ok()
            .filter(|a| !a.action.is_empty())
            .map(|a| TrackEvent {
                event: a.action.clone(),
                user_id: a.user_id.clone(),
                session_id: a.session_id.clone(),
                properties: a.properties.clone(),
                ..TrackEvent::default()
            }),
        _ => None,
    };
    let mut tracked = known.unwrap_or_else(|| {
        let properties = match event.to_json() {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(other) => object([("value", other)]),
            Err(e) => object([("unserializable", e.to_string().into())]),
        };
        TrackEvent {
            event: topic.replace('.', "_"),
            properties,
            ..TrackEvent::default()
        }
    });
    tracked.topic = Some(topic.to_owned());
    tracked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_events_get_the_guides_names_and_properties() {
        let completed = track_event(&Event::new(
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
        assert_eq!(completed.event, "request_completed");
        assert_eq!(completed.topic.as_deref(), Some("request.completed"));
        assert_eq!(
            Value::Object(completed.properties),
            serde_json::json!({"requestId": 7, "method": "GET", "url": "/hello", "statusCode": 200, "duration": 1.5})
        );
    }

    #[test]
    fn user_actions_from_json_and_other_topics() {
        let action = track_event(&Event::new(
            "user.action",
            serde_json::json!({"action": "signup", "userId": "u1", "properties": {"plan": "pro"}}),
        ));
        assert_eq!(action.event, "signup");
        assert_eq!(action.user_id.as_deref(), Some("u1"));
        assert_eq!(action.properties["plan"], "pro");

        let odd = track_event(&Event::new("user.action", 42));
        assert_eq!(odd.event, "user_action");
        assert_eq!(odd.properties["value"], 42);

        let order = track_event(&Event::new("order.paid", serde_json::json!({"total": 3})));
        assert_eq!(order.event, "order_paid");
        assert_eq!(order.properties["total"], 3);
    }
}
