#!/usr/bin/env bash
# Thousands of open SSE streams through the proxy: STREAMS MCP sessions are initialized, each
# opens its standalone GET event stream, and all are held for HOLD seconds while stateless calls
# go on beside them. Reports the proxy's memory per open stream and whether the calls beside
# the streams were all answered.
# Usage: load-tests/sse.sh [--streams 2000] [--servers 20] [--hold 20]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
streams=2000 servers=20 hold=20
parse_opts streams servers hold -- "$@"
ensure_build
ensure_oha
ulimit -n "$(ulimit -Hn)"
serve_fleet "[categories.api]
ports = \"50200-50299\"
servers = $servers"
serve=$SERVE base=$BASE monitor=$MONITOR
before=$(rss_kib "$serve")

hold_streams "${PROXY_PORT:-18080}" "$streams" "$hold" "$WORK/ready" &
holder=$!
started "$holder"
while [ ! -s "$WORK/ready" ] && kill -0 "$holder" 2>/dev/null; do sleep 0.5; done
read -r open failed <"$WORK/ready"
during=$(rss_kib "$serve")
gauge=$(curl -s "$monitor/metrics" | awk '/^mcp_fleet_sse_streams / {print $2}')
oha_mcp "$base/mcp/api" -z "$((hold / 2))s" -c 16 -w >"$WORK/oha.json"
read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
wait "$holder" || true
per=$(awk -v a="$during" -v b="$before" -v n="$open" 'BEGIN {printf "%.1f", n ? (a - b) / n : 0}')
cat <<EOF

sse: $open event streams open through the proxy ($failed failed to open), gauge $gauge
  proxy RSS   $before KiB before, $during KiB with the streams open: $per KiB per stream
  beside them $ok stateless calls answered 200, $((non200 + errors)) failed ($rps req/s, p99 $p99 ms)
EOF
[ "$failed" = 0 ] && [ $((non200 + errors)) -eq 0 ]
