use ixp_core::{ixp_plugin, BoxError, Plugin, PluginContext};

/// Not deserializable: no serde derives.
pub struct RawConfig {
    pub ttl: u64,
}

#[ixp_plugin(name = "x-plugin", version = "1.0.0")]
struct NoSerde;

impl Plugin for NoSerde {
    type Config = RawConfig;
    async fn initialize(_: RawConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(NoSerde)
    }
}

fn main() {}
