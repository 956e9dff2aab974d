#!/usr/bin/env python3
"""Development proxy for the strongroom web console (a dev aid, not shipped).

Serves src/api/console/ at /ui/ with the headers the real server will send
(CSP and friends) and forwards every other path, streamed, to a running
strongroom (same origin, as in production). For a binary older than /audit
and /watch, --emulate DATA_DIR fakes those two from the data dir's
audit.log and from the writes that pass through this proxy, so the console's
code for them can be exercised.

    devproxy.py --upstream http://127.0.0.1:8210 [--listen 127.0.0.1:0] [--emulate DIR]

Prints `listening http://HOST:PORT` on stdout once ready.
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "api" / "console"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY", "Cache-Control": "no-cache",
}
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
EVENTS, EVENTS_LOCK = [], threading.Condition()  # emulated change stream


class Proxy(BaseHTTPRequestHandler):
    upstream = None
    emulate = None

    def log_message(self, *args):  # quiet
        pass

    def send(self, status, body, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/ui":
            return self.send(301, b"", "text/plain", {"Location": "/ui/"})
        if path.startswith("/ui/"):
            name = path[4:] or "index.html"
            f = CONSOLE / name
            if "/" in name or f.suffix not in TYPES or not f.is_file():
                return self.send(404, b"not found", "text/plain")
            return self.send(200, f.read_bytes(), TYPES[f.suffix], UI_HEADERS)
        if self.emulate and path in ("/audit", "/watch"):
            return self.emulated(path)
        self.forward()

    def do_PUT(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def do_DELETE(self):
        self.forward()

    def upstream_call(self, method, path, body=None, headers=None):
        u = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        return conn, conn.getresponse()

    def forward(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn, res = self.upstream_call(self.command, self.path, body, headers)
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        while True:
            chunk = res.read1(65536)
            if not chunk:
                break
            self.wfile.write(chunk)
            self.wfile.flush()
        conn.close()
        if self.emulate and res.status < 300:
            self.record(body, res.getheader("ETag"))

    def record(self, body, etag):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        action = key = None
        if self.command == "PUT" and path == "/secrets":
            action, key = "put", json.loads(body or b"{}").get("key")
        elif self.command == "DELETE" and path.startswith("/secrets/"):
            action, key = "delete", path[9:]
        elif self.command == "POST" and path.startswith("/undelete/"):
            action, key = "undelete", path[10:]
        elif self.command == "DELETE" and path.startswith("/metadata/"):
            action, key = "destroy", path[10:]
        if key:
            with EVENTS_LOCK:
                EVENTS.append({"key": key, "version": int((etag or '"0"').strip('"') or 0) or None,
                               "action": action, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                EVENTS_LOCK.notify_all()

    def emulated(self, path):
        auth = {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "authorization")}
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        conn, res = self.upstream_call("GET", "/apikeys" if path == "/audit" else "/secrets?limit=1", None, auth)
        res.read()
        conn.close()
        if res.status != 200:
            return self.send(res.status, json.dumps({"error": "unauthorized" if res.status == 401 else "forbidden"}).encode())
        if path == "/audit":
            lines = [json.loads(x) for x in (Path(self.emulate) / "audit.log").read_text().splitlines() if x.strip()]
            after, limit = int(q.get("after") or 0), min(int(q.get("limit") or 100), 1000)
            page = lines[after:after + limit]
            nxt = after + len(page) if after + len(page) < len(lines) else None
            return self.send(200, json.dumps({"lines": page, "next": nxt}).encode())
        prefix, resume = q.get("prefix", ""), self.headers.get("Last-Event-ID")
        with EVENTS_LOCK:
            sent = int(resume) if resume else len(EVENTS)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            while True:
                with EVENTS_LOCK:
                    if len(EVENTS) <= sent:
                        EVENTS_LOCK.wait(15)
                    new, sent0 = EVENTS[sent:], sent
                    sent = len(EVENTS)
                out = "".join(f"id: {sent0 + i + 1}\ndata: {json.dumps(e)}\n\n"
                              for i, e in enumerate(new) if e["key"].startswith(prefix)) or ":\n\n"
                self.wfile.write(out.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--emulate", metavar="DATA_DIR")
    a = ap.parse_args()
    Proxy.upstream, Proxy.emulate = a.upstream, a.emulate
    host, port = a.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), Proxy)
    srv.daemon_threads = True
    print(f"listening http://{host}:{srv.server_port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
