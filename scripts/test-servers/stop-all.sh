#!/usr/bin/env bash
# Stop every test server started by the start-*.sh scripts, by pid file only.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
set +e
declare -A MARKER=([smtp]=smtp_server.py [mongo]=secantusd-py [opensearch]=osmem-server [oidc]=oidc_server.mjs)
for name in smtp mongo opensearch oidc; do
  f="$TS_DIR/$name.pid"
  [[ -f "$f" ]] || continue
  if pid_alive "$name" "${MARKER[$name]}"; then
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null; ts_log "$name (pid $pid) killed with SIGKILL"
    else ts_log "$name (pid $pid) stopped"; fi
  else
    ts_log "$name: stale pid file removed"
  fi
  rm -f "$f"
done
exit 0
