#!/usr/bin/env bats
# Prometheus metrics (metrics_listen): requests by service and status class, upstream
# latency, target health; off unless configured.

load helpers

setup() {
    fgw_setup
    fgw_backend b1 10.87.1.5 8080
    # "dead" points at a port nobody listens on: refused at once, 502.
    printf 'route web / 10.87.1.5:8080\nroute dead / 10.87.1.5:8081\n' >"$FGW_TMP/static.conf"
}

teardown() {
    fgw_teardown
}

scrape() {
    ip netns exec "$FGW_NS-gw" curl -sf http://127.0.0.1:9589/metrics
}

mval() { awk -v k="$2" '$1 == k { print $2 }' <<<"$1"; }

dead_target_down() {
    scrape | grep -q 'target="10.87.1.5:8081"} 0'
}

@test "requests, latency and target health are counted per service" {
    printf 'static_routes = %s\nmetrics_listen = 127.0.0.1:9589\n' "$FGW_TMP/static.conf" | fgw_gateway_start
    for _ in 1 2 3 4 5; do fgw_curl -o /dev/null http://web.flatnet.test/ping; done
    for _ in 1 2 3; do fgw_curl -o /dev/null http://dead.flatnet.test/; done
    fgw_curl -o /dev/null http://nosuch.flatnet.test/
    # The dead target's active check fails within a health interval.
    fgw_eventually 5 dead_target_down
    m="$(scrape)"
    echo "$m"
    web="$(grep 'target="10.87.1.5:8080"' <<<"$m" | grep -o 'service="[^"]*"' | head -1)"
    dead="$(grep 'target="10.87.1.5:8081"' <<<"$m" | grep -o 'service="[^"]*"' | head -1)"
    echo "route labels: $web $dead"
    [ -n "$web" ] && [ -n "$dead" ]
    [ "$(mval "$m" "flatnet_gateway_requests_total{$web,status=\"2xx\"}")" = 5 ]
    [ "$(mval "$m" "flatnet_gateway_requests_total{$dead,status=\"5xx\"}")" = 3 ]
    [ "$(mval "$m" 'flatnet_gateway_requests_total{service="_unrouted",status="4xx"}')" = 1 ]
    [ "$(mval "$m" "flatnet_gateway_upstream_latency_seconds_count{$web}")" = 5 ]
    [ "$(mval "$m" "flatnet_gateway_upstream_latency_seconds_bucket{$web,le=\"+Inf\"}")" = 5 ]
    [ "$(mval "$m" "flatnet_gateway_target_up{$web,target=\"10.87.1.5:8080\"}")" = 1 ]
    [ "$(mval "$m" flatnet_gateway_routes)" = 2 ]
    # The exposition follows Prometheus' rules (names, types, units), and has
    # every gateway metric docs/operations.md lists.
    scrape | promtool check metrics
    awk 'index($0, "Gateway (") == 1 { f = 1; next } /^[A-Z][a-z]+ \(/ { f = 0 } f && /^\| `flatnet_/' \
        "$FGW_REPO/docs/operations.md" | cut -d'|' -f2 | grep -o 'flatnet_[a-z_]*' >"$FGW_TMP/documented"
    [ "$(wc -l <"$FGW_TMP/documented")" -ge 4 ]
    while read -r n; do
        grep -q "^# TYPE $n " <<<"$m" || { echo "documented, not exposed: $n"; false; }
    done <"$FGW_TMP/documented"
    # Only /metrics is served there.
    [ "$(ip netns exec "$FGW_NS-gw" curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9589/)" = 404 ]
}

@test "metrics are off unless metrics_listen is set, and a bad address is refused" {
    fgw_gateway_start <<<"static_routes = $FGW_TMP/static.conf"
    ! grep -q flatnet_metrics "$FGW_TMP/gw/nginx.conf" || false
    ! grep -q log_by_lua "$FGW_TMP/gw/nginx.conf" || false
    printf 'domain = x.test\nflatnet_cidr = 10.87.0.0/16\nstatic_routes = %s\nmetrics_listen = localhost:99999\n' \
        "$FGW_TMP/static.conf" >"$FGW_TMP/bad.conf"
    run lua5.1 "$FGW_RENDER" "$FGW_TMP/bad.conf"
    [ "$status" -ne 0 ]
    [[ "$output" == *"metrics_listen: expected port or ipv4:port"* ]]
}
