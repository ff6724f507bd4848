#!/usr/bin/env bats
# Client-subnet allow list: allowed subnets get through, everyone else gets a clear 403.

load helpers

setup() {
    fgw_setup
    fgw_lan_netns guest 192.168.77.200
    fgw_backend web 10.87.1.5 8080
    echo "route web / 10.87.1.5:8080" >"$FGW_TMP/static.conf"
    fgw_gateway_start <<EOF2
static_routes = $FGW_TMP/static.conf
allow = 192.168.77.0/25
allow = 127.0.0.1
EOF2
}

teardown() {
    fgw_teardown
}

@test "a client inside the allow list reaches the service" {
    run fgw_curl -w '\n%{http_code}' http://web.flatnet.test/x
    [ "${lines[-1]}" = 200 ]
}

@test "a client outside the allow list gets a 403 page, for services and status alike" {
    run fgw_curl_from guest -w '\n%{http_code}' http://web.flatnet.test/x
    echo "$output"
    [ "${lines[-1]}" = 403 ]
    [[ "$output" == *"192.168.77.200"*"not in the gateway's allow list"* ]]
    run fgw_curl_from guest -w '\n%{http_code}' http://gateway.flatnet.test/_flatnet/status
    [ "${lines[-1]}" = 403 ]
    # and nothing reached the backend for it
    ! grep -q 192.168.77.200 "$FGW_TMP/backend-web-8080.log" || false
}
