//! Records as JSON documents: the `json` format of the console and file transports
//! and the documents of the Elasticsearch transport share this shape:
//!
//! ```json
//! {"@timestamp":"2026-11-26T07:00:00.123Z","level":"INFO","target":"ixp_core::host",
//!  "message":"plugin state","plugin":"cache-plugin",
//!  "fields":{"state":"running"},"span":{"plugin":"cache-plugin"}}
//! ```
//!
//! `fields` are the record's own fields, `span` the fields of the spans it was made in
//! (outermost first, inner values win), `plugin` the plugin it came from, if any.

use std::fmt;
use std::io::Write;
use std::time::SystemTime;

use serde_json::{json, Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The fields of a span or event as JSON.
#[derive(Default, Clone)]
pub(crate) struct JsonFields {
    pub(crate) map: Map<String, Value>,
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.map.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.insert(field.name().into(), json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.insert(field.name().into(), json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.map.insert(field.name().into(), json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.map
            .insert(field.name().into(), json!(format!("{value:?}")));
    }
}

/// Keeps a span's fields in its extensions (once, whichever JSON layer comes first).
pub(crate) fn on_new_span<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id) {
        let mut extensions = span.extensions_mut();
        if extensions.get_mut::<JsonFields>().is_none() {
            let mut fields = JsonFields::default();
            attrs.record(&mut fields);
            extensions.insert(fields);
        }
    }
}

/// Adds recorded values to a span's fields.
pub(crate) fn on_record<S>(id: &Id, values: &Record<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id) {
        if let Some(fields) = span.extensions_mut().get_mut::<JsonFields>() {
            values.record(fields);
        }
    }
}

/// The JSON document of one record.
pub(crate) fn document<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Value
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let metadata = event.metadata();
    let mut span_fields = Map::new();
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(fields) = span.extensions().get::<JsonFields>() {
                span_fields.extend(fields.map.clone());
            }
        }
    }
    let mut fields = JsonFields::default();
    event.record(&mut fields);
    let message = fields.map.remove("message").unwrap_or(Value::Null);
    let plugin = fields
        .map
        .get("plugin")
        .or_else(|| span_fields.get("plugin"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "@timestamp": crate::time::rfc3339_millis(SystemTime::now()),
        "level": metadata.level().as_str(),
        "target": metadata.target(),
        "message": message,
        "plugin": plugin,
        "fields": fields.map,
        "span": span_fields,
    })
}

/// Writes each record as one JSON line.
pub(crate) struct JsonLinesLayer<W> {
    writer: W,
}

impl<W> JsonLinesLayer<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self { writer }
    }
}

impl<S, W> Layer<S> for JsonLinesLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        on_new_span(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        on_record(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = document(event, &ctx).to_string();
        line.push('\n');
        let _ = self
            .writer
            .make_writer_for(event.metadata())
            .write_all(line.as_bytes());
    }
}
