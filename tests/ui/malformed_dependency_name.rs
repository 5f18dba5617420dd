use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin", version = "1.0.0", dependencies = ["Database Plugin!"])]
struct BadDepName;

impl Plugin for BadDepName {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(BadDepName)
    }
}

fn main() {}
