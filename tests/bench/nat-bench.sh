#!/usr/bin/env bash
# Time from "both nodes up" to a working path, in the NAT lab of suite 050:
# cone NATs (plain masquerade) until both sides report `direct`, symmetric
# NATs (`masquerade random`) until the first ping crosses the relay.
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

stats() { sort -n | awk '{a[NR]=$1} END {printf "%d | %d | %d", a[1], a[int((NR+1)/2)], a[NR]}'; }

cone=(); sym=()
for r in $(seq "$RUNS"); do
    cone+=("$(one "")")
    sym+=("$(one random)")
done
echo "| NATs | goal | runs | min ms | median ms | max ms |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| cone / cone | both sides direct | $RUNS | $(printf '%s\n' "${cone[@]}" | stats) |"
echo "| symmetric / symmetric | first ping through the relay (containers up) | $RUNS | $(printf '%s\n' "${sym[@]}" | stats) |"
