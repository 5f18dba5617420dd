#!/usr/bin/env bash
# OpenSearch/Elasticsearch-compatible test server: osmem-server (PyPI; a static binary in the
# wheel) on 127.0.0.1:9200, in memory (empty on every fresh start).
# Env: IXP_OPENSEARCH_PORT (9200).
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
NAME=opensearch
PORT="${IXP_OPENSEARCH_PORT:-9200}"
ensure_venv opensearch "osmem-server==0.1.6" "import osmem_server"
if pid_alive "$NAME" osmem-server; then
  ts_log "$NAME already running (pid $(cat "$TS_DIR/$NAME.pid"))"
  wait_port "$NAME" "$PORT" 30; exit 0
fi
if port_open "$PORT"; then ts_log "port $PORT is busy (not our $NAME server)"; exit 1; fi
BIN="$("$TS_DIR/venv-opensearch/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())')"
# -no-stdin-watch: otherwise the server exits as soon as its stdin closes.
start_bg "$NAME" "$BIN" -addr "127.0.0.1:$PORT" -no-stdin-watch
wait_port "$NAME" "$PORT" 30
ts_log "$NAME up on 127.0.0.1:$PORT (pid $(cat "$TS_DIR/$NAME.pid"))"
