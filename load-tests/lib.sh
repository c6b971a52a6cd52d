# Shared by the load-test scripts (source it): the release build, the drivers (oha, wrk), a
# throw-away work directory, cleanup of every process started (by PID), readiness, CPU and
# memory sampling from /proc, and the MCP request the drivers send.
# Loopback only; every script is bounded in time.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# MCP_FLEET_BIN: measure another build of the binary (the build step is then skipped).
BIN=${MCP_FLEET_BIN:-$ROOT/target/release/mcp-fleet}
export PATH="$HOME/.cargo/bin:$PATH"
WORK=$(mktemp -d /tmp/mcp-fleet-load.XXXXXX)
STARTED=()
CLK_TCK=$(getconf CLK_TCK)

# A 2026-07-28 stateless MCP `tools/call echo` (no session; routing headers set).
ECHO_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"oha","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}'

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# started PID: remember a process to stop at exit.
started() { STARTED+=("$1"); }

need_apt() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
    fi
}

ensure_build() {
    need_apt build-essential cmake pkg-config curl python3
    command -v cargo >/dev/null || { log "cargo is missing: run .ci/setup first"; exit 1; }
    [ -n "${MCP_FLEET_BIN:-}" ] && return
    (cd "$ROOT" && cargo build --release --locked --quiet)
}

ensure_oha() {
    command -v oha >/dev/null && return
    log "installing oha (cargo install oha --locked; a few minutes on 2 cores)"
    cargo install oha --locked --quiet
}

ensure_wrk() { command -v wrk >/dev/null || need_apt wrk; }

