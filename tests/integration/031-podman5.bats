#!/usr/bin/env bats
# Real Podman 5 (Debian 13: podman 5.4, netavark 1.14) with
# `podman network create --driver flatnet`, the main path for Podman 5 users.
# The bridge driver on the same Podman is the reference for what users
# expect (names aside, which Flatnet DNS covers): `-p`, reload, --internal,
# --ip, --mac-address, several networks, pods, restart, prune.
#
# Podman runs in a Debian 13 root (scripts/podman5.sh, built once and cached
# under /var/cache/flatnet); flatnetd runs in each test host's namespace.

load helpers
load podman5
load podman
load helpers-wg

setup_file() { p5_setup_file; }
teardown_file() { p5_teardown_file; }

setup() {
    fn_setup
    # Reconcile every second, reclaim after 3 s: the lease tests stay short.
    host_create h1 10.87.6.0/24 "reconcile_secs = 1
lease_grace_secs = 3"
    p5_setup
}
teardown() { p5_teardown; podman_teardown; fn_teardown; }

# lan_client: a "LAN" namespace 192.168.66.2 wired to h1 (192.168.66.1),
# with a route to the Flatnet through h1, plus a web server outside the
# Flatnet (192.168.66.2:8000) for egress checks.
lan_client() {
    ip netns add "$(ns lan)"
    in_ns lan ip link set lo up
    ip link add "$FN_PREFIX-l0" netns "$(ns h1)" type veth peer name lan0 netns "$(ns lan)"
    in_ns h1 ip addr add 192.168.66.1/24 dev "$FN_PREFIX-l0"
    in_ns h1 ip link set "$FN_PREFIX-l0" up
    in_ns lan ip addr add 192.168.66.2/24 dev lan0
    in_ns lan ip link set lan0 up
    in_ns lan ip route add 10.87.0.0/16 via 192.168.66.1
    mkdir -p "$FN_TMP/lanwww"; echo "outside page" > "$FN_TMP/lanwww/index.html"
    ip netns exec "$(ns lan)" busybox httpd -p 8000 -h "$FN_TMP/lanwww"
}

# get NS URL: body of URL fetched from a namespace, 5 s at most.
get() { in_ns "$1" timeout 5 busybox wget -qO- "$2"; }
# cget HOST CONTAINER URL: the same from inside a container.
cget() { p5 "$1" exec "$2" timeout 5 wget -qO- "$3"; }

@test "network create, inspect and rm; bad options are clear errors" {
    p5_net h1 fnet
    run p5 h1 network inspect fnet
    [ "$(echo "$output" | jq -r '.[0].driver')" = "flatnet" ]
    [ "$(echo "$output" | jq -r '.[0].ipam_options.driver')" = "none" ]
    run p5 h1 network create --driver flatnet -o colour=blue bad
    [ "$status" -ne 0 ]
    [[ "$output" == *'unknown option "colour"; flatnet understands: socket, routes, mtu'* ]]
    run p5 h1 network create --driver flatnet --subnet 10.99.0.0/24 bad
    [ "$status" -ne 0 ]
    [[ "$output" == *"do not pass --subnet"* ]]
    run p5 h1 network ls --format '{{.Name}}'
    [[ "$output" != *bad* ]]
    p5 h1 network rm fnet
    run p5 h1 network exists fnet
    [ "$status" -ne 0 ]
}

