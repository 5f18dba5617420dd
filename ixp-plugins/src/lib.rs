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
#[cfg(any(feature = "logging", feature = "analytics"))]
mod time;
#[cfg(any(feature = "logging", feature = "events-nats"))]
mod url_text;

/// `sqlx`, re-exported so that plugins use the pool types of the same version.
#[cfg(any(feature = "database-sqlite", feature = "database-postgres"))]
pub use sqlx;

/// `mongodb` (with its `bson`), re-exported so that plugins use the driver's types of
/// the same version.
#[cfg(feature = "database-mongodb")]
pub use mongodb;

/// Submits a [`FeatureHint`](ixp_core::FeatureHint) for every backend feature of every
/// built-in plugin, whether or not it is enabled.
macro_rules! feature_hints {
    ($($plugin:literal => [$($feature:literal),+ $(,)?]),+ $(,)?) => {
        $($(
            ixp_core::__private::inventory::submit! {
                ixp_core::FeatureHint { plugin: $plugin, feature: $feature }
            }
        )+)+
    };
}

feature_hints! {
    "cache-plugin" => ["cache-memory", "cache-redis"],
    "database-plugin" => ["database-sqlite", "database-postgres", "database-mongodb"],
    "logging-plugin" => ["logging", "logging-elasticsearch"],
    "auth-plugin" => ["auth-jwt", "auth-oauth2"],
    "email-plugin" => ["email"],
    "analytics-plugin" => ["analytics"],
    "events-nats-plugin" => ["events-nats"],
}
