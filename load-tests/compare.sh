#!/usr/bin/env bash
# Side by side: the same N built-in MCP servers behind mcp-fleet, nginx and HAProxy (Debian's),
# each with one worker, keep-alive to the upstreams and round-robin; plus straight at one server
# for reference. Runs alternate (A B C A B C ...) so drift on a shared machine hits all alike.
# Each run: oha -c CONC for SECS seconds of stateless MCP `tools/call` POSTs; then one fixed-rate
# run per proxy (oha -q RATE, latency-corrected) so latency is compared without coordinated
# omission. CPU is user+system time from /proc of the proxy's processes (master and workers),
# peak RSS their VmHWM.
# --auth api-key | oauth: mcp-fleet checks every request's credential (an API key, or an RS256
# token from oidc-provider, warm in the token cache); nginx and HAProxy get the same field and
# pass it on, so all three carry the same bytes.
# --workload: what the clients send (each on keep-alive connections):
#   post      the stateless POST above, as oha sends it (no Connection field)
#   sdk       the same POST with the fields the MCP SDKs add (Connection: keep-alive, their
#             User-Agent and Accept-Encoding)
#   body100k  the POST with a 100 KiB argument
#   chunked   the POST as a chunked upload (load-tests/drive.py)
#   session   the 2025-11-25 session life: initialize, notifications/initialized, the GET
#             stream, 10 calls, DELETE (drive.py), all to one server: nginx has no way to send
#             a session's requests to the server that minted it among several
#   events    a call answered by 100 progress notifications as an event stream (drive.py):
#             the unit is an event delivered, not a request
# The fixed-rate runs are made for the oha workloads only.
# --floor true (post, sdk, body100k): a fourth proxy in each round, examples/relay_floor.rs, the
# least a tokio proxy does for such a request (no policy, no timeouts, no metrics), so the run
# shows what the runtime and the kernel cost before anything mcp-fleet decides.
# Usage: load-tests/compare.sh [--backends 100] [--rounds 3] [--secs 15] [--conc 64] [--rate 4000] [--auth none] [--workload post] [--floor false]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
backends=100 rounds=3 secs=15 conc=64 rate=4000 auth=none workload=post floor=false
parse_opts backends rounds secs conc rate auth workload floor -- "$@"
case $workload in
    post | sdk | body100k | chunked | session | events) ;;
    *) echo "--workload: post, sdk, body100k, chunked, session or events" >&2; exit 2 ;;
esac
ensure_build
ensure_oha
need_apt nginx haproxy
proxies="mcp-fleet nginx haproxy"
if [ "$floor" = true ]; then
    case $workload in
        post | sdk | body100k) ;;
        *) echo "--floor: for the post, sdk and body100k workloads only" >&2; exit 2 ;;
    esac
    (cd "$ROOT" && cargo build --release --locked --quiet --example relay_floor)
    proxies="$proxies floor"
fi

# Below the ephemeral range, so outgoing connections never take a server's port.
first=21000
FLEET_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082 FLOOR_PORT=18083
# One more for the session workload (a backend belongs to one category).
one=$((first + backends))
for i in $(seq 0 "$backends"); do
    port=$((first + i))
    "$BIN" backend --port "$port" --category api >/dev/null 2>&1 &
    started $!
done
for i in $(seq 0 "$backends"); do wait_port $((first + i)); done
log "$backends servers up on $first-$((first + backends - 1))"

# mcp-fleet: static backends, no fleet; health checks every 30 s as in production.
list=$(seq -s, -f "\"127.0.0.1:%g\"" $first $((first + backends - 1)))
write_static_config "$WORK/fleet.toml" "$FLEET_PORT" "$list" \
    "$(printf 'strategy = "round-robin"\nupstream_keepalive = 1024')"
# The session workload's one server, behind every proxy as /mcp/one.
printf '[categories.one]\nbackends = ["127.0.0.1:%s"]\n' "$one" >>"$WORK/fleet.toml"
case $auth in
    none) ;;
    api-key)
        key=$(make_api_key "$WORK/api-keys.toml")
        printf '[auth]\nmode = "api-key"\napi_keys_file = "%s"\n' "$WORK/api-keys.toml" >>"$WORK/fleet.toml"
        export OHA_HEADER="Authorization: Bearer $key"
        ;;
    oauth)
        start_auth_server 18090 "http://127.0.0.1:$FLEET_PORT"
        printf '[auth]\nmode = "oauth"\nissuer = "http://127.0.0.1:18090"\naudience = "http://127.0.0.1:%s"\n' \
            "$FLEET_PORT" >>"$WORK/fleet.toml"
        export OHA_HEADER="Authorization: Bearer $(auth_token "http://127.0.0.1:$FLEET_PORT/mcp/api")"
        ;;
    *) echo "--auth: none, api-key or oauth" >&2; exit 2 ;;
esac
log "auth: $auth"

