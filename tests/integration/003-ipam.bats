#!/usr/bin/env bats
# IPAM under load and across crashes.

load helpers

setup() { fn_setup; host_create h1 10.87.1.0/24; }
teardown() { fn_teardown; }

# add_n FROM TO: ADD containers pFROM..pTO in parallel; results in $FN_TMP/h1.
add_parallel() {
    local i
    for i in $(seq "$1" "$2"); do
        ip netns add "$(ns h1-p$i)"
    done
    local pids=()
    for i in $(seq "$1" "$2"); do
        ( rc=0; netconf h1 | cni h1 ADD "cid-p$i" "/run/netns/$(ns h1-p$i)" eth0 \
              > "$FN_TMP/h1/p$i.json" || rc=$?; echo "$rc" > "$FN_TMP/h1/p$i.rc" ) &
        pids+=($!)
    done
    wait "${pids[@]}"   # not a bare `wait`: flatnetd is a child too
}

@test "100 parallel ADDs get 100 distinct addresses, all wired" {
    add_parallel 1 100
    for i in $(seq 1 100); do [ "$(cat "$FN_TMP/h1/p$i.rc")" = "0" ] || { cat "$FN_TMP/h1/p$i.json"; false; }; done
    distinct="$(cat "$FN_TMP"/h1/p*.json | jq -r '.ips[0].address' | sort -u | wc -l)"
    [ "$distinct" = "100" ]
    [ "$(lease_count h1)" = "100" ]
    # The daemon's view equals the plugin's results.
    diff <(cat "$FN_TMP"/h1/p*.json | jq -r '.ips[0].address' | cut -d/ -f1 | sort) \
         <(ctl h1 status --json | jq -r '.leases[].ip' | sort)
    # Every container answers from its own address.
    for i in 1 50 100; do
        ip="$(jq -r '.ips[0].address' "$FN_TMP/h1/p$i.json" | cut -d/ -f1)"
        in_ns h1 ping -c1 -W2 "$ip"
    done
}

@test "kill -9 of flatnetd between ADDs loses no lease" {
    add_parallel 1 10
    before="$(ctl h1 status --json | jq -c '[.leases[] | {container_id, ip}] | sort_by(.container_id)')"
    host_kill h1 KILL
    host_start h1
    after="$(ctl h1 status --json | jq -c '[.leases[] | {container_id, ip}] | sort_by(.container_id)')"
    [ "$before" = "$after" ]
    [ "$(echo "$after" | jq length)" = "10" ]
    add_parallel 11 20
    host_kill h1 KILL
    host_start h1
    [ "$(lease_count h1)" = "20" ]
    [ "$(ctl h1 status --json | jq -r '.leases[].ip' | sort -u | wc -l)" = "20" ]
}

@test "kill -9 during a burst: every ADD that succeeded keeps its lease, none is duplicated" {
    # Enough ADDs that the burst outlasts the lease poll below: an ADD
    # takes about 7 ms, and flatnetd commits one lease per millisecond or so.
    n_add=150
    for i in $(seq 1 "$n_add"); do ip netns add "$(ns h1-p$i)"; done
    pids=()
    for i in $(seq 1 "$n_add"); do
        ( rc=0; netconf h1 | cni h1 ADD "cid-p$i" "/run/netns/$(ns h1-p$i)" eth0 \
              > "$FN_TMP/h1/p$i.json" || rc=$?; echo "$rc" > "$FN_TMP/h1/p$i.rc" ) &
        pids+=($!)
    done
    # Kill the daemon once a few leases are committed, mid-burst.
    until [ "$(lease_count h1 2>/dev/null || echo 0)" -ge 5 ]; do sleep 0.005; done
    host_kill h1 KILL
    wait "${pids[@]}"
    host_start h1
    ok=0
    for i in $(seq 1 "$n_add"); do
        if [ "$(cat "$FN_TMP/h1/p$i.rc")" = "0" ]; then
            ok=$((ok + 1))
            ip="$(jq -r '.ips[0].address' "$FN_TMP/h1/p$i.json" | cut -d/ -f1)"
            [ "$(ctl h1 status --json | jq -r --arg c "cid-p$i" '.leases[] | select(.container_id == $c) | .ip')" = "$ip" ]
        else
            # A failed ADD reports the daemon as unreachable, in CNI's format.
            [ "$(jq -r .code "$FN_TMP/h1/p$i.json")" = "11" ] || [ "$(jq -r .code "$FN_TMP/h1/p$i.json")" = "5" ]
        fi
    done
    echo "# $ok of $n_add ADDs completed before the kill" >&3
    [ "$ok" -lt "$n_add" ]
    n="$(lease_count h1)"
    [ "$(ctl h1 status --json | jq -r '.leases[].ip' | sort -u | wc -l)" = "$n" ]
    [ "$n" -ge "$ok" ]
}

@test "leases persist across a clean restart and ADD after restart keeps the address" {
    container_add h1 a
    ip="$(container_ip h1 a)"
    host_kill h1
    host_start h1
    [ "$(ctl h1 status --json | jq -r '.leases[0].ip')" = "$ip" ]
    in_ns h1-a ping -c1 -W2 10.87.1.1
}

@test "reconciliation reclaims the lease of a vanished container, never one whose namespace lives" {
    host_create h2 10.87.2.0/24 "reconcile_secs = 1
lease_grace_secs = 2"
    container_add h2 live
    container_add h2 unwired
    container_add h2 gone
    # One container's host veth is deleted by hand while its namespace lives
    # on; another's namespace goes away (its veth with it).
    in_ns h2 ip link del "$(jq -r '.interfaces[0].name' "$FN_TMP/h2/unwired.json")"
    ip netns del "$(ns h2-gone)"
    sleep 4
    [ "$(ctl h2 status --json | jq -r '[.leases[].container_id] | sort | join(",")')" = "cid-live,cid-unwired" ]
    grep -q "reclaimed the lease of a container that is gone.*cid-gone" "$FN_TMP/h2/flatnetd.log"
    # The live one still works.
    in_ns h2-live ping -c1 -W2 10.87.2.1
}
