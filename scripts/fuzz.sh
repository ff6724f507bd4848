#!/usr/bin/env bash
# Fuzz every parser fed from the network or disk (tests/fuzz): Lighthouse
# frames, relay fragments, peer catalogs, local API lines, CNI stdin,
# netcheck datagrams.
#   scripts/fuzz.sh            # each target for FUZZ_SECS (default 15) seconds
#   FUZZ_SECS=3600 scripts/fuzz.sh relay_fragments   # a longer run of one
# libFuzzer via cargo-fuzz; on a stable toolchain (RUSTC_BOOTSTRAP=1 lets it
# pass libFuzzer's flags). cargo-fuzz and the build are cached in
# /var/cache/flatnet. A crash leaves its input in tests/fuzz/artifacts/ and
# fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FLATNET_CACHE:-/var/cache/flatnet}"
secs="${FUZZ_SECS:-15}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(lighthouse_frame relay_fragments catalog_document api_line cni_stdin netcheck_datagram)
if ! command -v cargo-fuzz >/dev/null && [ ! -x "$CACHE/cargo-fuzz/bin/cargo-fuzz" ]; then
    echo "fuzz: installing cargo-fuzz into $CACHE/cargo-fuzz (once)"
    cargo install --locked cargo-fuzz --root "$CACHE/cargo-fuzz" >/dev/null 2>&1 ||
        { echo "fuzz: could not install cargo-fuzz from crates.io" >&2; exit 1; }
fi
export PATH="$CACHE/cargo-fuzz/bin:$PATH"
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$CACHE/fuzz-target"
fuzz() { cargo fuzz "$1" --fuzz-dir tests/fuzz -O --sanitizer none "${@:2}"; }
fuzz build >/dev/null 2>&1 || { fuzz build; exit 1; }
failed=0
for t in "${targets[@]}"; do
    corpus="tests/fuzz/corpus/$t"
    mkdir -p "$corpus"
    cp -n tests/fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    if out="$(fuzz run "$t" "$corpus" -- -max_total_time="$secs" -max_len=65536 2>&1)"; then
        echo "fuzz $t: $(grep -oE 'Done [0-9]+ runs in [0-9]+ second' <<<"$out" | tail -1)s, no crash"
    else
        echo "fuzz $t: FAILED" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' <<<"$out" >&2 || tail -20 <<<"$out" >&2
        failed=1
    fi
done
exit "$failed"
