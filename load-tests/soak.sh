#!/usr/bin/env bash
# Soak: a fixed request rate through the proxy for MINUTES, with a backend SIGKILLed every 30 s
# and a config reload (SIGHUP, alternating strategies) every 45 s. Reports the proxy's RSS at
# start, after the first minute and at the end, and every answer that was not a 200.
# Fails when the RSS after the first minute grows by more than 8 MiB, or when a request fails
# for any reason other than being in flight on a server at the moment it was killed.
# Usage: load-tests/soak.sh [MINUTES=10] [RATE=300]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
minutes=${1:-10}
rate=${2:-300}
ensure_build
ensure_oha

categories=""
for c in api:50200 database:50000 filesystem:50100; do
    categories+="[categories.${c%%:*}]
ports = \"${c##*:}-$((${c##*:} + 19))\"
servers = 20
"
done
serve_fleet "$categories"
serve=$SERVE base=$BASE monitor=$MONITOR
rss_start=$(rss_kib "$serve")
log "fleet ready: 60 servers; proxy RSS ${rss_start} KiB; ${minutes} min at ${rate} req/s"

oha_mcp "$base/mcp/api" -z "${minutes}m" -q "$rate" -c 16 --latency-correction -w \
    >"$WORK/oha.json" 2>"$WORK/oha.err" &
oha_pid=$!
started "$oha_pid"

kills=0
reloads=0
strategies=(p2c round-robin least-connections peak-ewma)
start=$SECONDS
rss_minute=""
samples="$WORK/rss.txt"
while kill -0 "$oha_pid" 2>/dev/null; do
    sleep 5
    elapsed=$((SECONDS - start))
    echo "$elapsed $(rss_kib "$serve")" >>"$samples"
    [ -z "$rss_minute" ] && [ $elapsed -ge 60 ] && rss_minute=$(rss_kib "$serve")
    if [ $((elapsed % 30)) -lt 5 ] && [ $elapsed -ge 30 ]; then
        # A random `api` server dies the hard way; the fleet restarts it.
        victim=$(pgrep -P "$serve" -f "backend --port 502" | shuf -n 1 || true)
        if [ -n "$victim" ]; then
            kill -KILL "$victim" && kills=$((kills + 1))
        fi
    fi
    if [ $((elapsed % 45)) -lt 5 ] && [ $elapsed -ge 45 ]; then
        s=${strategies[$((reloads % ${#strategies[@]}))]}
        sed -i "s/^strategy = .*/strategy = \"$s\"/" "$WORK/fleet.toml"
        kill -HUP "$serve" && reloads=$((reloads + 1))
    fi
done
wait "$oha_pid" || true
rss_end=$(rss_kib "$serve")
rss_minute=${rss_minute:-$rss_end}
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
applied=$(curl -s "http://127.0.0.1:${MONITOR_PORT:-19090}/metrics" |
    awk '/^mcp_fleet_reloads_total\{result="applied"\}/ {print $2}')
restarts=$(curl -s "http://127.0.0.1:${MONITOR_PORT:-19090}/metrics" |
    awk '/^mcp_fleet_restarts_total/ {s += $2} END {print s + 0}')
codes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("statusCodeDistribution"), d.get("errorDistribution"))' "$WORK/oha.json")

cat <<EOF

soak: ${minutes} min at ${rate} req/s through /mcp/api (20 of 60 servers), oha -c 16
  requests       ${ok} x 200, ${non200} other statuses, ${errors} client errors   ${codes}
  throughput     ${rps} req/s, p50 ${p50} ms, p99 ${p99} ms (latency-corrected)
  chaos          ${kills} SIGKILLs (fleet restarts seen: ${restarts}), ${reloads} SIGHUPs (applied: ${applied:-0})
  proxy RSS      start ${rss_start} KiB, after 1 min ${rss_minute} KiB, end ${rss_end} KiB
EOF
failed=$((non200 + errors))
status=0
if [ "$failed" -gt "$kills" ]; then
    echo "FAIL: $failed failed requests for $kills kills" >&2
    status=1
fi
if [ "$rss_end" -gt $((rss_minute + 8192)) ]; then
    echo "FAIL: RSS grew from $rss_minute to $rss_end KiB" >&2
    status=1
fi
exit $status
