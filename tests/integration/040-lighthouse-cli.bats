#!/usr/bin/env bats
# The lighthouse binary: serve, tokens and nodes through the admin socket.

load helpers

LIGHTHOUSE="$FLATNET_TARGET/lighthouse"

setup() {
    fn_setup
    ip netns add "$(ns lh)"
    in_ns lh ip link set lo up
    export LIGHTHOUSE_ADMIN_SOCKET="$FN_TMP/lh-admin.sock"
    ip netns exec "$(ns lh)" "$LIGHTHOUSE" serve --listen 127.0.0.1:7871 \
        --state-dir "$FN_TMP/lh" >"$FN_TMP/lh.log" 2>&1 &
    echo $! > "$FN_TMP/lh.pid"; disown
    for i in $(seq 100); do [ -S "$LIGHTHOUSE_ADMIN_SOCKET" ] && break; sleep 0.05; done
}
teardown() { kill "$(cat "$FN_TMP/lh.pid")" 2>/dev/null || true; fn_teardown; }

@test "token create prints a token that pins the certificate; list and revoke" {
    run "$LIGHTHOUSE" token create --ttl 1h
    [ "$status" -eq 0 ]
    token="${lines[0]}"
    [[ "$token" == flatnet1_* ]]
    body="$(echo "${token#flatnet1_}" | tr '_-' '/+' | base64 -d 2>/dev/null || true)"
    [[ "$body" == *'"lh":"127.0.0.1:7871"'* ]]
    fp="$(echo "$body" | jq -r .fp)"
    [ "$fp" = "$(sha256sum "$FN_TMP/lh/lighthouse.crt.der" | cut -d' ' -f1)" ]
    run "$LIGHTHOUSE" token list
    [ "$(echo "$output" | jq length)" = "1" ]
    [ "$(echo "$output" | jq -r '.[0].expires - .[0].created')" = "3600" ]
    id="$(echo "$output" | jq -r '.[0].id')"
    # The database holds a hash, not the token's secret.
    ! grep -q "$(echo "$body" | jq -r .sk)" "$FN_TMP/lh/lighthouse.redb" || false
    run "$LIGHTHOUSE" token revoke "${id:0:12}"
    [ "$status" -eq 0 ]
    [ "$("$LIGHTHOUSE" token list | jq -r '.[0].revoked')" = "true" ]
}

@test "bad admin input gets clear errors and the server keeps serving" {
    run "$LIGHTHOUSE" token revoke abc
    [ "$status" -ne 0 ]
    [[ "$output" == *"at least 8"* ]]
    run "$LIGHTHOUSE" nodes remove nobody
    [ "$status" -ne 0 ]
    [[ "$output" == *"no node named"* ]]
    run "$LIGHTHOUSE" token create --ttl forever
    [ "$status" -ne 0 ]
    echo 'garbage' | socat - "UNIX-CONNECT:$LIGHTHOUSE_ADMIN_SOCKET" | grep -q '"error"'
    run "$LIGHTHOUSE" nodes list --json
    [ "$status" -eq 0 ]
    [ "$output" = "[]" ]
}

@test "serve refuses an ambiguous public address and bad prefixes" {
    run "$LIGHTHOUSE" serve --listen 0.0.0.0:0 --state-dir "$FN_TMP/x" --admin-socket "$FN_TMP/x.sock"
    [ "$status" -ne 0 ]
    [[ "$output" == *"--public-addr"* ]]
    run "$LIGHTHOUSE" serve --listen 127.0.0.1:0 --host-prefix 12 --state-dir "$FN_TMP/x" --admin-socket "$FN_TMP/x.sock"
    [ "$status" -ne 0 ]
}
