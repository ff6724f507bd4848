#!/usr/bin/env python3
"""CNI ADD+DEL cost of the flatnet plugin vs the reference bridge + host-local
plugins (Debian's containernetworking-plugins), run side by side on this
machine in fresh network namespaces. Prints a markdown table.

Not a test: it asserts nothing about speed. Run as root:
    tests/bench/cni-bench.py [--iterations N] [--target DIR]
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HOSTNS = "fnbench-host"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def netns_add(name):
    sh("ip", "netns", "add", name)


def netns_del(name):
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


def cni(binary, cmd, conf, cid, netns, cni_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": cmd,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": f"/run/netns/{netns}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": cni_path,
    }
    t0 = time.perf_counter()
    p = subprocess.run(
        ["ip", "netns", "exec", HOSTNS, binary],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
    )
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{binary} {cmd} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return dt


def children_maxrss_kib():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def run_plugin(label, binary, conf, cni_path, n):
    adds, dels = [], []
    for i in range(n):
        ns = f"fnbench-c{i}"
        netns_add(ns)
        try:
            adds.append(cni(binary, "ADD", conf, f"bench-{label}-{i}", ns, cni_path))
            dels.append(cni(binary, "DEL", conf, f"bench-{label}-{i}", ns, cni_path))
        finally:
            netns_del(ns)
    return adds, dels


def measure_in_child(label, binary, conf, cni_path, n):
    """Fork so that ru_maxrss of RUSAGE_CHILDREN covers one plugin only."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        adds, dels = run_plugin(label, binary, conf, cni_path, n)
        os.write(w, json.dumps({"adds": adds, "dels": dels, "rss": children_maxrss_kib()}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--target", default=os.path.join(os.path.dirname(__file__), "../../target/release"))
    args = ap.parse_args()
    target = os.path.abspath(args.target)
    tmp = tempfile.mkdtemp(prefix="fnbench.")
    netns_del(HOSTNS)
    netns_add(HOSTNS)
    sh("ip", "netns", "exec", HOSTNS, "ip", "link", "set", "lo", "up")
    with open(f"{tmp}/d.toml", "w") as f:
        f.write(f'node_name = "bench"\nsubnet = "10.87.1.0/24"\nstate_dir = "{tmp}/state"\nsocket = "{tmp}/d.sock"\n')
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", HOSTNS, f"{target}/flatnetd", "--config", f"{tmp}/d.toml"],
        stderr=open(f"{tmp}/d.log", "w"),
    )
    try:
        for _ in range(100):
            if os.path.exists(f"{tmp}/d.sock"):
                break
            time.sleep(0.05)
        flatnet_conf = {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "socket": f"{tmp}/d.sock"}
        bridge_conf = {
            "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": "fnbench0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.1.0/24"}]],
                     "dataDir": f"{tmp}/host-local"},
        }
        n = args.iterations
        # Warm-up, then interleave so both see the same machine state.
        measure_in_child("flatnet", f"{target}/flatnet", flatnet_conf, target, 3)
        measure_in_child("bridge", "/usr/lib/cni/bridge", bridge_conf, "/usr/lib/cni", 3)
        fl = measure_in_child("flatnet", f"{target}/flatnet", flatnet_conf, target, n)
        br = measure_in_child("bridge", "/usr/lib/cni/bridge", bridge_conf, "/usr/lib/cni", n)
        daemon_rss = 0
        with open(f"/proc/{daemon.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    daemon_rss = int(line.split()[1])
    finally:
        daemon.terminate()
        daemon.wait()
        netns_del(HOSTNS)
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(xs):
        return statistics.median(xs) * 1000

    def p95(xs):
        return sorted(xs)[int(len(xs) * 0.95) - 1] * 1000

    rows = [
        ("ADD median (ms)", ms(fl["adds"]), ms(br["adds"])),
        ("ADD p95 (ms)", p95(fl["adds"]), p95(br["adds"])),
        ("DEL median (ms)", ms(fl["dels"]), ms(br["dels"])),
        ("ADD+DEL per container (ms)", ms(fl["adds"]) + ms(fl["dels"]), ms(br["adds"]) + ms(br["dels"])),
        ("plugin peak RSS (MiB)", fl["rss"] / 1024, br["rss"] / 1024),
    ]
    print(f"CNI ADD+DEL, {n} containers each, sequential, same machine, same run")
    print()
    print("| metric | flatnet | bridge + host-local | flatnet / bridge |")
    print("| --- | ---: | ---: | ---: |")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    print()
    print(f"flatnetd resident memory after the run: {daemon_rss / 1024:.1f} MiB "
          "(bridge + host-local have no daemon; host-local keeps leases in files)")
    print("Each plugin call includes `ip netns exec` process start-up, identical for both.")


if __name__ == "__main__":
    main()
