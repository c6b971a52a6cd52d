#!/usr/bin/env bash
# What authentication costs (reported, not asserted). Four built-in servers behind the proxy
# (one worker thread); each round runs every setting once, in turn, with a fresh `serve`:
#   off      no [auth]
#   api-key  auth.mode = "api-key", one key
#   oauth    auth.mode = "oauth" against oidc-provider (tests/fixtures/auth_server.mjs, from
#            target/auth-server: `bash .ci/setup`), one RS256 token (warm: verified once, then
#            from the token cache)
# and reports `serve`'s CPU per small stateless tools/call (oha -c 16, --requests each).
# Then, on the oauth setting: the first request of --tokens new tokens (each verified once:
# signature, claims), against the same number of warm requests; and tools/list with a
# category allow-list (the answer filtered) against tools/list without one.
# Loopback only, bounded in requests and time.
#   bash load-tests/auth.sh [--requests 20000] [--rounds 3] [--tokens 300]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
requests=20000 rounds=3 tokens=300
parse_opts requests rounds tokens -- "$@"
ensure_build
ensure_oha
PROXY_PORT=17880
AUD="http://127.0.0.1:$PROXY_PORT"
start_auth_server 17801 "$AUD"
token() { auth_token "$AUD/mcp/api"; }
KEY=$(make_api_key "$WORK/api-keys.toml")

CATEGORY="[categories.api]
ports = \"17810-17813\""
settings="off api-key oauth"
auth_lines() {
    case $1 in
        off) echo "" ;;
        api-key) printf '[auth]\nmode = "api-key"\napi_keys_file = "%s"\n' "$WORK/api-keys.toml" ;;
        oauth) printf '[auth]\nmode = "oauth"\nissuer = "http://127.0.0.1:%s"\naudience = "%s"\n' "$AS_PORT" "$AUD" ;;
    esac
}
credential() {
    case $1 in
        off) echo "" ;;
        api-key) echo "Authorization: Bearer $KEY" ;;
        oauth) echo "Authorization: Bearer $(token)" ;;
    esac
}

# run SETTING EXTRA_CATEGORY_LINES: starts serve, leaves SERVE set.
run() {
    serve_fleet "$CATEGORY
$2
$(auth_lines "$1")"
}
stop() { kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true; }

# measure URL N [oha args]: prints "cpu_us_per_req rps p50 p99 ok non200".
measure() {
    local url=$1 n=$2
    shift 2
    local before after
    before=$(cpu_ticks "$SERVE")
    oha_mcp "$url" -n "$n" -c 16 "$@" >"$WORK/oha.json"
    after=$(cpu_ticks "$SERVE")
    read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
    awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$n" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v ok="$ok" -v bad="$non200" \
        'BEGIN { printf "%.1f %s %s %s %s %s\n", t * 1e6 / hz / n, rps, p50, p99, ok, bad }'
}

declare -A cpu
printf '%-8s %6s %10s %8s %8s %8s %7s\n' setting round "us/req" rps p50_ms p99_ms non200
for r in $(seq "$rounds"); do
    for s in $settings; do
        run "$s" ""
        OHA_HEADER=$(credential "$s")
        # A warm-up that also verifies the token once.
        OHA_HEADER=$OHA_HEADER measure "$BASE/mcp/api" 500 >/dev/null
        read -r us rps p50 p99 ok bad < <(OHA_HEADER=$OHA_HEADER measure "$BASE/mcp/api" "$requests")
        cpu[$s]="${cpu[$s]:-} $us"
        printf '%-8s %6s %10s %8s %8s %8s %7s\n' "$s" "$r" "$us" "$rps" "$p50" "$p99" "$bad"
        stop
    done
done
for s in $settings; do
    printf 'median %-8s %s us/req\n' "$s" "$(tr ' ' '\n' <<<"${cpu[$s]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done

# First requests of new tokens against warm ones, one at a time (curl), serve's CPU only.
run oauth ""
for i in $(seq "$tokens"); do token; done >"$WORK/tokens.txt"
warm=$(head -1 "$WORK/tokens.txt")
send() {
    curl -s -o /dev/null -X POST "$BASE/mcp/api" -H "Authorization: Bearer $1" \
        -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
        -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: echo' \
        -d "$ECHO_BODY"
}
send "$warm"
before=$(cpu_ticks "$SERVE")
for i in $(seq "$tokens"); do send "$warm"; done
mid=$(cpu_ticks "$SERVE")
while read -r t; do send "$t"; done <"$WORK/tokens.txt"
after=$(cpu_ticks "$SERVE")
awk -v w=$((mid - before)) -v f=$((after - mid)) -v hz="$CLK_TCK" -v n="$tokens" 'BEGIN {
    printf "one request each, %d requests: warm token %.1f us/req, new token %.1f us/req: a verification costs %.1f us\n",
        n, w * 1e6 / hz / n, f * 1e6 / hz / n, (f - w) * 1e6 / hz / n }'
stop

# tools/list with and without an allow-list (the filtered answer goes through Pingora's path).
LIST_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"oha","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
list_measure() {
    local before after
    before=$(cpu_ticks "$SERVE")
    oha --no-tui --output-format json -m POST -T application/json -A 'application/json, text/event-stream' \
        -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list' -H "Authorization: Bearer $KEY" \
        -d "$LIST_BODY" -n "$requests" -c 16 "$BASE/mcp/api" >"$WORK/oha.json"
    after=$(cpu_ticks "$SERVE")
    read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
    awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" -v rps="$rps" -v bad="$non200" \
        'BEGIN { printf "%.1f us/req, %s req/s, non-200 %s\n", t * 1e6 / hz / n, rps, bad }'
}
for r in $(seq "$rounds"); do
    run api-key ""
    echo "tools/list, no allow-list, round $r: $(list_measure)"
    stop
    run api-key "[categories.api.auth]
tools = [\"echo\", \"recall\"]"
    echo "tools/list, allow-list (filtered), round $r: $(list_measure)"
    stop
done
