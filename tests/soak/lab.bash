# The soak lab, built from the integration suites' helpers (sourced by
# soak.py before each command it runs, with FN_PREFIX and FN_TMP fixed).
#
#   inet (the "internet", 203.0.113.0/24) ── Lighthouse 203.0.113.1:7871
#    ├─ r1 cone NAT ── h1 (gateway route, catalog, state dir on a 32 MB tmpfs)
#    │   └─ gateway (nginx + gateway-lua) on r1, office 192.168.200.2 behind it
#    ├─ r2 cone NAT ── h2 (the "web" container: HTTP :80, TCP :7000)
#    └─ r3 symmetric NAT ── h3 (relayed to h1 and h2)
#
# Containers: h1-a, h2-b ("web"), h3-c through the real CNI plugin (TCP
# responders on :7000, line echo on :7001), and Podman 5 containers created and removed on h1
# (`podman network create --driver flatnet`).

# soak_build: the whole lab, serving.
soak_build() {
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    nat_router_create 3 random
    # h1's state dir on a small tmpfs: the "full disk" fault fills it.
    mkdir -p "$FN_TMP/h1/state"
    mount -t tmpfs -o size=32m,mode=0700 soak-h1-state "$FN_TMP/h1/state"
    nat_host_create 1 "catalog_listen = \"0.0.0.0:7070\"
forward_from = [\"192.168.1.254/32\"]
reconcile_secs = 2
lease_grace_secs = 10"
    nat_host_create 2 "catalog_listen = \"0.0.0.0:7070\"
reconcile_secs = 2
lease_grace_secs = 10"
    nat_host_create 3 "reconcile_secs = 2
lease_grace_secs = 10"
    nat_wait_path h1 h2 direct 20
    nat_wait_peers h3 2 20
    soak_containers h1 a
    soak_containers h2 b
    soak_containers h3 c
    GW2="$(ctl h2 status --json | jq -r .network.gateway)"
    gw_start 1 "http://$GW2:7070/v1/catalog"
    gw_wait_route web 30
    p5_setup
    p5_net h1 fnet
}

# soak_containers HOST NAME: the CNI container HOST-NAME with its servers.
# b is "web" (HTTP on :80, published as 8080); every one answers TCP :7000.
soak_containers() {
    local host="$1" name="$2" cname="$2" pm=""
    if [ "$name" = b ]; then
        cname=web
        pm='"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
    fi
    ip netns add "$(ns "$host-$name")"
    netconf "$host" 1.0.0 "$pm" | cni "$host" ADD "cid-$name" "/run/netns/$(ns "$host-$name")" eth0 \
        "IgnoreUnknown=1;K8S_POD_NAME=$cname" > "$FN_TMP/$host/$name.json"
    serve_tcp "$host-$name" 7000
    serve_echo "$host-$name" 7001
    if [ "$name" = b ]; then
        mkdir -p "$FN_TMP/www"
        echo "soak web page" > "$FN_TMP/www/index.html"
        # Not `python3 -m http.server`: it looks its own address up in DNS
        # between bind() and listen(), refusing connections for the 10 s a
        # lookup takes in a namespace without a resolver.
        ip netns exec "$(ns "$host-$name")" python3 -c '
import functools, http.server, socketserver, sys
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst (or a busy moment
    # of this process) drops SYNs that real web servers (511 and more)
    # would queue; the soak measures Flatnet, not that.
    request_queue_size = 128
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "web", 80
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
Server((sys.argv[1], 80), functools.partial(Quiet, directory=sys.argv[2])).serve_forever()
' "$(container_ip "$host" "$name")" "$FN_TMP/www" >/dev/null 2>&1 &
        disown $! 2>/dev/null || true
        wait_listen "$host-$name" 80
    fi
}

# serve_echo NS PORT: echoes every line back, any number of connections
# at once (the long-lived TCP streams of the soak).
serve_echo() {
    ip netns exec "$(ns "$1")" python3 -c '
import socket, sys, threading
def serve(c):
    with c, c.makefile("rwb", buffering=0) as f:
        for line in f:
            f.write(line)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
' "$2" >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
    wait_listen "$1" "$2"
}

# soak_reboot N: host hN loses power: its flatnetd and containers die with
# nothing torn down; the namespaces come back empty, flatnetd restarts from
# its state dir, and the runtime starts the containers again (CNI ADD with
# the same container IDs, as Podman does for --restart=always).
soak_reboot() {
    local n="$1" h="h$1" c
    host_kill "$h" KILL
    for c in $(ip netns list | awk '{print $1}' | grep "^$(ns "$h")-" || true); do
        netns_power_off "$c"
    done
    in_ns "r$n" ip link del lan0
    netns_power_off "$(ns "$h")"
    nat_host_netns "$n"
    host_start "$h"
    for c in a b c; do
        [ -f "$FN_TMP/$h/$c.json" ] && soak_containers "$h" "$c"
    done
    return 0
}

# soak_renumber N ADDR: host hN's LAN address becomes 192.168.N.ADDR.
soak_renumber() {
    local n="$1" h="h$1" old
    old="$(in_ns "$h" ip -4 -o addr show dev lan0 | awk '{print $4}')"
    in_ns "$h" ip addr del "$old" dev lan0
    in_ns "$h" ip addr add "192.168.$n.$2/24" dev lan0
    in_ns "$h" ip route replace default via "192.168.$n.254"
}

# soak_netem on|off: loss and delay on every router's internet link, with
# tc netem where the kernel has it (prints what it used). Kernels without
# sch_netem get the same loss from nftables on the internet bridge and a
# tbf bottleneck (50 Mbit/s, up to 100 ms of queue) for the delay.
soak_netem() {
    local n
    if [ "$1" = off ]; then
        for n in 1 2 3; do in_ns inet tc qdisc del dev "w-r$n" root 2>/dev/null || true; done
        in_ns inet nft delete table bridge soakloss 2>/dev/null || true
        return 0
    fi
    if in_ns inet tc qdisc replace dev w-r1 root netem loss 5% delay 40ms 10ms 2>/dev/null; then
        for n in 2 3; do in_ns inet tc qdisc replace dev "w-r$n" root netem loss 5% delay 40ms 10ms; done
        echo "netem: 5% loss, 40 +- 10 ms"
        return 0
    fi
    in_ns inet nft -f - <<'NFT'
table bridge soakloss {
    chain lossy { type filter hook forward priority 0; policy accept; numgen random mod 100 < 5 drop; }
}
NFT
    for n in 1 2 3; do
        in_ns inet tc qdisc replace dev "w-r$n" root tbf rate 50mbit burst 64kb latency 100ms
    done
    echo "no netem here: 5% loss (nft), 50 Mbit/s tbf"
}

# soak_disk full|free: fill h1's state dir to the last byte, or free it.
soak_disk() {
    if [ "$1" = full ]; then
        dd if=/dev/zero of="$FN_TMP/h1/state/.soak-filler" bs=1M 2>/dev/null || true
    else
        rm -f "$FN_TMP/h1/state/.soak-filler"
    fi
}

# soak_teardown: everything the lab made.
soak_teardown() {
    gw_stop
    p5_teardown
    umount "$FN_TMP/h1/state" 2>/dev/null || true
    fn_teardown
}
