#!/usr/bin/env bats
# A route's only target behind a path that loses packets for a moment (a NAT
# rebinding, Wi-Fi, a busy host): the gateway must not turn a lost SYN into
# an outage. Before issue 34 was fixed, one active check whose SYN was lost
# timed out (1 s, the same as TCP's first SYN retransmission) and marked the
# only target down: every request got a 503 until the next check.

load helpers

setup() {
    fgw_setup
    fgw_backend b1 10.87.1.5 8080
    echo "route web / 10.87.1.5:8080" >"$FGW_TMP/static.conf"
    fgw_gateway_start <<<"static_routes = $FGW_TMP/static.conf"
    fgw_eventually 10 fgw_curl -sf -o /dev/null http://web.flatnet.test/ping
}

teardown() {
    fgw_teardown
}

# stall SECONDS: the backend drops every new connection's SYN for that long.
stall() {
    ip netns exec "$FGW_NS-b1" nft -f - <<'NFT'
table inet stall {
    chain input { type filter hook input priority 0; policy accept; tcp flags & (syn | ack) == syn drop; }
}
NFT
    sleep "$1"
    ip netns exec "$FGW_NS-b1" nft delete table inet stall
}

@test "short losses on the only target's path: every request answered, none refused" {
    local out="$FGW_TMP/codes" i
    # Requests every 0.2 s from the office while the path loses every SYN
    # for 0.8 s in each 3 s (TCP's retransmission after 1 s gets through).
    ( for i in $(seq 120); do
          ip netns exec "$FGW_NS-lan" curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 \
              --connect-to "::$FGW_GW_IP:" http://web.flatnet.test/ping
          sleep 0.2
      done >"$out" ) &
    local loop=$!
    for i in $(seq 8); do
        stall 0.8
        sleep 2.2
    done
    wait "$loop"
    sort "$out" | uniq -c
    [ "$(wc -l <"$out")" -eq 120 ]
    [ "$(grep -vc '^200$' "$out")" -eq 0 ]
    # The checker saw the losses (at most single timeouts), and never called
    # the target down.
    ! grep -q "10.87.1.5:8080 is down" "$FGW_TMP/gw/logs/error.log"
}

@test "a target whose path stays dead is still marked down within two checks" {
    ip netns exec "$FGW_NS-b1" nft -f - <<'NFT'
table inet stall {
    chain input { type filter hook input priority 0; policy accept; tcp flags & (syn | ack) == syn drop; }
}
NFT
    # Two timed-out checks (2 s each, 1 s apart) and the status page says so.
    fgw_eventually 12 bash -c "grep -q '10.87.1.5:8080 is down' '$FGW_TMP/gw/logs/error.log'"
    grep "10.87.1.5:8080 is down" "$FGW_TMP/gw/logs/error.log" | grep -q "2 checks in a row"
    run fgw_curl -w '\n%{http_code}' http://web.flatnet.test/
    [ "${lines[-1]}" = 503 ]
    # The target's path comes back: so does the route, at the next check.
    ip netns exec "$FGW_NS-b1" nft delete table inet stall
    fgw_eventually 5 fgw_curl -sf -o /dev/null http://web.flatnet.test/ping
}
