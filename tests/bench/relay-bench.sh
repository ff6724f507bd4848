#!/usr/bin/env bash
# Relay benchmark (not a test): container-to-container TCP throughput in the
# NAT lab of suite 050 over the three paths a pair of hosts can have:
#   direct     cone NATs, punched: host to host over UDP
#   relay/QUIC symmetric NATs: through the Lighthouse, QUIC datagrams
#   relay/TCP  h1's router drops all UDP: h1 reaches the Lighthouse over
#              TLS/TCP 443 (suite 140), h2 over QUIC
# in interleaved rounds, one fresh lab per round and path; iperf3 each way.
# Prints a markdown table: median (min-max) Gbit/s, and each path / direct.
#
#   cargo build --release && sudo tests/bench/relay-bench.sh
#   ROUNDS=3 SECS=5 sudo tests/bench/relay-bench.sh
#   LH_BEFORE=aabd973 sudo tests/bench/relay-bench.sh   # + relay/QUIC through
#       that older Lighthouse (built once into /var/cache/flatnet by
#       lab.bash's base_build), interleaved with the rest
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-5}"
command -v iperf3 >/dev/null || { echo "iperf3 is missing: apt-get install iperf3" >&2; exit 1; }

BATS_SUITE_TEST_NUMBER=rl
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"
# shellcheck source=../integration/helpers-nat.bash
source "$HERE/../integration/helpers-nat.bash"
# shellcheck source=lab.bash
source "$HERE/lab.bash"

cleanup() {
    set +e
    fn_teardown 2>/dev/null
    rm -f "${OUTF:-}"
}
trap cleanup EXIT

# round PATH: one lab; prints "a_to_b b_to_a".
round() {
    local path="$1" want=relay lh="$LIGHTHOUSE"
    fn_setup
    nat_inet_create
    [ "$path" = quic-before ] && LIGHTHOUSE="$BEFORE"
    lh_start
    LIGHTHOUSE="$lh"
    case "$path" in
        direct) nat_router_create 1 ""; nat_router_create 2 ""; want=direct ;;
        quic | quic-before) nat_router_create 1 random; nat_router_create 2 random ;;
        tcp)
            nat_router_create 1 random
            in_ns r1 nft add table inet udpblock
            in_ns r1 nft add chain inet udpblock block '{ type filter hook forward priority -10; }'
            in_ns r1 nft add rule inet udpblock block meta l4proto udp drop
            nat_router_create 2 random
            ;;
    esac
    HOST_START_SECS=20 nat_host_create 1 >/dev/null
    nat_host_create 2 >/dev/null
    container_add h1 a >/dev/null
    container_add h2 b >/dev/null
    IPA="$(container_ip h1 a)"
    IPB="$(container_ip h2 b)"
    nat_wait_path h1 h2 "$want" 30 >/dev/null
    if [ "$path" = tcp ]; then
        [ "$(ctl h1 status --json | jq -r .lighthouse.transport)" = tcp ] \
            || { echo "h1 is not on TCP" >&2; exit 1; }
    fi
    wg_wait_ping h1-a "$IPB" 15 >/dev/null
    sleep 1
    local ab ba
    ab="$(wg_iperf h2-b h1-a "$IPB")"
    ba="$(wg_iperf h1-a h2-b "$IPA")"
    echo "$ab $ba"
    fn_teardown
}

PATHS="${PATHS:-direct quic tcp}"
if [ -n "${LH_BEFORE:-}" ]; then
    commit="$(git -C "$HERE/../.." rev-parse --short "$LH_BEFORE")"
    BEFORE="$(base_build "$HERE/../.." "$commit" lighthouse)/lighthouse"
    PATHS="${PATHS_BEFORE:-direct quic quic-before tcp}"
fi

declare -A S
OUTF="$(mktemp)"
for r in $(seq "$ROUNDS"); do
    for p in $PATHS; do
        round "$p" > "$OUTF"
        read -r ab ba < "$OUTF"
        S[$p-ab]+="$ab "
        S[$p-ba]+="$ba "
        echo "round $r $p: $ab / $ba Gbit/s" >&2
    done
done

# shellcheck source=stats.bash
source "$HERE/stats.bash"
echo "| path | h1-a -> h2-b (Gbit/s) | h2-b -> h1-a (Gbit/s) | / direct |"
echo "| --- | --- | --- | --- |"
dm="$(median <<<"${S[direct-ab]} ${S[direct-ba]}")"
for p in $PATHS; do
    name="direct (punched)"; [ "$p" = quic ] && name="relay over QUIC"; [ "$p" = tcp ] && name="relay over TCP (h1 without UDP)"
    [ "$p" = quic-before ] && name="relay over QUIC, Lighthouse $commit"
    m="$(median <<<"${S[$p-ab]} ${S[$p-ba]}")"
    echo "| $name | $(stat <<<"${S[$p-ab]}") | $(stat <<<"${S[$p-ba]}") | $(awk -v a="$m" -v b="$dm" 'BEGIN { printf "%.2f", a / b }') |"
done
echo "($ROUNDS interleaved rounds of ${SECS} s each way, median (min-max); $(date -u +%F))"
