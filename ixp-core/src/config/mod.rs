//! Loading the configuration: TOML or JSON, profiles, `${VAR}` interpolation,
//! environment overrides, and typed extraction with full paths.
//!
//! # The file
//!
//! ```toml
//! [server]
//! host = "127.0.0.1"
//! port = 3001
//! shutdown_timeout = "10s"
//!
//! [plugins.cache-plugin]
//! ttl = 60
//! password = "${REDIS_PASSWORD:-}"
//!
//! [plugins.analytics-plugin]
//! enabled = false
//!
//! [profiles.production.plugins.cache-plugin]
//! ttl = 600
//! ```
//!
//! A plugin's section holds its own config keys plus three keys read by the host:
//! `enabled` (default `true`), `hook_timeout` (a duration such as `"10s"`, the timeout of
//! each lifecycle hook, default 30 s) and `module` (accepted for compatibility with the
//! TypeScript SDK's `plugins.json`; it only documents which compiled-in plugin is meant,
//! nothing is ever loaded from it).
//!
//! The TypeScript SDK's list form loads unchanged:
//! `{"plugins": [{"name": "cache-plugin", "module": "./plugins/CachePlugin", "enabled": true, "config": {...}}]}`.
//!
//! # Order of evaluation
//!
//! 1. the file (TOML by default; JSON when the name ends in `.json`);
//! 2. the profile named by `IXP_ENV` (default `development`): `[profiles.<name>]` is
//!    merged over the root, key by key. A profile named that the file's `profiles`
//!    lacks is an error (a typo would otherwise run on the root settings), except
//!    `development`, which the root settings are;
//! 3. `${VAR}` and `${VAR:-default}` in string values are replaced (`$${` writes a
//!    literal `${`); an unset variable without default is a problem of the check;
//! 4. environment overrides: `IXP_SERVER__PORT=4000`,
//!    `IXP_PLUGINS__CACHE_PLUGIN__TTL=60`. After the `IXP_` prefix, `__` separates the
//!    path segments; segments match existing keys ignoring case, `-` and `_`
//!    (`CACHE_PLUGIN` finds `cache-plugin`, `KEY_PREFIX` finds `keyPrefix`); a new key is
//!    written in lower case (with `-` for plugin names). Values are strings and fill
//!    numbers and booleans as well.

mod interpolate;
pub(crate) mod lenient;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::problem::{closest, Problem};

/// The environment variable that selects the profile.
pub const PROFILE_VAR: &str = "IXP_ENV";
/// The profile when none is asked for: the file's root settings, with its
/// `[profiles.development]` merged over them if it has one.
const DEFAULT_PROFILE: &str = "development";
/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "IXP_";
/// Keys of a plugin section that the host reads; the rest is the plugin's config.
pub const RESERVED_PLUGIN_KEYS: [&str; 3] = ["enabled", "hook_timeout", "module"];

