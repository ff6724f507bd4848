#!/usr/bin/env bats
# Remote members (docs/members.md): colleagues off the LAN reach Flatnet
# services with stock wg-quick and a config from `lighthouse member add`,
# through a hub, held to their policy (default-deny) by the data plane of
# every host their packets leave a tunnel on. Lab: helpers-members.bash.

load helpers
load helpers-wg
load helpers-nat
load helpers-members

setup() {
    fn_setup
    command -v wg-quick >/dev/null && command -v wireguard-go >/dev/null || {
        echo "needs wireguard-tools and wireguard-go (scripts/deps.sh installs them)" >&2
        return 1
    }
}
teardown() { fn_teardown; }

# The lab: hub h1 (port forwarded), h2 with forgejo (:80, :22, :8080) and
# forgejo-db (:5432), a container "web" on the hub, and alice's laptop.
members_lab() {
    nat_inet_create
    lh_start
    hub_router
    nat_router_create 2 ""
    nat_host_create 1 "$(printf '[metrics]\nlisten = "127.0.0.1:9589"')"
    nat_host_create 2 "$(printf '[metrics]\nlisten = "127.0.0.1:9589"')"
    container_add h2 forgejo
    container_add h2 forgejo-db
    container_add h1 web
    for p in 80 22 8080; do serve_tcp h2-forgejo "$p"; done
    serve_tcp h2-forgejo-db 5432
    serve_tcp h1-web 80
    # Something of the hub host's own, on every address it has.
    serve_tcp h1 7999
    FORGEJO="$(container_ip h2 forgejo)"
    DB="$(container_ip h2 forgejo-db)"
    WEB="$(container_ip h1 web)"
    nat_wait_path h1 h2 direct 20
    lh policy set web 'forgejo:80,22/tcp'
    home_create home 9
}

@test "a member with stock wg-quick reaches an allowed port on another host by name, and nothing else" {
    members_lab
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    grep -qx "Address = 10.87.255.1/32" "$FN_TMP/alice.conf"
    grep -qx "DNS = 10.87.1.1, flatnet" "$FN_TMP/alice.conf"
    grep -qx "AllowedIPs = 10.87.0.0/16" "$FN_TMP/alice.conf"
    grep -qx "PublicKey = $(ctl h1 status --json | jq -r .public_key)" "$FN_TMP/alice.conf"
    wgq home up "$FN_TMP/alice.conf"
    grep -qx "nameserver 10.87.1.1" "/etc/netns/$(ns home)/resolv.conf"
    # By name, through the hub, to h2: the container sees the member's own
    # address (no NAT on the way).
    wait_tcp home forgejo 80 30
    [ "$(try_tcp home forgejo 80)" = "hello from h2-forgejo to 10.87.255.1" ]
    try_tcp home forgejo.flatnet 22
    try_tcp home forgejo.h2.flatnet 80
    # Not allowed: another port, the database, a container on the hub, the
    # hosts' own addresses (Flatnet and LAN), another Flatnet's range.
    before="$(drops h2 policy)"
    ! try_tcp home forgejo 8080 || false
    ! try_tcp home "$DB" 5432 || false
    ! try_tcp home forgejo-db 5432 || false
    ! try_tcp home "$WEB" 80 || false
    ! try_tcp home 10.87.1.1 7999 || false
    ! try_tcp home 10.87.2.1 53 || false
    # The hub drops what it can judge itself; h2 judges what reaches it.
    [ "$(drops h1 policy)" -gt 0 ]
    # A hostile member widens its own AllowedIPs: the hub's LAN address and
    # the Lighthouse's TLS port are still out of reach.
    in_ns home wg set alice peer "$(ctl h1 status --json | jq -r .public_key)" \
        allowed-ips 10.87.0.0/16,192.168.1.0/24,203.0.113.1/32
    in_ns home ip route add 192.168.1.0/24 dev alice
    in_ns home ip route add 203.0.113.1/32 dev alice
    ! try_tcp home 192.168.1.1 7999 || false
    ! in_ns home timeout 3 curl -sk --max-time 2 https://203.0.113.1/ || false
    # DNS on the hub answers the member (and nothing else there does).
    [ "$(in_ns home dig +short +time=2 @10.87.1.1 forgejo.flatnet)" = "$FORGEJO" ]
    [ "$(drops h1 policy)" -gt 2 ]
    # h2 does not take the hub's word for it: the hub itself sending as
    # alice (it may: she is behind it) gets only what her policy allows.
    in_ns h1 ip addr add 10.87.255.1/32 dev lo
    try_from h1 10.87.255.1 "$FORGEJO" 80
    ! try_from h1 10.87.255.1 "$DB" 5432 || false
    [ "$(drops h2 policy)" -gt "$before" ]
}

