#!/usr/bin/env bash
# The seed's load test (`--concurrent 100 --duration 300`): MCP `tools/call` POSTs through the
# proxy to one category's servers, the first half of the time stateless (oha), the second half
# in sessions (wrk + session_calls.lua: initialize, then calls with the session id, so every call
# must reach the server that minted its session). Reports rates, latency, failures, proxy CPU
# per request and RSS.
# Usage: load-tests/load-test.sh [--concurrent 100] [--duration 300] [--servers 100]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
concurrent=100 duration=300 servers=100
parse_opts concurrent duration servers -- "$@"
ensure_build
ensure_oha
ensure_wrk
serve_fleet "[categories.api]
ports = \"50200-50299\"
servers = $servers"
serve=$SERVE base=$BASE monitor=$MONITOR
half=$((duration / 2))
log "$servers servers ready; ${half}s stateless, then ${half}s in sessions, $concurrent connections"

t0=$(cpu_ticks "$serve")
oha_mcp "$base/mcp/api" -z "${half}s" -c "$concurrent" -w >"$WORK/stateless.json"
t1=$(cpu_ticks "$serve")
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/stateless.json")
stateless_us=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$ok" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')

# A wrk thread holds one session for all its connections, and a server takes one session's
# calls one at a time: one connection per thread, so there are as many sessions as connections.
threads=$concurrent
wrk -t"$threads" -c"$concurrent" -d"${half}s" --latency -s "$(dirname "$0")/session_calls.lua" \
    "$base/mcp/api" >"$WORK/sessions.txt"
t2=$(cpu_ticks "$serve")
s_requests=$(awk '/requests in/ {print $1}' "$WORK/sessions.txt")
s_rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/sessions.txt")
s_p50=$(awk '$1 == "50%" {print $2}' "$WORK/sessions.txt")
s_p99=$(awk '$1 == "99%" {print $2}' "$WORK/sessions.txt")
s_bad=$(awk '/non-2xx answers/ {print $NF}' "$WORK/sessions.txt")
s_errors=$(awk '/Socket errors|Non-2xx/ {print}' "$WORK/sessions.txt")
session_us=$(awk -v t=$((t2 - t1)) -v hz="$CLK_TCK" -v n="$s_requests" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')

cat <<EOF

load test: $servers servers, $concurrent connections, ${duration}s
| workload | requests/s | p50 | p99 | failed | proxy CPU per request |
|---|---|---|---|---|---|
| stateless (oha) | $rps | ${p50} ms | ${p99} ms | $((non200 + errors)) of $((ok + non200 + errors)) | ${stateless_us} us |
| sessions (wrk) | $s_rps | $s_p50 | $s_p99 | ${s_bad:-?} (last thread) ${s_errors} | ${session_us} us |
proxy RSS at the end: $(rss_kib "$serve") KiB
EOF
[ $((non200 + errors)) -eq 0 ] && [ "${s_bad:-1}" = 0 ] && [ -z "$s_errors" ]
