#!/usr/bin/env bats
# Several targets per route: round robin, passive and active health, failover, all-down page.

load helpers

setup() {
    fgw_setup
    fgw_backend b1 10.87.1.5 8080
    fgw_backend b2 10.87.2.5 8080
    echo "route web / 10.87.1.5:8080 10.87.2.5:8080" >"$FGW_TMP/static.conf"
    fgw_gateway_start <<<"static_routes = $FGW_TMP/static.conf"
}

teardown() {
    fgw_teardown
}

backends_seen() {
    local i
    for i in $(seq 1 "$1"); do
        fgw_curl http://web.flatnet.test/ping | fgw_json 'j["backend"]'
    done | sort | uniq -c | awk '{print $2 "=" $1}' | paste -sd' '
}

target_down() {
    fgw_status_json | fgw_json "[t for r in j['routes'] for t in r['targets'] if t['target'] == '$1'][0]['up'] == False" | grep -q True
}

target_up() {
    fgw_status_json | fgw_json "[t for r in j['routes'] for t in r['targets'] if t['target'] == '$1'][0]['up']" | grep -q True
}

@test "requests alternate between the targets of a route" {
    run backends_seen 10
    echo "$output"
    [ "$output" = "b1=5 b2=5" ]
}

@test "a target whose process died: no failed request, marked down, back when it returns" {
    fgw_kill_backend b1 8080
    run backends_seen 10
    echo "$output"
    [ "$output" = "b2=10" ]
    fgw_eventually 5 target_down 10.87.1.5:8080
    fgw_status_json | fgw_json "j['routes'][0]['targets'][0]['reason']" | grep -E 'connection refused|failed attempts'
    fgw_backend b1 10.87.1.5 8080
    # active checks see it again (which also ends the passive down)
    fgw_eventually 15 target_up 10.87.1.5:8080
    fgw_eventually 10 bash -c "$(declare -f backends_seen fgw_curl fgw_json); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP FGW_PYTHON=$FGW_PYTHON; backends_seen 4 | grep -q b1"
}

@test "a target whose host vanished (connect timeout): requests still succeed" {
    ip netns pids "$FGW_NS-b1" | xargs -r kill -9
    ip netns del "$FGW_NS-b1"
    run backends_seen 6
    echo "$output"
    [ "$output" = "b2=6" ]
    fgw_eventually 10 target_down 10.87.1.5:8080
    # The active check sees it too. It fails either at once ("no route to host",
    # once the neighbour entry is gone) or by timing out, which counts only after
    # health_timeouts (2) checks in a row, one health_interval (5 s) apart: ~14 s.
    fgw_eventually 20 grep -qE "10.87.1.5:8080 is down: TCP connect: (no route to host|timeout \(2 checks in a row\))" \
        "$FGW_TMP/gw/logs/error.log"
}

@test "all targets down: a clear 503 page naming them" {
    fgw_kill_backend b1 8080
    fgw_kill_backend b2 8080
    fgw_eventually 5 target_down 10.87.2.5:8080
    fgw_eventually 5 target_down 10.87.1.5:8080
    run fgw_curl -w '\n%{http_code}' http://web.flatnet.test/
    echo "$output"
    [ "${lines[-1]}" = 503 ]
    [[ "$output" == *"All 2 target(s) of this service are down"* ]]
    [[ "$output" == *"10.87.1.5:8080"*"10.87.2.5:8080"* ]]
}

@test "targets failing before health notices: a clear 502 page naming what was tried" {
    fgw_kill_backend b1 8080
    fgw_kill_backend b2 8080
    run fgw_curl -w '\n%{http_code}' http://web.flatnet.test/
    echo "$output"
    [[ "${lines[-1]}" == 50[23] ]]
    [[ "$output" == *"10.87."* ]]
}
