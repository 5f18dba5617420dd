#!/usr/bin/env bash
# Instructions and simulated cache misses per event of the event bus's inline path
# (`emit_and_wait`, and a `Publisher`) and of its baseline (`direct`: the event built and
# the handler called with no bus), at 1, 100 and 10,000 topics, under cachegrind:
# figures that do not depend on the machine's neighbours (docs/performance.md).
# Each figure is (run with 120,000 events - run with 20,000 events) / 100,000, so the
# set-up cancels out. The last-level cache is simulated at 1 MiB (this machine's L2).
#
#   bash scripts/bench-routing-cachegrind.sh   # installs valgrind (Debian) when missing
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
  echo "installing valgrind (Debian package)" >&2
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
cargo build --release --locked -p ixp-core --example routing_cost
bin=target/release/examples/routing_cost

# Prints "instructions D1-misses LL-misses" of one run.
counts() {
  valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 \
    --cachegrind-out-file=/dev/null "$bin" "$@" 2>&1 >/dev/null |
    awk '/I +refs:/ {i=$4} /D1 +misses:/ {d=$4} /LLd +misses:/ {l=$4}
         END {gsub(",", "", i); gsub(",", "", d); gsub(",", "", l); print i, d, l}'
}

printf '%-14s %7s %13s %10s %10s\n' path topics instructions D1-misses LL-misses
for mode in direct emit_and_wait publisher; do
  for topics in 1 100 10000; do
    read -r i1 d1 l1 < <(counts "$topics" 20000 "$mode")
    read -r i2 d2 l2 < <(counts "$topics" 120000 "$mode")
    awk -v m="$mode" -v t="$topics" -v i="$((i2 - i1))" -v d="$((d2 - d1))" -v l="$((l2 - l1))" \
      'BEGIN { d = d < 0 ? 0 : d; l = l < 0 ? 0 : l; printf "%-14s %7d %13.1f %10.2f %10.2f\n", m, t, i / 1e5, d / 1e5, l / 1e5 }'
  done
done