/// A config file that cannot be read or parsed at all. (Problems inside a well-formed
/// file are [`Problem`]s, reported together by the start-up check.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON.
    #[error("config file {origin} is not valid {format}: {message}")]
    Parse {
        /// The file name, or `<inline>`.
        origin: String,
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The top level is not a table/object, or `plugins` has the wrong shape.
    #[error("config file {origin}: {message}")]
    Shape {
        /// The file name, or `<inline>`.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Format of a config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (`ixp.toml`).
    Toml,
    /// JSON (`plugins.json`).
    Json,
}

/// Builds an [`IxpConfig`] from a file or text, a profile and the environment.
///
/// ```
/// use ixp_core::config::{ConfigLoader, Format};
///
/// let config = ConfigLoader::new()
///     .text(Format::Toml, "[plugins.cache-plugin]\nttl = \"${TTL:-30}\"\n")
///     .env_vars([("IXP_SERVER__PORT", "4000")])
///     .load()
///     .unwrap();
/// assert_eq!(config.server().port, 4000);
/// assert_eq!(config.plugin("cache-plugin").unwrap().config["ttl"], "30");
/// ```
#[derive(Debug, Default)]
pub struct ConfigLoader {
    source: Option<Source>,
    env: Option<Vec<(String, String)>>,
    profile: Option<String>,
}

#[derive(Debug)]
enum Source {
    File(PathBuf),
    Text(Format, String),
    Value(Value),
}

impl ConfigLoader {
    /// A loader with no file (every plugin on its defaults) and the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this file: JSON if its name ends in `.json`, TOML otherwise.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(Source::File(path.into()));
        self
    }

    /// Reads this text.
    pub fn text(mut self, format: Format, text: impl Into<String>) -> Self {
        self.source = Some(Source::Text(format, text.into()));
        self
    }

    /// Uses this tree as the file's content.
    pub fn value(mut self, value: Value) -> Self {
        self.source = Some(Source::Value(value));
        self
    }

    /// Uses these variables instead of the process environment (for interpolation,
    /// overrides and `IXP_ENV`).
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Selects a profile, whatever `IXP_ENV` says.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Loads the configuration.
    pub fn load(self) -> Result<IxpConfig, ConfigError> {
        let env: Vec<(String, String)> = self.env.unwrap_or_else(|| std::env::vars().collect());
        let (origin, file_path, mut root) = match self.source {
            None => ("<defaults>".to_owned(), None, Value::Object(Map::new())),
            Some(Source::Value(v)) => ("<inline>".to_owned(), None, v),
            Some(Source::Text(format, text)) => (
                "<inline>".to_owned(),
                None,
                parse_text(format, &text, "<inline>")?,
            ),
            Some(Source::File(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let origin = path.display().to_string();
                let format = if path.extension().is_some_and(|e| e == "json") {
                    Format::Json
                } else {
                    Format::Toml
                };
                let value = parse_text(format, &text, &origin)?;
                (origin, Some(path), value)
            }
        };
        let Value::Object(ref mut map) = root else {
            return Err(ConfigError::Shape {
                origin,
                message: "the top level must be a table (TOML) or an object (JSON)".into(),
            });
        };
        normalize_plugin_list(map, &origin)?;

        let (asked_by, asked) = match self.profile {
            Some(profile) => ("ConfigLoader::profile", Some(profile)),
            None => (
                PROFILE_VAR,
                env.iter()
                    .find(|(k, _)| k == PROFILE_VAR)
                    .map(|(_, v)| v.clone()),
            ),
        };
        let profile = asked.clone().unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let mut origins = Vec::new();
        match map.remove("profiles") {
            None => {}
            Some(Value::Object(profiles)) => match profiles.get(&profile) {
                Some(overlay) => {
                    let mut overlay = overlay.clone();
                    if let Value::Object(o) = &mut overlay {
                        normalize_plugin_list(o, &origin)?;
                    }
                    if !overlay.is_object() {
                        return Err(ConfigError::Shape {
                            origin,
                            message: format!(
                                "`profiles.{profile}` must be a table of settings (`[profiles.{profile}.server]`)"
                            ),
                        });
                    }
                    let mut set = Vec::new();
                    overlaid_paths(&overlay, &root, "", &mut set);
                    let from = format!("`profiles.{profile}`");
                    origins.extend(set.into_iter().map(|path| (path, from.clone())));
                    merge(&mut root, overlay);
                }
                // A profile asked for by name that the file lacks is most likely a typo
                // (`prod` for `production`): running on the root settings instead would
                // go unnoticed. The root settings are the `development` profile.
                None if asked.is_some() && profile != DEFAULT_PROFILE => {
                    let have: Vec<&str> = profiles.keys().map(String::as_str).collect();
                    return Err(ConfigError::Shape {
                        origin,
                        message: format!(
                            "{asked_by} names the profile `{profile}`, which is not in `profiles` (it has: {})",
                            if have.is_empty() { "none".to_owned() } else { have.join(", ") }
                        ),
                    });
                }
                None => {}
            },
            Some(_) => {
                return Err(ConfigError::Shape {
                    origin,
                    message: "`profiles` must be a table of profiles (`[profiles.production]`)"
                        .into(),
                });
            }
        }

        let lookup = |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
        let mut missing = Vec::new();
        interpolate::walk(&mut root, &mut String::new(), &lookup, &mut missing);
        let created = apply_env_overrides(&mut root, &env, &mut origins);

        let mut config = IxpConfig::from_tree(root, file_path, profile, missing)?;
        config.origins = origins;
        for path in created {
            if let [plugins, name, rest @ ..] = path.as_slice() {
                if plugins == "plugins" && !rest.is_empty() {
                    if let Some(section) = config.plugins.get_mut(name) {
                        section.env_created.push(rest.to_vec());
                    }
                }
            }
        }
        Ok(config)
    }
}

fn parse_text(format: Format, text: &str, origin: &str) -> Result<Value, ConfigError> {
    match format {
        Format::Toml => toml::from_str::<Value>(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            format: "TOML",
            message: toml_message(&e, text),
        }),
        Format::Json => serde_json::from_str::<Value>(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            format: "JSON",
            message: e.to_string(),
        }),
    }
}

