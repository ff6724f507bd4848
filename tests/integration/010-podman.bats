#!/usr/bin/env bats
# Real Podman 4.3 (CNI backend) with the flatnet plugin and flatnetd.

load helpers
load podman

setup() {
    fn_setup
    host_create h1 10.87.5.0/24
    podman_setup
    podman_conflist h1
    C="$FN_PREFIX"   # container name prefix
}
teardown() { podman_teardown; fn_teardown; }

cip() { pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet").IPAddress}}' "$1"; }

@test "two Podman containers reach each other by Flatnet IP and reach the host" {
    pm h1 run -d --name "$C-web" --network flatnet "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    pm h1 run -d --name "$C-cli" --network flatnet "$PODMAN_IMAGE" sleep 600
    web="$(cip "$C-web")"; cli="$(cip "$C-cli")"
    [[ "$web" == 10.87.5.* ]] && [[ "$cli" == 10.87.5.* ]] && [ "$web" != "$cli" ]
    pm h1 exec "$C-cli" ping -c2 -W2 "$web"
    pm h1 exec "$C-web" ping -c2 -W2 "$cli"
    run pm h1 exec "$C-cli" wget -qO- "http://$web/"
    [ "$status" -eq 0 ]
    [ "$output" = "flatnet test page" ]
    # The host: its gateway address inside the Flatnet, and a TCP service on it.
    pm h1 exec "$C-cli" ping -c1 -W2 10.87.5.1
    serve_tcp h1 7000
    run pm h1 exec "$C-cli" nc 10.87.5.1 7000
    [[ "$output" == "hello from h1 to $cli" ]]
    # flatnetd knows them by name, with the address Podman reports.
    [ "$(ctl h1 status --json | jq -r --arg n "$C-web" '.leases[] | select(.container_name == $n) | .ip')" = "$web" ]
}

@test "podman rm releases the lease and removes the host veth" {
    pm h1 run -d --name "$C-a" --network flatnet "$PODMAN_IMAGE" sleep 600
    [ "$(lease_count h1)" = "1" ]
    veths_before="$(in_ns h1 ip -o link show type veth | wc -l)"
    [ "$veths_before" = "1" ]
    pm h1 rm -f -t 0 "$C-a"
    [ "$(lease_count h1)" = "0" ]
    [ "$(in_ns h1 ip -o link show type veth | wc -l)" = "0" ]
}

@test "published ports appear in the catalog and work through portmap" {
    pm h1 run -d --name "$C-site" --network flatnet -p 8080:80 "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    ip="$(cip "$C-site")"
    run ctl h1 catalog
    [ "$(echo "$output" | jq -r '.services[0].name')" = "$C-site" ]
    [ "$(echo "$output" | jq -r '.services[0].ip')" = "$ip" ]
    [ "$(echo "$output" | jq -r '.services[0].ports[0].port')" = "80" ]
    # A LAN client reaches the published host port.
    ip netns add "$(ns lan)"
    ip link add "${FN_PREFIX}l" netns "$(ns h1)" type veth peer name lan0 netns "$(ns lan)"
    in_ns h1 ip addr add 192.0.2.1/24 dev "${FN_PREFIX}l"; in_ns h1 ip link set "${FN_PREFIX}l" up
    in_ns lan ip addr add 192.0.2.2/24 dev lan0; in_ns lan ip link set lan0 up; in_ns lan ip link set lo up
    run in_ns lan curl -s --max-time 5 http://192.0.2.1:8080/
    [ "$output" = "flatnet test page" ]
}

@test "stopping and starting a container keeps working; restart of flatnetd does not touch it" {
    pm h1 run -d --name "$C-a" --network flatnet "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    pm h1 run -d --name "$C-b" --network flatnet "$PODMAN_IMAGE" sleep 600
    a="$(cip "$C-a")"
    host_kill h1 KILL
    host_start h1
    run pm h1 exec "$C-b" wget -qO- "http://$a/"
    [ "$output" = "flatnet test page" ]
    pm h1 stop -t 0 "$C-a"
    [ "$(lease_count h1)" = "1" ]
    pm h1 start "$C-a"
    a2="$(cip "$C-a")"
    run pm h1 exec "$C-b" wget -qO- "http://$a2/"
    [ "$output" = "flatnet test page" ]
    [ "$(lease_count h1)" = "2" ]
}
