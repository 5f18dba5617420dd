#!/usr/bin/env bash
# Start every test server (each script is idempotent).
set -euo pipefail
d="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for s in smtp mongo opensearch oidc; do bash "$d/start-$s.sh"; done