/// The TOML parser's message with the line and column it points at, on one line. Not
/// the error's `Display`: that quotes the source line, and a broken line may hold a
/// secret (`token = "sk-live-...` without its closing quote).
fn toml_message(error: &toml::de::Error, text: &str) -> String {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(before) = error.span().and_then(|span| text.get(..span.start)) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// Turns the TypeScript SDK's `plugins: [{name, module, enabled, config}]` list into the
/// table form `plugins: {name: {enabled, module, ...config}}`.
fn normalize_plugin_list(map: &mut Map<String, Value>, origin: &str) -> Result<(), ConfigError> {
    let Some(Value::Array(list)) = map.get("plugins") else {
        return Ok(());
    };
    let mut table = Map::new();
    for (i, entry) in list.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(ConfigError::Shape {
                origin: origin.to_owned(),
                message: format!(
                    "plugins[{i}] must be an object with `name`, `enabled` and `config`"
                ),
            });
        };
        let Some(Value::String(name)) = entry.get("name") else {
            return Err(ConfigError::Shape {
                origin: origin.to_owned(),
                message: format!("plugins[{i}] has no `name` string"),
            });
        };
        let mut section = match entry.get("config") {
            Some(Value::Object(c)) => c.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(ConfigError::Shape {
                    origin: origin.to_owned(),
                    message: format!("plugins[{i}].config must be an object"),
                })
            }
        };
        for (key, value) in entry {
            if key != "name" && key != "config" {
                section.insert(key.clone(), value.clone());
            }
        }
        if table.insert(name.clone(), Value::Object(section)).is_some() {
            return Err(ConfigError::Shape {
                origin: origin.to_owned(),
                message: format!("plugin `{name}` is listed twice in `plugins`"),
            });
        }
    }
    map.insert("plugins".into(), Value::Object(table));
    Ok(())
}

