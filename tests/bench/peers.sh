#!/usr/bin/env bash
# The data-plane bench's strong peers, from Debian's own packages, unpacked
# into a cache outside the clone (the system's packages are left alone:
# suite 160 uses Debian 12's wireguard-go as a member's laptop would):
#   - wireguard-go 0.0.20231211 (TUN offloads) from bookworm-backports,
#   - Nebula from Debian 13 (trixie);
# and boringtun-cli (not packaged by Debian) with `cargo install --locked`.
# Both are static Go binaries, so Debian 13's Nebula runs on Debian 12.
#
#   tests/bench/peers.sh          # fetch once; prints the directory
#
# Prints the directory holding wireguard-go/ and nebula/ (each a .deb
# unpacked: usr/bin/...) and boringtun/bin/boringtun-cli.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../scripts/lib-debian.sh
source "$HERE/../../scripts/lib-debian.sh"

DIR="${FLATNET_BENCH_PEERS:-/var/cache/flatnet/bench-peers}"
if [ -x "$DIR/wireguard-go/usr/bin/wireguard-go" ] && [ -x "$DIR/nebula/usr/bin/nebula" ] &&
    [ -x "$DIR/boringtun/bin/boringtun-cli" ]; then
    echo "$DIR"
    exit 0
fi

if [ ! -x "$DIR/boringtun/bin/boringtun-cli" ]; then
    if ! cargo install --quiet --locked boringtun-cli --version "${BORINGTUN_VERSION:-0.7.0}" \
        --root "$DIR/boringtun" >"$DIR/boringtun-install.log" 2>&1; then
        echo "peers.sh: cargo install boringtun-cli failed (see $DIR/boringtun-install.log)" >&2
        exit 1
    fi
fi
mkdir -p "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs"
mirror="$(debian_mirror)"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$DIR/apt/sources.list" <<EOF
deb [signed-by=$keyring] $mirror bookworm-backports main
deb [signed-by=$keyring] $mirror trixie main
EOF
# A private apt: its own sources and lists, so the machine's apt never sees
# these suites.
APT=(apt-get -qq -o APT::Sandbox::User=root
    -o "Dir::Etc::SourceList=$DIR/apt/sources.list"
    -o "Dir::Etc::SourceParts=$DIR/apt/none"
    -o "Dir::State::Lists=$DIR/apt/lists"
    -o "Dir::Cache=$DIR/apt/cache"
    -o "APT::Get::List-Cleanup=false")
if ! "${APT[@]}" update >"$DIR/apt/update.log" 2>&1; then
    echo "peers.sh: apt-get update of bookworm-backports and trixie failed (see $DIR/apt/update.log)" >&2
    exit 1
fi
(
    cd "$DIR/debs"
    "${APT[@]}" download wireguard-go/bookworm-backports nebula/trixie
)
for pkg in wireguard-go nebula; do
    deb="$(ls "$DIR/debs/${pkg}"_*.deb | head -1)"
    rm -rf "${DIR:?}/$pkg"
    dpkg-deb -x "$deb" "$DIR/$pkg"
    basename "$deb" >"$DIR/$pkg/VERSION"
done
echo "$DIR"
