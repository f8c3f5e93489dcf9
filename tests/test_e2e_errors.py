"""End-to-end error handling of the proxy: malformed and smuggling requests,
limits, client and backend timeouts, failing backends, the default response,
and retries on dead pooled connections. Runs once per engine (LB_ENGINE)."""

import http.client
import re
import socket
import threading
import time
import unittest

from lbtest import wait_routable, LBTestCase, free_port, get, status_of

# --------------------------------------------------------------------------
# local helpers




def exchange(port, data, timeout=5.0, pause_after=None, more=None):
    """Sends raw bytes (and, after `pause_after` seconds, `more`), then reads
    until the peer closes or `timeout` passes. Returns (bytes, closed,
    elapsed_s) where closed is True when the peer closed (EOF or reset) and
    elapsed_s is the time from the first send to the close (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    chunks = []
    closed = False
    try:
        try:
            s.sendall(data)
            if more is not None:
                time.sleep(pause_after or 0)
                s.sendall(more)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer and close before it read everything
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            chunks.append(b)
        return b"".join(chunks), closed, time.monotonic() - t0
    finally:
        s.close()


def split_response(resp):
    """(status, headers dict lower-case, body) of the first response in raw
    bytes; body is whatever followed the head."""
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return status_of(resp), {}, b""
    lines = head.split(b"\r\n")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return status_of(resp), headers, body


def read_head(conn, limit=65536):
    """Reads one request head from a socket; None when the peer closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > limit:
            return None
        try:
            b = conn.recv(4096)
        except OSError:
            return None
        if not b:
            return None
        buf += b
    return buf


class ScriptServer:
    """A small TCP server on 127.0.0.1 run by a Python thread: every accepted
    connection is handed to handler(conn) in its own daemon thread. Stopped
    (sockets closed, threads joined with a bound) by stop()."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.stopping = threading.Event()
        self.conns = []
        self.threads = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=2)
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in threads:
            t.join(timeout=2)


def request_path(head):
    """The path (without query) of a request head's request line."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""


def answer_health(conn, head):
    """Answers a health probe (a path ending in /health) with a 200 that
    closes; True when head was one."""
    if not request_path(head).endswith(b"/health"):
        return False
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    return True


def health_or(misbehave):
    """A ScriptServer handler: health probes (a path ending in /health, as
    the proxy's checks and wait_routable() send) get a proper 200 and a
    close, so the backend counts as healthy whatever the proxy's policy;
    any other request goes to misbehave(conn, head)."""

    def handler(conn):
        head = read_head(conn)
        if head is None:
            return
        if answer_health(conn, head):
            conn.close()
            return
        misbehave(conn, head)

    return handler


def hc_quiet():
    """A health check that probes rarely and tolerates failures, so that the
    probes of a misbehaving test server do not change what a request gets."""
    return {"path": "/health", "interval_ms": 60000, "timeout_ms": 500,
            "healthy_threshold": 1, "unhealthy_threshold": 10,
            "expect_status": "200-399"}


def cluster(prefix, backends, retries=1, quiet_hc=False):
    c = {"name": prefix.strip("/").replace("/", "_") or "root", "path_prefix": prefix,
         "backends": [b if isinstance(b, str) else b.addr for b in backends],
         "retries": retries}
    if quiet_hc:
        c["health_check"] = hc_quiet()
    return c


def config(clusters, **timeouts):
    t = {"connect": 500, "client_header": 1000, "idle": 5000,
         "backend_response": 1000, "drain": 3000}
    t.update(timeouts)
    return {"timeouts_ms": t, "clusters": clusters}


def backend_requests(b):
    """Request lines a Backend logged, other than health probes."""
    return [l for l in b.requests_logged()
            if "/health" not in l and "accepted conn=" not in l]


# --------------------------------------------------------------------------


