#!/usr/bin/env bash
# Flatnet local demo, all in network namespaces on this machine:
#
#   a Lighthouse on an "internet"; two sites, each a host behind its own NAT
#   router (like WSL2 VMs behind their Windows hosts on office LANs); each
#   host's flatnetd joins the Lighthouse with a token, gets its subnet, and
#   punches a direct WireGuard path through both NATs; h1 runs Podman 4.3
#   (CNI), h2 a real Podman 5 with `podman network create --driver flatnet`
#   (from a cached Debian 13 root); the container on h1 talks to the one on
#   h2 by Flatnet IP; h2 publishes it with `-p 8080:80`; the OpenResty /
#   nginx gateway on site 1's router serves the web container to a "browser"
#   on the office LAN; a colleague at home reaches it with stock wg-quick
#   through h1, as a remote member held to a policy; `flatnetctl status`
#   on both hosts at the end.
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

# The demo reuses the integration tests' topology helpers. Its files live
# where the Podman 5 root sees them too.
BATS_TMPDIR=/tmp
source tests/integration/helpers.bash
source tests/integration/helpers-wg.bash
source tests/integration/helpers-nat.bash
source tests/integration/helpers-gw.bash
source tests/integration/helpers-members.bash
source tests/integration/podman.bash
source tests/integration/podman5.bash
FN_TMP="$P5_SHARE/demo"
FN_PREFIX="demo"
cleanup() { p5_teardown; podman_teardown; gw_stop; fn_teardown; "$P5" stop; }
if [ -d "$FN_TMP" ]; then cleanup 2>/dev/null || true; fi
mkdir -p "$FN_TMP"
if [ "$KEEP" = 0 ]; then trap cleanup EXIT; fi

step "The internet ($(ns inet), 203.0.113.0/24) and the Lighthouse on it"
nat_inet_create
lh_start
echo "Lighthouse listening on $LH_ADDR (QUIC); its certificate is pinned by every join token"

step "Two sites, each a host behind a NAT router (plain masquerade, like Windows NAT for WSL2)"
nat_router_create 1 ""
nat_router_create 2 ""
echo "site 1: router r1 203.0.113.11, host h1 192.168.1.1 behind it"
echo "site 2: router r2 203.0.113.12, host h2 192.168.2.1 behind it"
echo "h1 and h2 have no route to each other except through both NATs."

step "Each host's flatnetd joins the Lighthouse with a one-time token"
echo "\$ lighthouse token create --ttl 1h"
echo "$(lh token create --ttl 1h 2>/dev/null | cut -c1-40)…"
# h1's Flatnet DNS also answers the gateway's zone for site 1's office LAN.
nat_host_create 1 "catalog_listen = \"0.0.0.0:7070\"
forward_from = [\"192.168.1.254/32\"]
[dns.lan]
domain = \"$GW_DOMAIN\"
address = \"$GW_IP\""
nat_host_create 2 "catalog_listen = \"0.0.0.0:7070\""
lh nodes list

step "Hole punching: both NATs opened by simultaneous sends, no relay needed"
nat_wait_path h1 h2 direct 15
nat_wait_path h2 h1 direct 15
echo "h1 reaches h2 directly at $(wg_peer h1 h2 endpoint) (h2's NAT mapping, learnt from the Lighthouse)"
echo "h2 reaches h1 directly at $(wg_peer h2 h1 endpoint)"

p5_setup_file
step "Podman 5 on h2 (Debian 13's podman $("$P5" run podman --version | awk '{print $3}')): the flatnet network driver"
p5_setup
echo "\$ podman network create --driver flatnet flatnet"
p5_net h2 flatnet
p5 h2 network ls --filter driver=flatnet
echo "\$ podman run -d --name demo-web --network flatnet -p 8080:80 busybox httpd -f -p 80 -h /www"
p5 h2 run -d --name demo-web --network flatnet -p 8080:80 "$P5_IMAGE" httpd -f -p 80 -h /www >/dev/null
web="$(p5_ip h2 demo-web flatnet)"
echo "demo-web on h2, Flatnet IP $web; -p 8080 published by flatnetd (netavark does not for plugins):"
echo "\$ curl http://127.0.0.1:8080/   (on h2)"
in_ns h2 curl -s http://127.0.0.1:8080/
echo "\$ podman network reload demo-web   (keeps the address: $(p5 h2 network reload demo-web >/dev/null && p5_ip h2 demo-web flatnet))"

step "Podman 4.3 with the CNI backend on h1: demo-client"
podman_setup
podman_conflist h1 flatnet-h1
pm h1 run -d --name demo-client --network flatnet-h1 "$PODMAN_IMAGE" sleep 3600 >/dev/null
client="$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet-h1").IPAddress}}' demo-client)"
echo "demo-client on h1, Flatnet IP $client"

