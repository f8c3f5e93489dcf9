"""Harness for the end-to-end tests: starts real `backend`s and the real
`proxy` on 127.0.0.1, stops them by PID, and gives small clients.

Environment (set by CTest): PROXY_BIN, BACKEND_BIN, LB_ENGINE (uring, epoll
or any), LB_SANITIZE (1 in the ASan build)."""

import csv
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("LB_BUILD_DIR", os.path.join(HERE, "..", "build"))
PROXY_BIN = os.environ.get("PROXY_BIN", os.path.join(BUILD, "proxy"))
BACKEND_BIN = os.environ.get("BACKEND_BIN", os.path.join(BUILD, "backend"))
LOADGEN_BIN = os.environ.get("LOADGEN_BIN", os.path.join(BUILD, "loadgen"))
ENGINE = os.environ.get("LB_ENGINE", "any")
SANITIZE = os.environ.get("LB_SANITIZE", "0") in ("1", "ON", "true")

_used_ports = set()
# (Process.signal, a method, hides the module inside the class body.)
_SIGTERM = signal.SIGTERM


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _used_ports:
            _used_ports.add(port)
            return port


def wait_port(port, proc, timeout=10.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %d before listening" % proc.returncode)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d not listening after %.0fs" % (port, timeout))


class Process:
    """A child process whose output goes to a temp file; stopped by PID."""

    def __init__(self, argv, name):
        self.argv = argv
        self.name = name
        self.logfile = tempfile.NamedTemporaryFile(prefix=name + "-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with open(self.logfile.name, "r", errors="replace") as f:
            return f.read()

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=_SIGTERM, timeout=30):
        """Signals the process and returns its exit code (killed after timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()
        return self.proc.returncode

    def cleanup(self):
        self.stop()
        try:
            os.unlink(self.logfile.name)
        except OSError:
            pass


class Backend(Process):
    def __init__(self, instance_id="b1", cluster="cluster1", args=(), port=None, threads=2,
                 host="127.0.0.1"):
        self.port = port or free_port()
        self.instance_id = instance_id
        argv = [BACKEND_BIN, "--host", host, "--port", str(self.port),
                "--instance-id", instance_id, "--cluster", cluster,
                "--threads", str(threads)] + list(args)
        super().__init__(argv, "backend-" + instance_id)
        wait_port(self.port, self.proc, host=host)
        self.addr = "%s:%d" % (host, self.port)

    def requests_logged(self):
        """The request lines this backend logged."""
        return [l for l in self.log().splitlines() if " conn=" in l]

    def connections(self):
        """How many distinct client connections this backend served."""
        return len({m.group(1) for m in
                    (re.search(r" conn=(\d+)", l) for l in self.requests_logged()) if m})

    def connections_accepted(self):
        """How many connections this backend accepted (its log says so on each)."""
        return sum(1 for l in self.log().splitlines() if "accepted conn=" in l)


class Loadgen(Process):
    """perf/loadgen against url with args (flags as strings), writing its
    per-request and summary CSVs into a temp dir removed by cleanup()."""

    def __init__(self, url, args=()):
        self.dir = tempfile.mkdtemp(prefix="loadgen-")
        self.csv_path = os.path.join(self.dir, "requests.csv")
        self.summary_path = os.path.join(self.dir, "summary.csv")
        super().__init__([LOADGEN_BIN, url, "--csv", self.csv_path,
                          "--summary", self.summary_path] + list(args), "loadgen")

    def summary(self):
        """The summary row (strings, by column name)."""
        with open(self.summary_path) as f:
            return next(csv.DictReader(f))

    def rows(self):
        """The per-request rows."""
        with open(self.csv_path) as f:
            return list(csv.DictReader(f))

    def cleanup(self):
        super().cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy(Process):
    """The proxy on a free port. `routes` maps prefix -> list of Backend or
    "host:port"; `config` is a dict written to a JSON file (its listen is
    set to the chosen port)."""

    def __init__(self, routes=None, config=None, args=(), threads=2, engine=None, wait=True,
                 wrapper=()):
        self.port = free_port()
        engine = engine or (ENGINE if ENGINE != "any" else "auto")
        argv = list(wrapper) + [PROXY_BIN, "--listen", "127.0.0.1:%d" % self.port, "--threads", str(threads),
                "--engine", engine, "--log-level", "info"]
        self.config_path = None
        if config is not None:
            config = dict(config)
            config.setdefault("listen", "127.0.0.1:%d" % self.port)
            fd, self.config_path = tempfile.mkstemp(prefix="proxy-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(config, f)
            argv += ["--config", self.config_path]
        for prefix, backends in (routes or {}).items():
            addrs = [b.addr if isinstance(b, Backend) else b for b in backends]
            argv += ["--route", "%s=%s" % (prefix, ",".join(addrs))]
        argv += list(args)
        super().__init__(argv, "proxy")
        self.admin_port = self._admin_port(config, args)
        if wait:
            try:
                wait_port(self.port, self.proc)
                if self.admin_port:  # the admin listener opens just after the public one
                    wait_port(self.admin_port, self.proc)
            except RuntimeError as e:
                raise RuntimeError("%s\n--- proxy log ---\n%s" % (e, self.log()))

    @staticmethod
    def _admin_port(config, args):
        """The admin listener's port on 127.0.0.1 from --admin or the
        config's "admin", or None."""
        args = list(args)
        addr = args[args.index("--admin") + 1] if "--admin" in args[:-1] else None
        addr = addr or (config or {}).get("admin")
        if not isinstance(addr, str) or not addr.startswith("127.0.0.1:"):
            return None
        return int(addr.rsplit(":", 1)[1])

    def cleanup(self):
        super().cleanup()
        if self.config_path:
            os.unlink(self.config_path)


