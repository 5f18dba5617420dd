#!/usr/bin/env bash
# MongoDB-wire-compatible test server: secantusdb (PyPI) on 127.0.0.1:27017 (27018 if 27017 is
# taken by something else), in-memory storage (empty on every fresh start).
# The port in use is written to .test-servers/mongo.port. Connect with
#   mongodb://127.0.0.1:<port>/?directConnection=true
# Env: IXP_MONGO_PORT to force a port.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
NAME=mongo
ensure_venv mongo "secantusdb==0.7.0b3" "import secantus"
if pid_alive "$NAME" secantusd-py; then
  PORT="$(cat "$TS_DIR/mongo.port")"
  ts_log "$NAME already running (pid $(cat "$TS_DIR/$NAME.pid")) on port $PORT"
  wait_port "$NAME" "$PORT" 60; exit 0
fi
if [[ -n "${IXP_MONGO_PORT:-}" ]]; then
  PORT="$IXP_MONGO_PORT"
  if port_open "$PORT"; then ts_log "port $PORT is busy"; exit 1; fi
else
  PORT=27017
  if port_open 27017; then
    PORT=27018
    if port_open 27018; then ts_log "ports 27017 and 27018 are both busy"; exit 1; fi
  fi
fi
echo "$PORT" >"$TS_DIR/mongo.port"
start_bg "$NAME" "$TS_DIR/venv-mongo/bin/secantusd-py" --host 127.0.0.1 --port "$PORT" \
  --storage-path :memory: --log-level WARNING
wait_port "$NAME" "$PORT" 60
ts_log "$NAME up on 127.0.0.1:$PORT (pid $(cat "$TS_DIR/$NAME.pid"))"
