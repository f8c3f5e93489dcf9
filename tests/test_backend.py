"""The backend alone, against its contract (DESIGN.md, "backend"): every
endpoint, the environment defaults, keep-alive, its log, its flags and its
static linking. Runs once (not per engine)."""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from lbtest import (post_chunked, BACKEND_BIN, SANITIZE, HTTPReader, Process, SharedLBTestCase, connect, first_difference,
                    free_port, get, pattern, request_log, wait_port, wait_until, ws_accept_for,
                    ws_connect, ws_frame, ws_read_message)


@contextlib.contextmanager
def environ(**env):
    """Sets (value str) or removes (value None) environment variables for the
    processes started inside the block."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class BackendCase(SharedLBTestCase):
    """Fails a test whose backend crashed or logged a sanitizer report."""


class Endpoints(BackendCase):
    def setUp(self):
        super().setUp()
        self.b = self.backend("b-7", "clusterX")

    def test_health(self):
        st, h, body = get(self.b.port, "/health")
        self.assertEqual(st, 200)
        self.assertIn("json", h.get("content-type", ""))
        j = json.loads(body)
        self.assertEqual(j["status"], "ok")
        self.assertEqual(j["instance_id"], "b-7")
        self.assertEqual(j["cluster"], "clusterX")

    def test_default_reply(self):
        for path in ("/", "/anything/else", "/x?y=1"):
            st, h, body = get(self.b.port, path)
            self.assertEqual(st, 200, path)
            j = json.loads(body)
            self.assertEqual(j["message"], "Instance b-7 from clusterX has received the request")
            self.assertEqual(j["instance_id"], "b-7")
            self.assertEqual(j["cluster"], "clusterX")
            self.assertTrue(path.startswith(j["path"]), (path, j["path"]))
        st, _, body = get(self.b.port, "/some/path")
        self.assertEqual(json.loads(body)["path"], "/some/path")
        st, _, body = get(self.b.port, "/p", method="DELETE")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["path"], "/p")

    def test_instance_header(self):
        for path in ("/", "/health", "/bytes/3", "/status/404"):
            st, h, _ = get(self.b.port, path)
            self.assertEqual(h.get("x-instance-id"), "b-7", path)

    def test_bytes_exact(self):
        for n in (0, 1, 250, 251, 252, 65536, 1000003, 10 << 20):
            st, h, body = get(self.b.port, "/bytes/%d" % n)
            self.assertEqual(st, 200, n)
            self.assertEqual(h.get("content-length"), str(n))
            self.assertEqual(len(body), n)
            self.assertIsNone(first_difference(body, pattern(n)), "/bytes/%d" % n)

    def test_bytes_chunked(self):
        for n in (0, 1, 1000, 251 * 1024 + 7, 3 << 20):
            s, rd = connect(self.b.port)
            with s:
                s.sendall(b"GET /bytes/%d?chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                r = rd.read_response()
            self.assertEqual(r.status, 200, n)
            self.assertTrue(r.chunked, "no Transfer-Encoding: chunked for n=%d: %r"
                            % (n, r.header_list))
            self.assertNotIn("content-length", r.headers)
            self.assertEqual(len(r.body), n)
            self.assertIsNone(first_difference(r.body, pattern(n)), "chunked n=%d" % n)

    def slow_get(self, raw_request, method="GET"):
        """One request read by a slow client with a small receive buffer, so
        that the backend meets partial writes and must resume where it was."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", self.b.port))
        rd = HTTPReader(s, chunk=7000)
        fill = rd._fill
        rd._fill = lambda: (time.sleep(0.0003), fill())
        with s:
            threading.Thread(target=s.sendall, args=(raw_request,), daemon=True).start()
            return rd.read_response(method)

    def test_slow_reader(self):
        n = 1 << 20
        for chunked in (b"", b"?chunked=1"):
            r = self.slow_get(b"GET /bytes/%d%s HTTP/1.1\r\nHost: x\r\n\r\n" % (n, chunked))
            self.assertEqual(r.status, 200)
            diff = first_difference(r.body, pattern(n))
            if diff:
                self.fail("/bytes/%d%s read slowly: %s" % (n, chunked.decode(), diff))
        body = os.urandom(n)
        r = self.slow_get(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n
                          + body)
        self.assertEqual(r.status, 200)
        self.assertIsNone(first_difference(r.body, body), "/echo read slowly")

    def test_echo_post_put(self):
        for method in ("POST", "PUT"):
            for body in (b"", b"x", os.urandom(100000), os.urandom(5 << 20)):
                st, h, got = get(self.b.port, "/echo", method=method, body=body)
                self.assertEqual(st, 200, (method, len(body)))
                self.assertEqual(len(got), len(body))
                self.assertIsNone(first_difference(got, body), "%s /echo" % method)

    def test_echo_chunked_request(self):
        parts = [b"hello ", os.urandom(70000), b"", b"!", os.urandom(3)]
        st, got = post_chunked(self.b.port, "/echo", parts)
        self.assertEqual(st, 200)
        self.assertIsNone(first_difference(got, b"".join(parts)))

    def test_echo_chunked_raw_then_keepalive(self):
        s, rd = connect(self.b.port)
        with s:
            s.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n"
                      b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            r1 = rd.read_response()
            r2 = rd.read_response()
        self.assertEqual((r1.status, r1.body), (200, b"abc0123456789"))
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.json()["status"], "ok")

    def test_loose_chunk_framing_refused(self):
        # llhttp runs strict in the backend too: a CR followed by another byte
        # in a chunk-size line, or chunk data followed by other than CRLF,
        # never frames a second request (it would in llhttp's loose mode):
        # the connection ends (a 400 first when no reply has begun) and the
        # GET after it is never answered.
        for body in (b"3\rX\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n"):
            s, rd = connect(self.b.port)
            with s:
                s.sendall(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + body + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                got = rd.read_to_eof()
            self.assertLessEqual(got.count(b"HTTP/1.1 "), 1, got)
            self.assertNotIn(b'"status":"ok"', got)
            if got.startswith(b"HTTP/1.1 ") and b"Transfer-Encoding" not in got:
                self.assertTrue(got.startswith(b"HTTP/1.1 400"), got)

    def test_status_code(self):
        for code in (418, 200, 404, 503):
            st, h, _ = get(self.b.port, "/status/%d" % code)
            self.assertEqual(st, code)

    def test_delay(self):
        t0 = time.monotonic()
        st, _, _ = get(self.b.port, "/delay/200")
        dt = time.monotonic() - t0
        self.assertEqual(st, 200)
        self.assertGreaterEqual(dt, 0.2)
        self.assertLess(dt, 2.0)

    def test_head_has_no_body(self):
        # HEAD then GET on one connection: if HEAD sent a body, the second
        # response would not start where the first head ends.
        s, rd = connect(self.b.port)
        with s:
            s.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            r1 = rd.read_response("HEAD")
            r2 = rd.read_response("HEAD")
            r3 = rd.read_response()
        self.assertEqual(r1.status, 200)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.headers.get("content-length"), "1000")
        self.assertEqual(r3.status, 200)
        self.assertEqual(r3.json()["instance_id"], "b-7")

    def test_endpoints_under_cluster_prefix(self):
        # The proxy forwards /cluster1/echo unchanged: the backend answers its
        # endpoints under a leading cluster segment too.
        st, _, body = get(self.b.port, "/clusterX/bytes/1000")
        self.assertEqual(st, 200)
        self.assertTrue(body == pattern(1000))
        st, _, body = get(self.b.port, "/clusterX/echo", method="POST", body=b"abc")
        self.assertEqual((st, body), (200, b"abc"))
        st, _, _ = get(self.b.port, "/clusterX/status/418")
        self.assertEqual(st, 418)

    def test_http10(self):
        s, rd = connect(self.b.port)
        with s:
            s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            r = rd.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["status"], "ok")

    def test_websocket_echo(self):
        s, rd, r, key = ws_connect(self.b.port, "/ws")
        with s:
            self.assertEqual(r.status, 101, r.header_list)
            self.assertEqual(r.headers.get("sec-websocket-accept"), ws_accept_for(key))
            s.sendall(ws_frame(1, b"hello"))
            self.assertEqual(ws_read_message(rd), (1, b"hello"))
            data = os.urandom(200000)
            s.sendall(ws_frame(2, data))
            self.assertEqual(ws_read_message(rd), (2, data))
            s.sendall(ws_frame(9, b"p"))
            self.assertEqual(ws_read_message(rd), (10, b"p"))
            s.sendall(ws_frame(8, b"\x03\xe8"))
            op, _ = ws_read_message(rd)
            self.assertEqual(op, 8)


