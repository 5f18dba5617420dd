# Shared helpers for the test-server scripts. Source it; do not run it.
# Everything lives under <repo>/.test-servers (git-ignored): venvs, node_modules, pid files, logs.
set -euo pipefail

TS_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TS_SCRIPTS_DIR/../.." && pwd)"
TS_DIR="${IXP_TEST_SERVERS_DIR:-$REPO_ROOT/.test-servers}"
TS_LOG_DIR="$TS_DIR/logs"
mkdir -p "$TS_DIR" "$TS_LOG_DIR"

ts_log() { echo "[test-servers] $*" >&2; }

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive NAME MARKER -> 0 if .test-servers/NAME.pid names a live process whose command line contains MARKER
pid_alive() {
  local f="$TS_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmd
  cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$2"* ]]
}

# wait_port NAME PORT TIMEOUT_S: wait until the port answers; fail early if the process died.
wait_port() {
  local name="$1" port="$2" timeout="${3:-60}" pid i
  pid="$(cat "$TS_DIR/$name.pid")"
  for ((i = 0; i < timeout * 10; i++)); do
    if port_open "$port"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      ts_log "$name (pid $pid) exited during startup; last log lines:"
      tail -n 30 "$TS_LOG_DIR/$name.log" >&2 || true
      rm -f "$TS_DIR/$name.pid"
      return 1
    fi
    sleep 0.1
  done
  ts_log "$name: port $port did not answer within ${timeout}s; log: $TS_LOG_DIR/$name.log"
  return 1
}

# start_bg NAME CMD...: start CMD in the background (stdin from /dev/null, output to the log), write the pid file.
start_bg() {
  local name="$1"; shift
  nohup "$@" >"$TS_LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$TS_DIR/$name.pid"
}

# ensure_venv NAME PIP_SPEC IMPORT_CHECK: project-local venv .test-servers/venv-NAME with PIP_SPEC installed.
ensure_venv() {
  local venv="$TS_DIR/venv-$1" spec="$2" check="$3"
  if [[ ! -x "$venv/bin/python" ]]; then
    ts_log "creating $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    ts_log "installing $spec into $venv"
    "$venv/bin/pip" install --disable-pip-version-check -q "$spec"
  fi
}
