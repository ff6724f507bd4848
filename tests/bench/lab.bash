# Sourced by the data-plane benchmarks: a userspace WireGuard peer pair,
# ping samples, and CPU pinning of a lab host. Needs helpers.bash /
# helpers-wg.bash (ns, in_ns, wg_wait_ping, cpu_prefix), `wg`, and the
# caller's BG_PIDS array and FN_TMP.

# rtt_samples NS IP N: N ping RTTs in ms, one per line (10 ms apart); ping
# runs where cpu_prefix places processes of NS.
rtt_samples() {
    # shellcheck disable=SC2046 # a command prefix, or nothing
    in_ns "$1" $(cpu_prefix "$1") ping -c "$3" -i 0.01 "$2" | sed -nE 's/.*time=([0-9.]+) ms.*/\1/p'
}

# pin_ns NS CPULIST: every thread of every process in NS on CPULIST (a
# process that exits meanwhile is skipped).
pin_ns() {
    local p
    for p in $(ip netns pids "$(ns "$1")"); do
        taskset -a -p -c "$2" "$p" >/dev/null 2>&1 || true
    done
}

# uapi_pair NAME PORT NET CMD...: a userspace WireGuard that speaks the UAPI
# socket (boringtun-cli, wireguard-go) as interfaces NAME1 and NAME2 in h1
# and h2, on UDP PORT, tunnel addresses NET.1 and NET.2, MTU 1420; up from
# the start and idle while the other paths are measured.
uapi_pair() {
    local name="$1" port="$2" net="$3" i k1 k2
    shift 3
    mkdir -p /var/run/wireguard
    k1="$(wg genkey)"; k2="$(wg genkey)"
    for i in 1 2; do
        ip netns exec "$(ns "h$i")" env WG_SUDO=1 WG_PROCESS_FOREGROUND=1 "$@" "$name$i" \
            >"$FN_TMP/$name$i.log" 2>&1 &
        BG_PIDS+=($!)
        disown $!
        for _ in $(seq 100); do [ -S "/var/run/wireguard/$name$i.sock" ] && break; sleep 0.05; done
    done
    in_ns h1 wg set "${name}1" private-key <(echo "$k1") listen-port "$port" \
        peer "$(echo "$k2" | wg pubkey)" allowed-ips "$net.2/32" endpoint "192.168.77.2:$port"
    in_ns h2 wg set "${name}2" private-key <(echo "$k2") listen-port "$port" \
        peer "$(echo "$k1" | wg pubkey)" allowed-ips "$net.1/32" endpoint "192.168.77.1:$port"
    for i in 1 2; do
        in_ns "h$i" ip addr add "$net.$i/24" dev "$name$i"
        in_ns "h$i" ip link set "$name$i" mtu 1420 up
    done
    wg_wait_ping h1 "$net.2" >/dev/null
}

# base_build REPO REV [PACKAGE...]: the release binaries of git revision REV
# (by default flatnetd and the plugin), each package built once into the
# cache from a worktree; prints their dir.
base_build() {
    local repo="$1" rev cache p todo=()
    rev="$(git -C "$repo" rev-parse --short "$2")"
    shift 2
    [ "$#" -gt 0 ] || set -- flatnetd flatnet-cni
    cache="${FLATNET_CACHE:-/var/cache/flatnet}/bench-base/$rev"
    for p in "$@"; do
        [ -e "$cache/built-$p" ] || todo+=(-p "$p")
    done
    if [ "${#todo[@]}" -gt 0 ]; then
        echo "building baseline $rev (${todo[*]}) into $cache (once)" >&2
        rm -rf "$cache/src"
        mkdir -p "$cache"
        git -C "$repo" worktree add --detach -f "$cache/src" "$rev" >/dev/null
        (cd "$cache/src" && CARGO_TARGET_DIR="$cache/target" \
            cargo build --release --locked "${todo[@]}" >&2)
        git -C "$repo" worktree remove --force "$cache/src"
        for p in "$@"; do touch "$cache/built-$p"; done
    fi
    echo "$cache/target/release"
}
