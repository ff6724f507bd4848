#!/usr/bin/env python3
"""Open N TCP connections to HOST:PORT that never send a byte; hold them.

    hold-conns.py HOST PORT N SECONDS

Prints how many connects succeeded, then sleeps SECONDS with all of them
open (an idle-connection flood), then exits (closing them).
"""
import socket
import sys
import time

host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
held = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((host, port))
        held.append(s)
    except OSError:
        s.close()
print(len(held), flush=True)
time.sleep(secs)
