#!/usr/bin/env python3
"""Flatnet soak: the whole system under continuous traffic, churn and
faults injected on a seeded random schedule, for minutes or a week.

    sudo tests/soak/run.sh --duration 10m --seed 7
    sudo tests/soak/run.sh --duration 7d --seed 1 --report /var/tmp/soak.json

The lab (tests/soak/lab.bash): a Lighthouse, three hosts behind NAT routers
(two cone, one symmetric, so one pair is relayed), CNI containers with
servers, Podman 5 containers created and removed on h1, and the gateway
with an office machine in front of it.

Traffic, every PROBE_EVERY seconds each, from threads that live in the
namespaces (setns), so a probe costs a socket, not a process:
  gw_http   office -> gateway -> web on h2 (through h1 and the tunnel)
  web_local h2 -> web on h2 (the same page, no tunnel or gateway)
  tcp_1to2  container h1-a -> h2-b:7000, tcp_2to1 the other way
  relay     h3-c -> h1-a:7000 (symmetric NAT: through the Lighthouse relay)
  dns       h1 asks its Flatnet DNS for "web" (the container on h2)
  stream    one long-lived TCP connection h1-a -> h2-b:7001, a line echoed
            every probe (reopened when it breaks)
  churn     `podman run` / `podman rm` on h1 every CHURN_EVERY seconds

Faults, one at a time, each kind in turn in a seeded order: flatnetd
kill -9 (restarted 1 s later, as systemd's Restart= would), Lighthouse
restart and 20 s outage, NAT mapping change (new port range, conntrack
flushed), LAN renumbering, loss and delay on the internet (tc netem), a full
disk on h1's state dir, and a host reboot.

At the end it prints a table and exits 1 when a goal is missed:
  - no failed request outside a fault window (the fault plus 5 s);
  - every probe back within 5 s of each fault's end;
  - no lease leaked or duplicated (checked against the containers that exist);
  - RSS and open fds of every daemon within the stated bound after warm-up;
  - no pair of cone hosts stuck on the relay.
"""

