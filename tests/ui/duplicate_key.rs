use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin", version = "1.0.0", name = "y-plugin")]
struct Twice;

impl Plugin for Twice {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Twice)
    }
}

fn main() {}
