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
# Usage: load-tests/compare.sh [--backends 100] [--rounds 3] [--secs 15] [--conc 64] [--rate 4000] [--auth none]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
backends=100 rounds=3 secs=15 conc=64 rate=4000 auth=none
parse_opts backends rounds secs conc rate auth -- "$@"
ensure_build
ensure_oha
need_apt nginx haproxy

# Below the ephemeral range, so outgoing connections never take a server's port.
first=21000
FLEET_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082
for i in $(seq 0 $((backends - 1))); do
    port=$((first + i))
    "$BIN" backend --port "$port" --category api >/dev/null 2>&1 &
    started $!
done
for i in $(seq 0 $((backends - 1))); do wait_port $((first + i)); done
log "$backends servers up on $first-$((first + backends - 1))"

# mcp-fleet: static backends, no fleet; health checks every 30 s as in production.
list=$(seq -s, -f "\"127.0.0.1:%g\"" $first $((first + backends - 1)))
write_static_config "$WORK/fleet.toml" "$FLEET_PORT" "$list" \
    "$(printf 'strategy = "round-robin"\nupstream_keepalive = 1024')"
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
    echo "http { access_log off; client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;"
    echo "  upstream mcp {"
    for i in $(seq 0 $((backends - 1))); do echo "    server 127.0.0.1:$((first + i));"; done
    echo "    keepalive 1024; }"
    echo "  server { listen 127.0.0.1:$NGINX_PORT;"
    echo "    location = /mcp/api { proxy_pass http://mcp/mcp; proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\"; proxy_set_header Host 127.0.0.1; proxy_buffering off; } } }"
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
    echo "  http-reuse always"
    echo "frontend fe"
    echo "  bind 127.0.0.1:$HAPROXY_PORT"
    echo "  default_backend be"
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
wait_ready "http://127.0.0.1:$FLEET_PORT"
wait_port $NGINX_PORT
wait_port $HAPROXY_PORT

# The processes whose CPU and memory count for each proxy.
group() {
    case $1 in
    mcp-fleet) echo "$fleet_pid" ;;
    nginx) echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" ;;
    haproxy) echo "$haproxy_pid $(pgrep -P "$haproxy_pid" | tr '\n' ' ')" ;;
    direct) echo "" ;;
    esac
}
url() {
    case $1 in
    mcp-fleet) echo "http://127.0.0.1:$FLEET_PORT/mcp/api" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/mcp/api" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/mcp/api" ;;
    direct) echo "http://127.0.0.1:$first/mcp" ;;
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
for p in mcp-fleet nginx haproxy direct; do
    oha_mcp "$(url "$p")" -z 3s -c "$conc" >/dev/null
done

results="$WORK/results.txt"
run() { # run NAME MODE (max|rate) ROUND
    local p=$1 mode=$2 round=$3 pids
    pids=$(group "$p")
    local before after
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    if [ "$mode" = max ]; then
        oha_mcp "$(url "$p")" -z "${secs}s" -c "$conc" -w >"$WORK/run.json"
    else
        oha_mcp "$(url "$p")" -z "${secs}s" -c "$conc" -q "$rate" --latency-correction -w >"$WORK/run.json"
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    local rps p50 p99 ok non200 errors
    read -r rps p50 p99 ok non200 errors < <(oha_summary "$WORK/run.json")
    local cpu_s us_per_req
    cpu_s=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
    us_per_req=$(awk -v c="$cpu_s" -v n="$ok" 'BEGIN {printf "%.1f", n ? c * 1e6 / n : 0}')
    # shellcheck disable=SC2086
    local rss=$([ -n "$pids" ] && peak_rss_mib $pids || echo -)
    echo "$p $mode $round $rps $p50 $p99 $cpu_s $us_per_req $rss $ok $((non200 + errors))" >>"$results"
    log "$(printf '%-9s %-4s round %s: %6s req/s  p50 %6s ms  p99 %6s ms  cpu %5s s  %6s us/req  rss %s MiB  failed %s' \
        "$p" "$mode" "$round" "$rps" "$p50" "$p99" "$cpu_s" "$us_per_req" "$rss" "$((non200 + errors))")"
}

for round in $(seq "$rounds"); do
    for p in mcp-fleet nginx haproxy; do run "$p" max "$round"; done
done
run direct max 1
for p in mcp-fleet nginx haproxy; do run "$p" rate 1; done

python3 - "$results" "$backends" "$conc" "$secs" "$rate" <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
backends, conc, secs, rate = sys.argv[2:6]
def pick(p, mode):
    return [r for r in rows if r[0] == p and r[1] == mode]
def med(rs, i):
    return st.median(float(r[i]) for r in rs)
print(f"\n{backends} backends, oha -c {conc}, {secs} s per run, one worker each; medians over rounds")
print("| proxy | requests/s | p50 ms | p99 ms | proxy CPU s | CPU us/request | peak RSS MiB | failed |")
print("|---|---|---|---|---|---|---|---|")
summary = {}
for p in ["mcp-fleet", "nginx", "haproxy", "direct"]:
    rs = pick(p, "max")
    if not rs:
        continue
    m = {k: med(rs, i) for k, i in [("rps", 3), ("p50", 4), ("p99", 5), ("cpu", 6), ("us", 7)]}
    rss = max((r[8] for r in rs), key=lambda x: (x != "-", float(x) if x != "-" else 0))
    failed = sum(int(r[10]) for r in rs)
    summary[p] = m
    name = "direct (one server)" if p == "direct" else p
    print(f"| {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu']:.2f} | {m['us']:.1f} | {rss} | {failed} |")
print(f"\nfixed rate {rate} req/s (oha -q, latency-corrected):")
print("| proxy | achieved req/s | p50 ms | p99 ms | CPU us/request |")
print("|---|---|---|---|---|")
for p in ["mcp-fleet", "nginx", "haproxy"]:
    for r in pick(p, "rate"):
        print(f"| {p} | {float(r[3]):.0f} | {float(r[4]):.2f} | {float(r[5]):.2f} | {float(r[7]):.1f} |")
f = summary.get("mcp-fleet")
for other in ["nginx", "haproxy"]:
    o = summary.get(other)
    if f and o:
        print(f"mcp-fleet/{other}: requests/s x{f['rps'] / o['rps']:.2f}, p99 x{f['p99'] / o['p99']:.2f}, CPU per request x{f['us'] / o['us']:.2f}")
# On a shared host the load moves between rounds more than between proxies: the ratio of two
# runs made seconds apart in the same round is steadier than the ratio of medians.
print("\nper-round ratios (runs of one round are seconds apart): median (lowest-highest)")
for other in ["nginx", "haproxy"]:
    cols = {"requests/s": 3, "p99": 5, "CPU per request": 7}
    parts = []
    for label, i in cols.items():
        ratios = []
        for r in pick("mcp-fleet", "max"):
            o = [x for x in pick(other, "max") if x[2] == r[2]]
            if o and float(o[0][i]) > 0:
                ratios.append(float(r[i]) / float(o[0][i]))
        if ratios:
            parts.append(f"{label} x{st.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"mcp-fleet/{other}: " + ", ".join(parts))
EOF
