#!/usr/bin/env bash
# Install Flatnet on this host: build (unless --no-build), then put
#   flatnetd, flatnetctl, lighthouse -> $PREFIX/bin (default /usr/local/bin)
#   the CNI plugin `flatnet`     -> every CNI plugin dir that exists
#                                   (/usr/lib/cni, /opt/cni/bin, /usr/libexec/cni)
#   the same binary as netavark plugin -> /usr/local/libexec/netavark/flatnet
#   flatnet.conflist             -> /etc/cni/net.d (Podman 4.x CNI backend)
#   flatnetd.toml                -> /etc/flatnet (kept if already there)
#   flatnetd.service             -> /etc/systemd/system (when systemd runs)
#   lighthouse.service           -> /etc/systemd/system (installed, not enabled:
#                                   only the one shared Lighthouse host runs it)
# Re-running it upgrades in place. Run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
CNI_CONF_DIR="${CNI_CONF_DIR:-/etc/cni/net.d}"
BUILD=1
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $a" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    cargo build --release --locked -p flatnetd -p flatnet-cni -p lighthouse
fi
T=target/release

install -D -m 0755 "$T/flatnetd" "$PREFIX/bin/flatnetd"
install -D -m 0755 "$T/flatnetctl" "$PREFIX/bin/flatnetctl"
install -D -m 0755 "$T/lighthouse" "$PREFIX/bin/lighthouse"

installed_cni=0
for d in /usr/lib/cni /opt/cni/bin /usr/libexec/cni; do
    if [ -d "$d" ]; then
        install -m 0755 "$T/flatnet" "$d/flatnet"
        echo "CNI plugin -> $d/flatnet"
        installed_cni=1
    fi
done
if [ "$installed_cni" = 0 ]; then
    install -D -m 0755 "$T/flatnet" /usr/lib/cni/flatnet
    echo "CNI plugin -> /usr/lib/cni/flatnet"
fi

# netavark (Podman >= 4.5) looks for plugins here by default.
install -D -m 0755 "$T/flatnet" /usr/local/libexec/netavark/flatnet
echo "netavark   -> /usr/local/libexec/netavark/flatnet (podman network create --driver flatnet)"

install -D -m 0644 dist/flatnet.conflist "$CNI_CONF_DIR/flatnet.conflist"
echo "network    -> $CNI_CONF_DIR/flatnet.conflist"

if [ ! -e /etc/flatnet/flatnetd.toml ]; then
    # 0600: a join token may sit in it until the first start.
    install -D -m 0600 dist/flatnetd.toml /etc/flatnet/flatnetd.toml
    echo "config     -> /etc/flatnet/flatnetd.toml"
else
    echo "config     -> /etc/flatnet/flatnetd.toml (kept)"
fi

if [ -d /run/systemd/system ]; then
    # The units name the packages' /usr/bin; a source install lives in $PREFIX.
    for u in flatnetd lighthouse; do
        sed "s#/usr/bin/#$PREFIX/bin/#g" "dist/$u.service" > "/etc/systemd/system/$u.service"
        chmod 0644 "/etc/systemd/system/$u.service"
    done
    systemctl daemon-reload
    echo "service    -> systemctl enable --now flatnetd"
else
    echo "no systemd: start the daemon with '$PREFIX/bin/flatnetd &'"
fi
