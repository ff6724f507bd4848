# Shared helpers for the gateway suites (bats).
#
# Topology, all in network namespaces this test creates (names "fgw-<id>-…"):
#   lan  (192.168.77.2)  ── veth ──  gw (192.168.77.1; br0 10.87.0.1/16)  ── br0 ──  backends (10.87.x.y)
# The gateway's nginx runs inside "gw"; browsers and curl run inside "lan".
# Backends stand in for Flatnet hosts: fgw_backend_netns is the one place that makes
# them, so it can later be swapped for real Flatnet hosts wired by the CNI plugin.

FGW_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FGW_PY="$FGW_REPO/tests/gateway/py"
FGW_RENDER="${FGW_RENDER:-$FGW_REPO/gateway-lua/bin/flatnet-gateway-render}"
FGW_OUT="${FGW_OUT:-$FGW_REPO/tests/out/gateway}"
FGW_DOMAIN=flatnet.test
FGW_GW_IP=192.168.77.1
FGW_LAN_IP=192.168.77.2
FGW_PYTHON="${FGW_PYTHON:-/usr/bin/python3}"

fgw_setup() {
    FGW_ID="${BATS_SUITE_TEST_NUMBER:-0}$(printf %04x $((RANDOM % 65536)))"
    FGW_NS="fgw-$FGW_ID"
    FGW_TMP="$(mktemp -d "${TMPDIR:-/tmp}/fgw-$FGW_ID.XXXXXX")"
    FGW_VETH=0
    export FGW_ID FGW_NS FGW_TMP
    mkdir -p "$FGW_TMP/gw/logs" "$FGW_TMP/gw/temp"
    : >"$FGW_TMP/pids"
    ip netns add "$FGW_NS-gw"
    ip -n "$FGW_NS-gw" link set lo up
    ip -n "$FGW_NS-gw" link add br0 type bridge
    ip -n "$FGW_NS-gw" addr add 10.87.0.1/16 dev br0
    ip -n "$FGW_NS-gw" link set br0 up
    fgw_lan_netns lan "$FGW_LAN_IP"
}

# fgw_lan_netns NAME IP: a LAN-side namespace (192.168.77.0/24) wired to the gateway.
fgw_lan_netns() {
    local name="$1" ip="$2" ns="$FGW_NS-$1" a b
    FGW_VETH=$((FGW_VETH + 1)); a="fg${FGW_ID}a$FGW_VETH"; b="fg${FGW_ID}b$FGW_VETH"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "$a" netns "$ns" type veth peer name "$b" netns "$FGW_NS-gw"
    ip -n "$ns" addr add "$ip/24" dev "$a"
    ip -n "$ns" link set "$a" up
    if ! ip -n "$FGW_NS-gw" link show brlan >/dev/null 2>&1; then
        ip -n "$FGW_NS-gw" link add brlan type bridge
        ip -n "$FGW_NS-gw" addr add "$FGW_GW_IP/24" dev brlan
        ip -n "$FGW_NS-gw" link set brlan up
    fi
    ip -n "$FGW_NS-gw" link set "$b" master brlan up
}

# fgw_backend_netns NAME IP: a namespace standing in for a Flatnet host/container with
# Flatnet address IP (10.87.x.y), reachable from the gateway namespace.
fgw_backend_netns() {
    local name="$1" ip="$2" ns="$FGW_NS-$1" a b
    FGW_VETH=$((FGW_VETH + 1)); a="fg${FGW_ID}a$FGW_VETH"; b="fg${FGW_ID}b$FGW_VETH"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "$a" netns "$ns" type veth peer name "$b" netns "$FGW_NS-gw"
    ip -n "$ns" addr add "$ip/16" dev "$a"
    ip -n "$ns" link set "$a" up
    ip -n "$ns" route add default via 10.87.0.1
    ip -n "$FGW_NS-gw" link set "$b" master br0 up
}

# fgw_spawn NETNS-NAME LOGNAME CMD...: run CMD in the background inside a namespace.
fgw_spawn() {
    local ns="$FGW_NS-$1" log="$FGW_TMP/$2.log"
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    echo $! >>"$FGW_TMP/pids"
    echo $!
}

# fgw_wait_port NETNS-NAME IP PORT: wait until something listens.
fgw_wait_port() {
    local i
    for i in $(seq 1 100); do
        ip netns exec "$FGW_NS-$1" "$FGW_PYTHON" -c "import socket,sys; socket.create_connection(('$2', $3), 0.2)" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $2:$3 in $1" >&2
    return 1
}

