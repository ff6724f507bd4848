# Helpers for suites that drive a real Podman 5 (Debian 13's podman 5.4,
# netavark 1.14, aardvark-dns 1.14) with `--driver flatnet`, on this Debian
# 12 machine. scripts/podman5.sh builds and caches the Debian 13 root and
# runs Podman in a mount namespace whose root is that tree; flatnetd runs
# outside it, in the test host's network namespace, and this file's
# FN_TMPBASE directory is visible at the same path on both sides.

P5_SHARE="${P5_SHARE:-/var/tmp/flatnet-p5}"
P5_IMAGE="localhost/flatnet-busybox"
P5="$REPO_ROOT/scripts/podman5.sh"
export FN_TMPBASE="$P5_SHARE/tmp"

# In setup_file: the mount namespace and the image (imported once; the
# image store lives in the cached root).
p5_setup_file() {
    "$P5" start "$P5_SHARE" >&2 || return 1
    if ! "$P5" run podman image exists "$P5_IMAGE"; then
        local root="$P5_SHARE/image-rootfs"
        rm -rf "$root"
        busybox_rootfs "$root"
        "$P5" run sh -c "tar -C '$root' -c . | podman import - '$P5_IMAGE'" >/dev/null || return 1
        rm -rf "$root"
    fi
}

p5_teardown_file() { "$P5" stop; }

# In setup, after fn_setup: a containers.conf for this test (its own network
# config dir, the flatnet plugin) and the plugin binary where netavark looks.
p5_setup() {
    mkdir -p "$FN_TMP/nvplugins" "$FN_TMP/networks"
    cp "$FLATNET" "$FN_TMP/nvplugins/flatnet"
    cat > "$FN_TMP/containers5.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "netavark"
network_config_dir = "$FN_TMP/networks"
netavark_plugin_dirs = ["$FN_TMP/nvplugins"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    C="$FN_PREFIX"
}

# p5 HOST ARGS...: Podman 5 inside HOST's network namespace.
# (The Podman 4.3 helpers export their own storage.conf; not for this one.)
p5() {
    local host="$1"; shift
    env -u CONTAINERS_STORAGE_CONF CONTAINERS_CONF="$FN_TMP/containers5.conf" \
        "$P5" run --net "$(ns "$host")" podman "$@"
}

# p5_in HOST CMD...: any command in the Podman 5 root, in HOST's netns.
p5_in() { local host="$1"; shift; "$P5" run --net "$(ns "$host")" "$@"; }

p5_teardown() {
    [ -f "${FN_TMP:-/nonexistent}/containers.conf" ] || return 0
    local c
    local pm5=(env -u CONTAINERS_STORAGE_CONF CONTAINERS_CONF="$FN_TMP/containers5.conf" "$P5" run podman)
    for c in $("${pm5[@]}" ps -a --format '{{.Names}}' 2>/dev/null | grep "^$FN_PREFIX-" || true); do
        "${pm5[@]}" rm -f -t 0 "$c" >/dev/null 2>&1 || true
    done
    "${pm5[@]}" pod rm -af -t 0 >/dev/null 2>&1 || true
}

# p5_net HOST NAME [ARGS...]: `podman network create --driver flatnet` for HOST's flatnetd.
p5_net() {
    local host="$1" name="$2"; shift 2
    p5 "$host" network create --driver flatnet -o "socket=$FN_TMP/$host/flatnetd.sock" "$@" "$name" >/dev/null
}

# p5_ip HOST CONTAINER NETWORK: the address Podman reports.
p5_ip() { p5 "$1" inspect -f "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}" "$2"; }

# lease_of HOST CONTAINER-NAME: the IP flatnetd leased to that container.
lease_of() {
    ctl "$1" status --json | jq -r --arg n "$2" '[.leases[] | select(.container_name == $n) | .ip] | join(",")'
}

# leases_are HOST N: flatnetd on HOST holds exactly N leases.
leases_are() { [ "$(lease_count "$1")" = "$2" ]; }

# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() {
    local secs="$1" i; shift
    for i in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@"
}
