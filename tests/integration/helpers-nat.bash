# Helpers for the NAT lab (suite 050); load after `helpers` and `helpers-wg`.
#
# Topology, every piece a namespace the test creates:
#
#   inet   bridge br0 203.0.113.1/24: the "internet"; the Lighthouse listens
#          on 203.0.113.1:7871 here
#   rN     NAT router: wan0 203.0.113.1N/24 on the bridge, lan0 192.168.N.254/24,
#          nftables masquerade on wan0 (plain = port-restricted cone,
#          `random` = symmetric), unsolicited WAN packets dropped
#   hN     Flatnet host: lan0 192.168.N.1/24, default route via rN, flatnetd
#          joined to the Lighthouse with a token; containers hN-x via CNI
#
# The hosts have no route to each other except through both NATs.

LIGHTHOUSE="$FLATNET_TARGET/lighthouse"
LH_ADDR=203.0.113.1:7871

# lh: the lighthouse CLI against the lab's admin socket.
lh() { LIGHTHOUSE_ADMIN_SOCKET="$FN_TMP/lh.sock" "$LIGHTHOUSE" "$@"; }

# nat_inet_create: the internet namespace and its bridge.
nat_inet_create() { bridge_ns inet 203.0.113.1/24; }

# lh_start: (re)start the Lighthouse in the internet namespace, listening
# on $LH_ADDR; $LH_ARGS, when set, are more `lighthouse serve` options.
lh_start() {
    rm -f "$FN_TMP/lh.sock"
    # shellcheck disable=SC2086
    ip netns exec "$(ns inet)" "$LIGHTHOUSE" serve --listen "$LH_ADDR" ${LH_ARGS:-} \
        --state-dir "$FN_TMP/lh" --admin-socket "$FN_TMP/lh.sock" >>"$FN_TMP/lh.log" 2>&1 &
    echo $! > "$FN_TMP/lh.pid"
    disown $! 2>/dev/null || true
    wait_socket "$FN_TMP/lh.sock" "$FN_TMP/lh.log" lighthouse
}

# pidfile_kill FILE SIGNAL: signal the process whose pid FILE holds and
# wait until it is gone.
pidfile_kill() {
    local pid
    pid="$(cat "$1")"
    kill -s "$2" "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
}

# lh_kill: stop the Lighthouse and wait until it is gone.
lh_kill() { pidfile_kill "$FN_TMP/lh.pid" KILL; }

# lh_stop: stop the Lighthouse as `systemctl stop` does (SIGTERM) and wait.
lh_stop() { pidfile_kill "$FN_TMP/lh.pid" TERM; }

# wait_socket PATH LOG WHAT: until the unix socket PATH exists (10 s);
# otherwise say WHAT did not come up, with its LOG.
wait_socket() {
    local i
    for i in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "$3 did not come up:" >&2
    cat "$2" >&2
    return 1
}

# nat_masquerade N MODE: (re)write router N's rules; MODE is "" (cone),
# "random" (symmetric) or any other masquerade option ("to :20000-29999").
# Like a home router, it also drops unsolicited packets from the WAN: they
# then leave no conntrack entry behind, which would otherwise make the next
# outgoing flow to that peer clash and lose its port (Linux picks another).
nat_masquerade() {
    local n="$1" mode="${2:-}"
    in_ns "r$n" nft -f - <<NFT
table ip lab
delete table ip lab
table ip lab {
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "wan0" meta l4proto udp masquerade $mode
        oifname "wan0" masquerade
    }
    chain input {
        type filter hook input priority filter;
        iifname "wan0" ct state new drop
    }
    chain forward {
        type filter hook forward priority filter;
        iifname "wan0" ct state new drop
    }
}
NFT
}

