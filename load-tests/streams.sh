#!/usr/bin/env bash
# Memory per open, idle MCP event stream (the 2025-11-25 session's GET stream), mcp-fleet beside
# nginx and HAProxy (Debian's, one worker each, buffering off) in front of the same built-in
# server, one proxy at a time: STREAMS sessions are initialized through the proxy, each opens its
# GET stream, and the proxy's RSS with all of them open is compared with its RSS before
# (fresh proxy, warmed by the same number of plain requests). Reported, not asserted.
# Every stream holds a client socket and an upstream socket in the proxy, and open files are
# capped at 20000 here, so STREAMS stays below ~9000.
# Usage: load-tests/streams.sh [--streams 3000] [--rounds 2] [--proxies "mcp-fleet nginx haproxy"]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
streams=3000 rounds=2 proxies="mcp-fleet nginx haproxy"
parse_opts streams rounds proxies -- "$@"
ensure_build
need_apt nginx haproxy
ulimit -n "$(ulimit -Hn)"

BACKEND_PORT=21500 FLEET_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082
"$BIN" backend --port "$BACKEND_PORT" --category api >/dev/null 2>&1 &
started $!
wait_port "$BACKEND_PORT"

write_static_config "$WORK/fleet.toml" "$FLEET_PORT" "\"127.0.0.1:$BACKEND_PORT\"" \
    "$(printf 'max_sse_streams = 20000\nmax_connections = 9500')"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http { access_log off; client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  upstream mcp { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location = /mcp/api { proxy_pass http://mcp/mcp; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host 127.0.0.1;
      proxy_buffering off; proxy_read_timeout 600s; } } }
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9500
defaults
  mode http
  timeout connect 1s
  timeout client 600s
  timeout server 600s
  option http-keep-alive
  # Forward each part as it comes: without it the head of an idle event stream waits.
  option http-no-delay
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  http-request set-path /mcp
  http-request set-header Host 127.0.0.1
  server s0 127.0.0.1:$BACKEND_PORT
EOF

# start PROXY: starts it, sets PIDS (its processes) and PORT.
start() {
    case $1 in
    mcp-fleet)
        "$BIN" serve --config "$WORK/fleet.toml" >"$WORK/fleet.log" 2>&1 &
        PIDS=$!; PORT=$FLEET_PORT ;;
    nginx)
        nginx -c "$WORK/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx.log" &
        PIDS=$!; PORT=$NGINX_PORT ;;
    haproxy)
        haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
        PIDS=$!; PORT=$HAPROXY_PORT ;;
    esac
    started "$PIDS"
    wait_port "$PORT"
    sleep 0.5
    [ "$1" = nginx ] && PIDS="$PIDS $(pgrep -P "$PIDS" | tr '\n' ' ')"
    return 0
}

echo "round proxy streams failed rss_before_kib rss_open_kib kib_per_stream"
for round in $(seq "$rounds"); do
    for p in $proxies; do
        start "$p"
        # shellcheck disable=SC2086
        before=$(rss_sum_kib $PIDS)
        rm -f "$WORK/ready"
        hold_streams "$PORT" "$streams" 3600 "$WORK/ready" &
        holder=$!
        started "$holder"
        while [ ! -s "$WORK/ready" ] && kill -0 "$holder" 2>/dev/null; do sleep 0.5; done
        read -r open failed <"$WORK/ready"
        sleep 1
        # shellcheck disable=SC2086
        during=$(rss_sum_kib $PIDS)
        per=$(awk -v a="$during" -v b="$before" -v n="$open" 'BEGIN {printf "%.1f", n ? (a - b) / n : 0}')
        echo "$round $p $open $failed $before $during $per"
        # The holder is a subshell running python: end both.
        pkill -P "$holder" 2>/dev/null || true
        kill "$holder" 2>/dev/null || true
        wait "$holder" 2>/dev/null || true
        # shellcheck disable=SC2086
        kill $PIDS 2>/dev/null || true
        for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
        sleep 1
    done
done