class MalformedRequests(LBTestCase):
    """Each request is sent on a raw socket to a proxy routing /cluster1 to a
    real backend: the proxy answers 400 (the connection closed) and the
    backend sees nothing."""

    def setUp(self):
        super().setUp()
        self.b = self.backend("m1", "cluster1")
        self.p = self.proxy(routes={"/cluster1": [self.b]})
        self.assertEqual(wait_routable(self.p.port), 200, "cluster1 never became routable")

    def assert_rejected(self, data, codes=(400,), backend_sees_nothing=True):
        resp, closed, elapsed = exchange(self.p.port, data, timeout=4.0)
        st = status_of(resp)
        self.assertIn(st, codes, "sent %r: expected %s, got status %r (%r)"
                      % (data[:200], codes, st, resp[:200]))
        self.assertTrue(closed, "sent %r: got %s but the proxy kept the connection open"
                        % (data[:200], st))
        self.assertLess(elapsed, 3.0)
        if backend_sees_nothing:
            time.sleep(0.2)
            seen = backend_requests(self.b)
            self.assertEqual(seen, [], "sent %r: the backend logged %r" % (data[:200], seen))
        return resp

    def test_control_valid_request_reaches_backend(self):
        # Control: the same setup with a valid request gives 200, and the
        # backend's log shows it (so "backend saw nothing" is meaningful).
        resp, _, _ = exchange(self.p.port, b"GET /cluster1/control HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n", timeout=4.0)
        self.assertEqual(status_of(resp), 200, resp[:300])
        deadline = time.monotonic() + 2
        while not backend_requests(self.b) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(backend_requests(self.b), self.b.log()[-2000:])

    def test_control_http10_without_host_accepted(self):
        # Host is required of HTTP/1.1 only.
        resp, closed, _ = exchange(self.p.port, b"GET /cluster1/h10 HTTP/1.0\r\n\r\n",
                                   timeout=4.0)
        self.assertEqual(status_of(resp), 200, resp[:300])
        self.assertTrue(closed, "HTTP/1.0 without keep-alive: the connection stays open")

    def test_cl_and_te_chunked(self):
        self.assert_rejected(b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    def test_te_chunked_and_cl(self):
        self.assert_rejected(b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n")

    def test_two_different_content_lengths(self):
        self.assert_rejected(b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Content-Length: 6\r\n\r\nhello!")

    def test_te_chunked_not_last(self):
        self.assert_rejected(b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    def test_obs_fold(self):
        self.assert_rejected(b"GET /cluster1/fold HTTP/1.1\r\nHost: x\r\nX-A: one\r\n"
                             b" two\r\n\r\n")

    def test_space_before_colon(self):
        self.assert_rejected(b"GET /cluster1/space HTTP/1.1\r\nHost : x\r\n\r\n")

    def test_bare_lf_garbage_method(self):
        self.assert_rejected(b"G@RBAGE /cluster1/lf HTTP/1.1\nHost: x\n\n")

    def test_bare_lf_line_endings(self):
        self.assert_rejected(b"GET /cluster1/lf HTTP/1.1\nHost: x\n\n")

    def test_http11_without_host(self):
        self.assert_rejected(b"GET /cluster1/nohost HTTP/1.1\r\nX-A: b\r\n\r\n")

    def test_two_host_headers(self):
        self.assert_rejected(b"GET /cluster1/twohost HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_http2_version(self):
        self.assert_rejected(b"GET /cluster1/v2 HTTP/2.0\r\nHost: x\r\n\r\n", codes=(400, 505))

    def test_nul_in_header_value(self):
        self.assert_rejected(b"GET /cluster1/nul HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")

    def test_invalid_chunk_size_same_packet(self):
        # The head is valid, the body framing is not: the head may already
        # have been forwarded (and the backend's answer begun); the
        # connection is closed either way.
        resp, closed, elapsed = exchange(
            self.p.port, b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", timeout=4.0)
        self.assert_bad_body_outcome(resp, closed)
        self.assertLess(elapsed, 3.5)

    def test_invalid_chunk_size_after_head(self):
        resp, closed, elapsed = exchange(
            self.p.port, b"POST /cluster1/echo HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n", pause_after=0.3,
            more=b"zz\r\nhello\r\n0\r\n\r\n", timeout=4.0)
        self.assert_bad_body_outcome(resp, closed)
        self.assertLess(elapsed, 3.5)

    def assert_bad_body_outcome(self, resp, closed):
        """After bad body framing the connection is closed; the client got a
        400 or 502 or, when the backend had already started its response
        (the echo streams), that response cut short (never complete)."""
        self.assertTrue(closed, "the proxy kept the connection open after bad chunk framing "
                        "(got %r)" % resp[:300])
        st, hdrs, body = split_response(resp)
        if st in (400, 502):
            return
        self.assertIsNotNone(st, "no response and no status: %r" % resp[:300])
        self.assertTrue(200 <= st < 300, "unexpected status %r: %r" % (st, resp[:300]))
        if "chunked" in hdrs.get("transfer-encoding", "").lower():
            self.assertFalse(body.endswith(b"0\r\n\r\n"),
                             "a complete response after bad request framing: %r" % resp[:300])
        else:
            self.assertIn("content-length", hdrs, resp[:300])
            self.assertLess(len(body), int(hdrs["content-length"]),
                            "a complete response after bad request framing: %r" % resp[:300])


class Limits(LBTestCase):
    def setUp(self):
        super().setUp()
        self.b = self.backend("l1", "cluster1")
        self.p = self.proxy(routes={"/cluster1": [self.b]})
        self.assertEqual(wait_routable(self.p.port), 200, "cluster1 never became routable")

    def test_head_over_max_header_bytes(self):
        data = (b"GET /cluster1/big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        resp, closed, _ = exchange(self.p.port, data, timeout=4.0)
        self.assertEqual(status_of(resp), 431, resp[:300])
        self.assertTrue(closed)
        time.sleep(0.2)
        self.assertEqual(backend_requests(self.b), [])

    def test_too_many_headers(self):
        hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        data = b"GET /cluster1/many HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n"
        self.assertLess(len(data), 16384)
        resp, closed, _ = exchange(self.p.port, data, timeout=4.0)
        self.assertEqual(status_of(resp), 431, resp[:300])
        self.assertTrue(closed)
        time.sleep(0.2)
        self.assertEqual(backend_requests(self.b), [])

    def test_headers_under_limits_pass(self):
        hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(50))
        data = (b"GET /cluster1/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + hdrs
                + b"X-Pad: " + b"p" * 8000 + b"\r\n\r\n")
        resp, _, _ = exchange(self.p.port, data, timeout=4.0)
        self.assertEqual(status_of(resp), 200, resp[:300])


class ClientTimeouts(LBTestCase):
    def test_slow_head_gets_408(self):
        b = self.backend("t1", "cluster1")
        p = self.proxy(config=config([cluster("/cluster1", [b])], client_header=1000))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        resp, closed, elapsed = exchange(p.port, b"GET /cluster1 HTTP/1.1\r\nHost: x\r\n",
                                         timeout=5.0)
        self.assertEqual(status_of(resp), 408, "got %r after %.2fs" % (resp[:200], elapsed))
        self.assertTrue(closed, "connection not closed after the 408")
        self.assertGreater(elapsed, 0.7)
        self.assertLess(elapsed, 3.0)
        time.sleep(0.2)
        self.assertEqual(backend_requests(b), [])

    def test_idle_keepalive_closed(self):
        b = self.backend("t2", "cluster1")
        p = self.proxy(config=config([cluster("/cluster1", [b])], idle=1000, client_header=4000))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        try:
            # One request on a keep-alive connection, then nothing.
            s.sendall(b"GET /cluster1/first HTTP/1.1\r\nHost: x\r\n\r\n")
            c_resp = http.client.HTTPResponse(s)
            c_resp.begin()
            body = c_resp.read()
            c_resp.close()
            self.assertEqual(c_resp.status, 200)
            self.assertTrue(body)
            t0 = time.monotonic()
            s.settimeout(5)
            try:
                extra = s.recv(65536)
            except ConnectionResetError:
                extra = b""
            except socket.timeout:
                self.fail("idle keep-alive connection still open after 5s (idle=1000ms)")
            elapsed = time.monotonic() - t0
            self.assertEqual(extra, b"", "the proxy sent bytes on an idle connection: %r"
                             % extra[:200])
            self.assertGreater(elapsed, 0.7)
            self.assertLess(elapsed, 3.0)
        finally:
            s.close()

    def test_idle_connection_without_request_closed(self):
        b = self.backend("t3", "cluster1")
        p = self.proxy(config=config([cluster("/cluster1", [b])], idle=1000, client_header=1000))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        resp, closed, elapsed = exchange(p.port, b"", timeout=5.0)
        self.assertTrue(closed, "a connection that never sent a byte is still open after 5s")
        self.assertLess(elapsed, 3.0)
        # No request started: nothing (or at most a 408) is sent.
        self.assertIn(status_of(resp) if resp else None, (None, 408), resp[:200])


class BackendFailures(LBTestCase):
    def script(self, handler):
        s = ScriptServer(handler)
        self.addCleanup(s.stop)
        return s

    def test_refused_backend_retried_on_another(self):
        b = self.backend("r1", "cluster1")
        closed_addr = "127.0.0.1:%d" % free_port()
        p = self.proxy(config=config([cluster("/cluster1", [closed_addr, b.addr], retries=1)]))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        for i in range(20):
            st, _, body = get(p.port, "/cluster1/r%d" % i, timeout=5)
            self.assertEqual(st, 200, "request %d: %r" % (i, body[:200]))

    def test_refused_backend_retried_route_flag(self):
        b = self.backend("r2", "cluster1")
        closed_addr = "127.0.0.1:%d" % free_port()
        p = self.proxy(routes={"/cluster1": [closed_addr, b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        for i in range(20):
            st, _, body = get(p.port, "/cluster1/r%d" % i, timeout=5)
            self.assertEqual(st, 200, "request %d: %r" % (i, body[:200]))

    def test_only_refused_backend(self):
        closed_addr = "127.0.0.1:%d" % free_port()
        p = self.proxy(config=config([cluster("/cluster1", [closed_addr])]))
        for i in range(3):
            t0 = time.monotonic()
            st, _, body = get(p.port, "/cluster1/x", timeout=5)
            elapsed = time.monotonic() - t0
            self.assertIn(st, (502, 503), body[:200])
            self.assertLess(elapsed, 2.0)

    def test_hanging_backend_504(self):
        def hang(conn, head):
            # Read the request, never answer; hold the socket until the test ends.
            while True:
                try:
                    if not conn.recv(4096):
                        return
                except socket.timeout:
                    continue

        srv = self.script(health_or(hang))
        p = self.proxy(config=config([cluster("/cluster1", [srv.addr], retries=0,
                                              quiet_hc=True)], backend_response=1000))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        t0 = time.monotonic()
        st, _, body = get(p.port, "/cluster1/hang", timeout=8)
        elapsed = time.monotonic() - t0
        self.assertEqual(st, 504, body[:200])
        self.assertGreater(elapsed, 0.7)
        self.assertLess(elapsed, 3.5)

    def test_garbage_backend_502(self):
        def garbage(conn, head):
            conn.sendall(b"HELLO\r\n\r\n")
            conn.close()

        srv = self.script(health_or(garbage))
        p = self.proxy(config=config([cluster("/cluster1", [srv.addr], retries=0,
                                              quiet_hc=True)]))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        t0 = time.monotonic()
        st, _, body = get(p.port, "/cluster1/garbage", timeout=5)
        self.assertEqual(st, 502, body[:200])
        self.assertLess(time.monotonic() - t0, 3.0)

    def truncating_proxy(self):
        """A proxy whose only backend announces 100 body bytes, sends 10 and
        closes."""
        def truncated(conn, head):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            conn.close()

        srv = self.script(health_or(truncated))
        p = self.proxy(config=config([cluster("/cluster1", [srv.addr], retries=0,
                                              quiet_hc=True)]))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        return p

    def test_backend_closes_mid_response(self):
        p = self.truncating_proxy()
        resp, closed, elapsed = exchange(p.port, b"GET /cluster1/trunc HTTP/1.1\r\nHost: x\r\n\r\n",
                                         timeout=6.0)
        self.assertTrue(closed, "client connection left open %.1fs after the backend closed "
                        "mid-response (got %r)" % (elapsed, resp[:200]))
        self.assertLess(elapsed, 4.0)
        st, hdrs, body = split_response(resp)
        if st == 200:
            self.assertLess(len(body), 100, "client got a complete body the backend never sent")
        else:
            self.assertIn(st, (502,), resp[:200])

    def test_backend_closes_mid_response_http_client(self):
        p = self.truncating_proxy()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=6)
        try:
            c.request("GET", "/cluster1/trunc2")
            r = c.getresponse()
            if r.status == 200:
                with self.assertRaises((http.client.IncompleteRead, ConnectionResetError)):
                    r.read()
            else:
                self.assertEqual(r.status, 502)
        finally:
            c.close()

    def test_dead_pooled_connection_retried(self):
        self.dead_pool(sleep=0.05)

    def test_dead_pooled_connection_retried_back_to_back(self):
        # No pause: the backend's FIN may not be seen yet when the proxy
        # reuses the connection; the send or read then fails and the GET
        # (idempotent, no body) is retried on a new connection.
        self.dead_pool(sleep=0, n=30)

    def dead_pool(self, sleep, n=10):
        served = []

        def one_shot(conn):
            # One response per connection, advertised keep-alive, then close
            # (a backend closing idle keep-alive connections).
            head = read_head(conn)
            if head is None:
                return
            served.append(head.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                         b"Connection: keep-alive\r\n\r\nok")
            conn.close()

        srv = self.script(one_shot)
        p = self.proxy(config=config([cluster("/cluster1", [srv.addr], retries=1,
                                              quiet_hc=True)]))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        try:
            for i in range(n):
                c.request("GET", "/cluster1/pool%d" % i)
                r = c.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, "request %d: %d %r" % (i, r.status, body[:200]))
                self.assertEqual(body, b"ok")
                if sleep:
                    time.sleep(sleep)
        finally:
            c.close()


class DefaultResponse(LBTestCase):
    def test_configured_default_response(self):
        b = self.backend("d1", "cluster1")
        cfg = config([cluster("/cluster1", [b])])
        cfg["default_response"] = {"status": 404, "content_type": "text/plain",
                                   "body": "nothing here\n"}
        p = self.proxy(config=cfg)
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        for path in ("/other", "/", "/cluster10", "/cluster10/x", "/clusterX?q=1"):
            st, hdrs, body = get(p.port, path, timeout=5)
            self.assertEqual(st, 404, path)
            self.assertEqual(body, b"nothing here\n", path)
            self.assertTrue(hdrs.get("content-type", "").startswith("text/plain"), hdrs)
        st, _, _ = get(p.port, "/cluster1/x", timeout=5)
        self.assertEqual(st, 200)
        time.sleep(0.2)
        logged = backend_requests(b)
        self.assertEqual(len(logged), 1, logged)

    def test_route_flag_default_response(self):
        b = self.backend("d2", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]})
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        st, hdrs, body = get(p.port, "/nope", timeout=5)
        self.assertEqual(st, 404)
        self.assertEqual(body, b"no route\n")
        # The default response keeps the connection usable (its framing is intact).
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        try:
            for path in ("/nope", "/cluster1/yes", "/nope2"):
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200 if path.startswith("/cluster1") else 404, path)
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
