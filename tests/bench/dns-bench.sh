#!/usr/bin/env bash
# Flatnet DNS benchmark (not a test): dnsperf against flatnetd's DNS and
# against aardvark-dns 1.14 (Podman's own, from the Debian 13 root of
# scripts/podman5.sh), both serving the same NAMES container names, side by
# side in interleaved rounds:
#   1. throughput: dnsperf with 4 clients for SECS seconds, as fast as it can;
#   2. latency: dnsperf at a fixed RATE queries/s, per-query latencies read
#      from its verbose output, p50 and p99.
# Prints a markdown table: medians over ROUNDS, (min-max), flatnet/aardvark.
#
#   scripts/deps.sh && apt-get install -y dnsperf && cargo build --release &&
#       sudo tests/bench/dns-bench.sh
#
# Each server is asked from inside its own network namespace, on its own
# listening address; all traffic stays in namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAMES="${NAMES:-100}"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-5}"
RATE="${RATE:-5000}"
BATS_SUITE_TEST_NUMBER=d
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/podman5.bash
source "$HERE/../integration/podman5.bash"
command -v dnsperf >/dev/null || { echo "dnsperf is missing: apt-get install dnsperf" >&2; exit 1; }

AARDVARK=/usr/lib/podman/aardvark-dns
AV_IP=10.88.99.1

cleanup() {
    set +e
    [ -f "${FN_TMP:-/nonexistent}/aardvark/aardvark.pid" ] && kill "$(cat "$FN_TMP/aardvark/aardvark.pid")" 2>/dev/null
    fn_teardown
    "$P5" stop
}
trap cleanup EXIT

"$P5" start "$P5_SHARE" >/dev/null
fn_setup
host_create h1 10.87.9.0/24 "[dns]
resolv_conf = \"/dev/null\""
GW="$(ctl h1 status --json | jq -r .network.gateway)"

echo "wiring $NAMES containers on flatnet" >&2
for i in $(seq "$NAMES"); do container_add h1 "c$i" >/dev/null; done
for i in $(seq 50); do
    [ "$(ctl h1 names --json | jq '.names | length')" -ge "$NAMES" ] && break
    sleep 0.1
done

# aardvark-dns with the same names, in its own namespace, its address on lo.
ip netns add "$(ns av)"
in_ns av ip link set lo up
in_ns av ip addr add "$AV_IP/32" dev lo
mkdir -p "$FN_TMP/aardvark"
{
    echo "$AV_IP"
    for i in $(seq "$NAMES"); do
        printf 'cid%064d %s  c%s\n' "$i" "$(container_ip h1 "c$i")" "$i"
    done
} > "$FN_TMP/aardvark/bench"
"$P5" run --net "$(ns av)" "$AARDVARK" --config "$FN_TMP/aardvark" -p 53 run >/dev/null 2>&1 || true
for i in $(seq 50); do
    in_ns av dig +short +time=1 +tries=1 "@$AV_IP" c1 | grep -q . && break
    sleep 0.1
done
[ "$(in_ns av dig +short "@$AV_IP" c1)" = "$(container_ip h1 c1)" ] || { echo "aardvark-dns did not answer" >&2; exit 1; }
[ "$(in_ns h1 dig +short "@$GW" c1)" = "$(container_ip h1 c1)" ] || { echo "flatnetd did not answer" >&2; exit 1; }

for i in $(seq "$NAMES"); do echo "c$i A"; done > "$FN_TMP/queries"

# qps NS SERVER: queries per second, as fast as dnsperf can ask.
qps() {
    in_ns "$1" dnsperf -s "$2" -d "$FN_TMP/queries" -l "$SECS" -c 4 -T 2 -q 200 2>/dev/null |
        awk '/Queries per second/ { printf "%.0f", $4 }'
}
# lat NS SERVER: "p50 p99" in ms at RATE queries per second.
lat() {
    in_ns "$1" dnsperf -s "$2" -d "$FN_TMP/queries" -l 3 -Q "$RATE" -v 2>/dev/null |
        awk '$1 == ">" { print $NF * 1000 }' | sort -n |
        awk '{ a[NR] = $1 } END { printf "%.3f %.3f", a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1] }'
}

declare -A QPS P50 P99
for k in flat av; do QPS[$k]=""; P50[$k]=""; P99[$k]=""; done
echo "dnsperf: $ROUNDS interleaved rounds, ${SECS}s flat out and 3s at $RATE q/s, $NAMES names" >&2
for r in $(seq "$ROUNDS"); do
    order="flat av"; [ $((r % 2)) = 0 ] && order="av flat"
    for k in $order; do
        if [ "$k" = flat ]; then n=h1 s="$GW"; else n=av s="$AV_IP"; fi
        QPS[$k]+="$(qps "$n" "$s") "
        read -r p50 p99 <<< "$(lat "$n" "$s")"
        P50[$k]+="$p50 "
        P99[$k]+="$p99 "
    done
done

stats() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{a[NR]=$1} END {printf "%s %s %s", a[int((NR+1)/2)], a[1], a[NR]}'; }
row() {
    local what="$1" unit="$2"
    read -r fm fmin fmax <<< "$(stats "$3")"
    read -r am amin amax <<< "$(stats "$4")"
    printf '| %s | %s %s (%s-%s) | %s %s (%s-%s) | %s |\n' "$what" "$am" "$unit" "$amin" "$amax" \
        "$fm" "$unit" "$fmin" "$fmax" "$(awk -v a="$fm" -v b="$am" 'BEGIN { printf "%.2fx", a / b }')"
}
echo
echo "dnsperf $(dnsperf -h 2>&1 | sed -nE 's/Version ([0-9.]+).*/\1/p' | head -1), $NAMES names, $(date -u +%Y-%m-%d), medians (min-max)"
echo
echo "| what | aardvark-dns 1.14 | flatnetd | flatnetd / aardvark |"
echo "| --- | --- | --- | --- |"
row "queries/s, 4 clients flat out" "q/s" "${QPS[flat]}" "${QPS[av]}"
row "p50 latency at $RATE q/s" ms "${P50[flat]}" "${P50[av]}"
row "p99 latency at $RATE q/s" ms "${P99[flat]}" "${P99[av]}"
