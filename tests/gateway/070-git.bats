#!/usr/bin/env bats
# A real git clone and push over smart HTTP through the gateway (what Forgejo users do).

load helpers

setup() {
    fgw_setup
    fgw_backend_netns git 10.87.4.2
    mkdir -p "$FGW_TMP/repos"
    git init -q --bare -b main "$FGW_TMP/repos/project.git"
    git -C "$FGW_TMP/repos/project.git" config http.receivepack true
    # seed it with one commit
    git init -q -b main "$FGW_TMP/seed"
    echo "hello" >"$FGW_TMP/seed/README"
    git -C "$FGW_TMP/seed" add README
    git -C "$FGW_TMP/seed" -c user.name=t -c user.email=t@t commit -qm seed
    git -C "$FGW_TMP/seed" push -q "$FGW_TMP/repos/project.git" main
    fgw_spawn git gitserver "$FGW_PYTHON" "$FGW_PY/gitserver.py" --bind 10.87.4.2 --port 3000 --root "$FGW_TMP/repos" >/dev/null
    fgw_wait_port git 10.87.4.2 3000
    fgw_catalog host4 "forgejo 10.87.4.2 3000"
    fgw_catalog_server
    fgw_gateway_start <<<"catalog_url = http://10.87.0.2:7070/v1/catalog"
    fgw_eventually 5 bash -c "$(declare -f fgw_curl); FGW_NS=$FGW_NS FGW_GW_IP=$FGW_GW_IP; fgw_curl -f -o /dev/null 'http://forgejo.flatnet.test/project.git/info/refs?service=git-upload-pack'"
}

teardown() {
    fgw_teardown
}

git_lan() {
    ip netns exec "$FGW_NS-lan" env GIT_TERMINAL_PROMPT=0 HOME="$FGW_TMP" \
        git -c "http.curloptResolve=forgejo.flatnet.test:80:$FGW_GW_IP" "$@"
}

@test "git clone and git push over smart HTTP through the gateway" {
    run git_lan clone -q http://forgejo.flatnet.test/project.git "$FGW_TMP/work"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(cat "$FGW_TMP/work/README")" = hello ]
    # a push big enough that git streams it chunked (over http.postBuffer)
    head -c 8000000 /dev/urandom >"$FGW_TMP/work/blob.bin"
    git -C "$FGW_TMP/work" add blob.bin
    git -C "$FGW_TMP/work" -c user.name=t -c user.email=t@t commit -qm "add blob"
    run git_lan -C "$FGW_TMP/work" push origin main
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(git -C "$FGW_TMP/repos/project.git" rev-parse main)" = "$(git -C "$FGW_TMP/work" rev-parse main)" ]
    git -C "$FGW_TMP/repos/project.git" fsck --no-progress
    # and a fresh clone sees it
    run git_lan clone -q http://forgejo.flatnet.test/project.git "$FGW_TMP/again"
    [ "$status" -eq 0 ]
    cmp "$FGW_TMP/work/blob.bin" "$FGW_TMP/again/blob.bin"
    # the requests really went through the gateway
    grep -q 'POST /project.git/git-receive-pack' "$FGW_TMP/gw/logs/access.log"
}
