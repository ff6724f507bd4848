# Helpers for the remote members lab (suite 160); load after `helpers`,
# `helpers-wg` and `helpers-nat`.
#
#   inet      the internet bridge (203.0.113.1/24), the Lighthouse on it
#   r1 ── h1  the hub: an office router that forwards the WireGuard port to
#             h1 (203.0.113.11:$WG_PORT), as an admin would set it up
#   r2 ── h2  another office host behind a plain NAT: forgejo, forgejo-db
#   r9 ── home, r8 ── home2
#             members' laptops behind their own home NATs, running stock
#             wg-quick (over wireguard-go when the kernel has no WireGuard)

# hub_router: r1 as a NAT router that forwards UDP $WG_PORT to h1.
hub_router() {
    nat_router_create 1 ""
    hub_forward 1
}

# hub_forward N: router N forwards UDP $WG_PORT to hN (192.168.N.1), as an
# office router does for the hub; otherwise the plain NAT of nat_masquerade.
hub_forward() {
    in_ns "r$1" nft -f - <<NFT
table ip lab
delete table ip lab
table ip lab {
    chain pre {
        type nat hook prerouting priority dstnat;
        iifname "wan0" udp dport $WG_PORT dnat to 192.168.$1.1
    }
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "wan0" masquerade
    }
    chain forward {
        type filter hook forward priority filter;
        iifname "wan0" ct status dnat accept
        iifname "wan0" ct state new drop
    }
}
NFT
}

# home_create NAME N: a laptop namespace NAME behind home router rN
# (192.168.N.0/24, cone NAT), with a fake `resolvconf` that writes what
# wg-quick's DNS line gives it to /etc/netns/<ns>/resolv.conf (which
# `ip netns exec` mounts as that namespace's /etc/resolv.conf).
home_create() {
    local name="$1" n="$2"
    nat_router_create "$n" ""
    nat_lan_ns "$name" "$n" 10
    mkdir -p "/etc/netns/$(ns "$name")" "$FN_TMP/bin"
    : > "/etc/netns/$(ns "$name")/resolv.conf"
    cat > "$FN_TMP/bin/resolvconf" <<'SH'
#!/bin/sh
# wg-quick's resolvconf: -a IFACE reads the config on stdin, -d IFACE drops it.
case "$1" in
    -a) cat > "$FAKE_RESOLV" ;;
    -d) : > "$FAKE_RESOLV" ;;
esac
SH
    chmod +x "$FN_TMP/bin/resolvconf"
}

# wgq NAME up|down CONF: stock wg-quick in laptop NAME.
wgq() {
    in_ns "$1" env PATH="$FN_TMP/bin:$PATH" FAKE_RESOLV="/etc/netns/$(ns "$1")/resolv.conf" \
        WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go WG_SUDO=1 wg-quick "$2" "$3"
}

# member_conf NAME ARGS...: `lighthouse member add NAME ARGS` with the
# config written to $FN_TMP/NAME.conf (wg-quick names the interface after
# the file).
member_conf() {
    local name="$1"
    shift
    lh member add "$name" --no-qr "$@" > "$FN_TMP/$name.conf"
    chmod 600 "$FN_TMP/$name.conf"
}

# try_tcp NS HOST PORT: the responder's line from HOST:PORT (a name is
# resolved in NS), or fail within 2 s.
try_tcp() {
    in_ns "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(2)
line = s.makefile().readline().strip()
print(line)
sys.exit(0 if line else 1)
' "$2" "$3" 2>/dev/null
}

# try_from NS SRC HOST PORT: a TCP connection from source address SRC.
try_from() {
    in_ns "$1" timeout 3 python3 -c '
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.settimeout(2)
s.connect((sys.argv[2], int(sys.argv[3])))
' "$2" "$3" "$4" 2>/dev/null
}

# wait_tcp NS HOST PORT SECS: until try_tcp works.
wait_tcp() {
    local i
    for i in $(seq "$4"); do
        try_tcp "$1" "$2" "$3" && return 0
        sleep 0.5
    done
    echo "$1 cannot reach $2:$3 after $4 tries" >&2
    return 1
}

# cut_off_within NS HOST PORT SECS: HOST:PORT stops answering NS within
# SECS seconds (probed every 0.25 s with a 1 s connect timeout).
cut_off_within() {
    local start=$SECONDS
    while [ $((SECONDS - start)) -le "$4" ]; do
        in_ns "$1" timeout 1 python3 -c '
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.8).recv(10)
' "$2" "$3" 2>/dev/null || return 0
        sleep 0.25
    done
    echo "$1 still reaches $2:$3 after $4 s" >&2
    return 1
}

# drops HOST REASON: flatnet_dataplane_drops_total{reason} on HOST's metrics.
drops() {
    in_ns "$1" curl -s "http://127.0.0.1:9589/metrics" |
        awk -v r="reason=\"$2\"" 'index($0, "flatnet_dataplane_drops_total{") == 1 && index($0, r) { print $2 }'
}
