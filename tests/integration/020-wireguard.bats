#!/usr/bin/env bats
# Cross-host overlay: two hosts on a LAN, each flatnetd running its own
# userspace WireGuard data plane with the other as a static peer.

load helpers
load helpers-wg

setup() { fn_setup; }
teardown() {
    local f
    for f in "$FN_TMP"/*.pcap.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    fn_teardown
}

# echo_server NS PORT: accepts one connection, echoes lines back.
echo_server() {
    ip netns exec "$(ns "$1")" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept()
f = c.makefile("rwb", buffering=0)
for line in f:
    f.write(line)
' "$2" >/dev/null 2>&1 &
    wait_listen "$1" "$2"
}

@test "the node key is generated once, kept 0600, and shown by flatnetctl" {
    host_create h1 10.87.1.0/24
    key="$(ctl h1 pubkey)"
    [ "${#key}" -eq 44 ]
    [ "$(stat -c %a "$FN_TMP/h1/state/private.key")" = "600" ]
    ctl h1 status | grep -q "^Key:      $key$"
    host_kill h1
    host_start h1
    [ "$(ctl h1 pubkey)" = "$key" ]
    # Without [wireguard] or peers there is no data plane.
    run in_ns h1 ip link show flatnet0
    [ "$status" -ne 0 ]
}

@test "containers on two hosts reach each other through the tunnel" {
    wg_pair
    [[ "$IPA" == 10.87.1.* ]] && [[ "$IPB" == 10.87.2.* ]]
    wg_wait_ping h1-a "$IPB"
    in_ns h1-a ping -c3 -i0.2 -W2 "$IPB"
    in_ns h2-b ping -c3 -i0.2 -W2 "$IPA"
    serve_tcp h2-b 8080
    serve_tcp h1-a 8081
    run tcp_get h1-a "$IPB" 8080
    [ "$status" -eq 0 ]
    [ "$output" = "hello from h2-b to $IPA" ]
    run tcp_get h2-b "$IPA" 8081
    [ "$status" -eq 0 ]
    [ "$output" = "hello from h1-a to $IPB" ]
    # A bulk transfer with full-size segments (MTU fits the tunnel).
    in_ns h1-a ping -c2 -W2 -M do -s 1392 "$IPB"
    # Routes: the Flatnet through the TUN, the own subnet kept off it.
    run in_ns h1 ip -4 route show
    [[ "$output" == *"10.87.0.0/16 dev flatnet0"* ]]
    [[ "$output" == *"unreachable 10.87.1.0/24"* ]]
    [ "$(in_ns h1 cat /sys/class/net/flatnet0/mtu)" = "1420" ]
    [ "$(in_ns h1-a cat /sys/class/net/eth0/mtu)" = "1420" ]
    [ "$(ctl h1 status --json | jq .network.mtu)" = "1420" ]
    # Status shows the peer with a handshake and traffic.
    run ctl h1 status
    [[ "$output" == *"Peers (1):"* ]]
    row="$(echo "$output" | grep -E '^  h2 ')"
    [[ "$row" == *"10.87.2.0/24"*"192.168.77.2:51820"*"s ago"* ]]
    [ "$(wg_peer h1 h2 rx_bytes)" -gt 0 ]
    [ "$(wg_peer h1 h2 tx_bytes)" -gt 0 ]
    [ "$(wg_peer h1 h2 last_handshake_secs)" != "null" ]
}

@test "bulk TCP transfers arrive intact both ways (segmentation offloads)" {
    wg_pair
    wg_wait_ping h1-a "$IPB"
    bulk_both h1-a "$IPA" h2-b "$IPB" 30
    # The offloads really were in use.
    grep -q "tso=true gro=true" "$FN_TMP/h1/flatnetd.log"
}

@test "the same tunnel works with offloads turned off" {
    wg_lan_create
    for h in 1 2; do
        host_create "h$h" "10.87.$h.0/24" "[wireguard]
offloads = false"
        wg_lan_join "h$h" "192.168.77.$h"
    done
    wg_add_peer h1 h2; wg_add_peer h2 h1
    wg_reload h1 1; wg_reload h2 1
    container_add h1 a; container_add h2 b
    wg_wait_ping h1-a "$(container_ip h2 b)"
    grep -q "tso=false gro=false" "$FN_TMP/h1/flatnetd.log"
    bulk_both h1-a "$(container_ip h1 a)" h2-b "$(container_ip h2 b)" 5
}

@test "the LAN carries only WireGuard: a plaintext marker never shows" {
    wg_pair
    wg_wait_ping h1-a "$IPB"
    marker="FLATNET-SECRET-MARKER-7f3a"
    wg_capture_start lan br0 "$FN_TMP/lan.pcap" ""
    wg_capture_start h2 flatnet0 "$FN_TMP/inner.pcap" ""
    # The marker goes out both in ICMP payloads and in a TCP stream.
    hex="$(printf %s "$marker" | od -An -tx1 | tr -d ' \n' | cut -c1-32)"
    in_ns h1-a ping -c3 -i0.2 -W2 -p "$hex" "$IPB"
    echo_server h2-b 9000
    in_ns h1-a python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 9000), timeout=5)
s.sendall((sys.argv[2] + "\n").encode()); assert s.recv(100)' "$IPB" "$marker"
    wg_capture_stop "$FN_TMP/lan.pcap"
    wg_capture_stop "$FN_TMP/inner.pcap"
    # The inner side saw the plaintext (the capture works)...
    grep -aq "$marker" "$FN_TMP/inner.pcap"
    # ...the LAN saw UDP 51820 only, and no marker.
    [ "$(tcpdump -nr "$FN_TMP/lan.pcap" udp port 51820 2>/dev/null | wc -l)" -ge 6 ]
    # (The bridge's own IGMP reports are not host traffic.)
    [ "$(tcpdump -nr "$FN_TMP/lan.pcap" 2>/dev/null \
        'ip and not igmp and not udp port 51820' | wc -l)" -eq 0 ]
    ! grep -aq "$marker" "$FN_TMP/lan.pcap" || false
    ! grep -aq "FLATNET-SECRET" "$FN_TMP/lan.pcap" || false
}

@test "restarting one flatnetd restores the path without touching containers" {
    wg_pair
    wg_wait_ping h1-a "$IPB"
    host_kill h2
    run in_ns h1-a ping -c1 -W1 "$IPB"
    [ "$status" -ne 0 ]
    host_start h2
    wg_wait_ping h1-a "$IPB" 15
    in_ns h2-b ping -c2 -W2 "$IPA"
    serve_tcp h2-b 8080
    run tcp_get h1-a "$IPB" 8080
    [ "$output" = "hello from h2-b to $IPA" ]
}

@test "a SIGHUP that adds a peer keeps the running session and TCP stream" {
    wg_pair
    wg_wait_ping h1-a "$IPB"
    hs_before="$(wg_peer h1 h2 handshakes)"
    [ "$hs_before" -ge 1 ]
    echo_server h2-b 9000
    # One TCP connection: a line before the reload, one after.
    in_ns h1-a python3 -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000), timeout=5)
f = s.makefile("rwb", buffering=0)
for i in range(2):
    f.write(b"line%d\n" % i); print(f.readline().decode().strip(), flush=True)
    if i == 0:
        open(sys.argv[2], "w").close()
        time.sleep(2)
' "$IPB" "$FN_TMP/first-done" > "$FN_TMP/stream.out" &
    client=$!
    for i in $(seq 100); do [ -e "$FN_TMP/first-done" ] && break; sleep 0.05; done
    # Add a third (absent) peer to h1 and reload.
    wg_peer_block h3 "$(head -c32 /dev/urandom | base64)" 192.168.77.3:51820 10.87.3.0/24 \
        >> "$FN_TMP/h1/flatnetd.toml"
    wg_reload h1 2
    wait "$client"
    [ "$(cat "$FN_TMP/stream.out")" = "$(printf 'line0\nline1')" ]
    [ "$(wg_peer h1 h2 handshakes)" = "$hs_before" ]
    [ "$(wg_peer h1 h3 last_handshake_secs)" = "null" ]
    in_ns h1-a ping -c2 -W2 "$IPB"
    grep -q 'kept=\["h2"\]' "$FN_TMP/h1/flatnetd.log"
    # Removing the peer again is just as quiet for h2.
    sed -i '/name = "h3"/,$d' "$FN_TMP/h1/flatnetd.toml"
    sed -i '$d' "$FN_TMP/h1/flatnetd.toml"
    wg_reload h1 1
    in_ns h1-a ping -c2 -W2 "$IPB"
    [ "$(wg_peer h1 h2 handshakes)" = "$hs_before" ]
}

@test "garbage and replayed datagrams are dropped without harm" {
    # No Flatnet DNS: its once-a-second name sync would move rx_bytes.
    WG_HOST_EXTRA=$'[dns]\nenabled = false' wg_pair
    wg_wait_ping h1-a "$IPB"
    wg_capture_start lan br0 "$FN_TMP/lan.pcap" "udp dst port 51820 and dst host 192.168.77.2"
    in_ns h1-a ping -c3 -i0.2 -W2 "$IPB"
    wg_capture_stop "$FN_TMP/lan.pcap"
    # Real data messages (type 4, longer than a keepalive) from h1 to h2.
    mapfile -t data < <(wg_udp_payloads "$FN_TMP/lan.pcap" | grep '^04000000' | awk 'length($0) > 64')
    [ "${#data[@]}" -ge 1 ]
    hs="$(wg_peer h2 h1 handshakes)"
    rx="$(wg_peer h2 h1 rx_bytes)"
    # Replays, each several times.
    wg_send_udp lan 192.168.77.2 51820 "${data[@]}" "${data[@]}" "${data[@]}"
    # Garbage: random bytes, each WireGuard type with the right sizes but
    # random content, a QUIC-looking datagram, empty and tiny ones.
    junk=()
    for len in 1 3 4 31 32 64 92 148 200 1500; do
        junk+=("$(head -c "$len" /dev/urandom | od -An -tx1 | tr -d ' \n')")
    done
    for t in 01:148 02:92 03:64 04:32 04:1200; do
        body="$(head -c $(( ${t#*:} - 4 )) /dev/urandom | od -An -tx1 | tr -d ' \n')"
        junk+=("${t%%:*}000000$body")
    done
    junk+=("c0$(head -c 1199 /dev/urandom | od -An -tx1 | tr -d ' \n')")
    wg_send_udp lan 192.168.77.2 51820 "${junk[@]}"
    sleep 0.5
    # Still running, session untouched, endpoint not moved to the attacker.
    kill -0 "$(cat "$FN_TMP/h2/flatnetd.pid")"
    [ "$(wg_peer h2 h1 handshakes)" = "$hs" ]
    [ "$(wg_peer h2 h1 endpoint)" = "192.168.77.1:51820" ]
    [ "$(wg_peer h2 h1 rx_bytes)" = "$rx" ]
    in_ns h1-a ping -c3 -i0.2 -W2 "$IPB"
    in_ns h2-b ping -c2 -W2 "$IPA"
}

@test "the kernel backend fails with a clear error where the kernel lacks WireGuard" {
    ip netns add "$(ns k1)"
    mkdir -p "$FN_TMP/k1"
    cat > "$FN_TMP/k1/flatnetd.toml" <<TOML
node_name = "k1"
subnet = "10.87.1.0/24"
state_dir = "$FN_TMP/k1/state"
socket = "$FN_TMP/k1/flatnetd.sock"
[wireguard]
backend = "kernel"
TOML
    run timeout 10 ip netns exec "$(ns k1)" "$FLATNETD" --config "$FN_TMP/k1/flatnetd.toml"
    [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
    [[ "$output" == *"kernel WireGuard backend unavailable"* ]]
    [[ "$output" == *'backend = "userspace"'* ]]
    run in_ns k1 ip link show flatnet0
    [ "$status" -ne 0 ]
}