/// Merges `overlay` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Whether the dotted `path` is `at` or a value inside it (`a.b` is under `a`, `a[0]`
/// too, `ab` is not).
pub(crate) fn is_at_or_under(path: &str, at: &str) -> bool {
    path.strip_prefix(at)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

fn normalized(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Applies the `IXP_...__...` overrides. Returns the paths of those that created a key
/// on their way (the spelling may still need to be matched to a config field's name),
/// and records in `origins` what each one set: its path, or the first key on it that
/// it created (everything below that key came from it).
fn apply_env_overrides(
    root: &mut Value,
    env: &[(String, String)],
    origins: &mut Vec<(String, String)>,
) -> Vec<Vec<String>> {
    let mut created = Vec::new();
    let mut overrides: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != PROFILE_VAR && k.contains("__"))
        .collect();
    overrides.sort();
    for (key, value) in overrides {
        let segments: Vec<&str> = key[ENV_PREFIX.len()..].split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            continue;
        }
        let mut node = &mut *root;
        let mut path = Vec::with_capacity(segments.len());
        let mut new_key = false;
        let mut first_created = None;
        for (depth, segment) in segments.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else { break };
            let wanted = normalized(segment);
            let existing = map.keys().find(|k| normalized(k) == wanted).cloned();
            if existing.is_none() && !new_key {
                first_created = Some(depth);
            }
            new_key |= existing.is_none();
            let name = existing.unwrap_or_else(|| {
                let lower = segment.to_lowercase();
                if depth == 1 && segments[0].eq_ignore_ascii_case("plugins") {
                    lower.replace('_', "-")
                } else {
                    lower
                }
            });
            let last = depth + 1 == segments.len();
            path.push(name.clone());
            let slot = map.entry(name).or_insert(Value::Null);
            if last {
                *slot = Value::String(value.clone());
            }
            node = slot;
        }
        let set = first_created.map_or(&path[..], |depth| &path[..=depth]);
        origins.push((set.join("."), format!("`{key}`")));
        if new_key {
            created.push(path);
        }
    }
    created
}

/// What merging `overlay` over `base` sets, as dotted paths under `prefix`: a key `base`
/// lacks (everything below it is the overlay's), or a value that is not a table merged
/// into one; a table merged into a table is looked into (an empty one sets nothing).
fn overlaid_paths(overlay: &Value, base: &Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(overlay) = overlay else {
        return;
    };
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (value, base.get(key)) {
            (Value::Object(_), Some(inner @ Value::Object(_))) => {
                overlaid_paths(value, inner, &path, out)
            }
            _ => out.push(path),
        }
    }
}

/// Renames keys created by environment overrides to the config field they match when
/// case, `-` and `_` are ignored (`api_key` -> `apiKey`), following the JSON Schema of
/// the config type. `paths` are relative to `value`.
pub(crate) fn align_env_keys(value: &mut Value, paths: &[Vec<String>], schema: &Value) {
    for path in paths {
        let mut node = &mut *value;
        let mut sub = Some(schema);
        for key in path {
            let Value::Object(map) = node else { break };
            let properties = sub.and_then(|s| properties_of(s, schema));
            let mut name = key.clone();
            if let Some(props) = properties {
                if !props.contains_key(key) {
                    if let Some(field) = props.keys().find(|p| normalized(p) == normalized(key)) {
                        if let Some(v) = map.remove(key) {
                            map.insert(field.clone(), v);
                        }
                        name = field.clone();
                    }
                }
            }
            sub = properties.and_then(|p| p.get(&name));
            match map.get_mut(&name) {
                Some(next) => node = next,
                None => break,
            }
        }
    }
}

/// Fills in "did you mean" for unknown keys under `base` that have none, from the
/// sibling properties the JSON Schema of the config type declares.
pub(crate) fn suggest_unknown_keys(problems: &mut [Problem], base: &str, schema: &Value) {
    for problem in problems.iter_mut() {
        let Problem::UnknownConfigKey { path, suggestion } = problem else {
            continue;
        };
        if suggestion.is_some() {
            continue;
        }
        let Some(rest) = path.strip_prefix(base).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let segments: Vec<&str> = rest.split('.').collect();
        let Some((key, parents)) = segments.split_last() else {
            continue;
        };
        let mut sub = Some(schema);
        for parent in parents {
            sub = sub
                .and_then(|s| properties_of(s, schema))
                .and_then(|props| props.get(*parent));
        }
        if let Some(props) = sub.and_then(|s| properties_of(s, schema)) {
            *suggestion = closest(key, props.keys().map(String::as_str));
        }
    }
}

