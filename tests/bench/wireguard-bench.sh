#!/usr/bin/env bash
# Flatnet data plane benchmark (not a test): iperf3 TCP and ping RTT between
# two "hosts" (network namespaces on a bridged LAN), side by side in one run:
#   1. raw veth/bridge, no tunnel (the ceiling),
#   2. Flatnet: container to container across the two hosts' flatnetd,
#   3. Flatnet host to host (no container veth hops, as rows 1 and 5-7),
#   4. Flatnet with [wireguard] offloads = false (daemons restarted),
#   5. boringtun-cli between the same two namespaces,
#   6. wireguard-go 0.0.20231211 (Tailscale's TUN offloads), bookworm-backports,
#   7. Nebula 1.9.3 (Debian 13),
# and the machine's crypto ceiling: `openssl speed` ChaCha20-Poly1305 on
# 1420-byte buffers, one core; with every packet encrypted once and
# decrypted once, N cores top out at (one core's rate x N / 2).
# Throughput and RTT are taken in interleaved rounds (every path once per
# round), so every path sees the same machine; median (min-max) of rounds.
# For each transfer the machine's busy CPU time (/proc/stat, all processes)
# gives "cores busy" and "Gbit/s per busy core": on a machine the transfer
# saturates, what a path gets out of each core it keeps busy.
# PIN_HOSTS=1 gives each host a CPU of its own (h1 on CPU 0, h2 on CPU 1)
# instead of letting the scheduler place both hosts on both CPUs.
# Rows 6 and 7 come from Debian's packages, unpacked by tests/bench/peers.sh
# into /var/cache/flatnet/bench-peers (the system's packages stay as they
# are). Prints a markdown table. Needs root, iperf3, jq, wg (wireguard-tools)
# and, for row 5, boringtun-cli (the row is left out without it).
#
#   cargo build --release
#   apt-get install -y iperf3 wireguard-tools
#   cargo install --locked boringtun-cli --root /work/.bench-tools
#   FLATNET_TARGET=target/release BORINGTUN=/work/.bench-tools/bin/boringtun-cli \
#       ROUNDS=3 SECS=5 tests/bench/wireguard-bench.sh
#
# All traffic stays inside the namespaces this script creates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${SECS:-5}"
ROUNDS="${ROUNDS:-3}"
PEERS="$("$HERE/peers.sh")"
BORINGTUN="${BORINGTUN:-$(command -v boringtun-cli || echo "$PEERS/boringtun/bin/boringtun-cli")}"
WGGO="$PEERS/wireguard-go/usr/bin/wireguard-go"
NEBULA="$PEERS/nebula/usr/bin/nebula"
NEBULA_CERT="$PEERS/nebula/usr/bin/nebula-cert"
BATS_SUITE_TEST_NUMBER=bench
# shellcheck source=../integration/helpers.bash
source "$HERE/../integration/helpers.bash"
# shellcheck source=../integration/helpers-wg.bash
source "$HERE/../integration/helpers-wg.bash"
# shellcheck source=stats.bash
source "$HERE/stats.bash"
# shellcheck source=lab.bash
source "$HERE/lab.bash"

cleanup() {
    set +e
    for p in "${BG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    fn_teardown
    rm -f /var/run/wireguard/fnbt[12].sock /var/run/wireguard/fnwg[12].sock
}
BG_PIDS=()
trap cleanup EXIT

fn_setup
wg_pair >/dev/null
wg_wait_ping h1-a "$IPB" >/dev/null

# nebula_pair: Nebula between h1 and h2 (tunnel 10.96.0.1 and .2, UDP 4242,
# a static host map and no lighthouse, MTU 1420 like the others, every
# port open in its firewall).
nebula_pair() {
    local d="$FN_TMP/nebula" i
    mkdir -p "$d"
    "$NEBULA_CERT" ca -name flatnet-bench -out-crt "$d/ca.crt" -out-key "$d/ca.key"
    for i in 1 2; do
        "$NEBULA_CERT" sign -ca-crt "$d/ca.crt" -ca-key "$d/ca.key" -name "h$i" \
            -ip "10.96.0.$i/24" -out-crt "$d/h$i.crt" -out-key "$d/h$i.key"
        cat >"$d/h$i.yml" <<EOF
pki: {ca: $d/ca.crt, cert: $d/h$i.crt, key: $d/h$i.key}
static_host_map: {"10.96.0.$((3 - i))": ["192.168.77.$((3 - i)):4242"]}
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242}
punchy: {punch: false}
tun: {dev: fnneb$i, mtu: 1420}
logging: {level: warning}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
EOF
        ip netns exec "$(ns "h$i")" "$NEBULA" -config "$d/h$i.yml" >"$FN_TMP/nebula$i.log" 2>&1 &
        BG_PIDS+=($!)
        disown $!
    done
    wg_wait_ping h1 10.96.0.2 20 >/dev/null
}

paths=(raw flatnet hosts)
if [ -x "$BORINGTUN" ] && command -v wg >/dev/null; then
    uapi_pair fnbt 51821 10.99.0 "$BORINGTUN" --foreground --disable-drop-privileges
    paths+=(boringtun)
else
    echo "boringtun-cli or wg missing: the boringtun row is left out (tests/bench/peers.sh installs it)" >&2
fi
uapi_pair fnwg 51822 10.97.0 "$WGGO" -f
paths+=(wggo)
nebula_pair
paths+=(nebula)

# target PATH: the client namespace and the address it sends to.
target() {
    case "$1" in
        raw) echo "h1 192.168.77.2" ;; flatnet | plain) echo "h1-a $IPB" ;;
        hosts) echo "h1 10.87.2.1" ;; boringtun) echo "h1 10.99.0.2" ;;
        wggo) echo "h1 10.97.0.2" ;; nebula) echo "h1 10.96.0.2" ;;
    esac
}
# server PATH: the namespace iperf3's server runs in.
server() {
    case "$1" in
        flatnet | plain) echo h2-b ;; *) echo h2 ;;
    esac
}

