//! Plugin health and its aggregate for the whole server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Health status of one plugin or of the whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, with reduced function (slow backend, fallback in use).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The worse of two statuses.
    pub fn worst(self, other: HealthStatus) -> HealthStatus {
        self.max(other)
    }
}

/// The health a plugin reports: status, an optional message and free-form details.
///
/// ```
/// use ixp_core::{HealthStatus, PluginHealth};
///
/// let health = PluginHealth::degraded("replica lag is high").with_detail("lag_ms", 1200);
/// assert_eq!(health.status, HealthStatus::Degraded);
/// assert_eq!(health.details["lag_ms"], 1200);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginHealth {
    /// The status.
    pub status: HealthStatus,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable details (latency, sizes, counters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

impl PluginHealth {
    /// Healthy, without message.
    pub fn healthy() -> Self {
        Self {
            status: HealthStatus::Healthy,
            message: None,
            details: BTreeMap::new(),
        }
    }

    /// Degraded, with a message.
    pub fn degraded(message: impl Into<String>) -> Self {
        Self::healthy()
            .with_status(HealthStatus::Degraded)
            .with_message(message)
    }

    /// Unhealthy, with a message.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::healthy()
            .with_status(HealthStatus::Unhealthy)
            .with_message(message)
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: HealthStatus) -> Self {
        self.status = status;
        self
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// The health of every plugin and the aggregate: unhealthy if any plugin is, else
/// degraded if any plugin is, else healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The aggregate status.
    pub status: HealthStatus,
    /// Each plugin's health, by name.
    pub plugins: BTreeMap<String, PluginHealth>,
}

impl HealthReport {
    /// Aggregates plugin healths.
    pub fn from_plugins(plugins: BTreeMap<String, PluginHealth>) -> Self {
        let status = plugins
            .values()
            .map(|h| h.status)
            .fold(HealthStatus::Healthy, HealthStatus::worst);
        Self { status, plugins }
    }
}
