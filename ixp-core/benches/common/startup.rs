//! The start-up measurement shared by `benches/startup.rs` (typed compositions built in
//! this file's crate) and the crates `scripts/bench-startup.sh` generates from the
//! dependency graphs in `benches/data/` (one plugin type per graph node).
//!
//! One criterion group; for each composition:
//! * `catalog`: building the catalog (`Catalog::add` of every registration, in the
//!   graph's listed order);
//! * `plan`: the start-up check (`ixp_core::check`) on the default config;
//! * `plan_init_start_stop`: the check, `Host::from_plan`, `initialize`, `start` and
//!   `stop`, on a multi-thread tokio runtime with 2 workers (as `ixp-app` runs);
//! * `baseline_spawn_x3`: the same-run baseline of the lifecycle: 3 × plugins
//!   `tokio::spawn(trivial).await` round trips in sequence, from the same place (the host
//!   runs each of `initialize`, `start` and `stop` in its own task).
//!
//! Throughput is plugins + edges, so a linear start-up shows the same elements/s at
//! every size.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ixp_core::{check, Catalog, Host, IxpConfig, PluginRegistration};

/// One composition to measure.
pub struct Composition {
    /// The label of the size, e.g. `graph-1000`.
    pub label: String,
    /// The registrations, in the order they are added to the catalog.
    pub registrations: Vec<PluginRegistration>,
    /// Plugins + dependency edges.
    pub elements: u64,
}

/// A multi-thread runtime with 2 workers, like `ixp-app`'s on this machine.
pub fn runtime() -> tokio::runtime::Runtime {
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

/// Runs the group `name` over `compositions`.
pub fn bench_startup(c: &mut Criterion, name: &str, compositions: &[Composition]) {
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    for composition in compositions {
        let label = &composition.label;
        group.throughput(Throughput::Elements(composition.elements));
        group.bench_function(BenchmarkId::new("catalog", label), |b| {
            b.iter(|| black_box(catalog_of(&composition.registrations)))
        });
        let catalog = catalog_of(&composition.registrations);
        let config = IxpConfig::default();
        let plan = check(&catalog, &config).expect("the composition passes the check");
        assert_eq!(plan.plugins().len(), composition.registrations.len());
        group.bench_function(BenchmarkId::new("plan", label), |b| {
            b.iter(|| black_box(check(&catalog, &config).expect("checked")))
        });
        group.bench_function(BenchmarkId::new("plan_init_start_stop", label), |b| {
            b.to_async(&rt).iter(|| async {
                let plan = check(&catalog, &config).expect("checked");
                let host = Host::from_plan(plan, IxpConfig::default());
                host.initialize().await.expect("initialized");
                host.start().await.expect("started");
                host.stop().await.expect("stopped");
                black_box(host)
            })
        });
        let hooks = 3 * composition.registrations.len();
        group.bench_function(BenchmarkId::new("baseline_spawn_x3", label), |b| {
            b.to_async(&rt).iter(|| async {
                for i in 0..hooks {
                    let done = tokio::spawn(async move { black_box(i) }).await;
                    black_box(done.expect("trivial task"));
                }
            })
        });
    }
    group.finish();
}
