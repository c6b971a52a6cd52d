#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (repeatable, unlike time on
# a shared host): one built-in MCP server, `mcp-fleet serve` (one worker thread) in front of it
# under valgrind, a warm-up of WARMUP stateless `tools/call` POSTs, the counters zeroed, then
# REQUESTS more with CONC connections (oha). Prints the total of the dump's `summary:` line
# divided by the requests. `--fast_path false` measures Pingora's path; `--text_kib N` makes the
# call's argument N KiB (100: compare.sh's body100k workload). `--events SECS` measures compare.sh's
# events workload instead (drive.py, CONC clients for SECS seconds, calls answered by 100 progress
# notifications as an event stream) and divides by the events delivered.
# Usage: load-tests/callgrind.sh [--requests 3000] [--warmup 500] [--conc 8] [--fast_path true] [--text_kib 0] [--events 0]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
requests=3000 warmup=500 conc=8 fast_path=true text_kib=0 events=0
parse_opts requests warmup conc fast_path text_kib events -- "$@"
if [ "$text_kib" -gt 0 ]; then
    ECHO_BODY=$(python3 -c 'import json, sys; b = json.loads(sys.argv[1]); b["params"]["arguments"]["text"] = "x" * (1024 * int(sys.argv[2])); print(json.dumps(b))' "$ECHO_BODY" "$text_kib")
fi
ensure_build
ensure_oha
need_apt valgrind

port=21000
"$BIN" backend --port "$port" --category api >/dev/null 2>&1 &
started $!
wait_port "$port"
# fast_path is left out when true, so builds from before the switch can be measured too.
write_static_config "$WORK/fleet.toml" 18080 "\"127.0.0.1:$port\"" \
    "$([ "$fast_path" = true ] || echo "fast_path = $fast_path")"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN" serve --config "$WORK/fleet.toml" >"$WORK/serve.log" 2>&1 &
serve=$!
started "$serve"
wait_ready "http://127.0.0.1:18080" 300
url="http://127.0.0.1:18080/mcp/api"
oha_mcp "$url" -n "$warmup" -c "$conc" >/dev/null
callgrind_control -z "$serve" >/dev/null
if [ "$events" -gt 0 ]; then
    read -r _ _ _ ok non200 errors <<<"$(python3 "$ROOT/load-tests/drive.py" events "$url" "$events" "$conc")"
    callgrind_control -d "$serve" >/dev/null
else
    oha_mcp "$url" -n "$requests" -c "$conc" >"$WORK/run.json"
    callgrind_control -d "$serve" >/dev/null
    read -r _ _ _ ok non200 errors <<<"$(oha_summary "$WORK/run.json")"
fi
# The dump after zeroing is the one written last.
dump=$(ls -t "$WORK"/callgrind.out* | head -n 1)
total=$(awk '/^summary:/ {print $2}' "$dump")
if [ "$events" -gt 0 ]; then
    log "fast_path=$fast_path: $ok events delivered ($non200 bad answers, $errors errors)"
    [ "$ok" -gt 0 ] || { log "no event delivered"; exit 1; }
    echo "instructions per event (fast_path=$fast_path): $((total / ok)) ($total / $ok)"
    exit 0
fi
log "fast_path=$fast_path: $ok answered 200 ($non200 other, $errors errors)"
echo "instructions per request (fast_path=$fast_path, text_kib=$text_kib): $((total / requests)) ($total / $requests)"
