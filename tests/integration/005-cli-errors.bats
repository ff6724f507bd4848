#!/usr/bin/env bats
# The first hour: every error of every binary is one clear line (JSON under
# --json), says each cause once, and a failed command leaves nothing behind.
# The table of cases and its golden output: tests/integration/cli-errors/.

load helpers

setup() {
    fn_setup
    FULL="$FN_TMP/full"
    mkdir -p "$FULL"
    mount -t tmpfs -o size=256k,mode=0755 flatnet-full "$FULL"
    dd if=/dev/zero of="$FULL/filler" bs=4k 2>/dev/null || true
}
teardown() {
    umount "$FULL" 2>/dev/null || true
    fn_teardown
}

@test "every error path in the table: golden output, exit code, nothing left behind" {
    run env FLATNET_TARGET="$FLATNET_TARGET" FULL_FS="$FULL" python3 "$BATS_TEST_DIRNAME/py/cli_errors.py"
    echo "$output"
    [ "$status" -eq 0 ]
    # Every case ran: the full-disk ones too.
    [[ "$output" != *"# skip"* ]]
    [[ "$output" == *" 0 problems"* ]]
}

@test "errors from a running flatnetd: one line each, JSON under --json" {
    host_create h1 10.87.1.0/24
    run ctl h1 ping no-such-name -c 1
    echo "$output"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == "flatnetctl: "* ]]
    run ctl h1 ping no-such-name -c 1 --json
    [ "$status" -eq 1 ]
    echo "$output" | jq -e '.program == "flatnetctl" and .exit_code == 1 and (.error | length > 0)'
}

@test "a second flatnetd on the same state is refused and harms nothing" {
    host_create h1 10.87.1.0/24
    container_add h1 a
    before="$(ctl h1 status --json | jq -c '.leases')"
    run in_ns h1 "$FLATNETD" --config "$FN_TMP/h1/flatnetd.toml"
    echo "$output"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"already running"* ]]
    # The first one still serves, with its lease.
    [ "$(ctl h1 status --json | jq -c '.leases')" = "$before" ]
    [ -S "$FN_TMP/h1/flatnetd.sock" ]
}
