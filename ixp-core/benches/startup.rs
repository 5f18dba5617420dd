//! Start-up of large compositions: the dependency graphs of
//! `benches/data/graph-{100,1000,10000}.json` (each entry: a plugin name and the names it
//! depends on; every plugin trivial), loaded with [`PluginRegistration::with_metadata`]
//! (one Rust type standing for every node).
//!
//! One criterion group; for each graph:
//! * `catalog`: building the catalog (`Catalog::add` of every registration, in the
//!   graph's listed order);
//! * `plan`: the start-up check (`ixp_core::check`) on the default config;
//! * `plan_init_start`: the check, `Host::from_plan`, `initialize` and `start` (the
//!   issue's goal: 10,000 plugins in under 20 ms), on a multi-thread tokio runtime with 2
//!   workers as `ixp-app` runs;
//! * `stop`: `stop` of the started host;
//! * `baseline_direct_hooks`: the same-run baseline: every node's `initialize`, `start`
//!   and `stop` called directly and awaited in start order, each as a boxed future (what
//!   any type-erased host pays at the least), with the plugin values kept in a `Vec`.
//!
//! Throughput is plugins + edges, so a linear start-up shows the same elements/s at
//! every size.
//!
//! `cargo bench -p ixp-core --bench startup`; see docs/performance.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use ixp_core::{
    check, ixp_plugin, BoxError, Catalog, Host, IxpConfig, NoConfig, Plugin, PluginContext,
    PluginMeta, PluginMetadata, PluginRegistration,
};
use serde::Deserialize;

/// The plugin every graph node is: initializes, starts and stops at once.
#[ixp_plugin(
    name = "node",
    version = "1.0.0",
    description = "a trivial plugin of the start-up benchmark"
)]
struct Node;

impl Plugin for Node {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Node)
    }
}

#[derive(Deserialize)]
struct Graph {
    plugins: Vec<GraphNode>,
}

#[derive(Deserialize)]
struct GraphNode {
    name: String,
    deps: Vec<String>,
}

/// One composition to measure.
struct Composition {
    label: String,
    registrations: Vec<PluginRegistration>,
    /// Plugins + dependency edges.
    elements: u64,
}

/// The graph `benches/data/graph-{n}.json` as registrations of [`Node`].
fn load(n: usize) -> Composition {
    let path = format!("{}/benches/data/graph-{n}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let graph: Graph = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut elements = 0;
    let registrations = graph
        .plugins
        .into_iter()
        .map(|node| {
            elements += 1 + node.deps.len() as u64;
            let deps: Vec<&'static str> = node.deps.into_iter().map(leak).collect();
            PluginRegistration::with_metadata::<Node>(PluginMetadata {
                name: leak(node.name),
                dependencies: Box::leak(deps.into_boxed_slice()),
                ..Node::METADATA
            })
        })
        .collect();
    Composition {
        label: format!("graph-{n}"),
        registrations,
        elements,
    }
}

/// A multi-thread runtime with 2 workers, like `ixp-app`'s on this machine.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime for the benches")
}

fn catalog_of(registrations: &[PluginRegistration]) -> Catalog {
    let mut catalog = Catalog::new();
    for registration in registrations {
        catalog.add(*registration);
    }
    catalog
}

/// Which part of the lifecycle a bench times.
#[derive(Clone, Copy)]
enum Phase {
    /// Plan + `Host::from_plan` + initialize + start.
    Start,
    /// Stop of the started host.
    Stop,
}

/// `iters` whole lifecycles of the composition; the time spent in `timed`.
async fn lifecycles(catalog: &Catalog, config: &IxpConfig, iters: u64, timed: Phase) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let begin = Instant::now();
        let plan = check(catalog, config).expect("the composition passes the check");
        let host = Host::from_plan(plan, config.clone());
        host.initialize().await.expect("initialized");
        host.start().await.expect("started");
        let started = Instant::now();
        host.stop().await.expect("stopped");
        total += match timed {
            Phase::Start => started - begin,
            Phase::Stop => started.elapsed(),
        };
    }
    total
}

/// The baseline's hooks: boxed like a type-erased host's.
fn hook(node: &mut Node) -> BoxFuture<'_, Result<(), BoxError>> {
    async move {
        black_box(&node);
        Ok(())
    }
    .boxed()
}

fn startup(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("startup");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for n in [100, 1000, 10_000] {
        let composition = load(n);
        let label = &composition.label;
        group.throughput(Throughput::Elements(composition.elements));
        group.bench_function(BenchmarkId::new("catalog", label), |b| {
            b.iter(|| black_box(catalog_of(&composition.registrations)))
        });
        let catalog = catalog_of(&composition.registrations);
        let config = IxpConfig::default();
        let plan = check(&catalog, &config).expect("the composition passes the check");
        assert_eq!(plan.plugins().len(), n);
        group.bench_function(BenchmarkId::new("plan", label), |b| {
            b.iter(|| black_box(check(&catalog, &config).expect("checked")))
        });
        for (phase, timed) in [("plan_init_start", Phase::Start), ("stop", Phase::Stop)] {
            group.bench_function(BenchmarkId::new(phase, label), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| lifecycles(&catalog, &config, iters, timed))
            });
        }
        group.bench_function(BenchmarkId::new("baseline_direct_hooks", label), |b| {
            b.to_async(&rt).iter(|| async {
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    let config = black_box(NoConfig::default());
                    nodes.push(
                        async { Ok::<_, BoxError>(Node) }
                            .boxed()
                            .await
                            .map(|node| (node, config)),
                    );
                }
                for (node, _) in nodes.iter_mut().flatten() {
                    hook(node).await.expect("trivial");
                }
                for (node, _) in nodes.iter_mut().flatten().rev() {
                    hook(node).await.expect("trivial");
                }
                black_box(nodes)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, startup);
criterion_main!(benches);