/// The `properties` of a schema, through `$ref`, `anyOf`, `oneOf` and `allOf`.
fn properties_of<'a>(schema: &'a Value, root: &'a Value) -> Option<&'a Map<String, Value>> {
    let schema = resolve(schema, root);
    if let Some(Value::Object(props)) = schema.get("properties") {
        return Some(props);
    }
    ["anyOf", "oneOf", "allOf"].iter().find_map(|k| {
        schema
            .get(*k)
            .and_then(Value::as_array)
            .and_then(|alts| alts.iter().find_map(|alt| properties_of(alt, root)))
    })
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix("#/")
            .map(|pointer| format!("/{pointer}"))
            .and_then(|pointer| root.pointer(&pointer))
            .unwrap_or(schema),
        None => schema,
    }
}

/// Settings of the host and the HTTP front (`[server]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the HTTP front listens on.
    pub host: String,
    /// Port the HTTP front listens on.
    pub port: u16,
    /// How long the requests in flight when a shutdown begins may take to finish; past
    /// it they are cut off. The plugins are stopped after that, each bounded by its own
    /// hook timeout (not by this one: a stop cut short could lose what it flushes).
    #[serde(with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
    /// Default timeout of each plugin lifecycle hook.
    #[serde(with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub hook_timeout: Duration,
    /// Timeout of each plugin's health check.
    #[serde(with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub health_timeout: Duration,
    /// How long an answer of `GET /health` is reused: the plugins' health checks (which
    /// may reach databases and other services) run at most once per this period, however
    /// often the endpoint is polled, and concurrent calls share one run. `"0s"` runs them
    /// on every call. [`Host::health`](crate::Host::health) is never cached.
    #[serde(with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub health_cache: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3001,
            shutdown_timeout: Duration::from_secs(30),
            hook_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            health_cache: Duration::from_secs(1),
        }
    }
}

/// Serde adapter for `"10s"`-style durations (whole numbers are seconds).
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    /// Serializes as `"10s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserializes `"10s"`, `"1h 30m"`, `"250ms"` or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\", \"500ms\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                match v.trim().parse::<u64>() {
                    Ok(secs) => Ok(Duration::from_secs(secs)),
                    Err(_) => humantime::parse_duration(v.trim()).map_err(|e| {
                        E::custom(format!(
                            "invalid duration {v:?}: {e} (write e.g. \"10s\", \"500ms\", \"1h\")"
                        ))
                    }),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The section of one plugin, after loading. Its `Debug` shows keys, never values (the
/// raw tree cannot know which values are secrets).
#[derive(Clone, PartialEq)]
pub struct PluginSection {
    /// `enabled` (default `true`).
    pub enabled: bool,
    /// `hook_timeout`, if set.
    pub hook_timeout: Option<Duration>,
    /// `module`, if set (documentation only: nothing is loaded from it).
    pub module: Option<String>,
    /// The plugin's own keys (the reserved ones removed).
    pub config: Value,
    /// Keys created by environment overrides, relative to `config`.
    pub env_created: Vec<Vec<String>>,
}

impl fmt::Debug for PluginSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSection")
            .field("enabled", &self.enabled)
            .field("hook_timeout", &self.hook_timeout)
            .field("module", &self.module)
            .field("keys", &KeysOnly(&self.config))
            .finish()
    }
}

/// Shows the shape of a JSON tree with every scalar value hidden.
struct KeysOnly<'a>(&'a Value);

impl fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Object(map) => f
                .debug_map()
                .entries(map.iter().map(|(k, v)| (k, KeysOnly(v))))
                .finish(),
            Value::Array(items) => f.debug_list().entries(items.iter().map(KeysOnly)).finish(),
            _ => f.write_str("…"),
        }
    }
}

