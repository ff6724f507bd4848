#!/usr/bin/env bats
# WSL2 hosts, first-class (issue 29): a WSL2 VM behind its Windows host,
# flatnetd started without systemd, the gateway on the Windows host keeping
# its route to the Flatnet by itself across a WSL restart that gives the VM
# a new address. Topology and what the lab plays for Windows:
# helpers-wsl.bash.

load helpers
load helpers-wg
load helpers-nat
load helpers-gw
load podman5
load helpers-wsl

setup_file() { p5_setup_file; }
teardown_file() { p5_teardown_file; }
setup() {
    fn_setup
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    wsl_vm_create
    nat_host_create 2 "catalog_listen = \"0.0.0.0:$WSL_CATALOG_PORT\""
    nat_wait_path h1 h2 direct 20
    wsl_relay 192.168.1.1
}
teardown() {
    gw_stop
    [ -f "$FN_TMP/relay.pid" ] && kill "$(cat "$FN_TMP/relay.pid")" 2>/dev/null
    p5_teardown
    fn_teardown
}

# keeper_gateway: the gateway on r1 with the route keeper, reading the
# Flatnet's catalog through the relay as the Windows gateway does.
keeper_gateway() {
    GW_EXTRA="route_url = http://127.0.0.1:$WSL_CATALOG_PORT/v1/route
route_command = ip route replace \$cidr via \$via
route_interval = 1
metrics_listen = 127.0.0.1:9589" gw_start 1 "http://127.0.0.1:$WSL_CATALOG_PORT/v1/catalog/all"
}

@test "flatnetd without systemd: --detach returns once it serves, logs to a file, a second start is refused" {
    # wsl_vm_create started it with --detach; it said so and serves.
    grep -q "^flatnetd started (pid [0-9]*); its log is $FN_TMP/h1/flatnetd.log" "$FN_TMP/h1/detach.out"
    kill -0 "$(cat "$FN_TMP/h1/state/flatnetd.pid")"
    grep -q "flatnetd ready" "$FN_TMP/h1/flatnetd.log"
    # Not a child of this shell's session: it left the terminal's.
    [ "$(ps -o sid= -p "$(cat "$FN_TMP/h1/state/flatnetd.pid")" | tr -d ' ')" = "$(cat "$FN_TMP/h1/state/flatnetd.pid")" ]
    run in_ns h1 "$FLATNETD" --config "$FN_TMP/h1/flatnetd.toml" --detach --log-file "$FN_TMP/h1/flatnetd.log"
    echo "$output"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == "flatnetd: flatnetd is already running (pid $(cat "$FN_TMP/h1/state/flatnetd.pid"))"* ]]
    # Podman 5 containers on it, across the tunnel.
    p5_setup
    p5_net h1 fnet
    p5 h1 run -d --name "$C-one" --network fnet "$P5_IMAGE" httpd -f -p 80 -h /www >/dev/null
    container_add h2 cli
    one="$(p5_ip h1 "$C-one" fnet)"
    wait_for 10 in_ns h2-cli curl -sf --max-time 2 "http://$one/"
}

