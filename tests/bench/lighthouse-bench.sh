#!/usr/bin/env bash
# Lighthouse at scale (not a test): N simulated nodes (default 10,000) join a
# real `lighthouse serve` over QUIC on loopback and stay connected; then one
# more node joins and is removed, several times, and the time until every
# node has heard is measured, with the Lighthouse's memory. Side by side, in
# the same run: a bare quinn server with the same TLS holding as many
# connections and sending one frame to all of them (the floor QUIC sets).
# Prints a Markdown table; asserts nothing.
#
#   tests/bench/lighthouse-bench.sh [NODES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
NODES="${1:-10000}"
ROUNDS="${2:-5}"
cargo build --release --locked -p lighthouse
# A Lighthouse with 10,000 sessions holds as many descriptors as it likes.
ulimit -n 65536 2>/dev/null || true
exec cargo bench --locked -p lighthouse --bench lh_sim -- \
    --nodes "$NODES" --rounds "$ROUNDS" --lighthouse "$PWD/target/release/lighthouse"
