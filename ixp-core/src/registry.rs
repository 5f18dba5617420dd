//! Which plugins exist: the link-time registry (`inventory`) and manual registration.
//!
//! `#[ixp_plugin]` submits a [`PluginRegistration`] for its struct;
//! [`Catalog::linked`] collects every registration linked into the binary. A plugin in
//! another crate is linked when the binary's code references that crate: a `use` of
//! anything in it, or `extern crate my_plugins;` at the binary's root (see
//! `docs/plugins.md`, "Plugins in their own crate").
//!
//! ```
//! use ixp_core::{ixp_plugin, BoxError, Catalog, NoConfig, Plugin, PluginContext};
//!
//! #[ixp_plugin(name = "clock-plugin", version = "0.3.0")]
//! struct ClockPlugin;
//!
//! impl Plugin for ClockPlugin {
//!     type Config = NoConfig;
//!     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
//!         Ok(ClockPlugin)
//!     }
//! }
//!
//! assert!(Catalog::linked().get("clock-plugin").is_some());
//! assert!(Catalog::new().with::<ClockPlugin>().get("clock-plugin").is_some());
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use crate::config::{align_env_keys, extract_all, suggest_unknown_keys};
use crate::context::PluginContext;
use crate::health::PluginHealth;
use crate::plugin::{BoxError, Plugin, PluginMetadata};
use crate::problem::Problem;

/// The registration of one plugin type: what `#[ixp_plugin]` submits to `inventory`.
#[derive(Clone, Copy)]
pub struct PluginRegistration {
    erased: &'static dyn PluginType,
    /// The metadata and type name given at run time, if any ([`Self::with_metadata`]).
    renamed: Option<&'static Renamed>,
}

impl PluginRegistration {
    /// The registration of `P`.
    pub const fn of<P: Plugin>() -> Self {
        Self {
            erased: const { &Typed::<P>(PhantomData) },
            renamed: None,
        }
    }

    /// The plugin type `P` registered under `metadata` chosen at run time instead of
    /// `P::METADATA`: for compositions generated from data (benchmarks, tests of large
    /// dependency graphs, tools), where one Rust type stands for many plugins.
    ///
    /// Each call leaks the metadata and a type name (a few dozen bytes that live as long
    /// as the process, like every registration): call it once per plugin, not in a loop
    /// that runs for the life of a server. The registration's
    /// [`type_name`](Self::type_name) is `"<P's type> as <name>"`, so registrations of one
    /// type under different names are distinct plugins to [`Catalog::add`].
    ///
    /// ```
    /// use ixp_core::{ixp_plugin, BoxError, Catalog, NoConfig, Plugin, PluginContext, PluginMetadata, PluginRegistration};
    ///
    /// #[ixp_plugin(name = "node", version = "1.0.0")]
    /// struct Node;
    /// impl Plugin for Node {
    ///     type Config = NoConfig;
    ///     async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> { Ok(Node) }
    /// }
    ///
    /// let mut catalog = Catalog::new();
    /// for (name, deps) in [("a", &[][..]), ("b", &["a"][..])] {
    ///     let deps: Vec<&'static str> = deps.to_vec();
    ///     catalog.add(PluginRegistration::with_metadata::<Node>(PluginMetadata {
    ///         name,
    ///         dependencies: Box::leak(deps.into_boxed_slice()),
    ///         ..Node::METADATA
    ///     }));
    /// }
    /// assert_eq!(catalog.get("b").unwrap().metadata().dependencies, ["a"]);
    /// # use ixp_core::PluginMeta;
    /// ```
    pub fn with_metadata<P: Plugin>(metadata: PluginMetadata) -> Self {
        let type_name: &'static str = Box::leak(
            format!("{} as {}", std::any::type_name::<P>(), metadata.name).into_boxed_str(),
        );
        Self {
            erased: const { &Typed::<P>(PhantomData) },
            renamed: Some(Box::leak(Box::new(Renamed {
                metadata,
                type_name,
            }))),
        }
    }

    /// The plugin's metadata.
    pub fn metadata(&self) -> PluginMetadata {
        match self.renamed {
            Some(renamed) => renamed.metadata,
            None => self.erased.metadata(),
        }
    }

    /// The Rust type of the plugin.
    pub fn type_name(&self) -> &'static str {
        match self.renamed {
            Some(renamed) => renamed.type_name,
            None => self.erased.type_name(),
        }
    }

    /// The JSON Schema of the plugin's config section.
    pub fn config_schema(&self) -> schemars::Schema {
        self.erased.config_schema()
    }

    pub(crate) fn plugin_type(&self) -> &'static dyn PluginType {
        self.erased
    }
}

