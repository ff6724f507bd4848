#!/usr/bin/env bats
# NAT lab: two hosts behind nftables NAT routers, joined to a Lighthouse on
# an "internet" namespace; containers on each host talk across both NATs,
# directly after hole punching or through the Lighthouse relay.

load helpers
load helpers-wg
load helpers-nat

setup() { fn_setup; }
teardown() { fn_teardown; }

# both_ways: containers a and b reach each other (ping and TCP).
both_ways() {
    wg_wait_ping h1-a "$IPB" 15
    wg_wait_ping h2-b "$IPA" 5
    serve_tcp h2-b 8080
    [ "$(tcp_get h1-a "$IPB" 8080)" = "hello from h2-b to $IPA" ]
}

@test "cone NATs: both hosts join, get distinct subnets and punch a direct path" {
    nat_lab "" ""
    s1="$(ctl h1 status --json | jq -r .network.subnet)"
    s2="$(ctl h2 status --json | jq -r .network.subnet)"
    [ "$s1" != "$s2" ]
    [[ "$IPA" == 10.87.* ]] && [ "$(echo "$s1" | cut -d. -f1-3)" = "$(echo "$IPA" | cut -d. -f1-3)" ]
    nat_wait_path h1 h2 direct 10
    nat_wait_path h2 h1 direct 10
    # Plain masquerade keeps the port: each sees the other's router mapping.
    [ "$(wg_peer h1 h2 endpoint)" = "203.0.113.12:$WG_PORT" ]
    [ "$(wg_peer h2 h1 endpoint)" = "203.0.113.11:$WG_PORT" ]
    ctl h1 status | grep -E "h2 .*direct 203\.0\.113\.12:$WG_PORT"
    [ "$(nat_lh_state h1)" = "connected" ]
    [ "$(ctl h1 status --json | jq -r .lighthouse.observed)" = "203.0.113.11:$WG_PORT" ]
    both_ways
    # Nothing but the Lighthouse and the routers ever saw the hosts' LANs.
    [ "$(lh nodes list --json | jq length)" = "2" ]
}

@test "symmetric NATs: no direct path, traffic flows through the relay" {
    nat_lab random random
    nat_wait_path h1 h2 relay 10
    nat_wait_path h2 h1 relay 10
    both_ways
    ctl h1 status | grep -E "h2 .* relay "
    [ "$(wg_peer h1 h2 path)" = "relay" ]
}

@test "one cone, one symmetric NAT: relay, traffic flows" {
    # A port-restricted cone only lets in the exact address:port it sent
    # to, and the symmetric side's mapping towards h1 is not the one the
    # Lighthouse saw: no direct path can form, so the relay carries it.
    nat_lab "" random
    nat_wait_path h1 h2 relay 10
    nat_wait_path h2 h1 relay 10
    both_ways
}

@test "the Lighthouse going away keeps known peers working, across a restart" {
    nat_lab "" ""
    nat_wait_path h1 h2 direct 10
    wg_wait_ping h1-a "$IPB" 10
    s1="$(ctl h1 status --json | jq -r .network.subnet)"
    lh_kill
    sleep 2
    in_ns h1-a ping -c3 -i0.3 -W2 "$IPB"
    # Restart h1 while the Lighthouse is down: same subnet, same peers.
    host_kill h1
    host_start h1
    [ "$(ctl h1 status --json | jq -r .network.subnet)" = "$s1" ]
    [ "$(ctl h1 status --json | jq '.peers | length')" = "1" ]
    [ "$(nat_lh_state h1)" != "connected" ]
    wg_wait_ping h1-a "$IPB" 15
    # The Lighthouse comes back: the node reconnects by itself.
    lh_start
    for i in $(seq 150); do [ "$(nat_lh_state h1)" = "connected" ] && break; sleep 0.2; done
    [ "$(nat_lh_state h1)" = "connected" ]
    [ "$(ctl h1 status --json | jq -r .network.subnet)" = "$s1" ]
}

@test "a NAT mapping change (new port range, conntrack flushed) recovers the path" {
    nat_lab "" ""
    nat_wait_path h1 h2 direct 10
    wg_wait_ping h1-a "$IPB" 10
    nat_masquerade 1 "to :20000-29999"
    in_ns r1 conntrack -F 2>/dev/null || true
    # h1's socket is now 203.0.113.11:2xxxx to the outside.
    for i in $(seq 300); do
        ep="$(wg_peer h2 h1 endpoint)"
        port="${ep##*:}"
        [ "$port" -ge 20000 ] && [ "$port" -le 29999 ] && [ "$(wg_peer h2 h1 path)" = "direct" ] && break
        sleep 0.1
    done
    echo "h2 sees h1 at $ep ($(wg_peer h2 h1 path))"
    [ "$port" -ge 20000 ] && [ "$port" -le 29999 ]
    [ "$(wg_peer h2 h1 path)" = "direct" ]
    wg_wait_ping h1-a "$IPB" 10
    wg_wait_ping h2-b "$IPA" 5
}

@test "removing a node reaches the other node within 5 s" {
    nat_lab "" ""
    nat_wait_peers h1 1
    lh nodes remove h2
    nat_wait_peers h1 0 5
    ! in_ns h1-a ping -c1 -W1 "$IPB" || false
}

@test "flatnetd join: bad, revoked and reused tokens are refused and nothing is stored" {
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    nat_host_netns 1
    nat_join_config 1
    join() { nat_join 1 "$1"; }

    run join flatnet1_garbage
    [ "$status" -ne 0 ]
    [[ "$output" == *"invalid join token"* ]]
    t="$(lh token create --ttl 1h)"
    lh token revoke "$(lh token list | jq -r '.[0].id')"
    run join "$t"
    [ "$status" -ne 0 ]
    [[ "$output" == *"revoked"* ]]
    [ ! -e "$FN_TMP/h1/state/lighthouse.json" ]
    [ "$(lh nodes list --json)" = "[]" ]

    t="$(lh token create --ttl 1h)"
    run join "$t"
    [ "$status" -eq 0 ]
    [[ "$output" == *"joined $LH_ADDR as h1"* ]]
    [ "$(stat -c %a "$FN_TMP/h1/state/lighthouse.json")" = "600" ]
    # The token is not stored, the private key never leaves the host.
    ! grep -q "${t#flatnet1_}" "$FN_TMP/h1/state/lighthouse.json" || false
    key="$(tr -d '\n' < "$FN_TMP/h1/state/private.key")"
    [ -n "$key" ]
    ! grep -rqF "$key" "$FN_TMP/lh" || false
    run join "$t"
    [ "$status" -ne 0 ]
    [[ "$output" == *"already joined"* ]]
    # The single-use token is spent: another key cannot reuse it.
    rm -rf "$FN_TMP/h1/state"
    run join "$t"
    [ "$status" -ne 0 ]
    [[ "$output" == *"refused"* ]]
    [ "$(lh nodes list --json | jq length)" = "1" ]
}
