"""Harness for the end-to-end tests: starts real `backend`s and the real
`proxy` on 127.0.0.1, stops them by PID, and gives small clients.

Environment (set by CTest): PROXY_BIN, BACKEND_BIN, LB_ENGINE (uring, epoll
or any), LB_SANITIZE (1 in the ASan build)."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("LB_BUILD_DIR", os.path.join(HERE, "..", "build"))
PROXY_BIN = os.environ.get("PROXY_BIN", os.path.join(BUILD, "proxy"))
BACKEND_BIN = os.environ.get("BACKEND_BIN", os.path.join(BUILD, "backend"))
ENGINE = os.environ.get("LB_ENGINE", "any")
SANITIZE = os.environ.get("LB_SANITIZE", "0") in ("1", "ON", "true")

_used_ports = set()


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


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %d before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
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

    def stop(self, sig=signal.SIGTERM, timeout=30):
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
    def __init__(self, instance_id="b1", cluster="cluster1", args=(), port=None, threads=2):
        self.port = port or free_port()
        self.instance_id = instance_id
        argv = [BACKEND_BIN, "--host", "127.0.0.1", "--port", str(self.port),
                "--instance-id", instance_id, "--cluster", cluster,
                "--threads", str(threads)] + list(args)
        super().__init__(argv, "backend-" + instance_id)
        wait_port(self.port, self.proc)
        self.addr = "127.0.0.1:%d" % self.port

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


class Proxy(Process):
    """The proxy on a free port. `routes` maps prefix -> list of Backend or
    "host:port"; `config` is a dict written to a JSON file (its listen is
    set to the chosen port)."""

    def __init__(self, routes=None, config=None, args=(), threads=2, engine=None, wait=True):
        self.port = free_port()
        engine = engine or (ENGINE if ENGINE != "any" else "auto")
        argv = [PROXY_BIN, "--listen", "127.0.0.1:%d" % self.port, "--threads", str(threads),
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
        if wait:
            try:
                wait_port(self.port, self.proc)
            except RuntimeError as e:
                raise RuntimeError("%s\n--- proxy log ---\n%s" % (e, self.log()))

    def cleanup(self):
        super().cleanup()
        if self.config_path:
            os.unlink(self.config_path)


class LBTestCase(unittest.TestCase):
    """Stops every process it started, by PID, after each test."""

    def setUp(self):
        self._procs = []

    def tearDown(self):
        for p in reversed(self._procs):
            p.cleanup()

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
