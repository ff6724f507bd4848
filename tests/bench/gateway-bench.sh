#!/usr/bin/env bash
# Gateway benchmark (not a test): wrk through the Flatnet gateway vs plain nginx
# proxy_pass to the same target, and the floor of any Lua routing (a balancer_by_lua
# that only sets one fixed peer), side by side in one run, on loopback.
#   tests/bench/gateway-bench.sh [seconds] [connections] [rounds]
# Prints a markdown table; goal: gateway >= 95% of plain nginx requests/s, every round.
set -eu
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
DUR="${1:-10}"
CONNS="${2:-32}"
ROUNDS="${3:-5}"
T="$(mktemp -d /tmp/fgw-bench.XXXXXX)"
MODS="load_module /usr/share/nginx/modules/ndk_http_module.so; load_module /usr/share/nginx/modules/ngx_http_lua_module.so;"
cleanup() {
    for d in target plain floor gw; do
        [ -f "$T/$d/logs/nginx.pid" ] && kill -TERM "$(cat "$T/$d/logs/nginx.pid")" 2>/dev/null || true
    done
    sleep 0.3
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T"/{target,plain,floor,gw}/{logs,temp}

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

# The floor of Lua balancing: plain nginx whose upstream enters balancer_by_lua only to
# set the one fixed peer. What any per-request Lua routing costs at the least.
sed -e 's/18402/18403/' \
    -e 's|upstream t { server 127.0.0.1:18400; keepalive 32; }|upstream t { server 0.0.0.1:1; balancer_by_lua_block { require("ngx.balancer").set_current_peer("127.0.0.1", 18400) } keepalive 32; }|' \
    "$T/plain/nginx.conf" >"$T/floor/nginx.conf"
grep -q balancer_by_lua "$T/floor/nginx.conf"

echo "route web / 127.0.0.1:18400" >"$T/gw/static.conf"
cat >"$T/gw/gateway.conf" <<EOF2
domain = flatnet.test
flatnet_cidr = 127.0.0.0/8
listen = 127.0.0.1:18401
user = root
static_routes = $T/gw/static.conf
access_log = off
error_log_level = warn
EOF2
(cd "$T/gw" && lua5.1 "$REPO/gateway-lua/bin/flatnet-gateway-render" gateway.conf -o nginx.conf)

# With 2+ cores: the nginx instances on CPU 0, wrk on CPU 1, so the proxy under test
# never fights the load generator for a core (it still shares CPU 0 with the target,
# identically for both proxies).
PIN_NGINX=(); PIN_WRK=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then PIN_NGINX=(taskset -c 0); PIN_WRK=(taskset -c 1); fi
for d in target plain floor gw; do "${PIN_NGINX[@]}" nginx -p "$T/$d" -c nginx.conf; done
sleep 1
curl -sf -H 'Host: web.flatnet.test' http://127.0.0.1:18401/ >/dev/null
curl -sf -H 'Host: web.flatnet.test' http://127.0.0.1:18402/ >/dev/null
curl -sf -H 'Host: web.flatnet.test' http://127.0.0.1:18403/ >/dev/null

run() { # url -> "rps p99"
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d2s -H 'Host: web.flatnet.test' "$1" >/dev/null # warm up
    "${PIN_WRK[@]}" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H 'Host: web.flatnet.test' "$1" |
        awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
             /Requests\/sec/ { rps = $2 } /^ *99%/ { p = ms($2) } /Non-2xx/ { bad = $NF }
             END { if (bad) { print "non-2xx answers:", bad > "/dev/stderr"; exit 1 } print rps, p }'
}
# Interleaved rounds (plain, gateway, plain, gateway, ...): on a 2-core machine shared by
# wrk, the proxy and the target, throughput drifts between runs; medians of interleaved
# rounds compare the two under the same conditions.
# shellcheck source=stats.bash
source "$REPO/tests/bench/stats.bash"
# One untimed round of each first: LuaJIT compiles its traces, all warm their caches.
run http://127.0.0.1:18402/ >/dev/null
run http://127.0.0.1:18403/ >/dev/null
run http://127.0.0.1:18401/ >/dev/null
prs=(); pps=(); frs=(); fps=(); grs=(); gps=(); ratios=(); fratios=()
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * a / b }'; }
for i in $(seq "$ROUNDS"); do
    read -r r p < <(run http://127.0.0.1:18402/); prs+=("$r"); pps+=("${p%ms}")
    read -r f o < <(run http://127.0.0.1:18403/); frs+=("$f"); fps+=("${o%ms}")
    read -r g q < <(run http://127.0.0.1:18401/); grs+=("$g"); gps+=("${q%ms}")
    ratios+=("$(pct "$g" "$r")"); fratios+=("$(pct "$f" "$r")")
done
plain_rps="$(printf '%s\n' "${prs[@]}" | median)"
floor_rps="$(printf '%s\n' "${frs[@]}" | median)"
gw_rps="$(printf '%s\n' "${grs[@]}" | median)"
plain_p99="$(printf '%s\n' "${pps[@]}" | median)ms"
floor_p99="$(printf '%s\n' "${fps[@]}" | median)ms"
gw_p99="$(printf '%s\n' "${gps[@]}" | median)ms"
echo
echo "wrk -t1 -c$CONNS -d${DUR}s x $ROUNDS interleaved rounds, medians, 1 nginx worker each, loopback, $(nproc) cores${PIN_WRK:+ (nginx on CPU 0, wrk on CPU 1)}, $(nginx -v 2>&1 | sed 's/.*\///')"
echo "per-round gateway/plain: $(printf '%s%% ' "${ratios[@]}")"
echo "per-round Lua floor/plain: $(printf '%s%% ' "${fratios[@]}")"
echo
echo "| path | requests/s | % of plain nginx: median of rounds (min-max) | p99 latency |"
echo "| --- | --- | --- | --- |"
echo "| plain nginx proxy_pass | $plain_rps | 100 | $plain_p99 |"
echo "| balancer_by_lua setting one fixed peer (the floor of Lua routing) | $floor_rps | $(echo "${fratios[@]}" | stat) | $floor_p99 |"
echo "| Flatnet gateway (Lua routing in the balancer) | $gw_rps | $(echo "${ratios[@]}" | stat) | $gw_p99 |"
