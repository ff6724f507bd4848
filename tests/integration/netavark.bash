# Helpers for driving the flatnet plugin through a real netavark 1.14, the
# one Debian 13 ships, run inside the Podman 5 root (see podman5.bash).
# Load after `helpers` and `podman5`.

NETAVARK=/usr/lib/podman/netavark

netavark_setup() {
    NV_PLUGINS="$FN_TMP/netavark-plugins"
    mkdir -p "$NV_PLUGINS" "$FN_TMP/netavark-config"
    cp "$FLATNET" "$NV_PLUGINS/flatnet"
}

# nv_conf HOST CONTAINER [extra network_options members] [extra network options]:
# the JSON netavark reads for setup/teardown of one container on network "fnet".
# Each container publishes port 80 on its own host port (8000 + the code of
# its name's first letter): two containers may not share one.
nv_conf() {
    local host="$1" c="$2" extra_netopts="${3:-}" extra_opts="${4:-}" hp
    hp=$((8000 + $(printf '%d' "'$c")))
    cat <<JSON
{"container_id": "cid-$c", "container_name": "$c",
 "port_mappings": [{"container_port": 80, "host_ip": "", "host_port": $hp, "protocol": "tcp", "range": 1}],
 "networks": {"fnet": {"interface_name": "eth0"${extra_netopts:+, $extra_netopts}}},
 "network_info": {"fnet": {"name": "fnet", "id": "$(printf 'f%.0s' {1..64})", "driver": "flatnet",
   "network_interface": "", "ipv6_enabled": false, "internal": false, "dns_enabled": false,
   "ipam_options": {"driver": "none"}, "subnets": [],
   "options": {"socket": "$FN_TMP/$host/flatnetd.sock"${extra_opts:+, $extra_opts}}}}}
JSON
}

# nv HOST ARGS...: netavark in HOST's namespace with our plugin directory.
# Namespace paths under /run/netns are the host's; inside the root they are
# at /run/host-netns.
nv() {
    local host="$1" a args=(); shift
    for a in "$@"; do args+=("${a/#\/run\/netns\//\/run\/host-netns\/}"); done
    "$P5" run --net "$(ns "$host")" "$NETAVARK" --config "$FN_TMP/netavark-config" \
        --plugin-directory "$NV_PLUGINS" "${args[@]}"
}
