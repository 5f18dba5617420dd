//! Service registry look-ups against their baseline, reading an `Arc` field of a
//! struct (what a plugin that kept the service in a field pays).
//!
//! Each look-up runs on a registry holding the looked-up service plus `others` services
//! of other types and names (0, 10 and 100), to show whether the cost depends on how
//! many services are registered.
//!
//! `cargo bench -p ixp-core --bench services`; see docs/performance.md.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

mod support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ixp_core::ServiceRegistry;

/// The looked-up service.
#[derive(Debug)]
struct Clock {
    offset: u64,
}

/// Other services, of another type.
#[derive(Debug)]
struct Other(#[allow(dead_code)] usize);

/// The baseline: the service kept in a field.
struct Holder {
    clock: Arc<Clock>,
}

fn registry(others: usize) -> ServiceRegistry {
    let registry = ServiceRegistry::new();
    for i in 0..others {
        registry
            .register(&format!("other-service-{i}"), Other(i))
            .expect("unique name");
    }
    registry
        .register("clock", Clock { offset: 3 })
        .expect("unique name");
    registry
}

fn services(c: &mut Criterion) {
    let mut group = c.benchmark_group("services/lookup");
    group.throughput(Throughput::Elements(1));

    let holder = Holder {
        clock: Arc::new(Clock { offset: 3 }),
    };
    group.bench_function("arc_field_clone", |b| {
        b.iter(|| {
            let clock = Arc::clone(&black_box(&holder).clock);
            black_box(clock.offset)
        })
    });

    for others in [0usize, 10, 100] {
        let registry = registry(others);
        group.bench_with_input(BenchmarkId::new("get_named", others), &others, |b, _| {
            b.iter(|| {
                let clock = black_box(&registry)
                    .get::<Clock>(black_box("clock"))
                    .expect("registered");
                black_box(clock.offset)
            })
        });
        group.bench_with_input(BenchmarkId::new("get_typed", others), &others, |b, _| {
            b.iter(|| {
                let clock = black_box(&registry)
                    .get_typed::<Clock>()
                    .expect("registered");
                black_box(clock.offset)
            })
        });
    }
    group.finish();
}

/// The same look-ups made by two threads at once, each `iters` times; the time is the
/// wall time until both are done, per look-up of one thread. Both threads share the
/// looked-up service's count (as the baseline's two threads share the `Arc`), so what
/// differs from the baseline is what the registry itself shares between threads.
fn services_on_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("services/lookup_on_2_threads");
    group.throughput(Throughput::Elements(2));
    let holder = Holder {
        clock: Arc::new(Clock { offset: 3 }),
    };
    let registry = registry(10);
    let lookups: [(&str, &(dyn Fn() -> u64 + Sync)); 3] = [
        ("arc_field_clone", &|| {
            Arc::clone(&black_box(&holder).clock).offset
        }),
        ("get_named", &|| {
            let clock = black_box(&registry).get::<Clock>(black_box("clock"));
            clock.expect("registered").offset
        }),
        ("get_typed", &|| {
            let clock = black_box(&registry).get_typed::<Clock>();
            clock.expect("registered").offset
        }),
    ];
    for (name, lookup) in lookups {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                support::on_two_threads(|| {
                    for _ in 0..iters {
                        black_box(lookup());
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = services, services_on_two_threads
}
criterion_main!(benches);
