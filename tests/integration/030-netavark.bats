#!/usr/bin/env bats
# The netavark plugin mode, driven by a real netavark 1.14 (Debian 13's, in
# the Podman 5 root) without Podman in between.

load helpers
load podman5
load netavark

setup_file() { p5_setup_file; }
teardown_file() { p5_teardown_file; }

setup() {
    fn_setup
    host_create h1 10.87.3.0/24
    netavark_setup
}
teardown() { fn_teardown; }

@test "info reports the plugin API version" {
    run "$FLATNET" info
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | jq -r .api_version)" = "1.0.0" ]
}

@test "create keeps name/id/driver, validates options, and turns off Podman's IPAM" {
    run "$FLATNET" create <<< '{"name":"fnet","id":"abc","driver":"flatnet","ipv6_enabled":false,"internal":false,"dns_enabled":false,"options":{"routes":"flatnet"}}'
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | jq -c '[.name,.id,.driver,.ipam_options.driver,.options.routes]')" = '["fnet","abc","flatnet","none","flatnet"]' ]
    run "$FLATNET" create <<< '{"name":"fnet","id":"abc","driver":"flatnet","ipv6_enabled":false,"internal":false,"dns_enabled":false,"options":{"bogus":"1"}}'
    [ "$status" -eq 1 ]
    [[ "$(echo "$output" | jq -r .error)" == *'unknown option "bogus"'* ]]
    run "$FLATNET" create <<< 'not json'
    [ "$status" -eq 1 ]
    [[ "$(echo "$output" | jq -r .error)" == *"invalid JSON"* ]]
}

@test "netavark setup returns a status block; two namespaces reach each other; teardown cleans up" {
    ip netns add "$(ns h1-a)"; ip netns add "$(ns h1-b)"
    run nv h1 setup "/run/netns/$(ns h1-a)" <<< "$(nv_conf h1 a)"
    [ "$status" -eq 0 ]
    ipnet_a="$(echo "$output" | jq -r '.fnet.interfaces.eth0.subnets[0].ipnet')"
    [[ "$ipnet_a" == 10.87.3.*/24 ]]
    [ "$(echo "$output" | jq -r '.fnet.interfaces.eth0.subnets[0].gateway')" = "10.87.3.1" ]
    mac="$(echo "$output" | jq -r '.fnet.interfaces.eth0.mac_address')"
    [ "$(in_ns h1-a cat /sys/class/net/eth0/address)" = "$mac" ]
    run nv h1 setup "/run/netns/$(ns h1-b)" <<< "$(nv_conf h1 b)"
    [ "$status" -eq 0 ]
    ip_b="$(echo "$output" | jq -r '.fnet.interfaces.eth0.subnets[0].ipnet' | cut -d/ -f1)"
    in_ns h1-a ping -c2 -W2 "$ip_b"
    serve_tcp h1-b 8080
    run tcp_get h1-a "$ip_b" 8080
    [ "$output" = "hello from h1-b to ${ipnet_a%/*}" ]
    # The same IPAM as CNI: flatnetd holds both leases, with the container names.
    [ "$(ctl h1 status --json | jq -r '[.leases[].container_name] | sort | join(",")')" = "a,b" ]
    [ "$(ctl h1 status --json | jq -r '.leases[0].ports[0].container_port')" = "80" ]
    run nv h1 teardown "/run/netns/$(ns h1-a)" <<< "$(nv_conf h1 a)"
    [ "$status" -eq 0 ]
    ! in_ns h1-a ip link show eth0 2>/dev/null || false
    [ "$(lease_count h1)" = "1" ]
}

@test "teardown succeeds when the netns is already gone" {
    ip netns add "$(ns h1-a)"
    nv h1 setup "/run/netns/$(ns h1-a)" <<< "$(nv_conf h1 a)" >/dev/null
    ip netns del "$(ns h1-a)"
    # netavark 1.14 stops before calling plugins when it cannot open the netns
    # (newer netavark calls them anyway), so call the plugin as netavark does:
    # `flatnet teardown NETNS` with the per-network exec JSON on stdin.
    exec_json="$(nv_conf h1 a | jq '{container_id, container_name, port_mappings,
        network: .network_info.fnet, network_options: .networks.fnet}')"
    run in_ns h1 "$FLATNET" teardown /proc/does-not-exist/ns/net <<< "$exec_json"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    [ "$(lease_count h1)" = "0" ]
    [ "$(in_ns h1 ip -o link show type veth | wc -l)" = "0" ]
    # And again: nothing left to remove is still success.
    run in_ns h1 "$FLATNET" teardown /proc/does-not-exist/ns/net <<< "$exec_json"
    [ "$status" -eq 0 ]
}

@test "plugin errors pass through netavark to the user" {
    ip netns add "$(ns h1-a)"
    run nv h1 setup "/run/netns/$(ns h1-a)" <<< "$(nv_conf h1 a '"static_ips": ["10.99.3.77"]')"
    [ "$status" -ne 0 ]
    [[ "$(echo "$output" | jq -r .error)" == *'plugin "flatnet" failed'*"10.99.3.77 is not assignable"*"10.87.3.0/24"* ]]
    host_kill h1
    run nv h1 setup "/run/netns/$(ns h1-a)" <<< "$(nv_conf h1 a)"
    [ "$status" -ne 0 ]
    [[ "$(echo "$output" | jq -r .error)" == *"flatnetd is not running"* ]]
    ! in_ns h1-a ip link show eth0 2>/dev/null || false
}

@test "missing netns on setup is a clear error and allocates nothing" {
    run nv h1 setup /run/netns/does-not-exist <<< "$(nv_conf h1 a)"
    [ "$status" -ne 0 ]
    [ "$(lease_count h1)" = "0" ]
}
