#!/usr/bin/env bats
# Single host: ADD/CHECK/DEL through the real binary, connectivity, results.

load helpers

setup() { fn_setup; host_create h1 10.87.1.0/24; }
teardown() { fn_teardown; }

@test "VERSION lists the supported spec versions" {
    run cni h1 VERSION "" "" "" <<< '{"cniVersion":"1.0.0"}'
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | jq -c .supportedVersions)" = '["0.4.0","1.0.0","1.1.0"]' ]
    [ "$(echo "$output" | jq -r .cniVersion)" = "1.0.0" ]
}

@test "two containers get distinct Flatnet IPs and reach each other and the host" {
    container_add h1 a
    container_add h1 b
    ipa="$(container_ip h1 a)"; ipb="$(container_ip h1 b)"
    [ "$ipa" != "$ipb" ]
    [[ "$ipa" == 10.87.1.* ]] && [[ "$ipb" == 10.87.1.* ]]
    in_ns h1-a ping -c2 -W2 "$ipb"
    in_ns h1-b ping -c2 -W2 "$ipa"
    in_ns h1-a ping -c1 -W2 10.87.1.1
    serve_tcp h1-b 8080
    run tcp_get h1-a "$ipb" 8080
    [ "$status" -eq 0 ]
    [ "$output" = "hello from h1-b to $ipa" ]
    # The host reaches a container by its Flatnet IP too.
    run tcp_get h1 "$ipb" 8080
    [ "$status" -eq 0 ]
    [[ "$output" == "hello from"* ]]
}

@test "ADD result follows the spec for 0.4.0, 1.0.0 and 1.1.0" {
    container_add h1 v04 0.4.0
    container_add h1 v10 1.0.0
    container_add h1 v11 1.1.0
    r="$FN_TMP/h1"
    [ "$(jq -r .cniVersion "$r/v04.json")" = "0.4.0" ]
    [ "$(jq -r '.ips[0].version' "$r/v04.json")" = "4" ]
    [ "$(jq -r '.ips[0] | has("version")' "$r/v10.json")" = "false" ]
    [ "$(jq -r '.interfaces[1] | has("mtu")' "$r/v10.json")" = "false" ]
    [ "$(jq -r '.interfaces[1].mtu' "$r/v11.json")" = "1420" ]
    for f in v04 v10 v11; do
        [ "$(jq -r '.ips[0].gateway' "$r/$f.json")" = "10.87.1.1" ]
        [ "$(jq -r '.ips[0].interface' "$r/$f.json")" = "1" ]
        [ "$(jq -r '.interfaces[1].name' "$r/$f.json")" = "eth0" ]
        [ "$(jq -r '.interfaces[1].sandbox' "$r/$f.json")" = "/run/netns/$(ns h1-$f)" ]
        [ "$(jq -r '.routes[0].dst' "$r/$f.json")" = "0.0.0.0/0" ]
        mac="$(jq -r '.interfaces[1].mac' "$r/$f.json")"
        [ "$(in_ns "h1-$f" cat /sys/class/net/eth0/address)" = "$mac" ]
    done
    [ "$(in_ns h1-v11 cat /sys/class/net/eth0/mtu)" = "1420" ]
}

@test "routes=flatnet installs only the Flatnet CIDR" {
    ip netns add "$(ns h1-f)"
    netconf h1 1.0.0 '"routes":"flatnet"' | cni h1 ADD cid-f "/run/netns/$(ns h1-f)" eth0 > "$FN_TMP/h1/f.json"
    run in_ns h1-f ip -4 route show
    [[ "$output" == *"10.87.0.0/16 via 10.87.1.1"* ]]
    [[ "$output" != *default* ]]
}

@test "CHECK passes on a good attachment and catches a deleted address" {
    container_add h1 a
    conf="$(netconf h1 1.0.0 "\"prevResult\":$(cat "$FN_TMP/h1/a.json")")"
    run cni h1 CHECK cid-a "/run/netns/$(ns h1-a)" eth0 <<< "$conf"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    in_ns h1-a ip addr del "$(jq -r '.ips[0].address' "$FN_TMP/h1/a.json")" dev eth0
    run cni h1 CHECK cid-a "/run/netns/$(ns h1-a)" eth0 <<< "$conf"
    [ "$status" -ne 0 ]
    [ "$(echo "$output" | jq -r .code)" = "100" ]
    [[ "$(echo "$output" | jq -r .details)" == *"missing on eth0"* ]]
}

@test "CHECK catches a missing route and a missing lease" {
    container_add h1 a
    conf="$(netconf h1 1.0.0 "\"prevResult\":$(cat "$FN_TMP/h1/a.json")")"
    in_ns h1-a ip route del default
    run cni h1 CHECK cid-a "/run/netns/$(ns h1-a)" eth0 <<< "$conf"
    [ "$status" -ne 0 ]
    [[ "$(echo "$output" | jq -r .details)" == *"route 0.0.0.0/0"* ]]
    run cni h1 CHECK cid-other "/run/netns/$(ns h1-a)" eth0 <<< "$conf"
    [ "$status" -ne 0 ]
    [[ "$(echo "$output" | jq -r .details)" == *"no lease"* ]]
}

@test "DEL removes the veth and the lease, and succeeds again when all is gone" {
    container_add h1 a
    host_if="$(jq -r '.interfaces[0].name' "$FN_TMP/h1/a.json")"
    in_ns h1 ip link show "$host_if"
    [ "$(lease_count h1)" = "1" ]
    run container_del h1 a
    [ "$status" -eq 0 ]
    ! in_ns h1 ip link show "$host_if" 2>/dev/null || false
    ! in_ns h1-a ip link show eth0 2>/dev/null || false
    [ "$(lease_count h1)" = "0" ]
    run container_del h1 a
    [ "$status" -eq 0 ]
    # DEL of a container whose namespace is already gone.
    ip netns del "$(ns h1-a)"
    run container_del h1 a
    [ "$status" -eq 0 ]
}

