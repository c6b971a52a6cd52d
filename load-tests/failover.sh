#!/usr/bin/env bash
# Failover under load: oha drives stateless `tools/call` POSTs at one category for SECS seconds;
# after a third of the time, SHARE percent of its servers are SIGKILLed at once. Counts client
# errors (only requests in flight on a killed server may fail: POSTs that reached a server are
# never replayed), and reports how long the fleet took to have them all serving again.
# Usage: load-tests/failover.sh [--servers 20] [--share 30] [--secs 30] [--conc 32]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
servers=20 share=30 secs=30 conc=32
parse_opts servers share secs conc -- "$@"
ensure_build
ensure_oha
serve_fleet "[categories.api]
ports = \"50200-50299\"
servers = $servers"
serve=$SERVE base=$BASE monitor=$MONITOR

oha_mcp "$base/mcp/api" -z "${secs}s" -c "$conc" -w >"$WORK/oha.json" &
oha_pid=$!
started "$oha_pid"
sleep $((secs / 3))
victims=$(pgrep -P "$serve" -f "backend --port" | shuf -n $((servers * share / 100)))
n=$(echo "$victims" | wc -w)
killed_at=$SECONDS
# shellcheck disable=SC2086
kill -KILL $victims
log "SIGKILLed $n of $servers servers"
back=""
while kill -0 "$oha_pid" 2>/dev/null; do
    if [ -z "$back" ] && wait_ready "$base" 1 2>/dev/null; then back=$((SECONDS - killed_at)); fi
    sleep 0.2
done
wait "$oha_pid" || true
[ -z "$back" ] && wait_ready "$base" 60 && back=$((SECONDS - killed_at))
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
codes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("statusCodeDistribution"), d.get("errorDistribution"))' "$WORK/oha.json")
cat <<EOF

failover: $n of $servers servers SIGKILLed under load (oha -c $conc, ${secs}s)
  answers    $ok x 200, $((non200 + errors)) failed   $codes
  rate       $rps req/s, p50 $p50 ms, p99 $p99 ms
  recovery   all $servers servers serving again ${back:-?} s after the kill
EOF
