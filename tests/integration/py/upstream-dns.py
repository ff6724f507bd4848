#!/usr/bin/env python3
"""A stand-in for a host's upstream resolver in the DNS suites (stdlib only).

Answers every A question with 198.51.100.7 (TTL 60), except names ending in
"nx.example", which get NXDOMAIN. Listens on UDP ADDR:53.
"""
import socket
import struct
import sys

addr = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
while True:
    q, src = s.recvfrom(4096)
    if len(q) < 12:
        continue
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    # The question: labels up to the zero byte, then type and class.
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        n = q[i]
        labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    question = q[12:i + 5]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
    name = ".".join(labels).lower()
    rd = flags & 0x0100
    if name.endswith("nx.example"):
        hdr = struct.pack("!HHHHHH", qid, 0x8080 | rd | 3, 1, 0, 0, 0)
        s.sendto(hdr + question, src)
        continue
    answers = b""
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("198.51.100.7")
    hdr = struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, 1 if answers else 0, 0, 0)
    s.sendto(hdr + question + answers, src)
