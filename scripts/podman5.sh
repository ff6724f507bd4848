#!/usr/bin/env bash
# A real Podman 5 (Debian 13 "trixie": podman 5.4, netavark 1.14,
# aardvark-dns 1.14) on a Debian 12 machine, for the tests and benchmarks.
#
#   scripts/podman5.sh root         build the Debian 13 root once (cached), print its path
#   scripts/podman5.sh start SHARE  make the persistent mount namespace whose root is the
#                                   tree; SHARE (a host dir) appears at the same path inside,
#                                   and the host's /run/netns (live) at /run/host-netns
#   scripts/podman5.sh stop         remove that mount namespace
#   scripts/podman5.sh reboot SHARE what a host reboot does to Podman: every container
#                                   and conmon killed at once (no cleanup, no network
#                                   teardown), /run wiped; the namespace started again
#   scripts/podman5.sh run [--net NETNS] CMD...
#                                   run CMD in the tree, in network namespace NETNS
#                                   (a name under /run/netns), default the current one
#
# Why a mount namespace and not chroot: runc pivot_roots below a chroot, and
# `podman exec` then lands in the host's /. A mount namespace whose real root
# is the tree (pivot_root) behaves like a Debian 13 host. `ip netns exec` makes
# a new mount namespace on every call, so commands enter this one with
# `nsenter --mount=FILE --net=NETNS`.
#
# The root lives outside the clone ($FLATNET_P5_ROOT, default
# /var/cache/flatnet/podman5-trixie) and is reused while its stamp matches
# the package list below; it holds Podman's image store too, so the test
# image is imported once. About 30 s of debootstrap, 15 s of apt and 550 MB.
set -euo pipefail

ROOT="${FLATNET_P5_ROOT:-/var/cache/flatnet/podman5-trixie}"
NSDIR="${FLATNET_P5_NSDIR:-/run/flatnet-p5}"
MIRROR="${FLATNET_P5_MIRROR:-}"
PACKAGES="podman netavark aardvark-dns runc conmon catatonit nftables busybox-static iproute2 iputils-ping libc-bin procps"
STAMP="trixie minbase; $PACKAGES"

