use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin", version = "1.0.0", depends = ["a"])]
struct UnknownKey;

impl Plugin for UnknownKey {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(UnknownKey)
    }
}

fn main() {}
