#!/usr/bin/env bats
# What Forgejo needs from the proxy: WebSocket, unbuffered SSE, streamed uploads, TLS.

load helpers

setup() {
    fgw_setup
    fgw_backend web 10.87.1.5 8080
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=*.flatnet.test" \
        -addext "subjectAltName=DNS:*.flatnet.test,DNS:flatnet.test" \
        -keyout "$FGW_TMP/gw/tls.key" -out "$FGW_TMP/gw/tls.crt" 2>/dev/null
    echo "route web / 10.87.1.5:8080" >"$FGW_TMP/static.conf"
    fgw_gateway_start <<EOF2
static_routes = $FGW_TMP/static.conf
listen_tls = 443
tls_certificate = $FGW_TMP/gw/tls.crt
tls_certificate_key = $FGW_TMP/gw/tls.key
EOF2
}

teardown() {
    fgw_teardown
}

@test "WebSocket upgrade and echo through the gateway" {
    run ip netns exec "$FGW_NS-lan" "$FGW_PYTHON" "$FGW_PY/wsclient.py" "$FGW_GW_IP" 80 web.flatnet.test /ws hello "second message"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "echo: hello" ]
    [ "${lines[1]}" = "echo: second message" ]
    [ "${lines[2]}" = "closed" ]
}

@test "server-sent events arrive one by one, not buffered" {
    fgw_curl -N http://web.flatnet.test/sse | while IFS= read -r line; do
        if [ -n "$line" ]; then echo "$(date +%s.%N) $line"; fi
    done >"$FGW_TMP/sse.txt"
    cat "$FGW_TMP/sse.txt"
    [ "$(wc -l <"$FGW_TMP/sse.txt")" -eq 5 ]
    # each event arrives within 0.25 s of being sent (sent 0.3 s apart, 1.2 s in all)
    run awk '{ lag = $1 - $6; if (lag > 0.25 || lag < -0.05) { print "late:", $0; bad = 1 } } END { exit bad }' "$FGW_TMP/sse.txt"
    echo "$output"
    [ "$status" -eq 0 ]
    first=$(head -1 "$FGW_TMP/sse.txt" | cut -d' ' -f1)
    last=$(tail -1 "$FGW_TMP/sse.txt" | cut -d' ' -f1)
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b - a > 1.0) }'
}

@test "a 300 MB upload streams through unbuffered and arrives intact" {
    gen() { openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -nosalt -in /dev/zero 2>/dev/null | head -c 314572800; }
    want=$(gen | sha256sum | cut -d' ' -f1)
    run bash -c "$(declare -f gen fgw_curl); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP; gen | fgw_curl --max-time 120 -T - http://web.flatnet.test/upload"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["bytes"]' <<<"$output")" -eq 314572800 ]
    [ "$(fgw_json 'j["sha256"]' <<<"$output")" = "$want" ]
    # nothing went through nginx's disk buffer
    [ "$(find "$FGW_TMP/gw/temp" -type f | wc -l)" -eq 0 ]
    ! grep -q "buffered to a temporary file" "$FGW_TMP/gw/logs/error.log" || false
}

@test "a slow upload reaches the target while the client is still sending" {
    head -c 2000000 /dev/urandom >"$FGW_TMP/slow.bin"
    run fgw_curl --limit-rate 800K --data-binary @"$FGW_TMP/slow.bin" http://web.flatnet.test/upload
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["bytes"]' <<<"$output")" -eq 2000000 ]
    # with request buffering the target would see the first byte only at the end
    [ "$(fgw_json 'int(j["done_at"] - j["first_byte_at"] > 1.0)' <<<"$output")" -eq 1 ]
}

@test "TLS is terminated with the configured certificate" {
    run fgw_curl --cacert "$FGW_TMP/gw/tls.crt" https://web.flatnet.test/tls-check
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(fgw_json 'j["headers"]["x-forwarded-proto"]' <<<"$output")" = https ]
    [ "$(fgw_json 'j["headers"]["host"]' <<<"$output")" = web.flatnet.test ]
    run fgw_curl -v --cacert "$FGW_TMP/gw/tls.crt" -o /dev/null https://web.flatnet.test/
    [[ "$output" == *"subject: CN=*.flatnet.test"* ]]
    # an untrusting client refuses it: the certificate really is ours, not a default
    run fgw_curl https://web.flatnet.test/
    [ "$status" -ne 0 ]
}
