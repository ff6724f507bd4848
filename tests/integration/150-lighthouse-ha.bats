#!/usr/bin/env bats
# Two Lighthouses on a three-member etcd cluster (docs/lighthouse.md,
# Several Lighthouses), hosts behind NATs keeping a session with each:
# losing a Lighthouse or an etcd member stops nothing, joins racing at
# both Lighthouses stay unique, and a restarted Lighthouse resyncs its
# nodes by delta.

load helpers
load helpers-wg
load helpers-nat
load helpers-ha

setup() { fn_setup; }
teardown() { fn_teardown; }

# within SECONDS CMD...: CMD succeeds within SECONDS of wall time (tried
# every 0.1 s, each try bounded by what is left).
within() {
    local secs="$1" end
    shift
    end=$(( $(date +%s%N) + secs * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "not within ${secs}s: $*" >&2
    return 1
}

peer_count() { [ "$(ctl "$1" status --json | jq '.peers | length')" = "$2" ]; }
ping1() { in_ns "$1" ping -c1 -W1 "$2"; }

@test "hosts keep a session with both Lighthouses; a token pins both and works at either" {
    ha_lab
    ha_wait_sessions h1 2
    ha_wait_sessions h2 2
    ctl h1 status | grep -A2 '^Lighthouses:' | grep -q '203.0.113.3:7871 connected'
    # The relay carries h1-h2 (symmetric NAT on h2's side).
    nat_wait_path h1 h2 relay 15
    wg_wait_ping h1-a "$IPB" 10
    wg_wait_ping h2-b "$IPA" 5
    # The token lists both Lighthouses, itself first; made at 2, good for a
    # join at 1 (the host tries its first, Lighthouse 2, and takes either).
    t="$(lhn 2 token create --ttl 1h)"
    [ "$(token_json "$t" | jq -r '[.lh] + [.also[].lh] | join(" ")')" = "203.0.113.3:7871 203.0.113.2:7871" ]
    [ "$(lhn 2 --json nodes list | jq length)" = 2 ]
    ha_host 3 "" "$t"
    ha_wait_sessions h3 2
    [ "$(lhn 1 --json nodes list | jq -r '.[].name' | sort | tr '\n' ' ')" = "h1 h2 h3 " ]
    # Both Lighthouses know which hosts are connected to them (etcd
    # presence): every peer is reachable through both.
    ctl h3 status --json | jq -e '.peers | length == 2'
}

@test "kill a Lighthouse: relay, joins, punching and removals go on through the other within 5 s" {
    ha_lab
    ha_wait_sessions h1 2
    ha_wait_sessions h2 2
    nat_wait_path h1 h2 relay 15
    wg_wait_ping h1-a "$IPB" 10
    t="$(lhn 1 token create --ttl 1h)"
    lhn_kill 1
    t0=$(date +%s%N)
    # Relayed traffic: through Lighthouse 2, both ways.
    within 5 ping1 h1-a "$IPB"
    within 5 ping1 h2-b "$IPA"
    echo "relay back after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    # A join with a token that lists Lighthouse 1 first.
    t0=$(date +%s%N)
    HOST_START_SECS=5 ha_host 3 "" "$t"
    took=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "join through Lighthouse 2 took $took ms"
    [ "$took" -le 5000 ]
    grep -q "connected to the Lighthouse" "$FN_TMP/h3/flatnetd.log"
    # A direct path from what Lighthouse 2 told: h3 and h1 (both cone NATs).
    container_add h3 c
    nat_wait_path h3 h1 direct 15
    wg_wait_ping h3-c "$IPA" 5
    # A removal at Lighthouse 2 reaches h1 within 5 s.
    within 5 peer_count h1 2
    lhn 2 nodes remove h3
    within 5 peer_count h1 1
    # The dead Lighthouse shows as reconnecting, the other as connected.
    [ "$(ha_sessions h1)" = 1 ]
    ctl h1 status | grep -q '203.0.113.2:7871 reconnecting'
    # Back: the hosts reconnect to it, and it has the removal.
    lhn_start 1
    ha_wait_sessions h1 2 15
    [ "$(lhn 1 --json nodes list | jq -r '.[].name' | sort | tr '\n' ' ')" = "h1 h2 " ]
}

@test "kill an etcd member: joins, removals and the relay still work" {
    ha_lab
    ha_wait_sessions h1 2
    nat_wait_path h1 h2 relay 15
    leader="$(etcdctl_ha endpoint status -w json | jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint')"
    n="${leader#http://203.0.113.2}"
    n="${n%%:*}"
    [ "$n" -ge 1 ] && [ "$n" -le 3 ]
    # The leader goes (member 3 serves etcdctl, so kill another if needed).
    [ "$n" = 3 ] && n=1
    etcd_kill "$n"
    # Tokens, joins and removals need a majority: two of three are left.
    t="$(lhn 2 token create --ttl 1h)"
    ha_host 3 "" "$t"
    within 10 peer_count h1 2
    lhn 1 nodes remove h3
    within 5 peer_count h1 1
    wg_wait_ping h1-a "$IPB" 5
    # And the member comes back into the cluster.
    etcd_start "$n"
    within 20 etcdctl_ha endpoint health
}

@test "joins racing at both Lighthouses get distinct subnets; a single-use token admits exactly one" {
    ha_lighthouses
    # Six hosts join at once, three preferring each Lighthouse.
    t="$(lhn 1 token create --ttl 1h --reusable)"
    for n in 1 2 3 4 5 6; do
        nat_router_create "$n" ""
        nat_host_netns "$n"
        nat_join_config "$n"
    done
    for n in 1 2 3 4 5 6; do
        nat_join "$n" "$(token_first "$t" $(( n % 2 + 1 )))" >"$FN_TMP/join$n.out" 2>&1 &
    done
    wait
    cat "$FN_TMP"/join*.out
    list="$(lhn 2 --json nodes list)"
    [ "$(jq length <<<"$list")" = 6 ]
    [ "$(jq -r '.[].subnet' <<<"$list" | sort -u | wc -l)" = 6 ]
    [ "$(jq -r '.[].node_id' <<<"$list" | sort -u | wc -l)" = 6 ]
    # Both Lighthouses hold the same six.
    [ "$(lhn 1 --json nodes list | jq -c 'sort_by(.node_id) | map([.node_id, .name, .subnet])')" = \
      "$(jq -c 'sort_by(.node_id) | map([.node_id, .name, .subnet])' <<<"$list")" ]
    # A single-use token, presented at both Lighthouses at once, five times.
    for round in 1 2 3 4 5; do
        one="$(lhn 2 token create --ttl 1h)"
        a=$(( round * 2 + 5 ))
        b=$(( round * 2 + 6 ))
        for n in $a $b; do
            nat_router_create "$n" ""
            nat_host_netns "$n"
            nat_join_config "$n"
        done
        rc_a=0
        rc_b=0
        nat_join "$a" "$(token_first "$one" 1)" >"$FN_TMP/one$a.out" 2>&1 & pa=$!
        nat_join "$b" "$(token_first "$one" 2)" >"$FN_TMP/one$b.out" 2>&1 & pb=$!
        wait "$pa" || rc_a=$?
        wait "$pb" || rc_b=$?
        cat "$FN_TMP/one$a.out" "$FN_TMP/one$b.out"
        # Exactly one joined; the other was told the token was used.
        [ $(( (rc_a == 0) + (rc_b == 0) )) = 1 ]
        grep -q "already used" "$FN_TMP/one$a.out" "$FN_TMP/one$b.out"
    done
    [ "$(lhn 1 --json nodes list | jq length)" = 11 ]
}

@test "a restarted Lighthouse resyncs its nodes by delta, removals made meanwhile included" {
    ha_lab
    ha_wait_sessions h1 2
    ha_wait_sessions h2 2
    ha_host 3 ""
    ha_wait_sessions h3 2
    within 5 peer_count h1 2
    # Lighthouse 2 goes away; h3 is removed at Lighthouse 1 meanwhile.
    lhn_kill 2 TERM
    lhn 1 nodes remove h3
    within 5 peer_count h1 1
    lhn_start 2
    ha_wait_sessions h1 2 15
    ha_wait_sessions h2 2 15
    m="$(lhn_metrics 2)"
    echo "$m" | grep '^flatnet_lighthouse_welcome'
    # Both hosts came back with a delta, none with a full list.
    echo "$m" | grep -q '^flatnet_lighthouse_welcomes_total{kind="delta"} 2$'
    ! echo "$m" | grep -q 'welcomes_total{kind="full"}' || false
    bytes="$(echo "$m" | sed -n 's/^flatnet_lighthouse_welcome_bytes_total{kind="delta"} //p')"
    echo "delta resync: $bytes bytes for 2 hosts"
    [ "$bytes" -lt 3000 ]
    # And h1 still has exactly h2.
    [ "$(ctl h1 status --json | jq -r '.peers[].name')" = h2 ]
}

@test "a Lighthouse added later is picked up by running hosts; a retired one is dropped" {
    ha_lighthouses 1
    ha_host 1 ""
    # Only Lighthouse 1 so far: one session, no list in the status.
    [ "$(ctl h1 status --json | jq '.lighthouse.lighthouses | length')" = 0 ]
    lhn_start 2
    [ "$(lhn 1 --json lighthouses list | jq length)" = 2 ]
    # h1 hears of it with its next Pong (every 5 s with one Lighthouse).
    ha_wait_sessions h1 2 10
    within 3 jq -e '.also | length == 1' "$FN_TMP/h1/state/lighthouse.json"
    # Lighthouse 2 is stopped for good and retired at Lighthouse 1.
    lhn_kill 2 TERM
    id2="$(lhn 1 --json lighthouses list | jq -r '.[] | select(.this | not) | .id')"
    lhn 1 lighthouses retire "$id2"
    within 10 eval '[ "$(ctl h1 status --json | jq ".lighthouse.lighthouses | length")" = 0 ]'
    [ "$(ctl h1 status --json | jq -r '.lighthouse.state')" = connected ]
    # Retiring the one answering is refused, with what to do instead.
    id1="$(lhn 1 --json lighthouses list | jq -r '.[0].id')"
    run lhn 1 lighthouses retire "$id1"
    [ "$status" -ne 0 ]
    [[ "$output" == *"stop it, then retire it from another one"* ]]
    # New tokens name only Lighthouse 1.
    t="$(lhn 1 token create --ttl 1h)"
    [ "$(token_json "$t" | jq '.also // [] | length')" = 0 ]
}
