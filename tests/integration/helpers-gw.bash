# Helpers for running the real gateway in front of a NAT lab (suite 060 and
# the demo); load after `helpers`, `helpers-wg` and `helpers-nat`.
#
# Router rN plays the Windows host of a WSL2 VM: hN sits behind its NAT, and
# the gateway (nginx + lua-nginx-module with gateway-lua) runs on rN. An
# "office" namespace on rN's other side is a colleague's machine:
#
#   office 192.168.200.2 ── veth ── rN office0 192.168.200.1 (gateway :80)
#                                    rN ── lan0 ── hN (flatnetd) ── tunnel ── other hosts
#
# rN reaches the Flatnet through the route `flatnetctl gateway-route` prints on hN.

GW_DOMAIN=flatnet.test
GW_IP=192.168.200.1
OFFICE_IP=192.168.200.2
GW_RENDER="$REPO_ROOT/gateway-lua/bin/flatnet-gateway-render"

# gw_route_hint HOST: `flatnetctl gateway-route`, run inside HOST (it reads
# the host's own addresses).
gw_route_hint() {
    in_ns "$1" "$FLATNETCTL" --socket "$FN_TMP/$1/flatnetd.sock" gateway-route
}

# gw_start N CATALOG_URL...: route rN to the Flatnet through hN, add the
# office namespace, render and start the gateway on rN. GW_EXTRA: more
# gateway.conf lines. GW_ON_HOST=1: the gateway runs on hN itself (the
# other documented setup, a Linux Flatnet host with the gateway next to
# flatnetd), with the office on hN's other side and no route step.
gw_start() {
    local n="$1" route u where="r$1"
    shift
    if [ "${GW_ON_HOST:-}" = 1 ]; then
        where="h$n"
    else
        route="$(gw_route_hint "h$n" | grep -m1 -E '^ +ip route add ' | sed -E 's/^ +//')"
        [ -n "$route" ] || { echo "flatnetctl gateway-route printed no ip route command" >&2; return 1; }
        # shellcheck disable=SC2086
        in_ns "r$n" $route
    fi
    ip netns add "$(ns office)"
    in_ns office ip link set lo up
    in_ns "$where" ip link add office0 type veth peer name eth0 netns "$(ns office)"
    in_ns "$where" ip addr add "$GW_IP/24" dev office0
    in_ns "$where" ip link set office0 up
    in_ns office ip addr add "$OFFICE_IP/24" dev eth0
    in_ns office ip link set eth0 up
    mkdir -p "$FN_TMP/gw/logs" "$FN_TMP/gw/temp"
    echo "$where" > "$FN_TMP/gw/router"
    {
        printf 'domain = %s\nflatnet_cidr = 10.87.0.0/16\nuser = root\nlisten = 80\nrefresh_interval = 1\n' \
            "$GW_DOMAIN"
        printf 'health_interval = 1\nerror_log = logs/error.log\nerror_log_level = info\n'
        printf 'allow = 192.168.200.0/24\n'
        for u in "$@"; do printf 'catalog_url = %s\n' "$u"; done
        [ -z "${GW_EXTRA:-}" ] || printf '%s\n' "$GW_EXTRA"
    } > "$FN_TMP/gw/gateway.conf"
    (cd "$FN_TMP/gw" && lua5.1 "$GW_RENDER" gateway.conf -o nginx.conf) || return 1
    in_ns "$where" nginx -p "$FN_TMP/gw" -c nginx.conf || return 1
}

# gw_stop: stop the gateway, if it runs.
gw_stop() {
    local pid="$FN_TMP/gw/logs/nginx.pid"
    [ -f "$pid" ] && kill -TERM "$(cat "$pid")" 2>/dev/null
    rm -f "$pid"
}

# gw_curl ARGS...: curl from the office machine; every name resolves to the gateway.
gw_curl() {
    in_ns office curl -sS --max-time 30 --connect-to "::$GW_IP:" "$@"
}

# chromium_plain PROFILE ARGS...: headless Chromium in the office, resolving
# names the office's way.
chromium_plain() {
    in_ns office timeout 60 chromium --headless --no-sandbox --disable-gpu \
        --disable-background-networking --disable-component-update --disable-sync --no-first-run \
        --disable-quic --disable-dev-shm-usage --user-data-dir="$FN_TMP/chromium-$1" "${@:2}"
}

# chromium_office PROFILE ARGS...: the same, every service name mapped to the gateway.
chromium_office() { chromium_plain "$1" --host-resolver-rules="MAP *.$GW_DOMAIN $GW_IP" "${@:2}"; }

# gw_wait_route NAME [SECONDS]: until NAME.$GW_DOMAIN answers 2xx through the gateway.
gw_wait_route() {
    local name="$1" secs="${2:-20}" i
    for i in $(seq $((secs * 5))); do
        gw_curl -f -o /dev/null "http://$name.$GW_DOMAIN/" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "no route to $name through the gateway after ${secs}s; status:" >&2
    gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json" >&2 || true
    tail -20 "$FN_TMP/gw/logs/error.log" >&2 || true
    return 1
}
