#!/usr/bin/env python3
"""CNI ADD and DEL cost of the flatnet plugin vs the reference bridge +
host-local plugins (Debian's containernetworking-plugins), side by side in one
run on this machine, in fresh network namespaces. Prints a markdown table.

Rounds are interleaved: in every round each plugin wires and unwires the same
number of containers, one container at a time, alternating between the two
plugins (and which goes first), so both see the same machine state. Each
figure is the median over all calls with the spread of the per-round medians
(min-max); p95 is over all calls.

Not a test: it asserts nothing about speed. Run as root:
    tests/bench/cni-bench.py [--iterations N] [--rounds R] [--target DIR] [--before PLUGIN]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HOSTNS = "fnbench-host"
# GNU time (Debian's `time` package) reports each plugin call's peak RSS.
TIME = "/usr/bin/time"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def netns_add(name):
    sh("ip", "netns", "add", name)


def netns_del(name):
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


class Plugin:
    def __init__(self, label, binary, conf, cni_path):
        self.label, self.binary, self.conf, self.cni_path = label, binary, conf, cni_path
        self.adds, self.dels, self.round_adds, self.round_dels = [], [], [], []
        self.rss_kib = 0
        self.rss_file = f"{tempfile.gettempdir()}/fnbench-rss-{label}"

    def call(self, cmd, cid, netns):
        """One plugin call under `ip netns exec` and GNU time, which forks
        the plugin from its own small process, so its peak RSS is the
        plugin's own (a process exec'd straight from Python would report
        Python's). Returns seconds."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": cmd,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": self.cni_path,
        }
        conf = json.dumps(self.conf).encode()
        t0 = time.perf_counter()
        p = subprocess.run(
            ["ip", "netns", "exec", HOSTNS, TIME, "-f", "%M", "-o", self.rss_file, self.binary],
            input=conf, capture_output=True, env=env,
        )
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{self.binary} {cmd} failed: {p.stdout.decode()} {p.stderr.decode()}")
        with open(self.rss_file) as f:
            self.rss_kib = max(self.rss_kib, int(f.read().split()[-1]))
        return dt

    def container(self, i, record):
        ns = f"fnbench-c{i}"
        netns_add(ns)
        try:
            cid = f"bench-{self.label}-{i}"
            a = self.call("ADD", cid, ns)
            d = self.call("DEL", cid, ns)
        finally:
            netns_del(ns)
        if record:
            self.adds.append(a)
            self.dels.append(d)
        return a, d


def ms(x):
    return x * 1000


def p95(xs):
    return sorted(xs)[max(0, int(len(xs) * 0.95 + 0.5) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=50, help="containers per plugin in all")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", help="another build's flatnet plugin, as a third column")
    ap.add_argument("--target", default=os.path.join(os.path.dirname(__file__), "../../target/release"))
    args = ap.parse_args()
    if not os.access(TIME, os.X_OK):
        sys.exit(f"{TIME} is missing: apt-get install -y time")
    target = os.path.abspath(args.target)
    per_round = max(1, args.iterations // args.rounds)
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
        fl = Plugin("flatnet", f"{target}/flatnet",
                    {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet", "socket": f"{tmp}/d.sock"},
                    target)
        br = Plugin("bridge", "/usr/lib/cni/bridge", {
            "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge", "bridge": "fnbench0",
            "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.1.0/24"}]],
                     "dataDir": f"{tmp}/host-local"},
        }, "/usr/lib/cni")
        # Warm-up: page cache, the bridge device, flatnetd's first table.
        for i in range(3):
            fl.container(i, False)
            br.container(i, False)
        plugins = [fl, br]
        if args.before:
            # The same flatnetd answers both flatnet builds (the API did not change).
            old = Plugin("before", os.path.abspath(args.before), fl.conf, target)
            old.container(99, False)
            plugins.append(old)
        n = 0
        for r in range(args.rounds):
            ra = {p: [] for p in plugins}
            rd = {p: [] for p in plugins}
            for j in range(per_round):
                k = (r + j) % len(plugins)
                for p in plugins[k:] + plugins[:k]:
                    a, d = p.container(n, True)
                    ra[p].append(a)
                    rd[p].append(d)
                n += 1
            for p in plugins:
                p.round_adds.append(statistics.median(ra[p]))
                p.round_dels.append(statistics.median(rd[p]))
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

    def spread(xs, rounds):
        return f"{ms(statistics.median(xs)):.2f} ({ms(min(rounds)):.2f}-{ms(max(rounds)):.2f})"

    def figures(p):
        return {
            "ADD median (ms)": (ms(statistics.median(p.adds)), spread(p.adds, p.round_adds)),
            "ADD p95 (ms)": (ms(p95(p.adds)), f"{ms(p95(p.adds)):.2f}"),
            "DEL median (ms)": (ms(statistics.median(p.dels)), spread(p.dels, p.round_dels)),
            "ADD+DEL per container (ms)": (
                ms(statistics.median(p.adds) + statistics.median(p.dels)),
                f"{ms(statistics.median(p.adds) + statistics.median(p.dels)):.2f}"),
            "plugin peak RSS (MiB)": (p.rss_kib / 1024, f"{p.rss_kib / 1024:.2f}"),
        }

    cols = [figures(p) for p in plugins]
    print(f"CNI ADD and DEL: {per_round * args.rounds} containers per plugin in {args.rounds} "
          f"interleaved rounds, one container at a time; median (min-max of the round medians)")
    print()
    head = "| metric | flatnet | bridge + host-local | flatnet / bridge |"
    rule = "| --- | ---: | ---: | ---: |"
    if args.before:
        head += f" flatnet before ({os.path.basename(os.path.dirname(os.path.abspath(args.before))) or args.before}) | before / bridge |"
        rule += " ---: | ---: |"
    print(head)
    print(rule)
    for name in cols[0]:
        (a, ta), (b, tb) = cols[0][name], cols[1][name]
        line = f"| {name} | {ta} | {tb} | {a / b:.2f}x |"
        if args.before:
            c, tc = cols[2][name]
            line += f" {tc} | {c / b:.2f}x |"
        print(line)
    print()
    print(f"flatnetd resident memory after the run: {daemon_rss / 1024:.1f} MiB "
          "(bridge + host-local have no daemon; host-local keeps leases in files)")
    print("Each plugin call includes `ip netns exec` process start-up, identical for both.")


if __name__ == "__main__":
    main()
