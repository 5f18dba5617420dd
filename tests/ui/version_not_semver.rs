use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin", version = "1.0")]
struct BadVersion;

impl Plugin for BadVersion {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(BadVersion)
    }
}

fn main() {}
