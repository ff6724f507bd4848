# Helpers for the WireGuard data-plane suites; load after `helpers`.
#
# Topology: a "lan" namespace holding a bridge (192.168.77.254/24) that every
# host joins through a veth (its end is "lan0" with 192.168.77.N/24). All
# addresses live only inside namespaces the test created.

WG_PORT=51820

# wg_lan_create: the shared LAN namespace and its bridge.
wg_lan_create() { bridge_ns lan 192.168.77.254/24; }

# wg_lan_join HOST LANIP: plug an existing host namespace into the LAN.
wg_lan_join() {
    local host="$1" ip="$2"
    in_ns lan ip link add "l-$host" type veth peer name lan0 netns "$(ns "$host")"
    in_ns lan ip link set "l-$host" master br0 up
    in_ns "$host" ip addr add "$ip/24" dev lan0
    in_ns "$host" ip link set lan0 up
    echo "$ip" > "$FN_TMP/$host/lan_ip"
}

# wg_host_create NAME SUBNET LANIP: a host running the data plane, on the LAN.
# $WG_HOST_EXTRA, when set, goes into its config too.
wg_host_create() {
    local name="$1" subnet="$2" ip="$3"
    [ -e "/run/netns/$(ns lan)" ] || wg_lan_create
    host_create "$name" "$subnet" "${WG_HOST_EXTRA:-}
[wireguard]
listen_port = $WG_PORT
keepalive_secs = 25"
    wg_lan_join "$name" "$ip"
}

# wg_peer_block NAME KEY ENDPOINT SUBNET: a [[peers]] table.
wg_peer_block() {
    printf '\n[[peers]]\nname = "%s"\npublic_key = "%s"\nendpoint = "%s"\nsubnet = "%s"\n' "$@"
}

# wg_add_peer HOST PEER: append PEER (a running host) to HOST's config.
wg_add_peer() {
    local host="$1" peer="$2" key subnet
    key="$(ctl "$peer" pubkey)"
    subnet="$(ctl "$peer" status --json | jq -r .network.subnet)"
    wg_peer_block "$peer" "$key" "$(cat "$FN_TMP/$peer/lan_ip"):$WG_PORT" "$subnet" \
        >> "$FN_TMP/$host/flatnetd.toml"
}

# wg_reload HOST N: SIGHUP flatnetd and wait until it reports N peers.
wg_reload() {
    local host="$1" want="$2" i
    kill -HUP "$(cat "$FN_TMP/$host/flatnetd.pid")"
    for i in $(seq 100); do
        [ "$(ctl "$host" status --json | jq '.peers | length')" = "$want" ] && return 0
        sleep 0.05
    done
    echo "$host did not pick up $want peers" >&2
    cat "$FN_TMP/$host/flatnetd.log" >&2
    return 1
}

# wg_pair [LAN_MTU]: hosts h1 (10.87.1.0/24, .1) and h2 (10.87.2.0/24, .2)
# peered with each other, with containers h1-a and h2-b; LAN_MTU, when
# given, is set on both LAN links (both ends) before the hosts peer.
wg_pair() {
    wg_host_create h1 10.87.1.0/24 192.168.77.1
    wg_host_create h2 10.87.2.0/24 192.168.77.2
    if [ -n "${1:-}" ]; then
        wg_lan_mtu h1 "$1"
        wg_lan_mtu h2 "$1"
    fi
    wg_add_peer h1 h2
    wg_add_peer h2 h1
    wg_reload h1 1
    wg_reload h2 1
    container_add h1 a
    container_add h2 b
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
}

# wg_lan_mtu HOST MTU: the MTU of HOST's LAN link, both ends.
wg_lan_mtu() {
    in_ns "$1" ip link set lan0 mtu "$2"
    in_ns lan ip link set "l-$1" mtu "$2"
}

# wg_wait_ping NS IP [SECONDS]: until one ping gets through.
wg_wait_ping() {
    local n="$1" ip="$2" secs="${3:-10}" i
    for i in $(seq "$secs"); do
        in_ns "$n" ping -c1 -W1 "$ip" >/dev/null 2>&1 && return 0
    done
    echo "no ping from $n to $ip" >&2
    return 1
}

# wg_peer HOST PEER FIELD: a field of PEER in HOST's status.
wg_peer() {
    ctl "$1" status --json | jq -r --arg p "$2" ".peers[] | select(.name == \$p) | .$3"
}

# wg_wait_peer HOST PEER FIELD WANT [SECONDS]: until PEER's FIELD in HOST's
# status is WANT; prints HOST's status and log on failure.
wg_wait_peer() {
    local host="$1" peer="$2" field="$3" want="$4" secs="${5:-10}" i
    for i in $(seq $((secs * 10))); do
        [ "$(wg_peer "$host" "$peer" "$field")" = "$want" ] && return 0
        sleep 0.1
    done
    echo "$host: $field of $peer is '$(wg_peer "$host" "$peer" "$field")', not $want, after ${secs}s" >&2
    ctl "$host" status >&2
    tail -20 "$FN_TMP/$host/flatnetd.log" >&2
    return 1
}