step "demo-client (h1) -> demo-web (h2) by name and by Flatnet IP, WireGuard through both NATs"
echo "Flatnet DNS: h1's flatnetd learnt h2's names over the tunnel"
for i in $(seq 50); do
    [ "$(in_ns h1 dig +short "@$(ctl h1 status --json | jq -r .network.gateway)" demo-web.flatnet)" = "$web" ] && break
    sleep 0.1
done
echo "\$ podman exec demo-client nslookup demo-web   (on h1)"
pm h1 exec demo-client nslookup demo-web
pm h1 exec demo-client ping -c 3 demo-web
echo "HTTP: $(pm h1 exec demo-client wget -qO- "http://demo-web/")"
echo "HTTP by Flatnet IP: $(pm h1 exec demo-client wget -qO- "http://$web/")"
echo "\$ flatnetctl names   (on h1)"
ctl h1 names

step "The gateway: a browser on site 1's office LAN opens http://demo-web.flatnet.test/"
echo "r1 plays the Windows host: it routes the Flatnet to h1 (what 'flatnetctl gateway-route' prints)"
gw_route_hint h1 | sed -n '1,4p'
gw1="$(ctl h1 status --json | jq -r .network.gateway)"
GW_EXTRA="dns_listen = $GW_IP:53
dns_upstream = $gw1:5300" gw_start 1 "http://$gw1:7070/v1/catalog/all"
gw_wait_route demo-web 20
# The office machine's only DNS server is the gateway: no hosts-file entries.
mkdir -p "/etc/netns/$(ns office)"
echo "nameserver $GW_IP" > "/etc/netns/$(ns office)/resolv.conf"
echo "the office's resolv.conf: nameserver $GW_IP (the gateway relays DNS to h1's Flatnet DNS)"
echo "\$ getent hosts demo-web.flatnet.test   (on the office LAN)"
in_ns office getent hosts demo-web.flatnet.test
echo "\$ curl http://demo-web.flatnet.test/   (from the office LAN, no VPN client)"
in_ns office curl -sS --max-time 10 http://demo-web.flatnet.test/

step "A colleague at home: the stock WireGuard tools through hub h1, held to a policy"
echo "site 1's router forwards UDP $WG_PORT to h1, which becomes the members' hub"
hub_forward 1
echo "\$ lighthouse policy set web 'demo-web:80'"
lh policy set web 'demo-web:80'
echo "\$ lighthouse member add alice --hub h1 --access web --endpoint 203.0.113.11:$WG_PORT"
member_conf alice --hub h1 --access web --endpoint "203.0.113.11:$WG_PORT" 2>/dev/null
sed 's/^PrivateKey = .*/PrivateKey = (printed once, never stored)/' "$FN_TMP/alice.conf"
echo "(without --no-qr it is also printed as a QR code for the phone app)"
home_create home 9
echo "alice's laptop: 192.168.9.10 behind her home router; \$ wg-quick up alice.conf"
wgq home up "$FN_TMP/alice.conf" >/dev/null 2>&1
for i in $(seq 60); do in_ns home curl -sf --max-time 1 http://demo-web/ >/dev/null && break; sleep 0.5; done
echo "\$ curl http://demo-web/   (at home: DNS and traffic through h1, then h1 -> h2)"
in_ns home curl -sS --max-time 5 http://demo-web/
echo "\$ ping demo-web   (not in her policy: dropped)"
in_ns home ping -c 1 -W 2 demo-web >/dev/null 2>&1 && echo "answered?!" || echo "no answer, as the policy says"
lh member list

step "Diagnostics: where does traffic go, and what does each NAT do?"
echo "\$ flatnetctl ping -c 3 h2   (on h1: ICMP through the tunnel, path and RTT of each reply)"
ctl h1 ping -c 3 -i 0.3 h2
echo "\$ flatnetctl netcheck   (on h1)"
ctl h1 netcheck

step "lighthouse nodes list"
lh nodes list

step "flatnetctl status on h2"
ctl h2 status
step "flatnetctl status on h1"
ctl h1 status

if [ "$KEEP" = 1 ]; then
    cat <<HINT

Left running. Try:
  CONTAINERS_CONF=$FN_TMP/containers.conf CONTAINERS_STORAGE_CONF=$FN_TMP/storage.conf \\
    nsenter --net=/run/netns/$(ns h1) podman exec demo-client wget -qO- http://$web/
  CONTAINERS_CONF=$FN_TMP/containers5.conf scripts/podman5.sh run --net $(ns h2) podman ps
  $FLATNETCTL --socket $FN_TMP/h1/flatnetd.sock status
  ip netns exec $(ns office) curl -s http://gateway.flatnet.test/_flatnet/status
  LIGHTHOUSE_ADMIN_SOCKET=$FN_TMP/lh.sock $LIGHTHOUSE nodes list
Clean up with: sudo scripts/demo.sh --no-deps (it removes the previous run first)
HINT
fi
