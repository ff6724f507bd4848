#!/usr/bin/env bash
# Lighthouse at scale (not a test): N simulated nodes (default 10,000) join a
# real `lighthouse serve` over QUIC on loopback and stay connected; then one
# more node joins and is removed, several times, and the time until every
# node has heard is measured, with the Lighthouse's memory; then the
# Lighthouse is restarted and every node reconnects at once, once for the
# whole peer list and once by delta sync, and the time until all have a
# complete list is measured. Side by side, in the same run: a bare quinn
# server with the same TLS holding as many connections and sending one frame
# to all of them (the floor QUIC sets), and with LH_BEFORE=<commit> the same
# restart storm against that older build (built once, cached under
# /var/cache/flatnet). Prints Markdown tables; asserts nothing.
#
#   tests/bench/lighthouse-bench.sh [NODES] [ROUNDS]
#   LH_BEFORE=989c0b1 tests/bench/lighthouse-bench.sh 10000 20
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
NODES="${1:-10000}"
ROUNDS="${2:-20}"
cargo build --release --locked -p lighthouse
args=()
if [ -n "${LH_BEFORE:-}" ]; then
    # shellcheck source=lab.bash
    source tests/bench/lab.bash
    args+=(--before "$(base_build "$PWD" "$LH_BEFORE" lighthouse)/lighthouse")
fi
# A Lighthouse with 10,000 sessions holds as many descriptors as it likes.
ulimit -n 65536 2>/dev/null || true
exec cargo bench --locked -p lighthouse --bench lh_sim -- \
    --nodes "$NODES" --rounds "$ROUNDS" --lighthouse "$PWD/target/release/lighthouse" "${args[@]}"
