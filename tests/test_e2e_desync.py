"""End-to-end tests of the proxy's request smuggling defence (DESIGN.md,
"Request smuggling defence (`desync_mitigation`)" and "Data path"): loose
chunk framing refused, trailers kept out of the head, chunked bodies
re-encoded canonically, an undeliverable body never parsed as requests, the
access log's path not forged by a body, absolute-form targets rewritten,
only WebSocket upgrades tunnelled, CONNECT refused, chunked responses
de-chunked for HTTP/1.0, bare LF refused, slow bodies cut, and the request
classes (compliant, acceptable, ambiguous, severe) under the three modes.

The backend is tests/rawbackend.py: it records the exact bytes the proxy
forwarded on each connection, so "nothing forwarded" and "what the backend
received" are checked on the wire. Runs once per engine (LB_ENGINE)."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from lbtest import (PROXY_BIN, desync_counts, read_access_log,
                    LBTestCase, SharedLBTestCase, connect, free_port,
                    status_of, wait_routable, wait_until)
from rawbackend import RawBackend
from test_e2e_errors import exchange, split_response

MODES = ("defensive", "strictest", "monitor")


# --------------------------------------------------------------------------
# helpers


def cluster(name, prefix, raw, strip=False):
    """A cluster on one RawBackend whose health checks stay out of the way
    (rare probes, failures tolerated)."""
    return {"name": name, "path_prefix": prefix, "strip_prefix": strip,
            "backends": [raw.addr], "retries": 0,
            "health_check": {"path": "/health", "interval_ms": 60000, "timeout_ms": 1000,
                             "healthy_threshold": 1, "unhealthy_threshold": 10,
                             "expect_status": "200-399"}}


def proxy_config(clusters, mode=None, **timeouts):
    t = {"connect": 1000, "client_header": 3000, "idle": 10000, "backend_response": 5000,
         "drain": 2000}
    t.update(timeouts)
    cfg = {"timeouts_ms": t, "clusters": clusters}
    # The default mode is left implicit: "defensive" is what a config without
    # the field gets.
    if mode is not None:
        cfg["desync_mitigation"] = mode
    return cfg


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def canonical_chunked(raw):
    """The data of a chunked body encoded canonically ("<hex size>CRLF
    <data>CRLF" chunks, no extensions, no leading zeros, no empty chunk but
    the last, "0CRLFCRLF" and no trailers); AssertionError saying why not."""
    pos, out = 0, bytearray()
    for _ in range(1 << 20):
        m = re.match(rb"(0|[1-9a-fA-F][0-9a-fA-F]*)\r\n", raw[pos:pos + 32])
        if not m:
            raise AssertionError("not a canonical chunk-size line at offset %d: %r"
                                 % (pos, raw[pos:pos + 40]))
        size = int(m.group(1), 16)
        pos += m.end()
        if size == 0:
            if raw[pos:] != b"\r\n":
                raise AssertionError("after the last chunk: %r (trailers or junk), not CRLF"
                                     % raw[pos:pos + 200])
            return bytes(out)
        out += raw[pos:pos + size]
        if raw[pos + size:pos + size + 2] != b"\r\n":
            raise AssertionError("chunk data at %d not followed by CRLF: %r"
                                 % (pos, raw[pos + size:pos + size + 20]))
        pos += size + 2
    raise AssertionError("too many chunks")






def closed_soon(sock, timeout=2.0):
    """True when the peer closes the socket (EOF or reset) within timeout
    without sending anything more; False on timeout; the bytes if it sent
    some."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(65536)
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return True if not b else b