mkdir -p "$WORK/nginx"
{
    echo "worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log warn;"
    echo "events { worker_connections 4096; }"
    # Bodies in memory (as the other two hold them): the workers cannot write to the root-owned $WORK.
    echo "http { access_log off; client_body_buffer_size 1m; client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;"
    echo "  upstream mcp {"
    for i in $(seq 0 $((backends - 1))); do echo "    server 127.0.0.1:$((first + i));"; done
    echo "    keepalive 1024; }"
    echo "  upstream one { server 127.0.0.1:$one; keepalive 1024; }"
    echo "  server { listen 127.0.0.1:$NGINX_PORT;"
    for location in api:mcp one:one; do
        echo "    location = /mcp/${location%%:*} { proxy_pass http://${location#*:}/mcp; proxy_http_version 1.1;"
        echo "      proxy_set_header Connection \"\"; proxy_set_header Host 127.0.0.1; proxy_buffering off; }"
    done
    echo "  } }"
} >"$WORK/nginx.conf"

{
    echo "global"
    echo "  nbthread 1"
    echo "  maxconn 8000"
    echo "defaults"
    echo "  mode http"
    echo "  timeout connect 1s"
    echo "  timeout client 60s"
    echo "  timeout server 60s"
    echo "  option http-keep-alive"
    # Forward each part as it comes: without it the head of an idle event stream waits.
    echo "  option http-no-delay"
    echo "  http-reuse always"
    echo "frontend fe"
    echo "  bind 127.0.0.1:$HAPROXY_PORT"
    echo "  use_backend one if { path /mcp/one }"
    echo "  default_backend be"
    echo "backend one"
    echo "  http-request set-path /mcp"
    echo "  http-request set-header Host 127.0.0.1"
    echo "  server s0 127.0.0.1:$one"
    echo "backend be"
    echo "  balance roundrobin"
    echo "  http-request set-path /mcp"
    echo "  http-request set-header Host 127.0.0.1"
    for i in $(seq 0 $((backends - 1))); do echo "  server s$i 127.0.0.1:$((first + i))"; done
} >"$WORK/haproxy.cfg"

"$BIN" serve --config "$WORK/fleet.toml" >"$WORK/fleet.log" 2>&1 &
fleet_pid=$!
started "$fleet_pid"
nginx -c "$WORK/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx.log" &
nginx_pid=$!
started "$nginx_pid"
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
haproxy_pid=$!
started "$haproxy_pid"
if [ "$floor" = true ]; then
    "$ROOT/target/release/examples/relay_floor" "127.0.0.1:$FLOOR_PORT" "$first" "$backends" &
    floor_pid=$!
    started "$floor_pid"
    wait_port $FLOOR_PORT
fi
wait_ready "http://127.0.0.1:$FLEET_PORT"
wait_port $NGINX_PORT
wait_port $HAPROXY_PORT

# The processes whose CPU and memory count for each proxy.
group() {
    case $1 in
    mcp-fleet) echo "$fleet_pid" ;;
    nginx) echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" ;;
    haproxy) echo "$haproxy_pid $(pgrep -P "$haproxy_pid" | tr '\n' ' ')" ;;
    floor) echo "$floor_pid" ;;
    direct) echo "" ;;
    esac
}
category=api
[ "$workload" = session ] && category=one
url() {
    case $1 in
    mcp-fleet) echo "http://127.0.0.1:$FLEET_PORT/mcp/$category" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/mcp/$category" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/mcp/$category" ;;
    floor) echo "http://127.0.0.1:$FLOOR_PORT/mcp/$category" ;;
    direct) [ "$category" = one ] && echo "http://127.0.0.1:$one/mcp" || echo "http://127.0.0.1:$first/mcp" ;;
    esac
}
case $workload in
    sdk) SDK_FIELDS=(-H 'Connection: keep-alive' -H 'User-Agent: python-httpx/0.28.1' -H 'Accept-Encoding: gzip, deflate') ;;
    body100k)
        ECHO_BODY=$(python3 -c 'import json, sys; b = json.loads(sys.argv[1]); b["params"]["arguments"]["text"] = "x" * 102400; print(json.dumps(b))' "$ECHO_BODY")
        SDK_FIELDS=() ;;
    *) SDK_FIELDS=() ;;
esac
# load URL SECONDS [oha ARGS...]: one run of the workload, its summary line as oha_summary.
load() {
    local url=$1 secs=$2
    shift 2
    case $workload in
        chunked | session | events) python3 "$ROOT/load-tests/drive.py" "$workload" "$url" "$secs" "$conc" ;;
        *)
            oha_mcp "$url" "${SDK_FIELDS[@]}" -z "${secs}s" -c "$conc" "$@" >"$WORK/run.json"
            oha_summary "$WORK/run.json"
            ;;
    esac
}
peak_rss_mib() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    echo $((total / 1024))
}

# Warm every path (connections, pools, allocator) before measuring.
for p in $proxies direct; do
    load "$(url "$p")" 3 >/dev/null
done

