//! # ixp-plugins
//!
//! The built-in plugins of [ixp](ixp_core), each backend behind its own Cargo feature so
//! that a binary contains exactly the backends it uses:
//!
//! | plugin | service | features |
//! | --- | --- | --- |
//! | [`cache-plugin`](cache) | `cache` ([`cache::Cache`]) | `cache-memory`, `cache-redis` |
//!
//! Every built-in plugin name is known to the start-up check even when its feature is
//! off, so a config that asks for it fails with the feature to enable
//! ([`ixp_core::FeatureHint`]).
//!
//! A binary links these plugins by naming the crate once, e.g. `use ixp_plugins as _;`.

#[cfg(any(feature = "cache-memory", feature = "cache-redis"))]
pub mod cache;

ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "cache-plugin", feature: "cache-memory" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "cache-plugin", feature: "cache-redis" }
}

/// The Cargo features of this crate that are enabled in this build, in a fixed order.
pub const ENABLED_FEATURES: &[&str] = &[
    #[cfg(feature = "cache-memory")]
    "cache-memory",
    #[cfg(feature = "cache-redis")]
    "cache-redis",
];
