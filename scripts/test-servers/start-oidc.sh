#!/usr/bin/env bash
# OpenID Connect provider: oidc-provider (npm) on 127.0.0.1:9400, issuer http://127.0.0.1:9400,
# configured by oidc_server.mjs (clients ixp-web / ixp-native, PKCE required, headless approval).
# Env: IXP_OIDC_PORT (9400), IXP_OIDC_ISSUER.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
NAME=oidc
PORT="${IXP_OIDC_PORT:-9400}"
if [[ ! -f "$TS_DIR/node_modules/oidc-provider/package.json" ]] \
   || ! grep -q '"version": "9.13.3"' "$TS_DIR/node_modules/oidc-provider/package.json"; then
  ts_log "installing oidc-provider@9.13.3 into $TS_DIR/node_modules"
  npm install --prefix "$TS_DIR" --no-audit --no-fund --loglevel=error oidc-provider@9.13.3 >&2
fi
if pid_alive "$NAME" oidc_server.mjs; then
  ts_log "$NAME already running (pid $(cat "$TS_DIR/$NAME.pid"))"
  wait_port "$NAME" "$PORT" 30; exit 0
fi
if port_open "$PORT"; then ts_log "port $PORT is busy (not our $NAME server)"; exit 1; fi
export IXP_TEST_SERVERS_DIR="$TS_DIR" IXP_OIDC_PORT="$PORT"
start_bg "$NAME" node "$TS_SCRIPTS_DIR/oidc_server.mjs"
wait_port "$NAME" "$PORT" 30
ts_log "$NAME up on 127.0.0.1:$PORT (pid $(cat "$TS_DIR/$NAME.pid"))"
