#!/usr/bin/env bash
# Podman 5 benchmark (not a test): the flatnet driver against Podman's own
# bridge driver, side by side on the same real Podman 5 (the Debian 13 root of
# scripts/podman5.sh), in interleaved rounds:
#   1. `podman run -d` until the container runs, and `podman rm -f -t 0`;
#   2. throughput of a published port (`-p`), iperf3 TCP from the host's
#      localhost and from a LAN namespace, to a container on each network.
# Prints a markdown table with medians, the spread (min-max) and flatnet/bridge.
#
#   scripts/deps.sh && cargo build --release && sudo tests/bench/podman5-bench.sh
#
# ROUNDS (default 10) start/remove rounds; IPERF_ROUNDS (3) of SECS (3) s.
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-10}"
IPERF_ROUNDS="${IPERF_ROUNDS:-3}"
SECS="${SECS:-3}"
BATS_SUITE_TEST_NUMBER=b
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/podman5.bash
source "$HERE/../integration/podman5.bash"

IPERF_IMAGE="localhost/flatnet-iperf3"

cleanup() {
    set +e
    p5_teardown
    fn_teardown
    "$P5" stop
}
trap cleanup EXIT

command -v iperf3 >/dev/null || { echo "iperf3 is missing: apt-get install iperf3" >&2; exit 1; }
p5_setup_file
fn_setup
host_create h1 10.87.9.0/24
p5_setup
p5_net h1 fnet

# The iperf3 image: the host's iperf3 with the libraries it links, plus busybox.
if ! p5 h1 image exists "$IPERF_IMAGE"; then
    root="$FN_TMP/iperf-rootfs"
    busybox_rootfs "$root"
    mkdir -p "$root/usr/bin"
    cp "$(command -v iperf3)" "$root/usr/bin/iperf3"
    for lib in $(ldd "$(command -v iperf3)" | grep -oE '/[^ ]+'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    "$P5" run sh -c "tar -C '$root' -c . | podman import - '$IPERF_IMAGE'" >/dev/null
fi

# A LAN namespace wired to h1 (192.168.67.1) as 192.168.67.2.
ip netns add "$(ns lan)"
in_ns lan ip link set lo up
ip link add p5b-l0 netns "$(ns h1)" type veth peer name lan0 netns "$(ns lan)"
in_ns h1 ip addr add 192.168.67.1/24 dev p5b-l0
in_ns h1 ip link set p5b-l0 up
in_ns lan ip addr add 192.168.67.2/24 dev lan0
in_ns lan ip link set lan0 up

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

declare -A RUN RM
for net in podman fnet; do RUN[$net]=""; RM[$net]=""; done
echo "podman run/rm: $ROUNDS interleaved rounds" >&2
for i in $(seq "$ROUNDS"); do
    order="podman fnet"; [ $((i % 2)) = 0 ] && order="fnet podman"
    for net in $order; do
        t=$(date +%s%N)
        p5 h1 run -d --name "$C-b$net" --network "$net" "$P5_IMAGE" sleep 600 >/dev/null
        RUN[$net]+="$(ms_since "$t") "
        t=$(date +%s%N)
        p5 h1 rm -f -t 0 "$C-b$net" >/dev/null
        RM[$net]+="$(ms_since "$t") "
    done
done

# stats "v v v": median min max
stats() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%s %s %s", m, a[1], a[NR]}'; }

# Published-port throughput: one iperf3 server per network.
p5 h1 run -d --name "$C-ipodman" --network podman -p 5301:5201 "$IPERF_IMAGE" iperf3 -s >/dev/null
p5 h1 run -d --name "$C-ifnet" --network fnet -p 5302:5201 "$IPERF_IMAGE" iperf3 -s >/dev/null
sleep 1
gbps() {
    in_ns "$1" iperf3 -c "$2" -p "$3" -t "$SECS" -J | jq '.end.sum_received.bits_per_second / 1e9' |
        awk '{ printf "%.2f", $1 }'
}
declare -A TP
for k in podman-lo fnet-lo podman-lan fnet-lan; do TP[$k]=""; done
echo "published-port iperf3: $IPERF_ROUNDS interleaved rounds of ${SECS}s" >&2
for i in $(seq "$IPERF_ROUNDS"); do
    order="podman fnet"; [ $((i % 2)) = 0 ] && order="fnet podman"
    for net in $order; do
        port=5301; [ "$net" = fnet ] && port=5302
        TP[$net-lo]+="$(gbps h1 127.0.0.1 $port) "
        TP[$net-lan]+="$(gbps lan 192.168.67.1 $port) "
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
row() {
    local what="$1" unit="$2" b f
    read -r bm bmin bmax <<< "$(stats "$3")"
    read -r fm fmin fmax <<< "$(stats "$4")"
    printf '| %s | %s %s (%s-%s) | %s %s (%s-%s) | %s |\n' "$what" "$bm" "$unit" "$bmin" "$bmax" \
        "$fm" "$unit" "$fmin" "$fmax" "$(ratio "$fm" "$bm")"
}
echo
echo "Podman 5.4.2 / netavark 1.14, $(date -u +%Y-%m-%d), medians (min-max)"
echo
echo "| what | bridge driver | flatnet driver | flatnet / bridge |"
echo "| --- | --- | --- | --- |"
row "podman run -d to running" ms "${RUN[podman]}" "${RUN[fnet]}"
row "podman rm -f -t 0" ms "${RM[podman]}" "${RM[fnet]}"
row "-p throughput from host localhost" Gbit/s "${TP[podman-lo]}" "${TP[fnet-lo]}"
row "-p throughput from a LAN machine" Gbit/s "${TP[podman-lan]}" "${TP[fnet-lan]}"
