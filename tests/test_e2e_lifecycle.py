"""End-to-end lifecycle of the proxy: graceful drain on SIGTERM, prompt exit
on SIGINT, splice evidence in the exit log line, and the engine named in the
start-up log. Runs once per engine (LB_ENGINE)."""

import hashlib
import http.client
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

from lbtest import wait_routable, LBTestCase, get, pattern, wait_port

MiB = 1 << 20
EXIT_RE = re.compile(r"exit: splice_bytes=(\d+) splice_ops=(\d+) copied_bytes=(\d+)")

_pattern_cache = {}




def pattern_cached(n):
    if n not in _pattern_cache:
        _pattern_cache[n] = pattern(n)
    return _pattern_cache[n]


def wait_exit(test, p, timeout):
    """Waits for the proxy to exit on its own (no second signal); its code."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        test.fail("proxy still running %.0fs after the signal\n--- log ---\n%s"
                  % (timeout, p.log()[-3000:]))


def exit_counters(test, p):
    m = EXIT_RE.search(p.log())
    if not m:
        test.fail("no 'exit: splice_bytes=N splice_ops=M copied_bytes=K' line in the log:\n%s"
                  % p.log()[-3000:])
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def read_response(sock, hasher=None, limit_s=60):
    """Reads one HTTP/1.1 response with Content-Length from a raw socket;
    returns (status, body_length) and feeds the body into hasher."""
    f = sock.makefile("rb", buffering=1 << 20)
    try:
        line = f.readline(65536)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
        if not m:
            raise AssertionError("bad status line %r" % line[:200])
        status = int(m.group(1))
        length = None
        chunked = False
        while True:
            h = f.readline(65536)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
            if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        got = 0
        deadline = time.monotonic() + limit_s
        if chunked:
            while time.monotonic() < deadline:
                size = int(f.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while f.readline(65536) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    b = f.read(min(left, 1 << 20))
                    if not b:
                        raise AssertionError("connection closed inside a chunk")
                    if hasher:
                        hasher.update(b)
                    got += len(b)
                    left -= len(b)
                f.readline(16)
        else:
            if length is None:
                raise AssertionError("response without Content-Length or chunked")
            while got < length and time.monotonic() < deadline:
                b = f.read(min(length - got, 1 << 20))
                if not b:
                    break
                if hasher:
                    hasher.update(b)
                got += len(b)
        return status, got
    finally:
        f.close()


class Drain(LBTestCase):
    def test_sigterm_finishes_in_flight(self):
        backends = self.cluster("cluster1", 2)
        p = self.proxy(routes={"/cluster1": backends})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        results = [None] * 8
        errors = [None] * 8

        def one(i):
            try:
                results[i] = get(p.port, "/cluster1/delay/1500", timeout=10)
            except Exception as e:  # noqa: BLE001 - reported below
                errors[i] = repr(e)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.3)
        p.signal(signal.SIGTERM)
        time.sleep(0.5)

        # A new connection after the signal: refused, or closed without a response.
        new_conn = None
        try:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=1)
        except OSError as e:
            new_conn = "refused: %r" % e
        else:
            try:
                s.sendall(b"GET /cluster1/late HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(4)
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except socket.timeout:
                    data = b""
                self.assertEqual(data, b"", "a connection opened after SIGTERM got a response: %r"
                                 % data[:200])
            except (ConnectionResetError, BrokenPipeError):
                pass
            finally:
                s.close()

        for t in threads:
            t.join(timeout=10)
        self.assertEqual(errors, [None] * 8, "in-flight requests failed during drain")
        for i, r in enumerate(results):
            self.assertIsNotNone(r, "request %d did not finish" % i)
            self.assertEqual(r[0], 200, "request %d: %r" % (i, r[2][:200]))
        self.assertGreater(time.monotonic() - t0, 1.4)
        code = wait_exit(self, p, 10)
        self.assertEqual(code, 0, p.log()[-2000:])

    def test_sigint_idle_exits_promptly(self):
        b = self.backend("s1", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        st, _, _ = get(p.port, "/cluster1/x", timeout=5)
        self.assertEqual(st, 200)
        t0 = time.monotonic()
        p.signal(signal.SIGINT)
        code = wait_exit(self, p, 5)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(code, 0, p.log()[-2000:])

    def test_sigterm_idle_with_open_keepalive_connection(self):
        # An idle keep-alive client connection does not hold up the exit.
        b = self.backend("s2", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        try:
            c.request("GET", "/cluster1/x")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            code = wait_exit(self, p, 8)
            self.assertLess(time.monotonic() - t0, 3.0)
            self.assertEqual(code, 0)
        finally:
            c.close()


class Splice(LBTestCase):
    N = 64 * MiB

    def assert_spliced(self, p, n):
        """The exit line shows n body bytes moved, all by splice apart from
        those that arrived in the same read as a head (the contract's
        exception): copied_bytes < 1 MiB, splice_bytes + copied_bytes >= n."""
        sb, ops, copied = exit_counters(self, p)
        what = "splice_bytes=%d splice_ops=%d copied_bytes=%d for %d body bytes" % (
            sb, ops, copied, n)
        self.assertLess(copied, MiB, what)
        self.assertGreaterEqual(sb, n - MiB, what)
        self.assertGreaterEqual(sb + copied, n, what)
        self.assertGreater(ops, 0, what)

    def test_splice_get_64mib(self):
        b = self.backend("sp1", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
        h = hashlib.sha256()
        got = 0
        try:
            c.request("GET", "/cluster1/bytes/%d" % self.N)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
        finally:
            c.close()
        self.assertEqual(got, self.N)
        self.assertEqual(h.hexdigest(), hashlib.sha256(pattern_cached(self.N)).hexdigest())
        p.signal(signal.SIGTERM)
        self.assertEqual(wait_exit(self, p, 10), 0)
        self.assert_spliced(p, self.N)

    def test_splice_post_echo_64mib(self):
        b = self.backend("sp2", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        body = pattern_cached(self.N)
        want = hashlib.sha256(body).hexdigest()
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        send_err = []

        def sender():
            try:
                s.sendall(b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/octet-stream\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n" % self.N)
                mv = memoryview(body)
                for off in range(0, self.N, 1 << 20):
                    s.sendall(mv[off:off + (1 << 20)])
            except OSError as e:
                send_err.append(repr(e))

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        h = hashlib.sha256()
        try:
            status, got = read_response(s, h, limit_s=40)
        finally:
            t.join(timeout=40)
            s.close()
        self.assertEqual(send_err, [])
        self.assertEqual(status, 200)
        self.assertEqual(got, self.N)
        self.assertEqual(h.hexdigest(), want)
        p.signal(signal.SIGTERM)
        self.assertEqual(wait_exit(self, p, 10), 0)
        self.assert_spliced(p, 2 * self.N)


class Engine(LBTestCase):
    def start(self, engine):
        """Starts the proxy with an explicit engine; (proxy, log) or skips
        when io_uring is refused here."""
        b = self.backend("e-" + engine, "cluster1")
        p = self.proxy(routes={"/cluster1": [b]}, engine=engine, wait=False)
        try:
            wait_port(p.port, p.proc)
        except RuntimeError as e:
            log = p.log()
            if engine == "uring" and "io_uring" in log:
                self.skipTest("io_uring unavailable: %s" % log[-500:])
            self.fail("%s\n--- log ---\n%s" % (e, log[-2000:]))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        deadline = time.monotonic() + 3
        log = p.log()
        while "engine " not in log and time.monotonic() < deadline:
            time.sleep(0.05)
            log = p.log()
        return p, log

    def test_engine_epoll(self):
        _, log = self.start("epoll")
        self.assertRegex(log, r"engine epoll\b")
        self.assertNotRegex(log, r"engine uring\b")

    def test_engine_uring(self):
        _, log = self.start("uring")
        if re.search(r"io_uring.*(unavailable|refused|not available|disabled|falling back)",
                     log, re.I) and "engine uring" not in log:
            self.skipTest("io_uring unavailable: %s" % log[-500:])
        self.assertRegex(log, r"engine uring\b")
        self.assertNotRegex(log, r"engine epoll\b")

    def test_engine_auto(self):
        _, log = self.start("auto")
        m = re.findall(r"engine (uring|epoll)\b", log)
        self.assertTrue(m, "the start-up log does not name the chosen engine:\n%s" % log[-2000:])
        self.assertEqual(len(set(m)), 1, m)
        if m[0] == "epoll":
            # Falling back: one line saying why io_uring could not be used.
            self.assertIn("io_uring", log, "auto chose epoll without saying why")


if __name__ == "__main__":
    unittest.main()
