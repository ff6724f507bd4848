#!/usr/bin/env bash
# Path-MTU benchmark (not a test): does auto-MTU (per-peer path MTU probing,
# per-peer routes with mtu, the MSS clamp) cost throughput on a plain
# 1500-byte LAN? The same two-host topology (suite 020's) runs the flatnetd
# of a baseline revision (before auto-MTU, built into a cache) and of this
# tree, in interleaved rounds: each round builds the lab with one build,
# measures container-to-container TCP with iperf3 both ways, and tears it
# down; then the other build. Prints a markdown table: median (min-max)
# Gbit/s per build and direction, and current/baseline.
#
#   cargo build --release && sudo tests/bench/pmtu-bench.sh
#   BASE=<git rev> ROUNDS=5 SECS=5 sudo tests/bench/pmtu-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BASE="${BASE:-d9a5a28}"
ROUNDS="${ROUNDS:-5}"
SECS="${SECS:-5}"
CURRENT="${FLATNET_TARGET:-$REPO/target/release}"
command -v iperf3 >/dev/null || { echo "iperf3 is missing: apt-get install iperf3" >&2; exit 1; }

BATS_SUITE_TEST_NUMBER=pmtu
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"
# shellcheck source=lab.bash
source "$HERE/lab.bash"
rev="$(git -C "$REPO" rev-parse --short "$BASE")"
BASEBIN="$(base_build "$REPO" "$BASE")"

cleanup() { set +e; fn_teardown 2>/dev/null; rm -f "${OUTF:-}"; }
trap cleanup EXIT


# round BINDIR: one lab with that build; prints "a_to_b b_to_a".
round() {
    FLATNET_TARGET="$1"
    FLATNET="$1/flatnet" FLATNETD="$1/flatnetd" FLATNETCTL="$1/flatnetctl"
    fn_setup
    wg_pair >/dev/null
    wg_wait_ping h1-a "$IPB" >/dev/null
    # Let probing settle (the current build measures 1500 in ~1 s).
    sleep 2
    echo "$(wg_iperf h2-b h1-a "$IPB") $(wg_iperf h1-a h2-b "$IPA")"
    fn_teardown
}

declare -A S
OUTF="$(mktemp)"
for r in $(seq "$ROUNDS"); do
    for build in base current; do
        dir="$BASEBIN"; [ "$build" = current ] && dir="$CURRENT"
        # Not a process substitution: the next round must wait for this
        # one's teardown.
        round "$dir" > "$OUTF"
        read -r ab ba < "$OUTF"

        S[$build-ab]+="$ab "
        S[$build-ba]+="$ba "
        echo "round $r $build: $ab / $ba Gbit/s" >&2
    done
done

# shellcheck source=stats.bash
source "$HERE/stats.bash"
echo "| direction | baseline $rev | current | current / baseline |"
echo "| --- | --- | --- | --- |"
for d in ab ba; do
    name="h1-a -> h2-b"; [ "$d" = ba ] && name="h2-b -> h1-a"
    mb="$(median <<<"${S[base-$d]}")"; mc="$(median <<<"${S[current-$d]}")"
    echo "| $name | $(stat <<<"${S[base-$d]}") Gbit/s | $(stat <<<"${S[current-$d]}") Gbit/s | $(awk -v a="$mc" -v b="$mb" 'BEGIN { printf "%.2f", a / b }') |"
done
echo "($ROUNDS interleaved rounds of ${SECS} s each way, median (min-max); $(date -u +%F))"
