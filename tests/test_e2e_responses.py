"""End-to-end: responses are untrusted input too (DESIGN.md, "Request
smuggling defence", and the retry bullet of "Data path").

One proxy (one worker thread, so every client shares one backend pool) in
front of scripted backends that write raw bytes: cluster1 has one backend,
cluster2 and cluster3 two each. Every test uses its own path
(/clusterN/<case>/<n>); the backends dispatch on <case> and record, per
path, each request they received (on which backend, on which connection)
and what they saw afterwards. What the client receives is read from a raw
socket and checked byte for byte where framing matters.

"502" below means: the client gets a 502 from the proxy, the proxy closes
the backend connection, and lb_errors_total{kind="backend_malformed"} on the
admin listener went up. Runs once per engine (LB_ENGINE)."""

import itertools
import re
import socket
import threading
import time
import unittest

from lbtest import SharedLBTestCase, HTTPReader, admin_get, free_port, pattern, wait_routable
from test_e2e_errors import (ScriptServer, answer_health, cluster, config, health_or, read_head,
                              request_path)

# --------------------------------------------------------------------------
# the scripted backends

KEEP, CLOSE = "keep", "close"

# Probes rarely matter here (the scripts answer them properly), but passive
# failures count towards unhealthy: many 502s must not take a backend out.
HEALTH = {"path": "/health", "interval_ms": 2000, "timeout_ms": 500,
          "healthy_threshold": 1, "unhealthy_threshold": 1000000,
          "expect_status": "200-399"}


class Recorder:
    """What the scripted backends saw, by request path: requests as
    (server, conn id, head) and events as (server, conn id, what)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.requests = {}
        self.events = {}
        self.conn_ids = itertools.count(1)

    def new_conn(self):
        with self.cond:
            return next(self.conn_ids)

    def add_request(self, path, server, cid, head):
        with self.cond:
            self.requests.setdefault(path, []).append((server, cid, head))
            n = len(self.requests[path])
            self.cond.notify_all()
            return n

    def add_event(self, path, server, cid, what):
        with self.cond:
            self.events.setdefault(path, []).append((server, cid, what))
            self.cond.notify_all()

    def requests_for(self, path):
        with self.cond:
            return list(self.requests.get(path, []))

    def servers_under(self, prefix):
        """The backends that got a request whose path starts with prefix."""
        with self.cond:
            return {x[0] for p, reqs in self.requests.items() if p.startswith(prefix)
                    for x in reqs}

    def wait_event(self, path, timeout=3.0):
        """The first event recorded for path, waiting up to timeout; None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.events.get(path):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.events[path][0][2]


class Ctx:
    def __init__(self, rec, server, cid, path, head, nth):
        self.rec, self.server, self.cid, self.path, self.head = rec, server, cid, path, head
        self.nth = nth  # 1 for the first request with this path on any backend

    def event(self, what):
        self.rec.add_event(self.path, self.server, self.cid, what)


def target_of(head):
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1] if len(parts) > 1 else b""


def echo_body(target):
    return b"echo " + target


def echo(conn, head, ctx):
    body = echo_body(target_of(head))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body)
    return KEEP


def watch_eof(conn, timeout=3.0):
    """After a response the proxy must refuse: "eof" when the proxy closes
    the connection, "open" when it keeps it quiet, "data" when it sends
    another request on it (it went back to the pool)."""
    conn.settimeout(timeout)
    try:
        return "data" if conn.recv(65536) else "eof"
    except socket.timeout:
        return "open"
    except OSError:
        return "eof"  # reset


def send(data, then=KEEP):
    def script(conn, head, ctx):
        conn.sendall(data)
        return then
    return script


def send_watch(data):
    """Writes a response the proxy must refuse, then records whether the
    proxy closed the connection."""
    def script(conn, head, ctx):
        try:
            conn.sendall(data)
        except OSError:
            ctx.event("eof")  # closed (reset) while we were still writing
            return CLOSE
        ctx.event(watch_eof(conn))
        return CLOSE
    return script


def send_pause_send(first, second, pause=0.05):
    def script(conn, head, ctx):
        conn.sendall(first)
        time.sleep(pause)
        try:
            conn.sendall(second)
        except OSError:
            pass
        ctx.event("sent")
        return KEEP
    return script


def send_then_close_later(data, pause=0.05):
    def script(conn, head, ctx):
        conn.sendall(data)
        time.sleep(pause)
        ctx.event("closing")
        return CLOSE
    return script


