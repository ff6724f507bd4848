#!/usr/bin/env bash
# Gateway benchmark (not a test): wrk through the Flatnet gateway vs plain nginx
# proxy_pass to the same target, side by side in one run, on loopback.
#   tests/bench/gateway-bench.sh [seconds] [connections]
# Prints a markdown table; goal: gateway >= 90% of plain nginx requests/s.
set -eu
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DUR="${1:-10}"
CONNS="${2:-32}"
T="$(mktemp -d /tmp/fgw-bench.XXXXXX)"
MODS="load_module /usr/share/nginx/modules/ndk_http_module.so; load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
cleanup() {
    for d in target plain gw; do
        [ -f "$T/$d/logs/nginx.pid" ] && kill -TERM "$(cat "$T/$d/logs/nginx.pid")" 2>/dev/null || true
    done
    sleep 0.3
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T"/{target,plain,gw}/{logs,temp}

# The target: nginx answering a small static body, one worker, like a light app.
cat >"$T/target/nginx.conf" <<EOF2
worker_processes 1; error_log logs/error.log; pid logs/nginx.pid; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path temp;
  server { listen 127.0.0.1:18400; location / { return 200 "hello from the target\n"; } } }
EOF2

# Plain nginx: same proxy settings as the gateway, fixed upstream, no Lua.
cat >"$T/plain/nginx.conf" <<EOF2
worker_processes 1; error_log logs/error.log; pid logs/nginx.pid; user root;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path temp; proxy_temp_path temp;
  map \$http_upgrade \$c { default upgrade; "" ""; }
  upstream t { server 127.0.0.1:18400; keepalive 32; }
  server { listen 127.0.0.1:18402;
    location / { proxy_pass http://t; proxy_http_version 1.1;
      proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$c;
      proxy_buffering off; proxy_request_buffering off; } } }
EOF2
sed -i "1i $MODS" "$T/plain/nginx.conf"

echo "route web / 127.0.0.1:18400" >"$T/gw/static.conf"
cat >"$T/gw/gateway.conf" <<EOF2
domain = flatnet.test
listen = 127.0.0.1:18401
user = root
static_routes = $T/gw/static.conf
access_log = off
error_log_level = warn
EOF2
(cd "$T/gw" && lua5.1 "$REPO/gateway-lua/bin/flatnet-gateway-render" gateway.conf -o nginx.conf)

for d in target plain gw; do nginx -p "$T/$d" -c nginx.conf; done
sleep 1
curl -sf -H 'Host: web.flatnet.test' http://127.0.0.1:18401/ >/dev/null
curl -sf -H 'Host: web.flatnet.test' http://127.0.0.1:18402/ >/dev/null

run() { # url -> "rps p99"
    wrk -t1 -c"$CONNS" -d2s -H 'Host: web.flatnet.test' "$1" >/dev/null # warm up
    wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H 'Host: web.flatnet.test' "$1" |
        awk '/Requests\/sec/ { rps = $2 } /^ *99%/ { p = $2 } /Non-2xx/ { bad = $NF }
             END { if (bad) { print "non-2xx answers:", bad > "/dev/stderr"; exit 1 } print rps, p }'
}
read -r plain_rps plain_p99 < <(run http://127.0.0.1:18402/)
read -r gw_rps gw_p99 < <(run http://127.0.0.1:18401/)
ratio=$(awk -v a="$gw_rps" -v b="$plain_rps" 'BEGIN { printf "%.1f%%", 100 * a / b }')
echo
echo "wrk -t1 -c$CONNS -d${DUR}s, 1 nginx worker each, loopback, $(nproc) cores, $(nginx -v 2>&1 | sed 's/.*\///')"
echo
echo "| path | requests/s | p99 latency |"
echo "| --- | --- | --- |"
echo "| plain nginx proxy_pass | $plain_rps | $plain_p99 |"
echo "| Flatnet gateway (Lua routing + balancer) | $gw_rps | $gw_p99 |"
echo "| gateway / plain | $ratio | |"