@test "two containers ping and talk TCP; podman rm releases the leases" {
    p5_net h1 fnet
    p5 h1 run -d --name "$C-web" --network fnet "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 run -d --name "$C-cli" --network fnet --cap-add NET_RAW "$P5_IMAGE" sleep 600
    web="$(p5_ip h1 "$C-web" fnet)"; cli="$(p5_ip h1 "$C-cli" fnet)"
    [[ "$web" == 10.87.6.* ]] && [ "$web" != "$cli" ]
    [ "$(lease_of h1 "$C-web")" = "$web" ]
    p5 h1 exec "$C-cli" ping -c2 -W2 "$web"
    [ "$(cget h1 "$C-cli" "http://$web/")" = "flatnet test page" ]
    p5 h1 rm -f -t 0 "$C-web" "$C-cli"
    [ "$(lease_count h1)" = "0" ]
    [ "$(in_ns h1 ip -o link show type veth | wc -l)" = "0" ]
}

@test "podman network reload keeps address, MAC, published port and traffic (as the bridge driver does)" {
    p5_net h1 fnet
    for net in podman fnet; do
        p5 h1 run -d --name "$C-$net" --network "$net" -p "$([ $net = fnet ] && echo 8081 || echo 8082):80" "$P5_IMAGE" httpd -f -p 80 -h /www
    done
    ip_before="$(p5_ip h1 "$C-fnet" fnet)"
    mac_before="$(p5 h1 inspect -f '{{(index .NetworkSettings.Networks "fnet").MacAddress}}' "$C-fnet")"
    p5 h1 network reload "$C-fnet" "$C-podman"
    [ "$(p5_ip h1 "$C-fnet" fnet)" = "$ip_before" ]
    [ "$(lease_of h1 "$C-fnet")" = "$ip_before" ]
    [ "$(p5 h1 exec "$C-fnet" cat /sys/class/net/eth0/address)" = "$mac_before" ]
    [ "$(get h1 "http://$ip_before/")" = "flatnet test page" ]
    [ "$(get h1 http://127.0.0.1:8081/)" = "flatnet test page" ]
    # The reference: the bridge network survives the same reload.
    [ "$(get h1 http://127.0.0.1:8082/)" = "flatnet test page" ]
}

@test "-p is reached from localhost, the LAN, another container and itself; ranges and UDP" {
    lan_client
    p5_net h1 fnet
    p5 h1 run -d --name "$C-web" --network fnet -p 8080:80 -p 127.0.0.1:8443:80 \
        -p 9000-9001:9000-9001 -p 5353:53/udp "$P5_IMAGE" \
        sh -c 'httpd -p 9001 -h /www; httpd -f -p 80 -h /www'
    p5 h1 run -d --name "$C-cli" --network fnet "$P5_IMAGE" sleep 600
    run p5 h1 ps --format '{{.Ports}}' --filter "name=$C-web"
    [[ "$output" == *"0.0.0.0:8080->80/tcp"* ]]
    [ "$(get h1 http://127.0.0.1:8080/)" = "flatnet test page" ]       # host localhost
    [ "$(get h1 http://192.168.66.1:8080/)" = "flatnet test page" ]    # host's LAN address
    [ "$(get lan http://192.168.66.1:8080/)" = "flatnet test page" ]   # a LAN machine
    [ "$(cget h1 "$C-cli" http://192.168.66.1:8080/)" = "flatnet test page" ]  # a container
    [ "$(cget h1 "$C-web" http://10.87.6.1:8080/)" = "flatnet test page" ]     # hairpin to itself
    [ "$(get h1 http://127.0.0.1:8443/)" = "flatnet test page" ]       # bound to 127.0.0.1 ...
    run get lan http://192.168.66.1:8443/                              # ... so not from the LAN
    [ "$status" -ne 0 ]
    [ "$(get lan http://192.168.66.1:9001/)" = "flatnet test page" ]   # the range's second port
    # busybox has no UDP server to answer; the UDP map is in the ruleset.
    in_ns h1 nft list chain ip flatnet published | grep -q "udp dport 5353 dnat to .*:53"
    # Gone with the container.
    p5 h1 rm -f -t 0 "$C-web"
    run get lan http://192.168.66.1:8080/
    [ "$status" -ne 0 ]
    ! in_ns h1 nft list table ip flatnet | grep -q "dport 8080" || false
}

@test "a host port another container publishes is refused clearly; the ruleset is repaired after a flush" {
    p5_net h1 fnet
    p5 h1 run -d --name "$C-a" --network fnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    run p5 h1 run -d --name "$C-b" --network fnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    [ "$status" -ne 0 ]
    [[ "$output" == *"8080"* ]]
    [ "$(lease_count h1)" = "1" ]
    # A firewall reload that flushes everything: flatnetd puts its table back.
    in_ns h1 nft flush ruleset
    wait_for 5 get h1 http://127.0.0.1:8080/
    [ "$(get h1 http://127.0.0.1:8080/)" = "flatnet test page" ]
}

@test "--internal: no default route and no egress, Flatnet traffic still flows" {
    lan_client
    p5_net h1 inet --internal
    p5_net h1 fnet
    [ "$(get lan http://192.168.66.2:8000/)" = "outside page" ]
    p5 h1 run -d --name "$C-open" --network fnet "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 run -d --name "$C-int" --network inet "$P5_IMAGE" sleep 600
    [ "$(cget h1 "$C-open" http://192.168.66.2:8000/)" = "outside page" ]   # the reference
    run p5 h1 exec "$C-int" ip route
    [[ "$output" != *default* ]]
    run cget h1 "$C-int" http://192.168.66.2:8000/
    [ "$status" -ne 0 ]
    # Even with a default route added by hand, the host drops its egress.
    p5 h1 exec --privileged "$C-int" ip route add default via 10.87.6.1
    run cget h1 "$C-int" http://192.168.66.2:8000/
    [ "$status" -ne 0 ]
    [ "$(cget h1 "$C-int" "http://$(p5_ip h1 "$C-open" fnet)/")" = "flatnet test page" ]
}

@test "--ip and --mac-address are honoured; an address outside the host's subnet is a clear error" {
    p5_net h1 fnet
    p5 h1 run -d --name "$C-a" --network fnet --ip 10.87.6.77 --mac-address 02:42:ac:11:00:77 "$P5_IMAGE" sleep 600
    [ "$(p5_ip h1 "$C-a" fnet)" = "10.87.6.77" ]
    [ "$(lease_of h1 "$C-a")" = "10.87.6.77" ]
    [ "$(p5 h1 exec "$C-a" cat /sys/class/net/eth0/address)" = "02:42:ac:11:00:77" ]
    run p5 h1 run -d --name "$C-b" --network fnet --ip 10.87.6.77 "$P5_IMAGE" sleep 600
    [ "$status" -ne 0 ]
    [[ "$output" == *"10.87.6.77 is already leased"* ]]
    run p5 h1 run -d --name "$C-c" --network fnet --ip 10.99.0.5 "$P5_IMAGE" sleep 600
    [ "$status" -ne 0 ]
    [[ "$output" == *"use one of 10.87.6.0/24"* ]]
    [[ "$output" != *"Some("* ]]
    [ "$(lease_count h1)" = "1" ]
}

@test "network connect and disconnect of a second flatnet network" {
    p5_net h1 fnet
    p5_net h1 fnet2 -o routes=flatnet
    p5 h1 run -d --name "$C-web" --network fnet "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 run -d --name "$C-cli" --network fnet "$P5_IMAGE" sleep 600
    p5 h1 network connect fnet2 "$C-web"
    second="$(p5_ip h1 "$C-web" fnet2)"
    [[ "$second" == 10.87.6.* ]] && [ "$second" != "$(p5_ip h1 "$C-web" fnet)" ]
    [ "$(cget h1 "$C-cli" "http://$second/")" = "flatnet test page" ]
    [ "$(ctl h1 status --json | jq --arg n "$C-web" '[.leases[] | select(.container_name == $n)] | length')" = "2" ]
    p5 h1 network disconnect fnet2 "$C-web"
    [ "$(ctl h1 status --json | jq --arg n "$C-web" '[.leases[] | select(.container_name == $n)] | length')" = "1" ]
    [ "$(cget h1 "$C-cli" "http://$(p5_ip h1 "$C-web" fnet)/")" = "flatnet test page" ]
}

@test "pods, podman restart and podman network prune" {
    p5_net h1 fnet
    p5_net h1 unused
    p5 h1 pod create --name "$C-pod" --network fnet
    p5 h1 run -d --pod "$C-pod" --name "$C-web" "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 run -d --pod "$C-pod" --name "$C-side" "$P5_IMAGE" sleep 600
    [ "$(lease_count h1)" = "1" ]                  # one netns, one lease: the pod's
    pod_ip="$(ctl h1 status --json | jq -r '.leases[0].ip')"
    [ "$(p5 h1 exec "$C-side" timeout 5 wget -qO- http://127.0.0.1/)" = "flatnet test page" ]
    [ "$(get h1 "http://$pod_ip/")" = "flatnet test page" ]
    p5 h1 run -d --name "$C-r" --network fnet "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 restart -t 0 "$C-r"
    [ "$(lease_count h1)" = "2" ]
    [ "$(get h1 "http://$(p5_ip h1 "$C-r" fnet)/")" = "flatnet test page" ]
    p5 h1 network prune -f
    run p5 h1 network exists unused
    [ "$status" -ne 0 ]
    p5 h1 network exists fnet
}

@test "flatnetd down during podman rm: the lease is reclaimed later; a live container's never is" {
    p5_net h1 fnet
    p5 h1 run -d --name "$C-live" --network fnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    p5 h1 run -d --name "$C-gone" --network fnet -p 8090:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    live="$(p5_ip h1 "$C-live" fnet)"
    host_kill h1
    run p5 h1 rm -f -t 0 "$C-gone"
    [[ "$output" == *"flatnetd is not running"* ]]
    [[ "$output" != *"os error"* ]]
    run p5 h1 container exists "$C-gone"
    [ "$status" -ne 0 ]                            # Podman removed it anyway
    host_start h1
    [ "$(lease_count h1)" = "2" ]                  # not yet: within the grace period
    wait_for 10 leases_are h1 1
    [ "$(lease_count h1)" = "1" ]
    [ "$(lease_of h1 "$C-live")" = "$live" ]
    grep -q "reclaimed the lease of a container that is gone" "$FN_TMP/h1/flatnetd.log"
    ! in_ns h1 nft list table ip flatnet | grep -q "dport 8090" || false
    # Many passes later the live container still has its lease and port.
    sleep 4
    [ "$(lease_of h1 "$C-live")" = "$live" ]
    [ "$(get h1 http://127.0.0.1:8080/)" = "flatnet test page" ]
}

@test "flatnetd restart with containers running leaves them working" {
    p5_net h1 fnet
    p5 h1 run -d --name "$C-web" --network fnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    web="$(p5_ip h1 "$C-web" fnet)"
    host_kill h1 KILL
    host_start h1
    [ "$(lease_of h1 "$C-web")" = "$web" ]
    [ "$(get h1 "http://$web/")" = "flatnet test page" ]
    [ "$(get h1 http://127.0.0.1:8080/)" = "flatnet test page" ]
    p5 h1 run -d --name "$C-new" --network fnet "$P5_IMAGE" sleep 600
    [ "$(p5_ip h1 "$C-new" fnet)" != "$web" ]
}

@test "rootless Podman gets an error that says what to do" {
    ip netns add "$(ns h1-a)"
    # netavark runs plugins inside the rootless user namespace: do the same.
    json='{"container_id":"cid","container_name":"a","port_mappings":[],
      "network":{"name":"fnet","id":"x","driver":"flatnet","options":{"socket":"'"$FN_TMP/h1/flatnetd.sock"'"}},
      "network_options":{"interface_name":"eth0"}}'
    run in_ns h1 unshare --user --map-root-user "$FLATNET" setup "/run/netns/$(ns h1-a)" <<< "$json"
    [ "$status" -eq 1 ]
    [[ "$(echo "$output" | jq -r .error)" == *"rootful Podman"*"sudo podman"* ]]
    [ "$(lease_count h1)" = "0" ]
}

@test "cross-host: a Podman 5 container and a Podman 4.3 (CNI) container reach each other; -p from the other host" {
    # h1 already runs flatnetd without WireGuard: restart it as a WireGuard host.
    host_kill h1
    rm -rf "$FN_TMP/h1"
    ip netns del "$(ns h1)"
    wg_host_create h1 10.87.6.0/24 192.168.77.1
    wg_host_create h2 10.87.7.0/24 192.168.77.2
    wg_add_peer h1 h2; wg_add_peer h2 h1
    wg_reload h1 1; wg_reload h2 1
    p5_net h1 fnet
    p5 h1 run -d --name "$C-p5" --network fnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www
    podman_setup
    podman_conflist h2
    pm h2 run -d --name "$C-p4" --network flatnet "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    ip5="$(p5_ip h1 "$C-p5" fnet)"
    ip4="$(pm h2 inspect -f '{{(index .NetworkSettings.Networks "flatnet").IPAddress}}' "$C-p4")"
    [[ "$ip5" == 10.87.6.* ]] && [[ "$ip4" == 10.87.7.* ]]
    wait_for 10 p5 h1 exec "$C-p5" timeout 2 wget -qO- "http://$ip4/"
    [ "$(p5 h1 exec "$C-p5" timeout 5 wget -qO- "http://$ip4/")" = "flatnet test page" ]
    [ "$(pm h2 exec "$C-p4" timeout 5 wget -qO- "http://$ip5/")" = "flatnet test page" ]
    # -p from another Flatnet host: through the tunnel to h1's Flatnet
    # address, and over the LAN to h1's LAN address.
    [ "$(get h2 http://10.87.6.1:8080/)" = "flatnet test page" ]
    [ "$(get h2 http://192.168.77.1:8080/)" = "flatnet test page" ]
}