def send_in_pieces(data, sizes, pause=0.002, max_pieces=2000):
    def script(conn, head, ctx):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        off = 0
        for i in range(max_pieces):
            if off >= len(data):
                break
            n = sizes[i % len(sizes)]
            conn.sendall(data[off:off + n])
            off += n
            time.sleep(pause)
        conn.sendall(data[off:])
        return KEEP
    return script


def close_first_attempt(conn, head, ctx):
    """The first attempt of each path: close before any byte of response;
    any later one: a 200 naming the backend (Connection: close: never pooled)."""
    if ctx.nth == 1:
        return CLOSE
    body = ("from %s" % ctx.server).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % len(body) + body)
    return CLOSE


def close_always(conn, head, ctx):
    return CLOSE


EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nEVIL"
OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# Responses the proxy must answer with 502 (each its own test below).
BAD = {
    # broken before the response contract
    "ws_colon": b"HTTP/1.1 200 OK\r\nX-D : inj\r\nContent-Length: 2\r\n\r\nok",
    "te_twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te_twice_list": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n",
    "te_not_last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n",
    # holding already
    "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n",
    "te_cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
             b"5\r\nhello\r\n0\r\n\r\n",
    "cl_differ": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
    "cl_neg": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    "cl_plus": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "cl_hex": b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
    "bare_cr": b"HTTP/1.1 200 OK\r\nX-A: a\rinj\r\nContent-Length: 2\r\n\r\nok",
    "nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00inj\r\nContent-Length: 2\r\n\r\nok",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: one\r\n inj\r\nContent-Length: 2\r\n\r\nok",
    "unasked_101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\n\r\ninj",
    "huge_head": b"HTTP/1.1 200 OK\r\n"
                 + b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 1000) for i in range(80))
                 + b"Content-Length: 2\r\n\r\nok",
}

CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


def big_chunked_body():
    """(raw chunked body with odd size lines, the data it carries)."""
    data = pattern(1 + 255 + 4096 + 65536 + 0xabc + 1)
    lines = [b"0001", b"00ff;a=b", b"1000;x", b"000000010000;ext=1", b"AbC", b"1"]
    out, off = [], 0
    for line in lines:
        n = int(line.split(b";")[0], 16)
        out.append(line + b"\r\n" + data[off:off + n] + b"\r\n")
        off += n
    out.append(b"0000;last=1\r\nX-Trailer: t\r\n\r\n")
    return b"".join(out), data


BIG_CHUNKED, BIG_DATA = big_chunked_body()
CLOSE_DELIM_DATA = pattern(200000)

SCRIPTS = {
    "echo": echo,
    "early_hints_close": send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
                              CLOSE),
    "close_first": close_first_attempt,
    "close_always": close_always,
    "chunk_ext": send(CHUNKED + b"0005;ext=1\r\nhello\r\n000\r\n\r\n"),
    "chunk_trailers": send(b"HTTP/1.1 200 OK\r\nTrailer: X-Trailer\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n"
                           b"0\r\nX-Trailer: evil\r\nContent-Length: 99\r\n\r\n"),
    "chunk_big": send_in_pieces(CHUNKED + BIG_CHUNKED, [1, 2, 7, 500, 3, 4096, 13, 30000]),
    "chunk_http10": send(CHUNKED + b"5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"),
    "nc204": send(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: 204\r\n\r\nEVIL!"),
    "nm304_cl": send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n"),
    "nm304_stray": send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n" + EVIL),
    "interim_cl": send(b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n"
                       b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\nContent-Length: 0\r\n\r\n"
                       + OK2),
    "interim": send(b"HTTP/1.1 100 Continue\r\n\r\n"
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + OK2),
    "unsol_same": send(OK2 + EVIL),
    "unsol_late": send_pause_send(OK2, EVIL, 0.05),
    "hop": send(b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\n"
                b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
                b"Trailer: X-T\r\nUpgrade: h2c\r\nX-Secret: s\r\nX-Kept: yes\r\n"
                b"Content-Length: 2\r\n\r\nok"),
    "head_cl": send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"),
    "idle_close": send_then_close_later(OK2, 0.05),
    "close_delim": send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
                        + CLOSE_DELIM_DATA, CLOSE),
}
SCRIPTS.update({name: send_watch(data) for name, data in BAD.items()})


