"""End-to-end bodies through the proxy (DESIGN.md, "Data path"): echoed
bodies from 0 B to 100 MiB, a 1 GiB streamed response, chunked requests and
responses, keep-alive reuse on both sides and pipelining. Runs once per
engine (LB_ENGINE)."""

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import unittest

from lbtest import (post_chunked, SharedLBTestCase, connect, first_difference, pattern, request_log,
                    wait_status, wait_until)

PROXY_THREADS = 2


def stream_request(port, head, body_parts, timeout=60.0, pause=0.0):
    """Sends head and then body_parts from a thread while the response is
    read (so a large echo cannot deadlock on full buffers). Returns
    (Response with body None, sha256 hex of the body, body length, send error)."""
    s, rd = connect(port, timeout)
    errors = []

    def send():
        try:
            s.sendall(head)
            for part in body_parts:
                if pause:
                    time.sleep(pause)
                s.sendall(part)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    h = hashlib.sha256()
    n = [0]

    def sink(b):
        h.update(b)
        n[0] += len(b)

    try:
        r = rd.read_response(sink=sink)
    finally:
        t.join(timeout)
        s.close()
    return r, h.hexdigest(), n[0], errors


def pieces(data, size=1 << 20):
    mv = memoryview(data)
    return [mv[i:i + size] for i in range(0, len(data), size)]


def chunk_encode(parts):
    out = []
    for p in parts:
        if len(p):
            out.append(b"%x\r\n" % len(p) + bytes(p) + b"\r\n")
    out.append(b"0\r\n\r\n")
    return out


