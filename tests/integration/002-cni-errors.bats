#!/usr/bin/env bats
# Bad input gets the spec's error JSON, a non-zero exit, and changes nothing.

load helpers

setup() {
    fn_setup
    host_create h1 10.87.1.0/24
    container_add h1 keep          # state that must survive every bad call
    ip netns add "$(ns h1-c)"
    C="/run/netns/$(ns h1-c)"
}
teardown() { fn_teardown; }

# snapshot HOST: leases and host links, to compare before/after.
snapshot() {
    { ctl h1 status --json | jq -c '.leases'; in_ns h1 ip -o link show | awk -F': ' '{print $2}' | sort; \
      in_ns h1-c ip -o link show | awk -F': ' '{print $2}' | sort; } 2>&1
}

# expect_error CODE: $output is error JSON with that code, and $status != 0.
expect_error() {
    [ "$status" -ne 0 ] || { echo "exit status was 0"; return 1; }
    echo "$output" | jq -e . >/dev/null || { echo "not JSON: $output"; return 1; }
    [ "$(echo "$output" | jq -r .code)" = "$1" ] || { echo "code: $output"; return 1; }
    [ -n "$(echo "$output" | jq -r .msg)" ]
    echo "$output" | jq -e 'has("cniVersion")' >/dev/null
}

@test "malformed stdin JSON: code 6" {
    before="$(snapshot)"
    run cni h1 ADD cid-c "$C" eth0 <<< '{"cniVersion": "1.0.0", "name": '
    expect_error 6
    [ "$(snapshot)" = "$before" ]
}

@test "invalid configuration: code 7" {
    before="$(snapshot)"
    run cni h1 ADD cid-c "$C" eth0 <<< '{"cniVersion":"1.0.0","name":"bad name!","type":"flatnet"}'
    expect_error 7
    run cni h1 ADD cid-c "$C" eth0 <<< '{"cniVersion":"1.0.0","name":"n","type":"flatnet","routes":"everything"}'
    expect_error 7
    run cni h1 ADD cid-c "$C" eth0 <<< '{"cniVersion":"1.0.0","type":"flatnet"}'
    expect_error 7
    [ "$(snapshot)" = "$before" ]
}

@test "missing environment variables: code 4 naming them" {
    before="$(snapshot)"
    run in_ns h1 env -i CNI_COMMAND=ADD CNI_IFNAME=eth0 "$FLATNET" <<< "$(netconf h1)"
    expect_error 4
    [[ "$output" == *CNI_CONTAINERID* && "$output" == *CNI_NETNS* ]]
    run in_ns h1 env -i "$FLATNET" <<< "$(netconf h1)"
    expect_error 4
    [[ "$output" == *CNI_COMMAND* ]]
    [ "$(snapshot)" = "$before" ]
}

@test "unknown command: code 4" {
    run cni h1 FROBNICATE cid-c "$C" eth0 <<< "$(netconf h1)"
    expect_error 4
    [[ "$output" == *FROBNICATE* ]]
}

@test "unsupported cniVersion: code 1, echoing a version we speak" {
    before="$(snapshot)"
    run cni h1 ADD cid-c "$C" eth0 <<< "$(netconf h1 0.2.0)"
    expect_error 1
    [[ "$(echo "$output" | jq -r .details)" == *"0.2.0"* ]]
    run cni h1 ADD cid-c "$C" eth0 <<< "$(netconf h1 2.0.0)"
    expect_error 1
    [ "$(snapshot)" = "$before" ]
}

@test "hostile identifiers: code 4" {
    before="$(snapshot)"
    run cni h1 ADD "$(printf 'x%.0s' {1..400})" "$C" eth0 <<< "$(netconf h1)"
    expect_error 4
    run cni h1 ADD "../../etc" "$C" eth0 <<< "$(netconf h1)"
    expect_error 4
    run cni h1 ADD cid-c "$C" "../eth0" <<< "$(netconf h1)"
    expect_error 4
    run cni h1 ADD cid-c "$C" "a-very-long-interface" <<< "$(netconf h1)"
    expect_error 4
    [ "$(snapshot)" = "$before" ]
}

@test "oversized stdin: code 5" {
    run bash -c "head -c 2000000 /dev/zero | tr '\\0' ' ' | ip netns exec $(ns h1) env CNI_COMMAND=ADD CNI_CONTAINERID=x CNI_NETNS=$C CNI_IFNAME=eth0 $FLATNET"
    expect_error 5
}

@test "missing network namespace: code 3, nothing allocated" {
    before="$(snapshot)"
    run cni h1 ADD cid-c /run/netns/does-not-exist eth0 <<< "$(netconf h1)"
    expect_error 3
    [ "$(snapshot)" = "$before" ]
}

@test "flatnetd down: ADD says try again later (11) and leaves nothing behind" {
    host_kill h1 KILL
    before="$(snapshot)"
    run cni h1 ADD cid-c "$C" eth0 <<< "$(netconf h1)"
    expect_error 11
    [[ "$(echo "$output" | jq -r .details)" == *"nothing listens on"*"systemctl start flatnetd"* ]]
    [ "$(snapshot)" = "$before" ]
    host_start h1
    [ "$(lease_count h1)" = "1" ]
    # And now it works.
    run cni h1 ADD cid-c "$C" eth0 <<< "$(netconf h1)"
    [ "$status" -eq 0 ]
}

@test "flatnetd down: DEL removes interfaces, keeps the lease, and finishes later" {
    container_add h1 d
    host_if="$(jq -r '.interfaces[0].name' "$FN_TMP/h1/d.json")"
    host_kill h1
    run container_del h1 d
    expect_error 11
    ! in_ns h1 ip link show "$host_if" 2>/dev/null || false
    host_start h1
    [ "$(lease_count h1)" = "2" ]
    run container_del h1 d
    [ "$status" -eq 0 ]
    [ "$(lease_count h1)" = "1" ]
}

@test "a garbage line on flatnetd's socket gets an error and the daemon keeps serving" {
    run python3 - "$FN_TMP/h1/flatnetd.sock" <<'PY'
import socket, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
for line in [b"garbage\n", b'{"op":"format_disk"}\n', b'{"op":"allocate","network":"n"}\n']:
    s.sendall(line)
    r = json.loads(s.makefile("rb").readline())
    assert r["error"]["kind"] == "invalid_request", r
print("ok")
PY
    [ "$status" -eq 0 ]
    [ "$output" = "ok" ]
    [ "$(lease_count h1)" = "1" ]
}