class Timers(BackendCase):
    def test_delay_does_not_block_thread(self):
        # One thread: two /delay/500 and a /health at once finish together
        # (the delay is a timer, not a blocked thread).
        b = self.backend("t1", "c", threads=1)
        results = {}

        def req(name, path):
            t0 = time.monotonic()
            results[name] = (get(b.port, path, timeout=10)[0], time.monotonic() - t0)

        ts = [threading.Thread(target=req, args=("d1", "/delay/500")),
              threading.Thread(target=req, args=("d2", "/delay/500"))]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        time.sleep(0.05)
        req("h", "/health")
        for t in ts:
            t.join(10)
        total = time.monotonic() - t0
        self.assertEqual(results["d1"][0], 200)
        self.assertEqual(results["d2"][0], 200)
        self.assertLess(results["h"][1], 0.3, "/health waited behind a /delay")
        self.assertLess(total, 0.95, "two /delay/500 on one thread took %.2fs" % total)

    def test_delay_ms_flag(self):
        b = self.backend("t2", "c", args=["--delay-ms", "150"])
        t0 = time.monotonic()
        st, _, _ = get(b.port, "/")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.15)

    def test_work_us_flag(self):
        b = self.backend("t3", "c", args=["--work-us", "30000"])
        get(b.port, "/")  # warm up
        t0 = time.monotonic()
        st, _, _ = get(b.port, "/")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.024)


