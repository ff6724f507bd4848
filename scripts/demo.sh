#!/usr/bin/env bash
# Flatnet local demo: two Flatnet hosts (network namespaces on a shared LAN),
# each running flatnetd with its WireGuard data plane, a real Podman container
# on each, talking across hosts by Flatnet IP; the service catalog, and
# `flatnetctl status` at the end.
#
#   sudo scripts/demo.sh            install packages, build, run, clean up
#   sudo scripts/demo.sh --keep     leave it running to poke at (see the hints)
#   sudo scripts/demo.sh --no-deps  skip apt-get (packages already there)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (network namespaces, Podman)" >&2; exit 1; }

KEEP=0
DEPS=1
for a in "$@"; do
    case "$a" in
        --keep) KEEP=1 ;;
        --no-deps) DEPS=0 ;;
        *) echo "demo.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$DEPS" = 1 ]; then step "Installing system packages"; scripts/deps.sh; fi
step "Building Flatnet"
cargo build --release --locked --workspace

# The demo reuses the integration tests' topology helpers.
FN_PREFIX="demo"
FN_TMP="/tmp/flatnet-demo"
BATS_TMPDIR=/tmp
source tests/integration/helpers.bash
source tests/integration/helpers-wg.bash
source tests/integration/podman.bash
FN_PREFIX="demo"
cleanup() { podman_teardown; fn_teardown; }
if [ -d "$FN_TMP" ]; then cleanup 2>/dev/null || true; fi
mkdir -p "$FN_TMP"
if [ "$KEEP" = 0 ]; then trap cleanup EXIT; fi

step "Two Flatnet hosts on one LAN (network namespaces $(ns h1), $(ns h2))"
wg_host_create h1 10.87.1.0/24 192.168.77.1
wg_host_create h2 10.87.2.0/24 192.168.77.2
echo "h1: subnet 10.87.1.0/24, LAN 192.168.77.1, WireGuard key $(ctl h1 pubkey)"
echo "h2: subnet 10.87.2.0/24, LAN 192.168.77.2, WireGuard key $(ctl h2 pubkey)"

step "Peering them (each host learns the other's key, endpoint and subnet)"
wg_add_peer h1 h2
wg_add_peer h2 h1
wg_reload h1 1
wg_reload h2 1
echo "peers configured; SIGHUP reloaded both daemons"

step "Podman containers: demo-web on h2, demo-client on h1"
podman_setup
podman_conflist h1 flatnet-h1
podman_conflist h2 flatnet-h2
pm h2 run -d --name demo-web --network flatnet-h2 -p 8080:80 "$PODMAN_IMAGE" httpd -f -p 80 -h /www >/dev/null
pm h1 run -d --name demo-client --network flatnet-h1 "$PODMAN_IMAGE" sleep 3600 >/dev/null
web="$(pm h2 inspect -f '{{(index .NetworkSettings.Networks "flatnet-h2").IPAddress}}' demo-web)"
client="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet-h1").IPAddress}}' demo-client)"
echo "demo-web    on h2, Flatnet IP $web"
echo "demo-client on h1, Flatnet IP $client"

step "demo-client (h1) -> demo-web (h2) by Flatnet IP, through WireGuard"
pm h1 exec demo-client ping -c 3 "$web"
echo "HTTP: $(pm h1 exec demo-client wget -qO- "http://$web/")"

step "The service catalog h2 publishes for the gateway (flatnetctl catalog)"
ctl h2 catalog

step "flatnetctl status on h2"
ctl h2 status
step "flatnetctl status on h1"
ctl h1 status

if [ "$KEEP" = 1 ]; then
    cat <<HINT

Left running. Try:
  CONTAINERS_CONF=$FN_TMP/containers.conf CONTAINERS_STORAGE_CONF=$FN_TMP/storage.conf \\
    nsenter --net=/run/netns/$(ns h1) podman exec demo-client wget -qO- http://$web/
  $FLATNETCTL --socket $FN_TMP/h1/flatnetd.sock status
Clean up with: sudo scripts/demo.sh --no-deps (it removes the previous run first)
HINT
fi
