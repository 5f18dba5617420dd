#!/usr/bin/env bash
# Whole-binary figures of ixp-app, each with a baseline measured in the same run:
#   * size of the static binary: default features; default + analytics (the logging
#     and analytics plugins, as issue 6 asks for the HTTP figures); every feature of
#     app-template (the list is read from app-template/Cargo.toml at run time);
#   * time from exec to /health/ready answering 200 (median of RUNS), against the
#     time to exec `ixp-app --version` until it exits;
#   * idle RSS (VmRSS of /proc/PID/status, 1 s after /health/ready answered);
#   * HTTP: requests/s, p99 latency and server CPU per request of `wrk` against
#     ixp-app's GET /health and GET /hello (hello-plugin's route), default build and
#     default + analytics build, and against a bare axum server with the same /hello
#     route (ixp-core/examples/bare_axum.rs, built static the same way);
#   * the calibration of those HTTP figures: bare axum again with CALIBRATE_US
#     microseconds of busy work added to every /hello (default "1 2"; "" for none),
#     i.e. what a given extra CPU per request costs in requests/s on this machine; and
#     for every row how often wrk went to sleep per request (its voluntary context
#     switches), which is what makes that cost grow faster than the CPU added;
#   * with ANALYTICS_BATCH_SIZES (e.g. "1000"; default none), more rows of the analytics
#     build with that batchSize (the default is 100): the difference is what a batch
#     sent to the collector costs, rather than an event tracked. Every analytics row is
#     followed by the events it sent and dropped (a build that dropped events would
#     look cheaper).
#
#   bash scripts/bench-binary.sh
#   RUNS=20 WRK_DURATION=5s WRK_CONNECTIONS=16 WRK_ROUNDS=3 CALIBRATE_US="1 2" bash scripts/bench-binary.sh
#   SKIP_BUILD=1 bash scripts/bench-binary.sh   # measure again the binaries of the last run
#   ANALYTICS_BATCH_SIZES=1000 WRK_ROUNDS=5 bash scripts/bench-binary.sh
#
# Needs wrk (Debian package `wrk`): installed with apt-get when missing. Every ixp-app
# runs from a fresh temporary directory holding a copy of app-template/ixp.toml, on a
# free port (IXP_SERVER__PORT). Where analytics-plugin is compiled in, its endpoint is a
# second bare_axum instance (POST /collect answers 200). If a build's start-up check
# fails with that config (a plugin added later that needs settings), its runtime figures
# are skipped and the problems printed. Results: stdout and target/bench-binary/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/bench-binary
mkdir -p "$out"
target=x86_64-unknown-linux-gnu
rel=target/$target/release

if ! command -v wrk >/dev/null; then
  echo "wrk is missing: installing the Debian package" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

