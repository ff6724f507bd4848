#!/usr/bin/env bats
# Automatic recovery, each path alone: the Lighthouse moving to a new IP
# behind the same name, a host's LAN renumbered (DHCP-style), and a host
# reboot with its containers restarted by Podman 5. Nobody touches Flatnet
# in between; each test says how fast it must be back.
# (tests/soak/ runs these faults together, on a schedule, for hours.)

load helpers
load helpers-wg
load helpers-nat
load podman5

setup_file() { p5_setup_file; }
teardown_file() { p5_teardown_file; }
setup() { fn_setup; }
teardown() {
    p5_teardown
    fn_teardown
}

# hosts_file HOST LINE: HOST's /etc/hosts (what `ip netns exec` shows it),
# written in place so that a running flatnetd sees the change.
hosts_file() {
    mkdir -p "/etc/netns/$(ns "$1")"
    printf '127.0.0.1 localhost\n%s\n' "$2" > "/etc/netns/$(ns "$1")/hosts"
}

# ping_back NS IP: ping (1 s each, 10 tries) until one answers; MS is the
# time that took. Fails when none does.
ping_back() {
    local start i
    start=$(date +%s%N)
    for i in $(seq 10); do
        if in_ns "$1" ping -c1 -W1 "$2" >/dev/null 2>&1; then
            MS=$(( ($(date +%s%N) - start) / 1000000 ))
            return 0
        fi
    done
    echo "$1 gets no answer from $2 after 10 tries" >&2
    return 1
}

# wait_lh HOST SECONDS: until HOST's Lighthouse session is connected.
wait_lh() {
    local i
    for i in $(seq $(($2 * 10))); do
        [ "$(nat_lh_state "$1")" = connected ] && return 0
        sleep 0.1
    done
    echo "$1 is not connected to the Lighthouse after $2 s:" >&2
    ctl "$1" status >&2
    tail -20 "$FN_TMP/$1/flatnetd.log" >&2
    return 1
}

@test "the Lighthouse moves to a new IP behind the same name: nodes follow it" {
    nat_inet_create
    LH_ARGS="--public-addr lighthouse.test:7871" lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    for h in h1 h2 h3; do hosts_file "$h" "203.0.113.1 lighthouse.test"; done
    nat_host_create 1
    nat_host_create 2
    wait_lh h1 10
    wait_lh h2 10
    [ "$(ctl h1 status --json | jq -r .lighthouse.address)" = lighthouse.test:7871 ]
    # The Lighthouse host is moved: new address, the name updated.
    lh_kill
    in_ns inet ip addr del 203.0.113.1/24 dev br0
    in_ns inet ip addr add 203.0.113.50/24 dev br0
    LH_ADDR=203.0.113.50:7871 lh_start
    for h in h1 h2 h3; do hosts_file "$h" "203.0.113.50 lighthouse.test"; done
    # Both nodes find it again by name: their QUIC session to the old
    # address times out (15 s), and the reconnect resolves the name afresh.
    for i in $(seq 450); do
        [ "$(lh nodes list --json | jq '[.[] | select(.online)] | length')" = 2 ] && break
        sleep 0.1
    done
    lh nodes list
    [ "$(lh nodes list --json | jq '[.[] | select(.online)] | length')" = 2 ]
    wait_lh h1 5
    wait_lh h2 5
    # And it serves them: a node that joins now is announced to both.
    nat_router_create 3 ""
    nat_host_create 3
    wait_lh h3 10
    nat_wait_peers h1 2 10
    nat_wait_peers h2 2 10
    grep -q "connected to the Lighthouse" "$FN_TMP/h1/flatnetd.log"
}

@test "a host's LAN address is renumbered: its peers reach it again within 5 s" {
    nat_lab "" ""
    nat_wait_path h1 h2 direct 10
    wg_wait_ping h2-b "$IPA" 10
    old="$(wg_peer h2 h1 endpoint)"
    # (The lab comes up in about a second; give h1 a moment to have seen
    # its first address, as any host that has been up a while has.)
    sleep 2
    # DHCP gives h1 another address on the same LAN; the NAT mapping made
    # for the old one now leads nowhere.
    in_ns h1 ip addr del 192.168.1.1/24 dev lan0
    in_ns h1 ip addr add 192.168.1.7/24 dev lan0
    in_ns h1 ip route add default via 192.168.1.254
    # Only h2 sends: h1 must notice its own change and tell h2 by itself.
    ping_back h2-b "$IPA"
    echo "h2-b reached h1-a again after $MS ms; h2 sees h1 at $(wg_peer h2 h1 endpoint) (was $old)"
    [ "$MS" -le 5000 ]
    grep -q "addresses changed" "$FN_TMP/h1/flatnetd.log"
    # The Lighthouse has the new local address as a candidate too.
    for i in $(seq 50); do
        lh nodes list --json | jq -e '.[] | select(.name == "h1") | .local_addrs[] | select(startswith("192.168.1.7:"))' >/dev/null && break
        sleep 0.1
    done
    lh nodes list --json | jq -e '.[] | select(.name == "h1") | .local_addrs[] | select(startswith("192.168.1.7:"))'
}

