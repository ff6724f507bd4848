#!/usr/bin/env python3
"""Every binary's error paths, table-driven (suite 005).

Each case of tests/integration/cli-errors/cases runs one command in a fresh
scratch root and checks:
  - its exit code;
  - stdout and stderr, with the scratch root written as $ROOT, against the
    golden file tests/integration/cli-errors/golden (so no cause is said
    twice, no Rust debug text, no stray line);
  - that no cause repeats inside one error line (a check that needs no
    golden file);
  - under --json, that stderr is one JSON object with the same exit code;
  - that the scratch root is unchanged: no key, state dir, state file,
    half-written config or socket left behind.

    cli_errors.py              run the table, exit 1 on any difference
    cli_errors.py --update     rewrite the golden file from this build

Environment: FLATNET_TARGET (the binaries), FULL_FS (a full file system
the caller mounted, for the full-disk cases; they are skipped without it,
and suite 005 always mounts one).
"""

import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(os.path.dirname(HERE), "cli-errors")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
TARGET = os.environ.get("FLATNET_TARGET", os.path.join(REPO, "target", "release"))

# Files every case finds in its scratch root.
FIXTURES = {
    "etc/good.toml": 'state_dir = "$ROOT/state"\nsocket = "$ROOT/run/flatnetd.sock"\n',
    "etc/bad-value.toml": 'state_dir = "$ROOT/state"\nmtu = "big"\n',
    "etc/unknown-key.toml": 'state_dir = "$ROOT/state"\nmtuu = 1400\n',
    "etc/syntax.toml": 'state_dir = "$ROOT/state"\n[wireguard\nlisten_port = 1\n',
    "etc/bad-range.toml": 'state_dir = "$ROOT/state"\nmtu = 100\n',
    "etc/bad-token.toml": 'state_dir = "$ROOT/state"\n[lighthouse]\ntoken = "flatnet1_garbage"\n',
    "etc/full.toml": 'state_dir = "$FULL/state"\nsocket = "$ROOT/run/flatnetd.sock"\n',
    "backup-garbage.json": "this is not a backup\n",
    "policy.json": '{"rules": [',
}


def snapshot(root):
    """Every path under root with its type, mode, size and content hash."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            h = ""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()[:16]
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, h)
    return out


def make_root(full):
    root = tempfile.mkdtemp(prefix="flatnet-cli.")
    os.chmod(root, 0o755)
    for rel, text in FIXTURES.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text.replace("$ROOT", root).replace("$FULL", full or "/nonexistent"))
    os.makedirs(os.path.join(root, "run"))
    # A socket file nobody listens on (a daemon that died), and one only
    # root may open, that does listen.
    for name, mode, listen in (("stale.sock", 0o755, False), ("root-only.sock", 0o600, True)):
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(root, "run", name))
        if listen:
            s.listen(1)
            keep.append(s)
        else:
            s.close()
        os.chmod(os.path.join(root, "run", name), mode)
    os.chmod(os.path.join(root, "run"), 0o755)
    return root


keep = []


def load_cases():
    cases = []
    with open(os.path.join(DIR, "cases")) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, code, cmd = line.split(None, 2)
            cases.append((name, int(code), cmd, n))
    return cases


def run_case(cmd, root, full):
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "ROOT": root,
        "FULL": full or "/nonexistent",
        "FLATNETD": os.path.join(TARGET, "flatnetd"),
        "FLATNETCTL": os.path.join(TARGET, "flatnetctl"),
        "LIGHTHOUSE": os.path.join(TARGET, "lighthouse"),
        "FLATNET": os.path.join(TARGET, "flatnet"),
        # Nothing of the caller's: no config, socket or log filter.
        "LANG": "C.UTF-8",
    }
    r = subprocess.run(["bash", "-c", cmd], cwd=root, env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


def normalise(text, root, full):
    text = text.replace(root, "$ROOT")
    if full:
        text = text.replace(full, "$FULL")
    return text.replace(TARGET, "$TARGET")


def repeated_cause(line):
    """A cause said twice on one line: `a: b: b` or `…: X … X` pieces."""
    parts = [p.strip() for p in re.split(r": ", line) if len(p.strip()) >= 12]
    seen = set()
    for p in parts:
        if p in seen:
            return p
        seen.add(p)
    return None


def main():
    update = "--update" in sys.argv
    full = os.environ.get("FULL_FS")
    got, problems = [], []
    golden_path = os.path.join(DIR, "golden")
    for name, want, cmd, lineno in load_cases():
        if "$FULL" in cmd or "full.toml" in cmd:
            if not full:
                print(f"# skip {name}: no FULL_FS (suite 005 mounts one)")
                continue
            for e in os.listdir(full):
                if e != "filler":
                    shutil.rmtree(os.path.join(full, e), ignore_errors=True)
        root = make_root(full)
        before = snapshot(root)
        full_before = snapshot(full) if full else None
        code, out, err = run_case(cmd, root, full)
        after = snapshot(root)
        out, err = normalise(out, root, full), normalise(err, root, full)
        got.append(f"== {name} (exit {code}): {cmd}\n" + "".join(f"out| {l}\n" for l in out.splitlines())
                   + "".join(f"err| {l}\n" for l in err.splitlines()))
        where = f"cases:{lineno} {name}"
        if code != want:
            problems.append(f"{where}: exit {code}, want {want}")
        if before != after:
            changed = sorted(set(before.items()) ^ set(after.items()))
            problems.append(f"{where}: left the scratch root changed: {sorted({c[0] for c in changed})}")
        if full and snapshot(full) != full_before:
            problems.append(f"{where}: left something on the full file system")
        for l in err.splitlines():
            r = repeated_cause(l)
            if r:
                problems.append(f"{where}: cause said twice: {r!r} in {l!r}")
            if re.search(r"\b(Some|None|Os|Custom)\s*[({]|kind: [A-Z]", l):
                problems.append(f"{where}: Rust debug text: {l!r}")
        if " --json" in cmd and code != 0:
            try:
                j = json.loads(err)
                if j.get("exit_code") != code or not j.get("error"):
                    problems.append(f"{where}: JSON error without error/exit_code: {err!r}")
            except ValueError:
                problems.append(f"{where}: --json, but stderr is not one JSON object: {err!r}")
        elif code != 0 and not re.search(r"\$FLATNET(\s|$)", cmd):
            lines = [l for l in err.splitlines() if l.strip()]
            if len(lines) != 1:
                problems.append(f"{where}: {len(lines)} error lines, want 1: {err!r}")
        shutil.rmtree(root, ignore_errors=True)
    text = "".join(got)
    if update:
        with open(golden_path, "w") as f:
            f.write(text)
        print(f"wrote {golden_path} ({len(got)} cases)")
    else:
        with open(golden_path) as f:
            golden = f.read()
        if golden != text:
            diff = difflib.unified_diff(golden.splitlines(True), text.splitlines(True), "golden", "this build")
            problems.append("output differs from the golden file "
                            "(tests/integration/py/cli_errors.py --update rewrites it):\n" + "".join(diff))
    for p in problems:
        print("FAIL " + p)
    print(f"{len(got)} cases, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