die() { echo "podman5.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/lib-debian.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-debian.sh"

mirror() {
    [ -n "$MIRROR" ] && { echo "$MIRROR"; return; }
    debian_mirror
}

build_root() {
    if [ -f "$ROOT/.flatnet-stamp" ] && [ "$(cat "$ROOT/.flatnet-stamp")" = "$STAMP" ]; then
        echo "$ROOT"; return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    local tmp="$ROOT.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$(dirname "$ROOT")"
    echo "podman5.sh: building the Debian 13 root in $ROOT (once)" >&2
    debootstrap --variant=minbase trixie "$tmp" "$(mirror)" >"$tmp.log" 2>&1 \
        || { tail -20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
    mount -t proc proc "$tmp/proc"
    # shellcheck disable=SC2086
    if ! chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends $PACKAGES" >>"$tmp.log" 2>&1; then
        umount "$tmp/proc"; tail -20 "$tmp.log" >&2; die "installing Podman 5 in the root failed (log: $tmp.log)"
    fi
    umount "$tmp/proc"
    chroot "$tmp" apt-get clean
    mkdir -p "$tmp/etc/containers" "$tmp/usr/local/libexec/netavark"
    cat > "$tmp/etc/containers/containers.conf" <<'CONF'
# Written by flatnet scripts/podman5.sh: what Podman 5 needs on this machine.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    echo "$STAMP" > "$tmp/.flatnet-stamp"
    rm -rf "$ROOT"; mv "$tmp" "$ROOT"; rm -f "$tmp.log"
    echo "$ROOT"
}

started() { [ -e "$NSDIR/mnt" ] && nsenter --mount="$NSDIR/mnt" true 2>/dev/null; }

start() {
    local share="${1:?usage: podman5.sh start SHARE_DIR}"
    build_root >/dev/null
    mkdir -p "$share"
    if started; then
        # Already running: make sure SHARE is visible too.
        nsenter --mount="$NSDIR/mnt" test -d "$share" || die "a namespace without $share is running: run '$0 stop' first"
        return 0
    fi
    mkdir -p "$NSDIR"
    mountpoint -q "$NSDIR" || mount --bind "$NSDIR" "$NSDIR"
    mount --make-private "$NSDIR"
    touch "$NSDIR/mnt"
    # Make sure the host's /run/netns exists and is a shared mount (as
    # `ip netns add` leaves it), so namespaces added later show up inside.
    mkdir -p /run/netns
    if ! mountpoint -q /run/netns; then mount --bind /run/netns /run/netns; fi
    mount --make-shared /run/netns
    # slave: the host's later mounts (new netns) propagate in, none go out.
    unshare --mount="$NSDIR/mnt" --propagation slave /bin/sh -euc '
        R="$1"; SHARE="$2"
        mount --bind "$R" "$R"                         # podman import needs / to be a mount point
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        # Its own /dev/shm (Podman keeps its container locks there): not
        # shared with the host'"'"'s Podman 4.3, and gone on a "reboot".
        mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
        mount -t sysfs sysfs "$R/sys"
        mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
        mount -t tmpfs -o mode=755 tmpfs "$R/run"
        mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
        mkdir -p "$R$SHARE" "$R/run/host-netns"
        mount --bind "$SHARE" "$R$SHARE"
        mount --rbind /run/netns "$R/run/host-netns"
        mkdir -p "$R/.oldroot"
        cd "$R"
        pivot_root . .oldroot
        umount -l /.oldroot
    ' sh "$ROOT" "$share"
    # A reboot keeps the containers, as a real one does.
    [ "${P5_KEEP:-}" = 1 ] && return 0
    # Leftovers of an earlier run that did not stop cleanly (the store is
    # persistent, the runtime state is not). Containers whose network
    # config is gone cannot always be removed: then reset the store (the
    # tests import their image again).
    run podman rm -af -t 0 >/dev/null 2>&1 || true
    if [ -n "$(run podman ps -aq 2>/dev/null)" ]; then
        run podman system reset -f >/dev/null 2>&1 || true
    fi
}

# kill_containers: SIGKILL every process in Podman's cgroups (containers
# and their conmon), repeated until none is left.
kill_containers() {
    local i pids
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids="$(find /sys/fs/cgroup -path '*libpod_parent*' -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.2
    done
    die "processes in Podman's cgroups survive SIGKILL: $pids"
}

reboot() {
    local share="${1:?usage: podman5.sh reboot SHARE_DIR}"
    started || die "the Podman 5 namespace is not running"
    kill_containers
    # The namespace goes with its /run tmpfs: Podman's runtime state and
    # the containers' network namespace mounts.
    umount "$NSDIR/mnt" 2>/dev/null || umount -l "$NSDIR/mnt"
    rm -f "$NSDIR/mnt"
    P5_KEEP=1 start "$share"
}

stop() {
    if [ -e "$NSDIR/mnt" ]; then
        run podman rm -af -t 0 >/dev/null 2>&1 || true
        umount "$NSDIR/mnt" 2>/dev/null || umount -l "$NSDIR/mnt" 2>/dev/null || true
        rm -f "$NSDIR/mnt"
    fi
}

run() {
    local net=()
    if [ "${1:-}" = --net ]; then net=(--net="/run/netns/$2"); shift 2; fi
    started || die "the Podman 5 namespace is not running: '$0 start DIR' first"
    PODMAN_IGNORE_CGROUPSV1_WARNING=1 nsenter --mount="$NSDIR/mnt" "${net[@]}" "$@"
}

[ "$(id -u)" = 0 ] || die "run as root"
cmd="${1:-}"; shift || true
case "$cmd" in
    root) build_root ;;
    start) start "$@" ;;
    stop) stop ;;
    reboot) reboot "$@" ;;
    run) run "$@" ;;
    *) die "usage: $0 root | start SHARE | stop | reboot SHARE | run [--net NETNS] CMD..." ;;
esac