declare -A GBPS SAMPLES RTT CORES PERCORE
# rounds PATH...: ROUNDS interleaved rounds; each round measures every path
# once, one after the other: iperf3 TCP for SECS s, then 40 pings.
# cpu_jiffies: "busy total" jiffies of all CPUs so far (/proc/stat).
cpu_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }
rounds() {
    local r k t g b0 t0 b1 t1 c pc
    for r in $(seq "$ROUNDS"); do
        for k in "$@"; do
            read -r -a t <<<"$(target "$k")"
            read -r b0 t0 < <(cpu_jiffies)
            g="$(wg_iperf "$(server "$k")" "${t[0]}" "${t[1]}")"
            read -r b1 t1 < <(cpu_jiffies)
            GBPS[$k]+="$g "
            # Gbit/s per busy core: what the path gets out of the CPU time it used
            # (both hosts, iperf3 and the kernel's share included).
            read -r c pc < <(awk -v g="$g" -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$(nproc)" \
                'BEGIN { c = n * b / t; printf "%.2f %.2f\n", c, g / c }')
            CORES[$k]+="$c "
            PERCORE[$k]+="$pc "
            SAMPLES[$k]+="$(rtt_samples "${t[0]}" "${t[1]}" 40)"$'\n'
        done
    done
    for k in "$@"; do
        RTT[$k]="$(printf '%s' "${SAMPLES[$k]}" | rtt_stat)"
    done
}
# PIN_HOSTS=1: each host on a CPU of its own, as on real machines: every
# process of h1 and its containers on CPU 0, of h2 on CPU 1 (the daemons of
# every path, and iperf3). Without it the scheduler places everything.
host_cpu() { case "$1" in h1*) echo 0 ;; *) echo 1 ;; esac; }
pin_hosts() {
    [ -n "${PIN_HOSTS:-}" ] || return 0
    pin_ns h1 "$(host_cpu h1)"
    pin_ns h2 "$(host_cpu h2)"
}
if [ -n "${PIN_HOSTS:-}" ]; then
    [ "$(nproc)" -ge 2 ] || { echo "PIN_HOSTS needs 2 CPUs" >&2; exit 1; }
    cpu_prefix() { echo taskset -c "$(host_cpu "$1")"; }
fi
pin_hosts
rounds "${paths[@]}"

# The same daemons restarted with offloads = false (containers untouched):
# what TSO/GSO/GRO buy.
for h in h1 h2; do
    sed -i 's/^\[wireguard\]$/[wireguard]\noffloads = false/' "$FN_TMP/$h/flatnetd.toml"
    host_kill "$h"
    host_start "$h" >/dev/null
done
wg_wait_ping h1-a "$IPB" 15 >/dev/null
pin_hosts
rounds plain

# The crypto ceiling: one core's ChaCha20-Poly1305 rate on 1420-byte buffers
# (`-mr` prints "+F:<n>:<name>:<bytes per second>").
cores="$(nproc)"
aead_Bps="$(openssl speed -mr -seconds 3 -bytes 1420 -evp chacha20-poly1305 2>/dev/null |
    awk -F: '/^\+F:/ {print $4; exit}')"
core_gbps="$(awk -v b="$aead_Bps" 'BEGIN { printf "%.2f", b * 8 / 1e9 }')"
ceiling="$(awk -v g="$core_gbps" -v n="$cores" 'BEGIN { printf "%.2f", g * n / 2 }')"

med() { printf '%s' "${GBPS[$1]:-}" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
wggo_med="$(med wggo)"
echo "ChaCha20-Poly1305 (openssl speed, 1420-byte buffers): $core_gbps Gbit/s on one core;"
echo "the ceiling of a tunnel on $cores cores (each packet encrypted once and decrypted once): $ceiling Gbit/s"
echo
echo "| path | TCP Gbit/s, median (min-max) of $ROUNDS x ${SECS} s | vs wireguard-go | of the crypto ceiling | cores busy | Gbit/s per busy core (vs wireguard-go) | ping RTT median / p90 |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for k in raw flatnet hosts plain boringtun wggo nebula; do
    [ -n "${GBPS[$k]:-}" ] || continue
    case "$k" in
        raw) name="raw veth + bridge, no tunnel" ;;
        flatnet) name="Flatnet container to container (offloads on)" ;;
        hosts) name="Flatnet host to host (h1 -> h2's gateway IP)" ;;
        plain) name="Flatnet with offloads = false (container to container)" ;;
        boringtun) name="boringtun-cli (default threads)" ;;
        wggo) name="wireguard-go $(sed -E 's/^wireguard-go_([^_]+)_.*/\1/' "$PEERS/wireguard-go/VERSION")" ;;
        nebula) name="Nebula $(sed -E 's/^nebula_([^+_]+).*/\1/' "$PEERS/nebula/VERSION")" ;;
    esac
    m="$(med "$k")"
    share="$(awk -v a="$m" -v c="$ceiling" 'BEGIN { if (c > 0) printf "%.0f%%", 100 * a / c; else print "-" }')"
    [ "$k" = raw ] && share="-"
    pc="$(printf '%s' "${PERCORE[$k]}" | median)"
    echo "| $name | $(printf '%s' "${GBPS[$k]}" | stat) | $(ratio "$m" "$wggo_med") | $share | $(printf '%s' "${CORES[$k]}" | median) | $pc ($(ratio "$pc" "$(printf '%s' "${PERCORE[wggo]:-}" | median)")) | ${RTT[$k]} ms |"
done