class Modes(BackendCase):
    """--health-flip (a flapping instance) and slow mode (SIGUSR2)."""

    def test_health_flip_alternates(self):
        b = self.backend("hf1", "c", args=["--health-flip"])
        # Keep-alive and new connections, both threads: one process-wide count.
        got = [get(b.port, "/health")[0] for _ in range(6)]
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
        try:
            for _ in range(6):
                c.request("GET", "/cluster1/health")
                r = c.getresponse()
                r.read()
                got.append(r.status)
        finally:
            c.close()
        self.assertEqual(got, [200, 503] * 6)
        # Other endpoints are not affected and do not advance the count.
        self.assertEqual(get(b.port, "/x")[0], 200)
        self.assertEqual(get(b.port, "/health")[0], 200)

    def test_health_without_flip_stays_200(self):
        b = self.backend("hf2", "c")
        self.assertEqual([get(b.port, "/health")[0] for _ in range(4)], [200] * 4)

    def timed_get(self, port, path="/x"):
        t0 = time.monotonic()
        st = get(port, path)[0]
        return st, time.monotonic() - t0

    def wait_logged(self, b, text, count):
        return wait_until(lambda: b.log().count(text) >= count, 5)

    def test_sigusr2_toggles_slow_mode(self):
        b = self.backend("sl1", "c", threads=1)
        st, dt = self.timed_get(b.port)
        self.assertEqual(st, 200)
        self.assertLess(dt, 0.045, "fast before SIGUSR2")
        b.signal(signal.SIGUSR2)
        self.assertTrue(self.wait_logged(b, "slow mode on", 1), b.log()[-2000:])
        for path in ("/x", "/health", "/cluster1/x"):
            st, dt = self.timed_get(b.port, path)
            self.assertEqual(st, 200, path)
            self.assertGreaterEqual(dt, 0.05, "%s in slow mode took %.3fs" % (path, dt))
        b.signal(signal.SIGUSR2)
        self.assertTrue(self.wait_logged(b, "slow mode off", 1), b.log()[-2000:])
        times = [self.timed_get(b.port)[1] for _ in range(3)]
        self.assertLess(min(times), 0.045, "still slow after the second SIGUSR2: %r" % times)
        # It still stops cleanly on SIGTERM.
        self.assertEqual(b.stop(), 0, b.log()[-2000:])

    def test_slow_ms_flag_and_timer(self):
        # --slow-ms sets the delay; it is a timer: on one thread, concurrent
        # requests in slow mode overlap rather than queue.
        b = self.backend("sl2", "c", threads=1, args=["--slow-ms", "200"])
        b.signal(signal.SIGUSR2)
        self.assertTrue(self.wait_logged(b, "slow mode on", 1), b.log()[-2000:])
        results = []
        ts = [threading.Thread(target=lambda: results.append(self.timed_get(b.port)))
              for _ in range(4)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        total = time.monotonic() - t0
        self.assertEqual(sorted(r[0] for r in results), [200] * 4)
        self.assertGreaterEqual(min(r[1] for r in results), 0.2)
        self.assertLess(total, 0.6, "four slow replies on one thread took %.2fs" % total)

    def test_signal_storm_keeps_serving(self):
        # Many SIGUSR2 (an even number: ends off), requests in between. Each
        # waits for the last to be logged: pending signals of one kind merge.
        b = self.backend("sl3", "c")
        for i in range(20):
            b.signal(signal.SIGUSR2)
            self.assertTrue(self.wait_logged(b, "slow mode", i + 1), b.log()[-2000:])
            self.assertEqual(get(b.port, "/x")[0], 200)
        self.assertEqual(b.log().count("slow mode off"), 10)
        st, dt = self.timed_get(b.port)
        self.assertEqual(st, 200)
        self.assertLess(dt, 0.045)


    def test_fail_status_and_sigusr1(self):
        # --fail-status: all but GET /health answered at once (no --delay-ms),
        # a body read and dropped (keep-alive goes on); SIGUSR1 toggles it.
        b = self.backend("fs1", "c", threads=1, args=["--fail-status", "500", "--delay-ms", "200"])
        for path in ("/x", "/cluster1/x", "/status/200", "/delay/10", "/bytes/100"):
            st, dt = self.timed_get(b.port, path)
            self.assertEqual(st, 500, path)
            self.assertLess(dt, 0.15, "%s in fail mode took %.3fs: not at once" % (path, dt))
        st, h, body = get(b.port, "/x")
        j = json.loads(body)
        self.assertEqual((j["status"], j["instance_id"]), (500, "fs1"), body)
        self.assertEqual(h.get("x-instance-id"), "fs1")
        for path in ("/health", "/cluster1/health"):
            st, dt = self.timed_get(b.port, path)
            self.assertEqual(st, 200, path)
            self.assertGreaterEqual(dt, 0.2, "%s is not touched by fail mode: --delay-ms" % path)
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
        try:
            for method, path, body in (("POST", "/echo", b"x" * 100000), ("GET", "/x", None),
                                       ("PUT", "/echo", b"abc"), ("GET", "/health", None)):
                c.request(method, path, body=body)
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200 if path == "/health" else 500, (method, path))
                self.assertFalse(r.will_close, (method, path))
        finally:
            c.close()
        self.assertTrue(wait_until(lambda: any(l[4] == "/echo" and l[5] == "500"
                                               for l in request_log(b)), 5), b.log()[-2000:])
        b.signal(signal.SIGUSR1)
        self.assertTrue(self.wait_logged(b, "fail mode off", 1), b.log()[-2000:])
        st, dt = self.timed_get(b.port)
        self.assertEqual(st, 200)
        self.assertGreaterEqual(dt, 0.2, "--delay-ms again once fail mode is off")
        self.assertEqual(get(b.port, "/status/418")[0], 418)
        b.signal(signal.SIGUSR1)
        self.assertTrue(self.wait_logged(b, "fail mode on", 1), b.log()[-2000:])
        self.assertEqual(get(b.port, "/x")[0], 500)
        self.assertEqual(b.stop(), 0, b.log()[-2000:])

    def test_fail_mode_signal_storm(self):
        # Like SIGUSR2's: 20 SIGUSR1 (ends on, as it started), each logged;
        # slow mode is independent of it.
        b = self.backend("fs2", "c", args=["--fail-status", "503"])
        for i in range(20):
            b.signal(signal.SIGUSR1)
            self.assertTrue(self.wait_logged(b, "fail mode", i + 1), b.log()[-2000:])
            self.assertEqual(get(b.port, "/x")[0], 200 if i % 2 == 0 else 503)
        self.assertEqual(b.log().count("fail mode off"), 10)
        b.signal(signal.SIGUSR2)
        self.assertTrue(self.wait_logged(b, "slow mode on", 1), b.log()[-2000:])
        st, dt = self.timed_get(b.port)
        self.assertEqual(st, 503)
        self.assertLess(dt, 0.045, "fail mode answers at once, slow mode or not")
        self.assertEqual(b.stop(), 0, b.log()[-2000:])

    def test_sigusr1_without_fail_status(self):
        b = self.backend("fs3", "c")
        b.signal(signal.SIGUSR1)
        self.assertTrue(self.wait_logged(b, "SIGUSR1: no --fail-status, ignored", 1),
                        b.log()[-2000:])
        self.assertEqual(get(b.port, "/x")[0], 200)
        self.assertNotIn("fail mode", b.log())
        self.assertEqual(b.stop(), 0, b.log()[-2000:])


