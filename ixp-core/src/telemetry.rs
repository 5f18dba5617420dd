//! The process-wide tracing subscriber, with an output that can be replaced while the
//! process runs.
//!
//! A process has one global `tracing` subscriber and it can be set only once. ixp sets
//! it (the CLI does so first thing, with console output) as a [`Registry`] with two
//! reloadable parts, a filter and an output layer, so that a logging plugin that
//! starts later can install its own filter and transports, and put the console back
//! when it stops, without a second global subscriber.
//!
//! ```
//! use ixp_core::telemetry;
//!
//! telemetry::install(telemetry::console_layer(), telemetry::default_filter())
//!     .expect("no other global subscriber in this process");
//! tracing::info!("to the console");
//! // later, e.g. from a logging plugin:
//! let filter = tracing_subscriber::EnvFilter::new("debug");
//! telemetry::install(telemetry::console_layer(), filter).expect("replaced");
//! ```

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

pub use tracing_subscriber;

/// An output layer of the global subscriber (one transport, or a `Vec` of them).
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

type WithOutput = tracing_subscriber::layer::Layered<reload::Layer<BoxedLayer, Registry>, Registry>;

struct Handles {
    filter: reload::Handle<EnvFilter, WithOutput>,
    output: reload::Handle<BoxedLayer, Registry>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// Why the global subscriber could not be installed or replaced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// Something other than ixp set the global subscriber of this process first.
    #[error("a global tracing subscriber was installed outside ixp; its output cannot be replaced (let ixp install it: `ixp_core::telemetry::install`)")]
    ForeignSubscriber,
    /// The reload failed (the subscriber was dropped).
    #[error("cannot replace the tracing output: {0}")]
    Reload(String),
}

/// Makes `output` (with `filter`) the output of the global subscriber: installs ixp's
/// global subscriber on the first call, replaces filter and output on later calls.
pub fn install(output: BoxedLayer, filter: EnvFilter) -> Result<(), TelemetryError> {
    let _serial = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handles) = HANDLES.get() {
        handles
            .filter
            .reload(filter)
            .map_err(|e| TelemetryError::Reload(e.to_string()))?;
        return handles
            .output
            .reload(output)
            .map_err(|e| TelemetryError::Reload(e.to_string()));
    }
    let (filter, filter_handle) = reload::Layer::new(filter);
    let (output, output_handle) = reload::Layer::new(output);
    Registry::default()
        .with(output)
        .with(filter)
        .try_init()
        .map_err(|_| TelemetryError::ForeignSubscriber)?;
    let _ = HANDLES.set(Handles {
        filter: filter_handle,
        output: output_handle,
    });
    Ok(())
}

/// Whether ixp's global subscriber is installed in this process.
pub fn is_installed() -> bool {
    HANDLES.get().is_some()
}

/// Human-readable console output on stderr, colored when stderr is a terminal.
pub fn console_layer() -> BoxedLayer {
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .boxed()
}

/// The filter from `RUST_LOG`, or `info` when it is unset or invalid.
pub fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}
