//! The JSON Schema of a whole config file (`ixp-app schema`): the `[server]` table and
//! one section per plugin of a [`Catalog`], each with the host's own keys (`enabled`,
//! `hook_timeout`, `module`). Editors use it to complete and validate `ixp.toml`.
//!
//! ```
//! let schema = ixp_core::schema::config_file_schema(&ixp_core::Catalog::new());
//! assert_eq!(schema["properties"]["server"]["properties"]["port"]["type"], "integer");
//! ```

use serde_json::{json, Map, Value};

use crate::config::ServerSettings;
use crate::registry::Catalog;

/// The JSON Schema (draft 2020-12) of a config file for the plugins of `catalog`.
pub fn config_file_schema(catalog: &Catalog) -> Value {
    let mut defs = Map::new();
    let server = embed(
        "server",
        schemars::schema_for!(ServerSettings).to_value(),
        &mut defs,
    );
    let mut plugins = Map::new();
    for registration in catalog.registrations() {
        let name = registration.metadata().name;
        let mut section = embed(name, registration.config_schema().to_value(), &mut defs);
        add_host_keys(&mut section);
        if let Some(description) =
            Some(registration.metadata().description).filter(|d| !d.is_empty())
        {
            section["description"] = Value::String(description.to_owned());
        }
        plugins.insert(name.to_owned(), section);
    }
    let plugins_schema = json!({
        "type": "object",
        "description": "One section per compiled-in plugin.",
        "properties": plugins,
        "additionalProperties": false,
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ixp configuration",
        "type": "object",
        "properties": {
            "server": server,
            "plugins": plugins_schema,
            "profiles": {
                "type": "object",
                "description": "Overrides merged over the root when IXP_ENV names the profile.",
                "additionalProperties": {
                    "type": "object",
                    "properties": { "server": { "type": "object" }, "plugins": { "type": "object" }, "app": {} },
                    "additionalProperties": false,
                },
            },
            "app": { "description": "Free-form settings of the application itself." },
        },
        "additionalProperties": false,
        "$defs": defs,
    })
}

/// Moves `schema`'s `$defs` into `defs` under `<prefix>.<name>` and rewrites its `$ref`s,
/// so that many schemas can live in one document.
fn embed(prefix: &str, mut schema: Value, defs: &mut Map<String, Value>) -> Value {
    if let Some(Value::Object(own)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        for (name, mut def) in own {
            rewrite_refs(prefix, &mut def);
            defs.insert(format!("{prefix}.{name}"), def);
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    rewrite_refs(prefix, &mut schema);
    schema
}

fn rewrite_refs(prefix: &str, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "$ref" {
                    if let Value::String(reference) = child {
                        if let Some(name) = reference.strip_prefix("#/$defs/") {
                            *reference = format!("#/$defs/{prefix}.{name}");
                        }
                    }
                } else {
                    rewrite_refs(prefix, child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(prefix, v)),
        _ => {}
    }
}

fn add_host_keys(section: &mut Value) {
    let Some(object) = section.as_object_mut() else {
        return;
    };
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(properties) = properties {
        properties.insert(
            "enabled".into(),
            json!({"type": "boolean", "default": true, "description": "false leaves the plugin out (an error for plugins that depend on it)."}),
        );
        properties.insert(
            "hook_timeout".into(),
            json!({"type": ["string", "integer"], "description": "Timeout of each lifecycle hook, e.g. \"10s\" (default: server.hook_timeout)."}),
        );
        properties.insert(
            "module".into(),
            json!({"type": "string", "description": "Accepted for compatibility with plugins.json; names a compiled-in plugin, nothing is loaded."}),
        );
    }
}
