#!/usr/bin/env bats
# Flatnet DNS: two hosts behind NAT routers, joined to a Lighthouse; h1 runs
# Podman 4.3 (CNI), h2 a real Podman 5 (`--driver flatnet`). Containers find
# each other by name across hosts, names follow containers within 2 s and
# keep resolving while the Lighthouse is down; everything else goes to the
# host's resolver (a stand-in at 203.0.113.53 on the "internet"); nobody
# outside the Flatnet gets answers.

load helpers
load helpers-wg
load helpers-nat
load podman
load podman5

setup_file() { p5_setup_file; }
teardown_file() { p5_teardown_file; }

UPSTREAM=203.0.113.53

setup() {
    fn_setup
    p5_setup
    nat_inet_create
    in_ns inet ip addr add "$UPSTREAM/24" dev br0
    ip netns exec "$(ns inet)" python3 "$REPO_ROOT/tests/integration/py/upstream-dns.py" "$UPSTREAM" \
        >/dev/null 2>&1 &
    echo "nameserver $UPSTREAM" > "$FN_TMP/resolv.conf"
    lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    local dns="[dns]
resolv_conf = \"$FN_TMP/resolv.conf\""
    nat_host_create 1 "$dns"
    nat_host_create 2 "$dns"
    nat_wait_path h1 h2 direct 15
    nat_wait_path h2 h1 direct 15
    GW1="$(ctl h1 status --json | jq -r .network.gateway)"
    GW2="$(ctl h2 status --json | jq -r .network.gateway)"
    podman_setup
    podman_conflist h1 fnet
    p5_net h2 fnet
}
teardown() { p5_teardown; podman_teardown; fn_teardown; }

# q HOST NAME [TYPE] [SERVER]: dig's short answer, asked from HOST's namespace.
q() { in_ns "$1" dig +short +time=2 +tries=1 "@${4:-$GW1}" "$2" "${3:-A}"; }
# rcode HOST NAME [SERVER]: the response code dig saw.
rcode() { in_ns "$1" dig +time=2 +tries=1 "@${3:-$GW1}" "$2" | sed -nE 's/.*status: ([A-Z]+).*/\1/p'; }

# ms_until SECS CMD...: milliseconds until CMD succeeds (fails after SECS).
ms_until() {
    local secs="$1" t0 i; shift
    t0=$(date +%s%N)
    for i in $(seq $((secs * 20))); do
        if "$@" >/dev/null 2>&1; then echo $((($(date +%s%N) - t0) / 1000000)); return 0; fi
        sleep 0.05
    done
    return 1
}

resolves() { [ "$(q h1 "$2")" = "$3" ] || return 1; }
# gone NAME: NAME.flatnet is NXDOMAIN (a bare unknown name is forwarded).
gone() { [ "$(rcode h1 "$1.flatnet")" = NXDOMAIN ]; }

# A glibc image (getent and the C library from this machine) for Podman 4.3.
glibc_image() {
    podman image exists localhost/flatnet-glibc && return 0
    local root="$FN_TMP/glibc-rootfs" lib
    busybox_rootfs "$root"
    mkdir -p "$root/usr/bin"
    cp /usr/bin/getent "$root/usr/bin/getent"
    for lib in $(ldd /usr/bin/getent | grep -oE '/[^ ]+'); do
        mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
    echo "hosts: files dns" > "$root/etc/nsswitch.conf"
    tar -C "$root" -c . | podman import - localhost/flatnet-glibc >/dev/null
}