class Environment(BackendCase):
    def start_plain(self, args=()):
        port = free_port()
        p = Process([BACKEND_BIN, "--host", "127.0.0.1", "--port", str(port)] + list(args),
                    "backend-env")
        self._procs.append(p)
        wait_port(port, p.proc)
        return port

    def test_env_defaults(self):
        with environ(INSTANCE_ID="env-3", CLUSTER_NAME="envcluster"):
            port = self.start_plain()
        j = json.loads(get(port, "/health")[2])
        self.assertEqual((j["instance_id"], j["cluster"]), ("env-3", "envcluster"))
        j = json.loads(get(port, "/")[2])
        self.assertEqual(j["message"], "Instance env-3 from envcluster has received the request")

    def test_flags_override_env(self):
        with environ(INSTANCE_ID="env-3", CLUSTER_NAME="envcluster"):
            port = self.start_plain(["--instance-id", "flag-1", "--cluster", "flagc"])
        j = json.loads(get(port, "/health")[2])
        self.assertEqual((j["instance_id"], j["cluster"]), ("flag-1", "flagc"))


class Logging(BackendCase):
    def test_keepalive_one_connection(self):
        b = self.backend("k1", "ck")
        # The harness's readiness probe (connect, close) was one connection.
        wait_until(b.connections_accepted, 2)
        time.sleep(0.1)
        base = b.connections_accepted()
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
        try:
            for path in ("/ka/one", "/ka/two"):
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertFalse(r.will_close)
        finally:
            c.close()
        def ka_lines():
            ls = [l for l in request_log(b) if l[4].startswith("/ka/")]
            return ls if len(ls) >= 2 else None

        lines = wait_until(ka_lines, 5)
        self.assertTrue(lines, b.log()[-2000:])
        self.assertEqual(b.connections_accepted() - base, 1, b.log()[-2000:])
        self.assertEqual(len({l[2] for l in lines}), 1, lines)

    def test_request_line_format(self):
        b = self.backend("f1", "cf")
        get(b.port, "/fmt/x?q=1")
        get(b.port, "/bytes/1234")
        get(b.port, "/status/418")
        get(b.port, "/echo", method="POST", body=b"12345")

        def lines():
            ls = request_log(b)
            return ls if len(ls) >= 4 else None

        ls = wait_until(lines, 5)
        self.assertTrue(ls, "request lines not in the expected format:\n" + b.log()[-2000:])
        by_path = {l[4].split("?")[0]: l for l in ls}
        inst, cl, conn, method, path, status, nbytes, us = by_path["/fmt/x"]
        self.assertEqual((inst, cl, method, status), ("f1", "cf", "GET", "200"))
        _, _, _, method, _, status, nbytes, _ = by_path["/bytes/1234"]
        self.assertEqual((method, status), ("GET", "200"))
        self.assertGreaterEqual(int(nbytes), 1234)
        _, _, _, method, _, status, _, _ = by_path["/status/418"]
        self.assertEqual((method, status), ("GET", "418"))
        _, _, _, method, _, status, nbytes, _ = by_path["/echo"]
        self.assertEqual((method, status), ("POST", "200"))
        self.assertEqual(len({l[2] for l in ls}), 4, "each get() is a new connection: %r" % ls)
        full = [l for l in b.log().splitlines() if "/fmt/x" in l][0]
        self.assertRegex(full, r"instance=f1 cluster=cf conn=\d+ GET /fmt/x\S* 200 \d+B \d+us")

    def test_quiet(self):
        b = self.backend("q1", "cq", args=["--quiet"])
        for path in ("/", "/health", "/bytes/10"):
            self.assertEqual(get(b.port, path)[0], 200)
        time.sleep(0.3)
        self.assertEqual(request_log(b), [], b.log()[-2000:])
        self.assertNotIn("/bytes/10", b.log())


