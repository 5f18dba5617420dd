//! The JSON of one tracked event as it is sent (the shape in the [module docs](super)).
//!
//! The envelope is written by hand: its keys are constants, the id is a hex prefix and a
//! number, the timestamp's date and time change once a second. Strings that need no
//! escape are copied as they are; the others and the properties go through
//! `serde_json`. The bytes are the same as `serde_json` would write for the same
//! fields (tested below): this runs for every request while analytics is on.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The fields of an event to track, borrowed: what [`write_event`] serializes
/// (straight from the caller's data: no intermediate JSON tree).
pub(crate) struct Fields<'a, P: ?Sized> {
    pub(crate) event: &'a str,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) session_id: Option<&'a str>,
    pub(crate) topic: Option<&'a str>,
    pub(crate) properties: &'a P,
}

/// The properties of a tracked event: writes itself as a JSON object.
pub(crate) trait Properties {
    /// Appends the JSON object to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
}

impl Properties for Map<String, Value> {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

/// An event's id: `<instance prefix>-<sequence>`. The prefix is lowercase hex.
pub(crate) struct EventId<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) seq: u64,
}

impl fmt::Display for EventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.prefix, self.seq)
    }
}

/// Appends `{"id":..,"timestamp":..,"event":..,"userId":..,"sessionId":..,"topic":..,
/// "properties":{..}}` to `out` (the optional fields only when set). On an error (the
/// properties cannot be serialized) `out` holds a partial event: the caller discards it.
pub(crate) fn write_event<P: Properties + ?Sized>(
    out: &mut Vec<u8>,
    id: &EventId<'_>,
    at: SystemTime,
    fields: &Fields<'_, P>,
) -> serde_json::Result<()> {
    out.extend_from_slice(br#"{"id":"#);
    if is_plain(id.prefix) {
        out.push(b'"');
        out.extend_from_slice(id.prefix.as_bytes());
        out.push(b'-');
        out.extend_from_slice(itoa::Buffer::new().format(id.seq).as_bytes());
        out.push(b'"');
    } else {
        string(out, &id.to_string())?;
    }
    out.extend_from_slice(br#","timestamp":""#);
    timestamp(out, at);
    out.extend_from_slice(br#"","event":"#);
    string(out, fields.event)?;
    for (key, value) in [
        (&br#","userId":"#[..], fields.user_id),
        (br#","sessionId":"#, fields.session_id),
        (br#","topic":"#, fields.topic),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(key);
            string(out, value)?;
        }
    }
    out.extend_from_slice(br#","properties":"#);
    fields.properties.write_json(out)?;
    out.push(b'}');
    Ok(())
}

/// Whether `s` is written in JSON as it is: no `"`, `\` or control character (the only
/// bytes `serde_json` escapes).
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `s` as a JSON string.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if is_plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}

thread_local! {
    /// The last second this thread formatted: seconds since the epoch, and its
    /// `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// Appends `at` as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`, what
/// `humantime::format_rfc3339_millis` writes); a time outside 1970 to 9999 is written
/// as the nearest one inside (see [`crate::time::clamped`]).
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since_epoch = crate::time::clamped(at)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let date_time = SECOND.with(|cached| {
        let (cached_secs, text) = cached.get();
        if cached_secs == secs {
            return text;
        }
        let mut text = [0; 19];
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let formatted = humantime::format_rfc3339_seconds(second).to_string();
        text.copy_from_slice(&formatted.as_bytes()[..19]);
        cached.set((secs, text));
        text
    });
    out.extend_from_slice(&date_time);
    let millis = since_epoch.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// What `serde_json` writes for the same event (the reference).
    fn reference(
        id: &EventId<'_>,
        at: SystemTime,
        fields: &Fields<'_, Map<String, Value>>,
    ) -> String {
        let mut map = serde_json::Map::new();
        map.insert("id".into(), id.to_string().into());
        map.insert(
            "timestamp".into(),
            humantime::format_rfc3339_millis(at).to_string().into(),
        );
        map.insert("event".into(), fields.event.into());
        for (key, value) in [
            ("userId", fields.user_id),
            ("sessionId", fields.session_id),
            ("topic", fields.topic),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value.into());
            }
        }
        map.insert("properties".into(), fields.properties.clone().into());
        // serde_json's `preserve_order` is off: write the keys in the wire order by hand.
        let order = [
            "id",
            "timestamp",
            "event",
            "userId",
            "sessionId",
            "topic",
            "properties",
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|key| {
                map.get(*key).map(|v| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(key).expect("key"),
                        serde_json::to_string(v).expect("value")
                    )
                })
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    fn written(
        id: &EventId<'_>,
        at: SystemTime,
        fields: &Fields<'_, Map<String, Value>>,
    ) -> String {
        let mut out = Vec::new();
        write_event(&mut out, id, at, fields).expect("written");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_bytes_are_what_serde_json_writes() {
        let properties = object(json!({"url": "/a\"b", "n": 1.5, "nested": {"k": [1, null]}}));
        let empty = Map::new();
        let strings = [
            "request_completed",
            "",
            "quote \" only",
            "backslash \\ only",
            "tab \t only",
            "nul \u{0} and \u{1f} only",
            "del \u{7f} is not escaped",
            "é ü 日本 🎉",
            "</script>",
        ];
        let times = [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_738_324_800_123),
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_738_324_800_999_999_999),
            SystemTime::now(),
        ];
        for (i, s) in strings.iter().enumerate() {
            for at in times {
                let id = EventId {
                    prefix: "5f0c3a9e1b2d4c6f",
                    seq: i as u64 * 1_000_003,
                };
                let full = Fields {
                    event: s,
                    user_id: Some(s),
                    session_id: Some("sess"),
                    topic: Some(s),
                    properties: &properties,
                };
                assert_eq!(written(&id, at, &full), reference(&id, at, &full));
                let bare = Fields {
                    event: s,
                    user_id: None,
                    session_id: None,
                    topic: None,
                    properties: &empty,
                };
                assert_eq!(written(&id, at, &bare), reference(&id, at, &bare));
                let odd_prefix = EventId {
                    prefix: "a\"b",
                    seq: 7,
                };
                assert_eq!(
                    written(&odd_prefix, at, &bare),
                    reference(&odd_prefix, at, &bare)
                );
            }
        }
    }

    #[test]
    fn a_time_outside_1970_to_9999_is_written_as_the_nearest_inside() {
        let mut out = Vec::new();
        timestamp(&mut out, SystemTime::UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(out, b"1970-01-01T00:00:00.000Z");
        out.clear();
        let year_10000 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        timestamp(&mut out, year_10000);
        assert_eq!(out, b"9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn consecutive_times_in_one_second_and_across_seconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_738_324_799);
        for ms in [0, 1, 999, 1000, 1001, 61_000] {
            let at = base + Duration::from_millis(ms);
            let mut out = Vec::new();
            timestamp(&mut out, at);
            assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                humantime::format_rfc3339_millis(at).to_string()
            );
        }
    }
}