@test "a spoofed inner source from a member is dropped at the hub" {
    members_lab
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    wgq home up "$FN_TMP/alice.conf"
    wait_tcp home "$FORGEJO" 80 30
    # alice sends as 10.87.255.77 and as a container of h2: the hub's
    # WireGuard refuses sources outside her /32 before any policy.
    in_ns home ip addr add 10.87.255.77/32 dev alice
    in_ns home ip addr add 10.87.2.99/32 dev alice
    before="$(drops h1 not_allowed)"
    ! try_from home 10.87.255.77 "$FORGEJO" 80 || false
    ! try_from home 10.87.2.99 "$FORGEJO" 80 || false
    try_from home 10.87.255.1 "$FORGEJO" 80
    [ "$(drops h1 not_allowed)" -gt "$before" ]
    # Her own address still works.
    try_tcp home "$FORGEJO" 80
}

@test "a member that roams to another network keeps going: the hub answers where it last heard from" {
    members_lab
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    wgq home up "$FN_TMP/alice.conf"
    wait_tcp home forgejo 80 30
    # The laptop's NAT gives it another public port (a new network, a
    # rebooted home router): the next packet comes from elsewhere.
    nat_masquerade 9 "to :40000-40999"
    in_ns r9 conntrack -F >/dev/null 2>&1
    # Its keepalive (25 s) would announce the move; traffic does it at once.
    wait_tcp home forgejo 80 10
    ctl h1 status --json |
        jq -e '.peers[] | select(.name == "alice") | .endpoint | test("^203\\.0\\.113\\.19:40[0-9]{3}$")'
}

@test "a second member with another policy sees other things, and members do not see each other" {
    members_lab
    lh policy set ops node:h2 'web:80'
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    member_conf bob --hub h1 --access ops --endpoint "203.0.113.11:$WG_PORT"
    grep -qx "Address = 10.87.255.2/32" "$FN_TMP/bob.conf"
    home_create home2 8
    wgq home up "$FN_TMP/alice.conf"
    wgq home2 up "$FN_TMP/bob.conf"
    serve_tcp home 7000
    serve_tcp home2 7000
    wait_tcp home2 "$DB" 5432 30
    # bob: every container of h2, any port; web on the hub (a service rule
    # matching a container of the hub itself).
    try_tcp home2 forgejo-db 5432
    try_tcp home2 forgejo 8080
    try_tcp home2 web 80
    ! try_tcp home2 10.87.2.1 53 || false
    # alice: forgejo's web only, not the hub's web.
    wait_tcp home forgejo 80 20
    ! try_tcp home web 80 || false
    # Members never reach each other.
    ! try_tcp home 10.87.255.2 7000 || false
    ! try_tcp home2 10.87.255.1 7000 || false
    # The policy changes for every member that holds it, at once.
    lh policy set web 'forgejo:80,22/tcp' 'web:80'
    wait_tcp home web 80 10
    lh member list | grep -E '^alice +10.87.255.1/32 +h1 +web +never'
    lh policy list | jq -e '.[] | select(.name == "ops") | .members == ["bob"]'
    run lh policy remove ops
    [ "$status" -ne 0 ]
    [[ "$output" == *'held by bob'* ]]
}

@test "removal cuts a member off within 5 s, a rotated key replaces the old one, expiry ends a member" {
    members_lab
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    wgq home up "$FN_TMP/alice.conf"
    wait_tcp home "$FORGEJO" 80 30
    lh member remove alice
    cut_off_within home "$FORGEJO" 80 5
    # Gone from every host's peer list, hub included.
    [ "$(ctl h1 status --json | jq '[.peers[] | select(.name == "alice")] | length')" = 0 ]
    wgq home down "$FN_TMP/alice.conf"

    # Rotation: the old key stops, the new config works at the same address.
    member_conf bob --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    cp "$FN_TMP/bob.conf" "$FN_TMP/bob-old.conf"
    wgq home up "$FN_TMP/bob.conf"
    wait_tcp home "$FORGEJO" 80 30
    lh member rotate bob --no-qr --endpoint "203.0.113.11:$WG_PORT" > "$FN_TMP/bob2.conf"
    ! cmp -s "$FN_TMP/bob.conf" "$FN_TMP/bob2.conf" || false
    grep -qx "$(grep '^Address' "$FN_TMP/bob-old.conf")" "$FN_TMP/bob2.conf"
    cut_off_within home "$FORGEJO" 80 5
    wgq home down "$FN_TMP/bob.conf"
    cp "$FN_TMP/bob2.conf" "$FN_TMP/bob.conf"
    wgq home up "$FN_TMP/bob.conf"
    wait_tcp home "$FORGEJO" 80 30
    wgq home down "$FN_TMP/bob.conf"

    # Expiry: works until its time, then is removed everywhere.
    member_conf carol --hub h1 --access web --expires 8s --endpoint "203.0.113.11:$WG_PORT"
    wgq home up "$FN_TMP/carol.conf"
    wait_tcp home "$FORGEJO" 80 20
    cut_off_within home "$FORGEJO" 80 14
    # The hub refuses carol at her expiry by its own clock; the Lighthouse's
    # sweep (every second) then removes her from the registry and from every
    # host's peer list.
    local t
    for t in $(seq 1 20); do
        if ! lh member list | grep -q '^carol ' &&
            [ "$(ctl h1 status --json | jq '[.peers[] | select(.name == "carol")] | length')" = 0 ]; then
            break
        fi
        sleep 0.25
    done
    ! lh member list | grep -q '^carol ' || false
    [ "$(ctl h1 status --json | jq '[.peers[] | select(.name == "carol")] | length')" = 0 ]
    # Still refused once the sweep is done.
    ! in_ns home timeout 2 python3 -c 'import socket, sys
socket.create_connection((sys.argv[1], 80), timeout=1.5).recv(10)' "$FORGEJO" || false
}