# nat_router_create N MODE: router N on the internet bridge with LAN 192.168.N.0/24.
nat_router_create() {
    local n="$1" mode="${2:-}"
    ip netns add "$(ns "r$n")"
    in_ns "r$n" ip link set lo up
    in_ns inet ip link add "w-r$n" type veth peer name wan0 netns "$(ns "r$n")"
    in_ns inet ip link set "w-r$n" master br0 up
    in_ns "r$n" ip addr add "203.0.113.1$n/24" dev wan0
    in_ns "r$n" ip link set wan0 up
    in_ns "r$n" sysctl -qw net.ipv4.ip_forward=1
    nat_masquerade "$n" "$mode"
}

# nat_lan_ns NAME N LAST: namespace NAME alone on router N's LAN, at
# 192.168.N.LAST, its default route through the router.
nat_lan_ns() {
    local h="$1" n="$2"
    ip netns add "$(ns "$h")"
    in_ns "$h" ip link set lo up
    in_ns "r$n" ip link add lan0 type veth peer name lan0 netns "$(ns "$h")"
    in_ns "r$n" ip addr add "192.168.$n.254/24" dev lan0
    in_ns "r$n" ip link set lan0 up
    in_ns "$h" ip addr add "192.168.$n.$3/24" dev lan0
    in_ns "$h" ip link set lan0 up
    in_ns "$h" ip route add default via "192.168.$n.254"
}

# nat_host_netns N: host hN's namespace behind router N (192.168.N.1), no
# flatnetd yet.
nat_host_netns() { nat_lan_ns "h$1" "$1" 1; }

# nat_join_config N: a minimal flatnetd.toml for hN (no token), for
# `flatnetd join`; nat_join N TOKEN runs the join.
nat_join_config() {
    mkdir -p "$FN_TMP/h$1"
    printf 'node_name = "h%s"\nstate_dir = "%s"\nsocket = "%s"\n' \
        "$1" "$FN_TMP/h$1/state" "$FN_TMP/h$1/flatnetd.sock" > "$FN_TMP/h$1/flatnetd.toml"
}
nat_join() { in_ns "h$1" "$FLATNETD" --config "$FN_TMP/h$1/flatnetd.toml" join "$2"; }

# nat_host_create N [EXTRA_TOML] [TOKEN]: host hN behind router N, its
# flatnetd joined with TOKEN (default: a fresh one from the Lighthouse; the
# subnet comes from the Lighthouse).
nat_host_create() {
    local n="$1" h="h$1" extra="${2:-}" token="${3:-}"
    nat_host_netns "$n"
    [ -n "$token" ] || token="$(lh token create --ttl 1h 2>/dev/null)"
    mkdir -p "$FN_TMP/$h"
    cat > "$FN_TMP/$h/flatnetd.toml" <<TOML
node_name = "$h"
cidr = "10.87.0.0/16"
state_dir = "$FN_TMP/$h/state"
socket = "$FN_TMP/$h/flatnetd.sock"
$extra

[wireguard]
listen_port = $WG_PORT

[lighthouse]
token = "$token"
TOML
    host_start "$h"
}

# nat_lab MODE1 MODE2: the whole lab, hosts h1 and h2 with containers
# h1-a and h2-b; their addresses in IPA and IPB.
nat_lab() {
    nat_inet_create
    lh_start
    nat_router_create 1 "$1"
    nat_router_create 2 "$2"
    nat_host_create 1
    nat_host_create 2
    container_add h1 a
    container_add h2 b
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
}

# nat_wait_path HOST PEER WANT [SECONDS]: until HOST reports PEER's path as
# WANT (direct, relay); prints HOST's status on failure.
nat_wait_path() { wg_wait_peer "$1" "$2" path "$3" "${4:-15}"; }

# nat_wait_peers HOST N [SECONDS]: until HOST has N peers.
nat_wait_peers() {
    local host="$1" want="$2" secs="${3:-10}" i
    for i in $(seq $((secs * 10))); do
        [ "$(ctl "$host" status --json | jq '.peers | length')" = "$want" ] && return 0
        sleep 0.1
    done
    echo "$host does not have $want peers after ${secs}s" >&2
    ctl "$host" status >&2
    return 1
}

# nat_lh_state HOST: HOST's Lighthouse session state (connected, …).
nat_lh_state() { ctl "$1" status --json | jq -r '.lighthouse.state'; }
