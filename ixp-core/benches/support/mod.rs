//! Helpers shared by the bench binaries (`mod support;` in each).

// Each bench binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use criterion::Criterion;

/// The criterion settings of every bench binary here: short warm-up and measurement
/// (the figures in docs/performance.md were taken with the same).
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// Runs `run` on two threads at once (released together by a barrier) and returns the
/// wall time until both are done, measured on this thread. `run` does one thread's
/// share of the work, so the time per element of one thread is the result over that
/// share.
pub fn on_two_threads(run: impl Fn() + Sync) -> Duration {
    on_two_threads_then(run, || {})
}

/// [`on_two_threads`], with the wall time running on until `then` (called on this
/// thread once both are done) returns: for work the threads hand to someone else.
pub fn on_two_threads_then(run: impl Fn() + Sync, then: impl FnOnce()) -> Duration {
    let start = std::sync::Barrier::new(2);
    let run = || {
        start.wait();
        run();
    };
    std::thread::scope(|scope| {
        let other = scope.spawn(run);
        let began = Instant::now();
        run();
        other.join().expect("the other thread finished");
        then();
        began.elapsed()
    })
}
