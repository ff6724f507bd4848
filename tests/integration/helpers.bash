# Shared helpers for Flatnet's integration suites (bats).
#
# Every test builds its own topology from fresh network namespaces named
# "$FN_PREFIX-…" and removes them in teardown. A "host" is a namespace running
# its own flatnetd; a "container" is a namespace wired by the real `flatnet`
# CNI binary, run inside its host's namespace exactly as a runtime would.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FLATNET_TARGET="${FLATNET_TARGET:-$REPO_ROOT/target/release}"
FLATNET="$FLATNET_TARGET/flatnet"
FLATNETD="$FLATNET_TARGET/flatnetd"
FLATNETCTL="$FLATNET_TARGET/flatnetctl"
# A misbehaving member for the security suite (tests/hostile).
HOSTILE="$FLATNET_TARGET/flatnet-hostile"

# Short, unique per test: netns and file names stay readable.
FN_PREFIX="fn${BATS_SUITE_TEST_NUMBER:-0}x$$"

fn_setup() {
    for b in "$FLATNET" "$FLATNETD" "$FLATNETCTL"; do
        [ -x "$b" ] || { echo "missing $b: run 'cargo build --release' first" >&2; return 1; }
    done
    # FN_TMPBASE: suites whose programs run in another mount namespace (the
    # Podman 5 root) put their files where that namespace sees them too.
    mkdir -p "${FN_TMPBASE:-${BATS_TMPDIR:-/tmp}}"
    FN_TMP="$(mktemp -d "${FN_TMPBASE:-${BATS_TMPDIR:-/tmp}}/flatnet-it.XXXXXX")"
    export FN_TMP
}

