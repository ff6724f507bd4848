#!/usr/bin/env bats
# Live routes from the Flatnet catalog: refresh, merge, strict validation, keeping good
# routes when a catalog is bad or its endpoint is down.

load helpers

setup() {
    fgw_setup
    fgw_backend web 10.87.1.5 8080
    fgw_backend api 10.87.2.7 9000
    fgw_catalog host1 "web 10.87.1.5 8080"
}

teardown() {
    fgw_teardown
}

start_gateway() {
    fgw_gateway_start <<EOF2
catalog_url = http://10.87.0.2:7070/v1/catalog
$*
EOF2
}

backend_of() {
    fgw_curl "http://$1.flatnet.test/x" | fgw_json 'j["backend"]'
}

routes_hosts() {
    fgw_status_json | fgw_json '" ".join(sorted(r["host"] for r in j["routes"]))'
}

source_error() {
    fgw_status_json | fgw_json 'j["sources"][0].get("error") or ""'
}

has_route() {
    [ "$(backend_of "$1")" = "$2" ]
}

@test "services in the catalog are served at <name>.<domain>" {
    fgw_catalog_server
    start_gateway
    fgw_eventually 5 has_route web web
    run fgw_curl -w '\n%{http_code}' http://api.flatnet.test/
    [ "${lines[-1]}" = 404 ]
}

@test "a chunked catalog response is understood" {
    fgw_catalog_server --chunked
    start_gateway
    fgw_eventually 5 has_route web web
}

@test "catalog changes are picked up after the refresh interval" {
    fgw_catalog_server
    start_gateway
    fgw_eventually 5 has_route web web
    fgw_catalog host1 "web 10.87.1.5 8080" "api 10.87.2.7 9000"
    fgw_eventually 5 has_route api api
    fgw_catalog host1 "api 10.87.2.7 9000"
    fgw_eventually 5 bash -c "$(declare -f fgw_curl); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP; fgw_curl -o /dev/null -w '%{http_code}' http://web.flatnet.test/ | grep -q 404"
    grep -q "routes updated" "$FGW_TMP/gw/logs/error.log"
}

@test "bad catalogs never replace good routes; the error is logged and shown" {
    fgw_catalog_server
    start_gateway
    fgw_eventually 5 has_route web web
    local cat="$FGW_TMP/catalog.json" big name
    name=$(head -c 5000 /dev/zero | tr '\0' a)
    declare -a bad=(
        '{"version": 1, "node": "host1", "services": [{"name": "api"'
        '{"version": 1, "node": "host1", "services": [{"name": "api", "node": "host1", "ip": "10.87.2.7", "ports": [{"port": "9000", "protocol": "tcp"}]}]}'
        '{"version": 1, "node": "host1", "services": [{"name": "'"$name"'", "node": "host1", "ip": "10.87.2.7", "ports": [{"port": 9000, "protocol": "tcp"}]}]}'
        '{"version": 1, "node": "host1", "services": [{"name": "api", "node": "host1", "ip": "$(reboot)", "ports": [{"port": 9000, "protocol": "tcp"}]}]}'
        '{"version": 1, "node": "host1", "services": [{"name": "api", "node": "host1", "ip": "10.87.2.7", "ports": [{"port": 9000, "protocol": "tcp"}]}, {"name": "<b>x</b>", "node": "h", "ip": "10.87.2.8", "ports": []}]}'
        '{"version": 2, "node": "host1", "services": []}'
        '[]'
    )
    declare -a want=(
        'invalid JSON'
        'services[0].ports[0].port: expected an integer 1..65535, got "9000"'
        'services[0].name: expected a DNS label'
        'services[0].ip: expected an IPv4 dotted quad, got "$(reboot)"'
        'services[1].name: expected a DNS label'
        'version: expected 1, got 2'
        'version: expected 1, got nothing'
    )
    local i
    for i in "${!bad[@]}"; do
        printf '%s' "${bad[$i]}" >"$cat"
        fgw_eventually 5 bash -c "$(declare -f fgw_curl fgw_status_json fgw_json source_error); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP FGW_DOMAIN=$FGW_DOMAIN FGW_PYTHON=$FGW_PYTHON; source_error | grep -qF '${want[$i]}'"
        [ "$(routes_hosts)" = "web.flatnet.test web.host1.flatnet.test" ]
        [ "$(backend_of web)" = web ]
        grep -qF "${want[$i]}" "$FGW_TMP/gw/logs/error.log"
    done
    # oversized documents are refused without being parsed
    head -c 5000000 /dev/zero | tr '\0' ' ' >"$cat"
    fgw_eventually 5 bash -c "$(declare -f fgw_curl fgw_status_json fgw_json source_error); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP FGW_DOMAIN=$FGW_DOMAIN FGW_PYTHON=$FGW_PYTHON; source_error | grep -q 'larger than'"
    [ "$(backend_of web)" = web ]
    # hostile values are escaped on the status page
    run fgw_curl http://gateway.flatnet.test/_flatnet/status
    [[ "$output" != *"<b>x</b>"* ]]
    [[ "$output" == *"previous routes from it are kept"* ]]
    # and a good catalog is taken again
    fgw_catalog host1 "web 10.87.1.5 8080" "api 10.87.2.7 9000"
    fgw_eventually 5 has_route api api
}

