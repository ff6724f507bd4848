#!/usr/bin/env bash
# Flatnet local demo: a Flatnet host in a network namespace running flatnetd,
# two real Podman containers on the `flatnet` network talking by Flatnet IP,
# the service catalog, and `flatnetctl status` at the end.
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
cargo build --release --locked -p flatnetd -p flatnet-cni

# The demo reuses the integration tests' topology helpers.
FN_PREFIX="demo"
FN_TMP="/tmp/flatnet-demo"
BATS_TMPDIR=/tmp
source tests/integration/helpers.bash
source tests/integration/podman.bash
FN_PREFIX="demo"
cleanup() { podman_teardown; fn_teardown; }
if [ -d "$FN_TMP" ]; then cleanup 2>/dev/null || true; fi
mkdir -p "$FN_TMP"
if [ "$KEEP" = 0 ]; then trap cleanup EXIT; fi

step "Host h1: network namespace $(ns h1), flatnetd with subnet 10.87.1.0/24"
host_create h1 10.87.1.0/24 'catalog_listen = "127.0.0.1:7870"'
podman_setup
podman_conflist h1
echo "flatnetd is up; Podman uses network 'flatnet' (CNI plugin: $FLATNET)"

step "Two Podman containers on the flatnet network"
pm h1 run -d --name demo-web --network flatnet -p 8080:80 "$PODMAN_IMAGE" httpd -f -p 80 -h /www >/dev/null
pm h1 run -d --name demo-client --network flatnet "$PODMAN_IMAGE" sleep 3600 >/dev/null
web="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet").IPAddress}}' demo-web)"
client="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet").IPAddress}}' demo-client)"
echo "demo-web    Flatnet IP $web"
echo "demo-client Flatnet IP $client"

step "demo-client -> demo-web by Flatnet IP"
pm h1 exec demo-client ping -c 3 "$web"
echo "HTTP: $(pm h1 exec demo-client wget -qO- "http://$web/")"

step "The service catalog the gateway reads (flatnetctl catalog)"
ctl h1 catalog

step "flatnetctl status"
ctl h1 status

if [ "$KEEP" = 1 ]; then
    cat <<HINT

Left running. Try:
  nsenter --net=/run/netns/$(ns h1) podman --url= ps      (CONTAINERS_CONF=$FN_TMP/containers.conf)
  $FLATNETCTL --socket $FN_TMP/h1/flatnetd.sock status
Clean up with: sudo scripts/demo.sh --no-deps   (it removes the previous run first) or
  ip netns del $(ns h1); podman rm -f demo-web demo-client
HINT
fi
