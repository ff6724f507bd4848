#!/usr/bin/env python3
"""A smart-HTTP git server for the tests: runs git-http-backend as CGI (stdlib only).

  gitserver.py --bind IP --port P --root DIR

Request bodies (Content-Length or chunked, as git sends large pushes) are streamed to
the CGI's stdin; its output is streamed back, close-delimited.
"""
import argparse
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler

import backend

BACKEND = None
for cand in ("/usr/lib/git-core/git-http-backend", "/usr/local/libexec/git-core/git-http-backend"):
    if os.path.exists(cand):
        BACKEND = cand
        break
BACKEND = BACKEND or shutil.which("git-http-backend")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited responses keep the CGI bridge simple

    def log_message(self, fmt, *args):
        pass

    def run_cgi(self):
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.server.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "tester",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]
        for h in ("Content-Encoding", "Git-Protocol", "Host", "X-Forwarded-For"):
            if self.headers.get(h):
                env["HTTP_" + h.upper().replace("-", "_")] = self.headers[h]
        proc = subprocess.Popen([BACKEND], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed():
            try:
                if self.command == "POST":
                    backend.read_body(self, proc.stdin.write)
            finally:
                proc.stdin.close()
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        status, headers = "200 OK", []
        while True:
            line = proc.stdout.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = v.strip()
            else:
                headers.append((k, v.strip()))
        # Answer only once the whole request body is in, like a real server does: nginx
        # stops forwarding the request body once the response has started.
        t.join()
        self.wfile.write(("HTTP/1.0 %s\r\n" % status).encode())
        for k, v in headers:
            self.wfile.write(("%s: %s\r\n" % (k, v)).encode("latin-1"))
        self.wfile.write(b"Connection: close\r\n\r\n")
        shutil.copyfileobj(proc.stdout, self.wfile)
        proc.wait()

    do_GET = run_cgi
    do_POST = run_cgi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--root", required=True)
    a = ap.parse_args()
    srv = backend.Server((a.bind, a.port), Handler)
    srv.root = a.root
    srv.serve_forever()


if __name__ == "__main__":
    main()