@test "repeated ADD/DEL cycles keep state consistent; a second ADD is refused without damage" {
    for i in 1 2 3; do
        container_add h1 a
        [ "$(lease_count h1)" = "1" ]
        container_del h1 a
        [ "$(lease_count h1)" = "0" ]
        ip netns del "$(ns h1-a)"
    done
    container_add h1 a
    ip="$(container_ip h1 a)"
    run cni h1 ADD cid-a "/run/netns/$(ns h1-a)" eth0 <<< "$(netconf h1)"
    [ "$status" -ne 0 ]
    [[ "$output" == *"already exists"* ]]
    # The refused ADD neither released the lease nor broke the interface.
    [ "$(lease_count h1)" = "1" ]
    in_ns h1-a ping -c1 -W2 10.87.1.1
    [ "$(ctl h1 status --json | jq -r '.leases[0].ip')" = "$ip" ]
}

@test "GC reclaims leases not in cni.dev/valid-attachments (and the older key), never a fresh one" {
    host_kill h1
    sed -i '1i lease_grace_secs = 2' "$FN_TMP/h1/flatnetd.toml"
    host_start h1
    container_add h1 a
    container_add h1 b
    container_add h1 c
    b_if="$(jq -r '.interfaces[0].name' "$FN_TMP/h1/b.json")"
    conf="$(netconf h1 1.1.0 '"cni.dev/valid-attachments":[{"containerID":"cid-a","ifname":"eth0"},{"containerID":"cid-c","ifname":"eth0"}]')"
    # Right after its ADD, b may be an ADD the runtime's list does not know
    # yet: GC leaves it alone for the grace period.
    run cni h1 GC "" "" "" <<< "$conf"
    [ "$status" -eq 0 ]
    [ "$(lease_count h1)" = "3" ]
    sleep 3
    run cni h1 GC "" "" "" <<< "$conf"
    [ "$status" -eq 0 ]
    [ "$(lease_count h1)" = "2" ]
    [ "$(ctl h1 status --json | jq -r '[.leases[].container_id] | sort | join(",")')" = "cid-a,cid-c" ]
    ! in_ns h1 ip link show "$b_if" 2>/dev/null || false
    conf="$(netconf h1 1.1.0 '"cni.dev/attachments":[{"containerID":"cid-c","ifname":"eth0"}]')"
    run cni h1 GC "" "" "" <<< "$conf"
    [ "$status" -eq 0 ]
    [ "$(lease_count h1)" = "1" ]
}

@test "two containers whose host veth names collide: the second ADD is refused, the first keeps its veth" {
    # cid-88276 and cid-128754 (eth0) hash to the same host veth name.
    container_add h1 88276
    veth="$(jq -r '.interfaces[0].name' "$FN_TMP/h1/88276.json")"
    ip netns add "$(ns h1-128754)"
    run cni h1 ADD cid-128754 "/run/netns/$(ns h1-128754)" eth0 "IgnoreUnknown=1" <<< "$(netconf h1)"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"is already the one of container cid-88276"* ]]
    # The first container is untouched: its veth, its lease, its traffic.
    in_ns h1 ip link show "$veth" >/dev/null
    [ "$(lease_count h1)" = "1" ]
    in_ns h1-88276 ping -c1 -W2 10.87.1.1
}

@test "STATUS succeeds while flatnetd runs and reports 50 when it is down" {
    run cni h1 STATUS "" "" "" <<< "$(netconf h1 1.1.0)"
    [ "$status" -eq 0 ]
    host_kill h1
    run cni h1 STATUS "" "" "" <<< "$(netconf h1 1.1.0)"
    [ "$status" -ne 0 ]
    [ "$(echo "$output" | jq -r .code)" = "50" ]
    # STATUS and GC do not exist before 1.1.0.
    run cni h1 STATUS "" "" "" <<< "$(netconf h1 1.0.0)"
    [ "$(echo "$output" | jq -r .code)" = "1" ]
}

@test "egress is masqueraded in flatnetd's own nftables table" {
    run in_ns h1 nft list table ip flatnet
    [ "$status" -eq 0 ]
    [[ "$output" == *"ip saddr 10.87.1.0/24 ip daddr != 10.87.0.0/16 masquerade"* ]]
    [ "$(in_ns h1 cat /proc/sys/net/ipv4/ip_forward)" = "1" ]
    # A container reaches an "outside" address through the host, seen as the host.
    ip netns add "$(ns out)"
    ip link add "${FN_PREFIX}o" netns "$(ns h1)" type veth peer name up0 netns "$(ns out)"
    in_ns h1 ip addr add 198.51.100.1/24 dev "${FN_PREFIX}o"
    in_ns h1 ip link set "${FN_PREFIX}o" up
    in_ns out ip addr add 198.51.100.2/24 dev up0
    in_ns out ip link set up0 up
    container_add h1 a
    serve_tcp out 9000
    run tcp_get h1-a 198.51.100.2 9000
    [ "$status" -eq 0 ]
    [ "$output" = "hello from out to 198.51.100.1" ]
}

@test "flatnetctl status lists the host and its containers" {
    container_add h1 web
    run ctl h1 status
    [ "$status" -eq 0 ]
    [[ "$output" == *"Node:     h1"* ]]
    [[ "$output" == *"Subnet:   10.87.1.0/24"* ]]
    [[ "$output" == *"web"*"$(container_ip h1 web)"* ]]
    run ctl h1 status --json
    [ "$(echo "$output" | jq -r '.leases[0].container_name')" = "web" ]
}
