#!/usr/bin/env bats
# Path MTU: the tunnel fits underlays narrower than Ethernet (VPNs, PPPoE,
# tunnels) and paths through a router that drops ICMP "fragmentation
# needed" (a PMTU black hole). With the old static 1420 and segmentation
# offloads on, a bulk transfer over a 1400 or 1280 LAN hung: the kernel's
# GSO segments were larger than the link and vanished, with nothing logged.

load helpers
load helpers-wg
load helpers-nat
load helpers-gw

setup() { fn_setup; }
teardown() {
    gw_stop
    fn_teardown
}

# wait_pmtu HOST PEER WANT [SECONDS]: until HOST shows WANT as PEER's path MTU.
wait_pmtu() { wg_wait_peer "$1" "$2" path_mtu "$3" "${4:-10}"; }

# route_mtu HOST SUBNET: the mtu on HOST's route toward SUBNET.
route_mtu() {
    in_ns "$1" ip route show "$2" dev flatnet0 | grep -o 'mtu [0-9]*' | cut -d' ' -f2
}

# wait_route_mtu HOST SUBNET WANT: the route follows the path MTU within 3 s.
wait_route_mtu() {
    local i
    for i in $(seq 30); do
        [ "$(route_mtu "$1" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    echo "$1: route to $2 has mtu '$(route_mtu "$1" "$2")', not $3" >&2
    in_ns "$1" ip route >&2
    return 1
}

@test "LAN MTU 1400, offloads on: bulk TCP both ways fits the link" {
    wg_pair 1400
    wait_pmtu h1 h2 1400
    wait_pmtu h2 h1 1400
    wait_route_mtu h1 10.87.2.0/24 1340
    wg_wait_ping h1-a "$IPB"
    bulk_both h1-a "$IPA" h2-b "$IPB" 20
    grep -q "tso=true gro=true" "$FN_TMP/h1/flatnetd.log"
}

@test "LAN MTU 1280, offloads on: 50 MB both ways, the SYN's MSS clamped to the route" {
    wg_pair 1280
    wait_pmtu h1 h2 1280
    wait_pmtu h2 h1 1280
    wait_route_mtu h1 10.87.2.0/24 1220
    wait_route_mtu h2 10.87.1.0/24 1220
    wg_wait_ping h1-a "$IPB"
    # The container's own MTU is unchanged (1420): its SYN is rewritten.
    [ "$(in_ns h1-a cat /sys/class/net/eth0/mtu)" = 1420 ]
    bulk_both h1-a "$IPA" h2-b "$IPB" 50
    in_ns h1 nft list chain ip flatnet forward | grep -q 'maxseg size set rt mtu'
    # The status table shows the path MTU.
    ctl h1 status | grep -E '^ +h2 ' | grep -q ' 1280 '
}

@test "a LAN whose MTU drops while running: the path MTU follows within seconds" {
    wg_pair 1500
    wait_pmtu h1 h2 1500
    wait_route_mtu h1 10.87.2.0/24 1420
    wg_lan_mtu h1 1280
    wg_lan_mtu h2 1280
    wait_pmtu h1 h2 1280 10
    wait_pmtu h2 h1 1280 10
    wait_route_mtu h1 10.87.2.0/24 1220
    bulk_both h1-a "$IPA" h2-b "$IPB" 20
    grep -q "path to peer changed" "$FN_TMP/h1/flatnetd.log"
}

# nat_gw_lab: the NAT lab (suite 050) with h1 ready to carry the gateway's
# traffic (catalog, forward_from r1) and h2 serving its catalog.
nat_gw_lab() {
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    nat_host_create 1 "catalog_listen = \"0.0.0.0:7070\"
forward_from = [\"192.168.1.254/32\"]"
    nat_host_create 2 'catalog_listen = "0.0.0.0:7070"'
}

# bulk_across: containers h1-a and h2-b, 50 MB each way between them.
bulk_across() {
    container_add h1 a
    container_add h2 b
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
    wg_wait_ping h1-a "$IPB"
    bulk_both h1-a "$IPA" h2-b "$IPB" 50
}

# https_via_gateway: the gateway on r1 (TLS) in front of a web container on
# h2 that sends a 2 MB page back; the office fetches it intact.
https_via_gateway() {
    ip netns add "$(ns h2-web)"
    netconf h2 1.0.0 '"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' |
        cni h2 ADD cid-web "/run/netns/$(ns h2-web)" eth0 "IgnoreUnknown=1;K8S_POD_NAME=web" > "$FN_TMP/h2/web.json"
    mkdir -p "$FN_TMP/www"
    head -c 2000000 /dev/urandom > "$FN_TMP/www/page"
    in_ns h2-web python3 -m http.server 80 --bind "$(container_ip h2 web)" --directory "$FN_TMP/www" \
        >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
    mkdir -p "$FN_TMP/gw"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=*.$GW_DOMAIN" \
        -addext "subjectAltName=DNS:*.$GW_DOMAIN" \
        -keyout "$FN_TMP/gw/tls.key" -out "$FN_TMP/gw/tls.crt" 2>/dev/null
    GW_EXTRA="listen_tls = 443
tls_certificate = $FN_TMP/gw/tls.crt
tls_certificate_key = $FN_TMP/gw/tls.key" \
        gw_start 1 "http://$(ctl h2 status --json | jq -r .network.gateway):7070/v1/catalog"
    gw_wait_route web 20
    gw_curl -f --cacert "$FN_TMP/gw/tls.crt" -o "$FN_TMP/got-page" "https://web.$GW_DOMAIN/page"
    [ "$(sha256sum < "$FN_TMP/got-page")" = "$(sha256sum < "$FN_TMP/www/page")" ]
}

@test "LAN MTU 1280 behind NAT routers: 50 MB both ways and HTTPS through the gateway" {
    nat_gw_lab
    # Every LAN link, both ends, carries 1280 bytes (a VPN-like underlay
    # the hosts know about; the internet between the routers has 1500).
    for n in 1 2; do
        in_ns "h$n" ip link set lan0 mtu 1280
        in_ns "r$n" ip link set lan0 mtu 1280
    done
    nat_wait_path h1 h2 direct 15
    wait_pmtu h1 h2 1280 15
    wait_pmtu h2 h1 1280 15
    bulk_across
    https_via_gateway
}

@test "PMTU black hole: a router with a 1280-byte link drops ICMP; probes find 1280, bulk TCP and HTTPS through the gateway work" {
    nat_gw_lab
    # Router r2's link to h2 carries 1280 bytes; h2's own link says 1500,
    # so neither host's route knows. r2 drops the ICMP that would tell.
    in_ns r2 ip link set lan0 mtu 1280
    in_ns r2 nft -f - <<'NFT'
table ip blackhole {
    chain out {
        type filter hook output priority filter;
        icmp type destination-unreachable icmp code frag-needed counter drop
    }
}
NFT
    # The lab really is a black hole: 1400-byte DF packets vanish without
    # a word, 1200-byte ones pass.
    in_ns h2 ping -c1 -W2 -M do -s 1172 203.0.113.1 >/dev/null
    run in_ns h2 ping -c1 -W2 -M do -s 1372 203.0.113.1
    [ "$status" -ne 0 ]
    [[ "$output" != *"message too long"* ]]
    nat_wait_path h1 h2 direct 15
    wait_pmtu h1 h2 1280 15
    wait_pmtu h2 h1 1280 15
    wait_route_mtu h1 "$(ctl h2 status --json | jq -r .network.subnet)" 1220
    bulk_across
    # r2 did try to send "fragmentation needed" (the probes' big sizes), and
    # it was dropped: the hosts learnt the path from their probes alone.
    [ "$(in_ns r2 nft list ruleset | grep -o 'packets [0-9]*' | head -1 | cut -d' ' -f2)" -gt 0 ]
    https_via_gateway
}
