#!/usr/bin/env bash
# Time from "both nodes up" to a working path, in the NAT lab of suite 050:
# cone NATs (plain masquerade) until both sides report `direct`, symmetric
# NATs (`masquerade random`) until the first ping crosses the relay.
# Baseline, side by side: two hosts on one LAN with each other's key and
# endpoint configured statically (no Lighthouse, no NAT), restarted, until
# both have a WireGuard session: the floor a tunnel needs to come up.
# Prints a table; asserts nothing. Run as root after `cargo build --release`.
#
#   tests/bench/nat-bench.sh [RUNS]      (default 5)
set -euo pipefail
RUNS="${1:-5}"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=/dev/null
source "$here/../integration/helpers.bash"
# shellcheck source=/dev/null
source "$here/../integration/helpers-wg.bash"
# shellcheck source=/dev/null
source "$here/../integration/helpers-nat.bash"
FN_PREFIX="fnbench$$"

now_ms() { date +%s%3N; }

# one MODE: prints milliseconds from both flatnetds answering to the goal.
one() {
    local mode="$1" t0 i
    fn_setup
    trap fn_teardown RETURN
    nat_inet_create
    lh_start
    nat_router_create 1 "$mode"
    nat_router_create 2 "$mode"
    nat_host_create 1
    nat_host_create 2
    t0="$(now_ms)"
    if [ -z "$mode" ]; then
        for i in $(seq 1000); do
            [ "$(wg_peer h1 h2 path)" = direct ] && [ "$(wg_peer h2 h1 path)" = direct ] && break
            sleep 0.01
        done
    else
        container_add h1 a >/dev/null
        container_add h2 b >/dev/null
        t0="$(now_ms)"
        for i in $(seq 200); do
            in_ns h1-a ping -c1 -W0.1 "$(container_ip h2 b)" >/dev/null 2>&1 && break
        done
    fi
    echo $(($(now_ms) - t0))
}

# static_lan: prints milliseconds from both restarted flatnetds answering
# to a WireGuard session on both sides.
static_lan() {
    local t0 i
    fn_setup
    trap fn_teardown RETURN
    wg_host_create h1 10.87.1.0/24 192.168.77.1
    wg_host_create h2 10.87.2.0/24 192.168.77.2
    wg_add_peer h1 h2
    wg_add_peer h2 h1
    host_kill h1
    host_kill h2
    host_start h1
    host_start h2
    t0="$(now_ms)"
    for i in $(seq 1000); do
        [ "$(wg_peer h1 h2 last_handshake_secs)" != null ] &&
            [ "$(wg_peer h2 h1 last_handshake_secs)" != null ] && break
        sleep 0.01
    done
    echo $(($(now_ms) - t0))
}

stats() { sort -n | awk '{a[NR]=$1} END {printf "%d | %d | %d", a[1], a[int((NR+1)/2)], a[NR]}'; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

base=(); cone=(); sym=()
for r in $(seq "$RUNS"); do
    base+=("$(static_lan)")
    cone+=("$(one "")")
    sym+=("$(one random)")
done
b="$(printf '%s\n' "${base[@]}" | median)"
ratio() { awk -v a="$(printf '%s\n' "$@" | median)" -v b="$b" 'BEGIN {printf "%.1fx", a / (b > 0 ? b : 1)}'; }
echo "| path | goal | runs | min ms | median ms | max ms | median vs baseline |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| baseline: static peers, one LAN, no NAT | WireGuard session both sides | $RUNS | $(printf '%s\n' "${base[@]}" | stats) | 1.0x |"
echo "| Lighthouse, cone / cone NAT | both sides direct | $RUNS | $(printf '%s\n' "${cone[@]}" | stats) | $(ratio "${cone[@]}") |"
echo "| Lighthouse, symmetric / symmetric NAT | first ping through the relay (containers up) | $RUNS | $(printf '%s\n' "${sym[@]}" | stats) | $(ratio "${sym[@]}") |"
