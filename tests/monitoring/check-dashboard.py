#!/usr/bin/env python3
"""Check dist/monitoring/flatnet-dashboard.json against reality:

- every panel query is valid PromQL (each becomes a recording rule that
  `promtool check rules` parses);
- every metric a panel or an alert rule uses is one docs/operations.md
  documents (its metric tables are the one list of what the components
  expose; suite 110 and gateway suite 080 check the exposition against it).

    tests/monitoring/check-dashboard.py    (from the repository root)
"""

import json
import re
import subprocess
import sys
import tempfile

DASH = "dist/monitoring/flatnet-dashboard.json"
ALERTS = "dist/monitoring/flatnet-alerts.yml"
DOCS = "docs/operations.md"


def documented():
    names = set()
    for line in open(DOCS, encoding="utf-8"):
        if line.startswith("| `flatnet_"):
            for n in re.findall(r"`(flatnet_[a-z_]+)`", line.split("|")[1]):
                names.add(n)
    return names


def base(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def main():
    docs = documented()
    dash = json.load(open(DASH, encoding="utf-8"))
    exprs = [
        t["expr"]
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]
    if not exprs:
        print("the dashboard has no queries", file=sys.stderr)
        return 1
    bad = []
    used = set()
    for e in exprs + re.findall(r"expr: *>?-?\s*(.*)", open(ALERTS, encoding="utf-8").read()):
        for n in re.findall(r"\b(flatnet_[a-z_]+)", e):
            used.add(n)
            if base(n) not in docs and n not in docs:
                bad.append(n)
    if bad:
        print("not documented in %s: %s" % (DOCS, ", ".join(sorted(set(bad)))), file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, e in enumerate(exprs):
            q = e.replace("$__rate_interval", "5m")
            f.write("      - record: flatnet:dashboard_%d\n        expr: %s\n" % (i, json.dumps(q)))
        path = f.name
    r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        return 1
    print("dashboard: %d queries parse, %d metrics used, all documented" % (len(exprs), len(used)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
