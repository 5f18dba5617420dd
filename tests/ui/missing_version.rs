use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin")]
struct Unversioned;

impl Plugin for Unversioned {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Unversioned)
    }
}

fn main() {}
