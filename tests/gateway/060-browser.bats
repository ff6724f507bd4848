#!/usr/bin/env bats
# End to end as a person would: headless Chromium on the LAN opens http://web.flatnet.test/.

load helpers

setup() {
    fgw_setup
    fgw_backend web 10.87.1.5 8080
    fgw_catalog host1 "web 10.87.1.5 8080"
    fgw_catalog_server
    fgw_gateway_start <<<"catalog_url = http://10.87.0.2:7070/v1/catalog"
    fgw_eventually 5 bash -c "$(declare -f fgw_curl); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP; fgw_curl -f -o /dev/null http://web.flatnet.test/"
    mkdir -p "$FGW_OUT"
}

teardown() {
    fgw_teardown
}

chromium_lan() {
    ip netns exec "$FGW_NS-lan" timeout 60 chromium --headless --no-sandbox --disable-gpu \
        --disable-background-networking --disable-component-update --disable-sync --no-first-run \
        --disable-quic --disable-dev-shm-usage --user-data-dir="$FGW_TMP/chromium-$1" \
        --host-resolver-rules="MAP *.flatnet.test $FGW_GW_IP" "${@:2}"
}

@test "Chromium on the LAN renders the page served from a Flatnet backend" {
    run chromium_lan dom --dump-dom http://web.flatnet.test/
    [ "$status" -eq 0 ]
    [[ "$output" == *"<h1>Hello from web</h1>"* ]]
    [[ "$output" == *"served by backend web at 10.87.1.5"* ]]
    [[ "$output" == *"Host header: <code>web.flatnet.test</code>"* ]]
    local shot="$FGW_OUT/web-flatnet-test.png"
    rm -f "$shot"
    run chromium_lan shot --screenshot="$shot" --window-size=1024,600 http://web.flatnet.test/
    [ "$status" -eq 0 ]
    [ -s "$shot" ]
    [ "$(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
    echo "# screenshot: $shot" >&3
}

@test "Chromium on the LAN gets the 404 page for an unknown service" {
    run chromium_lan dom --dump-dom http://nothing.flatnet.test/
    [ "$status" -eq 0 ]
    [[ "$output" == *"No service at"* ]]
    [[ "$output" == *"web.flatnet.test/"* ]]
}