# fgw_backend NAME IP PORT [backend.py args]: a namespace with a test HTTP backend.
fgw_backend() {
    local name="$1" ip="$2" port="$3"
    shift 3
    ip netns list | grep -q "^$FGW_NS-$name\b" || fgw_backend_netns "$name" "$ip"
    fgw_spawn "$name" "backend-$name-$port" "$FGW_PYTHON" "$FGW_PY/backend.py" --name "$name" \
        --bind "$ip" --port "$port" "$@" >"$FGW_TMP/backend-$name-$port.pid"
    fgw_wait_port "$name" "$ip" "$port"
}

fgw_kill_backend() {
    kill "$(cat "$FGW_TMP/backend-$1-$2.pid")"
}

# fgw_catalog_server [--chunked]: flatnetd stand-in at 10.87.0.2:7070 serving $FGW_TMP/catalog.json.
fgw_catalog_server() {
    fgw_backend flatnetd 10.87.0.2 7070 --catalog "$FGW_TMP/catalog.json" "$@"
}

# fgw_catalog NODE "name ip port" ...: write a catalog in the flatnetd format.
fgw_catalog() {
    local node="$1" sep="" s name ip port
    shift
    {
        printf '{"version": 1, "node": "%s", "services": [' "$node"
        for s in "$@"; do
            read -r name ip port <<<"$s"
            printf '%s\n {"name": "%s", "node": "%s", "ip": "%s", "ports": [{"port": %s, "protocol": "tcp"}]}' \
                "$sep" "$name" "$node" "$ip" "$port"
            sep=,
        done
        printf ']}\n'
    } >"$FGW_TMP/catalog.json.new"
    mv "$FGW_TMP/catalog.json.new" "$FGW_TMP/catalog.json"
}

# fgw_gateway_start: render a config (defaults + lines from stdin) and start nginx in "gw".
fgw_gateway_start() {
    local conf="$FGW_TMP/gw/gateway.conf"
    {
        cat <<EOF2
domain = $FGW_DOMAIN
flatnet_cidr = 10.87.0.0/16
user = root
listen = 80
refresh_interval = 1
health_interval = 1
connect_timeout = 2
fail_threshold = 2
down_time = 5
error_log = logs/error.log
error_log_level = info
EOF2
        cat
    } >"$conf"
    (cd "$FGW_TMP/gw" && lua5.1 "$FGW_RENDER" gateway.conf -o nginx.conf) || return 1
    ip netns exec "$FGW_NS-gw" nginx -p "$FGW_TMP/gw" -c nginx.conf || return 1
    fgw_wait_port gw 127.0.0.1 80
}

fgw_gateway_stop() {
    local pid="$FGW_TMP/gw/logs/nginx.pid"
    [ -f "$pid" ] && kill -TERM "$(cat "$pid")" 2>/dev/null
    rm -f "$pid"
}

fgw_error_log() {
    cat "$FGW_TMP/gw/logs/error.log"
}

# fgw_curl [curl args]: curl from the LAN namespace; every host name goes to the gateway.
fgw_curl() {
    ip netns exec "$FGW_NS-lan" curl -sS --max-time 30 --connect-to "::$FGW_GW_IP:" "$@"
}

# fgw_curl_from NETNS-NAME [curl args]
fgw_curl_from() {
    local ns="$FGW_NS-$1"
    shift
    ip netns exec "$ns" curl -sS --max-time 30 --connect-to "::$FGW_GW_IP:" "$@"
}

# fgw_status_json: the gateway status page as JSON.
fgw_status_json() {
    fgw_curl "http://gateway.$FGW_DOMAIN/_flatnet/status?format=json"
}

# fgw_eventually SECONDS CMD...: retry CMD until it succeeds.
fgw_eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}

# fgw_json EXPR: evaluate a Python expression over JSON on stdin (bound to j).
fgw_json() {
    "$FGW_PYTHON" -c "import json,sys; j=json.load(sys.stdin); print($1)"
}

fgw_teardown() {
    local pid ns
    if [ -n "${FGW_TMP:-}" ] && [ -d "$FGW_TMP" ]; then
        fgw_gateway_stop
        while read -r pid; do
            [ -n "$pid" ] && kill "$pid" 2>/dev/null
        done <"$FGW_TMP/pids"
        if [ -f "$FGW_TMP/gw/logs/error.log" ]; then
            echo "--- gateway error log (errors and warnings) ---"
            grep -E '\[(error|warn|crit|alert|emerg)\]' "$FGW_TMP/gw/logs/error.log" | tail -20
        fi
    fi
    for ns in $(ip netns list | awk '{print $1}' | grep "^${FGW_NS:-fgw-none}-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
        ip netns del "$ns"
    done
    if [ -n "${FGW_TMP:-}" ] && [ -z "${FGW_KEEP:-}" ]; then
        rm -rf "$FGW_TMP"
    fi
}
