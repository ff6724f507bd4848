#!/usr/bin/env bash
# Metrics benchmark (not a test): what serving /metrics costs the data plane.
# The same two-host topology (suite 020's) runs this tree's flatnetd with
# metrics off and with `[metrics] listen` on both hosts while a scraper
# reads /metrics every second on both (Prometheus scrapes every 15 s or so:
# this is fifteen times harsher), in interleaved rounds; each round measures
# container-to-container TCP with iperf3 both ways. Prints a markdown table:
# median (min-max) Gbit/s per setting and direction, and on/off.
# Goal (issue 13): on/off >= 0.98.
#
#   cargo build --release && sudo tests/bench/metrics-bench.sh
#   ROUNDS=5 SECS=5 sudo tests/bench/metrics-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-5}"
SECS="${SECS:-5}"
command -v iperf3 >/dev/null || { echo "iperf3 is missing: apt-get install iperf3" >&2; exit 1; }

BATS_SUITE_TEST_NUMBER=mx
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"

SCRAPER=""
cleanup() {
    set +e
    [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null
    fn_teardown 2>/dev/null
    rm -f "${OUTF:-}"
}
trap cleanup EXIT

# round on|off: one lab; prints "a_to_b b_to_a scrapes".
round() {
    local mode="$1" n=0
    fn_setup
    if [ "$mode" = on ]; then
        WG_HOST_EXTRA='[metrics]
listen = "127.0.0.1:9587"' wg_pair >/dev/null
        # Scrape both hosts every second for the whole round.
        ( while true; do
              in_ns h1 curl -sf -o /dev/null http://127.0.0.1:9587/metrics
              in_ns h2 curl -sf -o /dev/null http://127.0.0.1:9587/metrics
              echo x >> "$FN_TMP/scrapes"
              sleep 1
          done ) >/dev/null 2>&1 &
        SCRAPER=$!
    else
        wg_pair >/dev/null
    fi
    wg_wait_ping h1-a "$IPB" >/dev/null
    sleep 2
    local ab ba
    ab="$(wg_iperf h2-b h1-a "$IPB")"
    ba="$(wg_iperf h1-a h2-b "$IPA")"
    if [ -n "$SCRAPER" ]; then
        kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""
        n="$(wc -l < "$FN_TMP/scrapes")"
    fi
    echo "$ab $ba $n"
    fn_teardown
}

declare -A S
OUTF="$(mktemp)"
for r in $(seq "$ROUNDS"); do
    for mode in off on; do
        round "$mode" > "$OUTF"
        read -r ab ba n < "$OUTF"
        if [ "$mode" = on ] && [ "$n" -lt "$((SECS * 2 - 2))" ]; then
            echo "round $r: only $n scrapes during the round; the scraper is not working" >&2
            exit 1
        fi
        S[$mode-ab]+="$ab "
        S[$mode-ba]+="$ba "
        echo "round $r metrics $mode: $ab / $ba Gbit/s${n:+ ($n scrape pairs)}" >&2
    done
done

# shellcheck source=stats.bash
source "$HERE/stats.bash"
echo "| direction | metrics off | metrics on, scraped every 1 s | on / off |"
echo "| --- | --- | --- | --- |"
for d in ab ba; do
    name="h1-a -> h2-b"; [ "$d" = ba ] && name="h2-b -> h1-a"
    mo="$(median <<<"${S[off-$d]}")"; mn="$(median <<<"${S[on-$d]}")"
    echo "| $name | $(stat <<<"${S[off-$d]}") Gbit/s | $(stat <<<"${S[on-$d]}") Gbit/s | $(awk -v a="$mn" -v b="$mo" 'BEGIN { printf "%.2f", a / b }') |"
done
echo "($ROUNDS interleaved rounds of ${SECS} s each way, median (min-max); $(date -u +%F))"
