//! logging-plugin's Elasticsearch transport against the OpenSearch-compatible server the
//! project's script starts (`bash scripts/test-servers/start-opensearch.sh`: osmem-server
//! on 127.0.0.1:9200; `IXP_TEST_OPENSEARCH_URL` overrides), reached through an HTTP
//! forwarder that fails requests on demand.
//! Part of the service-backed suite: `cargo test -p ixp-tests --features services`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ixp_core::{Catalog, HealthStatus, Host};
use ixp_plugins::logging::{
    ElasticsearchTransport, LogService, LoggingConfig, LoggingPlugin, Transport,
};
use ixp_tests::http_fault::FaultyHttp;
use serde_json::{json, Value};

fn server_url() -> String {
    std::env::var("IXP_TEST_OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

fn es_config(
    host: String,
    index: &str,
    tune: impl FnOnce(&mut ElasticsearchTransport),
) -> LoggingConfig {
    let mut transport = ElasticsearchTransport {
        host,
        index: index.into(),
        batch_size: 50,
        flush_interval_ms: 50,
        ..ElasticsearchTransport::default()
    };
    tune(&mut transport);
    LoggingConfig {
        transports: vec![Transport::Elasticsearch(transport)],
        ..LoggingConfig::default()
    }
}

/// The `seq` field of every `es_test` record stored in `index`, straight from the
/// server (the index also holds the host's own records), with the `_count` of all.
async fn stored_seqs(index: &str) -> (u64, Vec<i64>) {
    let client = reqwest::Client::new();
    let count: Value = client
        .get(format!("{}/{index}/_count", server_url()))
        .send()
        .await
        .expect("count")
        .json()
        .await
        .expect("count json");
    let Some(count) = count["count"].as_u64() else {
        return (0, Vec::new()); // no such index yet
    };
    let found: Value = client
        .post(format!("{}/{index}/_search", server_url()))
        .json(&json!({ "size": 10000, "query": { "match_all": {} } }))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("search json");
    let seqs = found["hits"]["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter(|hit| hit["_source"]["target"] == "es_test")
        .filter_map(|hit| hit["_source"]["fields"]["seq"].as_i64())
        .collect();
    (count, seqs)
}

async fn launch(config: LoggingConfig) -> Host {
    let host = Host::builder()
        .catalog(Catalog::new())
        .plugin::<LoggingPlugin>(config)
        .build()
        .expect("plan");
    host.launch().await.expect("launch");
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_exactly_once_through_failures_and_stop_flushes() {
    let _global = ixp_tests::global_log_lock().await;
    let proxy = FaultyHttp::start(&server_url()).await.expect("proxy");
    let index = ixp_tests::unique_name("ixp-logs")
        .to_lowercase()
        .replace('_', "-");
    // The first 4 requests fail with 503; the next 2 reach the server and store their
    // documents, but the answer is lost (500): a transport that made new ids on retry
    // would store those records twice.
    proxy.faults().fail_next.store(4, Ordering::SeqCst);
    proxy.faults().lose_response_next.store(2, Ordering::SeqCst);
    let host = launch(es_config(proxy.url(), &index, |_| {})).await;
    const N: i64 = 1000;
    for seq in 0..N {
        tracing::info!(target: "es_test", seq, "record {seq}");
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the failures happen while the plugin runs, then stop: it sends the rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.faults().injected.load(Ordering::SeqCst) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let service = host
        .services()
        .get::<LogService>("logger")
        .expect("logger service");
    let stats = service.elasticsearch_stats()[0].clone();
    host.stop().await.expect("stop");

    assert_eq!(proxy.faults().injected.load(Ordering::SeqCst), 6);
    assert!(stats.failed_requests.load(Ordering::SeqCst) >= 6);
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
    assert_eq!(stats.lost.load(Ordering::SeqCst), 0);
    let (_, seqs) = stored_seqs(&index).await;
    let distinct: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(
        seqs.len(),
        N as usize,
        "documents stored (duplicates or losses otherwise)"
    );
    assert_eq!(
        distinct,
        (0..N).collect::<BTreeSet<i64>>(),
        "each record once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_what_is_still_buffered() {
    let _global = ixp_tests::global_log_lock().await;
    let index = ixp_tests::unique_name("ixp-flush")
        .to_lowercase()
        .replace('_', "-");
    // Batches this large and an interval this long mean nothing is sent before stop.
    let host = launch(es_config(server_url(), &index, |t| {
        t.batch_size = 5000;
        t.buffer_size = 5000;
        t.flush_interval_ms = 600_000;
    }))
    .await;
    for seq in 0..300 {
        tracing::warn!(target: "es_test", seq, "buffered {seq}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        stored_seqs(&index).await.1.is_empty(),
        "nothing sent before stop"
    );
    host.stop().await.expect("stop");
    let (_, seqs) = stored_seqs(&index).await;
    assert_eq!(seqs.len(), 300);
    assert_eq!(seqs.into_iter().collect::<BTreeSet<_>>().len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_and_counts_and_health_says_so_then_recovers() {
    let _global = ixp_tests::global_log_lock().await;
    let proxy = FaultyHttp::start(&server_url()).await.expect("proxy");
    let index = ixp_tests::unique_name("ixp-full")
        .to_lowercase()
        .replace('_', "-");
    proxy.faults().fail_all.store(true, Ordering::SeqCst);
    let host = launch(es_config(proxy.url(), &index, |t| {
        t.batch_size = 10;
        t.buffer_size = 100;
    }))
    .await;
    let started = Instant::now();
    for seq in 0..500 {
        tracing::info!(target: "es_test", seq, "record {seq}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "logging waited for the server: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = host.health().await.plugins["logging-plugin"].clone();
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    let details = &health.details["elasticsearch[0]"];
    let dropped = details["dropped"].as_u64().expect("dropped");
    assert!(dropped >= 380, "{details}");
    assert!(
        details["lastError"].as_str().unwrap_or("").contains("503"),
        "{details}"
    );

    // The server is back: the buffered records go out and the plugin is healthy again.
    proxy.faults().fail_all.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = host.health().await.plugins["logging-plugin"].clone();
        if health.details["elasticsearch[0]"]["lastError"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "still failing: {health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.stop().await.expect("stop");
    let (_, seqs) = stored_seqs(&index).await;
    let es_dropped = dropped; // the host's own records may be among the dropped ones
    assert!(
        seqs.len() as u64 + es_dropped >= 500,
        "stored {} + dropped {es_dropped}",
        seqs.len()
    );
    assert_eq!(
        seqs.iter().collect::<BTreeSet<_>>().len(),
        seqs.len(),
        "no record stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bulk_request_is_logged_without_the_hosts_password() {
    let _global = ixp_tests::global_log_lock().await;
    let dir = std::env::temp_dir().join(ixp_tests::unique_name("ixp-es-userinfo"));
    // Nothing listens on port 1: every `_bulk` request fails, and the first failure is
    // logged (by the console and file transports, not by the failing one).
    let mut config = es_config("http://elastic:hunter2@127.0.0.1:1".into(), "logs", |es| {
        es.flush_timeout_ms = 300;
    });
    config
        .transports
        .push(Transport::File(ixp_plugins::logging::FileTransport {
            filename: dir.join("app.log"),
            ..Default::default()
        }));
    let host = launch(config).await;
    tracing::info!(target: "es_test", "a record for the unreachable server");
    let service = host
        .services()
        .get::<LogService>("logger")
        .expect("logger service");
    let stats = service.elasticsearch_stats()[0].clone();
    // The warning follows the failure's count: wait for the line itself.
    let wanted = "`_bulk` to http://127.0.0.1:1/_bulk failed";
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = || std::fs::read_to_string(dir.join("app.log")).unwrap_or_default();
    while !read().contains(wanted) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.failed_requests.load(Ordering::SeqCst) > 0);
    host.stop().await.expect("stop");
    let logged = read();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(logged.contains(wanted), "{logged}");
    assert!(!logged.contains("hunter2"), "{logged}");
}

/// A server on a free port that accepts connections, reads, and never answers; its
/// port, and the task to abort when done.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    (port, accepting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_gives_up_on_a_server_that_never_answers_counts_what_it_lost() {
    let _global = ixp_tests::global_log_lock().await;
    // Each `_bulk` request hangs until its 30 s timeout, far past the stop's 300 ms.
    let (port, accepting) = silent_server().await;
    let config = es_config(format!("http://127.0.0.1:{port}"), "logs", |es| {
        es.batch_size = 5;
        es.flush_interval_ms = 10;
        es.request_timeout_ms = 30_000;
        es.flush_timeout_ms = 300;
    });
    let host = launch(config).await;
    let service = host
        .services()
        .get::<LogService>("logger")
        .expect("logger service");
    let stats = service.elasticsearch_stats()[0].clone();
    const N: u64 = 20;
    for seq in 0..N {
        tracing::info!(target: "es_test", seq, "record {seq}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // the first batch is in flight
    let started = Instant::now();
    host.stop().await.expect("stop");
    let took = started.elapsed();
    accepting.abort();
    assert!(took < Duration::from_secs(2), "the stop took {took:?}");
    assert_eq!(stats.sent.load(Ordering::SeqCst), 0);
    // The test's 20 records and whatever the host logged meanwhile: none sent, each lost
    // (counted), none dropped.
    let lost = stats.lost.load(Ordering::SeqCst);
    assert!(lost >= N, "lost {lost}");
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
}

/// Three transports to servers that never answer: the stop gives them their flush
/// timeout together, so it takes about one flush timeout, not three (with the default of
/// 10 s each, three would pass the 30 s hook timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_that_never_answer_stop_together_not_one_after_another() {
    let _global = ixp_tests::global_log_lock().await;
    let (port, accepting) = silent_server().await;
    let mut config = es_config(format!("http://127.0.0.1:{port}"), "logs", |es| {
        es.batch_size = 5;
        es.flush_interval_ms = 10;
        es.request_timeout_ms = 30_000;
        es.flush_timeout_ms = 2_000;
    });
    let transport = config.transports[0].clone();
    config.transports = vec![transport.clone(), transport.clone(), transport];
    let host = launch(config).await;
    for seq in 0..20 {
        tracing::info!(target: "es_test", seq, "record {seq}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // batches are in flight
    let started = Instant::now();
    host.stop().await.expect("stop");
    let took = started.elapsed();
    accepting.abort();
    // Together: one flush timeout (2 s) and a little; one after another: over 6 s.
    assert!(
        took < Duration::from_millis(4_500),
        "the stop took {took:?}"
    );
}