class LBTestCase(unittest.TestCase):
    """Stops every process it started, by PID, after each test, and fails the
    test when one of them crashed or its log has a sanitizer report."""

    def setUp(self):
        self._procs = []

    def tearDown(self):
        problems = [clean_exit_problem(p) for p in reversed(self._procs)]
        for p in reversed(self._procs):
            p.cleanup()
        problems = [p for p in problems if p]
        if problems:
            self.fail("\n\n".join(problems))

    def backend(self, *a, **kw):
        b = Backend(*a, **kw)
        self._procs.append(b)
        return b

    def proxy(self, *a, **kw):
        try:
            p = Proxy(*a, **kw)
        except RuntimeError as e:
            if "io_uring" in str(e) and ENGINE == "uring":
                self.skipTest("io_uring refused on this machine: %s" % e)
            raise
        self._procs.append(p)
        return p

    def cluster(self, name, n, args=()):
        return [self.backend("%s-%d" % (name, i + 1), name, args) for i in range(n)]


def get(port, path, method="GET", body=None, headers=None, timeout=30):
    """One request on a new connection: (status, headers dict, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def admin_get(port, path, method="GET"):
    """One request to the proxy's admin listener: (status, Content-Type, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def admin_metrics(port):
    """The admin listener's /metrics, parsed (promtext families)."""
    import promtext  # the parser the metrics tests check the format with
    st, _, body = admin_get(port, "/metrics")
    if st != 200:
        raise AssertionError("/metrics answered %d" % st)
    return promtext.parse(body.decode())


def wait_admin(port, timeout=10.0):
    """Waits until the admin listener answers (it starts just after the
    public one)."""
    def up():
        try:
            return admin_get(port, "/healthz")[0] == 200
        except OSError:
            return False
    if not wait_until(up, timeout):
        raise AssertionError("admin listener :%d not answering" % port)


def admin_status(port):
    """The admin listener's /status, parsed."""
    return json.loads(admin_get(port, "/status")[2])


def post_chunked(port, path, parts, timeout=30):
    """POSTs the parts as a chunked body on a new connection: (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=iter(parts), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def raw(port, data, timeout=5.0, read_until_close=True):
    """Sends raw bytes and returns everything read until the peer closes (or
    the timeout passes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)
    finally:
        s.close()


def status_of(response_bytes):
    """The status code of the first response in raw bytes, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response_bytes)
    return int(m.group(1)) if m else None


def pattern(n, offset=0):
    """The backend's /bytes/N pattern: byte i is i % 251."""
    block = bytes(range(251)) * 1024
    out = bytearray()
    pos = offset
    while len(out) < n:
        start = pos % 251
        take = min(n - len(out), len(block) - start)
        out += block[start:start + take]
        pos += take
    return bytes(out)


# --------------------------------------------------------------------------
# Added helpers (the functions above are used as they are by other tests).

REQUEST_LINE = re.compile(r"instance=(\S+) cluster=(\S+) conn=(\d+) ([A-Z]+) (\S+) (\d{3}) "
                          r"(\d+)B (\d+)us")


