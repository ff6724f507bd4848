#!/usr/bin/env bash
# Remote members benchmark (not a test): TCP throughput into a container on
# h2, in the lab of suite 160, side by side in one lab and interleaved:
#   host      a container on the hub h1 -> h2's container, over the Flatnet
#             (the baseline: what hosts get)
#   member    a member's laptop (stock wg-quick over wireguard-go, behind
#             its home NAT) -> hub h1 -> h2's container: two tunnels, the
#             member's policy checked on the hub and on h2
#   member1   the same laptop -> a container on the hub itself (one tunnel)
# Both directions (iperf3 -R for the reverse). Prints a markdown table:
# median (min-max) Gbit/s per path and each path / host.
#
#   cargo build --release && sudo tests/bench/members-bench.sh
#   ROUNDS=5 SECS=5 sudo tests/bench/members-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-5}"
for c in iperf3 wg-quick wireguard-go; do
    command -v "$c" >/dev/null || { echo "$c is missing: scripts/deps.sh installs it" >&2; exit 1; }
done

BATS_SUITE_TEST_NUMBER=mb
for h in helpers helpers-wg helpers-nat helpers-members; do
    # shellcheck source=/dev/null
    source "$HERE/../integration/$h.bash"
done
# shellcheck source=stats.bash
source "$HERE/stats.bash"

cleanup() {
    set +e
    fn_teardown 2>/dev/null
}
trap cleanup EXIT

fn_setup
nat_inet_create
lh_start
hub_router
nat_router_create 2 ""
nat_host_create 1 >/dev/null
nat_host_create 2 >/dev/null
container_add h1 web >/dev/null
container_add h2 forgejo >/dev/null
WEB="$(container_ip h1 web)"
FORGEJO="$(container_ip h2 forgejo)"
nat_wait_path h1 h2 direct 30 >/dev/null
lh policy set bench 'forgejo:5201/tcp' 'web:5201/tcp' >/dev/null
home_create home 9
member_conf alice --hub h1 --access bench --endpoint "203.0.113.11:$WG_PORT" 2>/dev/null
wgq home up "$FN_TMP/alice.conf" >/dev/null 2>&1
wg_wait_ping h1-web "$FORGEJO" 15 >/dev/null
sleep 2

declare -A S
for r in $(seq "$ROUNDS"); do
    for p in host member member1; do
        case "$p" in
            host) cli=h1-web srv=h2-forgejo ip="$FORGEJO" ;;
            member) cli=home srv=h2-forgejo ip="$FORGEJO" ;;
            member1) cli=home srv=h1-web ip="$WEB" ;;
        esac
        up="$(wg_iperf "$srv" "$cli" "$ip")"
        down="$(wg_iperf "$srv" "$cli" "$ip" -R)"
        S[$p-up]+="$up "
        S[$p-down]+="$down "
        echo "round $r $p: $up / $down Gbit/s" >&2
    done
done

echo "| path | to the container (Gbit/s) | from it (Gbit/s) | / host |"
echo "| --- | --- | --- | --- |"
hm="$(median <<<"${S[host-up]} ${S[host-down]}")"
for p in host member member1; do
    case "$p" in
        host) name="host: a container on the hub -> h2" ;;
        member) name="member (wg-quick, wireguard-go) -> hub -> h2" ;;
        member1) name="member -> a container on the hub" ;;
    esac
    m="$(median <<<"${S[$p-up]} ${S[$p-down]}")"
    echo "| $name | $(stat <<<"${S[$p-up]}") | $(stat <<<"${S[$p-down]}") | $(awk -v a="$m" -v b="$hm" 'BEGIN { printf "%.2f", a / b }') |"
done
echo "($ROUNDS interleaved rounds of ${SECS} s each way, median (min-max); $(wireguard-go --version 2>/dev/null | head -1); $(date -u +%F))"
