#!/usr/bin/env bash
# MTU-drop benchmark (not a test): a host's own link narrows under running
# hosts (Windows connects a VPN under a WSL2 VM), and 20 MB go from a
# container on it to one on the other host at once. How long that takes,
# against the same 20 MB once the narrower path is learnt, for a baseline
# build (the commit before the fix, built once into a cache) and this tree,
# in interleaved rounds. Prints a markdown table: median (min-max) seconds.
#
#   cargo build --release && sudo tests/bench/mtu-drop-bench.sh
#   BASE=<git rev> ROUNDS=5 MTUS="1400 1280" sudo tests/bench/mtu-drop-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BASE="${BASE:-a5ac2ac}"
ROUNDS="${ROUNDS:-3}"
MTUS="${MTUS:-1400 1280}"
CURRENT="${FLATNET_TARGET:-$REPO/target/release}"

BATS_SUITE_TEST_NUMBER=mtud
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"
# shellcheck source=lab.bash
source "$HERE/lab.bash"
rev="$(git -C "$REPO" rev-parse --short "$BASE")"
BASEBIN="$(base_build "$REPO" "$BASE")"

cleanup() { set +e; fn_teardown 2>/dev/null; }
trap cleanup EXIT

# send_20mb: seconds for $FN_TMP/blob from h1-a to h2-b, arriving intact
# ("fail" after 60 s).
send_20mb() {
    local t0 got
    rm -f "$FN_TMP/got"
    sink_sha h2-b 9100 "$FN_TMP/got" >/dev/null
    t0=$(date +%s%N)
    if ! timeout 60 bash -c "$(declare -f in_ns ns send_file); FN_PREFIX=$FN_PREFIX; send_file h1-a $IPB 9100 $FN_TMP/blob"; then
        kill "$(cat "$FN_TMP/got.pid")" 2>/dev/null || true
        echo fail
        return
    fi
    for _ in $(seq 100); do [ -s "$FN_TMP/got" ] && break; sleep 0.05; done
    got="$(cat "$FN_TMP/got" 2>/dev/null || true)"
    if [ "$got" = "$WANT" ]; then
        awk -v n="$(( $(date +%s%N) - t0 ))" 'BEGIN { printf "%.2f", n / 1e9 }'
    else
        echo fail
    fi
}

# round BINDIR MTU: one lab with that build; prints "after_drop learnt".
round() {
    FLATNET_TARGET="$1"
    FLATNET="$1/flatnet" FLATNETD="$1/flatnetd" FLATNETCTL="$1/flatnetctl"
    fn_setup
    wg_pair >/dev/null
    wg_wait_ping h1-a "$IPB" >/dev/null
    sleep 2 # the 1500-byte path is measured
    head -c 20000000 /dev/urandom > "$FN_TMP/blob"
    WANT="$(sha256sum < "$FN_TMP/blob" | cut -d' ' -f1)"
    wg_lan_mtu h1 "$2"
    local first
    first="$(send_20mb)"
    sleep 8 # every build has re-read its route by now
    echo "$first $(send_20mb)"
    fn_teardown
}

declare -A S
for r in $(seq "$ROUNDS"); do
    for mtu in $MTUS; do
        for build in base current; do
            dir="$BASEBIN"; [ "$build" = current ] && dir="$CURRENT"
            out="$(round "$dir" "$mtu")"
            read -r first learnt <<<"$out"
            S[$build-$mtu-first]+="$first "
            S[$build-$mtu-learnt]+="$learnt "
            echo "round $r, mtu $mtu, $build: first 20 MB ${first} s, once learnt ${learnt} s" >&2
        done
    done
done

# shellcheck source=stats.bash
source "$HERE/stats.bash"
# Rounds that failed (no answer in 60 s) count as 60 s in the median.
num() { tr ' ' '\n' | grep . | sed 's/^fail$/60/' | tr '\n' ' '; }
echo "| link MTU | 20 MB right after the drop, baseline $rev | this tree | 20 MB once learnt, baseline | this tree |"
echo "| --- | --- | --- | --- | --- |"
for mtu in $MTUS; do
    row="| 1500 -> $mtu |"
    for k in first learnt; do
        for build in base current; do
            row+=" $(num <<<"${S[$build-$mtu-$k]}" | stat) s |"
        done
    done
    echo "$row"
done
echo "($ROUNDS interleaved rounds, median (min-max), a failed transfer counted as 60 s; offloads on; $(date -u +%F))"
