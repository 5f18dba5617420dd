//! A plugin that lives in its own crate. A binary links it (and so registers it) as soon
//! as its code names anything of this crate, e.g. `use ixp_external_plugin_example as _;`.

use ixp_core::{ixp_plugin, BoxError, JsonSchema, Plugin, PluginContext};
use serde::{Deserialize, Serialize};

/// Configuration of [`GreetingPlugin`].
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GreetingConfig {
    /// The greeting it registers as the `greeting` service.
    pub greeting: String,
}

impl Default for GreetingConfig {
    fn default() -> Self {
        Self {
            greeting: "hello from another crate".into(),
        }
    }
}

/// Registers the configured greeting as the `greeting` service.
#[ixp_plugin(
    name = "greeting-plugin",
    version = "0.2.0",
    description = "A plugin defined outside the crate that runs it",
    provides = ["greeting"]
)]
pub struct GreetingPlugin {
    greeting: String,
}

impl Plugin for GreetingPlugin {
    type Config = GreetingConfig;

    async fn initialize(config: GreetingConfig, _ctx: &PluginContext) -> Result<Self, BoxError> {
        Ok(Self {
            greeting: config.greeting,
        })
    }

    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.services().register("greeting", self.greeting.clone())?;
        Ok(())
    }
}