def request_log(backend):
    """The backend's request log lines as tuples (instance, cluster, conn,
    method, path, status, bytes, us), strings as logged."""
    out = []
    for line in backend.log().splitlines():
        m = REQUEST_LINE.search(line)
        if m:
            out.append(m.groups())
    return out


def wait_until(pred, timeout=5.0, interval=0.02):
    """Polls pred() until it returns something true or timeout passes;
    returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def wait_status(port, path, status=200, timeout=10.0):
    """Polls GET path (a new connection each time) until it answers `status`
    (a proxy may wait for its first health checks before routing); returns
    the last status seen (None when nothing answered)."""
    last = [None]

    def probe():
        try:
            last[0] = get(port, path, timeout=2)[0]
        except (OSError, http.client.HTTPException):
            last[0] = None
        return last[0] == status

    wait_until(probe, timeout, 0.05)
    return last[0]


def wait_routable(port, prefix="/cluster1", timeout=5.0):
    """GET prefix/health through the proxy answers 200 (a proxy may route
    only after its first health checks): the last status seen."""
    return wait_status(port, prefix + "/health", 200, timeout)


_CRASH_SIGNALS = tuple(-int(getattr(signal, n)) for n in
                       ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL"))


def clean_exit_problem(proc, expect_zero=False):
    """Stops proc (SIGTERM) and returns why its end was not clean (a
    sanitizer report in its log, a crash, or with expect_zero a status other
    than 0), or None."""
    rc = proc.stop()
    log = proc.log()
    for marker in ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:"):
        if marker in log:
            return "%s reported %s:\n%s" % (proc.name, marker, log[-6000:])
    if rc in _CRASH_SIGNALS:
        return "%s died of signal %d:\n%s" % (proc.name, -rc, log[-4000:])
    if expect_zero and rc != 0:
        return "%s exited %r after SIGTERM, not 0:\n%s" % (proc.name, rc, log[-4000:])
    return None


def check_clean_exit(testcase, proc, expect_zero=False):
    """clean_exit_problem() as a test failure."""
    problem = clean_exit_problem(proc, expect_zero)
    if problem:
        testcase.fail(problem)


class SharedLBTestCase(LBTestCase):
    """An LBTestCase whose class also has processes shared by all its tests:
    started by the classmethod start_shared() (with shared_backend() and
    shared_proxy()), checked alive before each test, stopped by PID after
    the last. Every process, shared or not, fails the test (or the class)
    when it crashed or its log has a sanitizer report."""

    shared = ()

    @classmethod
    def start_shared(cls):
        pass

    @classmethod
    def shared_backend(cls, *a, **kw):
        b = Backend(*a, **kw)
        cls.shared.append(b)
        return b

    @classmethod
    def shared_proxy(cls, *a, **kw):
        p = Proxy(*a, **kw)
        cls.shared.append(p)
        return p

    @classmethod
    def setUpClass(cls):
        cls.shared = []
        cls.cleanups = []
        try:
            cls.start_shared()
        except Exception as e:
            cls._stop_shared()
            if "io_uring" in str(e) and ENGINE == "uring":
                raise unittest.SkipTest("io_uring refused on this machine: %s" % e)
            raise

    @classmethod
    def _stop_shared(cls):
        problems = []
        for p in reversed(cls.shared):
            problem = clean_exit_problem(p)
            if problem:
                problems.append(problem)
            p.cleanup()
        cls.shared = []
        for fn in reversed(cls.cleanups):
            fn()
        cls.cleanups = []
        return problems

    @classmethod
    def tearDownClass(cls):
        problems = cls._stop_shared()
        if problems:
            raise AssertionError("\n\n".join(problems))

    def setUp(self):
        super().setUp()
        for p in self.shared:
            if p.proc.poll() is not None:
                self.fail("%s exited with %r before this test:\n%s"
                          % (p.name, p.proc.returncode, p.log()[-4000:]))


class HTTPReader:
    """Reads HTTP/1.x responses (or WebSocket frames) from a socket, keeping
    the bytes read past one message for the next: for pipelining, upgrades
    and bodies too large to hold (a sink receives them piece by piece)."""

    def __init__(self, sock, chunk=1 << 20):
        self.sock = sock
        self.buf = bytearray()
        self.chunk = chunk

    def _fill(self):
        b = self.sock.recv(self.chunk)
        if not b:
            raise EOFError("peer closed the connection")
        self.buf += b

    def read_until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("no %r within %d bytes" % (sep, limit))
            self._fill()

    def read_exact(self, n, sink=None):
        """n bytes: returned, or passed to sink(bytes-like) piece by piece
        (a view valid only during the call: copy what must be kept)."""
        parts = [] if sink is None else None
        take = min(n, len(self.buf))
        if take:
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            n -= take
            if sink is None:
                parts.append(piece)
            else:
                sink(piece)
        if n:
            buf = bytearray(min(n, self.chunk))
            view = memoryview(buf)
            while n:
                got = self.sock.recv_into(view[:min(n, len(buf))])
                if not got:
                    raise EOFError("peer closed with %d bytes missing" % n)
                n -= got
                if sink is None:
                    parts.append(bytes(view[:got]))
                else:
                    sink(view[:got])
        return b"".join(parts) if sink is None else None

    def read_to_eof(self, sink=None):
        parts = []
        if self.buf:
            (parts.append if sink is None else sink)(bytes(self.buf))
            self.buf.clear()
        while True:
            b = self.sock.recv(self.chunk)
            if not b:
                break
            (parts.append if sink is None else sink)(b)
        return b"".join(parts) if sink is None else None

    def read_head(self):
        """(status, reason, headers as [(name lower-case, value)])."""
        head = self.read_until(b"\r\n\r\n", limit=1 << 20).decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
        if not m:
            raise ValueError("not a status line: %r" % lines[0])
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
        return int(m.group(1)), m.group(2), headers

    def read_chunked(self, sink=None):
        """Decodes a chunked body; returns (body or None, raw chunk sizes)."""
        parts = []
        sizes = []
        # (read_exact hands a sink a view of a buffer it reuses: copy it.)
        put = (lambda b: parts.append(bytes(b))) if sink is None else sink
        while True:
            line = self.read_until(b"\r\n", limit=4096)
            size = int(line.split(b";")[0].strip(), 16)
            sizes.append(size)
            if size == 0:
                while self.read_until(b"\r\n", limit=65536) != b"\r\n":
                    pass  # trailers
                break
            self.read_exact(size, put)
            if self.read_exact(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        return (b"".join(parts) if sink is None else None), sizes

    def read_response(self, method="GET", sink=None):
        """One response: a Response with status, headers (dict, lower-case
        names, repeated ones joined with ", "), header_list, body (None when a
        sink took it), chunked, chunk_sizes."""
        status, reason, hl = self.read_head()
        r = Response(status, reason, hl)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            r.body = b"" if sink is None else None
        elif "chunked" in r.headers.get("transfer-encoding", "").lower():
            r.chunked = True
            r.body, r.chunk_sizes = self.read_chunked(sink)
        elif "content-length" in r.headers:
            r.body = self.read_exact(int(r.headers["content-length"]), sink)
        else:
            r.body = self.read_to_eof(sink)
        return r


class Response:
    def __init__(self, status, reason, header_list):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers = {}
        for k, v in header_list:
            self.headers[k] = self.headers[k] + ", " + v if k in self.headers else v
        self.body = None
        self.chunked = False
        self.chunk_sizes = []

    def json(self):
        return json.loads(self.body)


def connect(port, timeout=10.0):
    """A socket to 127.0.0.1:port and an HTTPReader on it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s, HTTPReader(s)


