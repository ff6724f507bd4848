#!/usr/bin/env python3
"""Test backend for the Flatnet gateway suites (stdlib only).

  backend.py --name web --bind 10.87.1.5 --port 8080 [--catalog FILE [--chunked]]

Endpoints: /sse (event stream, one event every 0.3 s), /upload (PUT/POST: streams the
body, answers its byte count and sha256), /ws (WebSocket echo), /index.html (a page
for the browser test), anything else: JSON describing the request as received.
With --catalog every GET answers FILE's current contents (503 when it is missing).
"""
import argparse
import base64
import hashlib
import json
import os
import socketserver
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Flatnet web test</title>
<style>body{{font-family:sans-serif;background:#eef6ff;margin:3em}}
h1{{color:#0b4f9c;font-size:48px}}</style></head>
<body><h1>Hello from {name}</h1><p id="where">served by backend {name} at {addr}</p>
<p>Host header: <code>{host}</code></p></body></html>
"""


def read_body(handler, sink):
    """Feed the request body (Content-Length or chunked) to sink in pieces; return byte count."""
    total = 0
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return total
            left = size
            while left:
                data = handler.rfile.read(min(left, 1 << 20))
                if not data:
                    raise IOError("body ended early")
                sink(data)
                left -= len(data)
            total += size
            handler.rfile.readline()
    left = int(handler.headers.get("Content-Length", "0"))
    while left:
        data = handler.rfile.read(min(left, 1 << 20))
        if not data:
            raise IOError("body ended early")
        sink(data)
        total += len(data)
        left -= len(data)
    return total


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fgw-backend"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    def send_body(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def describe(self):
        return json.dumps({
            "backend": self.server.name,
            "addr": self.server.server_address[0],
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }) + "\n"

    def do_GET(self):
        if self.server.catalog:
            return self.serve_catalog()
        path = self.path.split("?")[0]
        if path == "/sse":
            return self.sse()
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if path in ("/", "/index.html"):
            return self.send_body(200, PAGE.format(name=self.server.name, addr=self.server.server_address[0],
                                                   host=self.headers.get("Host", "")), "text/html; charset=utf-8")
        self.send_body(200, self.describe())

    do_HEAD = do_GET

    def do_POST(self):
        if self.path.startswith("/upload"):
            h = hashlib.sha256()
            first = [None]

            def sink(data):
                if first[0] is None:
                    first[0] = time.time()
                h.update(data)
            n = read_body(self, sink)
            return self.send_body(200, json.dumps({"backend": self.server.name, "bytes": n,
                                                   "sha256": h.hexdigest(), "first_byte_at": first[0],
                                                   "done_at": time.time()}) + "\n")
        read_body(self, lambda d: None)
        self.send_body(200, self.describe())

    do_PUT = do_POST

    def serve_catalog(self):
        try:
            with open(self.server.catalog, "rb") as f:
                data = f.read()
        except OSError:
            return self.send_body(503, "catalog not available\n", "text/plain")
        if not self.server.chunked:
            return self.send_body(200, data)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 7):
            piece = data[i:i + 7]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for i in range(5):
            self.wfile.write(("data: event %d at %.3f\n\n" % (i, time.time())).encode())
            self.wfile.flush()
            time.sleep(0.3)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            opcode, payload = ws_read_frame(self.rfile)
            if opcode is None or opcode == 0x8:
                ws_write_frame(self.wfile, 0x8, b"")
                return
            if opcode == 0x9:
                ws_write_frame(self.wfile, 0xA, payload)
            elif opcode in (0x1, 0x2):
                ws_write_frame(self.wfile, opcode, payload)


def ws_read_frame(f):
    """Read one (unfragmented) frame; unmask if masked. Returns (opcode, payload) or (None, None)."""
    head = f.read(2)
    if len(head) < 2:
        return None, None
    opcode = head[0] & 0x0F
    masked = head[1] & 0x80
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", f.read(8))[0]
    mask = f.read(4) if masked else b"\0\0\0\0"
    data = f.read(n)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def ws_write_frame(f, opcode, payload, mask=None):
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mbit | 127, n)
    if mask:
        payload = mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    f.write(head + payload)
    f.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind looks up the FQDN of the bind address: in
        # a test namespace with no resolver that takes about 10 s before
        # the port accepts. The name is only used in CGI variables.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="backend")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--catalog")
    ap.add_argument("--chunked", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    srv = Server((a.bind, a.port), Handler)
    srv.name, srv.catalog, srv.chunked, srv.verbose = a.name, a.catalog, a.chunked, a.verbose
    srv.serve_forever()


if __name__ == "__main__":
    socketserver.TCPServer.request_queue_size = 128
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
