#!/usr/bin/env bash
# Instructions and simulated cache misses per request of what ixp adds to a request in
# user space, under cachegrind: `GET /hello` through a bare axum Router (the baseline),
# through ixp's service (`IxpServer::service()`), and through it with inline subscribers
# on request.started and request.completed (as analytics-plugin subscribes); no sockets
# (the driver is ixp-core/examples/http_cost.rs). Figures that do not depend on the
# machine's neighbours (docs/performance.md). Each is (run with 60,000 requests - run
# with 10,000) / 50,000, so the set-up cancels out.
#
#   bash scripts/bench-http-cachegrind.sh   # installs valgrind (Debian) when missing
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/cachegrind.sh
cargo build --release --locked -p ixp-core --example http_cost
bin=target/release/examples/http_cost

printf '%-14s %7s %13s %10s %10s\n' service path instructions D1-misses LL-misses
for service in bare ixp ixp_events; do
  # Each run in a variable of its own: a failed one stops the script (set -e).
  small=$(counts "$bin" "$service" 10000)
  large=$(counts "$bin" "$service" 60000)
  per_unit "$service" /hello "$small" "$large" 50000
done
