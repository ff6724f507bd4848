# Helpers for suite 170: a WSL2 VM behind its Windows host (load after
# helpers, helpers-wg, helpers-nat, helpers-gw, podman5).
#
#   office ── r1 "Windows host": NAT, the gateway (nginx + gateway-lua), and
#                  WSL's localhost relay 127.0.0.1:7070 -> the VM's :7070
#             └─ lan0 ── h1 "WSL2 VM" (flatnetd --detach, Podman 5)
#   r2 ── h2 another Flatnet host (a CNI container "two" serving a page)
#
# What WSL itself does on Windows (give the VM a new address on every
# restart, relay localhost ports into it) the lab does by hand: wsl_relay
# plays wslrelay. What Flatnet must do by itself (the gateway's route to the
# Flatnet through the VM) nobody does for it.

WSL_CATALOG_PORT=7070

# wsl_relay ADDR: Windows' 127.0.0.1:7070 relayed to the VM at ADDR (restarted).
wsl_relay() {
    [ -f "$FN_TMP/relay.pid" ] && kill "$(cat "$FN_TMP/relay.pid")" 2>/dev/null
    # ip netns exec execs socat: $! is socat itself.
    ip netns exec "$(ns r1)" socat "TCP-LISTEN:$WSL_CATALOG_PORT,bind=127.0.0.1,fork,reuseaddr" \
        "TCP:$1:$WSL_CATALOG_PORT,connect-timeout=2" >/dev/null 2>&1 &
    echo $! > "$FN_TMP/relay.pid"
    disown $! 2>/dev/null || true
    wait_for 5 in_ns r1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$WSL_CATALOG_PORT"
}

# wsl_vm_start ADDR: the VM's network namespace at 192.168.1.ADDR, flatnetd
# started the way `[boot] command=` would (--detach, log file, no systemd).
wsl_vm_start() {
    nat_lan_ns h1 1 "$1"
    in_ns h1 "$FLATNETD" --config "$FN_TMP/h1/flatnetd.toml" --detach \
        --log-file "$FN_TMP/h1/flatnetd.log" >"$FN_TMP/h1/detach.out"
    cp "$FN_TMP/h1/state/flatnetd.pid" "$FN_TMP/h1/flatnetd.pid"
    wait_for 10 ctl h1 ping
}

# wsl_vm_create: h1 joined to the Lighthouse, as a WSL2 VM at 192.168.1.1.
wsl_vm_create() {
    local token
    token="$(lh token create --ttl 1h 2>/dev/null)"
    mkdir -p "$FN_TMP/h1"
    cat > "$FN_TMP/h1/flatnetd.toml" <<TOML
node_name = "h1"
cidr = "10.87.0.0/16"
state_dir = "$FN_TMP/h1/state"
socket = "$FN_TMP/h1/flatnetd.sock"
catalog_listen = "0.0.0.0:$WSL_CATALOG_PORT"
forward_from = ["192.168.1.254/32"]
reconcile_secs = 2
lease_grace_secs = 30

[wireguard]
listen_port = $WG_PORT

[lighthouse]
token = "$token"
TOML
    wsl_vm_start 1
}

# wsl_restart NEW_ADDR: `wsl --shutdown` and the next start: flatnetd and the
# containers die with nothing torn down, the VM comes back at a new address,
# flatnetd starts from its state, Podman restarts --restart=always containers.
wsl_restart() {
    host_kill h1 KILL
    "$P5" reboot "$P5_SHARE"
    in_ns r1 ip link del lan0
    netns_power_off "$(ns h1)"
    wsl_vm_start "$1"
    p5 h1 start --all --filter restart-policy=always >/dev/null
    wsl_relay "192.168.1.$1"
}

# web_page HOST NAME PORT: a CNI container HOST-NAME named NAME for the
# catalog, serving a page "NAME page" on :80, published as PORT.
web_page() {
    local host="$1" name="$2" port="$3"
    ip netns add "$(ns "$host-$name")"
    netconf "$host" 1.0.0 "\"runtimeConfig\":{\"portMappings\":[{\"hostPort\":$port,\"containerPort\":80,\"protocol\":\"tcp\"}]}" |
        cni "$host" ADD "cid-$name" "/run/netns/$(ns "$host-$name")" eth0 "IgnoreUnknown=1;K8S_POD_NAME=$name" \
        > "$FN_TMP/$host/$name.json"
    mkdir -p "$FN_TMP/www-$name"
    echo "$name page" > "$FN_TMP/www-$name/index.html"
    in_ns "$host-$name" busybox httpd -p 80 -h "$FN_TMP/www-$name"
    wait_listen "$host-$name" 80
}

# office_get NAME: the page of service NAME through the gateway.
office_get() { gw_curl -sf --max-time 3 "http://$1.$GW_DOMAIN/"; }

# gw_route_is VIA: r1 has exactly one route for the Flatnet, through VIA.
gw_route_is() {
    [ "$(in_ns r1 ip -4 route show 10.87.0.0/16)" = "10.87.0.0/16 via $1 dev lan0 " ] ||
        [ "$(in_ns r1 ip -4 route show 10.87.0.0/16)" = "10.87.0.0/16 via $1 dev lan0" ]
}
