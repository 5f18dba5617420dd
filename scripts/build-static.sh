#!/usr/bin/env bash
# Builds ixp-app as one fully statically linked executable (glibc linked statically,
# rustls instead of OpenSSL):
#   target/x86_64-unknown-linux-gnu/release/ixp-app
# Extra arguments go to cargo, e.g. --no-default-features --features cache-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# relocation-model=static: a classic (non-PIE) static executable, which is what `ldd`
# calls "not a dynamic executable"; a static-PIE one would keep ASLR of the executable
# image but ldd calls it "statically linked".
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked -p app-template --target "$target" "$@"
bin="target/$target/release/ixp-app"
# It must need no shared library, and ldd must say so.
if readelf -d "$bin" | grep -q NEEDED; then
  echo "error: $bin needs shared libraries:" >&2
  readelf -d "$bin" | grep NEEDED >&2
  exit 1
fi
case "$(ldd "$bin" 2>&1)" in
  *"not a dynamic executable"*) ;;
  *) echo "error: ldd does not call $bin static:" >&2; ldd "$bin" >&2; exit 1 ;;
esac
echo "$bin: $(ldd "$bin" 2>&1 | tr -d '\t'), $(du -h "$bin" | cut -f1)"
