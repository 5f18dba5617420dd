use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "Bad Name", version = "1.0.0")]
struct BadName;

impl Plugin for BadName {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(BadName)
    }
}

fn main() {}