results="$WORK/results.txt"
run() { # run NAME MODE (max|rate) ROUND
    local p=$1 mode=$2 round=$3 pids
    pids=$(group "$p")
    local before after sys_before sys_after
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids) sys_before=$(sys_ticks $pids)
    local summary
    if [ "$mode" = max ]; then
        summary=$(load "$(url "$p")" "$secs" -w)
    else
        summary=$(load "$(url "$p")" "$secs" -q "$rate" --latency-correction -w)
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids) sys_after=$(sys_ticks $pids)
    local rps p50 p99 ok non200 errors
    read -r rps p50 p99 ok non200 errors <<<"$summary"
    local cpu_s us_per_req
    cpu_s=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
    us_per_req=$(awk -v c="$cpu_s" -v n="$ok" 'BEGIN {printf "%.1f", n ? c * 1e6 / n : 0}')
    # shellcheck disable=SC2086
    local rss=$([ -n "$pids" ] && peak_rss_mib $pids || echo -)
    # The kernel's share of that CPU: on loopback most of a small request's cost is the two
    # TCP round trips, the same for every proxy.
    local sys_pct
    sys_pct=$(awk -v s=$((sys_after - sys_before)) -v t=$((after - before)) 'BEGIN {printf "%d", t ? 100 * s / t : 0}')
    echo "$p $mode $round $rps $p50 $p99 $cpu_s $us_per_req $rss $ok $((non200 + errors))" >>"$results"
    log "$(printf '%-9s %-4s round %s: %6s req/s  p50 %6s ms  p99 %6s ms  cpu %5s s (%2s%% kernel)  %6s us/req  rss %s MiB  failed %s' \
        "$p" "$mode" "$round" "$rps" "$p50" "$p99" "$cpu_s" "$sys_pct" "$us_per_req" "$rss" "$((non200 + errors))")"
}

for round in $(seq "$rounds"); do
    for p in $proxies; do run "$p" max "$round"; done
done
run direct max 1
case $workload in
    post | sdk | body100k) for p in mcp-fleet nginx haproxy; do run "$p" rate 1; done ;;
esac

python3 - "$results" "$backends" "$conc" "$secs" "$rate" "$workload" <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
backends, conc, secs, rate, workload = sys.argv[2:7]
unit = "event" if workload == "events" else "request"
def pick(p, mode):
    return [r for r in rows if r[0] == p and r[1] == mode]
def med(rs, i):
    return st.median(float(r[i]) for r in rs)
client = "load-tests/drive.py" if workload in ("chunked", "session", "events") else "oha"
print(f"\nworkload {workload}: {backends} backends, {client} -c {conc}, {secs} s per run, one worker each; medians over rounds")
print(f"| proxy | {unit}s/s | p50 ms | p99 ms | proxy CPU s | CPU us/{unit} | peak RSS MiB | failed |")
print("|---|---|---|---|---|---|---|---|")
summary = {}
for p in ["mcp-fleet", "nginx", "haproxy", "floor", "direct"]:
    rs = pick(p, "max")
    if not rs:
        continue
    m = {k: med(rs, i) for k, i in [("rps", 3), ("p50", 4), ("p99", 5), ("cpu", 6), ("us", 7)]}
    rss = max((r[8] for r in rs), key=lambda x: (x != "-", float(x) if x != "-" else 0))
    failed = sum(int(r[10]) for r in rs)
    summary[p] = m
    name = {"direct": "direct (one server)", "floor": "floor (examples/relay_floor.rs)"}.get(p, p)
    print(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.2f} | {m['us']:.1f} | {rss} | {failed} |")
if any(r[1] == "rate" for r in rows):
    print(f"\nfixed rate {rate} req/s (oha -q, latency-corrected):")
    print("| proxy | achieved req/s | p50 ms | p99 ms | CPU us/request |")
    print("|---|---|---|---|---|")
for p in ["mcp-fleet", "nginx", "haproxy"]:
    for r in pick(p, "rate"):
        print(f"| {p} | {float(r[3]):.0f} | {float(r[4]):.2f} | {float(r[5]):.2f} | {float(r[7]):.1f} |")
pairs = [("mcp-fleet", "nginx"), ("mcp-fleet", "haproxy"), ("floor", "nginx"), ("mcp-fleet", "floor")]
for mine, other in pairs:
    f, o = summary.get(mine), summary.get(other)
    if f and o:
        print(f"{mine}/{other}: {unit}s/s x{f['rps'] / o['rps']:.2f}, p99 x{f['p99'] / o['p99']:.2f}, CPU per {unit} x{f['us'] / o['us']:.2f}")
# On a shared host the load moves between rounds more than between proxies: the ratio of two
# runs made seconds apart in the same round is steadier than the ratio of medians.
print("\nper-round ratios (runs of one round are seconds apart): median (lowest-highest)")
for mine, other in pairs:
    cols = {f"{unit}s/s": 3, "p99": 5, f"CPU per {unit}": 7}
    parts = []
    for label, i in cols.items():
        ratios = []
        for r in pick(mine, "max"):
            o = [x for x in pick(other, "max") if x[2] == r[2]]
            if o and float(o[0][i]) > 0:
                ratios.append(float(r[i]) / float(o[0][i]))
        if ratios:
            parts.append(f"{label} x{st.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    if parts:
        print(f"{mine}/{other}: " + ", ".join(parts))
EOF