/// The loaded configuration: server settings, plugin sections, and the problems found
/// while loading (reported by the start-up check together with the others).
///
/// Its `Debug` shows keys, never values.
#[derive(Clone)]
pub struct IxpConfig {
    tree: Value,
    server: ServerSettings,
    plugins: BTreeMap<String, PluginSection>,
    problems: Vec<Problem>,
    file: Option<PathBuf>,
    profile: String,
    /// Where values not from the file's root were set: (dotted path, origin), in the
    /// order applied (a profile's, then the environment's).
    origins: Vec<(String, String)>,
}

impl fmt::Debug for IxpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IxpConfig")
            .field("file", &self.file)
            .field("profile", &self.profile)
            .field("server", &self.server)
            .field("plugins", &self.plugins)
            .field("tree", &KeysOnly(&self.tree))
            .field("problems", &self.problems)
            .finish()
    }
}

impl Default for IxpConfig {
    fn default() -> Self {
        Self {
            tree: Value::Object(Map::new()),
            server: ServerSettings::default(),
            plugins: BTreeMap::new(),
            problems: Vec::new(),
            file: None,
            profile: "development".into(),
            origins: Vec::new(),
        }
    }
}

impl IxpConfig {
    /// Where the value at `path` (a problem's path, `plugins.cache-plugin.ttl`) or the
    /// table holding it was set when that is not the file's root: an environment
    /// override or a profile. Keys compare as the overrides match them (case, `-` and
    /// `_` aside); the last one applied wins.
    pub(crate) fn origin_of(&self, path: &str) -> Option<&str> {
        let path = normalized(path);
        self.origins
            .iter()
            .rev()
            .find(|(set, _)| is_at_or_under(&path, &normalized(set)))
            .map(|(_, origin)| origin.as_str())
    }

    /// Loads a file with the process environment (see [`ConfigLoader`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        ConfigLoader::new().file(path.as_ref()).load()
    }

    fn from_tree(
        tree: Value,
        file: Option<PathBuf>,
        profile: String,
        mut problems: Vec<Problem>,
    ) -> Result<Self, ConfigError> {
        let empty = Value::Object(Map::new());
        let server = match extract::<ServerSettings>(tree.get("server").unwrap_or(&empty), "server")
        {
            Ok(s) => s,
            Err(mut p) => {
                problems.append(&mut p);
                ServerSettings::default()
            }
        };
        let mut plugins = BTreeMap::new();
        match tree.get("plugins") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, section) in map {
                    let path = format!("plugins.{name}");
                    match plugin_section(section, &path) {
                        Ok((s, mut found)) => {
                            problems.append(&mut found);
                            plugins.insert(name.clone(), s);
                        }
                        Err(mut found) => problems.append(&mut found),
                    }
                }
            }
            Some(_) => problems.push(Problem::InvalidConfig {
                path: "plugins".into(),
                message: "must be a table of plugin sections (or the list form of plugins.json)"
                    .into(),
            }),
        }
        if let Value::Object(map) = &tree {
            for key in map.keys() {
                if !matches!(key.as_str(), "server" | "plugins" | "app") {
                    problems.push(Problem::UnknownConfigKey {
                        path: key.clone(),
                        suggestion: closest(key, ["server", "plugins", "profiles", "app"]),
                    });
                }
            }
        }
        Ok(Self {
            tree,
            server,
            plugins,
            problems,
            file,
            profile,
            origins: Vec::new(),
        })
    }

    /// The `[server]` settings.
    pub fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// The section of a plugin, if the config has one.
    pub fn plugin(&self, name: &str) -> Option<&PluginSection> {
        self.plugins.get(name)
    }

    /// Every plugin section, by name.
    pub fn plugins(&self) -> &BTreeMap<String, PluginSection> {
        &self.plugins
    }

    /// Whether the plugin is enabled, for a plugin enabled by default: unless its
    /// section says `enabled = false`.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.plugins.get(name).is_none_or(|s| s.enabled)
    }

    /// Whether the plugin `metadata` describes is enabled: by its section's `enabled`
    /// if the config has a section for it, else by
    /// [`enabled_by_default`](crate::PluginMetadata::enabled_by_default).
    pub fn enables(&self, metadata: &crate::PluginMetadata) -> bool {
        match self.plugins.get(metadata.name) {
            Some(section) => section.enabled,
            None => metadata.enabled_by_default,
        }
    }

    /// Problems found while loading (unset variables, bad server settings, bad reserved
    /// keys). The start-up check reports them with its own.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The whole tree after profile, interpolation and overrides. Applications may keep
    /// their own settings under `[app]`.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// Extracts the value at a dotted path as `T` (e.g. `config.get::<MySettings>("app")`).
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Vec<Problem>> {
        let mut node = &self.tree;
        for segment in path.split('.') {
            node = node.get(segment).unwrap_or(&Value::Null);
        }
        extract(node, path)
    }

    /// The file the configuration came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The selected profile (`IXP_ENV`).
    pub fn profile(&self) -> &str {
        &self.profile
    }
}

