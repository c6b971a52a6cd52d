#!/usr/bin/env bash
# Reloads under load: oha drives stateless `tools/call` POSTs for SECS seconds while the config
# is edited (strategy and weights change) and SIGHUP sent every second. A reload must not drop
# a request: any failed answer is reported and fails the script.
# Usage: load-tests/reload.sh [--servers 20] [--secs 30] [--conc 32]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
servers=20 secs=30 conc=32
parse_opts servers secs conc -- "$@"
ensure_build
ensure_oha
serve_fleet "[categories.api]
ports = \"50200-50299\"
servers = $servers
weight = 1"
serve=$SERVE base=$BASE monitor=$MONITOR

oha_mcp "$base/mcp/api" -z "${secs}s" -c "$conc" -w >"$WORK/oha.json" &
oha_pid=$!
started "$oha_pid"
strategies=(p2c least-connections round-robin weighted peak-ewma)
sent=0
while kill -0 "$oha_pid" 2>/dev/null; do
    sleep 1
    s=${strategies[$((sent % ${#strategies[@]}))]}
    sed -i -e "s/^strategy = .*/strategy = \"$s\"/" -e "s/^weight = .*/weight = $((sent % 3 + 1))/" "$WORK/fleet.toml"
    kill -HUP "$serve" && sent=$((sent + 1))
done
wait "$oha_pid" || true
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
applied=$(curl -s "$monitor/metrics" | awk '/^mcp_fleet_reloads_total\{result="applied"\}/ {print $2}')
cat <<EOF

reload: $sent SIGHUPs in ${secs}s under load (oha -c $conc), ${applied:-0} applied
  answers    $ok x 200, $((non200 + errors)) failed
  rate       $rps req/s, p50 $p50 ms, p99 $p99 ms
EOF
[ $((non200 + errors)) -eq 0 ]
