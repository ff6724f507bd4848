# Helpers for driving the flatnet plugin through a real netavark (>= 1.6).

# The netavark binary: $NETAVARK, or the one scripts/netavark.sh builds.
netavark_setup() {
    NETAVARK="${NETAVARK:-/var/tmp/flatnet-netavark/bin/netavark}"
    if ! [ -x "$NETAVARK" ]; then
        echo "no netavark with plugin support at $NETAVARK: run scripts/netavark.sh (scripts/deps.sh does)" >&2
        return 1
    fi
    NV_PLUGINS="$FN_TMP/netavark-plugins"
    mkdir -p "$NV_PLUGINS" "$FN_TMP/netavark-config"
    ln -sf "$FLATNET" "$NV_PLUGINS/flatnet"
}

# nv_conf HOST CONTAINER [extra network_options members] [extra network options]:
# the JSON netavark reads for setup/teardown of one container on network "fnet".
nv_conf() {
    local host="$1" c="$2" extra_netopts="${3:-}" extra_opts="${4:-}"
    cat <<JSON
{"container_id": "cid-$c", "container_name": "$c",
 "port_mappings": [{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 1}],
 "networks": {"fnet": {"interface_name": "eth0"${extra_netopts:+, $extra_netopts}}},
 "network_info": {"fnet": {"name": "fnet", "id": "$(printf 'f%.0s' {1..64})", "driver": "flatnet",
   "network_interface": "", "ipv6_enabled": false, "internal": false, "dns_enabled": false,
   "ipam_options": {"driver": "none"}, "subnets": [],
   "options": {"socket": "$FN_TMP/$host/flatnetd.sock"${extra_opts:+, $extra_opts}}}}}
JSON
}

# nv HOST ARGS...: netavark inside HOST's namespace with our plugin directory.
nv() {
    local host="$1"; shift
    ip netns exec "$(ns "$host")" "$NETAVARK" --config "$FN_TMP/netavark-config" \
        --plugin-directory "$NV_PLUGINS" "$@"
}