# WebSocket (RFC 6455) client pieces for raw sockets.

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept_for(key):
    import base64
    import hashlib
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(opcode, payload=b"", fin=True, mask=True):
    """One frame; clients mask (RFC 6455 5.3)."""
    import struct
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    if n:
        k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")
    return head + key + payload


def ws_read_frame(reader):
    """(fin, opcode, payload, masked) of the next frame."""
    import struct
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    key = reader.read_exact(4) if b1 & 0x80 else None
    payload = reader.read_exact(n) if n else b""
    if key and n:
        k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, payload, key is not None


def ws_read_message(reader, max_frames=100000):
    """(opcode, payload) of the next message, continuation frames joined;
    a control frame (close, ping, pong) is returned as its own message, also
    when it arrived between the fragments of a data message."""
    pending = reader.__dict__.setdefault("ws_pending", [])
    if pending:
        return pending.pop(0)
    fin, op, payload, _ = ws_read_frame(reader)
    if fin or op >= 8:
        return op, payload
    parts = [payload]
    for _ in range(max_frames):
        fin, cop, p, _ = ws_read_frame(reader)
        if cop >= 8:
            pending.append((cop, p))
            continue
        if cop != 0:
            raise ValueError("expected a continuation frame, got opcode %d" % cop)
        parts.append(p)
        if fin:
            return op, b"".join(parts)
    raise ValueError("message of more than %d frames" % max_frames)