impl fmt::Debug for PluginRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginRegistration")
            .field("name", &self.metadata().name)
            .field("type", &self.type_name())
            .finish()
    }
}

inventory::collect!(PluginRegistration);

/// Names a built-in plugin and the Cargo feature that compiles it in, whether or not it
/// is compiled in, so that the start-up check can say which feature to enable.
/// `ixp-plugins` submits one per built-in plugin backend.
#[derive(Debug, Clone, Copy)]
pub struct FeatureHint {
    /// The plugin name.
    pub plugin: &'static str,
    /// The Cargo feature (of `ixp-plugins`, forwarded by the app).
    pub feature: &'static str,
}

inventory::collect!(FeatureHint);

/// A parsed plugin configuration, type-erased until initialization.
pub(crate) type AnyConfig = Box<dyn Any + Send + Sync>;

/// The type-erased operations the planner and host need from a plugin type.
pub(crate) trait PluginType: Send + Sync {
    fn metadata(&self) -> PluginMetadata;
    fn type_name(&self) -> &'static str;
    fn parse_config(
        &self,
        raw: &Value,
        path: &str,
        env_created: &[Vec<String>],
    ) -> Result<AnyConfig, Vec<Problem>>;
    fn validate(&self, config: &AnyConfig, path: &str) -> Vec<Problem>;
    fn effective_config(&self, config: &AnyConfig) -> Value;
    fn config_schema(&self) -> schemars::Schema;
    fn initialize(
        &self,
        config: AnyConfig,
        ctx: PluginContext,
    ) -> BoxFuture<'static, Result<Box<dyn DynPlugin>, BoxError>>;
}

struct Typed<P>(PhantomData<fn() -> P>);

impl<P: Plugin> PluginType for Typed<P> {
    fn metadata(&self) -> PluginMetadata {
        P::METADATA
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<P>()
    }

    fn parse_config(
        &self,
        raw: &Value,
        path: &str,
        env_created: &[Vec<String>],
    ) -> Result<AnyConfig, Vec<Problem>> {
        let (config, mut problems) = if env_created.is_empty() {
            extract_all::<P::Config>(raw, path)
        } else {
            let mut aligned = raw.clone();
            let schema = self.config_schema();
            align_env_keys(&mut aligned, env_created, schema.as_value());
            extract_all::<P::Config>(&aligned, path)
        };
        // Validation runs on what parsed (bad keys replaced by their defaults), so a
        // config with a typo and an out-of-range value reports both.
        if !problems.is_empty() {
            suggest_unknown_keys(&mut problems, path, self.config_schema().as_value());
        }
        let Some(config) = config else {
            return Err(problems);
        };
        let config: AnyConfig = Box::new(config);
        problems.extend(self.validate(&config, path));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    fn validate(&self, config: &AnyConfig, path: &str) -> Vec<Problem> {
        let Some(config) = config.downcast_ref::<P::Config>() else {
            return vec![Problem::InvalidConfig {
                path: path.to_owned(),
                message: format!(
                    "the typed config given in code is not a `{}`",
                    std::any::type_name::<P::Config>()
                ),
            }];
        };
        match P::validate_config(config) {
            Ok(()) => Vec::new(),
            Err(violations) => violations
                .into_iter()
                .map(|v| Problem::InvalidConfig {
                    path: if v.path.is_empty() {
                        path.to_owned()
                    } else {
                        format!("{path}.{}", v.path)
                    },
                    message: v.message,
                })
                .collect(),
        }
    }

    fn effective_config(&self, config: &AnyConfig) -> Value {
        config
            .downcast_ref::<P::Config>()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(Value::Null)
    }

    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(P::Config)
    }

