#!/usr/bin/env bash
# Run every gateway check: busted unit tests, luacheck, and the bats integration suites.
# Needs root (network namespaces). Exits non-zero if anything fails.
#   tests/gateway/run.sh            # everything
#   tests/gateway/run.sh 040        # only bats suites whose file name starts with 040
set -u
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in busted luacheck bats nginx lua5.1 curl chromium openssl git python3 promtool; do
    command -v "$tool" >/dev/null || { echo "run.sh: missing $tool (see docs/gateway.md, Testing)" >&2; exit 1; }
done
fail=0
echo "== busted (unit)"
busted --lua=lua5.1 --lpath='gateway-lua/lib/?.lua' tests/gateway/unit || fail=1
echo "== luacheck"
luacheck --no-color --config gateway-lua/.luacheckrc gateway-lua/lib gateway-lua/bin/flatnet-gateway-render \
    tests/gateway/unit || fail=1
echo "== bats (integration)"
bats tests/gateway/"${1:-}"*.bats || fail=1
[ "$fail" -eq 0 ] && echo "gateway tests: all passed" || echo "gateway tests: FAILED" >&2
exit "$fail"