@test "WSL restart: the gateway's route follows the VM's new address; the office opens both services within 15 s" {
    p5_setup
    p5_net h1 fnet
    p5 h1 run -d --name one --restart=always --network fnet -p 8081:80 "$P5_IMAGE" \
        sh -c 'mkdir -p /tmp/w && echo "one page" > /tmp/w/index.html && httpd -f -p 80 -h /tmp/w' >/dev/null
    web_page h2 two 8082
    keeper_gateway
    gw_wait_route one 30
    gw_wait_route two 30
    # A Windows reboot: the route is gone, and the gateway starting again puts it back.
    gw_stop
    in_ns r1 ip route del 10.87.0.0/16
    wait_for 5 bash -c "! ip netns exec $(ns r1) ss -Hltn 'sport = :80' | grep -q ."
    in_ns r1 nginx -p "$FN_TMP/gw" -c nginx.conf
    wait_for 10 gw_route_is 192.168.1.1
    run chromium_office keep --dump-dom "http://one.$GW_DOMAIN/"
    [[ "$output" == *"one page"* ]]

    wsl_restart 7
    t0=$SECONDS
    wait_for 15 office_get one || {
        gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json" | jq -c '.routes[] | [.host, .targets]'
        p5 h1 ps -a; in_ns r1 ip route; ctl h1 status; return 1; }
    wait_for 15 office_get two
    took=$((SECONDS - t0))
    echo "# both services back through the gateway ${took} s after the VM came back" >&3
    [ "$took" -le 15 ]
    [ "$(office_get one)" = "one page" ]
    [ "$(office_get two)" = "two page" ]
    # The route points at the new address and at nothing else.
    gw_route_is 192.168.1.7
    [ "$(in_ns r1 ip -4 route show | grep -c '^10\.87\.')" -eq 1 ]
    grep -q "route keeper: 10.87.0.0/16 now via 192.168.1.7 (was 192.168.1.1)" "$FN_TMP/gw/logs/error.log"
    in_ns r1 curl -sf http://127.0.0.1:9589/metrics | grep -q 'flatnet_gateway_route_via{via="192.168.1.7"} 1'
    run chromium_office restart --dump-dom "http://two.$GW_DOMAIN/"
    [[ "$output" == *"two page"* ]]
}

# answer BODY: the relay's port answers every request with BODY (HTTP 200),
# or with nothing at all for BODY "-" (the port is closed).
answer() {
    [ -f "$FN_TMP/relay.pid" ] && kill "$(cat "$FN_TMP/relay.pid")" 2>/dev/null
    sleep 0.2
    [ "$1" = - ] && return 0
    ip netns exec "$(ns r1)" python3 -c '
import http.server, sys
body = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
' "$1" "$WSL_CATALOG_PORT" >/dev/null 2>&1 &
    echo $! > "$FN_TMP/relay.pid"
    disown $! 2>/dev/null || true
    wait_for 5 in_ns r1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$WSL_CATALOG_PORT"
}

