//! The baseline of `scripts/bench-binary.sh`: a bare axum server with the same `GET
//! /hello` route as `ixp-app`'s hello-plugin (a counter and the greeting), plus a static
//! `GET /health`, on the same tokio runtime shape as `ixp-app` (multi-thread, one worker
//! per core). `POST /collect` answers 200 to anything: the script runs a second instance
//! as the collector of ixp-app's analytics-plugin.
//!
//! An optional second argument adds that many nanoseconds of busy work to every
//! `/hello` (a calibration: how much requests/s a given extra CPU per request costs on
//! the machine, see docs/performance.md).
//!
//! ```sh
//! cargo run --release -p ixp-core --example bare_axum -- 3002
//! cargo run --release -p ixp-core --example bare_axum -- 3002 1500   # +1.5 µs per /hello
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => return Err("usage: bare_axum PORT [WORK_NS]".into()),
    };
    let work = match std::env::args().nth(2) {
        Some(arg) => Duration::from_nanos(arg.parse()?),
        None => Duration::ZERO,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(port, work))
}

async fn serve(port: u16, work: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let greeting: Arc<str> = "Hello from ixp".into();
    let served = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/hello",
            get(move || {
                served.fetch_add(1, Ordering::Relaxed);
                busy(work);
                let greeting = greeting.clone();
                async move { greeting.to_string() }
            }),
        )
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "healthy" })) }),
        )
        .route("/collect", post(|_body: Bytes| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Spins for `work` (nothing when zero).
fn busy(work: Duration) {
    if work.is_zero() {
        return;
    }
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}
