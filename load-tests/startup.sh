#!/usr/bin/env bash
# Start-up of the default fleet: `serve --config conf/fleet.toml` exactly as shipped (1000
# built-in servers, batches of 100, MCP health checks), in a throw-away folder. Polls the
# monitor (/health, /readyz) every 20 ms and reports, per round, the time from exec to the monitor
# answering, to the first deployment done (every server accepting connections: /readyz) and to
# every planned server in rotation (ready and passed its health check: /health serving =
# planned), and `serve`'s CPU until then (from /proc). The servers' own CPU is not summed: most
# of each child's ~4 ms start falls between clock ticks, so /proc undercounts it; `perf record`
# over a start shows it (BENCHMARKS.md).
# Needs the default ports (8080, 9090, 3000, 50000-50999) free.
# Usage: load-tests/startup.sh [--rounds 3]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=3
parse_opts rounds -- "$@"
ensure_build

printf '| round | monitor answers s | deployment done s | all 1000 in rotation s | serve CPU s |\n'
printf '|---|---|---|---|---|\n'
for round in $(seq "$rounds"); do
    dir="$WORK/round$round"
    mkdir -p "$dir/conf"
    sed "s|^command = \[\"mcp-fleet\"|command = [\"$BIN\"|" "$ROOT/conf/fleet.toml" >"$dir/conf/fleet.toml"
    "$BIN" serve --config "$dir/conf/fleet.toml" >"$dir/serve.log" 2>&1 &
    serve=$!
    started "$serve"
    # One process polls: curl per poll would add its own start-up to the machine's load.
    ROUND=$round python3 - "$serve" "$CLK_TCK" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request
serve, tck = int(sys.argv[1]), int(sys.argv[2])
t0 = time.monotonic()
answers = deployed = None
def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0
def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:9090{path}", timeout=2) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)
while time.monotonic() - t0 < 120:
    try:
        health = get("/health")
        ready = get("/readyz")
    except Exception:
        time.sleep(0.02)
        continue
    now = time.monotonic() - t0
    answers = answers or now
    if deployed is None and ready.get("ready"):
        deployed = now
    if health["planned"] > 0 and health["serving"] == health["planned"]:
        print(f"| {os.environ.get('ROUND', '?')} | {answers:.2f} | {deployed or now:.2f} | {now:.2f} "
              f"| {ticks(serve) / tck:.2f} |")
        sys.exit(0)
    time.sleep(0.02)
print("not all in rotation after 120 s", file=sys.stderr)
sys.exit(1)
EOF
    kill -TERM "$serve"
    wait "$serve" 2>/dev/null || true
done
