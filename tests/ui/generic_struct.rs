use ixp_core::ixp_plugin;

#[ixp_plugin(name = "x-plugin", version = "1.0.0")]
struct Generic<T>(T);

fn main() {}
