#!/usr/bin/env bats
# The procedures of docs/operations.md's runbook, run as written there:
# back up and restore the Lighthouse, rotate a host's key. (Moving the
# Lighthouse: 100-recovery.bats; removing a host: 050-nat.bats.)

load helpers
load helpers-wg
load helpers-nat

setup() { fn_setup; }
teardown() { fn_teardown; }

@test "runbook: a Lighthouse restored from a backup into a fresh state dir takes every node back" {
    nat_lab "" ""
    nat_wait_path h1 h2 direct 10
    subnets="$(lh nodes list --json | jq -c 'map({name, subnet}) | sort_by(.name)')"
    fp_before="$(lh nodes list --json >/dev/null; sha256sum "$FN_TMP/lh/lighthouse.crt.der" | cut -d' ' -f1)"
    lh token create --ttl 1h --reusable >/dev/null 2>&1

    # 1. Back up the running Lighthouse.
    run lh backup "$FN_TMP/lh.backup"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == "backed up 2 node(s) to $FN_TMP/lh.backup" ]]
    [ "$(stat -c %a "$FN_TMP/lh.backup")" = 600 ]

    # 2. The Lighthouse host is lost, state and all.
    lh_kill
    rm -rf "$FN_TMP/lh"

    # 3. Restore into a fresh state dir and start it.
    run lh restore "$FN_TMP/lh.backup" --state-dir "$FN_TMP/lh"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *"--cidr 10.87.0.0/16 --host-prefix 24"* ]]
    # Never over a Lighthouse that is there.
    run lh restore "$FN_TMP/lh.backup" --state-dir "$FN_TMP/lh"
    [ "$status" -ne 0 ]
    [[ "$output" == *"already holds a Lighthouse"* ]]
    lh_start

    # Every node is back (same certificate, so their pins hold), with the
    # same subnets; the peers still reach each other; tokens survived.
    [ "$(sha256sum "$FN_TMP/lh/lighthouse.crt.der" | cut -d' ' -f1)" = "$fp_before" ]
    online() { lh nodes list --json | jq '[.[] | select(.online)] | length'; }
    for _ in $(seq 100); do [ "$(online)" = 2 ] && break; sleep 0.1; done
    echo "online after the restore: $(online)"
    [ "$(online)" = 2 ]
    [ "$(lh nodes list --json | jq -c 'map({name, subnet}) | sort_by(.name)')" = "$subnets" ]
    for h in h1 h2; do [ "$(nat_lh_state "$h")" = connected ]; done
    [ "$(lh token list | jq length)" -ge 3 ]
    wg_wait_ping h1-a "$IPB" 10
    # And a new host joins the restored Lighthouse as usual.
    nat_router_create 3 ""
    nat_host_create 3
    nat_wait_peers h1 2 10

    # A damaged or foreign file is refused in words.
    echo '{"format":"other"}' > "$FN_TMP/bad.backup"
    run lh restore "$FN_TMP/bad.backup" --state-dir "$FN_TMP/lh2"
    [ "$status" -ne 0 ]
    [[ "$output" == *"is not a Lighthouse backup"* ]]
    [ ! -e "$FN_TMP/lh2" ]
}

@test "runbook: rotating a host's key (remove, new key, join again) keeps the Flatnet working" {
    nat_lab "" ""
    nat_wait_path h1 h2 direct 10
    old_key="$(ctl h2 pubkey)"
    # As docs/operations.md says: containers off the host, remove the node on
    # the Lighthouse, drop the host's key and membership, join with a new token.
    container_del h2 b
    lh nodes remove h2
    for _ in $(seq 50); do [ "$(nat_lh_state h2)" = removed ] && break; sleep 0.1; done
    [ "$(nat_lh_state h2)" = removed ]
    host_kill h2
    rm "$FN_TMP/h2/state/private.key" "$FN_TMP/h2/state/lighthouse.json"
    token="$(lh token create --ttl 1h 2>/dev/null)"
    in_ns h2 "$FLATNETD" --config "$FN_TMP/h2/flatnetd.toml" join "$token"
    host_start h2
    new_key="$(ctl h2 pubkey)"
    [ "$new_key" != "$old_key" ]
    # h1 learns the new key; the old one is nowhere.
    for _ in $(seq 100); do [ "$(wg_peer h1 h2 public_key)" = "$new_key" ] && break; sleep 0.1; done
    [ "$(wg_peer h1 h2 public_key)" = "$new_key" ]
    ! lh nodes list --json | grep -q "$old_key" || false
    container_add h2 c
    IPC="$(container_ip h2 c)"
    wg_wait_ping h1-a "$IPC" 15
}