class Bodies(SharedLBTestCase):
    @classmethod
    def start_shared(cls):
        cls.c1 = [cls.shared_backend("c1-%d" % i, "cluster1") for i in (1, 2)]
        cls.p = cls.shared_proxy(routes={"/cluster1": cls.c1}, threads=PROXY_THREADS)
        st = wait_status(cls.p.port, "/cluster1", 200, timeout=15)
        if st != 200:
            raise RuntimeError("/cluster1 answers %r, not 200:\n%s" % (st, cls.p.log()[-3000:]))

    def test_echo_sizes(self):
        for size in (0, 1, 64 << 10, 100 << 20):
            body = os.urandom(size)
            head = (b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n" % size)
            r, digest, n, err = stream_request(self.p.port, head, pieces(body))
            self.assertEqual(err, [], size)
            self.assertEqual(r.status, 200, size)
            self.assertEqual(n, size)
            self.assertEqual(digest, hashlib.sha256(body).hexdigest(), "echo of %d bytes" % size)

    def test_one_gib_streamed(self):
        n = 1 << 30
        mib = 1 << 20
        block = memoryview(pattern(mib + 251))
        want = hashlib.sha256()
        for off in range(0, n, mib):
            start = off % 251
            want.update(block[start:start + min(mib, n - off)])
        s, rd = connect(self.p.port, timeout=30)
        got = hashlib.sha256()
        count = [0]

        def sink(b):
            got.update(b)
            count[0] += len(b)

        with s:
            s.sendall(b"GET /cluster1/bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            r = rd.read_response(sink=sink)
        self.assertEqual(r.status, 200)
        self.assertEqual(count[0], n)
        self.assertEqual(got.hexdigest(), want.hexdigest(), "1 GiB body differs from the pattern")

    def test_chunked_request_http_client(self):
        parts = [b"first ", os.urandom(100000), b"x", os.urandom(3 << 20), b"last"]
        st, got = post_chunked(self.p.port, "/cluster1/echo", parts)
        self.assertEqual(st, 200)
        self.assertEqual(len(got), sum(map(len, parts)))
        self.assertIsNone(first_difference(got, b"".join(parts)))

    def test_chunked_request_slow(self):
        # Chunks arrive in separate packets over ~0.5 s.
        parts = [os.urandom(n) for n in (1, 10, 1000, 65536, 7, 300000)]
        head = b"PUT /cluster1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        r, digest, n, err = stream_request(self.p.port, head, chunk_encode(parts), pause=0.07)
        self.assertEqual(err, [])
        self.assertEqual(r.status, 200)
        self.assertEqual(n, sum(map(len, parts)))
        self.assertEqual(digest, hashlib.sha256(b"".join(parts)).hexdigest())

    def test_chunked_response(self):
        # Several rounds: a buffer reused too early shows only some of the time.
        for n in (0, 1) + (100000, 5 << 20) * 3:
            s, rd = connect(self.p.port, timeout=30)
            with s:
                s.sendall(b"GET /cluster1/bytes/%d?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                r = rd.read_response()
            self.assertEqual(r.status, 200, n)
            self.assertTrue(r.chunked or r.headers.get("content-length") == str(n),
                            r.header_list)
            self.assertEqual(len(r.body), n)
            diff = first_difference(r.body, pattern(n))
            if diff:
                self.fail("chunked /bytes/%d differs: %s; chunk sizes %r"
                          % (n, diff, r.chunk_sizes[:8]))

    def test_keepalive_reuse_both_sides(self):
        accepted_before = sum(b.connections_accepted() for b in self.c1)
        health_before = sum(1 for b in self.c1 for l in request_log(b) if "/health" in l[4])
        c = http.client.HTTPConnection("127.0.0.1", self.p.port, timeout=10)
        socks = set()
        try:
            for i in range(50):
                c.request("GET", "/cluster1/ka/%d" % i)
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, i)
                self.assertFalse(r.will_close, "the proxy closed the client connection at %d" % i)
                self.assertEqual(json.loads(body)["path"], "/cluster1/ka/%d" % i)
                socks.add(c.sock.getsockname() if c.sock else None)
        finally:
            c.close()
        self.assertEqual(len(socks), 1, "the client side used %d connections" % len(socks))

        def ka_lines():
            ls = [(b.instance_id, l[2]) for b in self.c1 for l in request_log(b)
                  if l[4].startswith("/cluster1/ka/")]
            return ls if len(ls) >= 50 else None

        lines = wait_until(ka_lines, 5)
        self.assertTrue(lines, "the backends did not log the 50 requests")
        conns = set(lines)
        self.assertLessEqual(len(conns), 2 * PROXY_THREADS,
                             "50 requests used %d backend connections" % len(conns))
        accepted = sum(b.connections_accepted() for b in self.c1) - accepted_before
        probes = sum(1 for b in self.c1 for l in request_log(b) if "/health" in l[4]) \
            - health_before
        self.assertLessEqual(accepted, 2 * PROXY_THREADS + probes,
                             "the backends accepted %d connections for 50 requests" % accepted)

    def test_pipelining(self):
        reqs = b"".join(b"GET /cluster1/pipe/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        s, rd = connect(self.p.port, timeout=10)
        with s:
            s.sendall(reqs)
            for i in range(5):
                r = rd.read_response()
                self.assertEqual(r.status, 200, i)
                self.assertEqual(r.json()["path"], "/cluster1/pipe/%d" % i)

    def test_pipelining_mixed(self):
        body = os.urandom(200000)
        reqs = (b"GET /cluster1/mix/0 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % len(body) + body +
                b"GET /cluster1/bytes/70000 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /cluster1/mix/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s, rd = connect(self.p.port, timeout=10)
        with s:
            t = threading.Thread(target=s.sendall, args=(reqs,), daemon=True)
            t.start()
            r0 = rd.read_response()
            r1 = rd.read_response()
            r2 = rd.read_response()
            r3 = rd.read_response()
            t.join(10)
        self.assertEqual(r0.json()["path"], "/cluster1/mix/0")
        self.assertEqual(r1.status, 200)
        self.assertIsNone(first_difference(r1.body, body))
        self.assertIsNone(first_difference(r2.body, pattern(70000)))
        self.assertEqual(r3.json()["path"], "/cluster1/mix/3")

    def test_http10_client(self):
        s, rd = connect(self.p.port, timeout=10)
        with s:
            s.sendall(b"GET /cluster1/old HTTP/1.0\r\n\r\n")
            r = rd.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["path"], "/cluster1/old")
            s.settimeout(5)
            try:
                rest = s.recv(1)
            except socket.timeout:
                rest = None
            self.assertEqual(rest, b"", "the proxy kept an HTTP/1.0 connection open")


if __name__ == "__main__":
    unittest.main()