@test "catalog endpoint down or failing: routes are kept" {
    fgw_catalog_server
    start_gateway
    fgw_eventually 5 has_route web web
    rm "$FGW_TMP/catalog.json"
    fgw_eventually 5 bash -c "$(declare -f fgw_curl fgw_status_json fgw_json source_error); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP FGW_DOMAIN=$FGW_DOMAIN FGW_PYTHON=$FGW_PYTHON; source_error | grep -q 'HTTP status 503'"
    [ "$(backend_of web)" = web ]
    fgw_kill_backend flatnetd 7070
    fgw_eventually 5 bash -c "$(declare -f fgw_curl fgw_status_json fgw_json source_error); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP FGW_DOMAIN=$FGW_DOMAIN FGW_PYTHON=$FGW_PYTHON; source_error | grep -q 'connection refused'"
    sleep 2
    [ "$(backend_of web)" = web ]
    grep -q "catalog http://10.87.0.2:7070/v1/catalog rejected: connect to 10.87.0.2:7070: connection refused; previous routes from it are kept" \
        "$FGW_TMP/gw/logs/error.log"
}

@test "catalogs of several hosts: a bare name has one owner, the other at <name>.<node>; replicas opt in; static overrides" {
    fgw_backend web2 10.87.3.5 8080
    fgw_catalog_server
    mkdir -p "$FGW_TMP/c2"
    echo '{"version": 1, "node": "host3", "services": [{"name": "web", "node": "host3", "ip": "10.87.3.5", "ports": [{"port": 8080, "protocol": "tcp"}]}]}' \
        >"$FGW_TMP/c2/catalog.json"
    fgw_backend flatnetd2 10.87.0.3 7070 --catalog "$FGW_TMP/c2/catalog.json"
    echo "route web /api 10.87.2.7:9000" >"$FGW_TMP/static.conf"
    start_gateway "catalog_url = http://10.87.0.3:7070/v1/catalog
static_routes = $FGW_TMP/static.conf"
    fgw_eventually 5 has_route web.host3 web2
    # Both seen in the same refresh: host1 owns "web" (node name order); every
    # request for web.flatnet.test goes there, none to host3's container.
    seen=$(for i in 1 2 3 4 5 6 7 8; do backend_of web; done | sort | uniq -c | awk '{print $2 "=" $1}' | paste -sd' ')
    [ "$seen" = "web=8" ]
    [ "$(backend_of web.host1)" = web ]
    fgw_status_json | grep -q "service web on node host3 does not own the name web: only at web.host3.flatnet.test"
    [ "$(fgw_curl http://web.flatnet.test/api/x | fgw_json 'j["backend"]')" = api ]
    # Balancing across hosts is explicit.
    fgw_gateway_stop
    sleep 0.5
    start_gateway "catalog_url = http://10.87.0.3:7070/v1/catalog
static_routes = $FGW_TMP/static.conf
replicas = web"
    fgw_eventually 5 has_route web.host3 web2
    seen=$(for i in 1 2 3 4; do backend_of web; done | sort -u | paste -sd' ')
    [ "$seen" = "web web2" ]
}

@test "a catalog naming an address outside the Flatnet (the gateway's loopback) is never proxied to" {
    # A loopback-only admin service on the gateway host.
    fgw_spawn gw backend-admin "$FGW_PYTHON" "$FGW_PY/backend.py" --name admin --bind 127.0.0.1 --port 9999 \
        --verbose >"$FGW_TMP/backend-admin.pid"
    fgw_wait_port gw 127.0.0.1 9999
    fgw_catalog_server
    fgw_catalog host1 "web 10.87.1.5 8080" "admin 127.0.0.1 9999"
    start_gateway
    fgw_eventually 5 has_route web web
    [ "$(fgw_curl -o /dev/null -w '%{http_code}' http://admin.flatnet.test/x)" = 404 ]
    [ "$(fgw_curl -o /dev/null -w '%{http_code}' http://admin.host1.flatnet.test/x)" = 404 ]
    # It logs every request it gets: none so far.
    ! grep -q '"GET ' "$FGW_TMP/backend-admin.log" || false
    fgw_status_json | grep -q "service admin on node host1: 127.0.0.1 is outside the Flatnet 10.87.0.0"
    grep -q "service admin on node host1: 127.0.0.1 is outside the Flatnet 10.87.0.0/16: not routed" \
        "$FGW_TMP/gw/logs/error.log"
    # The admin service is there: the gateway chose not to reach it.
    ip netns exec "$FGW_NS-gw" curl -sf http://127.0.0.1:9999/x | grep -q admin
    grep -q '"GET /x ' "$FGW_TMP/backend-admin.log"
}