/// The section, with its reserved keys read (a bad reserved key is a problem, and its
/// default is used so that the plugin's own keys are still checked).
fn plugin_section(
    section: &Value,
    path: &str,
) -> Result<(PluginSection, Vec<Problem>), Vec<Problem>> {
    let mut config = match section {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(vec![Problem::InvalidConfig {
                path: path.to_owned(),
                message: "a plugin section must be a table".into(),
            }])
        }
    };
    #[derive(Deserialize)]
    struct Reserved {
        #[serde(default = "yes")]
        enabled: bool,
        #[serde(default, with = "opt_duration")]
        hook_timeout: Option<Duration>,
        #[serde(default)]
        module: Option<String>,
    }
    fn yes() -> bool {
        true
    }
    mod opt_duration {
        use std::time::Duration;

        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::humantime_serde_compat::deserialize(d).map(Some)
        }
    }
    let mut reserved = Map::new();
    for key in RESERVED_PLUGIN_KEYS {
        if let Some(v) = config.remove(key) {
            reserved.insert(key.to_owned(), v);
        }
    }
    let (reserved, problems) = match extract::<Reserved>(&Value::Object(reserved), path) {
        Ok(r) => (r, Vec::new()),
        Err(problems) => (
            Reserved {
                enabled: true,
                hook_timeout: None,
                module: None,
            },
            problems,
        ),
    };
    let section = PluginSection {
        enabled: reserved.enabled,
        hook_timeout: reserved.hook_timeout,
        module: reserved.module,
        config: Value::Object(config),
        env_created: Vec::new(),
    };
    Ok((section, problems))
}

/// Deserializes `T` from `value`, reporting every bad value with its full path
/// (prefixed by `base`) and every key `T` does not read as an unknown key.
///
/// ```
/// use ixp_core::config::extract;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Cache { ttl: u64, size: u64 }
///
/// let bad = serde_json::json!({"ttl": "abc", "size": -1, "tll": 1});
/// let problems: Vec<String> = extract::<Cache>(&bad, "plugins.cache-plugin")
///     .err()
///     .unwrap()
///     .iter()
///     .map(ToString::to_string)
///     .collect();
/// assert_eq!(problems, [
///     "plugins.cache-plugin.size: invalid value: integer `-1`, expected u64",
///     "plugins.cache-plugin.tll: unknown key",
///     "plugins.cache-plugin.ttl: invalid type: string \"abc\", expected u64",
/// ]);
/// ```
pub fn extract<T: DeserializeOwned>(value: &Value, base: &str) -> Result<T, Vec<Problem>> {
    match extract_all(value, base) {
        (Some(v), problems) if problems.is_empty() => Ok(v),
        (_, problems) => Err(problems),
    }
}