# wg_capture_start NS IFACE FILE [FILTER]: tcpdump in the background, ready
# when it returns; its pid is in FILE.pid.
wg_capture_start() {
    local n="$1" ifc="$2" file="$3" filter="${4-udp}" i
    ip netns exec "$(ns "$n")" tcpdump -Z root --immediate-mode -i "$ifc" -U -s 0 -w "$file" $filter \
        2>"$file.log" &
    echo $! > "$file.pid"
    for i in $(seq 100); do
        grep -q "listening on" "$file.log" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# wg_capture_stop FILE: stop the capture writing FILE, flushing it.
wg_capture_stop() {
    local pid
    pid="$(cat "$1.pid")"
    sleep 0.3
    kill -INT "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
}

# wg_udp_payloads PCAP: print, hex-encoded one per line, the UDP payloads
# of an Ethernet pcap (stdlib python, no scapy).
wg_udp_payloads() {
    python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off = 24
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    frame = data[off + 16: off + 16 + incl]
    off += 16 + incl
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        continue
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17:
        continue
    udp = frame[14 + ihl:]
    print(udp[8:].hex())
PY
}

# wg_send_udp NS IP PORT HEX...: send each hex payload as one datagram.
wg_send_udp() {
    local n="$1" ip="$2" port="$3"; shift 3
    in_ns "$n" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for h in sys.argv[3:]:
    s.sendto(bytes.fromhex(h), (sys.argv[1], int(sys.argv[2])))
' "$ip" "$port" "$@"
}

# sink_sha NS PORT OUT: accept one connection, write the sha256 of all it
# received to OUT.
sink_sha() {
    ip netns exec "$(ns "$1")" python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b)
open(sys.argv[2], "w").write(h.hexdigest())
' "$2" "$3" >/dev/null 2>&1 &
    echo $! > "$3.pid"
    wait_listen "$1" "$2"
}

# send_file NS IP PORT FILE: connect and send FILE (python3 sendfile).
send_file() {
    in_ns "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
with open(sys.argv[3], "rb") as f:
    s.sendfile(f)
s.close()' "$2" "$3" "$4"
}

# bulk_both NS_A IP_A NS_B IP_B MB: MB of random bytes from A to B and back,
# each arriving intact (sha256 compared).
bulk_both() {
    local a="$1" ipa="$2" b="$3" ipb="$4" mb="$5" want i dir
    head -c "$((mb * 1000000))" /dev/urandom > "$FN_TMP/blob"
    want="$(sha256sum < "$FN_TMP/blob" | cut -d' ' -f1)"
    for dir in "$a $b $ipb" "$b $a $ipa"; do
        set -- $dir
        rm -f "$FN_TMP/got-$2"
        sink_sha "$2" 9100 "$FN_TMP/got-$2" || return 1
        timeout 60 bash -c "$(declare -f in_ns ns send_file); FN_PREFIX=$FN_PREFIX; send_file $1 $3 9100 $FN_TMP/blob" || {
            echo "sending $mb MB from $1 to $3 did not finish in 60 s" >&2
            kill "$(cat "$FN_TMP/got-$2.pid")" 2>/dev/null
            return 1
        }
        for i in $(seq 100); do [ -s "$FN_TMP/got-$2" ] && break; sleep 0.05; done
        [ "$(cat "$FN_TMP/got-$2")" = "$want" ] || { echo "$1 -> $2: data differs" >&2; return 1; }
    done
}

# cpu_prefix NS: a command prefix that places a process run in NS (iperf3,
# ping) on a CPU; none by default (wireguard-bench.sh PIN_HOSTS sets one).
cpu_prefix() { :; }

# wg_iperf NS_SERVER NS_CLIENT IP [CLIENT_OPTIONS...]: Gbit/s received, TCP,
# ${SECS:-5} seconds (benchmarks; iperf3; `-R` measures server -> client).
wg_iperf() {
    local srv="$1" cli="$2" ip="$3" pid bps
    shift 3
    # shellcheck disable=SC2046 # cpu_prefix prints a command prefix, or nothing
    ip netns exec "$(ns "$srv")" $(cpu_prefix "$srv") iperf3 -s -1 -B "$ip" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
        in_ns "$srv" ss -ltn 2>/dev/null | grep -q ":5201 " && break
        sleep 0.05
    done
    # shellcheck disable=SC2046
    bps="$(in_ns "$cli" $(cpu_prefix "$cli") iperf3 -c "$ip" -t "${SECS:-5}" "$@" -J | jq '.end.sum_received.bits_per_second')"
    wait "$pid" 2>/dev/null || true
    awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }'
}