features=$(cargo metadata --no-deps --format-version 1 --manifest-path app-template/Cargo.toml |
  python3 -c 'import json,sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "app-template")
print(",".join(sorted(f for f in p["features"] if f != "default")))')
echo "== every feature of app-template: $features" >&2

if [[ "${SKIP_BUILD:-}" == 1 && -x "$out/ixp-app-default" && -x "$out/bare_axum" ]]; then
  echo "== SKIP_BUILD=1: measuring the binaries of the last run in $out" >&2
else
  echo "== building ixp-app (default features)" >&2
  bash scripts/build-static.sh >&2
  cp "$rel/ixp-app" "$out/ixp-app-default"
  if [[ ",$features," == *",analytics,"* ]]; then
    echo "== building ixp-app (default features + analytics)" >&2
    bash scripts/build-static.sh --features analytics >&2
    cp "$rel/ixp-app" "$out/ixp-app-analytics"
  else
    echo "== no analytics feature in app-template: no default + analytics build" >&2
    rm -f "$out/ixp-app-analytics"
  fi
  echo "== building ixp-app (--features $features)" >&2
  bash scripts/build-static.sh --features "$features" >&2
  cp "$rel/ixp-app" "$out/ixp-app-all"
  echo "== building the bare axum baseline (static, same flags)" >&2
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked -p ixp-core --example bare_axum --target "$target" >&2
  cp "$rel/examples/bare_axum" "$out/bare_axum"
fi

pids_file=$out/pids
: > "$pids_file"
cleanup() {
  # Only the processes this script started (their pids were recorded).
  while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done < "$pids_file"
}
trap cleanup EXIT INT TERM

python3 - "$root" "$out" "$features" <<'PY'
import os, re, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

root, out, features = sys.argv[1], sys.argv[2], sys.argv[3]
RUNS = int(os.environ.get("RUNS", "20"))
WRK_DURATION = os.environ.get("WRK_DURATION", "5s")
WRK_CONNECTIONS = os.environ.get("WRK_CONNECTIONS", "16")
WRK_ROUNDS = int(os.environ.get("WRK_ROUNDS", "3"))
CALIBRATE_US = sorted({float(x) for x in os.environ.get("CALIBRATE_US", "1 2").split()})
# More rows of the analytics build with another batchSize (the default is 100): what is
# paid per batch sent (a request to the collector) rather than per event tracked.
BATCH_SIZES = [int(x) for x in os.environ.get("ANALYTICS_BATCH_SIZES", "").split()]
POLL = 0.0005  # seconds between two /health/ready attempts (the resolution)
# HTTP runs: the server on one CPU, wrk (and the analytics collector) on another, so
# that the scheduler does not put them on one core mid-run. PIN=0 turns it off.
CPUS = sorted(os.sched_getaffinity(0))
PIN = (os.environ.get("PIN", "1") != "0" and shutil.which("taskset") is not None
       and len(CPUS) >= 2)
def pinned(k, cmd):
    """cmd run on the k-th CPU this script may use (taskset exec()s it: same pid)."""
    return ["taskset", "-c", str(CPUS[k])] + cmd if PIN else cmd
pids_file = os.path.join(out, "pids")
lines = []

def say(text=""):
    print(text, flush=True)
    lines.append(text)

def record(proc):
    with open(pids_file, "a") as f:
        f.write(f"{proc.pid}\n")

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def get_status(port, path):
    """Status code of GET path, or None if nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).decode(errors="replace")
            return int(head.split()[1]) if head.startswith("HTTP/") else None
    except (OSError, ValueError, IndexError):
        return None


def compiled_plugins(binary):
    text = subprocess.run([binary, "plugins"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in text.splitlines()[1:] if l.strip()]

def make_dir(binary, batch_size=None):
    """A fresh directory with a copy of app-template/ixp.toml (plus what plugins of this
    binary need to start; analytics' batchSize if given)."""
    d = tempfile.mkdtemp(prefix="ixp-bench-")
    shutil.copy(os.path.join(root, "app-template", "ixp.toml"), d)
    if "analytics-plugin" in compiled_plugins(binary):
        with open(os.path.join(d, "ixp.toml"), "a") as f:
            f.write(f'\n[plugins.analytics-plugin]\nendpoint = "http://127.0.0.1:{sink_port}/collect"\n')
            if batch_size is not None:
                f.write(f"batchSize = {batch_size}\n")
    return d

def analytics_counts(port):
    """analytics-plugin's `sent` and `dropped` events from GET /health (None if absent)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
    except OSError:
        return None
    text = body.decode(errors="replace")
    sent, dropped = re.search(r'"sent":\s*(\d+)', text), re.search(r'"dropped":\s*(\d+)', text)
    return (int(sent.group(1)), int(dropped.group(1))) if sent and dropped else None

def start(cmd, cwd, port, log):
    env = dict(os.environ, IXP_SERVER__PORT=str(port))
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    record(p)
    return p

def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()

def wait_ready(p, port, path, timeout=20.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if get_status(port, path) == 200:
            return True
        if p.poll() is not None:
            return False
        time.sleep(POLL)
    return False

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def startup_runs(binary, d):
    ready, rss, exe = [], [], []
    log = open(os.path.join(d, "log"), "ab")
    for i in range(RUNS + 1):  # the first run (creates the SQLite file) is a warm-up
        t0 = time.perf_counter()
        subprocess.run([binary, "--version"], stdout=subprocess.DEVNULL, check=True)
        t_version = time.perf_counter() - t0
        port = free_port()
        t0 = time.perf_counter()
        p = start([binary, "run"], d, port, log)
        ok = False
        while time.perf_counter() - t0 < 20:
            if get_status(port, "/health/ready") == 200:
                ok = True
                break
            if p.poll() is not None:
                break
            time.sleep(POLL)
        t_ready = time.perf_counter() - t0
        if not ok:
            stop(p)
            raise SystemExit(f"{binary} did not answer /health/ready; log in {d}/log")
        time.sleep(1.0)
        kb = rss_kb(p.pid)
        stop(p)
        if i > 0:
            ready.append(t_ready); rss.append(kb); exe.append(t_version)
    return statistics.median(ready), statistics.median(rss), statistics.median(exe)

def check(binary, d):
    r = subprocess.run([binary, "check", "--config", "ixp.toml"], cwd=d, capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()

def cpu_seconds(pid):
    """utime + stime of every thread of the process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def wrk(port, path, pid):
    """requests/s, p99 (ms), non-2xx answers, server CPU per request (µs), and wrk's
    voluntary context switches per request (how often the client slept)."""
    cpu_before = cpu_seconds(pid)
    sleeps_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw
    r = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_DURATION}", "--latency",
                        f"http://127.0.0.1:{port}{path}"]), capture_output=True, text=True, check=True)
    cpu = cpu_seconds(pid) - cpu_before
    # wrk is the only child waited for in between (taskset exec()s it).
    sleeps = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw - sleeps_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    requests = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", r.stdout)
    p99_ms = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", r.stdout)
    per_request = 1 / max(requests, 1)
    return (rps, p99_ms, int(non2xx.group(1)) if non2xx else 0, cpu * per_request * 1e6,
            sleeps * per_request)