import argparse
import ctypes
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IT = os.path.join(REPO, "tests", "integration")
P5 = os.path.join(REPO, "scripts", "podman5.sh")
P5_SHARE = os.environ.get("P5_SHARE", "/var/tmp/flatnet-p5")

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 2.0
CHURN_EVERY = 4.0
RECOVERY = 5.0
WARMUP = 20.0
SAMPLE_EVERY = 5.0
# Resource bounds after warm-up: end within 1.25x + 8 MiB (RSS) and
# +16 (fds) of the warm-up value, peak within 2x + 16 MiB.
RSS_END = (1.25, 8 << 10)
RSS_PEAK = (2.0, 16 << 10)
FDS_END = 16

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    m = re.fullmatch(r"(\d+)([smhd]?)", s)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {s!r}: use e.g. 90s, 10m, 2h, 7d")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Lab:
    """Runs lab.bash functions with the integration helpers loaded."""

    def __init__(self, prefix, tmp):
        self.prefix = prefix
        self.tmp = tmp
        self.lock = threading.Lock()
        self.prelude = (
            f"source {IT}/helpers.bash; source {IT}/helpers-wg.bash; "
            f"source {IT}/helpers-nat.bash; source {IT}/helpers-gw.bash; "
            f"source {IT}/podman5.bash; source {HERE}/lab.bash; "
            f"FN_PREFIX={prefix}; FN_TMP={tmp}; export FN_TMP; set -e\n"
        )

    def sh(self, script, timeout=120, check=True):
        r = subprocess.run(
            ["bash", "-c", self.prelude + script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{script.strip()} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout.strip()

    def attempt(self, script, timeout=120):
        """Run a script; None when it worked, else what it said (the last
        line of its errors, or why it did not finish)."""
        try:
            r = subprocess.run(
                ["bash", "-c", self.prelude + script], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return f"no answer in {timeout} s"
        if r.returncode == 0:
            return None
        lines = [x for x in (r.stderr + r.stdout).splitlines() if x.strip()]
        return lines[-1].strip() if lines else f"exit {r.returncode}, no output"

    def ns(self, name):
        return f"/run/netns/{self.prefix}-{name}"

    def ctl_json(self, host):
        out = self.sh(f"ctl {host} status --json", timeout=10)
        return json.loads(out)

    def ip_of(self, host, name):
        return self.sh(f"container_ip {host} {name}", timeout=10)


def enter(path):
    """Move the calling thread into a network namespace."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


def tcp_line(ip, port):
    with socket.create_connection((ip, port), timeout=PROBE_TIMEOUT) as s:
        s.settimeout(PROBE_TIMEOUT)
        data = s.recv(200)
    return data.startswith(b"hello from")


def http_gateway(gw_ip, host):
    return http_get(gw_ip, host)


def http_get(ip, host):
    with socket.create_connection((ip, 80), timeout=PROBE_TIMEOUT) as s:
        s.settimeout(PROBE_TIMEOUT)
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            buf += b
    # The gateway answers HTTP/1.1; the page server itself, HTTP/1.0.
    if re.match(rb"HTTP/1\.[01] 200 ", buf) and b"soak web page" in buf:
        return True
    first = buf.split(b"\r\n", 1)[0].decode("latin-1") if buf else "closed without an answer"
    raise ValueError(f"answer: {first[:80]}")


def dns_a(server, name, want):
    qid = random.randint(0, 65535)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(PROBE_TIMEOUT)
        s.sendto(q, (server, 53))
        r, _ = s.recvfrom(512)
    rid, flags = struct.unpack(">HH", r[:4])
    return rid == qid and flags & 0xF == 0 and socket.inet_aton(want()) in r[12:]


class Stream:
    """One long-lived TCP connection: a numbered line every probe, echoed
    back. A broken connection is a failure, and the next probe opens a
    new one (so the outage is measured, not the connection's death alone)."""

    def __init__(self, target, port):
        self.target, self.port = target, port
        self.sock, self.file, self.n = None, None, 0

    def check(self):
        try:
            if self.sock is None:
                self.sock = socket.create_connection((self.target(), self.port), timeout=PROBE_TIMEOUT)
                self.sock.settimeout(PROBE_TIMEOUT)
                self.file = self.sock.makefile("rwb", buffering=0)
            self.n += 1
            line = f"stream {self.n}\n".encode()
            self.file.write(line)
            if self.file.readline() != line:
                raise OSError("echo differs")
            return True
        except OSError:
            self.close()
            return False

    def close(self):
        for x in (self.file, self.sock):
            try:
                if x is not None:
                    x.close()
            except OSError:
                pass
        self.sock, self.file = None, None


class Record:
    """Every probe result, as (time, ok), per probe name; why each failed
    one failed (the exception, or what came back) and when it ended. A
    probe or a `podman run` that began just before a fault and failed
    because of it belongs to that fault: what counts is the whole span
    from its start to its end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.results = {}
        self.why = {}
        self.ends = {}

    def add(self, name, ok, t=None, why=None):
        now = time.time()
        t = t or now
        with self.lock:
            self.results.setdefault(name, []).append((t, ok))
            if not ok:
                self.why[(name, t)] = why or "failed"
                self.ends[(name, t)] = now

    def end_of(self, name, t):
        return self.ends.get((name, t), t)


# Timestamps at the start of a log line: tracing's RFC 3339 (flatnetd,
# lighthouse) and nginx's error log (local time, which is UTC here).
LOG_STAMPS = [
    (re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)"), "%Y-%m-%dT%H:%M:%S"),
    (re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)"), "%Y/%m/%d %H:%M:%S"),
]


def log_lines_near(path, t, before=3.0, after=3.0, limit=12):
    """Lines of a log file stamped within [t - before, t + after]."""
    import calendar

    out = []
    try:
        f = open(path, errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            for rx, fmt in LOG_STAMPS:
                m = rx.match(line)
                if m:
                    at = calendar.timegm(time.strptime(m.group(1), fmt))
                    if t - before - 1 <= at <= t + after:
                        out.append(line.rstrip()[:240])
                    break
    return out[-limit:]


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.stop = threading.Event()
        self.rec = Record()
        self.faults = []  # (kind, start, end)
        self.samples = {}  # role -> [(t, rss_kib, fds)]
        self.churn = []
        self.churn_n = 0
        self.churn_errors = []  # (time, op, last line of the error)
        self.addr = {2: 1, 3: 1}  # current last octet of h2, h3 LAN addresses
        self.targets = {}
        self.tlock = threading.Lock()
        self.lab = Lab(f"soak{os.getpid()}", "")

    # --- set-up -------------------------------------------------------
    def build(self):
        base = os.path.join(P5_SHARE, "tmp")
        os.makedirs(base, exist_ok=True)
        tmp = subprocess.run(
            ["mktemp", "-d", f"{base}/flatnet-soak.XXXXXX"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.lab = Lab(f"soak{os.getpid() % 10000}", tmp)
        log(f"building the lab in {tmp} (prefix {self.lab.prefix})")
        self.lab.sh("soak_build", timeout=300)
        self.refresh_targets()
        self.gw1 = self.lab.ctl_json("h1")["network"]["gateway"]
        log(f"lab up: a={self.targets['a']} b={self.targets['b']} c={self.targets['c']}")

    def refresh_targets(self):
        t = {n: self.lab.ip_of(h, n) for h, n in (("h1", "a"), ("h2", "b"), ("h3", "c"))}
        with self.tlock:
            self.targets = t

    def target(self, name):
        with self.tlock:
            return self.targets[name]

    # --- traffic ------------------------------------------------------
    def prober(self, name, netns, check):
        def run():
            while not self.stop.is_set():
                t = time.time()
                why = None
                try:
                    # Every time: a rebooted host's namespaces are new ones.
                    enter(self.lab.ns(netns))
                    ok = bool(check())
                except (OSError, ValueError, KeyError) as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                self.rec.add(name, ok, t, why)
                self.stop.wait(max(0.0, PROBE_EVERY - (time.time() - t)))

        th = threading.Thread(target=run, name=name, daemon=True)
        th.start()
        return th

    def start_traffic(self):
        gw = "192.168.200.1"
        self.threads = [
            self.prober("gw_http", "office", lambda: http_gateway(gw, "web.flatnet.test")),
            # The same page from its own host, no tunnel and no gateway: a
            # gw_http failure that web_local shares is the web server's.
            self.prober("web_local", "h2", lambda: http_get(self.target("b"), "web")),
            self.prober("tcp_1to2", "h1-a", lambda: tcp_line(self.target("b"), 7000)),
            self.prober("tcp_2to1", "h2-b", lambda: tcp_line(self.target("a"), 7000)),
            self.prober("relay", "h3-c", lambda: tcp_line(self.target("a"), 7000)),
            self.prober("dns", "h1", lambda: dns_a(self.gw1, "web.flatnet", lambda: self.target("b"))),
            self.prober("stream", "h1-a", Stream(lambda: self.target("b"), 7001).check),
        ]
        th = threading.Thread(target=self.churner, name="churn", daemon=True)
        th.start()
        self.threads.append(th)

    def churner(self):
        while not self.stop.is_set():
            t = time.time()
            self.churn_n += 1
            name = f"{self.lab.prefix}-churn{self.churn_n}"
            err = self.lab.attempt(
                f'p5 h1 run -d --name {name} --network fnet "$P5_IMAGE" sleep 100000 >/dev/null', timeout=60
            )
            self.churn_result(t, "run", err)
            if err is None:
                self.churn.append(name)
            else:
                # A failed run may still leave the container behind.
                self.lab.attempt(f"p5 h1 rm -f -t 0 {name} >/dev/null 2>&1", timeout=60)
            while len(self.churn) > 3:
                old = self.churn.pop(0)
                t2 = time.time()
                err = self.lab.attempt(f"p5 h1 rm -f -t 0 {old} >/dev/null", timeout=60)
                self.churn_result(t2, "rm", err)
                if err is not None:
                    self.churn.insert(0, old)
                    break
            self.stop.wait(max(0.0, CHURN_EVERY - (time.time() - t)))

    def churn_result(self, t, op, err):
        self.rec.add("churn", err is None, t)
        if err is not None:
            log(f"churn: podman {op} failed: {err}")
            self.churn_errors.append((t, op, err))

    # --- faults -------------------------------------------------------
    def fault(self, kind):
        """Apply one fault; returns when it is lifted."""
        lab = self.lab
        if kind == "kill9":
            n = self.rng.choice([1, 2, 3])
            lab.sh(f"host_kill h{n} KILL")
            time.sleep(1)
            lab.sh(f"host_start h{n}")
            return f"h{n}"
        if kind == "lh_restart":
            lab.sh("lh_kill; lh_start")
            return ""
        if kind == "nat_remap":
            n = self.rng.choice([1, 2, 3])
            lo = self.rng.randrange(20000, 60000, 1000)
            mode = f"to :{lo}-{lo + 999}" + (" random" if n == 3 else "")
            lab.sh(f'nat_masquerade {n} "{mode}"; in_ns r{n} conntrack -F >/dev/null 2>&1 || true')
            return f"r{n} {lo}-{lo + 999}"
        if kind == "renumber":
            n = self.rng.choice([2, 3])
            new = 7 if self.addr[n] == 1 else 1
            lab.sh(f"soak_renumber {n} {new}")
            self.addr[n] = new
            return f"h{n} -> 192.168.{n}.{new}"
        if kind in self.HELD:
            on, off, secs, detail = self.HELD[kind]
            said = lab.sh(on)
            time.sleep(secs)
            lab.sh(off)
            return f"{said or detail}, {secs} s"
        if kind == "reboot":
            n = self.rng.choice([2, 3])
            lab.sh(f"soak_reboot {n}", timeout=120)
            self.addr[n] = 1
            self.refresh_targets()
            return f"h{n}"
        raise ValueError(kind)

    # Faults held for a while: (apply, lift, seconds, description).
    HELD = {
        "lh_outage": ("lh_kill", "lh_start", 20, "down"),
        "netem": ("soak_netem on", "soak_netem off", 20, "loss and delay"),
        "disk_full": ("soak_disk full", "soak_disk free", 15, "h1 state dir full"),
    }
    KINDS = ["kill9", "lh_restart", "lh_outage", "nat_remap", "renumber", "netem", "disk_full", "reboot"]

    def fault_loop(self, until):
        order = []
        while time.time() < until - 30 and not self.stop.is_set():
            if not order:
                order = [k for k in self.KINDS if k not in self.args.skip and (not self.args.only or k in self.args.only)]
                self.rng.shuffle(order)
            kind = order.pop()
            start = time.time()
            detail = self.fault(kind)
            end = time.time()
            self.faults.append((kind, start, end, detail))
            log(f"fault {kind} ({detail}) {end - start:.1f} s")
            gap = self.rng.uniform(self.args.gap * 0.5, self.args.gap * 1.5)
            self.stop.wait(max(RECOVERY + 1, min(gap, until - time.time())))

    # --- resources ----------------------------------------------------
    def pids(self):
        tmp = self.lab.tmp
        out = {}
        for role, f in [
            ("flatnetd h1", "h1/flatnetd.pid"),
            ("flatnetd h2", "h2/flatnetd.pid"),
            ("flatnetd h3", "h3/flatnetd.pid"),
            ("lighthouse", "lh.pid"),
            ("nginx master", "gw/logs/nginx.pid"),
        ]:
            try:
                out[role] = int(open(os.path.join(tmp, f)).read().strip())
            except (OSError, ValueError):
                pass
        if "nginx master" in out:
            try:
                kids = open(f"/proc/{out['nginx master']}/task/{out['nginx master']}/children").read().split()
                for i, k in enumerate(kids):
                    out[f"nginx worker {i}"] = int(k)
            except OSError:
                pass
        return out

    def sample(self):
        t = time.time()
        for role, pid in self.pids().items():
            try:
                rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, AttributeError):
                continue
            self.samples.setdefault(role, []).append((t, rss, fds))

    def sampler(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_EVERY)

    # --- checks -------------------------------------------------------
    def leases(self):
        """(leaked, duplicated, detail) against the containers that exist."""
        lab = self.lab
        existing = {"h1": {"cid-a"}, "h2": {"cid-b"}, "h3": {"cid-c"}}
        ps = lab.sh("p5 h1 ps -q --no-trunc", timeout=60, check=False).split()
        existing["h1"] |= set(ps)
        leaked, dup, seen, detail = 0, 0, {}, []
        for h in ("h1", "h2", "h3"):
            for lease in lab.ctl_json(h).get("leases", []):
                cid = lease["key"]["container_id"] if "key" in lease else lease.get("container_id")
                ip = lease["ip"]
                if cid not in existing[h]:
                    leaked += 1
                    detail.append(f"leaked {h} {ip} {cid[:12]}")
                if ip in seen:
                    dup += 1
                    detail.append(f"duplicated {ip} ({seen[ip]} and {h})")
                seen[ip] = h
        return leaked, dup, detail

    def relay_stuck(self):
        st = self.lab.ctl_json("h1")
        return [p["name"] for p in st.get("peers", []) if p["name"] == "h2" and p.get("path") != "direct"]

    # --- the run --------------------------------------------------------
    def run(self):
        self.build()
        self.start_traffic()
        samp = threading.Thread(target=self.sampler, daemon=True)
        samp.start()
        t0 = time.time()
        until = t0 + self.args.duration
        log(f"warm-up {WARMUP:.0f} s, then {self.args.duration - WARMUP:.0f} s of faults")
        time.sleep(WARMUP)
        self.warm = time.time()
        self.fault_loop(until)
        remaining = until - time.time()
        if remaining > 0:
            self.stop.wait(remaining)
        # Let GC reclaim what the last churn and faults left (grace 10 s).
        time.sleep(15)
        self.stop.set()
        for th in self.threads:
            th.join(timeout=70)
        self.sample()
        return self.report(t0)

    def report(self, t0):
        windows = [(k, s, e + RECOVERY, e, d) for k, s, e, d in self.faults]

        def in_window(name, t):
            # The failed attempt's span [t, end] overlaps a fault window.
            end = self.rec.end_of(name, t)
            return any(s <= end and t <= we for _, s, we, _, _ in windows)

        rows, misses, outside = [], [], []
        for name, res in sorted(self.rec.results.items()):
            res = [(t, ok) for t, ok in res if t >= self.warm]
            tried = len(res)
            fail_in = sum(1 for t, ok in res if not ok and in_window(name, t))
            fail_out = sum(1 for t, ok in res if not ok and not in_window(name, t))
            rows.append((name, tried, fail_in, fail_out))
            if fail_out:
                misses.append(f"{name}: {fail_out} failures outside fault windows")
                outside.extend((t, name) for t, ok in res if not ok and not in_window(name, t))
        # Every stretch of failures: (start, length, probe).
        streaks = []
        for name, res in self.rec.results.items():
            first = None
            for t, ok in res + [(time.time(), True)]:
                if not ok and first is None:
                    first = t
                elif ok and first is not None:
                    streaks.append((first, t - first, name))
                    first = None
        streaks.sort()
        # Per fault kind: the longest outage that began in one of its
        # windows, and how long after each fault's end every probe that
        # failed in the window took to answer again.
        outage = {}
        for kind, s, we, e, d in windows:
            o = outage.setdefault(kind, {"count": 0, "longest": 0.0, "worst_recovery": 0.0, "probe": ""})
            o["count"] += 1
            for start, length, name in streaks:
                if s <= start <= we and length > o["longest"]:
                    o["longest"], o["probe"] = length, name
            for name, res in self.rec.results.items():
                if not any(not ok for t, ok in res if s <= t <= we):
                    continue
                after = [t for t, ok in res if t >= e and ok]
                back = (after[0] - e) if after else float("inf")
                o["worst_recovery"] = max(o["worst_recovery"], back)
                if back > RECOVERY:
                    misses.append(f"{name} back {back:.1f} s after {kind} ({d}), goal {RECOVERY:.0f} s")
        leaked, dup, ldetail = self.leases()
        if leaked or dup:
            misses.append(f"leases: {leaked} leaked, {dup} duplicated: {'; '.join(ldetail)}")
        stuck = self.relay_stuck()
        if stuck:
            misses.append(f"h1 -> {', '.join(stuck)} on the relay while a direct path is possible")
        res_rows = []
        for role, ss in sorted(self.samples.items()):
            warm = [x for x in ss if x[0] >= self.warm] or ss
            r0, f0 = warm[0][1], warm[0][2]
            rp, fp = max(x[1] for x in warm), max(x[2] for x in warm)
            r1, f1 = warm[-1][1], warm[-1][2]
            res_rows.append((role, r0, rp, r1, f0, fp, f1))
            if r1 > r0 * RSS_END[0] + RSS_END[1] or rp > r0 * RSS_PEAK[0] + RSS_PEAK[1]:
                misses.append(f"{role}: RSS {r0} -> peak {rp} -> end {r1} KiB, beyond the bound")
            if f1 > f0 + FDS_END:
                misses.append(f"{role}: fds {f0} -> {f1}, beyond +{FDS_END}")

        dur = time.time() - t0
        out = []
        out.append(f"## Flatnet soak: {dur / 60:.1f} min, seed {self.args.seed}, {len(self.faults)} faults\n")
        out.append("| traffic | tried | failed in fault windows | failed outside |")
        out.append("| --- | --- | --- | --- |")
        for name, tried, fi, fo in rows:
            out.append(f"| {name} | {tried} | {fi} | {fo} |")
        out.append("\n| fault | times | longest outage | worst recovery after the fault | probe |")
        out.append("| --- | --- | --- | --- | --- |")
        for kind in self.KINDS:
            if kind in outage:
                o = outage[kind]
                out.append(
                    f"| {kind} | {o['count']} | {o['longest']:.1f} s | {o['worst_recovery']:.1f} s | {o['probe'] or '-'} |"
                )
        out.append(f"\nleases leaked: {leaked}, duplicated: {dup}; cone pair on relay: {len(stuck)}\n")
        out.append("| process | RSS warm / peak / end (MiB) | fds warm / peak / end |")
        out.append("| --- | --- | --- |")
        for role, r0, rp, r1, f0, fp, f1 in res_rows:
            out.append(f"| {role} | {r0 / 1024:.1f} / {rp / 1024:.1f} / {r1 / 1024:.1f} | {f0} / {fp} / {f1} |")
        out.append(
            f"\nGoals: 0 failures outside fault windows; every probe back within {RECOVERY:.0f} s of a "
            f"fault's end; 0 leaked or duplicated leases; RSS end <= {RSS_END[0]}x warm + "
            f"{RSS_END[1] >> 10} MiB, peak <= {RSS_PEAK[0]}x + {RSS_PEAK[1] >> 10} MiB; fds end <= warm + {FDS_END}."
        )
        long_ones = [x for x in streaks if x[1] >= 1.5]
        if long_ones:
            out.append("\nOutages of 1.5 s or more (offset from the start, length, probe; faults at "
                       + ", ".join(f"{k} {s - t0:.0f}-{e - t0:.0f} s" for k, s, e, _ in self.faults) + "):")
            for at, length, name in long_ones[:40]:
                out.append(f"  {at - t0:7.1f} s  {length:6.1f} s  {name}")
        if self.churn_errors:
            seen = {}
            for at, op, err in self.churn_errors:
                seen.setdefault((op, err), []).append(at - t0)
            out.append("\nPodman churn errors (count, first at, what podman said):")
            for (op, err), ats in sorted(seen.items(), key=lambda x: x[1][0])[:10]:
                out.append(f"  {len(ats):4d}  {ats[0]:7.1f} s  podman {op}: {err[:200]}")
        if outside:
            out.append("\nFailures outside fault windows (offset, probe, why), with the lab's logs around them:")
            tmp = self.lab.tmp
            logs = ["gw/logs/error.log", "h1/flatnetd.log", "h2/flatnetd.log", "h3/flatnetd.log", "lh.log"]
            for at, name in sorted(outside)[:5]:
                out.append(f"  {at - t0:7.1f} s  {name}: {self.rec.why.get((name, at), 'failed')}")
                for rel in logs:
                    for line in log_lines_near(os.path.join(tmp, rel), at):
                        out.append(f"      {rel}: {line}")
        out.append("RESULT: " + ("PASS" if not misses else "FAIL"))
        for m in misses:
            out.append(f"  missed: {m}")
        text = "\n".join(out)
        print(text, flush=True)
        if self.args.report:
            with open(self.args.report, "w") as f:
                json.dump(
                    {
                        "seed": self.args.seed,
                        "duration_s": dur,
                        "traffic": rows,
                        "faults": self.faults,
                        "outage": outage,
                        "leases": {"leaked": leaked, "duplicated": dup},
                        "resources": res_rows,
                        "misses": misses,
                        "churn_errors": [(a - t0, op, e) for a, op, e in self.churn_errors],
                        "outages": [(a - t0, n, p) for a, n, p in streaks],
                    },
                    f,
                    indent=1,
                )
        return 0 if not misses else 1

    def teardown(self):
        self.stop.set()
        if self.lab.tmp and not self.args.keep:
            try:
                self.lab.sh("soak_teardown", timeout=120, check=False)
            except subprocess.TimeoutExpired:
                log("teardown timed out")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=parse_duration, default=parse_duration("10m"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gap", type=float, default=25.0, help="mean seconds between faults")
    ap.add_argument("--report", help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument("--skip", action="append", default=[], choices=Soak.KINDS, help="leave out a fault kind")
    ap.add_argument("--only", action="append", default=[], choices=Soak.KINDS, help="only this fault kind (repeatable)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: run as root (network namespaces, Podman)")
    if args.duration < WARMUP + 60:
        sys.exit(f"soak: --duration must be at least {WARMUP + 60:.0f}s")
    s = Soak(args)
    try:
        rc = s.run()
    except Exception:
        s.teardown()
        raise
    s.teardown()
    sys.exit(rc)


if __name__ == "__main__":
    main()
