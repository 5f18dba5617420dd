//! A plugin defined in another crate of the workspace is found by the link-time
//! registry once the binary links that crate.
//!
//! Linking is what registers: a crate that only appears in Cargo.toml but is never named
//! in the code is not linked, and its plugins are absent. `use crate_name as _;` is the
//! documented way to link a plugin crate whose items the binary does not otherwise use.

use ixp_core::{Catalog, Host};
use ixp_external_plugin_example as _;

#[test]
fn the_registry_finds_a_plugin_of_another_crate() {
    let catalog = Catalog::linked();
    let registration = catalog
        .get("greeting-plugin")
        .expect("linked from ixp-external-plugin-example");
    assert_eq!(registration.metadata().version, "0.2.0");
    assert_eq!(
        registration.type_name(),
        "ixp_external_plugin_example::GreetingPlugin"
    );
}

#[tokio::test]
async fn and_runs_it() {
    let host = Host::builder()
        .catalog(Catalog::new().with::<ixp_external_plugin_example::GreetingPlugin>())
        .build()
        .expect("valid");
    host.launch().await.expect("launch");
    let greeting = host.services().get::<String>("greeting").expect("service");
    assert_eq!(greeting.as_str(), "hello from another crate");
    host.stop().await.expect("stop");
}