binaries = {name: os.path.join(out, f"ixp-app-{name}") for name in ("default", "analytics", "all")
            if os.path.exists(os.path.join(out, f"ixp-app-{name}"))}
bare = os.path.join(out, "bare_axum")

# The analytics collector: a bare_axum instance (POST /collect answers 200).
sink_port = free_port()
sink = start(pinned(1, [bare, str(sink_port)]), out, sink_port, subprocess.DEVNULL)
if not wait_ready(sink, sink_port, "/hello"):
    raise SystemExit("the collector (bare_axum) did not start")

say("## ixp-app: size, ready time, idle RSS")
say()
say(f"`analytics` = default features + `analytics`; `all` = `{features}`")
say()
say("| build | size (bytes) | size (MiB) | plugins | ready (ms, median) | exec of `--version` (ms, median) | ready / exec | idle RSS (MiB, median) |")
say("| --- | --- | --- | --- | --- | --- | --- | --- |")
dirs, runnable = {}, {}
for name, binary in binaries.items():
    size = os.path.getsize(binary)
    d = make_dir(binary)
    dirs[name] = d
    ok, report = check(binary, d)
    plugins = " ".join(compiled_plugins(binary))
    if not ok:
        say(f"| {name} | {size} | {size/2**20:.1f} | {plugins} | check failed | | | |")
        print(f"[{name}] start-up check failed with the bench config:\n{report}", file=sys.stderr)
        continue
    runnable[name] = binary
    ready, rss, exe = startup_runs(binary, d)
    say(f"| {name} | {size} | {size/2**20:.1f} | {plugins} | {ready*1e3:.1f} | {exe*1e3:.2f} | {ready/exe:.1f}x | {rss/1024:.1f} |")
say()
say(f"{RUNS} runs each after one warm-up run; /health/ready polled every {POLL*1e3:.1f} ms.")
say()

# HTTP
servers = []
log = open(os.path.join(out, "servers.log"), "ab")
for name, binary in runnable.items():
    if name == "all":
        continue  # HTTP figures: default, and default + analytics (issue 6)
    port = free_port()
    p = start(pinned(0, [binary, "run"]), dirs[name], port, log)
    if not wait_ready(p, port, "/health/ready"):
        raise SystemExit(f"{name} did not start for the HTTP runs")
    servers.append((f"ixp-app ({name})", port, p))