fn_teardown() {
    local pidfile ns
    for pidfile in "$FN_TMP"/*/flatnetd.pid; do
        [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$FN_PREFIX-" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    if [ -n "${FN_TMP:-}" ] && [ -z "${FN_KEEP:-}" ]; then rm -rf "$FN_TMP"; fi
}

# busybox_rootfs DIR: the offline test image's tree: busybox-static with
# applet links, and a page for httpd at /www.
busybox_rootfs() {
    local root="$1" a
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www" "$root/proc" "$root/sys" "$root/dev"
    cp "$(command -v busybox)" "$root/bin/busybox"
    for a in $("$root/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
    echo "flatnet test page" > "$root/www/index.html"
}

# ns NAME: the netns name of a host or container.
ns() { echo "$FN_PREFIX-$1"; }

# in_ns NAME CMD...: run a command inside a namespace.
in_ns() { local n="$1"; shift; ip netns exec "$(ns "$n")" "$@"; }

# bridge_ns NAME ADDR/PREFIX: a namespace holding bridge br0 with ADDR,
# which other namespaces join through veths (a LAN, an "internet").
bridge_ns() {
    ip netns add "$(ns "$1")"
    in_ns "$1" ip link set lo up
    in_ns "$1" ip link add br0 type bridge
    in_ns "$1" ip addr add "$2" dev br0
    in_ns "$1" ip link set br0 up
}

# host_create NAME SUBNET [extra toml lines]: a host netns with its own flatnetd.
host_create() {
    local name="$1" subnet="$2" extra="${3:-}"
    ip netns add "$(ns "$name")"
    in_ns "$name" ip link set lo up
    mkdir -p "$FN_TMP/$name"
    cat > "$FN_TMP/$name/flatnetd.toml" <<TOML
node_name = "$name"
cidr = "10.87.0.0/16"
subnet = "$subnet"
state_dir = "$FN_TMP/$name/state"
socket = "$FN_TMP/$name/flatnetd.sock"
$extra
TOML
    host_start "$name"
}

# host_start NAME: start (or restart) the host's flatnetd and wait for it.
host_start() {
    local name="$1" i
    # `ip netns exec` execs flatnetd, so $! is flatnetd's own pid.
    ip netns exec "$(ns "$name")" "$FLATNETD" --config "$FN_TMP/$name/flatnetd.toml" \
        >>"$FN_TMP/$name/flatnetd.log" 2>&1 &
    echo $! > "$FN_TMP/$name/flatnetd.pid"
    disown $! 2>/dev/null || true   # no job-control noise, and `wait` skips it
    # HOST_START_SECS: longer for a first join that must fall back to TCP.
    for i in $(seq $(( ${HOST_START_SECS:-5} * 20 ))); do
        "$FLATNETCTL" --socket "$FN_TMP/$name/flatnetd.sock" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "flatnetd on $name did not come up:" >&2
    cat "$FN_TMP/$name/flatnetd.log" >&2
    return 1
}

# netns_power_off NETNS: a power cut for a whole namespace (its full name):
# every process in it is killed and reaped, then the namespace goes. The
# kernel frees a namespace, and the veth ends it held, only once its last
# process is gone, so this waits for that instead of racing it.
netns_power_off() {
    local n="$1" i
    for i in $(seq 100); do
        [ -n "$(ip netns pids "$n" 2>/dev/null)" ] || break
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        sleep 0.05
    done
    if [ -n "$(ip netns pids "$n" 2>/dev/null)" ]; then
        echo "processes in $n survived SIGKILL for 5 s: $(ip netns pids "$n" | tr '\n' ' ')" >&2
        return 1
    fi
    ip netns del "$n"
}

# host_kill NAME [SIGNAL]: stop the host's flatnetd (default SIGTERM).
host_kill() {
    local name="$1" sig="${2:-TERM}" pid
    pid="$(cat "$FN_TMP/$name/flatnetd.pid")"
    kill -s "$sig" "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
}

ctl() { local name="$1"; shift; "$FLATNETCTL" --socket "$FN_TMP/$name/flatnetd.sock" "$@"; }

# netconf HOST [cniVersion] [extra json members]: the network config on stdin.
netconf() {
    local host="$1" ver="${2:-1.0.0}" extra="${3:-}"
    printf '{"cniVersion":"%s","name":"flatnet","type":"flatnet","socket":"%s"%s}' \
        "$ver" "$FN_TMP/$host/flatnetd.sock" "${extra:+,$extra}"
}

# cni HOST COMMAND CONTAINERID NETNS IFNAME [CNI_ARGS]: run the plugin inside
# HOST's namespace with stdin passed through. Output in $FN_TMP/last.{out,rc}.
cni() {
    local host="$1" cmd="$2" cid="$3" netns="$4" ifname="$5" args="${6:-}"
    in_ns "$host" env -i PATH="$PATH" CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" \
        CNI_NETNS="$netns" CNI_IFNAME="$ifname" CNI_PATH="$FLATNET_TARGET" \
        CNI_ARGS="$args" "$FLATNET"
}

# container_add HOST NAME [cniVersion]: a container netns wired by CNI ADD;
# the result JSON is kept in $FN_TMP/HOST/NAME.json.
container_add() {
    local host="$1" name="$2" ver="${3:-1.0.0}"
    ip netns add "$(ns "$host-$name")"
    netconf "$host" "$ver" | cni "$host" ADD "cid-$name" "/run/netns/$(ns "$host-$name")" eth0 \
        "IgnoreUnknown=1;K8S_POD_NAME=$name" > "$FN_TMP/$host/$name.json"
}

container_del() {
    local host="$1" name="$2"
    netconf "$host" | cni "$host" DEL "cid-$name" "/run/netns/$(ns "$host-$name")" eth0
}

# container_ip HOST NAME: the address from the ADD result, without prefix.
container_ip() {
    jq -r '.ips[0].address' "$FN_TMP/$1/$2.json" | cut -d/ -f1
}

# lease_count HOST: number of leases flatnetd holds.
lease_count() { ctl "$1" status --json | jq '.leases | length'; }

# serve_tcp NS PORT: a one-line TCP responder (python3, stdlib) in a netns.
serve_tcp() {
    local n="$1" port="$2"
    ip netns exec "$(ns "$n")" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, a = s.accept()
    c.sendall(("hello from %s to %s\n" % (sys.argv[2], a[0])).encode()); c.close()
' "$port" "$n" >/dev/null 2>&1 &
    wait_listen "$n" "$port"
}

# wait_listen NS PORT: until something listens on TCP PORT in NS (2.5 s).
wait_listen() {
    local i
    for i in $(seq 50); do
        in_ns "$1" ss -ltn 2>/dev/null | grep -q ":$2 " && return 0
        sleep 0.05
    done
    return 1
}

# tcp_get NS IP PORT: read the responder's line.
tcp_get() {
    in_ns "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.makefile().readline().strip())
' "$2" "$3"
}
