#!/usr/bin/env bash
# Flatnet data plane benchmark (not a test): iperf3 TCP and ping RTT between
# two "hosts" (network namespaces on a bridged LAN), side by side in one run:
#   1. raw veth/bridge, no tunnel (the ceiling),
#   2. Flatnet: container to container across the two hosts' flatnetd,
#   3. Flatnet host to host (no container veth hops, as rows 1 and 5),
#   4. Flatnet with [wireguard] offloads = false (daemons restarted),
#   5. boringtun-cli between the same two namespaces (the reference).
# Prints a markdown table. Needs root, iperf3, jq, and for row 3
# boringtun-cli + wg (wireguard-tools); row 3 is skipped if they are missing.
#
#   cargo build --release
#   apt-get install -y iperf3 wireguard-tools
#   cargo install --locked boringtun-cli --root /work/.bench-tools
#   FLATNET_TARGET=target/release BORINGTUN=/work/.bench-tools/bin/boringtun-cli \
#       tests/bench/wireguard-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${SECS:-5}"
BORINGTUN="${BORINGTUN:-$(command -v boringtun-cli || echo /work/.bench-tools/bin/boringtun-cli)}"
BATS_SUITE_TEST_NUMBER=bench
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"

cleanup() {
    set +e
    for p in "${BG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    fn_teardown
    rm -f /var/run/wireguard/fnbt1.sock /var/run/wireguard/fnbt2.sock
}
BG_PIDS=()
trap cleanup EXIT

fn_setup
wg_pair >/dev/null
wg_wait_ping h1-a "$IPB" >/dev/null


# rtt_samples NS IP N: N ping RTTs in ms, one per line (10 ms apart).
rtt_samples() {
    in_ns "$1" ping -c "$3" -i 0.01 "$2" | sed -nE 's/.*time=([0-9.]+) ms.*/\1/p'
}

# boringtun-cli between the same two namespaces, up from the start (idle while
# the others are measured), so RTTs can be taken in interleaved rounds.
HAVE_BT=0
if [ -x "$BORINGTUN" ] && command -v wg >/dev/null; then
    # boringtun-cli on its own port and interfaces, same namespaces and LAN.
    mkdir -p /var/run/wireguard
    k1="$(wg genkey)"; k2="$(wg genkey)"
    for i in 1 2; do
        ip netns exec "$(ns "h$i")" env WG_SUDO=1 "$BORINGTUN" --foreground \
            --disable-drop-privileges "fnbt$i" >"$FN_TMP/boringtun$i.log" 2>&1 &
        BG_PIDS+=($!)
        disown $!
        for _ in $(seq 100); do [ -S "/var/run/wireguard/fnbt$i.sock" ] && break; sleep 0.05; done
    done
    in_ns h1 wg set fnbt1 private-key <(echo "$k1") listen-port 51821 \
        peer "$(echo "$k2" | wg pubkey)" allowed-ips 10.99.0.2/32 endpoint 192.168.77.2:51821
    in_ns h2 wg set fnbt2 private-key <(echo "$k2") listen-port 51821 \
        peer "$(echo "$k1" | wg pubkey)" allowed-ips 10.99.0.1/32 endpoint 192.168.77.1:51821
    for i in 1 2; do
        in_ns "h$i" ip addr add "10.99.0.$i/24" dev "fnbt$i"
        in_ns "h$i" ip link set "fnbt$i" mtu 1420 up
    done
    wg_wait_ping h1 10.99.0.2 >/dev/null
    HAVE_BT=1
else
    echo "boringtun-cli or wg missing: skipping the boringtun row" >&2
fi

declare -A GBPS RTT RTT90
# RTT: 5 interleaved rounds of 40 pings per path, so every path sees the same
# machine conditions; the median and 90th percentile of all 200 samples.
declare -A SAMPLES
paths=(raw flatnet hosts)
[ "$HAVE_BT" = 1 ] && paths+=(boringtun)
target() {
    case "$1" in
        raw) echo "h1 192.168.77.2" ;; flatnet) echo "h1-a $IPB" ;;
        hosts) echo "h1 10.87.2.1" ;; boringtun) echo "h1 10.99.0.2" ;; plain) echo "h1-a $IPB" ;;
    esac
}
pct() { sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p+0.5); if (i<1) i=1; printf "%.3f", a[i]}'; }
rtt_rounds() {
    local r k
    for r in 1 2 3 4 5; do
        for k in "$@"; do
            # shellcheck disable=SC2046
            SAMPLES[$k]+="$(rtt_samples $(target "$k") 40)"$'\n'
        done
    done
    for k in "$@"; do
        RTT[$k]="$(printf '%s' "${SAMPLES[$k]}" | grep . | pct 0.5)"
        RTT90[$k]="$(printf '%s' "${SAMPLES[$k]}" | grep . | pct 0.9)"
    done
}
rtt_rounds "${paths[@]}"

GBPS[raw]="$(wg_iperf h2 h1 192.168.77.2)"
GBPS[flatnet]="$(wg_iperf h2-b h1-a "$IPB")"
# Host to host through the tunnel (h2's gateway address), like rows 1 and 5.
GBPS[hosts]="$(wg_iperf h2 h1 10.87.2.1)"
[ "$HAVE_BT" = 1 ] && GBPS[boringtun]="$(wg_iperf h2 h1 10.99.0.2)"

# The same daemons restarted with offloads = false (containers untouched):
# what TSO/GSO/GRO buy.
for h in h1 h2; do
    sed -i 's/^\[wireguard\]$/[wireguard]\noffloads = false/' "$FN_TMP/$h/flatnetd.toml"
    host_kill "$h"
    host_start "$h" >/dev/null
done
wg_wait_ping h1-a "$IPB" 15 >/dev/null
GBPS[plain]="$(wg_iperf h2-b h1-a "$IPB")"
rtt_rounds plain

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }
echo "| path | TCP throughput (${SECS} s) | vs boringtun-cli | ping RTT median / p90 |"
echo "| --- | --- | --- | --- |"
for k in raw flatnet hosts plain boringtun; do
    [ -n "${GBPS[$k]:-}" ] || continue
    case "$k" in
        raw) name="raw veth + bridge, no tunnel" ;;
        flatnet) name="Flatnet container to container (offloads on)" ;;
        hosts) name="Flatnet host to host (h1 -> h2's gateway IP)" ;;
        plain) name="Flatnet with offloads = false (container to container)" ;;
        boringtun) name="boringtun-cli 0.7 (default threads)" ;;
    esac
    echo "| $name | ${GBPS[$k]} Gbit/s | $(ratio "${GBPS[$k]}" "${GBPS[boringtun]:-0}") | ${RTT[$k]} / ${RTT90[$k]} ms |"
done
