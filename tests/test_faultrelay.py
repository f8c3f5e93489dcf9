"""The fault-injecting relay (tests/faultrelay.py) alone, between http.client
(or a raw socket) and a real `backend`: without faults it relays every byte
and counts every exchange; each fault does what it says and is counted.
Runs once (not per engine)."""

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest

from faultrelay import FaultRelay, plan
from lbtest import HERE, SharedLBTestCase, connect, pattern, request_log, wait_until

BIG = pattern(400000)
CLIENT_ERRORS = (http.client.HTTPException, ConnectionError, OSError)


def read_raw_until_closed(port, request, timeout=5.0):
    """Sends request on a new connection and reads until EOF or reset:
    (bytes received, "eof" | "reset" | "timeout")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = bytearray()
    try:
        s.sendall(request)
        while True:
            try:
                b = s.recv(1 << 16)
            except ConnectionResetError:
                return bytes(got), "reset"
            except socket.timeout:
                return bytes(got), "timeout"
            if not b:
                return bytes(got), "eof"
            got += b
    finally:
        s.close()


def get_req(path, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: relay\r\n" + extra + b"\r\n"


class RelayCase(SharedLBTestCase):
    """One backend for the class; each test its own relay (stopped after it)."""

    @classmethod
    def start_shared(cls):
        cls.b = cls.shared_backend("relay-b1", "cluster1", threads=2)

    def relay(self, **kw):
        r = FaultRelay(self.b.port, **kw).start()
        self.addCleanup(r.stop)
        return r

    def conn(self, r, timeout=5):
        c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def fetch(self, c, method, path, body=None, headers=None):
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        return resp, resp.read()


class NoFaults(RelayCase):
    def test_bodies_intact_keepalive(self):
        r = self.relay(seed=7)
        c = self.conn(r)
        sizes = [0, 1, 2, 250, 251, 4095, 4096, 4097, 65535, 65536, 65537, 400000]
        sizes += [(i * 7919) % 30000 for i in range(300)]
        for i, n in enumerate(sizes):
            resp, body = self.fetch(c, "GET", "/bytes/%d" % n)
            self.assertEqual(resp.status, 200, "request %d (/bytes/%d)" % (i, n))
            self.assertEqual(len(body), n, "request %d" % i)
            self.assertTrue(body == BIG[:n], "request %d: /bytes/%d corrupted" % (i, n))
        st = r.stats()
        self.assertEqual(st["connections"], 1, st)
        self.assertEqual(st["exchanges"], len(sizes), st)
        self.assertEqual(st["responses"], len(sizes), st)
        self.assertEqual(st["resets"], 0, st)
        self.assertEqual(st["passthrough"], 0, st)

    def test_methods_and_statuses(self):
        r = self.relay()
        c = self.conn(r)
        resp, body = self.fetch(c, "HEAD", "/bytes/1000")
        self.assertEqual((resp.status, body), (200, b""))
        self.assertEqual(resp.getheader("Content-Length"), "1000")
        payload = BIG[:100000]
        resp, body = self.fetch(c, "POST", "/echo", body=payload)
        self.assertEqual(resp.status, 200)
        self.assertTrue(body == payload, "echo corrupted (%d bytes back)" % len(body))
        for code in (204, 304, 404, 503):
            resp, body = self.fetch(c, "GET", "/status/%d" % code)
            self.assertEqual(resp.status, code)
        resp, body = self.fetch(c, "GET", "/health")
        self.assertEqual(json.loads(body)["status"], "ok")
        st = r.stats()
        self.assertEqual((st["exchanges"], st["responses"], st["connections"]), (7, 7, 1), st)

    def test_chunked_response_passthrough(self):
        # A chunked response cannot be counted: the connection is relayed
        # unparsed from there on, and still works.
        r = self.relay(reset_share=0.0)
        c = self.conn(r)
        resp, body = self.fetch(c, "GET", "/bytes/5000?chunked=1")
        self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        self.assertTrue(body == BIG[:5000])
        for n in (10, 70000):
            resp, body = self.fetch(c, "GET", "/bytes/%d" % n)
            self.assertTrue(body == BIG[:n])
        st = r.stats()
        self.assertEqual(st["passthrough"], 1, st)
        self.assertEqual(st["responses"], 0, st)

    def test_pipelined_requests(self):
        r = self.relay()
        s, rd = connect(r.port)
        self.addCleanup(s.close)
        s.sendall(get_req("/bytes/300") + get_req("/bytes/70000") + get_req("/health")
                  + get_req("/bytes/5", b"Connection: close\r\n"))
        for n in (300, 70000):
            resp = rd.read_response()
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.body == BIG[:n])
        self.assertEqual(rd.read_response().json()["status"], "ok")
        self.assertEqual(rd.read_response().body, BIG[:5])
        self.assertEqual(rd.read_to_eof(), b"", "the backend's close reaches the client")
        st = wait_until(lambda: r.stats()["responses"] == 4 and r.stats(), 2)
        self.assertTrue(st, r.stats())
        self.assertEqual(st["exchanges"], 4, st)

    def test_concurrent_connections(self):
        r = self.relay()
        bad = []

        def client(k):
            c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
            try:
                for i in range(150):
                    n = (k * 1000 + i * 131) % 20000
                    c.request("GET", "/bytes/%d" % n)
                    resp = c.getresponse()
                    body = resp.read()
                    if resp.status != 200 or body != BIG[:n]:
                        bad.append((k, i, resp.status, len(body)))
            except CLIENT_ERRORS as e:
                bad.append((k, repr(e)))
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(bad, [])
        st = r.stats()
        self.assertEqual((st["connections"], st["exchanges"], st["responses"]), (8, 1200, 1200), st)


class Resets(RelayCase):
    def test_every_exchange_reset(self):
        r = self.relay(reset_share=1.0, seed=11)
        n = 40
        for i in range(n):
            c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
            try:
                c.request("GET", "/bytes/100000")
                resp = c.getresponse()
                body = resp.read()
                self.fail("request %d: a complete %d with %d bytes through a reset" %
                          (i, resp.status, len(body)))
            except CLIENT_ERRORS:
                pass  # a reset, a short read or a bad status line: never a whole body
            finally:
                c.close()
        st = wait_until(lambda: r.stats()["resets"] == n and r.stats(), 2)
        self.assertTrue(st, r.stats())
        self.assertEqual(st["exchanges"], n, st)
        self.assertEqual(st["resets_mid_response"], n, st)
        self.assertEqual(st["resets_before_head"], 0, st)
        self.assertEqual(st["resets_in_head"] + st["resets_after_head"], n, st)
        self.assertEqual(st["responses"], 0, st)
        self.assertEqual(len(st["reset_offsets"]), n)
        for off, head_len, total in st["reset_offsets"]:
            self.assertEqual(total, head_len + 100000)
            self.assertTrue(0 <= off < total, (off, head_len, total))
        # The offsets are uniform over head + body: most land in the body.
        self.assertGreater(st["resets_after_head"], n // 2, st)

    def test_reset_relays_exactly_the_bytes_before_the_offset(self):
        # A raw client counts what arrived before the reset: exactly the
        # offset the relay drew, the head complete iff offset >= head length.
        r = self.relay(reset_share=1.0, seed=5)
        got = []
        for i in range(30):
            data, how = read_raw_until_closed(r.port, get_req("/bytes/%d" % (i * 997 % 3000)))
            got.append((data, how))
        offsets = r.stats()["reset_offsets"]
        self.assertEqual(len(offsets), 30)
        saw_in_head = saw_after_head = 0
        for i, ((data, how), (off, head_len, total)) in enumerate(zip(got, offsets)):
            self.assertEqual(how, "reset", "connection %d ended by %s" % (i, how))
            self.assertEqual(len(data), off, "connection %d: %d bytes before the reset, "
                             "offset %d (head %d)" % (i, len(data), off, head_len))
            head_done = b"\r\n\r\n" in data
            self.assertEqual(head_done, off >= head_len, (i, off, head_len))
            if head_done:
                saw_after_head += 1
                self.assertTrue(data[head_len:] == BIG[:off - head_len], i)
            else:
                saw_in_head += 1
        self.assertGreater(saw_after_head, 0)

    def test_reset_before_head(self):
        r = self.relay(reset_before_head_share=1.0)
        before = len([l for l in request_log(self.b) if l[4] == "/bytes/77"])
        for i in range(10):
            data, how = read_raw_until_closed(r.port, get_req("/bytes/77"))
            self.assertEqual((data, how), (b"", "reset"), "connection %d" % i)
        st = r.stats()
        self.assertEqual((st["resets"], st["resets_before_head"], st["resets_mid_response"]),
                         (10, 10, 0), st)
        # Each request reached the backend (its first bytes triggered the reset).
        logged = wait_until(lambda: len([l for l in request_log(self.b)
                                         if l[4] == "/bytes/77"]) - before >= 10, 3)
        self.assertTrue(logged, "the backend did not log the 10 requests")

    def test_share_and_live_set(self):
        r = self.relay(reset_share=0.2, seed=3)
        errors = 0
        c = None
        n = 400
        for i in range(n):
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
            try:
                c.request("GET", "/bytes/2000")
                resp = c.getresponse()
                body = resp.read()
                self.assertEqual(body, BIG[:2000], i)
            except CLIENT_ERRORS:
                errors += 1
                c.close()
                c = None
        if c is not None:
            c.close()
        st = r.stats()
        self.assertEqual(st["exchanges"], n, st)
        self.assertEqual(st["resets"], errors, st)
        self.assertTrue(0.12 * n < errors < 0.28 * n, "%d resets of %d at 20%%" % (errors, n))
        # Off, live: the same relay now relays everything.
        r.set(reset_share=0)
        c = self.conn(r)
        for i in range(50):
            resp, body = self.fetch(c, "GET", "/bytes/3000")
            self.assertEqual(body, BIG[:3000])
        self.assertEqual(r.stats()["resets"], errors)

    def test_plan_predicts_the_faults(self):
        # The k-th faultable exchange gets plan(seed)[k], whatever the offsets
        # drawn: skipped requests in between do not shift it.
        want = plan(21, 60, reset_share=0.3)
        self.assertTrue(0 < want.count("reset") < 60)
        r = self.relay(reset_share=0.3, seed=21, skip_paths=("/health",))
        got = []
        c = None
        for i in range(60):
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", r.port, timeout=5)
            if i % 7 == 0:
                c.request("GET", "/health")
                c.getresponse().read()
            try:
                c.request("GET", "/bytes/3000")
                body = c.getresponse().read()
                got.append(None if body == BIG[:3000] else "short")
            except CLIENT_ERRORS:
                got.append("reset")
                c.close()
                c = None
        if c is not None:
            c.close()
        self.assertEqual(got, want)

    def test_skip_paths(self):
        r = self.relay(reset_share=1.0, skip_paths=("/health", "/cluster1/health"))
        c = self.conn(r)
        for path in ("/health", "/cluster1/health", "/health?x=1"):
            resp, body = self.fetch(c, "GET", path)
            self.assertEqual(json.loads(body)["status"], "ok", path)
        data, how = read_raw_until_closed(r.port, get_req("/bytes/100"))
        self.assertEqual(how, "reset")
        st = r.stats()
        self.assertEqual((st["exchanges"], st["skipped"], st["resets"]), (4, 3, 1), st)


class Delays(RelayCase):
    def test_latency_with_jitter(self):
        r = self.relay(latency_ms=120, jitter_ms=40, seed=2)
        c = self.conn(r)
        took = []
        for i in range(12):
            t0 = time.monotonic()
            resp, body = self.fetch(c, "GET", "/bytes/%d" % (i * 1000))
            took.append(time.monotonic() - t0)
            self.assertEqual(body, BIG[:i * 1000])
        self.assertGreaterEqual(min(took), 0.080 - 0.002, took)
        self.assertLess(max(took), 0.160 + 0.25, took)
        self.assertGreater(statistics.pstdev(took), 0.005, "no jitter: %r" % took)
        self.assertEqual(r.stats()["delayed"], 12)
        # Off, live.
        r.set(latency_ms=0, jitter_ms=0)
        t0 = time.monotonic()
        self.fetch(c, "GET", "/bytes/10")
        self.assertLess(time.monotonic() - t0, 0.06)

    def test_latency_keeps_bytes_in_order(self):
        # Pipelined requests on one connection, each response delayed: they
        # arrive whole and in order.
        r = self.relay(latency_ms=30, jitter_ms=30, seed=9)
        s, rd = connect(r.port)
        self.addCleanup(s.close)
        sizes = [5, 70000, 0, 300, 150000, 1]
        s.sendall(b"".join(get_req("/bytes/%d" % n) for n in sizes))
        for n in sizes:
            resp = rd.read_response()
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.body == BIG[:n], n)

    def test_stall(self):
        r = self.relay(stall_share=1.0, stall_ms=300, seed=4)
        c = self.conn(r)
        for n in (50000, 10):
            t0 = time.monotonic()
            resp, body = self.fetch(c, "GET", "/bytes/%d" % n)
            took = time.monotonic() - t0
            self.assertTrue(body == BIG[:n], n)
            self.assertGreaterEqual(took, 0.295, took)
            self.assertLess(took, 0.300 + 0.4, took)
        st = r.stats()
        self.assertEqual((st["stalls"], st["responses"], st["resets"]), (2, 2, 0), st)


class CommandLine(RelayCase):
    def test_cli_ready_request_stats(self):
        p = subprocess.Popen([sys.executable, HERE + "/faultrelay.py", "--target",
                              "127.0.0.1:%d" % self.b.port, "--reset-share", "0",
                              "--latency-ms", "1", "--seed", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            self.assertRegex(line, r"^ready \d+\n$")
            port = int(line.split()[1])
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for i in range(5):
                c.request("GET", "/bytes/1000")
                self.assertEqual(c.getresponse().read(), BIG[:1000])
            c.close()
            p.terminate()
            out, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), 1, out)
        st = json.loads(lines[0])
        self.assertEqual((st["exchanges"], st["responses"], st["resets"], st["delayed"]),
                         (5, 5, 0, 5), st)

    def test_cli_bad_option(self):
        p = subprocess.run([sys.executable, HERE + "/faultrelay.py", "--target", "127.0.0.1:1",
                            "--reset-share", "2"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("reset_share", p.stderr)


if __name__ == "__main__":
    unittest.main()
