#!/usr/bin/env python3
"""Keepalive HTTP/1.1 load client that retries the way real clients do.

    reliability/retrying_client.py --url http://127.0.0.1:8000/r --seconds 6 \
        --connections 16 [--expect-header X-Hello-From-Rust --expect-value v]

wrk counts a request as failed when the server closed an idle keepalive
connection just as the request was written on it. nginx does exactly that
when a reload (HUP) retires a worker: the request never reached the server,
and HTTP clients retry it on a new connection (RFC 9112, 9.3.1; curl, Go's
net/http, urllib3 and browsers all do). This client does the same, once,
and only when nothing of a response had arrived on a *reused* connection;
every other failure is a lost request. It prints one JSON object:

    requests    answered requests (any status)
    non2xx      answers with a status outside 200-299
    unexpected  2xx answers without the expected header value
    retried     requests resent after an idle-connection close
    lost        requests that got no answer (after the retry, if any)
    errors      the first few error messages of lost requests

Loopback only: refuses any host but 127.0.0.1 / localhost. Bounded by
--seconds (plus one request timeout).
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

# Errors that mean "the connection was gone before any response arrived".
CLOSED_BEFORE_RESPONSE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


def run_connection(host, port, path, deadline, expect, totals, lock):
    counts = {"requests": 0, "non2xx": 0, "unexpected": 0, "retried": 0, "lost": 0}
    errors = []
    conn, used = None, 0
    while time.monotonic() < deadline:
        retried = False
        while True:
            if conn is None:
                conn, used = http.client.HTTPConnection(host, port, timeout=5), 0
            reused = used > 0
            try:
                conn.request("GET", path)
                response = conn.getresponse()
            except CLOSED_BEFORE_RESPONSE as e:
                conn.close()
                conn = None
                if reused and not retried:
                    counts["retried"] += 1
                    retried = True
                    continue
                counts["lost"] += 1
                errors.append(f"{type(e).__name__}: {e}")
                break
            except OSError as e:  # refused, timeout: no retry
                conn.close()
                conn = None
                counts["lost"] += 1
                errors.append(f"{type(e).__name__}: {e}")
                break
            try:
                response.read()
            except (OSError, http.client.HTTPException) as e:
                # part of an answer arrived: the request may have run, so it
                # is not retried; it is lost
                conn.close()
                conn = None
                counts["lost"] += 1
                errors.append(f"body: {type(e).__name__}: {e}")
                break
            used += 1
            counts["requests"] += 1
            if not 200 <= response.status < 300:
                counts["non2xx"] += 1
            elif expect and response.getheader(expect[0]) != expect[1]:
                counts["unexpected"] += 1
            if response.will_close:
                conn.close()
                conn = None
            break
    if conn is not None:
        conn.close()
    with lock:
        for key, value in counts.items():
            totals[key] += value
        totals["errors"].extend(errors[: 5 - len(totals["errors"])])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--expect-header")
    parser.add_argument("--expect-value")
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
        sys.exit("retrying_client: only http://127.0.0.1 URLs (loopback)")
    if not 0 < args.seconds <= 600 or not 0 < args.connections <= 256:
        sys.exit("retrying_client: --seconds in (0, 600], --connections in (0, 256]")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    expect = (args.expect_header, args.expect_value) if args.expect_header else None

    totals = {"requests": 0, "non2xx": 0, "unexpected": 0, "retried": 0, "lost": 0, "errors": []}
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(
            target=run_connection,
            args=(url.hostname, url.port or 80, path, deadline, expect, totals, lock),
            daemon=True,
        )
        for _ in range(args.connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.seconds + 30)
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
