#!/usr/bin/env bash
# Instructions and simulated cache misses per event of the event bus's inline path
# (`emit_and_wait`, and a `Publisher`), of `emit` to inline and to queued subscriptions
# (`emit_inline`, `emit_queued`), and of the baseline (`direct`: the event built and the
# handler called with no bus), at 1, 100 and 10,000 topics, under cachegrind:
# figures that do not depend on the machine's neighbours (docs/performance.md).
# Each figure is (run with 120,000 events - run with 20,000 events) / 100,000, so the
# set-up cancels out. The last-level cache is simulated at 1 MiB (this machine's L2).
#
#   bash scripts/bench-routing-cachegrind.sh   # installs valgrind (Debian) when missing
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cachegrind.sh
cargo build --release --locked -p ixp-core --example routing_cost
bin=target/release/examples/routing_cost

printf '%-14s %7s %13s %10s %10s\n' path topics instructions D1-misses LL-misses
for mode in direct emit_and_wait publisher emit_inline emit_queued; do
  for topics in 1 100 10000; do
    # Each run in a variable of its own: a failed one stops the script (set -e).
    small=$(counts "$bin" "$topics" 20000 "$mode")
    large=$(counts "$bin" "$topics" 120000 "$mode")
    per_unit "$mode" "$topics" "$small" "$large" 100000
  done
done
