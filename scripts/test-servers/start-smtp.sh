#!/usr/bin/env bash
# SMTP test server: aiosmtpd (PyPI) on 127.0.0.1:2525, AUTH PLAIN/LOGIN over plain text.
# Received mail: .test-servers/smtp-mail/*.eml (+ .json envelope), emptied on a fresh start.
# Env: IXP_SMTP_PORT (2525), IXP_SMTP_MAILDIR, IXP_SMTP_USER (ixp), IXP_SMTP_PASSWORD (ixp-secret),
#      IXP_SMTP_REQUIRE_AUTH=1 to refuse MAIL FROM before AUTH.
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
NAME=smtp
PORT="${IXP_SMTP_PORT:-2525}"
export IXP_SMTP_MAILDIR="${IXP_SMTP_MAILDIR:-$TS_DIR/smtp-mail}"

ensure_venv smtp "aiosmtpd==1.4.6" "import aiosmtpd"
if pid_alive "$NAME" smtp_server.py; then
  ts_log "$NAME already running (pid $(cat "$TS_DIR/$NAME.pid"))"
  wait_port "$NAME" "$PORT" 30; exit 0
fi
if port_open "$PORT"; then ts_log "port $PORT is busy (not our $NAME server)"; exit 1; fi
rm -rf "$IXP_SMTP_MAILDIR"; mkdir -p "$IXP_SMTP_MAILDIR"
start_bg "$NAME" "$TS_DIR/venv-smtp/bin/python" "$TS_SCRIPTS_DIR/smtp_server.py" \
  --host 127.0.0.1 --port "$PORT" --maildir "$IXP_SMTP_MAILDIR"
wait_port "$NAME" "$PORT" 30
ts_log "$NAME up on 127.0.0.1:$PORT (pid $(cat "$TS_DIR/$NAME.pid")), maildir $IXP_SMTP_MAILDIR"
