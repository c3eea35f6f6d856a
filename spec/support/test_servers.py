#!/usr/bin/env python3
"""Servers and a load client for the I/O specs, on 127.0.0.1 only.

  test_servers.py http PORTFILE   an HTTP server on a free port (written to
                                  PORTFILE), threaded, until killed:
                                  /delay?ms=N  answers "slept N" after N ms
                                  /hang        reads the request, never answers
                                  /reset       closes the connection at once
                                  POST /collect stores the body (503 while
                                  /collector/down, until /collector/up);
                                  GET /collected: the bodies, a JSON array
                                  POST /jwks stores a JWKS document; GET /jwks
                                  serves it (503 while /jwks/down, until
                                  /jwks/up); GET /jwks/hits: GETs of /jwks
                                  anything else: 200 with the path as body
  test_servers.py https PORTFILE CERT KEY   the same over TLS
  test_servers.py burst URL N     N concurrent GETs of URL; prints
                                  "elapsed=<s> ok=<n> statuses=<s:n,...>"
  test_servers.py abort URL N C   N GETs of URL, C at a time, each closed
                                  right after sending (the client goes away
                                  mid-request); prints "sent=<n>"

Bounded: /hang holds a connection at most 30 s; burst gives up after 30 s.
"""
import http.server
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import urllib.request


COLLECTED = []
COLLECTOR = {"down": False}
JWKS = {"doc": b'{"keys":[]}', "down": False, "hits": 0}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path == "/collect":
            with LOCK:
                if COLLECTOR["down"]:
                    return self.answer(503, b"down")
                COLLECTED.append(body.decode("utf-8", "replace"))
            return self.answer(200, b"ok")
        if self.path == "/jwks":
            with LOCK:
                JWKS["doc"] = body
            return self.answer(200, b"ok")
        self.answer(404, b"")

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/collected":
            import json
            with LOCK:
                return self.answer(200, json.dumps(COLLECTED).encode())
        if url.path in ("/collector/down", "/collector/up"):
            with LOCK:
                COLLECTOR["down"] = url.path.endswith("down")
            return self.answer(200, b"ok")
        if url.path == "/jwks":
            with LOCK:
                JWKS["hits"] += 1
                if JWKS["down"]:
                    return self.answer(503, b"down")
                return self.answer(200, JWKS["doc"])
        if url.path in ("/jwks/down", "/jwks/up"):
            with LOCK:
                JWKS["down"] = url.path.endswith("down")
            return self.answer(200, b"ok")
        if url.path == "/jwks/hits":
            with LOCK:
                return self.answer(200, str(JWKS["hits"]).encode())
        if url.path == "/hang":
            time.sleep(30)
            return
        if url.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
            return
        if url.path == "/delay":
            ms = int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(min(ms, 10000) / 1000.0)
            body = ("slept %d" % ms).encode()
        else:
            body = url.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def serve(portfile, cert=None, key=None):
    server = Server(("127.0.0.1", 0), Handler)
    if cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()


def burst(url, n):
    statuses = {}
    lock = threading.Lock()

    def one():
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except Exception:
            status = 0
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    ok = statuses.get(200, 0)
    print("elapsed=%.3f ok=%d statuses=%s" % (elapsed, ok, ",".join("%d:%d" % kv for kv in sorted(statuses.items()))))


def abort(url, n, concurrency):
    u = urllib.parse.urlparse(url)
    request = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (u.path or "/", u.netloc)).encode()
    sent = 0
    deadline = time.monotonic() + 120
    while sent < n and time.monotonic() < deadline:
        wave = []
        for _ in range(min(concurrency, n - sent)):
            s = socket.create_connection((u.hostname, u.port), timeout=5)
            s.sendall(request)
            wave.append(s)
        time.sleep(0.005)
        for s in wave:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        sent += len(wave)
    print("sent=%d" % sent)


if __name__ == "__main__":
    if sys.argv[1] == "http":
        serve(sys.argv[2])
    elif sys.argv[1] == "https":
        serve(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "burst":
        burst(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "abort":
        abort(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: test_servers.py http PORTFILE | burst URL N | abort URL N C")
