#!/usr/bin/env bash
# Where the data plane's cycles go (not a test): the suite-020 pair (two
# hosts on a bridged LAN, a container on each), one iperf3 TCP stream
# container to container, `perf record` (cpu-clock samples, call graphs)
# on both flatnetd processes while it runs. Prints, per host, the share of
# samples per thread and the top symbols (self time), as markdown.
#
#   cargo build --release
#   FLATNET_TARGET=target/release SECS=10 tests/bench/dataplane-profile.sh
#
# cpu-clock, not cycles: this machine's perf has no hardware counters;
# timer samples still say where the time is spent. The release profile
# keeps debug info, so symbols resolve. Needs root, perf, iperf3, jq.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${SECS:-10}"
TOP="${TOP:-18}"
BATS_SUITE_TEST_NUMBER=bench
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"

if ! command -v perf >/dev/null; then
    echo "dataplane-profile.sh: perf is missing (apt-get install linux-perf)" >&2
    exit 1
fi
trap fn_teardown EXIT
fn_setup
wg_pair >/dev/null
wg_wait_ping h1-a "$IPB" >/dev/null

# perf on both daemons for SECS s, the stream (wg_iperf, also SECS s) beside it.
for h in h1 h2; do
    perf record -q -e cpu-clock -F 2000 -g -o "$FN_TMP/$h.perf" \
        -p "$(cat "$FN_TMP/$h/flatnetd.pid")" -- sleep "$SECS" 2>/dev/null &
done
gbps="$(wg_iperf h2-b h1-a "$IPB")"
wait

printf 'iperf3 h1-a -> h2-b, %s s: %s Gbit/s (h1 encrypts, h2 decrypts)\n' "$SECS" "$gbps"
for h in h1 h2; do
    echo
    echo "### $h: samples per thread"
    echo
    echo "| thread | share |"
    echo "| --- | ---: |"
    perf report -i "$FN_TMP/$h.perf" --stdio --no-children --sort comm 2>/dev/null |
        awk '/^ +[0-9.]+%/ {printf "| %s | %s |\n", $2, $1}'
    echo
    echo "### $h: top $TOP symbols (self)"
    echo
    echo "| share | thread | symbol |"
    echo "| ---: | --- | --- |"
    perf report -i "$FN_TMP/$h.perf" --stdio --no-children --sort comm,symbol -g none 2>/dev/null |
        awk -v top="$TOP" '/^ +[0-9.]+%/ && n++ < top {
            pct = $1; comm = $2; $1 = ""; $2 = ""; $3 = "";
            sub(/^ +/, ""); sub(/ +- +- *$/, "");
            printf "| %s | %s | %s |\n", pct, comm, substr($0, 1, 90) }'
done
