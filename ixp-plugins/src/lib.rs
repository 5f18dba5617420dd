//! # ixp-plugins
//!
//! The built-in plugins of [ixp](ixp_core), each backend behind its own Cargo feature so
//! that a binary contains exactly the backends it uses:
//!
//! | plugin | service | features |
//! | --- | --- | --- |
//! | [`cache-plugin`](cache) | `cache` ([`cache::Cache`]) | `cache-memory`, `cache-redis` |
//! | [`auth-plugin`](auth) | `auth` ([`auth::Auth`]) | `auth-jwt`, `auth-oauth2` |
//! | [`events-nats-plugin`](events_nats) | `events-bridge` ([`events_nats::BridgeStats`]) | `events-nats` |
//! | [`logging-plugin`](logging) | `logger` ([`logging::LogService`]) | `logging`, `logging-elasticsearch` |
//! | [`database-plugin`](database) | `database` ([`database::Database`]) | `database-sqlite`, `database-postgres`, `database-mongodb` |
//! | [`analytics-plugin`](analytics) | `analytics` ([`analytics::Analytics`]) | `analytics` |
//! | [`email-plugin`](email) | `email` ([`email::Email`]) | `email` |
//!
//! Every built-in plugin name is known to the start-up check even when its feature is
//! off, so a config that asks for it fails with the feature to enable
//! ([`ixp_core::FeatureHint`]).
//!
//! A binary links these plugins by naming the crate once, e.g. `use ixp_plugins as _;`.

#[cfg(feature = "analytics")]
pub mod analytics;
#[cfg(feature = "auth-jwt")]
pub mod auth;
#[cfg(any(feature = "cache-memory", feature = "cache-redis"))]
pub mod cache;
#[cfg(any(
    feature = "database-sqlite",
    feature = "database-postgres",
    feature = "database-mongodb"
))]
pub mod database;
#[cfg(feature = "email")]
pub mod email;
#[cfg(feature = "events-nats")]
pub mod events_nats;
#[cfg(feature = "logging")]
pub mod logging;

/// `sqlx`, re-exported so that plugins use the pool types of the same version.
#[cfg(any(feature = "database-sqlite", feature = "database-postgres"))]
pub use sqlx;

/// `mongodb` (with its `bson`), re-exported so that plugins use the driver's types of
/// the same version.
#[cfg(feature = "database-mongodb")]
pub use mongodb;

ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "cache-plugin", feature: "cache-memory" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "cache-plugin", feature: "cache-redis" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "database-plugin", feature: "database-sqlite" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "logging-plugin", feature: "logging" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "auth-plugin", feature: "auth-jwt" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "events-nats-plugin", feature: "events-nats" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "auth-plugin", feature: "auth-oauth2" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "database-plugin", feature: "database-postgres" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "database-plugin", feature: "database-mongodb" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "email-plugin", feature: "email" }
}
ixp_core::__private::inventory::submit! {
    ixp_core::FeatureHint { plugin: "analytics-plugin", feature: "analytics" }
}
