#!/usr/bin/env bats
# The Lighthouse over TCP for networks that block UDP (docs/lighthouse.md,
# TCP fallback). The NAT lab of suite 050, with host h1's router dropping
# every UDP packet it would forward: h1 joins and keeps its session over
# TLS on the Lighthouse's port 443, and its containers reach h2's through
# the relay over that TCP connection. When the router lets UDP through
# again, h1 moves to QUIC and then to a direct path, and a TCP connection
# between the containers inside the tunnel carries on across both moves.

load helpers
load helpers-wg
load helpers-nat

setup() { fn_setup; }
teardown() { fn_teardown; }

# udp_block N on|off: router N drops (or forwards again) all UDP.
udp_block() {
    if [ "$2" = on ]; then
        in_ns "r$1" nft -f - <<'NFT'
table inet udpblock {
    chain block {
        type filter hook forward priority -10;
        meta l4proto udp counter drop
    }
}
NFT
    else
        in_ns "r$1" nft delete table inet udpblock
    fi
}

# lh_transport HOST: quic or tcp (empty when not connected).
lh_transport() { ctl "$1" status --json | jq -r '.lighthouse.transport // empty'; }

wait_transport() {
    local i
    for i in $(seq $(($3 * 10))); do
        [ "$(lh_transport "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    echo "$1 is not on $2 after $3 s:" >&2
    ctl "$1" status >&2
    tail -20 "$FN_TMP/$1/flatnetd.log" >&2
    return 1
}

# The lab with h1's router blocking UDP before h1 even joins.
udp_blocked_lab() {
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    udp_block 1 on
    nat_router_create 2 ""
    # h1's first join waits 4 s for QUIC before it tries TCP.
    HOST_START_SECS=20 nat_host_create 1
    nat_host_create 2
    container_add h1 a
    container_add h2 b
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
}

@test "UDP blocked: a host joins over TCP 443 and its containers reach the other host's through the TCP relay" {
    udp_blocked_lab
    wait_transport h1 tcp 20
    wait_transport h2 quic 10
    grep -q "UDP to the Lighthouse is blocked on this network" "$FN_TMP/h1/flatnetd.log"
    # No UDP left h1's network: everything went over TCP.
    [ "$(in_ns r1 nft list table inet udpblock | grep -o 'packets [0-9]*' | awk '{print $2}')" -gt 0 ]
    nat_wait_path h1 h2 relay 20
    wg_wait_ping h1-a "$IPB" 15
    in_ns h2-b ping -c3 -i0.3 -W2 "$IPA"
    # Bulk data too (fragments of relayed datagrams, TCP inside the tunnel).
    in_ns h2-b sh -c "socat -u TCP-LISTEN:9100,reuseaddr OPEN:/dev/null &"
    sleep 0.3
    head -c 2000000 /dev/urandom > "$FN_TMP/blob"
    in_ns h1-a timeout 20 socat -u "OPEN:$FN_TMP/blob" "TCP:$IPB:9100"
}

@test "UDP allowed again: QUIC, then direct, without dropping a TCP connection inside the tunnel" {
    udp_blocked_lab
    wait_transport h1 tcp 20
    nat_wait_path h1 h2 relay 20
    wg_wait_ping h1-a "$IPB" 15
    # One TCP connection from h1-a to h2-b, a line every 100 ms, for the
    # whole test; the receiver counts lines.
    in_ns h2-b sh -c "socat -u TCP-LISTEN:9000,reuseaddr OPEN:$FN_TMP/recv,creat,append &"
    sleep 0.3
    in_ns h1-a sh -c "i=0; while [ \$i -lt 600 ]; do echo line \$i; i=\$((i+1)); sleep 0.1; done \
        | socat -u - TCP:$IPB:9000; echo \$? > $FN_TMP/sender.rc" &
    sleep 2
    before="$(wc -l < "$FN_TMP/recv")"
    [ "$before" -gt 5 ]
    udp_block 1 off
    # Back to QUIC within the upgrade interval (10 s) and a try (5 s).
    wait_transport h1 quic 20
    grep -q "moving the session from TCP to QUIC" "$FN_TMP/h1/flatnetd.log"
    nat_wait_path h1 h2 direct 20
    after_switch="$(wc -l < "$FN_TMP/recv")"
    sleep 2
    # Still flowing on the same connection after both moves.
    [ "$(wc -l < "$FN_TMP/recv")" -gt "$after_switch" ]
    [ ! -e "$FN_TMP/sender.rc" ] || { echo "the sender ended early: rc $(cat "$FN_TMP/sender.rc")" >&2; false; }
    # Every line arrived in order, none lost (TCP inside the tunnel
    # retransmitted whatever the path changes dropped).
    n="$(wc -l < "$FN_TMP/recv")"
    [ "$(sed -n "${n}p" "$FN_TMP/recv")" = "line $((n - 1))" ]
    pkill -f "TCP:$IPB:9000" || true
}

@test "the TCP port refuses what is not a Flatnet upgrade, and the Lighthouse keeps serving" {
    udp_blocked_lab
    wait_transport h1 tcp 20
    # Plain HTTPS to another path: an HTTP error, not a session.
    run in_ns inet curl -sk -o /dev/null -w '%{http_code}' https://203.0.113.1:443/
    [ "$output" = "404" ]
    # Garbage instead of TLS, and a connection that says nothing.
    head -c 4096 /dev/urandom | in_ns inet timeout 5 nc -q1 203.0.113.1 443 >/dev/null || true
    in_ns inet timeout 3 nc 203.0.113.1 443 </dev/null >/dev/null || true
    [ "$(lh_transport h1)" = tcp ]
    wg_wait_ping h1-a "$IPB" 10
}
