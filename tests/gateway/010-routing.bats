#!/usr/bin/env bats
# Routing by Host and path prefix, proxy headers, undecoded URIs, error and status pages.

load helpers

setup() {
    fgw_setup
    fgw_backend web 10.87.1.5 8080
    fgw_backend api 10.87.2.7 9000
    cat >"$FGW_TMP/static.conf" <<EOF2
route web / 10.87.1.5:8080
route web /api 10.87.2.7:9000
route web /api/v1/special 10.87.1.5:8080
route other.example.org / 10.87.2.7:9000
EOF2
    fgw_gateway_start <<<"static_routes = $FGW_TMP/static.conf"
}

teardown() {
    fgw_teardown
}

@test "routes by Host header to the right Flatnet target" {
    run fgw_curl http://web.flatnet.test/hello
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["backend"]' <<<"$output")" = web ]
    run fgw_curl http://other.example.org/hello
    [ "$(fgw_json 'j["backend"]' <<<"$output")" = api ]
    # case and trailing dot do not matter
    run fgw_curl -H 'Host: WEB.Flatnet.Test.' http://web.flatnet.test/
    [[ "$output" == *"Hello from web"* ]]
}

@test "longest path prefix wins, on whole segments" {
    [ "$(fgw_curl http://web.flatnet.test/api/users | fgw_json 'j["backend"]')" = api ]
    [ "$(fgw_curl http://web.flatnet.test/api | fgw_json 'j["backend"]')" = api ]
    [ "$(fgw_curl http://web.flatnet.test/apix | fgw_json 'j["backend"]')" = web ]
    [ "$(fgw_curl http://web.flatnet.test/api/v1/special/x | fgw_json 'j["backend"]')" = web ]
    [ "$(fgw_curl http://web.flatnet.test/api/v1/specialx | fgw_json 'j["backend"]')" = api ]
}

@test "Host is preserved and X-Forwarded-* are set" {
    run fgw_curl -H 'X-Forwarded-For: 6.6.6.6' -H 'Host: Web.flatnet.test:80' http://web.flatnet.test/h
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["backend"]' <<<"$output")" = web ]
    [ "$(fgw_json 'j["headers"]["host"]' <<<"$output")" = "Web.flatnet.test:80" ]
    [ "$(fgw_json 'j["headers"]["x-forwarded-for"]' <<<"$output")" = "$FGW_LAN_IP" ]
    [ "$(fgw_json 'j["headers"]["x-forwarded-proto"]' <<<"$output")" = http ]
    [ "$(fgw_json 'j["headers"]["x-forwarded-host"]' <<<"$output")" = "Web.flatnet.test:80" ]
}

@test "the request URI reaches the target exactly as sent (no decoding, no normalising)" {
    local uri='/user/a%2Fb/../c%20d;x=1?q=%41%2B+b&r=%2F'
    run fgw_curl --path-as-is "http://web.flatnet.test$uri"
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["path"]' <<<"$output")" = "$uri" ]
}

@test "unknown host gets a 404 page listing the known services" {
    run fgw_curl -w '\n%{http_code}' http://nope.flatnet.test/x
    [ "$status" -eq 0 ]
    [ "${lines[-1]}" = 404 ]
    [[ "$output" == *"No service at <code>nope.flatnet.test</code>"* ]]
    [[ "$output" == *'href="http://web.flatnet.test/"'* ]]
    [[ "$output" == *'other.example.org/'* ]]
    # hostile Host values are escaped, not reflected
    run fgw_curl -H 'Host: <script>x' http://web.flatnet.test/
    [[ "$output" != *"<script>"* ]]
}

@test "status page lists routes and target health, in HTML and JSON" {
    run fgw_curl -w '\n%{http_code}' http://gateway.flatnet.test/_flatnet/status
    [ "${lines[-1]}" = 200 ]
    [[ "$output" == *"Flatnet gateway status"* ]]
    [[ "$output" == *"web.flatnet.test/api"* ]]
    [[ "$output" == *"10.87.2.7:9000"* ]]
    run fgw_status_json
    [ "$(fgw_json 'len(j["routes"])' <<<"$output")" -eq 4 ]
    [ "$(fgw_json '[r for r in j["routes"] if r["prefix"] == "/api"][0]["targets"][0]["target"]' <<<"$output")" = 10.87.2.7:9000 ]
    [ "$(fgw_json 'j["static"]["ok"]' <<<"$output")" = True ]
}

@test "the renderer refuses bad configs and nginx refuses a broken static file" {
    run lua5.1 "$FGW_RENDER" /dev/stdin <<<"domain = x.test"
    [ "$status" -ne 0 ]
    [[ "$output" == *"no routes"* ]]
    run lua5.1 "$FGW_RENDER" /dev/stdin <<<$'domain = x.test\ncatalog_url = http://a/'
    [ "$status" -ne 0 ]
    [[ "$output" == *"flatnet_cidr: the Flatnet's address range is required"* ]]
    run lua5.1 "$FGW_RENDER" /dev/stdin <<<$'domain = x.test\ncatalog_url = http://a/\nallow = 10.0.0.0/99'
    [ "$status" -ne 0 ]
    [[ "$output" == *"allow"* ]]
    fgw_gateway_stop
    sleep 0.5
    echo "route web / not-an-ip:80" >"$FGW_TMP/static.conf"
    run ip netns exec "$FGW_NS-gw" nginx -p "$FGW_TMP/gw" -c nginx.conf
    [ "$status" -ne 0 ]
    [[ "$output" == *"static routes line 1: bad target"* ]]
}