refused() { in_ns r1 curl -sf http://127.0.0.1:9589/metrics | awk '/route_updates_total\{result="refused"\}/ {print $2}'; }

@test "wrong, garbled or missing answers about the VM's address never change the route" {
    web_page h2 two 8082
    keeper_gateway
    gw_wait_route two 30
    wait_for 10 gw_route_is 192.168.1.1
    for body in '{"cidr":"0.0.0.0/0","via":"192.168.1.66"}' \
                '{"cidr":"192.168.0.0/16","via":"192.168.1.66"}' \
                '{"cidr":"10.87.0.0/16","via":"10.87.2.1"}' \
                '{"cidr":"10.87.0.0/16","via":"192.168.1.66; ip route flush all"}' \
                '{"cidr":"10.87.0.0/16"}' \
                'garbage' \
                -; do
        before="$(refused)"
        answer "$body"
        for _ in $(seq 50); do [ "$(refused)" -gt "${before:-0}" ] && break; sleep 0.1; done
        [ "$(refused)" -gt "${before:-0}" ] || {
            echo "answer $body: not refused; metrics:"; in_ns r1 curl -s http://127.0.0.1:9589/metrics | grep route
            gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json" | jq .route; return 1; }
        gw_route_is 192.168.1.1
        [ "$(in_ns r1 ip -4 route show | grep -c '^10\.87\.')" -eq 1 ]
        ! in_ns r1 ip route show | grep -q 192.168.1.66
    done
    # Each refusal is logged (once per kind) and shown on the status page.
    grep -q "names the range 0.0.0.0/0, not flatnet_cidr" "$FN_TMP/gw/logs/error.log"
    grep -q "next hop 10.87.2.1 is inside the Flatnet" "$FN_TMP/gw/logs/error.log"
    grep -q "the route via 192.168.1.1 stays" "$FN_TMP/gw/logs/error.log"
    gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json" | jq -e '.route.error | length > 0'
    # The office still reaches the Flatnet all along (its routes are the last
    # good catalog's: the same relay is gone too).
    office_get two | grep -q "two page"
}

@test "mirrored mode: the gateway shares the VM's address, and the keeper adds no route" {
    web_page h2 two 8082
    # The gateway in the VM's own network stack, asking flatnetd at the
    # VM's (= Windows') LAN address.
    mkdir -p "$FN_TMP/gw/logs" "$FN_TMP/gw/temp"
    printf '%s\n' "domain = $GW_DOMAIN" "flatnet_cidr = 10.87.0.0/16" "user = root" "listen = 80" \
        "refresh_interval = 1" "error_log = logs/error.log" "error_log_level = info" "allow = all" \
        "catalog_url = http://192.168.1.1:$WSL_CATALOG_PORT/v1/catalog/all" \
        "route_url = http://192.168.1.1:$WSL_CATALOG_PORT/v1/route" \
        "route_command = ip route replace \$cidr via \$via" "route_interval = 1" > "$FN_TMP/gw/gateway.conf"
    (cd "$FN_TMP/gw" && lua5.1 "$GW_RENDER" gateway.conf -o nginx.conf)
    in_ns h1 nginx -p "$FN_TMP/gw" -c nginx.conf
    wait_for 15 in_ns h1 curl -sf --max-time 2 --connect-to "::192.168.1.1:" "http://two.$GW_DOMAIN/"
    sleep 2
    # flatnetd's own routes only: the Flatnet on flatnet0, nothing "via".
    in_ns h1 ip -4 route show 10.87.0.0/16 | grep -q "dev flatnet0"
    ! in_ns h1 ip -4 route show | grep -q "^10\.87\..* via "
    [ "$(in_ns h1 curl -sf "http://127.0.0.1/_flatnet/status?format=json" -H "Host: gateway.$GW_DOMAIN" | jq -r '.route.ok')" = 0 ]
    ! grep -q "now via" "$FN_TMP/gw/logs/error.log"
    # And the LAN (the office behind r1) opens it at the shared address.
    ip netns add "$(ns office)"
    in_ns r1 ip link add office0 type veth peer name eth0 netns "$(ns office)"
    in_ns r1 ip addr add 192.168.200.1/24 dev office0
    in_ns r1 ip link set office0 up
    in_ns office ip addr add 192.168.200.2/24 dev eth0
    in_ns office ip link set eth0 up
    in_ns office ip route add default via 192.168.200.1
    [ "$(in_ns office curl -sf --max-time 5 --connect-to "::192.168.1.1:" "http://two.$GW_DOMAIN/")" = "two page" ]
}

# freeze NETNS...: every process in these namespaces stopped at once, as a
# sleeping laptop stops its VM (cgroup v1 freezer); thaw undoes it.
freeze() {
    local cg="/sys/fs/cgroup/freezer/$FN_PREFIX-sleep" n p
    mkdir -p "$cg"
    for n in "$@"; do
        for p in $(ip netns pids "$(ns "$n")"); do echo "$p" > "$cg/tasks"; done
    done
    echo FROZEN > "$cg/freezer.state"
    wait_for 5 grep -qx FROZEN "$cg/freezer.state"
}
thaw() {
    local cg="/sys/fs/cgroup/freezer/$FN_PREFIX-sleep"
    echo THAWED > "$cg/freezer.state"
    for p in $(cat "$cg/tasks"); do echo "$p" > /sys/fs/cgroup/freezer/tasks; done
    rmdir "$cg"
}

@test "sleep: a VM frozen for 3 minutes behind a NAT that forgot it is back on a direct path with names within 5 s" {
    # The Windows NAT forgets idle UDP mappings after 30 s.
    in_ns r1 sysctl -qw net.netfilter.nf_conntrack_udp_timeout=30 net.netfilter.nf_conntrack_udp_timeout_stream=30
    web_page h1 one 8081
    container_add h2 cli
    one="$(container_ip h1 one)"
    gw2="$(ctl h2 status --json | jq -r .network.gateway)"
    wait_for 10 in_ns h2-cli curl -sf --max-time 2 "http://$one/"
    leases="$(ctl h1 status --json | jq -c '[.leases[].ip]')"
    freeze h1 h1-one
    sleep 180
    # Meanwhile r1 forgot the VM's mapping.
    ! in_ns r1 conntrack -L -p udp 2>/dev/null | grep -q "sport=$WG_PORT "
    thaw
    t0=$(date +%s%N)
    wait_for 5 in_ns h2-cli curl -sf --max-time 1 "http://$one/"
    path_direct() { ctl h2 status --json | jq -e '.peers[] | select(.name == "h1") | .path == "direct"' >/dev/null; }
    wait_for 5 path_direct
    names() { [ "$(in_ns h2 dig +short +time=1 +tries=1 "@$gw2" one.flatnet)" = "$one" ]; }
    wait_for 5 names
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "# after 180 s frozen: page, direct path and names back in ${ms} ms" >&3
    [ "$ms" -le 5000 ]
    # The Lighthouse sees it online, with its one subnet; its leases are the same.
    lh nodes list --json | jq -e '[.[] | select(.name == "h1" and .online == true)] | length == 1'
    [ "$(lh nodes list --json | jq '[.[].subnet] | unique | length')" -eq 2 ]
    [ "$(ctl h1 status --json | jq -c '[.leases[].ip]')" = "$leases" ]
}

# vm_restart_at CLOCK: flatnetd on the VM killed and started again with its
# wall clock at CLOCK (libfaketime offsets: "-60s", "+5h"; "" = the real
# one). The monotonic clock stays real, as on a VM. libfaketime is preloaded
# directly: the `faketime` wrapper waits for a daemon that detaches.
vm_restart_at() {
    local lib
    host_kill h1 KILL
    if [ -n "$1" ]; then
        lib="$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 | head -1)"
        in_ns h1 env LD_PRELOAD="$lib" FAKETIME="$1" FAKETIME_DONT_FAKE_MONOTONIC=1 \
            "$FLATNETD" --config "$FN_TMP/h1/flatnetd.toml" --detach --log-file "$FN_TMP/h1/flatnetd.log" >/dev/null
    else
        in_ns h1 "$FLATNETD" --config "$FN_TMP/h1/flatnetd.toml" --detach --log-file "$FN_TMP/h1/flatnetd.log" >/dev/null
    fi
    cp "$FN_TMP/h1/state/flatnetd.pid" "$FN_TMP/h1/flatnetd.pid"
}

# back_within SECONDS: h1's container reaches h2's over the tunnel again.
back_within() {
    local t0=$SECONDS
    wait_for "$1" in_ns h1-a ping -c1 -W1 "$(container_ip h2 b)"
    echo "# back in $((SECONDS - t0)) s" >&3
}

@test "wall clock: a VM restarting with its clock behind, or after an hours-long jump was corrected, is taken back at once" {
    container_add h1 a
    container_add h2 b
    wait_for 10 in_ns h1-a ping -c1 -W1 "$(container_ip h2 b)"
    # WSL2's clock lags after a long sleep until it syncs: flatnetd restarts
    # a minute in the past. Its handshakes carry older stamps than h2 last
    # saw, which WireGuard refuses: h2 answers with a handshake of its own.
    vm_restart_at -60s
    back_within 5
    grep -q "old timestamp" "$FN_TMP/h2/flatnetd.log"
    # A clock five hours ahead, then corrected: the same, hours of stamps.
    vm_restart_at +5h
    back_within 5
    vm_restart_at ""
    back_within 5
    # The Lighthouse saw one node all along: same id, same subnet.
    [ "$(lh nodes list --json | jq '[.[] | select(.name == "h1")] | length')" -eq 1 ]
    ctl h1 status --json | jq -e '.lighthouse.state == "connected"'
}