def case_of(path):
    parts = path.split("/")
    return parts[2] if len(parts) > 2 else ""


def scripted(name, rec):
    """A ScriptServer handler: every request on a connection (health probes
    answered and closed) is recorded and handed to its case's script."""

    def serve(conn, head):
        cid = rec.new_conn()
        conn.settimeout(30)  # longer than the proxy keeps a connection pooled
        try:
            for _ in range(1000):
                path = request_path(head).decode("latin-1")
                nth = rec.add_request(path, name, cid, head)
                script = SCRIPTS.get(case_of(path), echo)
                if script(conn, head, Ctx(rec, name, cid, path, head, nth)) != KEEP:
                    return
                head = read_head(conn)
                if head is None:
                    return
                if answer_health(conn, head):
                    return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    return health_or(serve)


# --------------------------------------------------------------------------
# the client side

_paths = itertools.count(1)


def new_path(case, prefix="/cluster1"):
    return "%s/%s/%d" % (prefix, case, next(_paths))


def request(path, method="GET", version="1.1", extra=b""):
    return (("%s %s HTTP/%s\r\nHost: lb.test\r\n" % (method, path, version)).encode()
            + extra + b"\r\n")


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n")
SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(;[^\r\n]*)?\r\n")
CANONICAL_SIZE_LINE = re.compile(rb"(0|[1-9A-Fa-f][0-9A-Fa-f]*)\r\n")


class Resp:
    def __init__(self, status, head, fields):
        self.status = status
        self.head = head      # raw, as received
        self.fields = fields  # [(lower-case name, value)]
        self.body = b""
        self.chunked = False
        self.size_lines = []  # raw chunk-size lines, last chunk included
        self.trailer = b""    # raw, after the last chunk's size line
        self.until_close = False

    def all(self, name):
        return [v for k, v in self.fields if k == name]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def names(self):
        return {k for k, _ in self.fields}


def read_head_strict(rd):
    """The next response head: it must start right here with a status line."""
    head = rd.read_until(b"\r\n\r\n", limit=1 << 18)
    m = STATUS_LINE.match(head)
    if not m:
        raise AssertionError("not a response head where one must start: %r" % head[:200])
    fields = []
    for line in head[m.end():-4].split(b"\r\n"):
        if line:
            k, sep, v = line.partition(b":")
            if not sep or k != k.strip() or not k:
                raise AssertionError("malformed field line %r in %r" % (line, head[:300]))
            fields.append((k.decode("latin-1").lower(), v.strip().decode("latin-1")))
    return Resp(int(m.group(1)), head, fields)


def read_chunked_strict(rd, r, max_chunks=100000):
    parts = []
    for _ in range(max_chunks):
        line = rd.read_until(b"\r\n", limit=4096)
        r.size_lines.append(line)
        m = SIZE_LINE.fullmatch(line)
        if not m:
            raise AssertionError("bad chunk-size line %r" % line[:100])
        size = int(m.group(1), 16)
        if size == 0:
            for _ in range(1000):
                t = rd.read_until(b"\r\n", limit=65536)
                r.trailer += t
                if t == b"\r\n":
                    break
            r.body = b"".join(parts)
            return
        parts.append(rd.read_exact(size))
        crlf = rd.read_exact(2)
        if crlf != b"\r\n":
            raise AssertionError("chunk data not followed by CRLF: %r" % crlf)
    raise AssertionError("more than %d chunks" % max_chunks)


def read_response(rd, method="GET"):
    """One response as the proxy framed it (chunked read strictly)."""
    r = read_head_strict(rd)
    if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
        return r
    te = r.all("transfer-encoding")
    cl = r.all("content-length")
    if te:
        if [t.lower() for t in te] != ["chunked"]:
            raise AssertionError("Transfer-Encoding to the client is %r" % te)
        if cl:
            raise AssertionError("Content-Length with Transfer-Encoding to the client: %r"
                                 % r.head)
        r.chunked = True
        read_chunked_strict(rd, r)
    elif cl:
        if len(cl) != 1:
            raise AssertionError("Content-Lengths to the client: %r" % cl)
        r.body = rd.read_exact(int(cl[0]))
    else:
        r.until_close = True
        r.body = rd.read_to_eof()
    return r


def closed_soon(sock, rd, timeout=2.0):
    """(closed, extra bytes): whether the peer closes within timeout, and
    whatever it sent before (nothing is expected)."""
    extra = bytes(rd.buf)
    rd.buf.clear()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, extra
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return False, extra
        except OSError:
            return True, extra
        if not b:
            return True, extra
        extra += b


