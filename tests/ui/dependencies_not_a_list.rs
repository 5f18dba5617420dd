use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

#[ixp_plugin(name = "x-plugin", version = "1.0.0", dependencies = "database-plugin")]
struct NotAList;

impl Plugin for NotAList {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(NotAList)
    }
}

fn main() {}
