//! What analytics-plugin costs the code that publishes a tracked event: a
//! `request.completed` (what the HTTP front emits for every request) emitted on the bus
//! of a running analytics-plugin, which serializes it into its batch inline, while its
//! sender posts the batches to an in-process collector on loopback.
//!
//! Baselines in the same run: the same `emit` with nobody subscribed (building and
//! routing the event, what every request pays once anyone listens), and
//! `serde_json::to_vec` of the same event as a JSON value (what one serialization of
//! the tracked JSON costs with the usual tool, no bus, no buffer).
//!
//! Only the emits are timed: `batchSize` is the chunk of 2,000 events emitted between
//! two untimed waits for the sender, so nothing is sent while the emits run; after each
//! chunk the bench flushes (one request to the collector) and waits until it is
//! delivered, so the buffer never fills and no event is dropped or lost (checked at
//! the end).
//!
//! `cargo bench -p ixp-plugins --features analytics --bench analytics`; see
//! docs/performance.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ixp_core::axum::routing::post;
use ixp_core::axum::Router;
use ixp_core::http::RequestCompleted;
use ixp_core::testing::TestServer;
use ixp_core::{EventBus, TypedEvent};
use ixp_plugins::analytics::{Analytics, AnalyticsConfig, AnalyticsPlugin, Millis};

/// Events emitted between two untimed waits for the sender (and the batch size).
const CHUNK: u64 = 2_000;

/// The longest an untimed flush may take before the bench fails.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

fn request_completed(id: u64) -> RequestCompleted {
    RequestCompleted {
        id,
        method: "GET".to_owned(),
        path: "/hello".to_owned(),
        status: 200,
        duration_ms: 0.032949,
        response_size: Some(14),
    }
}

/// Emits `iters` events in chunks of [`CHUNK`]; after each chunk, untimed, `settle`.
async fn timed_emits(events: &EventBus, iters: u64, analytics: Option<&Analytics>) -> Duration {
    let mut timed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let start = Instant::now();
        for id in done..done + n {
            events
                .emit(RequestCompleted::TOPIC, request_completed(id))
                .await;
        }
        timed += start.elapsed();
        done += n;
        if let Some(analytics) = analytics {
            tokio::time::timeout(FLUSH_TIMEOUT, analytics.flush())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the collector did not take a batch in {FLUSH_TIMEOUT:?}: {:?}",
                        analytics.stats()
                    )
                });
        }
    }
    timed
}

/// An HTTP collector on a free loopback port: `POST /collect` answers 200.
async fn collector() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!(
        "http://{}/collect",
        listener.local_addr().expect("local address")
    );
    let app = Router::new().route("/collect", post(|_body: String| async {}));
    tokio::spawn(async move { ixp_core::axum::serve(listener, app).await });
    url
}

fn analytics(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tracked, untracked, analytics) = rt.block_on(async {
        let endpoint = collector().await;
        let tracked = TestServer::builder()
            .plugin::<AnalyticsPlugin>(AnalyticsConfig {
                endpoint,
                batch_size: CHUNK as usize,
                flush_interval: Millis::Text("1h".into()),
                max_retries: Some(3),
                ..AnalyticsConfig::default()
            })
            .start()
            .await
            .expect("analytics-plugin starts");
        let analytics = tracked
            .services()
            .get::<Analytics>("analytics")
            .expect("the analytics service");
        let untracked = TestServer::builder().start().await.expect("starts");
        (tracked, untracked, analytics)
    });

    let mut group = c.benchmark_group("analytics/request_completed");
    group.throughput(Throughput::Elements(1));
    group.bench_function("emit_no_subscriber", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed_emits(untracked.events(), iters, None))
    });
    group.bench_function("emit_tracked", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed_emits(tracked.events(), iters, Some(&analytics)))
    });
    let json = serde_json::json!({
        "id": "5f0c3a9e1b2d4c6f-17",
        "timestamp": "2025-01-31T12:00:00.123Z",
        "event": "request_completed",
        "topic": "request.completed",
        "properties": {"requestId": 17, "method": "GET", "url": "/hello",
                       "statusCode": 200, "duration": 0.032949, "responseSize": 14},
    });
    group.bench_function("serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&json)).expect("JSON"))
    });
    group.finish();

    rt.block_on(async {
        tracked.stop().await.expect("stops");
        untracked.stop().await.expect("stops");
    });
    let stats = analytics.stats();
    assert_eq!(
        (
            stats.dropped,
            stats.failed,
            stats.lost,
            stats.failed_requests
        ),
        (0, 0, 0, 0),
        "every tracked event was delivered at the first try: {stats:?}"
    );
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = analytics
}
criterion_main!(benches);
