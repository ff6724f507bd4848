#!/usr/bin/env bats
# The .deb packages (scripts/package-deb.sh): they install with apt into a
# clean Debian 13 root (scripts/debroot.sh: minbase, no Rust), their binaries
# run there, files have the right modes, the netavark link resolves, and an
# upgrade keeps the configuration and the state.

load helpers

setup_file() {
    export DEBS="$BATS_FILE_TMPDIR/debs"
    "$REPO_ROOT/scripts/package-deb.sh" --no-build --out "$DEBS" >/dev/null
    "$REPO_ROOT/scripts/package-deb.sh" --no-build --version 0.1.0+up1 --out "$DEBS/up" >/dev/null
    "$REPO_ROOT/scripts/debroot.sh" >/dev/null
}

setup() {
    fn_setup
    # A fresh root per test: an overlay on the cached clean one.
    ROOT="$FN_TMP/root"
    mkdir -p "$FN_TMP/upper" "$FN_TMP/work" "$ROOT"
    mount -t overlay overlay \
        -o "lowerdir=$("$REPO_ROOT/scripts/debroot.sh"),upperdir=$FN_TMP/upper,workdir=$FN_TMP/work" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mkdir -p "$ROOT/debs"
    cp -r "$DEBS"/. "$ROOT/debs/"
}

teardown() {
    umount "$ROOT/proc" 2>/dev/null || true
    umount "$ROOT" 2>/dev/null || true
    fn_teardown
}

in_root() { chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

apt_install() { in_root apt-get install -y -q --no-install-recommends "$@"; }

@test "the packages install into a clean Debian root; flatnetd, flatnetctl and lighthouse run there" {
    # Nothing of Flatnet, and no Rust, before.
    ! in_root sh -c 'command -v flatnetd || command -v cargo || command -v rustc' || false
    run apt_install /debs/flatnet_0.1.0_amd64.deb /debs/flatnet-lighthouse_0.1.0_amd64.deb
    echo "$output" | tail -5
    [ "$status" -eq 0 ]
    [ "$(in_root flatnetd --version)" = "flatnetd 0.1.0" ]
    [ "$(in_root lighthouse --version)" = "lighthouse 0.1.0" ]
    [ "$(in_root flatnetctl --version)" = "flatnetctl 0.1.0" ]
    # The dependencies came along (nft is what flatnetd drives).
    in_root nft --version
    # The plugin answers CNI VERSION; the netavark link reaches it.
    in_root sh -c 'CNI_COMMAND=VERSION /usr/lib/cni/flatnet </dev/null' | jq -e '.supportedVersions | index("1.0.0")'
    [ "$(readlink -f "$ROOT/usr/libexec/netavark/flatnet")" = "$ROOT/usr/lib/cni/flatnet" ]
    in_root /usr/libexec/netavark/flatnet info | jq -e '.version'
    # Modes: the config (a join token may sit there) and the state dirs.
    [ "$(stat -c %a "$ROOT/etc/flatnet/flatnetd.toml")" = 600 ]
    [ "$(stat -c %a "$ROOT/var/lib/flatnet")" = 700 ]
    [ "$(stat -c %a "$ROOT/var/lib/flatnet-lighthouse")" = 700 ]
    [ "$(stat -c %U "$ROOT/usr/bin/flatnetd")" = root ]
    [ -f "$ROOT/usr/lib/systemd/system/flatnetd.service" ]
    [ -f "$ROOT/usr/lib/systemd/system/lighthouse.service" ]
    [ -f "$ROOT/usr/share/flatnet/monitoring/flatnet-alerts.yml" ]
    grep -q '^ExecStart=/usr/bin/flatnetd ' "$ROOT/usr/lib/systemd/system/flatnetd.service"
    # The shipped config is the one flatnetd reads: it parses there.
    in_root flatnetd --config /etc/flatnet/flatnetd.toml join flatnet1_garbage 2>&1 | grep -q 'invalid join token'
}

@test "an upgrade keeps the configuration and the state; purge removes them" {
    apt_install /debs/flatnet_0.1.0_amd64.deb
    echo 'node_name = "kept-across-upgrades"' >> "$ROOT/etc/flatnet/flatnetd.toml"
    echo "lease database stand-in" > "$ROOT/var/lib/flatnet/ipam.redb"
    run apt_install /debs/up/flatnet_0.1.0+up1_amd64.deb
    echo "$output" | tail -5
    [ "$status" -eq 0 ]
    [ "$(in_root dpkg-query -W -f '${Version}' flatnet)" = 0.1.0+up1 ]
    grep -q 'kept-across-upgrades' "$ROOT/etc/flatnet/flatnetd.toml"
    [ "$(stat -c %a "$ROOT/etc/flatnet/flatnetd.toml")" = 600 ]
    [ "$(cat "$ROOT/var/lib/flatnet/ipam.redb")" = "lease database stand-in" ]
    # remove: the binaries go, the config and the state stay.
    in_root apt-get remove -y -q flatnet
    [ ! -e "$ROOT/usr/bin/flatnetd" ]
    [ ! -e "$ROOT/usr/libexec/netavark/flatnet" ]
    grep -q 'kept-across-upgrades' "$ROOT/etc/flatnet/flatnetd.toml"
    [ -f "$ROOT/var/lib/flatnet/ipam.redb" ]
    # purge: everything.
    in_root dpkg --purge flatnet
    [ ! -e "$ROOT/etc/flatnet" ]
    [ ! -e "$ROOT/var/lib/flatnet" ]
}