def ws_connect(port, path, timeout=10.0, extra_headers=b""):
    """Sends a WebSocket upgrade; returns (socket, reader, Response head, key).
    The Response has no body read (a 101 has none)."""
    import base64
    key = base64.b64encode(os.urandom(16)).decode()
    s, rd = connect(port, timeout)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n" % (path, port, key)).encode()
              + extra_headers + b"\r\n")
    status, reason, hl = rd.read_head()
    r = Response(status, reason, hl)
    return s, rd, r, key


def first_difference(got, want):
    """A short description of where two byte strings first differ, or None."""
    if got == want:
        return None
    n = min(len(got), len(want))
    i = next((k for k in range(0, n, 4096)
              if got[k:min(k + 4096, n)] != want[k:min(k + 4096, n)]), None)
    if i is not None:
        i = next(k for k in range(i, min(i + 4096, n)) if got[k] != want[k])
        return "%d vs %d bytes, first difference at offset %d: got %s, want %s" % (
            len(got), len(want), i, bytes(got[i:i + 12]).hex(), bytes(want[i:i + 12]).hex())
    return "%d vs %d bytes, equal up to the shorter length" % (len(got), len(want))


# --------------------------------------------------------------------------
# The desync mitigation's observable parts (tests/test_e2e_desync*.py).

DESYNC_CLASSES = ("compliant", "acceptable", "ambiguous", "severe")


def desync_counts(admin_port):
    """lb_desync_requests_total by class, from the admin listener's /metrics
    (0 where a class has no sample)."""
    import promtext
    st, _, body = admin_get(admin_port, "/metrics")
    if st != 200:
        raise AssertionError("/metrics answered %d" % st)
    fams = promtext.parse(body.decode())
    return {k: promtext.sum_values(fams, "lb_desync_requests_total", **{"class": k})
            for k in DESYNC_CLASSES}


def read_access_log(path):
    """Every line of a JSON access log so far, parsed ({"unparsable": text}
    for a line that is not JSON); [] before the file exists."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsable": line.decode("latin-1")})
    return out


def instance_of(body):
    """The backend's instance_id in a JSON reply, or None."""
    try:
        return json.loads(body).get("instance_id")
    except ValueError:
        return None


class KeepAliveClient:
    """One keep-alive connection, reopened after an error. get() returns
    (status, instance_id, [Set-Cookie values]); (None, "Error: why", []) when
    the exchange failed."""

    def __init__(self, port, timeout=10):
        self.port, self.timeout = port, timeout
        self.conn = None

    def get(self, path, cookie=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"Cookie": cookie} if cookie else {}
        try:
            self.conn.request("GET", path, headers=headers)
            r = self.conn.getresponse()
            body = r.read()
            cookies = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
            if r.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, "%s: %s" % (type(e).__name__, e), []
        return r.status, instance_of(body), cookies

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ClientLoad:
    """`threads` closed-loop KeepAliveClients for at most `seconds` (or until
    stop()): results [(time.monotonic() at the answer, status, instance)]."""

    def __init__(self, port, path, threads, seconds):
        self.port, self.path, self.seconds = port, path, seconds
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        self.deadline = time.monotonic() + self.seconds
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(self.seconds + 30)
        return self.results

    def stop(self):
        self.stopping.set()
        return self.join()

    def _run(self):
        c = KeepAliveClient(self.port)
        mine = []
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                st, inst, _ = c.get(self.path)
                mine.append((time.monotonic(), st, inst))
        finally:
            c.close()
            with self.lock:
                self.results.extend(mine)


def tally(results):
    """ClientLoad results as counts of (status, instance or "error")."""
    counts = {}
    for _, st, inst in results:
        key = (st, inst if st is not None else "error")
        counts[key] = counts.get(key, 0) + 1
    return counts


class Sampler:
    """Calls fn() every `every` s on a thread until stop(): [(clock(), value)]."""

    def __init__(self, fn, every=0.05, clock=time.monotonic):
        self.fn, self.every, self.clock = fn, every, clock
        self.samples = []
        self.errors = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        return self.samples

    def wait_past(self, t, timeout=5.0):
        """Until a sample taken after clock() t exists (a slow build may lag)."""
        wait_until(lambda: self.samples and self.samples[-1][0] > t, timeout)

    def _run(self):
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                v = self.fn()
                self.samples.append((self.clock(), v))
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))
            self.stopping.wait(max(0.0, self.every - (time.monotonic() - t)))
