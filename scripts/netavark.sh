#!/usr/bin/env bash
# Provide a netavark with plugin support (>= 1.6) for the netavark-mode tests.
# Debian 12 ships netavark 1.4 (no plugins), so build 1.14 from crates.io into
# $NETAVARK_ROOT (default /var/tmp/flatnet-netavark); skipped if already there.
# Prints the binary's path.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
root="${NETAVARK_ROOT:-/var/tmp/flatnet-netavark}"
bin="$root/bin/netavark"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi
command -v protoc >/dev/null || {
    echo "netavark.sh: protoc missing: apt-get install protobuf-compiler" >&2
    exit 1
}
cargo install netavark --version '~1.14' --locked --root "$root" >&2
echo "$bin"
