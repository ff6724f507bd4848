# Helpers for the Lighthouse HA lab (suite 150); load after `helpers`,
# `helpers-wg` and `helpers-nat`.
#
# Topology, every piece a namespace the test creates, on the NAT lab's
# "internet" bridge (203.0.113.0/24):
#
#   eN     etcd member N (203.0.113.2N, N = 1..3): one three-member cluster
#   lhN    Lighthouse N (203.0.113.N+1, N = 1..2): QUIC on :7871, metrics on
#          :9464, its registry on the etcd cluster
#   rN/hN  NAT routers and hosts as in suite 050; every host's token lists
#          both Lighthouses and it keeps a session with each

ETCD_URLS="http://203.0.113.21:2379,http://203.0.113.22:2379,http://203.0.113.23:2379"
ETCD_CLUSTER="e1=http://203.0.113.21:2380,e2=http://203.0.113.22:2380,e3=http://203.0.113.23:2380"

# ha_ns NAME ADDR: a namespace on the internet bridge at ADDR/24.
ha_ns() {
    ip netns add "$(ns "$1")"
    in_ns "$1" ip link set lo up
    in_ns inet ip link add "w-$1" type veth peer name eth0 netns "$(ns "$1")"
    in_ns inet ip link set "w-$1" master br0 up
    in_ns "$1" ip addr add "$2/24" dev eth0
    in_ns "$1" ip link set eth0 up
}

# etcd_start N: member N of the three-member cluster (started with the
# others, or again after etcd_kill with its data).
etcd_start() {
    local n="$1" ip="203.0.113.2$1"
    # shellcheck disable=SC2086
    ip netns exec "$(ns "e$n")" /usr/bin/etcd --name "e$n" --data-dir "$FN_TMP/e$n" \
        --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
        --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
        --initial-cluster-token "$FN_PREFIX" --log-level error \
        >>"$FN_TMP/e$n.log" 2>&1 &
    echo $! > "$FN_TMP/e$n.pid"
    disown $! 2>/dev/null || true
}

# etcd_kill N: SIGKILL member N and wait until it is gone.
etcd_kill() { pidfile_kill "$FN_TMP/e$1.pid" KILL; }

# etcdctl_ha ARGS...: etcdctl against the cluster (from member 3's
# namespace, which the tests never kill).
etcdctl_ha() { in_ns e3 env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URLS" "$@"; }

# ha_etcd: the three members, up and with a leader.
ha_etcd() {
    local n i
    for n in 1 2 3; do ha_ns "e$n" "203.0.113.2$n"; done
    for n in 1 2 3; do etcd_start "$n"; done
    for i in $(seq 200); do
        etcdctl_ha endpoint health >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "etcd did not become healthy:" >&2
    cat "$FN_TMP"/e*.log >&2
    return 1
}

# lhn N ARGS...: the lighthouse CLI against Lighthouse N's admin socket.
lhn() { local n="$1"; shift; LIGHTHOUSE_ADMIN_SOCKET="$FN_TMP/lh$n.sock" "$LIGHTHOUSE" "$@"; }

# lhn_start N: (re)start Lighthouse N on the shared registry.
lhn_start() {
    local n="$1" ip="203.0.113.$(( $1 + 1 ))"
    rm -f "$FN_TMP/lh$n.sock"
    ip netns exec "$(ns "lh$n")" "$LIGHTHOUSE" serve --listen "$ip:7871" \
        --public-addr "$ip:7871" --etcd "$ETCD_URLS" --metrics-listen "$ip:9464" \
        --state-dir "$FN_TMP/lh$n" --admin-socket "$FN_TMP/lh$n.sock" \
        >>"$FN_TMP/lh$n.log" 2>&1 &
    echo $! > "$FN_TMP/lh$n.pid"
    disown $! 2>/dev/null || true
    wait_socket "$FN_TMP/lh$n.sock" "$FN_TMP/lh$n.log" "lighthouse $n"
}

# lhn_kill N [SIGNAL]: stop Lighthouse N (default SIGKILL) and wait.
lhn_kill() { pidfile_kill "$FN_TMP/lh$1.pid" "${2:-KILL}"; }

# lhn_metrics N: Lighthouse N's /metrics.
lhn_metrics() { in_ns inet curl -sf "http://203.0.113.$(( $1 + 1 )):9464/metrics"; }

# ha_host N MODE [TOKEN]: router N (MODE as nat_masquerade) and host hN
# behind it, joined with TOKEN (default: a new one from Lighthouse 1).
ha_host() {
    local n="$1" mode="$2" token="${3:-}"
    [ -n "$token" ] || token="$(lhn 1 token create --ttl 1h 2>/dev/null)"
    nat_router_create "$n" "$mode"
    nat_host_create "$n" "" "$token"
}

# ha_lighthouses [N]: the internet, etcd and Lighthouses 1..N (default 2;
# the namespaces of both are made).
ha_lighthouses() {
    local n
    nat_inet_create
    ha_etcd
    ha_ns lh1 203.0.113.2
    ha_ns lh2 203.0.113.3
    for n in $(seq "${1:-2}"); do lhn_start "$n"; done
}

# ha_lab: etcd, both Lighthouses, hosts h1 (cone NAT) and h2 (symmetric
# NAT, so h1-h2 goes through the relay) with containers h1-a and h2-b.
ha_lab() {
    ha_lighthouses
    ha_host 1 ""
    ha_host 2 random
    container_add h1 a
    container_add h2 b
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
}

# ha_sessions HOST: how many of HOST's Lighthouse sessions are connected.
ha_sessions() {
    ctl "$1" status --json | jq '[.lighthouse.lighthouses[]? | select(.state == "connected")] | length'
}

# ha_wait_sessions HOST N [SECONDS]
ha_wait_sessions() {
    local i
    for i in $(seq $(( ${3:-10} * 10 ))); do
        [ "$(ha_sessions "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    echo "$1 does not have $2 Lighthouse sessions:" >&2
    ctl "$1" status >&2
    return 1
}

# token_json TOKEN: what a join token carries, as JSON.
token_json() {
    local body
    body="$(printf '%s' "${1#flatnet1_}" | tr '_-' '/+')"
    while [ $(( ${#body} % 4 )) -ne 0 ]; do body="$body="; done
    printf '%s' "$body" | base64 -d
}

# token_first TOKEN N: the same token (same secret) with Lighthouse N of
# those it lists first, as a node that prefers that one would hold it.
token_first() {
    local json
    json="$(token_json "$1")"
    json="$(jq -c --argjson n "$(( $2 - 1 ))" '
        ([{lh, fp}] + .also) as $all
        | ($all[$n]) as $first
        | {lh: $first.lh, fp: $first.fp, sk, also: [$all[] | select(.fp != $first.fp)]}' <<<"$json")"
    printf 'flatnet1_%s' "$(printf '%s' "$json" | base64 -w0 | tr '/+' '_-' | tr -d '=')"
}
