#!/usr/bin/env bash
# What the stdio bridge costs (reported, not asserted), on the servers `.ci/setup` installs:
#  1. per tools/call: server-everything bridged (stdio, one session's child) against the same
#     server over its own Streamable HTTP transport (`streamableHttp`, a static backend), both
#     through the proxy, one session each, oha -c 1 with the session's id: CPU of `serve` and of
#     the server process per call, latency, calls/s;
#  2. new sessions per second (each an initialize that starts a server-memory child, then its
#     DELETE), 4 clients for --secs seconds;
#  3. memory: PSS of one idle server-memory child, and what a bridged server with no child adds
#     to `serve` (RSS with 101 idle bridged servers minus RSS with 1, over 100).
# Loopback only, bounded in requests and time.
#   bash load-tests/stdio.sh [--calls 3000] [--rounds 3] [--secs 10]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
calls=3000 rounds=3 secs=10
parse_opts calls rounds secs -- "$@"
ensure_build
ensure_oha
NODE=$ROOT/target/stdio-servers/node/node_modules/@modelcontextprotocol
[ -f "$NODE/server-everything/dist/index.js" ] || { log "the test servers are missing: bash .ci/setup"; exit 1; }

EVERY=$NODE/server-everything/dist/index.js
MEMORY=$NODE/server-memory/dist/index.js
NATIVE_PORT=17701
PORT=$NATIVE_PORT node "$EVERY" streamableHttp >"$WORK/native.log" 2>&1 &
NATIVE=$!
started "$NATIVE"
wait_port "$NATIVE_PORT"

categories="
[categories.bridged]
transport = \"stdio\"
command = [\"node\", \"$EVERY\", \"stdio\"]
ports = \"17710-17710\"
[categories.memory]
transport = \"stdio\"
command = [\"node\", \"$MEMORY\"]
ports = \"17720-17720\"
max_sessions = 1000
env = { MEMORY_FILE_PATH = \"$WORK/memory.jsonl\" }
[categories.idle]
transport = \"stdio\"
command = [\"node\", \"$MEMORY\"]
ports = \"17800-17900\"
[categories.native]
backends = [\"127.0.0.1:$NATIVE_PORT\"]
"
# start_serve: `serve` on $WORK/fleet.toml (a session's first answer waits for its child: a
# longer first-byte timeout than the default 5 s); SERVE, BASE as serve_fleet sets them.
start_serve() {
    "$BIN" serve --config "$WORK/fleet.toml" >"$WORK/serve.log" 2>&1 &
    SERVE=$!
    started "$SERVE"
    BASE="http://127.0.0.1:${PROXY_PORT:-18080}"
    wait_ready "$BASE" 60
    sleep 1
}
write_fleet_config "$WORK/fleet.toml" "$categories"
sed -i 's/^\[proxy\]$/[proxy]\nfirst_byte_timeout = "30s"/' "$WORK/fleet.toml"
start_serve
fresh_rss=$(rss_kib "$SERVE")
H=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25')
INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"load","version":"1"}}}'
CALL='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}'

# session CATEGORY: initialize + initialized through the proxy; prints the session id.
session() {
    local sid
    sid=$(curl -s -D - -o /dev/null "${H[@]}" "$BASE/mcp/$1" -d "$INIT" | tr -d '\r' | awk 'tolower($1)=="mcp-session-id:" {print $2}')
    curl -s -o /dev/null "${H[@]}" -H "mcp-session-id: $sid" "$BASE/mcp/$1" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    echo "$sid"
}

# The processes a bridged category's children are (children of serve running that script).
bridge_children() { pgrep -P "$SERVE" -f "$1" | tr '\n' ' '; }

echo "## 1. per tools/call: bridged (stdio) vs server-everything's own Streamable HTTP, both through the proxy"
echo "round category calls/s p50_ms p99_ms serve_us/call server_us/call total_us/call"
for r in $(seq "$rounds"); do
    for cat in native bridged; do
        sid=$(session "$cat")
        if [ "$cat" = native ]; then server_pids=$NATIVE; else server_pids=$(bridge_children "$EVERY"); fi
        s0=$(cpu_ticks "$SERVE"); p0=$(cpu_ticks $server_pids)
        oha --no-tui --output-format json -m POST -T application/json \
            -A 'application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25' \
            -H "mcp-session-id: $sid" -d "$CALL" -c 1 -n "$calls" "$BASE/mcp/$cat" >"$WORK/oha.json"
        s1=$(cpu_ticks "$SERVE"); p1=$(cpu_ticks $server_pids)
        read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/oha.json")
        [ "$ok" = "$calls" ] || log "$cat: $ok of $calls answered 200 ($non200 other, $errors errors)"
        python3 - "$r" "$cat" "$rps" "$p50" "$p99" "$((s1 - s0))" "$((p1 - p0))" "$ok" "$CLK_TCK" <<'EOF'
import sys
r, cat, rps, p50, p99, s, p, n, tck = sys.argv[1:]
us = lambda ticks: int(ticks) * 1e6 / int(tck) / max(1, int(n))
print(f"{r} {cat} {float(rps):.0f} {p50} {p99} {us(s):.0f} {us(p):.0f} {us(s) + us(p):.0f}")
EOF
        curl -s -o /dev/null -X DELETE -H "mcp-session-id: $sid" "$BASE/mcp/$cat"
    done
done

echo
echo "## 2. new sessions per second (initialize starts a server-memory child; DELETE ends it), 4 clients, ${secs}s"
python3 - "$BASE/mcp/memory" "$secs" <<'EOF'
import http.client, json, sys, threading, time, urllib.parse
url, secs = sys.argv[1], float(sys.argv[2])
u = urllib.parse.urlparse(url)
init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}}})
headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
done, failed, lat = [0], [0], []
lock = threading.Lock()
stop = time.time() + secs
def client():
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    while time.time() < stop:
        t = time.time()
        c.request("POST", u.path, init, headers)
        r = c.getresponse(); r.read()
        sid = r.getheader("mcp-session-id")
        if r.status != 200 or not sid:
            with lock: failed[0] += 1
            continue
        took = time.time() - t
        c.request("DELETE", u.path, headers={"mcp-session-id": sid}); c.getresponse().read()
        with lock:
            done[0] += 1; lat.append(took)
threads = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
lat.sort()
p50 = lat[len(lat) // 2] * 1000 if lat else 0
print(f"sessions/s {done[0] / secs:.1f}  (sessions {done[0]}, failed {failed[0]}, initialize p50 {p50:.0f} ms)")
EOF

echo
echo "## 3. memory"
sid=$(session memory)
child=$(bridge_children "$MEMORY" | awk '{print $1}')
sleep 1
pss=$(awk '/^Pss:/ {print $2}' "/proc/$child/smaps_rollup")
rss=$(rss_kib "$child")
echo "one idle server-memory child: PSS ${pss} KiB, RSS ${rss} KiB"
curl -s -o /dev/null -X DELETE -H "mcp-session-id: $sid" "$BASE/mcp/memory"
with=$fresh_rss
# The same instance, fresh, with 1 idle bridged server instead of 101.
kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true
sed -i 's/^ports = "17800-17900"$/ports = "17800-17800"/' "$WORK/fleet.toml"
start_serve
without=$(rss_kib "$SERVE")
echo "serve RSS with 101 idle bridged servers: ${with} KiB; with 1: ${without} KiB; per bridged server with no child: $(( (with - without) / 100 )) KiB"
