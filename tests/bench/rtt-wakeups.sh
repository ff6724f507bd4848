#!/usr/bin/env bash
# Where an idle tunnel's ping RTT goes (not a test): Flatnet host to host
# against boringtun-cli, on the same two host namespaces.
#
#   cargo build --release
#   FLATNET_TARGET=target/release ROUNDS=8 tests/bench/rtt-wakeups.sh
#
# 1. RTT, ROUNDS interleaved rounds of 40 pings (10 ms apart) per path and
#    mode: "free", where the scheduler places every thread, and "one CPU",
#    where both tunnels' processes and ping are pinned to CPU 0 (every
#    thread then wakes on the CPU that woke it).
# 2. One traced pass per path, free: 100 pings with the scheduler's wake-up
#    events on (tracefs: sched_waking, sched_switch). For the tunnel's own
#    threads it prints the wake-ups per ping, the share that ran on another
#    CPU than the waker's, and the median latency from wake-up to running
#    for each kind.
#
# On a VM whose idle vCPUs halt, a wake-up on another, idle CPU costs an
# inter-processor interrupt into a halted vCPU; the table shows how much.
# Needs root, tracefs, taskset, wg, and the peers of tests/bench/peers.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-8}"
PEERS="$("$HERE/peers.sh")"
BORINGTUN="${BORINGTUN:-$(command -v boringtun-cli || echo "$PEERS/boringtun/bin/boringtun-cli")}"
BATS_SUITE_TEST_NUMBER=bench
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"
# shellcheck source=stats.bash
source "$HERE/stats.bash"
# shellcheck source=lab.bash
source "$HERE/lab.bash"

T=/sys/kernel/tracing
MOUNTED=""
cleanup() {
    set +e
    [ -d "$T/events" ] && echo 0 >"$T/tracing_on" && echo >"$T/set_event"
    [ -n "$MOUNTED" ] && umount "$T"
    for p in "${BG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    fn_teardown
    rm -f /var/run/wireguard/fnbt[12].sock
}
BG_PIDS=()
trap cleanup EXIT

if [ ! -d "$T/events" ]; then
    mount -t tracefs nodev "$T" || {
        echo "rtt-wakeups.sh: cannot mount tracefs on $T" >&2
        exit 1
    }
    MOUNTED=1
fi
if [ ! -x "$BORINGTUN" ]; then
    echo "rtt-wakeups.sh: boringtun-cli is missing (tests/bench/peers.sh installs it)" >&2
    exit 1
fi

fn_setup
wg_pair >/dev/null
wg_wait_ping h1-a "$IPB" >/dev/null
uapi_pair fnbt 51821 10.99.0 "$BORINGTUN" --foreground --disable-drop-privileges
CPUS="0-$(($(nproc) - 1))"

# PATH -> the address h1 pings, and the thread names of that tunnel.
declare -A DST=([flatnet]=10.87.2.1 [boringtun]=10.99.0.2)
declare -A THREADS=([flatnet]='^flatnet-(tun|udp)$' [boringtun]='^boringtun-cli$')
declare -A NAME=([flatnet]="Flatnet host to host" [boringtun]="boringtun-cli")
paths=(flatnet boringtun)

# pin CPULIST: both hosts' processes (both tunnels' daemons) and the pings
# to come (rtt_samples, through cpu_prefix) on CPULIST.
PINNED="$CPUS"
cpu_prefix() { echo taskset -c "$PINNED"; }
pin() {
    PINNED="$1"
    pin_ns h1 "$1"
    pin_ns h2 "$1"
}

declare -A RTT
for _ in $(seq "$ROUNDS"); do
    for mode in free one; do
        cpus="$CPUS"
        [ "$mode" = one ] && cpus=0
        pin "$cpus"
        for p in "${paths[@]}"; do
            RTT[$p.$mode]+="$(rtt_samples h1 "${DST[$p]}" 40)"$'\n'
        done
    done
done
pin "$CPUS"

# wakeups REGEX < trace: "local|remote LATENCY_US" per wake-up of a thread
# whose name matches REGEX; local when it ran on the waker's CPU.
wakeups() {
    awk -v re="$1" '
        function us(f) { sub(/:$/, "", f); return f * 1e6 }
        function cpu(f) { gsub(/[^0-9]/, "", f); return f + 0 }
        / sched_waking: / {
            match($0, / pid=[0-9]+/); p = substr($0, RSTART + 5, RLENGTH - 5)
            at[p] = us($4); from[p] = cpu($2); next
        }
        / sched_switch: / {
            match($0, /next_pid=[0-9]+/); p = substr($0, RSTART + 9, RLENGTH - 9)
            match($0, /next_comm=[^ ]+/); c = substr($0, RSTART + 10, RLENGTH - 10)
            if ((p in at) && c ~ re)
                printf "%s %.0f\n", (from[p] == cpu($2) ? "local" : "remote"), us($4) - at[p]
            delete at[p]
        }'
}

declare -A WAKES
for p in "${paths[@]}"; do
    echo 0 >"$T/tracing_on"
    echo >"$T/trace"
    printf 'sched:sched_waking\nsched:sched_switch\n' >"$T/set_event"
    echo 1 >"$T/tracing_on"
    in_ns h1 ping -c 100 -i 0.01 "${DST[$p]}" >/dev/null
    echo 0 >"$T/tracing_on"
    WAKES[$p]="$(grep -v '^#' "$T/trace" | wakeups "${THREADS[$p]}")"
    echo >"$T/set_event"
done

echo "Ping RTT h1 -> h2 through each tunnel, $ROUNDS interleaved rounds of 40 pings per path and mode;"
echo "wake-ups from one traced pass of 100 pings per path (free placement)."
echo
echo "| path | RTT median / p90, free | RTT median / p90, all on one CPU | tunnel thread wake-ups per ping | of them on another CPU | wake-up to running, same CPU / other CPU (median) |"
echo "| --- | --- | --- | ---: | ---: | --- |"
for p in "${paths[@]}"; do
    w="${WAKES[$p]}"
    n="$(printf '%s\n' "$w" | grep -c . || true)"
    remote="$(printf '%s\n' "$w" | grep -c '^remote' || true)"
    lat() { printf '%s\n' "$w" | awk -v k="$1" '$1 == k {print $2}' | median; }
    echo "| ${NAME[$p]} | $(printf '%s' "${RTT[$p.free]}" | rtt_stat) ms | $(printf '%s' "${RTT[$p.one]}" | rtt_stat) ms | $(awk -v n="$n" 'BEGIN {printf "%.1f", n / 100}') | $(awk -v n="$n" -v r="$remote" 'BEGIN {printf "%.0f%%", n ? 100 * r / n : 0}') | $(lat local) / $(lat remote) µs |"
done
