# Helpers for suites that drive real Podman (CNI backend) against a host
# namespace running flatnetd. Podman runs under `nsenter --net` rather than
# `ip netns exec`, which would remount /sys and hide the cgroup mounts runc
# needs.

# A private image store, kept between runs so the image is imported once.
PODMAN_STORE="${PODMAN_STORE:-/var/tmp/flatnet-podman-store}"
PODMAN_IMAGE="localhost/flatnet-busybox"

podman_setup() {
    command -v podman >/dev/null || { echo "podman is not installed" >&2; return 1; }
    mkdir -p "$FN_TMP/cni" "$PODMAN_STORE"
    cat > "$FN_TMP/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$FLATNET_TARGET", "/usr/lib/cni"]
network_config_dir = "$FN_TMP/cni"
[engine]
runtime = "runc"
CONF
    cat > "$FN_TMP/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_STORE/graph"
runroot = "$PODMAN_STORE/run"
CONF
    export CONTAINERS_CONF="$FN_TMP/containers.conf"
    export CONTAINERS_STORAGE_CONF="$FN_TMP/storage.conf"
    podman image exists "$PODMAN_IMAGE" || podman_build_image
}

# The offline image: busybox-static with applet links, imported from a tar.
podman_build_image() {
    local root="$FN_TMP/rootfs"
    busybox_rootfs "$root"
    tar -C "$root" -c . | podman import - "$PODMAN_IMAGE" >/dev/null
}

# podman_conflist HOST NAME: a flatnet network for HOST's flatnetd.
podman_conflist() {
    local host="$1" name="${2:-flatnet}"
    cat > "$FN_TMP/cni/$name.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "$name", "plugins": [
  {"type": "flatnet", "socket": "$FN_TMP/$host/flatnetd.sock", "capabilities": {"portMappings": true, "aliases": true}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
}

# pm HOST ARGS...: podman inside HOST's network namespace.
pm() { local host="$1"; shift; nsenter --net="/run/netns/$(ns "$host")" podman "$@"; }

podman_teardown() {
    [ -n "${CONTAINERS_CONF:-}" ] || return 0
    local c
    for c in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep "^$FN_PREFIX-" || true); do
        nsenter --net="/run/netns/$(ns h1)" podman rm -f -t 0 "$c" >/dev/null 2>&1 || podman rm -f -t 0 "$c" >/dev/null 2>&1
    done
}