def quiet_for(sock, rd, seconds=0.2):
    """Bytes the peer sends within `seconds` when nothing is due (b"": none)."""
    extra = bytes(rd.buf)
    rd.buf.clear()
    sock.settimeout(seconds)
    try:
        b = sock.recv(65536)
        extra += b
    except (socket.timeout, OSError):
        pass
    return extra


def metric_sum(text, family, **labels):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"%s\{([^}]*)\}\s+(\S+)" % re.escape(family), line)
        if m and all('%s="%s"' % kv in m.group(1) for kv in labels.items()):
            total += float(m.group(2))
    return total


# --------------------------------------------------------------------------


class ResponseContract(SharedLBTestCase):

    @classmethod
    def start_shared(cls):
        cls.rec = Recorder()
        cls.srv = {}
        for name in ("s1", "a2", "b2", "c3", "d3"):
            s = ScriptServer(scripted(name, cls.rec))
            cls.cleanups.append(s.stop)
            cls.srv[name] = s
        clusters = []
        for prefix, names in (("/cluster1", ("s1",)), ("/cluster2", ("a2", "b2")),
                              ("/cluster3", ("c3", "d3"))):
            c = cluster(prefix, [cls.srv[n].addr for n in names], retries=1)
            c["health_check"] = dict(HEALTH)
            if prefix == "/cluster3":
                c["strategy"] = "round-robin"  # both backends get a pooled connection
            clusters.append(c)
        cls.admin = free_port()
        cls.p = cls.shared_proxy(config=config(clusters, backend_response=2000, idle=10000),
                                 threads=1, args=["--admin", "127.0.0.1:%d" % cls.admin])
        for prefix in ("/cluster1", "/cluster2", "/cluster3"):
            st = wait_routable(cls.p.port, prefix, timeout=10)
            if st != 200:
                raise RuntimeError("%s never became routable (last %r):\n%s"
                                   % (prefix, st, cls.p.log()[-3000:]))

    # -- helpers

    def client(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.p.port), timeout=timeout)
        self.addCleanup(s.close)
        return s, HTTPReader(s)

    def malformed_count(self):
        st, _, body = admin_get(self.admin, "/metrics")
        self.assertEqual(st, 200)
        return metric_sum(body.decode("utf-8", "replace"), "lb_errors_total",
                          kind="backend_malformed")

    def assert_in_sync(self, s, rd, prefix="/cluster1"):
        """A next request on the same client connection gets its own
        response, and nothing came before it."""
        path = new_path("echo", prefix)
        s.sendall(request(path))
        try:
            r = read_response(rd)
        except (AssertionError, ValueError, EOFError, OSError) as e:
            self.fail("the next request on the same connection: %s" % e)
        self.assertEqual((r.status, r.body), (200, echo_body(path.encode())),
                         "the next request on the same connection got another response: %r"
                         % (r.head + r.body)[:400])

    def assert_fresh_client_ok(self, prefix="/cluster1"):
        s, rd = self.client()
        self.assert_in_sync(s, rd, prefix)

    def get_one(self, case, method="GET", version="1.1", extra=b"", prefix="/cluster1"):
        """(socket, reader, path, first Resp) for one request of case."""
        s, rd = self.client()
        path = new_path(case, prefix)
        s.sendall(request(path, method, version, extra))
        return s, rd, path, read_response(rd, method)

    def assert_502(self, case):
        before = self.malformed_count()
        s, rd = self.client()
        path = new_path(case)
        s.sendall(request(path))
        try:
            r = read_response(rd)
        except (EOFError, OSError) as e:
            self.fail("%s: no response, the proxy closed (%s)" % (case, e))
        except AssertionError as e:
            self.fail("%s: the backend's response was relayed, not a 502: %s" % (case, e))
        self.assertEqual(r.status, 502, "%s: the backend's response was relayed: %r"
                         % (case, (r.head + r.body)[:400]))
        self.assertNotIn(b"inj", r.head + r.body)
        self.assertIsNone(r.get("x-d"))
        self.assertEqual(self.rec.wait_event(path, 4.0), "eof",
                         "%s: the proxy did not close the backend connection after the 502"
                         % case)
        after = self.malformed_count()
        self.assertGreater(after, before, "%s: lb_errors_total{kind=\"backend_malformed\"} "
                           "stayed at %r" % (case, before))

    def assert_canonical_chunks(self, r):
        self.assertTrue(r.chunked, "not chunked to the client: %r" % r.head)
        for line in r.size_lines:
            self.assertRegex(line, CANONICAL_SIZE_LINE,
                             "chunk-size line not canonical: %r (all: %r)"
                             % (line, r.size_lines[:10]))
        self.assertEqual(r.size_lines[-1], b"0\r\n")
        self.assertEqual(r.trailer, b"\r\n", "trailer fields relayed: %r" % r.trailer)

    # -- control

    def test_control_plain_response_keeps_connection(self):
        s, rd, path, r = self.get_one("echo")
        self.assertEqual((r.status, r.body), (200, echo_body(path.encode())))
        self.assert_in_sync(s, rd)
        self.assertEqual(len(self.rec.requests_for(path)), 1)

    # -- 502: broken before the response contract

    def test_whitespace_before_colon_502(self):
        self.assert_502("ws_colon")

    def test_transfer_encoding_chunked_twice_502(self):
        self.assert_502("te_twice")

    def test_transfer_encoding_chunked_twice_one_line_502(self):
        self.assert_502("te_twice_list")

    def test_transfer_encoding_chunked_not_last_502(self):
        self.assert_502("te_not_last")

    # -- 502: holding already

    def test_content_length_with_transfer_encoding_502(self):
        self.assert_502("cl_te")

    def test_transfer_encoding_with_content_length_502(self):
        self.assert_502("te_cl")

    def test_two_different_content_lengths_502(self):
        self.assert_502("cl_differ")

    def test_content_length_negative_502(self):
        self.assert_502("cl_neg")

    def test_content_length_plus_sign_502(self):
        self.assert_502("cl_plus")

    def test_content_length_hex_502(self):
        self.assert_502("cl_hex")

    def test_bare_cr_in_field_502(self):
        self.assert_502("bare_cr")

    def test_nul_in_field_502(self):
        self.assert_502("nul")

    def test_obs_fold_502(self):
        self.assert_502("obs_fold")

    def test_101_without_upgrade_request_502(self):
        self.assert_502("unasked_101")

    def test_80k_response_head_502(self):
        self.assert_502("huge_head")

    def test_metric_backend_malformed_counted(self):
        before = self.malformed_count()
        for case in ("obs_fold", "cl_te", "huge_head"):
            s, rd, path, r = self.get_one(case)
            self.assertEqual(r.status, 502, "%s: %r" % (case, r.head[:200]))
        after = self.malformed_count()
        self.assertGreaterEqual(after - before, 3, "backend_malformed went %r -> %r after "
                                "three malformed responses" % (before, after))

    # -- retries

    def test_103_then_close_one_103_one_attempt_502(self):
        s, rd = self.client()
        path = new_path("early_hints_close")
        s.sendall(request(path))
        interim = []
        for _ in range(10):
            r = read_response(rd)
            if r.status >= 200:
                break
            interim.append(r)
        seen = self.rec.requests_for(path)
        attempts = "the backend got the request %d times (on connections %r)" % (
            len(seen), [x[1] for x in seen])
        self.assertEqual([x.status for x in interim], [103], "interim responses %r; %s"
                         % ([x.head for x in interim], attempts))
        self.assertEqual(interim[0].get("link"), "</a>; rel=preload")
        self.assertEqual(r.status, 502, "after the 103 came %r" % (r.head + r.body)[:300])
        self.assertEqual(len(seen), 1, attempts + ": a relayed 1xx allows no retry")

    def test_closed_before_response_retried_on_other_backend(self):
        for _ in range(3):
            s, rd, path, r = self.get_one("close_first", prefix="/cluster2")
            seen = self.rec.requests_for(path)
            self.assertEqual(r.status, 200, "got %r; attempts %r" %
                             ((r.head + r.body)[:200], [(x[0], x[1]) for x in seen]))
            self.assertEqual(len(seen), 2, [(x[0], x[1]) for x in seen])
            self.assertNotEqual(seen[0][0], seen[1][0], "retried on the same backend")
            self.assertEqual(r.body, ("from %s" % seen[1][0]).encode())

    def test_retries_bound_attempts_with_pooled_connections(self):
        # Each backend of cluster3 gets a pooled connection first, so the
        # first attempt is on a reused one; every attempt is then closed
        # before any response: retries 1 means two attempts in all.
        for _ in range(40):
            if self.rec.servers_under("/cluster3/echo/") >= {"c3", "d3"}:
                break
            s, rd, path, r = self.get_one("echo", prefix="/cluster3")
            self.assertEqual(r.status, 200)
            s.close()
        else:
            self.fail("cluster3 never sent a request to both backends")
        time.sleep(0.05)
        s, rd, path, r = self.get_one("close_always", prefix="/cluster3")
        seen = self.rec.requests_for(path)
        self.assertEqual(r.status, 502, (r.head + r.body)[:200])
        self.assertEqual(len(seen), 2, "retries=1 but %d attempts: %r"
                         % (len(seen), [(x[0], x[1]) for x in seen]))

    # -- chunked responses

    def test_chunked_extensions_leading_zeros_reencoded(self):
        s, rd, path, r = self.get_one("chunk_ext")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"hello")
        self.assert_canonical_chunks(r)
        self.assert_in_sync(s, rd)

    def test_chunked_trailers_dropped(self):
        s, rd, path, r = self.get_one("chunk_trailers")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"hello world")
        self.assert_canonical_chunks(r)
        self.assertNotIn("trailer", r.names(), r.head)
        self.assert_in_sync(s, rd)

    def test_chunked_big_in_pieces_reencoded(self):
        s, rd, path, r = self.get_one("chunk_big")
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), len(BIG_DATA))
        self.assertTrue(r.body == BIG_DATA, "decoded body differs")
        self.assert_canonical_chunks(r)
        self.assert_in_sync(s, rd)

    def check_http10_dechunked(self, extra):
        s, rd = self.client()
        path = new_path("chunk_http10")
        s.sendall(request(path, version="1.0", extra=extra))
        r = read_head_strict(rd)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.all("transfer-encoding"), [],
                         "Transfer-Encoding sent to an HTTP/1.0 client: %r" % r.head)
        cl = r.all("content-length")
        if cl:
            self.assertEqual(cl, ["11"], r.head)
            body = rd.read_exact(11)
            closed, extra_bytes = closed_soon(s, rd)
            self.assertEqual(extra_bytes, b"")
        else:
            body = rd.read_to_eof()
            closed = True
        self.assertEqual(body, b"hello world", "the body to an HTTP/1.0 client: %r" % body[:200])
        self.assertTrue(closed, "the proxy kept the HTTP/1.0 connection open after a "
                        "de-chunked response")

    def test_chunked_to_http10_client_dechunked_and_closed(self):
        self.check_http10_dechunked(b"")

    def test_chunked_to_http10_keepalive_client_dechunked_and_closed(self):
        self.check_http10_dechunked(b"Connection: keep-alive\r\n")

    # -- responses without a body

    def test_204_content_length_stray_bytes(self):
        s, rd, path, r = self.get_one("nc204")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.all("content-length"), [], "a 204 with Content-Length: %r" % r.head)
        self.assertEqual(r.all("transfer-encoding"), [], r.head)
        self.assertEqual(r.get("x-kept"), "204")
        self.assertEqual(quiet_for(s, rd), b"", "bytes after the 204")
        self.assert_in_sync(s, rd)
        self.assert_fresh_client_ok()

    def test_304_content_length_not_relayed(self):
        s, rd, path, r = self.get_one("nm304_cl")
        self.assertEqual(r.status, 304)
        self.assertEqual(r.all("content-length"), [], "a 304 with Content-Length: %r" % r.head)
        self.assertEqual(r.all("transfer-encoding"), [], r.head)
        self.assertEqual(r.get("etag"), '"v1"')
        self.assert_in_sync(s, rd)

    def test_1xx_content_length_not_relayed(self):
        s, rd, path, r = self.get_one("interim_cl")
        self.assertEqual(r.status, 100, r.head)
        self.assertEqual(r.all("content-length"), [], "a 100 with Content-Length: %r" % r.head)
        r = read_response(rd)
        self.assertEqual(r.status, 103, r.head)
        self.assertEqual(r.all("content-length"), [], "a 103 with Content-Length: %r" % r.head)
        self.assertEqual(r.get("link"), "</s>")
        r = read_response(rd)
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assert_in_sync(s, rd)

    def test_304_stray_bytes_never_reach_a_client(self):
        s, rd, path, r = self.get_one("nm304_stray")
        self.assertEqual(r.status, 304)
        self.assertEqual(quiet_for(s, rd), b"", "bytes after the 304")
        self.assert_in_sync(s, rd)
        self.assert_fresh_client_ok()

    def test_head_content_length_no_body(self):
        s, rd, path, r = self.get_one("head_cl", method="HEAD")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.all("content-length"), ["10"], r.head)
        self.assertEqual(quiet_for(s, rd), b"", "a body after a HEAD response")
        self.assert_in_sync(s, rd)

    # -- bytes beyond a response

    def test_unsolicited_response_same_write(self):
        s, rd, path, r = self.get_one("unsol_same")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assert_in_sync(s, rd)
        self.assert_fresh_client_ok()

    def test_unsolicited_response_50ms_later(self):
        s, rd, path, r = self.get_one("unsol_late")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        # The next request goes after the backend wrote its extra response:
        # sent before, it could not be told from a true answer.
        self.assertEqual(self.rec.wait_event(path, 3.0), "sent")
        time.sleep(0.1)
        self.assertEqual(quiet_for(s, rd, 0.05), b"")
        self.assert_in_sync(s, rd)
        self.assert_fresh_client_ok()

    def test_backend_closes_idle_pooled_connection(self):
        s, rd, path, r = self.get_one("idle_close")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assertEqual(self.rec.wait_event(path, 3.0), "closing")
        time.sleep(0.15)
        self.assert_in_sync(s, rd)

    # -- hop-by-hop fields

    def test_hop_by_hop_response_fields_removed(self):
        s, rd, path, r = self.get_one("hop")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        for name in ("keep-alive", "proxy-connection", "te", "trailer", "upgrade", "x-secret"):
            self.assertNotIn(name, r.names(), "%s relayed: %r" % (name, r.head))
        for v in r.all("connection"):
            for token in v.split(","):
                self.assertIn(token.strip().lower(), ("close", "keep-alive"),
                              "Connection relayed: %r" % r.head)
        self.assertEqual(r.get("x-kept"), "yes")
        self.assert_in_sync(s, rd)

    # -- close-delimited body, 1xx

    def test_close_delimited_body_relayed_then_closed(self):
        s, rd, path, r = self.get_one("close_delim")
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.body), len(CLOSE_DELIM_DATA))
        self.assertTrue(r.body == CLOSE_DELIM_DATA, "body differs")
        if not r.until_close:  # framed by the proxy: it must still close
            closed, extra = closed_soon(s, rd)
            self.assertEqual(extra, b"")
            self.assertTrue(closed, "client connection left open after a close-delimited body")

    def test_1xx_relayed_to_http11_client(self):
        s, rd, path, r = self.get_one("interim")
        self.assertEqual(r.status, 100, r.head)
        r = read_response(rd)
        self.assertEqual(r.status, 103, r.head)
        self.assertEqual(r.get("link"), "</a>; rel=preload")
        r = read_response(rd)
        self.assertEqual((r.status, r.body), (200, b"ok"))
        self.assert_in_sync(s, rd)

    def test_1xx_not_relayed_to_http10_client(self):
        s, rd, path, r = self.get_one("interim", version="1.0")
        self.assertEqual(r.status, 200, "an HTTP/1.0 client got %r" % r.head)
        self.assertEqual(r.body, b"ok")

    # -- request-target size

    def test_16k_request_target_431(self):
        s, rd = self.client()
        path = new_path("echo") + "/" + "a" * 16384
        try:
            s.sendall(request(path))
        except OSError:
            pass
        r = read_head_strict(rd)
        self.assertEqual(r.status, 431, r.head)
        time.sleep(0.1)
        self.assertEqual(self.rec.requests_for(path.split("?")[0]), [])

    def test_7k_request_target_forwarded_intact(self):
        base = new_path("echo") + "/"
        tail = "-._~!$&'()*+,;=:@%2Fz09"
        target = base + (tail * 400)[:7168 - len(base) - 8] + "?q=1&r=2"
        self.assertEqual(len(target), 7168)
        s, rd = self.client()
        s.sendall(request(target))
        r = read_response(rd)
        self.assertEqual(r.status, 200, r.head)
        self.assertEqual(r.body, echo_body(target.encode()))
        seen = self.rec.requests_for(target.split("?")[0])
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0][2].split(b"\r\n", 1)[0],
                         b"GET " + target.encode() + b" HTTP/1.1")


if __name__ == "__main__":
    unittest.main()
