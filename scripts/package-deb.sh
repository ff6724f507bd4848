#!/usr/bin/env bash
# Build Flatnet's Debian packages from a release build:
#   flatnet_<version>_<arch>.deb             flatnetd, flatnetctl, the CNI/netavark
#                                            plugin (with the netavark link), the
#                                            systemd unit, the CNI conflist and
#                                            /etc/flatnet/flatnetd.toml (0600)
#   flatnet-lighthouse_<version>_<arch>.deb  the Lighthouse and its unit
# Both carry the docs, and the Prometheus alert rules under
# /usr/share/flatnet/monitoring. Install on any Debian 12+/Ubuntu 22.04+ host,
# no Rust needed:  apt install ./flatnet_<version>_amd64.deb
# Upgrades keep /etc/flatnet (conffiles) and /var/lib/flatnet*; purge removes both.
#
#   scripts/package-deb.sh [--no-build] [--version V] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
OUT=target/deb
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --version) VERSION="${2:?--version needs a value}"; shift ;;
        --out) OUT="${2:?--out needs a directory}"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "package-deb.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || { echo "package-deb.sh: needs dpkg-deb (Debian/Ubuntu)" >&2; exit 1; }
ARCH="$(dpkg --print-architecture)"
if [ "$BUILD" = 1 ]; then
    cargo build --release --locked -p flatnetd -p flatnet-cni -p lighthouse
fi
T=target/release
for b in flatnetd flatnetctl flatnet lighthouse; do
    [ -x "$T/$b" ] || { echo "package-deb.sh: $T/$b is missing: build first (or drop --no-build)" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
MAINTAINER="Flatnet developers <flatnet@localhost>"

docs() {
    local root="$1"
    install -D -m 0644 README.md "$root/usr/share/doc/$2/README.md"
    install -d -m 0755 "$root/usr/share/doc/$2/docs"
    install -m 0644 docs/*.md "$root/usr/share/doc/$2/docs/"
    install -D -m 0644 dist/monitoring/flatnet-alerts.yml "$root/usr/share/flatnet/monitoring/flatnet-alerts.yml"
    if [ -f dist/monitoring/flatnet-dashboard.json ]; then
        install -m 0644 dist/monitoring/flatnet-dashboard.json "$root/usr/share/flatnet/monitoring/"
    fi
}

# maintainer_scripts ROOT UNIT STATE_DIR HINT PURGE_PATHS enable|no-enable:
# postinst (state dir 0700; first install: enable or not, print HINT;
# upgrade: restart a running daemon), prerm (stop on remove), postrm (purge
# removes PURGE_PATHS: the host's leases and keys, or the Lighthouse's
# registry; every node joins again after that).
maintainer_scripts() {
    local root="$1" unit="$2" state="$3" hint="$4" purge="$5" enable="$6" first
    first="echo \"$hint\""
    [ "$enable" = enable ] && first="systemctl enable $unit.service >/dev/null 2>&1 || true; $first"
    cat > "$root/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    install -d -m 0700 $state
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
        if [ -z "\$2" ]; then
            $first
        else
            systemctl try-restart $unit.service >/dev/null 2>&1 || true
        fi
    fi
fi
exit 0
POSTINST
    cat > "$root/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop $unit.service >/dev/null 2>&1 || true
    systemctl disable $unit.service >/dev/null 2>&1 || true
fi
exit 0
PRERM
    cat > "$root/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e
if [ "\$1" = purge ]; then
    rm -rf $purge
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
POSTRM
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
}

strip_bin() { install -D -m 0755 "$1" "$2"; strip --strip-debug "$2" 2>/dev/null || true; }

# --- flatnet ------------------------------------------------------------------
R="$WORK/flatnet"
strip_bin "$T/flatnetd" "$R/usr/bin/flatnetd"
strip_bin "$T/flatnetctl" "$R/usr/bin/flatnetctl"
strip_bin "$T/flatnet" "$R/usr/lib/cni/flatnet"
# netavark (Podman 5) looks for driver plugins in /usr/libexec/netavark.
install -d -m 0755 "$R/usr/libexec/netavark"
ln -s ../../lib/cni/flatnet "$R/usr/libexec/netavark/flatnet"
install -D -m 0644 dist/flatnetd.service "$R/usr/lib/systemd/system/flatnetd.service"
install -D -m 0644 dist/flatnet.conflist "$R/etc/cni/net.d/flatnet.conflist"
# 0600: a join token may sit in it until the first start.
install -D -m 0600 dist/flatnetd.toml "$R/etc/flatnet/flatnetd.toml"
docs "$R" flatnet
install -d -m 0755 "$R/DEBIAN"
cat > "$R/DEBIAN/control" <<CONTROL
Package: flatnet
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Depends: libc6 (>= 2.34), nftables, iproute2
Recommends: podman
Section: net
Priority: optional
Homepage: https://github.com/flatnet/flatnet
Description: flat, routable addresses for Podman containers across hosts
 Flatnet gives every Podman container an address that every other Flatnet
 container on any host reaches, by address and by name, over WireGuard,
 through NATs (hole punching, or a relay). This package has the per-host
 daemon flatnetd, flatnetctl, and the CNI and netavark plugin.
CONTROL
printf '/etc/flatnet/flatnetd.toml\n/etc/cni/net.d/flatnet.conflist\n' > "$R/DEBIAN/conffiles"
maintainer_scripts "$R" flatnetd /var/lib/flatnet \
    "flatnet: edit /etc/flatnet/flatnetd.toml (or run 'flatnetd join <token>'), then: systemctl start flatnetd" \
    "/var/lib/flatnet /etc/flatnet" enable
dpkg-deb --root-owner-group -Zxz --build "$R" "$OUT/flatnet_${VERSION}_${ARCH}.deb" >/dev/null

# --- flatnet-lighthouse -------------------------------------------------------
L="$WORK/lighthouse"
strip_bin "$T/lighthouse" "$L/usr/bin/lighthouse"
install -D -m 0644 dist/lighthouse.service "$L/usr/lib/systemd/system/lighthouse.service"
docs "$L" flatnet-lighthouse
install -d -m 0755 "$L/DEBIAN"
cat > "$L/DEBIAN/control" <<CONTROL
Package: flatnet-lighthouse
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Depends: libc6 (>= 2.34)
Section: net
Priority: optional
Homepage: https://github.com/flatnet/flatnet
Description: Flatnet Lighthouse: registry, hole-punching broker and relay
 The one shared service of a Flatnet: hosts join it with a token, get their
 subnet from it, learn each other's endpoints, and relay through it when
 hole punching fails. Install it on one host every Flatnet host can reach.
CONTROL
# /usr/share/flatnet/monitoring is in both packages: the Lighthouse host
# may run flatnetd too.
rm -rf "$L/usr/share/flatnet"
maintainer_scripts "$L" lighthouse /var/lib/flatnet-lighthouse \
    "flatnet-lighthouse: set --public-addr (systemctl edit lighthouse), then: systemctl enable --now lighthouse" \
    "/var/lib/flatnet-lighthouse" no-enable
dpkg-deb --root-owner-group -Zxz --build "$L" "$OUT/flatnet-lighthouse_${VERSION}_${ARCH}.deb" >/dev/null

ls -l "$OUT/flatnet_${VERSION}_${ARCH}.deb" "$OUT/flatnet-lighthouse_${VERSION}_${ARCH}.deb"
