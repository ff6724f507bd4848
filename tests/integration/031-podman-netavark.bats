#!/usr/bin/env bats
# `podman network create --driver flatnet` with Podman >= 4.5 on netavark.
#
# Debian 12 has Podman 4.3, which cannot load netavark plugins: there this
# suite is skipped and says so. README.md ("Podman >= 4.5") shows how to run
# it on a machine that has such a Podman.

load helpers
load podman

podman_ok() {
    local v
    v="$(podman version --format '{{.Client.Version}}' 2>/dev/null)" || return 1
    [ "$(printf '4.5.0\n%s\n' "$v" | sort -V | head -1)" = "4.5.0" ]
}

setup() {
    if ! podman_ok; then
        skip "needs Podman >= 4.5 (found $(podman version --format '{{.Client.Version}}' 2>/dev/null || echo none)); see README.md, 'Podman >= 4.5'"
    fi
    fn_setup
    host_create h1 10.87.6.0/24
    podman_setup
    mkdir -p "$FN_TMP/nvplugins" "$FN_TMP/networks"
    ln -sf "$FLATNET" "$FN_TMP/nvplugins/flatnet"
    cat > "$FN_TMP/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "netavark"
network_config_dir = "$FN_TMP/networks"
netavark_plugin_dirs = ["$FN_TMP/nvplugins"]
[engine]
runtime = "runc"
CONF
    C="$FN_PREFIX"
}
teardown() { podman_teardown; fn_teardown; }

@test "podman network create --driver flatnet, two containers talk" {
    pm h1 network create --driver flatnet -o "socket=$FN_TMP/h1/flatnetd.sock" fnet
    run pm h1 network inspect fnet
    [ "$(echo "$output" | jq -r '.[0].driver')" = "flatnet" ]
    [ "$(echo "$output" | jq -r '.[0].ipam_options.driver')" = "none" ]
    pm h1 run -d --name "$C-web" --network fnet "$PODMAN_IMAGE" httpd -f -p 80 -h /www
    pm h1 run -d --name "$C-cli" --network fnet "$PODMAN_IMAGE" sleep 600
    web="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "fnet").IPAddress}}' "$C-web")"
    [[ "$web" == 10.87.6.* ]]
    run pm h1 exec "$C-cli" wget -qO- "http://$web/"
    [ "$output" = "flatnet test page" ]
    pm h1 rm -f -t 0 "$C-web" "$C-cli"
    [ "$(lease_count h1)" = "0" ]
}
