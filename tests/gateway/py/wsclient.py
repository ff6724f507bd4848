#!/usr/bin/env python3
"""WebSocket client for the tests (stdlib only): connect, send messages, print the echoes.

  wsclient.py HOST PORT HOSTHEADER PATH MESSAGE...
"""
import base64
import hashlib
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backend import WS_GUID, ws_read_frame, ws_write_frame  # noqa: E402


def main():
    host, port, host_header, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host_header, key)).encode())
    f = s.makefile("rwb")
    status = f.readline().decode()
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if " 101 " not in status:
        sys.exit("handshake failed: " + status.strip())
    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    if headers.get("sec-websocket-accept") != want:
        sys.exit("bad Sec-WebSocket-Accept: %r" % headers.get("sec-websocket-accept"))
    for msg in sys.argv[5:]:
        ws_write_frame(f, 0x1, msg.encode(), mask=os.urandom(4))
        opcode, payload = ws_read_frame(f)
        print("echo: %s" % payload.decode())
    ws_write_frame(f, 0x8, b"", mask=os.urandom(4))
    opcode, _ = ws_read_frame(f)
    print("closed" if opcode == 0x8 else "no close frame")


if __name__ == "__main__":
    main()
