#!/usr/bin/env bash
# The seed's stress test (`--servers 1000`): the whole default fleet (10 categories x 100 servers
# on 50000-50999, as conf/fleet.toml), then stateless `tools/call` POSTs spread over every
# category for SECS seconds. Reports time to all-ready, proxy RSS, the servers' total PSS, the
# rate and the failures.
# Usage: load-tests/stress-test.sh [--servers 1000] [--secs 60] [--conc 100]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
servers=1000 secs=60 conc=100
parse_opts servers secs conc -- "$@"
ensure_build
ensure_oha
names=(database filesystem api ai-ml network security analytics cache queue monitoring)
per=$(((servers + 9) / 10))
categories=""
for i in "${!names[@]}"; do
    start=$((50000 + i * 100))
    categories+="[categories.${names[$i]}]
ports = \"$start-$((start + 99))\"
servers = $per
"
done
t0=$SECONDS
THREADS=2 serve_fleet "$categories" 300
serve=$SERVE base=$BASE monitor=$MONITOR
ready_s=$((SECONDS - t0))
pss=0
for pid in $(pgrep -P "$serve"); do
    pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
done
log "$((per * 10)) servers ready in ${ready_s}s; their PSS $((pss / 1024)) MiB"

group=$(IFS='|'; echo "${names[*]}")
c0=$(cpu_ticks "$serve")
oha --no-tui --output-format json -m POST -T application/json \
    -A 'application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: echo' \
    -d "$ECHO_BODY" -z "${secs}s" -c "$conc" -w --rand-regex-url \
    "http://127.0.0.1:${PROXY_PORT:-18080}/mcp/($group)" >"$WORK/oha.json"
c1=$(cpu_ticks "$serve")
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
us=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$ok" 'BEGIN {printf "%.1f", n ? t / hz * 1e6 / n : 0}')
cat <<EOF

stress test: $((per * 10)) servers in 10 categories, oha -c $conc for ${secs}s over all of them
  start      all ready in ${ready_s}s; servers' PSS $((pss / 1024)) MiB in total
  answers    $ok x 200, $((non200 + errors)) failed
  rate       $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $us us per request
  proxy RSS  $(rss_kib "$serve") KiB (peak $(awk '/^VmHWM:/ {print $2}' "/proc/$serve/status") KiB)
EOF
[ $((non200 + errors)) -eq 0 ]
