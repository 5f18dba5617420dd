//! `ixp-app`: an IXP server whose plugins are the built-in ones picked by this crate's
//! Cargo features plus the application's own ([`hello`]). The composition comes from
//! the features, `#[ixp_plugin]` and `ixp.toml`; see `ixp-app --help`.

// Links the built-in plugins chosen by the Cargo features.
use ixp_plugins as _;

mod hello;

fn main() -> std::process::ExitCode {
    ixp_core::cli::main()
}
