//! `bare_axum`'s `/hello` route and a plugin that mounts it: shared by the `http`
//! bench and the `http_cost` example (which includes this file by path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::{get, MethodRouter};
use ixp_core::{ixp_plugin, BoxError, NoConfig, Plugin, PluginContext};

/// `bare_axum`'s `/hello`: a counter and the greeting.
pub fn hello() -> MethodRouter {
    let greeting: Arc<str> = "Hello from ixp".into();
    let served = Arc::new(AtomicU64::new(0));
    get(move || {
        served.fetch_add(1, Ordering::Relaxed);
        let greeting = greeting.clone();
        async move { greeting.to_string() }
    })
}

/// Mounts [`hello`] on `/hello`.
#[ixp_plugin(name = "hello-bench-plugin", version = "1.0.0")]
pub struct HelloBench;

impl Plugin for HelloBench {
    type Config = NoConfig;
    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(HelloBench)
    }
    async fn start(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        ctx.http().route("/hello", hello())?;
        Ok(())
    }
}
