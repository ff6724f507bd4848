#!/usr/bin/env python3
"""Send a TCP SYN to DST:DPORT from SRC as crafted IPv4 fragments (suite 160).

    frag_attack.py SRC DST DPORT CASE

CASE is how a remote member tries to slip a denied port past the policy,
which judges each fragment by itself:

  split    the SYN in two honest fragments: 8 bytes (the ports) + 12 bytes;
           the control case (an allowed port must still work fragmented)
  tiny     a first fragment of 2 bytes (the source port only, so the
           destination port is nowhere to judge), then the rest at offset 8
  overlap  a first fragment naming an allowed port (80), then a whole
           SYN at offset 0 again naming DPORT, overlapping it
  later    only the fragments after the first (no ports in them)

Raw socket with IP_HDRINCL: the kernel fills the IP checksum and sends each
fragment as given. Prints what it sent.
"""
import socket
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn(src, dst, sport, dport):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    c = checksum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def fragment(src, dst, ident, offset_bytes, more, payload):
    flags = (0x2000 if more else 0) | (offset_bytes // 8)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + payload


def main():
    src, dst, dport, case = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    frags = []
    for i in range(3):  # three tries, fresh ids and source ports
        ident, sport = 0x4000 + i, 41000 + i
        seg = syn(src, dst, sport, dport)
        if case == "split":
            frags += [fragment(src, dst, ident, 0, True, seg[:8]),
                      fragment(src, dst, ident, 8, False, seg[8:])]
        elif case == "tiny":
            frags += [fragment(src, dst, ident, 0, True, seg[:2]),
                      fragment(src, dst, ident, 8, False, seg[8:])]
        elif case == "overlap":
            decoy = syn(src, dst, sport, 80)
            frags += [fragment(src, dst, ident, 0, True, decoy[:8]),
                      fragment(src, dst, ident, 0, False, seg)]
        elif case == "later":
            frags += [fragment(src, dst, ident, 8, False, seg[8:])]
        else:
            sys.exit(f"unknown case {case!r}: split, tiny, overlap or later")
    for f in frags:
        s.sendto(f, (dst, 0))
    print(f"{case}: sent {len(frags)} fragments to {dst}:{dport}")


if __name__ == "__main__":
    main()