@test "containers on two hosts resolve each other by name: nslookup, ping, wget, getent (Podman 4.3 and 5)" {
    pm h1 run -d --name "$C-a" --network fnet "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    p5 h2 run -d --name "$C-b" --network fnet --network-alias forgejo-db "$P5_IMAGE" httpd -f -p 80 -h /www
    ipa="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "fnet").IPAddress}}' "$C-a")"
    ipb="$(p5_ip h2 "$C-b" fnet)"
    # Both runtimes hand the container flatnetd's resolver.
    [[ "$(pm h1 exec "$C-a" cat /etc/resolv.conf)" == *"nameserver $GW1"* ]]
    [[ "$(p5 h2 exec "$C-b" cat /etc/resolv.conf)" == *"nameserver $GW2"* ]]
    wait_for 5 resolves h1 "$C-b" "$ipb"
    # Podman 4.3 / CNI side, busybox: nslookup, ping and wget by name.
    run pm h1 exec "$C-a" nslookup "$C-b"
    [[ "$output" == *"$ipb"* ]]
    pm h1 exec "$C-a" ping -c1 -W2 "$C-b"
    [ "$(pm h1 exec "$C-a" timeout 5 wget -qO- "http://$C-b/")" = "flatnet test page" ]
    [ "$(pm h1 exec "$C-a" timeout 5 wget -qO- "http://forgejo-db.flatnet/")" = "flatnet test page" ]
    [ "$(pm h1 exec "$C-a" timeout 5 wget -qO- "http://$C-b.h2.flatnet/")" = "flatnet test page" ]
    # glibc's resolver (getent), as most images use.
    glibc_image
    run pm h1 run --rm --network fnet localhost/flatnet-glibc getent hosts "$C-b"
    [[ "$output" == "$ipb"*"$C-b"* ]]
    # Podman 5 side, the other way.
    [ "$(p5 h2 exec "$C-b" timeout 5 wget -qO- "http://$C-a/")" = "flatnet test page" ]
    run p5 h2 exec "$C-b" nslookup "$C-a.h1.flatnet"
    [[ "$output" == *"$ipa"* ]]
    # PTR, and an empty NOERROR (not NXDOMAIN) for AAAA of a known name.
    [ "$(q h1 "$(echo "$ipb" | awk -F. '{print $4"."$3"."$2"."$1}').in-addr.arpa" PTR)" = "$C-b.h2.flatnet." ]
    [ "$(q h1 "$C-b.flatnet" AAAA)" = "" ]
    [ "$(in_ns h1 dig +time=2 +tries=1 "@$GW1" "$C-b.flatnet" AAAA | sed -nE 's/.*status: ([A-Z]+).*/\1/p')" = NOERROR ]
    # flatnetctl shows every name, with --json.
    run ctl h1 names
    [[ "$output" == *"$C-b.h2.flatnet"* ]]
    [ "$(ctl h1 names --json | jq -r --arg n "$C-b" '.names[] | select(.name == $n) | .node')" = "h2" ]
}

@test "a new container resolves on the other host within 2 s, and a removed one is gone within 2 s" {
    p5 h2 run -d --name "$C-new" --network fnet "$P5_IMAGE" sleep 600
    ip="$(p5_ip h2 "$C-new" fnet)"
    t="$(ms_until 5 resolves h1 "$C-new" "$ip")"
    echo "appeared on h1 after ${t} ms" >&3
    [ "$t" -lt 2000 ]
    p5 h2 rm -f -t 0 "$C-new"
    t="$(ms_until 5 gone "$C-new")"
    echo "gone from h1 after ${t} ms" >&3
    [ "$t" -lt 2000 ]
}

@test "with the Lighthouse killed, names keep resolving and still spread" {
    p5 h2 run -d --name "$C-b" --network fnet "$P5_IMAGE" sleep 600
    ipb="$(p5_ip h2 "$C-b" fnet)"
    wait_for 5 resolves h1 "$C-b" "$ipb"
    lh_kill
    sleep 2
    [ "$(q h1 "$C-b")" = "$ipb" ]
    # The tunnel carries names, not the Lighthouse: a new one still arrives.
    p5 h2 run -d --name "$C-c" --network fnet "$P5_IMAGE" sleep 600
    wait_for 5 resolves h1 "$C-c" "$(p5_ip h2 "$C-c" fnet)"
}

@test "outside names go to the host's resolver; outside the Flatnet nobody gets answers" {
    pm h1 run -d --name "$C-a" --network fnet "$PODMAN_IMAGE" sleep 600
    run pm h1 exec "$C-a" nslookup www.outside.example
    [[ "$output" == *"198.51.100.7"* ]]
    [ "$(q h1 nx.example)" = "" ]
    [ "$(rcode h1 host.nx.example)" = NXDOMAIN ]
    # Unknown names under the Flatnet domain are not forwarded.
    [ "$(rcode h1 nobody.flatnet)" = NXDOMAIN ]
    # h1's LAN router: a machine outside the Flatnet, with a route to it.
    in_ns r1 ip route add 10.87.0.0/16 via 192.168.1.1
    [ "$(rcode r1 www.outside.example)" = REFUSED ]
    [ "$(rcode r1 "$C-a")" = REFUSED ]
    # Resolvers that do not answer: SERVFAIL after the timeout, not a hang.
    echo "nameserver 203.0.113.99" > "$FN_TMP/resolv.conf"
    [ "$(rcode h1 www.outside.example)" = SERVFAIL ]
}

@test "garbage, truncated, oversized and looping packets and a TCP flood do not stop the server" {
    pm h1 run -d --name "$C-a" --network fnet "$PODMAN_IMAGE" sleep 600
    ipa="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "fnet").IPAddress}}' "$C-a")"
    wait_for 5 resolves h1 "$C-a" "$ipa"
    pid="$(cat "$FN_TMP/h1/flatnetd.pid")"
    rss0="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
    ip netns exec "$(ns h1)" python3 - "$GW1" <<'PY'
import os, socket, struct, sys, time
gw = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
hdr = lambda qd: struct.pack("!HHHHHH", 0x4242, 0x0100, qd, 0, 0, 0)
bad = [
    b"", b"\x00", os.urandom(5), hdr(1),                       # empty, short, header only
    hdr(1) + b"\x03www",                                       # truncated name
    hdr(1) + b"\xc0\x0c\x00\x01\x00\x01",                      # pointer to itself
    hdr(1) + b"\xc0\x0e\xc0\x0c\x00\x01\x00\x01",              # two pointers in a loop
    hdr(40000) + b"\x00\x00\x01\x00\x01",                      # lying counts
    hdr(1) + b"\x3f" + b"a" * 63 + b"\x00" * 3000,            # oversized
    os.urandom(65000),
]
for i in range(300):
    for b in bad:
        u.sendto(b if b else b"\x00", (gw, 53))
    u.sendto(os.urandom(i % 700 + 1), (gw, 53))
# 200 TCP connections that never send, and 50 that send half a length.
conns = []
for i in range(250):
    try:
        c = socket.create_connection((gw, 53), timeout=2)
        if i >= 200:
            c.send(b"\x00")
        conns.append(c)
    except OSError:
        pass
time.sleep(1)
print(len(conns), "connections open")
PY
    # Still answering, over UDP and TCP, and nothing grew without bound.
    [ "$(q h1 "$C-a")" = "$ipa" ]
    [ "$(in_ns h1 dig +tcp +short +time=3 +tries=2 "@$GW1" "$C-a")" = "$ipa" ]
    kill -0 "$pid"
    rss1="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
    echo "flatnetd RSS ${rss0} kB -> ${rss1} kB" >&3
    [ "$rss1" -lt $((rss0 + 20000)) ]
    [ "$(ls "/proc/$pid/fd" | wc -l)" -lt 200 ]
}

@test "a bare name has one owner; the other host's container stays reachable as <name>.<node>" {
    p5 h2 run -d --name "$C-dup" --network fnet "$P5_IMAGE" sleep 600
    ip2="$(p5_ip h2 "$C-dup" fnet)"
    wait_for 5 resolves h1 "$C-dup" "$ip2"
    sleep 1.2
    pm h1 run -d --name "$C-dup" --network fnet "$PODMAN_IMAGE" sleep 600
    ip1="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "fnet").IPAddress}}' "$C-dup")"
    wait_for 5 test "$(q h1 "$C-dup.h1.flatnet")" = "$ip1"
    # First come owns the bare name, on both hosts; both stay reachable by node.
    [ "$(q h1 "$C-dup")" = "$ip2" ]
    [ "$(q h2 "$C-dup" A "$GW2")" = "$ip2" ]
    [ "$(q h1 "$C-dup.h1.flatnet")" = "$ip1" ]
    [ "$(q h1 "$C-dup.h2.flatnet")" = "$ip2" ]
    # The owner goes: the name passes to the other one.
    p5 h2 rm -f -t 0 "$C-dup"
    wait_for 5 resolves h1 "$C-dup" "$ip1"
}
