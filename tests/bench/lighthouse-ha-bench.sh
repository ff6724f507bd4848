#!/usr/bin/env bash
# Fan-out with one Lighthouse vs two on etcd (not a test): N simulated
# nodes (default 1,000) held connected to each of three set-ups side by
# side (one Lighthouse on redb, one on etcd, two on etcd with every node
# connected to both), then interleaved rounds in which a probe node joins
# at one Lighthouse and is removed at the other; the time until every node
# has heard is measured. A single-member etcd on loopback. Prints a
# Markdown table; asserts nothing.
#
#   tests/bench/lighthouse-ha-bench.sh [NODES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
NODES="${1:-1000}"
ROUNDS="${2:-10}"
cargo build --release --locked -p lighthouse
ulimit -n 65536 2>/dev/null || true
exec cargo bench --locked -p lighthouse --bench lh_ha -- \
    --nodes "$NODES" --rounds "$ROUNDS" --lighthouse "$PWD/target/release/lighthouse"
