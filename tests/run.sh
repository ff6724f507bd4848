#!/usr/bin/env bash
# Run every Flatnet test: formatting and lints, unit tests, the integration
# suites (network namespaces, real Podman) and the gateway suites.
# Run as root from anywhere; prints "N passed, N failed" last.
#
#   tests/run.sh                 everything
#   tests/run.sh --unit          only cargo fmt/clippy/test
#   tests/run.sh 001 010         only integration suites whose names start so
#   SOAK_DURATION=3m tests/run.sh   a shorter soak (default 10m; docs/soak.md)
set -uo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
OUT="tests/out"
mkdir -p "$OUT"
passed=0
failed=0
failures=()

note() { printf '\n==> %s\n' "$*"; }
fail() { failed=$((failed + 1)); failures+=("$1"); }

[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (network namespaces, Podman)" >&2; exit 2; }

unit_only=0
filters=()
for a in "$@"; do
    case "$a" in
        --unit) unit_only=1 ;;
        *) filters+=("$a") ;;
    esac
done

note "build (release)"
cargo build --release --locked --workspace || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

if [ ${#filters[@]} -eq 0 ]; then
    note "cargo fmt --check"
    if cargo fmt --all -- --check; then passed=$((passed + 1)); else fail "cargo fmt"; fi

    note "cargo clippy -D warnings"
    if cargo clippy --locked --workspace --all-targets -- -D warnings; then
        passed=$((passed + 1)); else fail "cargo clippy"; fi

    note "cargo test (unit)"
    cargo test --locked --workspace 2>&1 | tee "$OUT/cargo-test.log"
    rc=${PIPESTATUS[0]}
    p=$(grep -E '^test result:' "$OUT/cargo-test.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
    f=$(grep -E '^test result:' "$OUT/cargo-test.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then fail "cargo test (exit $rc)"; fi

    note "monitoring: alert rules and dashboard (promtool)"
    if promtool check rules dist/monitoring/flatnet-alerts.yml &&
        promtool test rules tests/monitoring/alerts-test.yml &&
        tests/monitoring/check-dashboard.py; then
        passed=$((passed + 1)); else fail "alert rules"; fi

    note "fuzz (brief: FUZZ_SECS=${FUZZ_SECS:-15} s per parser; scripts/fuzz.sh for longer)"
    scripts/fuzz.sh 2>&1 | tee "$OUT/fuzz.log"
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then passed=$((passed + 1)); else fail "fuzz"; fi
fi

if [ "$unit_only" = 0 ]; then
    suites=()
    for s in tests/integration/[0-9]*.bats; do
        if [ ${#filters[@]} -eq 0 ]; then suites+=("$s"); continue; fi
        for f in "${filters[@]}"; do
            case "$(basename "$s")" in "$f"*) suites+=("$s") ;; esac
        done
    done
    for s in "${suites[@]}"; do
        note "integration: $s"
        t0=$SECONDS
        bats --tap "$s" 2>&1 | tee "$OUT/$(basename "$s" .bats).tap"
        echo "($s: $((SECONDS - t0)) s)"
        p=$(grep -cE '^ok ' "$OUT/$(basename "$s" .bats).tap")
        f=$(grep -cE '^not ok ' "$OUT/$(basename "$s" .bats).tap")
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -eq 0 ] || failures+=("$s")
        if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then fail "$s ran no test"; fi
    done

    if [ ${#filters[@]} -eq 0 ] && [ -x tests/gateway/run.sh ]; then
        note "gateway suites"
        t0=$SECONDS
        tests/gateway/run.sh 2>&1 | tee "$OUT/gateway.log"
        rc=${PIPESTATUS[0]}
        echo "(gateway suites: $((SECONDS - t0)) s)"
        p=$(grep -cE '^ok ' "$OUT/gateway.log")
        f=$(grep -cE '^not ok ' "$OUT/gateway.log")
        passed=$((passed + p))
        failed=$((failed + f))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "gateway (exit $rc)"; fi
    fi

    if [ ${#filters[@]} -eq 0 ]; then
        # The soak's short profile: every fault kind under traffic and churn;
        # its table lands in this log. Longer runs: docs/soak.md.
        note "soak (short profile: ${SOAK_DURATION:-10m}, seed ${SOAK_SEED:-1})"
        t0=$SECONDS
        tests/soak/run.sh --duration "${SOAK_DURATION:-10m}" --seed "${SOAK_SEED:-1}" \
            --report "$OUT/soak.json" 2>&1 | tee "$OUT/soak.log"
        rc=${PIPESTATUS[0]}
        echo "(soak: $((SECONDS - t0)) s)"
        if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else fail "soak (see $OUT/soak.log)"; fi
    fi
fi

echo
if [ ${#failures[@]} -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