# wait_ready BASE [SECONDS]: until the proxy's /stats says every server is ready.
wait_ready() {
    local base=$1 deadline=$((SECONDS + ${2:-120}))
    while [ $SECONDS -lt $deadline ]; do
        if curl -sf "$base/stats" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["total"] > 0 and d["ready"] == d["total"] else 1)' 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    log "not ready after ${2:-120}s: $(curl -s "$base/stats" | head -c 300)"
    return 1
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local deadline=$((SECONDS + ${2:-30}))
    while [ $SECONDS -lt $deadline ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on $1"
    return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Sum of the RSS of several processes (a proxy's master and workers).
rss_sum_kib() {
    local total=0 pid
    for pid in "$@"; do total=$((total + $(rss_kib "$pid"))); done
    echo "$total"
}

# proc_ticks all|sys PID...: user + system (all) or system (sys) clock ticks of the processes,
# all their threads.
proc_ticks() {
    local which=$1 total=0 pid
    shift
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        local rest
        rest=$(sed 's/^.*) //' "/proc/$pid/stat")
        set -- $rest
        if [ "$which" = sys ]; then
            total=$((total + ${13}))
        else
            total=$((total + ${12} + ${13}))
        fi
    done
    echo "$total"
}
cpu_ticks() { proc_ticks all "$@"; }
sys_ticks() { proc_ticks sys "$@"; }

# oha_mcp URL ARGS...: oha sending the stateless echo, JSON summary on stdout. OHA_HEADER adds
# one request field, e.g. OHA_HEADER='Connection: keep-alive' (what every MCP SDK sends).
oha_mcp() {
    local url=$1
    shift
    oha --no-tui --output-format json -m POST -T application/json \
        -A 'application/json, text/event-stream' \
        -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: echo' \
        ${OHA_HEADER:+-H "$OHA_HEADER"} -d "$ECHO_BODY" "$@" "$url"
}

# oha_summary FILE: "rps p50_ms p99_ms ok non200 errors" from an oha JSON summary.
oha_summary() {
    python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
lat = d.get("latencyPercentiles", {})
codes = d.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
non200 = sum(v for k, v in codes.items() if k != "200")
errors = sum(d.get("errorDistribution", {}).values())
p50 = (lat.get("p50") or 0) * 1000
p99 = (lat.get("p99") or 0) * 1000
print(f"{s['requestsPerSec']:.0f} {p50:.2f} {p99:.2f} {ok} {non200} {errors}")
EOF
}

# A config for `serve` in $WORK: proxy on PROXY_PORT, monitor and admin beside it, the given
# category lines appended.
write_fleet_config() {
    local file=$1 categories=$2
    cat >"$file" <<EOF
[proxy]
listen = "127.0.0.1:${PROXY_PORT:-18080}"
threads = ${THREADS:-1}
strategy = "round-robin"
[monitor]
listen = "127.0.0.1:${MONITOR_PORT:-19090}"
per_server_metrics = false
[admin]
listen = "127.0.0.1:${ADMIN_PORT:-13000}"
[health]
kind = "tcp"
interval = "30s"
[fleet]
batch_size = 100
command = ["$BIN", "backend", "--port", "{port}", "--category", "{category}"]
state_dir = "$WORK/state"
log_dir = "$WORK/logs"
reserve_ports = true
$categories
EOF
}

# write_static_config FILE PORT BACKENDS [PROXY_LINES]: a config with no fleet, one category
# `api` on BACKENDS (a TOML list body), one worker thread, tcp checks every 30 s as in
# production, and PROXY_LINES added to [proxy].
write_static_config() {
    cat >"$1" <<TOML
[proxy]
listen = "127.0.0.1:$2"
threads = 1
${4:-}
[monitor]
listen = "127.0.0.1:19090"
per_server_metrics = false
[admin]
listen = "127.0.0.1:13000"
[health]
kind = "tcp"
interval = "30s"
[fleet]
enabled = false
state_dir = "$WORK/state"
log_dir = "$WORK/logs"
[categories.api]
backends = [$3]
TOML
}

# parse_opts NAME... -- "$@": each `--NAME VALUE` sets the shell variable NAME (declared with its
# default by the caller); any other argument is an error.
parse_opts() {
    local names=()
    while [ "$1" != "--" ]; do names+=("$1"); shift; done
    shift
    while [ $# -gt 0 ]; do
        local key=${1#--} known=""
        for n in "${names[@]}"; do [ "$n" = "$key" ] && known=1; done
        if [ -z "$known" ] || [ $# -lt 2 ]; then
            echo "unknown option or missing value: $1 (options: ${names[*]/#/--})" >&2
            exit 2
        fi
        printf -v "$key" '%s' "$2"
        shift 2
    done
}

# serve_fleet CATEGORY_LINES [TIMEOUT]: writes $WORK/fleet.toml, starts `serve` (stopped at exit)
# and waits until every server is ready. Sets SERVE (its PID), BASE and MONITOR (URLs).
serve_fleet() {
    write_fleet_config "$WORK/fleet.toml" "$1"
    "$BIN" serve --config "$WORK/fleet.toml" >"$WORK/serve.log" 2>&1 &
    SERVE=$!
    started "$SERVE"
    BASE="http://127.0.0.1:${PROXY_PORT:-18080}"
    MONITOR="http://127.0.0.1:${MONITOR_PORT:-19090}"
    wait_ready "$BASE" "${2:-120}"
}

# hold_streams PORT N SECONDS READY_FILE: initializes N MCP sessions through the proxy on PORT
# (category api), opens each one's GET event stream, writes "OPEN FAILED" to READY_FILE, holds
# them SECONDS, then closes them.
hold_streams() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF'
import http.client, json, socket, sys, time
port, n, hold, ready_file = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "hold_streams", "version": "1"}}})
notify = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
accept = "application/json, text/event-stream"
conn = http.client.HTTPConnection("127.0.0.1", port)
held, failed = [], 0
for i in range(n):
    conn.request("POST", "/mcp/api", init, {"Content-Type": "application/json", "Accept": accept})
    r = conn.getresponse(); r.read()
    sid = r.getheader("mcp-session-id")
    if r.status != 200 or not sid:
        failed += 1; continue
    conn.request("POST", "/mcp/api", notify, {"Content-Type": "application/json", "Accept": accept, "Mcp-Session-Id": sid})
    r = conn.getresponse(); r.read()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /mcp/api HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMcp-Protocol-Version: 2025-11-25\r\n\r\n".encode())
    head = s.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        failed += 1; s.close(); continue
    held.append(s)
open(ready_file, "w").write(f"{len(held)} {failed}\n")
time.sleep(hold)
for s in held:
    s.close()
EOF
}

# start_auth_server PORT AUDIENCE: oidc-provider (tests/fixtures/auth_server.mjs, installed by
# .ci/setup into target/auth-server) on PORT, signing with fresh keys; stopped at exit.
start_auth_server() {
    local dir=$ROOT/target/auth-server
    [ -d "$dir/node_modules/oidc-provider" ] || { log "oidc-provider is missing: bash .ci/setup"; exit 1; }
    AS_PORT=$1
    AS_AUDIENCE=$2
    node "$ROOT/tests/fixtures/jwt_tool.mjs" keys 1 >"$WORK/as-keys.json"
    (cd "$dir" && exec node "$ROOT/tests/fixtures/auth_server.mjs" "$AS_PORT" "$WORK/as-keys.json" "$AS_AUDIENCE") \
        >"$WORK/as.log" 2>&1 &
    started $!
    wait_port "$AS_PORT"
}

# auth_token RESOURCE: a client-credentials access token (RS256, scope mcp:api) for RESOURCE.
auth_token() {
    curl -s -u rs-client:secret-rs-client -d grant_type=client_credentials \
        -d scope=mcp:api --data-urlencode "resource=$1" \
        "http://127.0.0.1:$AS_PORT/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# make_api_key FILE: writes an api_keys_file (0600) with one key named "bench"; prints the key.
make_api_key() {
    local key
    key="bench-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf '[[key]]\nname = "bench"\nsha256 = "%s"\n' "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" >"$1"
    chmod 600 "$1"
    echo "$key"
}