class Flags(unittest.TestCase):
    def run_backend(self, *args):
        p = subprocess.run([BACKEND_BIN] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_unknown_flag(self):
        rc, out = self.run_backend("--no-such-flag")
        self.assertEqual(rc, 2, out)
        self.assertIn("--no-such-flag", out)

    def test_bad_port(self):
        rc, out = self.run_backend("--port", "notaport")
        self.assertEqual(rc, 2, out)
        self.assertIn("--port", out)

    def test_flag_values(self):
        rc, out = self.run_backend("--slow-ms", "-1")
        self.assertEqual(rc, 2, out)
        self.assertIn("--slow-ms", out)
        rc, out = self.run_backend("--health-flip=1")
        self.assertEqual(rc, 2, out)
        self.assertIn("--health-flip", out)
        rc, out = self.run_backend("--help")
        self.assertEqual(rc, 0, out)
        for word in ("--health-flip", "--slow-ms", "SIGUSR2", "--fail-status", "SIGUSR1"):
            self.assertIn(word, out)
        for bad in ("200", "600", "x"):
            rc, out = self.run_backend("--fail-status", bad)
            self.assertEqual(rc, 2, out)
            self.assertIn("--fail-status", out)

    def test_missing_value(self):
        rc, out = self.run_backend("--threads")
        self.assertEqual(rc, 2, out)
        self.assertIn("--threads", out)

    def test_statically_linked(self):
        if SANITIZE:
            self.skipTest("the sanitizer build links dynamically")
        f = subprocess.run(["file", "-L", BACKEND_BIN], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10).stdout.decode(errors="replace")
        ldd = subprocess.run(["ldd", BACKEND_BIN], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=10).stdout.decode(errors="replace")
        static = "ELF" in f and ("statically linked" in f or "static-pie linked" in f
                                 or "not a dynamic executable" in ldd
                                 or "statically linked" in ldd)
        self.assertTrue(static, "backend is not static:\nfile: %s\nldd: %s" % (f, ldd))


if __name__ == "__main__":
    unittest.main()