@test "host reboot: flatnetd rebuilds TUN, routes and nftables from its state; Podman restarts the containers" {
    WG_HOST_EXTRA="reconcile_secs = 1
lease_grace_secs = 10" wg_host_create h1 10.87.6.0/24 192.168.77.1
    wg_host_create h2 10.87.7.0/24 192.168.77.2
    wg_add_peer h1 h2; wg_add_peer h2 h1
    wg_reload h1 1; wg_reload h2 1
    p5_setup
    p5_net h1 fnet1
    p5 h1 run -d --name "$C-web" --restart=always --network fnet1 -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    web="$(p5_ip h1 "$C-web" fnet1)"
    # The client on h2 is a CNI container: Podman's "reboot" below is h1's.
    container_add h2 cli
    wait_for 10 in_ns h2-cli curl -sf --max-time 2 "http://$web/"
    cp "$FN_TMP/h1/flatnetd.toml" "$FN_TMP/h1.toml.keep"

    # The reboot: flatnetd and every container die at once, nothing is torn
    # down; the host's network namespace (TUN, veths, routes, nftables) is
    # gone; only the disk (state dir, Podman's store) survives.
    host_kill h1 KILL
    "$P5" reboot "$P5_SHARE"
    # The cable goes with the host (the LAN end would otherwise outlive the
    # namespace for a moment and clash with the new one's).
    in_ns lan ip link del l-h1
    netns_power_off "$(ns h1)"
    ip netns add "$(ns h1)"
    in_ns h1 ip link set lo up
    wg_lan_join h1 192.168.77.1
    cp "$FN_TMP/h1.toml.keep" "$FN_TMP/h1/flatnetd.toml"
    host_start h1
    # What boot does for --restart=always containers (podman-restart.service).
    p5 h1 start --all --filter restart-policy=always >/dev/null

    in_ns h1 ip link show flatnet0 >/dev/null
    in_ns h1 ip route show 10.87.0.0/16 | grep -q flatnet0
    in_ns h1 nft list table ip flatnet >/dev/null
    # The restarted container has its address from before the reboot: its
    # lease waited for it (the grace counts from flatnetd's start).
    web2="$(p5_ip h1 "$C-web" fnet1)"
    [ "$web2" = "$web" ]
    # Across the tunnel again, by address and by name, and -p from h2.
    wait_for 15 in_ns h2-cli curl -sf --max-time 2 "http://$web2/"
    [ "$(in_ns h2-cli curl -sf --max-time 5 "http://$web2/")" = "flatnet test page" ]
    gw2="$(ctl h2 status --json | jq -r .network.gateway)"
    dns_is() { [ "$(in_ns h2 dig +short "@$gw2" "$1")" = "$2" ]; }
    wait_for 10 dns_is "$C-web.flatnet" "$web2"
    [ "$(in_ns h2 timeout 5 busybox wget -qO- http://192.168.77.1:8080/)" = "flatnet test page" ]
    # The per-peer route with its path MTU is back within a second or two.
    route_mtu_is() { in_ns h1 ip route show 10.87.7.0/24 | grep -q "mtu $1"; }
    wait_for 5 route_mtu_is 1420
    # No lease leaked or doubled: one container, one lease.
    wait_for 10 leases_are h1 1
    [ "$(lease_of h1 "$C-web")" = "$web2" ]
}

@test "a Lighthouse restart: relayed peers are back within 5 s, not after the 15 s idle timeout" {
    nat_lab "" random
    nat_wait_path h1 h2 relay 20
    wg_wait_ping h1-a "$IPB" 10
    lh_kill
    lh_start
    ping_back h1-a "$IPB"
    echo "relayed traffic back after $MS ms"
    [ "$MS" -le 5000 ]
    # h1 noticed at once (a stateless reset the new process could sign) and
    # joined the new process: two sessions in its log, the second a delta.
    [ "$(grep -c "connected to the Lighthouse" "$FN_TMP/h1/flatnetd.log")" -ge 2 ]
    grep -q "connected to the Lighthouse (delta)" "$FN_TMP/h1/flatnetd.log"
}

# peer_names HOST: HOST's peers, by name, sorted, on one line.
peer_names() { ctl "$1" status --json | jq -r '[.peers[].name] | sort | join(" ")'; }

@test "delta sync: after a Lighthouse restart a host that was away gets exactly what changed, in a few hundred bytes" {
    LH_ARGS="--metrics-listen 203.0.113.1:9464" nat_lab "" ""
    nat_router_create 3 ""
    nat_host_create 3
    for h in h1 h2 h3; do wait_lh "$h" 10; done
    for i in $(seq 50); do [ "$(peer_names h2)" = "h1 h3" ] && break; sleep 0.2; done
    [ "$(peer_names h2)" = "h1 h3" ]
    # h2 saves its list with the point it goes up to.
    sleep 3
    host_kill h2
    jq -e '.sync.version > 0' "$FN_TMP/h2/state/lighthouse.json"
    # While h2 is away: h3 is removed, and the Lighthouse restarts.
    lh nodes remove h3
    lh_stop
    LH_ARGS="--metrics-listen 203.0.113.1:9464" lh_start
    wait_lh h1 10
    host_start h2
    wait_lh h2 10
    [ "$(peer_names h2)" = "h1" ]
    grep "connected to the Lighthouse" "$FN_TMP/h2/flatnetd.log" | tail -1 | tee /dev/stderr \
        | grep -q "(delta)"
    # h2 and h1 reconnected; neither got the whole list.
    m="$(in_ns inet curl -sf http://203.0.113.1:9464/metrics)"
    echo "$m" | grep '^flatnet_lighthouse_welcome'
    echo "$m" | grep -q '^flatnet_lighthouse_welcomes_total{kind="delta"} 2$'
    ! echo "$m" | grep -q 'welcomes_total{kind="full"}' || false
    bytes="$(echo "$m" | sed -n 's/^flatnet_lighthouse_welcome_bytes_total{kind="delta"} //p')"
    [ "$bytes" -lt 2000 ]
    # The restarted Lighthouse still reaches everyone: h1's containers
    # reach h2's.
    wg_wait_ping h1-a "$IPB" 10
}
