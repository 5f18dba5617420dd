//! The driver of `scripts/bench-http-cachegrind.sh`: REQUESTS `GET /hello` requests
//! through one service, as the `http/dispatch` bench sends them (a request built and the
//! service called and awaited, the answer dropped; no sockets). Services:
//! * `bare`: an axum `Router` with the same `/hello` (a counter and the greeting), the
//!   baseline;
//! * `ixp`: `IxpServer::service()` of a server whose plugin mounts that route;
//! * `ixp_events`: the same with an inline subscriber on `request.started` and on
//!   `request.completed` (as analytics-plugin subscribes).
//!
//! Run under cachegrind at two request counts, the difference gives instructions and
//! simulated cache misses per request: what ixp adds to a request in user space, in
//! figures that do not depend on what the machine's neighbours do.
//!
//! ```sh
//! cargo run --release -p ixp-core --example http_cost -- ixp 100000
//! ```

use std::hint::black_box;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use ixp_core::http::IxpServer;
use ixp_core::NoConfig;
use tower_service::Service;

#[path = "../benches/hello/mod.rs"]
mod hello;
use hello::{hello, subscribe_request_events, HelloBench};

/// Sends `requests` requests to `service`; returns how many were answered 200.
async fn drive<S>(service: S, requests: u64) -> u64
where
    S: Service<Request<Body>, Response = axum::response::Response> + Clone,
{
    let mut ok = 0;
    for _ in 0..requests {
        let mut service = service.clone();
        let request = Request::get("/hello")
            .body(Body::empty())
            .expect("a valid request");
        if let Ok(response) = service.call(request).await {
            ok += u64::from(black_box(response).status().is_success());
        }
    }
    ok
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: http_cost bare|ixp|ixp_events REQUESTS";
    let mut args = std::env::args().skip(1);
    let (Some(kind), Some(requests)) = (args.next(), args.next()) else {
        return Err(usage.into());
    };
    let requests: u64 = requests.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answered = runtime.block_on(async {
        if kind == "bare" {
            return Ok(drive(Router::new().route("/hello", hello()), requests).await);
        }
        let subscribed = match kind.as_str() {
            "ixp" => false,
            "ixp_events" => true,
            _ => return Err(usage.into()),
        };
        let server = IxpServer::builder()
            .catalog(ixp_core::Catalog::new())
            .plugin::<HelloBench>(NoConfig {})
            .build()?;
        server.start().await?;
        let _subscriptions = if subscribed {
            Some(subscribe_request_events(server.host().events())?)
        } else {
            None
        };
        let answered = drive(server.service(), requests).await;
        server.stop().await?;
        Ok::<_, Box<dyn std::error::Error>>(answered)
    })?;
    if answered != requests {
        return Err(format!("{answered} of {requests} requests answered 200").into());
    }
    println!("{answered}");
    Ok(())
}
