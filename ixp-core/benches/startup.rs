//! Start-up of typed compositions: plan, initialize, start and stop of 4, 16 and 64
//! trivial plugins registered by hand (`PluginMeta` implemented without the macro), each
//! depending on the previous one and on the one at half its index.
//!
//! The dependency graphs of `benches/data/graph-{100,1000,10000}.json` cannot be built
//! here: a registration is a Rust type ([`PluginRegistration::of`]) whose metadata is a
//! constant, so N plugins need N types. `scripts/bench-startup.sh` generates a crate
//! with one type per graph node and runs the same measurement (`common/startup.rs`) on
//! the three graphs; docs/performance.md has both.
//!
//! `cargo bench -p ixp-core --bench startup`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use criterion::{criterion_group, criterion_main, Criterion};
use ixp_core::PluginRegistration;
use ixp_core::{BoxError, NoConfig, Plugin, PluginContext, PluginMeta, PluginMetadata};

#[path = "common/startup.rs"]
mod harness;

use harness::{bench_startup, Composition};

/// The largest composition.
const MAX: usize = 64;

macro_rules! names {
    ($($i:literal)*) => {
        /// `n0` .. `n63`.
        const NAMES: [&str; MAX] = [$(concat!("n", stringify!($i))),*];

        /// Every node's registration, in index order.
        fn registrations() -> Vec<PluginRegistration> {
            vec![$(PluginRegistration::of::<Node<$i>>()),*]
        }
    };
}

names!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
    61 62 63
);

/// Node `I` of the composition: depends on `I - 1` and `I / 2`.
struct Node<const I: usize>;

impl<const I: usize> Node<I> {
    const DEPS: [&'static str; 2] = [NAMES[I.saturating_sub(1)], NAMES[I / 2]];
}

impl<const I: usize> PluginMeta for Node<I> {
    const METADATA: PluginMetadata = PluginMetadata {
        name: NAMES[I],
        version: "1.0.0",
        description: "a trivial plugin of the start-up benchmark",
        dependencies: if I == 0 { &[] } else { &Self::DEPS },
        optional_dependencies: &[],
        provides: &[],
        feature: None,
        enabled_by_default: true,
    };
}

impl<const I: usize> Plugin for Node<I> {
    type Config = NoConfig;

    async fn initialize(_: NoConfig, _: &PluginContext) -> Result<Self, BoxError> {
        Ok(Node)
    }
}

/// Edges of the first `n` nodes (the two dependencies of nodes 1 and 2 are one).
fn edges(n: usize) -> u64 {
    (1..n).map(|i| if i - 1 == i / 2 { 1 } else { 2 }).sum()
}

fn startup(c: &mut Criterion) {
    let all = registrations();
    let compositions: Vec<Composition> = [4usize, 16, MAX]
        .into_iter()
        .map(|n| Composition {
            label: format!("typed-{n}"),
            registrations: all[..n].to_vec(),
            elements: n as u64 + edges(n),
        })
        .collect();
    bench_startup(c, "startup/typed", &compositions);
}

criterion_group!(benches, startup);
criterion_main!(benches);
