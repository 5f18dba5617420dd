use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(version = "1.0.0")]
struct Unnamed;

impl Plugin for Unnamed {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Unnamed)
    }
}

fn main() {}