@test "member and policy commands refuse bad input with a clear message" {
    members_lab
    run lh member add x --hub nosuch --access web
    [ "$status" -ne 0 ]
    [[ "$output" == *'no node named "nosuch" to be the hub'* ]]
    run lh member add x --hub h1 --access nosuch
    [[ "$output" == *'no policy named "nosuch"'* ]]
    run lh member add x --hub h1 --access web --public-key garbage
    [[ "$output" == *'is not a WireGuard public key'* ]]
    run lh member add h2 --hub h1 --access web
    [[ "$output" == *'belongs to another node or member'* ]]
    run lh policy set bad 'forgejo:99999'
    [[ "$output" == *'bad access rule "forgejo:99999"'* ]]
    run lh member remove h2
    [[ "$output" == *'no member named "h2"'* ]]
    # A member's key cannot join the Flatnet as a node.
    lh member add k --hub h1 --access web --json > "$FN_TMP/k.json"
    [ "$(jq -r .member.endpoint "$FN_TMP/k.json")" != null ]
    [[ "$(cat "$FN_TMP/k.json")" != *Debug* ]]
    # Output is never Rust's debug form.
    ! grep -q 'Some(' "$FN_TMP/k.json" || false
}

@test "a member cannot reach a denied port with IPv4 fragments: tiny, overlapping or later ones" {
    members_lab
    member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT"
    wgq home up "$FN_TMP/alice.conf"
    wait_tcp home "$FORGEJO" 80 30
    # What reaches the containers, fragment by fragment (before reassembly).
    wg_capture_start h2-forgejo eth0 "$FN_TMP/fj.pcap" "host 10.87.255.1"
    wg_capture_start h2-forgejo-db eth0 "$FN_TMP/db.pcap" "host 10.87.255.1"
    frag() { in_ns home python3 "$BATS_TEST_DIRNAME/py/frag_attack.py" 10.87.255.1 "$@"; }
    before="$(drops h1 policy)"
    # The control: an allowed port, fragmented honestly, is answered.
    frag "$FORGEJO" 80 split
    # forgejo:8080 and the database are denied, however it is cut.
    for c in tiny overlap later split; do
        frag "$FORGEJO" 8080 "$c"
        frag "$DB" 5432 "$c"
    done
    sleep 2
    wg_capture_stop "$FN_TMP/fj.pcap"
    wg_capture_stop "$FN_TMP/db.pcap"
    count() { tcpdump -nr "$1" "$2" 2>/dev/null | wc -l; }
    first='ip[6:2] & 0x1fff = 0'
    echo "# at forgejo: $(count "$FN_TMP/fj.pcap" "src host 10.87.255.1") fragments from alice," \
        "$(count "$FN_TMP/fj.pcap" "src host $FORGEJO and tcp src port 80") answers from :80," \
        "$(count "$FN_TMP/fj.pcap" "src host $FORGEJO and tcp src port 8080") from :8080;" \
        "at the database: $(count "$FN_TMP/db.pcap" "src host 10.87.255.1"); hub policy drops $before -> $(drops h1 policy)" >&3
    # The control reassembled and got its SYN-ACKs: fragments do get through.
    [ "$(count "$FN_TMP/fj.pcap" "src host $FORGEJO and tcp src port 80 and tcp[13] & 0x12 = 0x12")" -ge 1 ]
    # No first fragment naming 8080 arrived, nor one too short to name a
    # port, and 8080 never answered (no SYN-ACK, no reset).
    [ "$(count "$FN_TMP/fj.pcap" "src host 10.87.255.1 and $first and tcp dst port 8080")" = 0 ]
    [ "$(count "$FN_TMP/fj.pcap" "src host 10.87.255.1 and $first and ip[2:2] < 28")" = 0 ]
    [ "$(count "$FN_TMP/fj.pcap" "src host $FORGEJO and tcp src port 8080")" = 0 ]
    # Nothing at all reached the database: no rule names it.
    [ "$(count "$FN_TMP/db.pcap" "src host 10.87.255.1")" = 0 ]
    [ "$(drops h1 policy)" -gt "$before" ]
}
