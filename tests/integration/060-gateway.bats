#!/usr/bin/env bats
# The gateway end to end on real Flatnet: two hosts behind NAT routers,
# joined to a Lighthouse; the gateway runs on router r1 (the Windows host in
# front of WSL2 VM h1) and routes the Flatnet through h1 as
# `flatnetctl gateway-route` says; an office machine on r1's other side
# opens services that run in containers on h2, across both NATs and the
# WireGuard tunnel, with no VPN client.

load helpers
load helpers-wg
load helpers-nat
load helpers-gw
load podman

OUT="$REPO_ROOT/tests/out/gateway"

setup() {
    fn_setup
    nat_inet_create
    lh_start
    nat_router_create 1 ""
    nat_router_create 2 ""
    # h1's Flatnet DNS also answers the gateway's zone for the office LAN.
    # r1 (the gateway) may route into the Flatnet through h1; nobody else.
    # r1 is also in [dns] allow, the documented way to let the gateway's own
    # machine use Flatnet DNS: its relay must still give the LAN nothing more.
    nat_host_create 1 "catalog_listen = \"0.0.0.0:7070\"
forward_from = [\"192.168.1.254/32\"]
[dns]
allow = [\"192.168.1.254/32\"]
[dns.lan]
domain = \"$GW_DOMAIN\"
address = \"$GW_IP\"
names = [\"wiki\"]"
    nat_host_create 2 'catalog_listen = "0.0.0.0:7070"'
    nat_wait_path h1 h2 direct 15
    GW1="$(ctl h1 status --json | jq -r .network.gateway)"
    GW2="$(ctl h2 status --json | jq -r .network.gateway)"
}

teardown() {
    podman_teardown
    gw_stop
    fn_teardown
}

# web_on_h2: a Podman 4.3 container "$FN_PREFIX-web" on h2 publishing port
# 80; sets $web to its Flatnet IP.
web_on_h2() {
    podman_setup
    podman_conflist h2 flatnet-h2
    pm h2 run -d --name "$FN_PREFIX-web" --network flatnet-h2 -p 8080:80 "$PODMAN_IMAGE" \
        httpd -f -p 80 -h /www >/dev/null
    web="$(pm h2 inspect -f '{{(index .NetworkSettings.Networks "flatnet-h2").IPAddress}}' "$FN_PREFIX-web")"
}

@test "Chromium in the office renders a page from a Podman container on another Flatnet host" {
    web_on_h2
    # One catalog URL, h1's Flatnet-wide one: h1 fetches h2's over the tunnel.
    gw_start 1 "http://$GW1:7070/v1/catalog/all"
    all="$(in_ns r1 curl -sS --max-time 10 "http://$GW1:7070/v1/catalog/all")"
    echo "$all" | jq -e --arg ip "$web" '.services[] | select(.ip == $ip and .node == "h2" and .name == "'"$FN_PREFIX-web"'")'
    echo "$all" | jq -e '.peers[] | select(.node == "h2" and .services == 1)'
    # r1 reaches the container on h2 straight by Flatnet IP, through h1.
    [ "$(in_ns r1 curl -sS --max-time 10 "http://$web/")" = "flatnet test page" ]
    # The office machine gets a route too, but h1 forwards only from
    # forward_from (r1): the office must go through the gateway, and its
    # allow list.
    in_ns office ip route add 10.87.0.0/16 via "$GW_IP"
    ! in_ns office curl -sS --max-time 3 "http://$web/" || false
    in_ns h1 nft list chain ip flatnet forward | grep -q '192.168.1.254.*only forward_from may route into the Flatnet'
    in_ns office ip route del 10.87.0.0/16
    gw_wait_route "$FN_PREFIX-web" 20
    run chromium_office dom --dump-dom "http://$FN_PREFIX-web.$GW_DOMAIN/"
    [ "$status" -eq 0 ]
    [[ "$output" == *"flatnet test page"* ]]
    mkdir -p "$OUT"
    shot="$OUT/flatnet-e2e-web.png"
    rm -f "$shot"
    run chromium_office shot --screenshot="$shot" --window-size=800,400 "http://$FN_PREFIX-web.$GW_DOMAIN/"
    [ "$status" -eq 0 ]
    [ "$(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
    echo "# screenshot: $shot" >&3
    # The request crossed the gateway, and the route came from h2's catalog.
    grep -q "GET / " "$FN_TMP/gw/logs/access.log"
    gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json" | grep -q "$web"
}

# office_dns NAME [TYPE] [DIG ARGS...]: the office asks the gateway; prints
# the status and the answers.
office_dns() {
    local out
    out="$(in_ns office dig +time=2 +tries=1 "@$GW_IP" "$1" "${2:-A}" "${@:3}")" || return 1
    printf '%s %s\n' "$(sed -nE 's/.*status: ([A-Z]+).*/\1/p' <<<"$out")" \
        "$(awk '/^;; ANSWER SECTION/{a=1;next} /^$/{a=0} a && $4 == "A" {print $5}' <<<"$out" | tr '\n' ' ')"
}

# lan_zone_only: through the gateway's relay the office gets the LAN zone
# and nothing else: no recursion, no Flatnet address, no PTR.
lan_zone_only() {
    [ "$(office_dns "gateway.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    [ "$(office_dns example.com)" = "REFUSED " ]
    [ "$(office_dns "$FN_PREFIX-web.flatnet")" = "REFUSED " ]
    [ "$(office_dns "$FN_PREFIX-web")" = "REFUSED " ]
    [ "$(office_dns "$(echo "$web" | awk -F. '{print $4"."$3"."$2"."$1}').in-addr.arpa" PTR)" = "REFUSED " ]
    [ "$(office_dns "$FN_PREFIX-web.flatnet" A +tcp)" = "REFUSED " ]
}

@test "an office machine whose only DNS server is the gateway opens services by name, no hosts file" {
    web_on_h2
    GW_EXTRA="dns_listen = $GW_IP:53
dns_upstream = $GW1:5300" gw_start 1 "http://$GW1:7070/v1/catalog/all"
    gw_wait_route "$FN_PREFIX-web" 20
    # The office's resolver is the gateway, and nothing else: no hosts entry,
    # no --host-resolver-rules, no curl --connect-to.
    mkdir -p "/etc/netns/$(ns office)"
    echo "nameserver $GW_IP" > "/etc/netns/$(ns office)/resolv.conf"
    name="$FN_PREFIX-web.$GW_DOMAIN"
    for i in $(seq 50); do [ "$(office_dns "$name")" = "NOERROR $GW_IP " ] && break; sleep 0.1; done
    [ "$(office_dns "$name")" = "NOERROR $GW_IP " ]
    [ "$(office_dns "$name" A +tcp)" = "NOERROR $GW_IP " ]
    [ "$(office_dns "$FN_PREFIX-web.h2.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    [ "$(office_dns "gateway.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    [ "$(office_dns "wiki.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    [ "$(office_dns "nothing.$GW_DOMAIN")" = "NXDOMAIN " ]
    [ "$(office_dns "$name" AAAA)" = "NOERROR " ]
    # glibc and Chromium resolve it through the gateway.
    [ "$(in_ns office getent hosts "$name" | awk '{print $1}')" = "$GW_IP" ]
    run chromium_plain dns --dump-dom "http://$name/"
    [ "$status" -eq 0 ]
    [[ "$output" == *"flatnet test page"* ]]
    # Never an open resolver, and nothing of the Flatnet leaks to the LAN,
    # though r1, the relay's source, is in h1's [dns] allow: asked itself on
    # port 53, r1 gets the Flatnet name.
    [ "$(in_ns r1 dig +short +time=2 +tries=1 "@$GW1" "$FN_PREFIX-web.flatnet")" = "$web" ]
    lan_zone_only
    # A new container is found from the office within 2 s; a removed one is gone.
    pm h2 run -d --name "$FN_PREFIX-new" --network flatnet-h2 "$PODMAN_IMAGE" sleep 600 >/dev/null
    t0=$(date +%s%N)
    for i in $(seq 40); do [ "$(office_dns "$FN_PREFIX-new.$GW_DOMAIN")" = "NOERROR $GW_IP " ] && break; sleep 0.05; done
    [ "$(office_dns "$FN_PREFIX-new.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    echo "# new name answered to the office after $((($(date +%s%N) - t0) / 1000000)) ms" >&3
    pm h2 rm -f -t 0 "$FN_PREFIX-new" >/dev/null
    for i in $(seq 40); do [ "$(office_dns "$FN_PREFIX-new.$GW_DOMAIN")" = "NXDOMAIN " ] && break; sleep 0.05; done
    [ "$(office_dns "$FN_PREFIX-new.$GW_DOMAIN")" = "NXDOMAIN " ]
}

@test "with the gateway on the Flatnet host itself, its DNS relay still gives the office only the LAN zone" {
    web_on_h2
    # The relay's source is then one of h1's own addresses, which port 53
    # trusts with everything; the LAN zone's listener trusts nobody.
    GW_ON_HOST=1 GW_EXTRA="dns_listen = $GW_IP:53
dns_upstream = $GW1:5300" gw_start 1 "http://$GW1:7070/v1/catalog/all"
    for i in $(seq 50); do [ "$(office_dns "$FN_PREFIX-web.$GW_DOMAIN")" = "NOERROR $GW_IP " ] && break; sleep 0.1; done
    [ "$(office_dns "$FN_PREFIX-web.$GW_DOMAIN")" = "NOERROR $GW_IP " ]
    [ "$(in_ns h1 dig +short +time=2 +tries=1 "@$GW1" "$FN_PREFIX-web.flatnet")" = "$web" ]
    lan_zone_only
    # A relay pointed at port 53 is refused when the gateway config is rendered.
    sed -i "s/^dns_upstream = .*/dns_upstream = $GW1:53/" "$FN_TMP/gw/gateway.conf"
    run lua5.1 "$GW_RENDER" "$FN_TMP/gw/gateway.conf" -o "$FN_TMP/gw/bad.conf"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"port 53 is Flatnet DNS"* ]]
    [ ! -e "$FN_TMP/gw/bad.conf" ]
}

@test "a static route to a Flatnet host's own address is dropped, unless host_targets names it" {
    # h1's catalog port on its gateway address: the host itself, not a container.
    echo "route hostcat / $GW1:7070" >"$FN_TMP/static.conf"
    GW_EXTRA="static_routes = $FN_TMP/static.conf" gw_start 1 "http://$GW1:7070/v1/catalog/all"
    status_json() { gw_curl "http://gateway.$GW_DOMAIN/_flatnet/status?format=json"; }
    for i in $(seq 50); do status_json | grep -q "own address" && break; sleep 0.2; done
    status_json | grep -q "static route hostcat.$GW_DOMAIN.*: $GW1:7070 is a Flatnet host.s own address"
    run gw_curl -o /dev/null -w '%{http_code}' "http://hostcat.$GW_DOMAIN/v1/catalog"
    [ "$output" = 404 ]
    # Named on purpose, it is proxied.
    echo "host_targets = $GW1:7070" >>"$FN_TMP/gw/gateway.conf"
    (cd "$FN_TMP/gw" && lua5.1 "$GW_RENDER" gateway.conf -o nginx.conf)
    in_ns r1 nginx -p "$FN_TMP/gw" -c nginx.conf -s reload
    for i in $(seq 50); do gw_curl -f "http://hostcat.$GW_DOMAIN/v1/catalog" 2>/dev/null | grep -q '"node":"h1"' && break; sleep 0.2; done
    gw_curl -f "http://hostcat.$GW_DOMAIN/v1/catalog" | grep -q '"node":"h1"'
}

@test "a container on another host with the same name gets none of the name's requests: it is at <name>.<node>" {
    podman_setup
    podman_conflist h1 flatnet-h1
    podman_conflist h2 flatnet-h2
    # h1's "web" first; then h2 starts a "web" of its own.
    pm h1 run -d --name "$FN_PREFIX-web" --network flatnet-h1 -p 8080:80 "$PODMAN_IMAGE" \
        sh -c 'echo page-of-h1 > /tmp/index.html; exec httpd -f -p 80 -h /tmp' >/dev/null
    gw_start 1 "http://$GW1:7070/v1/catalog/all"
    gw_wait_route "$FN_PREFIX-web" 20
    # (A CNI container: both hosts share one Podman 4.3 store here, so one name.)
    ip netns add "$(ns h2-web)"
    netconf h2 1.0.0 '"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' |
        cni h2 ADD cid-web "/run/netns/$(ns h2-web)" eth0 "IgnoreUnknown=1;K8S_POD_NAME=$FN_PREFIX-web" \
        > "$FN_TMP/h2/web.json"
    mkdir -p "$FN_TMP/www2"
    echo page-of-h2 > "$FN_TMP/www2/index.html"
    in_ns h2-web python3 -m http.server 80 --bind "$(container_ip h2 web)" --directory "$FN_TMP/www2" \
        >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
    gw_wait_route "$FN_PREFIX-web.h2" 20
    # h1's flatnetd says who owns the name (Flatnet DNS's rule), and the gateway follows.
    all="$(in_ns r1 curl -sS --max-time 10 "http://$GW1:7070/v1/catalog/all")"
    [ "$(echo "$all" | jq -r '.services[] | select(.node == "h1") | .owner')" = true ]
    [ "$(echo "$all" | jq -r '.services[] | select(.node == "h2") | .owner')" = false ]
    got="$(for i in 1 2 3 4 5 6 7 8; do gw_curl "http://$FN_PREFIX-web.$GW_DOMAIN/"; done | sort | uniq -c | awk '{print $2 "=" $1}')"
    [ "$got" = "page-of-h1=8" ]
    [ "$(gw_curl "http://$FN_PREFIX-web.h2.$GW_DOMAIN/")" = page-of-h2 ]
    [ "$(gw_curl "http://$FN_PREFIX-web.h1.$GW_DOMAIN/")" = page-of-h1 ]
    # Flatnet DNS agrees, on both hosts.
    [ "$(in_ns h2 dig +short "@$GW2" "$FN_PREFIX-web.flatnet")" = "$(pm h1 inspect -f '{{(index .NetworkSettings.Networks "flatnet-h1").IPAddress}}' "$FN_PREFIX-web")" ]
}

@test "git clone and push through the gateway to a git server in a container on another host" {
    # A CNI container on h2 that publishes port 3000 under the name "forgejo".
    ip netns add "$(ns h2-forgejo)"
    netconf h2 1.0.0 '"runtimeConfig":{"portMappings":[{"hostPort":3000,"containerPort":3000,"protocol":"tcp"}]}' |
        cni h2 ADD cid-forgejo "/run/netns/$(ns h2-forgejo)" eth0 "IgnoreUnknown=1;K8S_POD_NAME=forgejo" \
        > "$FN_TMP/h2/forgejo.json"
    ip="$(container_ip h2 forgejo)"
    mkdir -p "$FN_TMP/repos"
    git init -q --bare -b main "$FN_TMP/repos/project.git"
    git -C "$FN_TMP/repos/project.git" config http.receivepack true
    git init -q -b main "$FN_TMP/seed"
    echo hello > "$FN_TMP/seed/README"
    git -C "$FN_TMP/seed" add README
    git -C "$FN_TMP/seed" -c user.name=t -c user.email=t@t commit -qm seed
    git -C "$FN_TMP/seed" push -q "$FN_TMP/repos/project.git" main
    in_ns h2-forgejo python3 "$REPO_ROOT/tests/gateway/py/gitserver.py" --bind "$ip" --port 3000 \
        --root "$FN_TMP/repos" >"$FN_TMP/gitserver.log" 2>&1 &
    disown $! 2>/dev/null || true
    gw_start 1 "http://$GW2:7070/v1/catalog"
    url="http://forgejo.$GW_DOMAIN/project.git"
    for i in $(seq 100); do
        gw_curl -f -o /dev/null "$url/info/refs?service=git-upload-pack" 2>/dev/null && break
        sleep 0.2
    done
    git_office() {
        in_ns office env GIT_TERMINAL_PROMPT=0 HOME="$FN_TMP" \
            git -c "http.curloptResolve=forgejo.$GW_DOMAIN:80:$GW_IP" "$@"
    }
    run git_office clone -q "$url" "$FN_TMP/work"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(cat "$FN_TMP/work/README")" = hello ]
    # Big enough that git streams the push chunked, through the tunnel.
    head -c 8000000 /dev/urandom > "$FN_TMP/work/blob.bin"
    git -C "$FN_TMP/work" add blob.bin
    git -C "$FN_TMP/work" -c user.name=t -c user.email=t@t commit -qm blob
    run git_office -C "$FN_TMP/work" push origin main
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(git -C "$FN_TMP/repos/project.git" rev-parse main)" = "$(git -C "$FN_TMP/work" rev-parse main)" ]
    run git_office clone -q "$url" "$FN_TMP/again"
    [ "$status" -eq 0 ]
    cmp "$FN_TMP/work/blob.bin" "$FN_TMP/again/blob.bin"
    grep -q 'POST /project.git/git-receive-pack' "$FN_TMP/gw/logs/access.log"
}

@test "flatnetctl gateway-route names the host's LAN address and both route forms" {
    run gw_route_hint h1
    [ "$status" -eq 0 ]
    [[ "$output" == *"reachable through this host at 192.168.1.1 (lan0)"* ]]
    [[ "$output" == *"ip route add 10.87.0.0/16 via 192.168.1.1"* ]]
    [[ "$output" == *"route add 10.87.0.0 mask 255.255.0.0 192.168.1.1"* ]]
    [[ "$output" == *"192.168.1.254 may route into the Flatnet here (forward_from); other machines may not."* ]]
    run gw_route_hint h2
    [[ "$output" == *'forward_from = ["192.168.2.254/32"]'* ]]
    # flatnetd masquerades routed clients into the tunnel (and only those:
    # not its own containers, not the remote members a hub forwards).
    in_ns h1 nft list table ip flatnet |
        grep -qF 'oifname "flatnet0" ip saddr != { 10.87.1.0/24, 10.87.255.0/24 } masquerade'
}
