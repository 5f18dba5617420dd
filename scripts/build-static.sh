#!/usr/bin/env bash
# Builds ixp-app as one fully statically linked executable (glibc linked statically,
# rustls instead of OpenSSL):
#   target/x86_64-unknown-linux-gnu/release/ixp-app
# Extra arguments go to cargo, e.g. --no-default-features --features cache-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p app-template --target "$target" "$@"
bin="target/$target/release/ixp-app"
# A static-PIE executable (kept for ASLR): ldd says "statically linked" (a non-PIE one
# says "not a dynamic executable"); either way it must need no shared library.
if readelf -d "$bin" | grep -q NEEDED; then
  echo "error: $bin needs shared libraries:" >&2
  readelf -d "$bin" | grep NEEDED >&2
  exit 1
fi
case "$(ldd "$bin" 2>&1)" in
  *"statically linked"*|*"not a dynamic executable"*) ;;
  *) echo "error: ldd does not call $bin static:" >&2; ldd "$bin" >&2; exit 1 ;;
esac
echo "$bin: $(ldd "$bin" 2>&1 | tr -d '\t'), $(du -h "$bin" | cut -f1)"