/// [`extract`] that goes on past bad values: every problem, and the value built with
/// the defaults in place of the bad keys (if the rest deserializes), so that further
/// checks can run on it.
pub(crate) fn extract_all<T: DeserializeOwned>(
    value: &Value,
    base: &str,
) -> (Option<T>, Vec<Problem>) {
    // serde stops at the first error; to report every bad value of a section at once,
    // drop the offending key (its default then applies) and try again.
    let mut problems: Vec<Problem> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut attempt = std::borrow::Cow::Borrowed(value);
    let add = |problems: &mut Vec<Problem>, found: Vec<Problem>, removed: &[String]| {
        for problem in found {
            // A required field whose bad value was dropped is not missing a second time.
            let follow_on = matches!(&problem, Problem::InvalidConfig { path, message }
                if message.strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                    .is_some_and(|field| removed.contains(&join_key(path, field))));
            if !follow_on && !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    };
    for _ in 0..64 {
        match extract_once::<T>(&attempt, base) {
            Ok((v, found)) => {
                add(&mut problems, found, &removed);
                return (Some(v), problems);
            }
            Err((found, culprit)) => {
                add(&mut problems, found, &removed);
                match culprit {
                    Some(segments) if remove_at(attempt.to_mut(), &segments) => {
                        removed.push(segments_path(base, &segments));
                    }
                    _ => break,
                }
            }
        }
    }
    (None, problems)
}

/// Where a value sits in a tree: object keys and array indices.
#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments_path(base: &str, segments: &[Segment]) -> String {
    segments
        .iter()
        .fold(base.to_owned(), |path, segment| match segment {
            Segment::Key(k) => join_key(&path, k),
            Segment::Index(i) => join_key(&path, &i.to_string()),
        })
}

fn remove_at(tree: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = tree;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Key(k), Value::Object(map)) => match map.get_mut(k) {
                Some(child) => child,
                None => return false,
            },
            (Segment::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Key(k), Value::Object(map)) => map.remove(k).is_some(),
        (Segment::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// The value with the unknown keys serde ignored, or the problems and where the value
/// that stopped serde sits.
type Attempt<T> = Result<(T, Vec<Problem>), (Vec<Problem>, Option<Vec<Segment>>)>;

fn extract_once<T: DeserializeOwned>(value: &Value, base: &str) -> Attempt<T> {
    let mut unknown = Vec::new();
    let join = |rest: &str| {
        if rest.is_empty() || rest == "." {
            base.to_owned()
        } else if base.is_empty() {
            rest.to_owned()
        } else {
            format!("{base}.{rest}")
        }
    };
    let result = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(lenient::Lenient(value), &mut record);
        serde_path_to_error::deserialize::<_, T>(ignored)
    };
    let mut problems: Vec<Problem> = unknown
        .iter()
        .map(|p| Problem::UnknownConfigKey {
            path: join(p),
            suggestion: None,
        })
        .collect();
    match result {
        Ok(v) => Ok((v, problems)),
        Err(err) => {
            let inner = err.inner().to_string();
            let path = join(&err.path().to_string());
            let mut segments: Vec<Segment> = err
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                    _ => None,
                })
                .collect();
            // serde's own "unknown field `x`, expected one of ..." carries the key name;
            // report it as an unknown key with the closest expected key.
            if let Some((key, expected)) = parse_unknown_field(&inner) {
                let ends_with_key = path == key || path.ends_with(&format!(".{key}"));
                if !matches!(segments.last(), Some(Segment::Key(k)) if *k == key) {
                    segments.push(Segment::Key(key.clone()));
                }
                problems.push(Problem::UnknownConfigKey {
                    path: if ends_with_key {
                        path
                    } else {
                        join_key(&path, &key)
                    },
                    suggestion: closest(&key, expected.iter().map(String::as_str)),
                });
            } else {
                problems.push(Problem::InvalidConfig {
                    path,
                    message: inner,
                });
            }
            Err((problems, Some(segments)))
        }
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Splits serde's `unknown field `x`, expected one of `a`, `b`` message.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((key.to_owned(), expected))
}