def send_ignoring_close(sock, data):
    """sendall; False when the peer had closed (reset, broken pipe)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def loose_smuggle(smuggled_path, absorb=0):
    """Chunk data of a chunked body followed by two bytes other than CRLF
    ("hello" then "XX"): a parser that skips those two bytes (llhttp without
    strict mode) reads one body; RawBackend(parse="lenient"), which skips to
    the next CRLF, reads the body "hello" and then a second request,
    GET smuggled_path, whose Content-Length takes the 7 bytes of the outer
    framing that follow it plus `absorb` bytes of whatever comes next on the
    backend connection."""
    inner = (b"0\r\n\r\nGET " + smuggled_path + b" HTTP/1.1\r\nHost: x\r\n"
             b"Content-Length: %d\r\n\r\n" % (7 + absorb))
    return b"5\r\nhello" + b"XX" + b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"


# Hooks of the shared RawBackend, chosen by the path /cluster1/h/<name>/...


def hook_early401(req, conn):
    """Answers 401 right after the head and closes, body unread."""
    conn.respond(401, b"denied\n", reason="Unauthorized")
    conn.close(linger=0.3)
    return "close"


def hook_h101(req, conn):
    """Answers 101 (h2c) whatever was asked, then sends tunnel bytes."""
    conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
              b"TUNNEL-FROM-BACKEND")
    conn.close(linger=3.0)
    return "close"


def hook_chunked(req, conn):
    """Answers with a chunked body (also to HTTP/1.0 requests)."""
    conn.read_body(req)
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
              + chunk(b"hello") + chunk(b" world") + b"0\r\n\r\n")
    return "close" if req.wants_close() else "keep"


HOOKS = {"early401": hook_early401, "h101": hook_h101, "chunked": hook_chunked}


def dispatch(req, conn):
    m = re.match(r"/cluster1/h/([^/?]+)", req.target)
    fn = HOOKS.get(m.group(1)) if m else None
    return fn(req, conn) if fn else None


class RawProxyCase(SharedLBTestCase):
    """One proxy (mode None: the default) and one strict RawBackend for the
    class, the proxy with an admin listener and an access log."""

    mode = None
    parse = "strict"
    threads = 2

    @classmethod
    def extra_clusters(cls, raw):
        return []

    @classmethod
    def start_shared(cls):
        cls.dir = tempfile.mkdtemp(prefix="lb-desync-")
        cls.cleanups.append(lambda: shutil.rmtree(cls.dir, True))
        cls.raw = RawBackend(cls.parse, handler=dispatch)
        cls.cleanups.append(cls.raw.stop)
        cls.alog = os.path.join(cls.dir, "access.log")
        cls.admin = free_port()
        cfg = proxy_config([cluster("cluster1", "/cluster1", cls.raw)]
                           + cls.extra_clusters(cls.raw), mode=cls.mode)
        cls.p = cls.shared_proxy(config=cfg, threads=cls.threads,
                                 args=["--admin", "127.0.0.1:%d" % cls.admin,
                                       "--access-log", cls.alog])
        if wait_routable(cls.p.port) != 200:
            raise RuntimeError("cluster1 never became routable:\n" + cls.p.log()[-3000:])

    # -- helpers for the tests

    def refused(self, data, marker, timeout=4.0, codes=(400,)):
        """Sends data: a `codes` answer, the connection closed, and the
        backend never received marker (the request's path)."""
        resp, closed, _ = exchange(self.p.port, data, timeout=timeout)
        st = status_of(resp)
        time.sleep(0.2)
        forwarded = self.raw.received(marker)
        self.assertFalse(forwarded, "sent %r: the backend received it (bytes: %r); the client "
                         "got %r" % (data[:120], self.conn_with(marker)[:400], resp[:200]))
        self.assertIn(st, codes, "sent %r: got %r" % (data[:120], resp[:200]))
        self.assertTrue(closed, "sent %r: %s but the connection stayed open" % (data[:120], st))
        return resp

    def conn_with(self, marker):
        for c in self.raw.connections():
            if marker in c:
                return c
        return b""

    def request_for(self, path, timeout=3.0):
        """The backend's parsed request whose target is path (waits for it)."""
        def find():
            return next((r for r in self.raw.requests() if r.target == path), None)
        return wait_until(find, timeout)

    def one_response(self, data, timeout=5.0):
        """Sends data on a new connection and reads one response; returns
        (Response, socket, reader); the socket is closed after the test."""
        s, rd = connect(self.p.port, timeout)
        self.addCleanup(s.close)
        s.sendall(data)
        return rd.read_response(), s, rd

    def log_offset(self):
        return len(read_access_log(self.alog))


# --------------------------------------------------------------------------
# (1), (2), (3), (5)-(9): the data path in the default mode


class DataPath(RawProxyCase):
    """The default mode (a config without desync_mitigation)."""

    @classmethod
    def extra_clusters(cls, raw):
        return [cluster("p", "/p", raw, strip=True)]

    # (1) loose chunk framing

    def test_chunk_size_cr_not_followed_by_lf_refused(self):
        self.refused(b"POST /cluster1/loose-cr HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n",
                     b"/cluster1/loose-cr")

    def test_chunk_data_not_followed_by_crlf_refused(self):
        self.refused(b"POST /cluster1/loose-data HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                     b"/cluster1/loose-data")

    def test_chunk_data_not_followed_by_crlf_smuggle_refused(self):
        self.refused(b"POST /cluster1/loose-smuggle HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + loose_smuggle(b"/cluster1/loose-smuggled"), b"/cluster1/loose-smuggle")

    # (2) trailers and canonical re-encoding

    def forwarded_chunked(self, path, body, host=b"client.test"):
        """POSTs a chunked body (raw bytes after the head): (the client's
        Response, the backend's parsed request)."""
        r, s, _ = self.one_response(b"POST " + path + b" HTTP/1.1\r\nHost: " + host
                                    + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        req = self.request_for(path.decode())
        self.assertIsNotNone(req, "the backend got no request for %s (client got %d %r); "
                             "it received: %r" % (path, r.status, r.body[:200],
                                                  self.conn_with(path)[:600]))
        return r, req

    def assert_answered(self, r, path):
        self.assertEqual((r.status, r.body), (200, b"path=" + path + b"\n"),
                         "backend errors: %r" % self.raw.errors[-3:])

    def assert_proxy_head(self, req, host):
        head = req.raw_head
        self.assertEqual(req.values("host"), [host], head)
        self.assertEqual(req.values("content-length"), [], head)
        for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-port",
                     "x-request-id"):
            self.assertEqual(len(req.values(name)), 1, "%s in %r" % (name, head))
        low = req.raw_body.lower()
        self.assertNotIn(b"x-forwarded", low, "proxy headers in the body: %r" % req.raw_body)
        self.assertNotIn(b"x-request-id", low, "proxy headers in the body: %r" % req.raw_body)

    def test_trailers_never_enter_the_head(self):
        path = b"/cluster1/trailers"
        r, req = self.forwarded_chunked(path, chunk(b"hello") + chunk(b" world")
                                        + b"0\r\nHost: evil\r\nContent-Length: 5\r\n\r\n")
        self.assert_proxy_head(req, "client.test")
        self.assertNotIn(b"evil", req.raw_head + req.raw_body)
        self.assertEqual(canonical_chunked(req.raw_body), b"hello world")
        self.assertEqual(req.trailers, [])
        self.assert_answered(r, path)

    def test_obs_folded_trailer_dropped(self):
        path = b"/cluster1/trailer-fold"
        r, req = self.forwarded_chunked(path, chunk(b"hello")
                                        + b"0\r\nHost: evil\r\nX-Fold: a\r\n b\r\n\r\n")
        self.assert_proxy_head(req, "client.test")
        self.assertNotIn(b"evil", req.raw_head + req.raw_body)
        self.assertNotIn(b"X-Fold", req.raw_head + req.raw_body)
        self.assertEqual(canonical_chunked(req.raw_body), b"hello")
        self.assert_answered(r, path)

    def test_chunk_extensions_and_leading_zeros_reencoded(self):
        path = b"/cluster1/extensions"
        r, req = self.forwarded_chunked(path, b"0005;a=b\r\nhello\r\n000;c=d\r\n\r\n")
        self.assertEqual(canonical_chunked(req.raw_body), b"hello")
        self.assert_answered(r, path)

    def test_chunked_body_in_many_writes_reencoded(self):
        path = b"/cluster1/many-writes"
        s, rd = connect(self.p.port, 5)
        self.addCleanup(s.close)
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        data = bytes(range(256)) * 64
        for i in range(4):
            time.sleep(0.02)
            s.sendall(b"%04x;ext=%d\r\n" % (len(data), i) + data + b"\r\n")
        s.sendall(b"0\r\nX-T: t\r\n\r\n")
        r = rd.read_response()
        self.assertEqual(r.status, 200, r.body[:200])
        req = self.request_for(path.decode())
        self.assertEqual(canonical_chunked(req.raw_body), data * 4)

    # (3) a body that can no longer be delivered is never parsed as requests

    SMUGGLED = b"GET /cluster1/smuggled-in-body HTTP/1.1\r\nHost: x\r\n\r\n"

    def early_close(self, head, parts, name, pause=0.0):
        """The backend answers 401 and closes right after the head; the
        client then sends the rest of the body (parts), and a next request
        if the connection is still open. Exactly one response (the 401)
        before the next request's, and no request from the body anywhere."""
        s, rd = connect(self.p.port, 5)
        self.addCleanup(s.close)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        first = rd.read_response()
        self.assertEqual(first.status, 401, first.body[:200])
        time.sleep(pause)
        open_ = True
        for part in parts:
            time.sleep(0.03)
            if not send_ignoring_close(s, part):
                open_ = False
                break
        after = ("/cluster1/after-%s" % name).encode()
        if open_:
            open_ = send_ignoring_close(s, b"GET " + after + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        more, ended = [], "timeout"
        s.settimeout(3)
        for _ in range(50):
            try:
                more.append(rd.read_response())
            except (EOFError, ConnectionResetError):
                ended = "closed"
                break
            except socket.timeout:
                break
            except ValueError as e:
                more.append("unparsable: %s" % e)
                break
            if more[-1].body == b"path=" + after + b"\n":
                ended = "answered"
                break
        time.sleep(0.3)
        smuggled = [r for r in self.raw.requests() if "smuggled" in r.target]
        self.assertEqual(smuggled, [], "the body was parsed as requests")
        desc = [m if isinstance(m, str) else (m.status, m.body[:60]) for m in more]
        if ended == "answered":
            self.assertEqual(len(more), 1, "responses after the 401: %r" % desc)
        else:
            self.assertEqual(more, [], "responses after the 401: %r" % desc)
            self.assertEqual(ended, "closed", "the next request was neither answered nor the "
                             "connection closed")

    def test_backend_closes_during_length_body(self):
        n = 100000
        body = (self.SMUGGLED * (n // len(self.SMUGGLED) + 1))[:n]
        step = len(self.SMUGGLED) * 200
        parts = [body[i:i + step] for i in range(0, n, step)]
        self.early_close(b"POST /cluster1/h/early401/cl HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % n, parts, "cl")

    def test_backend_closes_during_chunked_body(self):
        # Each write starts with a complete request: the chunk-size line of
        # the next chunk ends the previous write.
        data = self.SMUGGLED * 200
        parts = [data + b"\r\n" + (b"%x\r\n" % len(data) if i < 11 else b"0\r\n\r\n")
                 for i in range(12)]
        self.early_close(b"POST /cluster1/h/early401/te HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(data), parts, "te")

    def test_backend_closed_before_rest_of_length_body(self):
        # The backend has closed (its linger is over) before any more of the
        # body arrives.
        s = self.SMUGGLED
        self.early_close(b"POST /cluster1/h/early401/cl2 HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % (2 * len(s)), [s, s], "cl2", pause=0.6)

    def test_backend_closed_before_rest_of_chunked_body(self):
        s = self.SMUGGLED
        self.early_close(b"POST /cluster1/h/early401/te2 HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(s),
                         [s + b"\r\n%x\r\n" % len(s), s + b"\r\n0\r\n\r\n"], "te2", pause=0.6)

    # (5) the access log's path

    def test_access_log_path_not_forged_by_body(self):
        off = self.log_offset()
        s, rd = connect(self.p.port, 5)
        self.addCleanup(s.close)
        s.sendall(b"POST /cluster1/real HTTP/1.1\r\nHost: x\r\nX-Request-Id: alog-forge-1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        data = b"/cluster1/forged" * 1024  # 16 KiB a write, 96 KiB in all
        for _ in range(6):
            time.sleep(0.02)
            s.sendall(chunk(data))
        s.sendall(b"0\r\n\r\n")
        r = rd.read_response()
        self.assertEqual(r.status, 200, r.body[:200])
        wait_until(lambda: any(l.get("request_id") == "alog-forge-1"
                               for l in read_access_log(self.alog)[off:]), 3)
        lines = [l for l in read_access_log(self.alog)[off:] if l.get("request_id") == "alog-forge-1"]
        self.assertEqual(len(lines), 1, read_access_log(self.alog)[off:])
        self.assertEqual(lines[0]["path"], "/cluster1/real")

    # (6) absolute-form

    def test_absolute_form_rewritten_to_origin_form(self):
        r, _, _ = self.one_response(b"GET http://example.test:8080/cluster1/abs?q=1 HTTP/1.1\r\n"
                                    b"Host: other\r\n\r\n")
        req = self.request_for("/cluster1/abs?q=1")
        self.assertIsNotNone(req, "client got %d %r; backend requests: %r"
                             % (r.status, r.body[:100], self.raw.paths()[-5:]))
        self.assertEqual(r.status, 200)
        self.assertTrue(req.raw_head.startswith(b"GET /cluster1/abs?q=1 HTTP/1.1\r\n"),
                        req.raw_head)
        self.assertEqual(req.values("host"), ["example.test:8080"], req.raw_head)

    def test_absolute_form_with_strip_prefix(self):
        r, _, _ = self.one_response(b"GET http://h/p/abs-strip HTTP/1.1\r\nHost: h\r\n\r\n")
        req = self.request_for("/abs-strip")
        self.assertIsNotNone(req, "client got %d %r; backend requests: %r"
                             % (r.status, r.body[:100], self.raw.paths()[-5:]))
        self.assertTrue(req.raw_head.startswith(b"GET /abs-strip HTTP/1.1\r\n"), req.raw_head)
        self.assertEqual(req.values("host"), ["h"], req.raw_head)

    # (7) only WebSocket upgrades tunnel; CONNECT refused

    H2C = (b"Host: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")

    def test_h2c_upgrade_not_forwarded(self):
        r, _, _ = self.one_response(b"GET /cluster1/h2c HTTP/1.1\r\n" + self.H2C)
        req = self.request_for("/cluster1/h2c")
        self.assertIsNotNone(req)
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(req.values("upgrade"), [], req.raw_head)
        self.assertEqual(req.values("http2-settings"), [], req.raw_head)
        conn_tokens = [t.strip().lower() for v in req.values("connection") for t in v.split(",")]
        self.assertNotIn("upgrade", conn_tokens, req.raw_head)
        self.assertNotIn("http2-settings", conn_tokens, req.raw_head)

    def test_h2c_101_from_backend_is_502(self):
        resp, closed, _ = exchange(self.p.port, b"GET /cluster1/h/h101/x HTTP/1.1\r\n" + self.H2C,
                                   timeout=3.0)
        self.assertEqual(status_of(resp), 502, resp[:300])
        self.assertNotIn(b"TUNNEL-FROM-BACKEND", resp)
        req = self.request_for("/cluster1/h/h101/x")
        self.assertTrue(wait_until(lambda: self.raw.conn_eof(req.conn), 3),
                        "the proxy kept the backend connection after a 101 it did not ask for")

    def test_connect_refused_405(self):
        resp, _, _ = exchange(self.p.port, b"CONNECT example.test:443 HTTP/1.1\r\n"
                              b"Host: example.test:443\r\n\r\n", timeout=3.0)
        self.assertEqual(status_of(resp), 405, resp[:300])
        time.sleep(0.2)
        self.assertFalse(self.raw.received(b"CONNECT"), "CONNECT reached the backend")

    # (8) chunked response to an HTTP/1.0 client

    def http10_chunked(self, extra):
        resp, closed, _ = exchange(self.p.port, b"GET /cluster1/h/chunked/10 HTTP/1.0\r\n"
                                   b"Host: x\r\n" + extra + b"\r\n", timeout=4.0)
        st, hdrs, body = split_response(resp)
        self.assertEqual(st, 200, resp[:300])
        self.assertNotIn("transfer-encoding", hdrs, resp[:300])
        self.assertNotIn("keep-alive", hdrs.get("connection", "").lower(), resp[:300])
        self.assertNotIn("keep-alive", hdrs, resp[:300])
        if "content-length" in hdrs:
            self.assertEqual(int(hdrs["content-length"]), 11, resp[:300])
        self.assertEqual(body, b"hello world", resp[:300])
        self.assertTrue(closed, "the proxy kept the HTTP/1.0 connection open after the body")

    def test_http10_client_gets_chunked_response_dechunked(self):
        self.http10_chunked(b"")

    def test_http10_keepalive_client_gets_chunked_response_dechunked(self):
        self.http10_chunked(b"Connection: keep-alive\r\n")

    # (9) bare LF

    def test_request_line_bare_lf_refused(self):
        self.refused(b"GET /cluster1/lf-line HTTP/1.1\nHost: x\r\n\r\n", b"/cluster1/lf-line")

    def test_header_line_bare_lf_refused(self):
        self.refused(b"GET /cluster1/lf-header HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
                     b"/cluster1/lf-header")

    def test_control_valid_request_forwarded(self):
        # The same setup forwards a valid request (so "nothing forwarded"
        # above means something).
        r, _, _ = self.one_response(b"GET /cluster1/control HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((r.status, r.body), (200, b"path=/cluster1/control\n"))
        self.assertTrue(self.raw.received(b"GET /cluster1/control HTTP/1.1\r\n"))


# --------------------------------------------------------------------------
# (1) the smuggling scenario, against a lenient backend


class LooseFramingSmuggling(LBTestCase):
    """A lenient backend (it reads loose chunk framing the lax way) behind
    a proxy with one worker thread, so that both clients share the
    backend's pooled keep-alive connection."""

    def setUp(self):
        super().setUp()
        self.raw = RawBackend("lenient")
        self.addCleanup(self.raw.stop)
        self.p = self.proxy(config=proxy_config([cluster("cluster1", "/cluster1", self.raw)]),
                            threads=1)
        self.assertEqual(wait_routable(self.p.port), 200, "cluster1 never became routable")

    def test_smuggled_request_never_answers_another_client(self):
        victim_line = b"GET /cluster1/victim HTTP/1.1\r\n"
        attack = (b"POST /cluster1/attack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + loose_smuggle(b"/cluster1/smuggled", absorb=len(victim_line)))
        a, ard = connect(self.p.port, 4)
        self.addCleanup(a.close)
        a.sendall(attack)
        try:
            ar = ard.read_response()
            attacker = (ar.status, ar.body[:100])
        except (EOFError, ConnectionResetError, socket.timeout, ValueError) as e:
            attacker = repr(e)
        v, vrd = connect(self.p.port, 4)
        self.addCleanup(v.close)
        v.sendall(victim_line + b"Host: x\r\n\r\n")
        try:
            vr = vrd.read_response()
            victim = (vr.status, vr.body)
        except (EOFError, ConnectionResetError, socket.timeout, ValueError) as e:
            victim = repr(e)
        self.assertEqual(victim, (200, b"path=/cluster1/victim\n"),
                         "the second client got another request's response; the backend "
                         "ran %r" % self.raw.paths())
        self.assertNotIn("/cluster1/smuggled", self.raw.paths())
        self.assertEqual(attacker[0] if isinstance(attacker, tuple) else attacker, 400,
                         "the attacker got %r" % (attacker,))
        self.assertTrue(closed_soon(a) is True, "the attacker's connection stayed open")
        self.assertFalse(self.raw.received(b"/cluster1/attack"),
                         "the backend received the attacker's request")

    def test_bad_chunk_after_forwarded_head(self):
        # The head and a good chunk go first (the proxy forwards them), the
        # loose framing later: nothing after the good chunk reaches the
        # backend, its connection is closed, no second request runs.
        s, _ = connect(self.p.port, 4)
        self.addCleanup(s.close)
        s.sendall(b"POST /cluster1/late HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunk(b"hello"))
        req = wait_until(lambda: next((r for r in self.raw.requests()
                                       if r.target == "/cluster1/late"), None), 2)
        time.sleep(0.3)
        inner = (b"0\r\n\r\nGET /cluster1/late-smuggled HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 7\r\n\r\n")
        send_ignoring_close(s, b"5\r\nworld" + b"XX" + b"%x\r\n" % len(inner) + inner
                            + b"\r\n0\r\n\r\n")
        s.settimeout(3)
        resp = b""
        try:
            for _ in range(100):
                b = s.recv(65536)
                if not b:
                    break
                resp += b
        except (socket.timeout, ConnectionResetError):
            pass
        time.sleep(0.3)
        self.assertNotIn("/cluster1/late-smuggled", self.raw.paths(),
                         "the backend ran the request hidden in the body")
        self.assertFalse(self.raw.received(b"late-smuggled"))
        self.assertIsNotNone(req, "the head was not forwarded before the bad chunk")
        self.assertIsNone(req.body, "the backend got a complete body: %r" % req.body)
        self.assertTrue(wait_until(lambda: self.raw.conn_eof(req.conn), 2),
                        "the backend connection stayed open")
        self.assertEqual(status_of(resp), 400, resp[:300])


# --------------------------------------------------------------------------
# (10) slow body


class SlowBody(LBTestCase):
    def test_body_slower_than_min_rate_cut(self):
        raw = RawBackend("strict")
        self.addCleanup(raw.stop)
        # Timeouts far above the test's length: only the body rate can cut it.
        # limits.min_body_rate_bps is left at its default, 1024.
        p = self.proxy(config=proxy_config([cluster("cluster1", "/cluster1", raw)],
                                           client_header=30000, idle=60000,
                                           backend_response=60000))
        self.assertEqual(wait_routable(p.port), 200, "cluster1 never became routable")
        s, _ = connect(p.port, 5)
        self.addCleanup(s.close)
        s.sendall(b"POST /cluster1/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        t0 = time.monotonic()
        cut, got = None, b""
        for _ in range(28):
            if not send_ignoring_close(s, b"a"):
                cut = time.monotonic() - t0
                break
            r = closed_soon(s, 1.0)
            if r is not False:
                cut = time.monotonic() - t0
                got = r if r is not True else b""
                break
        self.assertIsNotNone(cut, "a body at 1 B/s was not cut in %.0fs" % (time.monotonic() - t0))
        self.assertGreaterEqual(cut, 9.0, "cut after %.1fs: the rate is measured over 10s" % cut)
        self.assertLessEqual(cut, 25.0)
        self.assertIn(status_of(got) if got else None, (None, 408), got[:200])
        req = next((r for r in raw.requests() if r.target == "/cluster1/slow"), None)
        self.assertIsNotNone(req, "the head never reached the backend")
        self.assertTrue(wait_until(lambda: raw.conn_eof(req.conn), 3),
                        "the backend connection stayed open after the cut")


# --------------------------------------------------------------------------
# (11) classes and modes

# (name, request bytes with PATH to be replaced): the path is made unique.
AMBIGUOUS = [
    ("get_with_body", b"GET PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
    ("transfer_underscore", b"GET PATH HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n"),
    ("content_underscore", b"GET PATH HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n"),
]
SEVERE = [
    ("cl_and_te", b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two_cls", b"POST PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Content-Length: 6\r\n\r\nhello!"),
    ("bad_chunk", b"POST PATH HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\rXhello\r\n0\r\n\r\n"),
    ("nul_in_value", b"GET PATH HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("obs_fold", b"GET PATH HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"),
    ("space_in_name", b"GET PATH HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n"),
    ("bare_cr", b"GET PATH HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
]
ACCEPTABLE = b"GET PATH HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
COMPLIANT = b"GET PATH HTTP/1.1\r\nHost: x\r\n\r\n"


class ModeTests:
    """The request classes under one mode: mixed into a RawProxyCase that
    sets mode and says what ambiguous and acceptable requests get."""

    def path(self, name):
        return ("/cluster1/%s-%s" % (self.mode or "default", name)).encode()

    def counted(self, data, path, cls):
        """Sends data: lb_desync_requests_total{class=cls} moves by one,
        and the access log's new line carries desync_class cls."""
        before = desync_counts(self.admin)
        off = self.log_offset()
        s, rd = connect(self.p.port, 2)
        try:
            s.sendall(data.replace(b"PATH", path))
            rd.read_response()
        except (OSError, EOFError, ValueError):
            pass  # the answer is checked elsewhere: here only the counting
        finally:
            s.close()
        wait_until(lambda: desync_counts(self.admin)[cls] > before[cls], 2)
        after = desync_counts(self.admin)
        self.assertEqual(after[cls] - before[cls], 1,
                         "lb_desync_requests_total{class=%r}: %r -> %r" % (cls, before, after))
        # Its access log line: the one with its path or, for a head refused
        # before its path was kept, one without a path (lines of other
        # requests may land late, from another worker's buffer).
        def lines():
            new = read_access_log(self.alog)[off:]
            return ([l for l in new if l.get("path") == path.decode()]
                    or [l for l in new if l.get("path") is None])
        mine = wait_until(lines, 2)
        self.assertTrue(mine, "no access log line for %s: %r" % (path, read_access_log(self.alog)[off:]))
        self.assertIn(cls, [l.get("desync_class") for l in mine], mine)

    # -- behaviour

    def test_severe_refused(self):
        for name, data in SEVERE:
            with self.subTest(name):
                p = self.path("sev-" + name)
                self.refused(data.replace(b"PATH", p), p)

    def test_tab_in_target_refused(self):
        p = self.path("tab")
        self.refused(b"GET " + p + b"\tx HTTP/1.1\r\nHost: x\r\n\r\n", p)

    def test_ambiguous(self):
        for name, data in AMBIGUOUS:
            with self.subTest(name):
                p = self.path("amb-" + name)
                self.check_ambiguous(data.replace(b"PATH", p), p)

    def test_acceptable(self):
        p = self.path("acceptable")
        self.check_acceptable(ACCEPTABLE.replace(b"PATH", p), p)

    def forwarded_and_answered(self, data, path):
        """Sends data; the backend gets it and the client its answer:
        (socket, reader, the backend's request)."""
        r, s, rd = self.one_response(data)
        req = self.request_for(path.decode())
        self.assertIsNotNone(req, "not forwarded: the client got %d %r" % (r.status, r.body[:100]))
        self.assertEqual((r.status, r.body), (200, b"path=" + path + b"\n"))
        return s, rd, req

    def still_usable(self, s, rd, name):
        p = self.path(name)
        s.sendall(b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        r = rd.read_response()
        self.assertEqual((r.status, r.body), (200, b"path=" + p + b"\n"))

    # -- counting

    def test_severe_counted(self):
        for name, data in SEVERE:
            with self.subTest(name):
                self.counted(data, self.path("sevc-" + name), "severe")

    def test_ambiguous_counted(self):
        for name, data in AMBIGUOUS:
            with self.subTest(name):
                self.counted(data, self.path("ambc-" + name), "ambiguous")

    def test_acceptable_counted(self):
        self.counted(ACCEPTABLE, self.path("accc"), "acceptable")

    def test_compliant_counted(self):
        self.counted(COMPLIANT, self.path("compc"), "compliant")


class DefaultMode(ModeTests, RawProxyCase):
    """A config without desync_mitigation: defensive."""

    def check_ambiguous(self, data, path):
        s, rd, req = self.forwarded_and_answered(data, path)
        self.assertIs(closed_soon(s), True, "the client connection stayed open after the "
                      "response to an ambiguous request")
        self.assertTrue(wait_until(lambda: self.raw.conn_eof(req.conn), 2),
                        "the backend connection stayed open after an ambiguous request")

    def check_acceptable(self, data, path):
        s, rd, _ = self.forwarded_and_answered(data, path)
        self.still_usable(s, rd, "acceptable-next")


class DefensiveMode(DefaultMode):
    mode = "defensive"


class StrictestMode(ModeTests, RawProxyCase):
    mode = "strictest"

    def check_ambiguous(self, data, path):
        self.refused(data, path, codes=(400,))

    def check_acceptable(self, data, path):
        resp, _, _ = exchange(self.p.port, data, timeout=2.0)
        self.assertEqual(status_of(resp), 400, resp[:300])
        time.sleep(0.2)
        self.assertFalse(self.raw.received(path))


class MonitorMode(ModeTests, RawProxyCase):
    mode = "monitor"

    def check_ambiguous(self, data, path):
        s, rd, _ = self.forwarded_and_answered(data, path)
        self.still_usable(s, rd, "amb-next-" + path.decode().rsplit("-", 1)[-1])

    def check_acceptable(self, data, path):
        s, rd, _ = self.forwarded_and_answered(data, path)
        self.still_usable(s, rd, "acceptable-next")


# --------------------------------------------------------------------------
# the configuration


class Config(unittest.TestCase):
    def check(self, args):
        p = subprocess.run([PROXY_BIN] + args + ["--check"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=10)
        return p.returncode, p.stdout.decode(errors="replace")

    def config_file(self, cfg):
        fd, path = tempfile.mkstemp(prefix="proxy-desync-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        self.addCleanup(os.unlink, path)
        return path

    def test_modes_and_min_body_rate_accepted(self):
        for mode in MODES:
            with self.subTest(mode):
                path = self.config_file({"listen": "127.0.0.1:%d" % free_port(),
                                         "desync_mitigation": mode,
                                         "limits": {"min_body_rate_bps": 1024}})
                rc, out = self.check(["--config", path])
                self.assertEqual(rc, 0, out)
                rc, out = self.check(["--listen", "127.0.0.1:%d" % free_port(),
                                      "--desync-mitigation", mode])
                self.assertEqual(rc, 0, out)

    def test_bad_mode_refused(self):
        path = self.config_file({"listen": "127.0.0.1:%d" % free_port(),
                                 "desync_mitigation": "lenient"})
        rc, out = self.check(["--config", path])
        self.assertEqual(rc, 2, out)
        self.assertIn("desync_mitigation", out)
        rc, out = self.check(["--listen", "127.0.0.1:%d" % free_port(),
                              "--desync-mitigation", "lenient"])
        self.assertEqual(rc, 2, out)
        self.assertIn("desync-mitigation", out)


if __name__ == "__main__":
    unittest.main()