    fn initialize(
        &self,
        config: AnyConfig,
        ctx: PluginContext,
    ) -> BoxFuture<'static, Result<Box<dyn DynPlugin>, BoxError>> {
        async move {
            let config = config
                .downcast::<P::Config>()
                .map_err(|_| "internal error: config of the wrong type")?;
            let plugin = P::initialize(*config, &ctx).await?;
            Ok(Box::new(plugin) as Box<dyn DynPlugin>)
        }
        .boxed()
    }
}

/// Metadata chosen at run time ([`PluginRegistration::with_metadata`]).
struct Renamed {
    metadata: PluginMetadata,
    type_name: &'static str,
}

/// An initialized plugin, type-erased.
pub(crate) trait DynPlugin: Send + Sync {
    fn start<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>>;
    fn stop<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>>;
    fn restart<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>>;
    fn health<'a>(&'a self, ctx: &'a PluginContext) -> BoxFuture<'a, PluginHealth>;
}

impl<P: Plugin> DynPlugin for P {
    fn start<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::start(self, ctx).boxed()
    }

    fn stop<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::stop(self, ctx).boxed()
    }

    fn restart<'a>(&'a mut self, ctx: &'a PluginContext) -> BoxFuture<'a, Result<(), BoxError>> {
        Plugin::restart(self, ctx).boxed()
    }

    fn health<'a>(&'a self, ctx: &'a PluginContext) -> BoxFuture<'a, PluginHealth> {
        Plugin::health(self, ctx).boxed()
    }
}

/// A set of plugin types: those linked into the binary, or chosen in code.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    registrations: Vec<PluginRegistration>,
    /// The type names in `registrations`, so that `add` stays O(1).
    types: std::collections::HashSet<&'static str>,
    hints: BTreeMap<&'static str, Vec<&'static str>>,
}

impl Catalog {
    /// An empty catalog (no plugin; feature hints from the linked crates).
    pub fn new() -> Self {
        let mut hints: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
        for hint in inventory::iter::<FeatureHint> {
            let features = hints.entry(hint.plugin).or_default();
            if !features.contains(&hint.feature) {
                features.push(hint.feature);
            }
        }
        Self {
            registrations: Vec::new(),
            types: std::collections::HashSet::new(),
            hints,
        }
    }

    /// Every plugin registered with `#[ixp_plugin]` in the crates linked into this
    /// binary, in name order.
    pub fn linked() -> Self {
        let mut catalog = Self::new();
        catalog.registrations = inventory::iter::<PluginRegistration>
            .into_iter()
            .copied()
            .collect();
        catalog.registrations.sort_by_key(|r| r.metadata().name);
        catalog.types = catalog
            .registrations
            .iter()
            .map(|r| r.type_name())
            .collect();
        catalog
    }

    /// Adds the plugin type `P` (no-op if that type is already in).
    pub fn with<P: Plugin>(mut self) -> Self {
        self.add(PluginRegistration::of::<P>());
        self
    }

    /// Adds a registration (no-op if the same type is already in; a different type with
    /// the same name is kept, and reported as a duplicate by the check).
    pub fn add(&mut self, registration: PluginRegistration) {
        if self.types.insert(registration.type_name()) {
            self.registrations.push(registration);
        }
    }

    /// Adds a feature hint.
    pub fn hint(mut self, plugin: &'static str, feature: &'static str) -> Self {
        self.hints.entry(plugin).or_default().push(feature);
        self
    }

    /// The registrations.
    pub fn registrations(&self) -> &[PluginRegistration] {
        &self.registrations
    }

    /// The registration of the plugin named `name` (the first, if duplicated).
    pub fn get(&self, name: &str) -> Option<&PluginRegistration> {
        self.registrations
            .iter()
            .find(|r| r.metadata().name == name)
    }

    /// The Cargo features that compile in the built-in plugin `name`.
    pub fn features_for(&self, name: &str) -> &[&'static str] {
        self.hints.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Names of every built-in plugin known from hints.
    pub fn hinted_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.hints.keys().copied()
    }
}
