#!/usr/bin/env bash
# Install the system packages Flatnet's build, demo and tests need on a fresh
# Debian 12 / Ubuntu 22.04+ machine. Run as root. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
    # build (protoc and the well-known types it imports: etcd-client's gRPC definitions)
    build-essential pkg-config git curl ca-certificates protobuf-compiler libprotobuf-dev
    # networking, used by flatnetd and the tests
    iproute2 nftables iptables conntrack iputils-ping tcpdump iperf3 netcat-openbsd socat jq python3
    bind9-dnsutils dnsperf
    # containers: Podman with the CNI backend, runc, reference CNI plugins
    podman runc containernetworking-plugins busybox-static
    # test runner; debootstrap builds the Debian 13 root for real Podman 5
    bats debootstrap
    # gateway: nginx + lua-nginx-module, its Lua libraries and test tools
    nginx libnginx-mod-http-lua libnginx-mod-stream lua-resty-core lua-resty-lrucache lua-cjson lua5.1
    lua-busted lua-check openssl wrk chromium
    # operations: systemd-analyze checks the units; promtool checks the
    # alert rules and every /metrics exposition
    systemd prometheus
    # several Lighthouses share their registry in etcd (tests and lab)
    etcd-server etcd-client
    # remote members: stock wg-quick, over wireguard-go without kernel WireGuard
    wireguard-tools wireguard-go
    # WSL2 hosts (suite 170): a flatnetd whose wall clock is behind or ahead
    faketime
)

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
# nginx is started by the tests themselves, never as a system service.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "deps.sh: Rust is not installed. Install it with rustup (https://rustup.rs):" >&2
    echo "  curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y" >&2
    exit 1
fi
# Debian 12 has Podman 4.3 (no netavark plugins): the Podman 5 suites run a
# real Podman 5 from a Debian 13 root, built once and cached outside the clone.
echo "deps.sh: Podman 5 root: $("$(dirname "$0")/podman5.sh" root)"
echo "deps.sh: done; $(cargo --version)"
