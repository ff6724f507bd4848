#!/usr/bin/env bash
# A clean Debian 13 (trixie) minbase root for the package tests, built once
# and cached (FLATNET_DEBROOT, default /var/cache/flatnet/debroot-trixie):
# nothing installed beyond debootstrap's minbase, apt's lists fetched, and the
# packages flatnet depends on (nftables, iproute2) downloaded but not
# installed, so `apt-get install ./flatnet_*.deb` resolves them offline.
#   scripts/debroot.sh            build if needed, print the path
#   scripts/debroot.sh copy DIR   a fresh copy of it in DIR (for one test)
set -euo pipefail

ROOT="${FLATNET_DEBROOT:-/var/cache/flatnet/debroot-trixie}"
DEPS="nftables iproute2"
STAMP="trixie minbase; downloaded: $DEPS"

die() { echo "debroot.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/lib-debian.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-debian.sh"

mirror() { echo "${FLATNET_DEBROOT_MIRROR:-$(debian_mirror)}"; }

build() {
    if [ -f "$ROOT/.flatnet-stamp" ] && [ "$(cat "$ROOT/.flatnet-stamp")" = "$STAMP" ]; then
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    local tmp="$ROOT.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$(dirname "$ROOT")"
    echo "debroot.sh: building a clean Debian 13 root in $ROOT (once)" >&2
    debootstrap --variant=minbase trixie "$tmp" "$(mirror)" >"$tmp.log" 2>&1 \
        || { tail -20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
    # shellcheck disable=SC2086
    if ! chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
        "apt-get update -qq && apt-get install -y -qq --download-only --no-install-recommends $DEPS" \
        >>"$tmp.log" 2>&1; then
        tail -20 "$tmp.log" >&2; die "fetching $DEPS failed (log: $tmp.log)"
    fi
    echo "$STAMP" > "$tmp/.flatnet-stamp"
    rm -rf "$ROOT"; mv "$tmp" "$ROOT"; rm -f "$tmp.log"
}

case "${1:-}" in
    "") build; echo "$ROOT" ;;
    copy)
        dir="${2:?usage: debroot.sh copy DIR}"
        build
        mkdir -p "$dir"
        cp -a "$ROOT/." "$dir/"
        echo "$dir"
        ;;
    *) die "usage: $0 [copy DIR]" ;;
esac
