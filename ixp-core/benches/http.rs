//! HTTP dispatch in process: what ixp adds to a request in user space, without sockets,
//! the kernel or hyper (the whole-binary figures of `scripts/bench-binary.sh` include
//! those). Each row builds a `GET` request and calls a service with it, as hyper does
//! for every request, and drops the response.
//!
//! * `bare_axum/*`: an axum `Router` with the same routes as the `bare_axum` example
//!   (the baseline).
//! * `ixp/*`: [`IxpServer::service`] (what `IxpServer::serve` serves) of a server whose
//!   plugin mounts the same `/hello` route; `ixp/health` is the cached `/health` answer.
//! * `ixp_with_request_events/hello`: the same with inline subscribers on
//!   `request.started` and `request.completed` (as analytics-plugin subscribes), so
//!   both request events are built and delivered.
//!
//! `cargo bench -p ixp-core --bench http`; see docs/performance.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

mod hello;
mod support;

use std::hint::black_box;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::{Json, Router};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ixp_core::http::IxpServer;
use ixp_core::NoConfig;
use tower_service::Service;

use hello::{hello, subscribe_request_events, HelloBench};

/// Calls `service` with a new `GET path` per iteration.
fn bench_get<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    path: &'static str,
    service: S,
) where
    S: Service<Request<Body>> + Clone,
    S::Future: std::future::Future<Output = Result<S::Response, S::Error>>,
{
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let mut service = service.clone();
            async move {
                let request = Request::get(path)
                    .body(Body::empty())
                    .expect("a valid request");
                black_box(service.call(request).await.is_ok())
            }
        })
    });
}

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for the bench");
    let mut group = c.benchmark_group("http/dispatch");
    group.throughput(Throughput::Elements(1));

    let bare = Router::new().route("/hello", hello()).route(
        "/health",
        get(|| async { Json(serde_json::json!({ "status": "healthy" })) }),
    );
    bench_get(&mut group, &rt, "bare_axum/hello", "/hello", bare.clone());
    bench_get(&mut group, &rt, "bare_axum/health", "/health", bare);

    let server = IxpServer::builder()
        .catalog(ixp_core::Catalog::new())
        .plugin::<HelloBench>(NoConfig {})
        .build()
        .expect("a valid composition");
    rt.block_on(server.start()).expect("the plugin starts");
    bench_get(&mut group, &rt, "ixp/hello", "/hello", server.service());
    bench_get(&mut group, &rt, "ixp/health", "/health", server.service());

    let _subscriptions = subscribe_request_events(server.host().events()).expect("valid topics");
    bench_get(
        &mut group,
        &rt,
        "ixp_with_request_events/hello",
        "/hello",
        server.service(),
    );
    group.finish();
    rt.block_on(server.stop()).expect("the plugin stops");
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = http
}
criterion_main!(benches);
