#!/usr/bin/env python3
"""A stand-in for systemd's notify socket, for tests.

    notify-listen.py SOCKET LOG [--on-ready CMD]

Binds a unix datagram socket at SOCKET and appends every notification to
LOG as "<monotonic seconds> <message>" (one line per field). When a message
carries READY=1 and --on-ready is given, CMD runs (through sh) right then,
before the next message is read, and its exit status is logged as
"<t> ON_READY_RC=<rc>": the test's chance to look at the daemon at the
moment it said it was ready.
"""

import os
import socket
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) not in (3, 5):
        print(__doc__, file=sys.stderr)
        return 2
    path, log = sys.argv[1], sys.argv[2]
    on_ready = sys.argv[4] if len(sys.argv) == 5 and sys.argv[3] == "--on-ready" else None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    with open(log, "a", buffering=1) as out:
        out.write(f"{time.monotonic():.3f} LISTENING\n")
        while True:
            msg = s.recv(4096).decode("utf-8", "replace")
            now = time.monotonic()
            for field in msg.splitlines():
                out.write(f"{now:.3f} {field}\n")
            if on_ready and "READY=1" in msg.splitlines():
                rc = subprocess.call(on_ready, shell=True)
                out.write(f"{time.monotonic():.3f} ON_READY_RC={rc}\n")


if __name__ == "__main__":
    sys.exit(main())