if "analytics" in runnable:
    for n in BATCH_SIZES:
        d = make_dir(runnable["analytics"], n)
        dirs[f"analytics-batch{n}"] = d
        port = free_port()
        p = start(pinned(0, [runnable["analytics"], "run"]), d, port, log)
        if not wait_ready(p, port, "/health/ready"):
            raise SystemExit(f"analytics with batchSize {n} did not start; log in {out}/servers.log")
        servers.append((f"ixp-app (analytics, batchSize {n})", port, p))
port = free_port()
p = start(pinned(0, [bare, str(port)]), out, port, log)
if not wait_ready(p, port, "/hello"):
    raise SystemExit("bare_axum did not start")
servers.append(("bare axum", port, p))
calibration = []
for us in CALIBRATE_US:
    port = free_port()
    p = start(pinned(0, [bare, str(port), str(round(us * 1000))]), out, port, log)
    if not wait_ready(p, port, "/hello"):
        raise SystemExit("bare_axum (calibration) did not start")
    calibration.append((f"bare axum + {us:g} µs of work", port, p))

targets = [(s, path) for s in servers for path in ("/hello", "/health")]
targets += [(s, "/hello") for s in calibration]
servers += calibration
results = {(s[0], path): [] for s, path in targets}
for _ in range(WRK_ROUNDS):
    for (label, port, server), path in targets:
        results[(label, path)].append(wrk(port, path, server.pid))
# An analytics build that dropped events would look cheaper than one that sent them all.
delivery = []
time.sleep(1.1)  # past GET /health's cache (app-template/ixp.toml: health_cache = "1s")
for label, port, _ in servers:
    if "analytics" in label:
        delivery.append((label, analytics_counts(port)))
for _, _, p in servers:
    stop(p)
stop(sink)

pin_note = f", server pinned to CPU {CPUS[0]} and wrk to CPU {CPUS[1]} (taskset)" if PIN else ", unpinned"
say(f"## HTTP (wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_DURATION}, median of {WRK_ROUNDS} interleaved rounds{pin_note})")
say()
say("| server | path | requests/s | p99 (ms) | non-2xx | server CPU per request (µs) | requests/s vs bare axum /hello | p99 vs bare axum /hello | CPU per request vs bare axum /hello | wrk sleeps per request |")
say("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
def median_of(rs, k):
    return statistics.median(r[k] for r in rs)
base = results[("bare axum", "/hello")]
base_rps, base_p99, base_cpu = median_of(base, 0), median_of(base, 1), median_of(base, 3)
for (label, path), rs in results.items():
    rps, p99, cpu, sleeps = median_of(rs, 0), median_of(rs, 1), median_of(rs, 3), median_of(rs, 4)
    bad = sum(r[2] for r in rs)
    say(f"| {label} | {path} | {rps:.0f} | {p99:.2f} | {bad} | {cpu:.2f} | {rps/base_rps:.2f}x | {p99/base_p99:.2f}x | {cpu/base_cpu:.2f}x | {sleeps:.3f} |")
say()
say("Server CPU per request: the server process's utime + stime (every thread, /proc/PID/stat) "
    "over the wrk run, divided by the requests wrk completed; steadier than requests/s on a "
    "shared machine. The analytics collector is another process, not counted. "
    "`bare axum + N µs of work`: the baseline spinning N µs more per /hello (the "
    "calibration: what that much extra CPU per request costs in requests/s here). "
    "wrk sleeps per request: wrk's voluntary context switches over the requests it "
    "completed; each is a wake-up the server pays for when it answers.")
say()
for label, counts in delivery:
    say(f"{label}: " + (f"{counts[0]} events sent to the collector, {counts[1]} dropped (its GET /health after the runs)."
                        if counts else "no analytics counts in its GET /health."))
if delivery:
    say()
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
for d in dirs.values():
    shutil.rmtree(d, ignore_errors=True)
PY
