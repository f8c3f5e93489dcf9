"""The proxy at its file-descriptor limit: it pauses its listener with a
backoff instead of spinning on EMFILE, logs a line per interval rather than
per refusal, caps max_connections by RLIMIT_NOFILE (raised to its hard limit
at start), and serves again once descriptors are free."""

import os
import re
import resource
import socket
import time
import unittest

import lbtest
from lbtest import LBTestCase, get, wait_routable, wait_status, wait_until

# CPU seconds a proxy at its limit may burn in MEASURE_S. A paused listener
# uses next to nothing; the old spinning one used a whole core (about 3 s).
# ASan slows the few wake-ups it has but nowhere near this bound: the same
# bound holds in the sanitizer build.
CPU_BOUND_S = 0.5
MEASURE_S = 3.0
# Time-based waits only are relaxed under the sanitizers.
SLOW = 3.0 if lbtest.SANITIZE else 1.0


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_over(pid, seconds):
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def open_clients(port, n, request=None):
    """n connections to port (those the kernel refuses are skipped), each
    sent `request` when given; returned open."""
    out = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            if request:
                s.sendall(request)
            out.append(s)
        except OSError:
            pass
    return out


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def accept_lines(log):
    return [l for l in log.splitlines() if "accept" in l.lower()]


class FdLimitTest(LBTestCase):
    def serves_again(self, p):
        """A GET through the proxy answers 200 within a few seconds (the
        health checks, which failed while no descriptor was free, may need
        two rounds to readmit the backend)."""
        st = wait_status(p.port, "/cluster1/after", 200, timeout=15 * SLOW)
        self.assertEqual(st, 200, "no 200 after the clients left:\n" + p.log()[-4000:])

    def assert_quiet(self, p, what):
        cpu = cpu_over(p.pid, MEASURE_S)
        print("%s: proxy used %.3f CPU s in %.0f s" % (what, cpu, MEASURE_S))
        self.assertLess(cpu, CPU_BOUND_S, "%s: the proxy spins (%.2f CPU s in %.0f s); log:\n%s"
                        % (what, cpu, MEASURE_S, p.log()[-3000:]))
        lines = accept_lines(p.log())
        self.assertLess(len(lines), 20, "%s: %d log lines about accept, e.g.:\n%s"
                        % (what, len(lines), "\n".join(lines[:10])))
        return cpu

    def starve(self, p, free):
        """Lowers the running proxy's RLIMIT_NOFILE to `free` above the
        descriptors it has open now (it computed its cap from the old one)."""
        limit = open_fds(p.pid) + free
        resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (limit, 1024))
        return limit

    def wait_emfile(self, p):
        paused = wait_until(lambda: "accept: Too many open files" in p.log(), 5 * SLOW)
        self.assertTrue(paused, "the proxy never hit EMFILE:\n" + p.log()[-3000:])

    def test_a_low_nofile_does_not_spin(self):
        """64 descriptors: more clients than the proxy can hold."""
        b = self.backend()
        p = self.proxy(routes={"/cluster1": [b]}, threads=1,
                       wrapper=["prlimit", "--nofile=64:64", "--"])
        self.assertEqual(wait_routable(p.port, timeout=10 * SLOW), 200, p.log())
        socks = open_clients(p.port, 120)
        try:
            time.sleep(0.3 * SLOW)  # the proxy takes in (or refuses) what it can
            self.assert_quiet(p, "RLIMIT_NOFILE 64")
        finally:
            close_all(socks)
        self.serves_again(p)

    def test_b_emfile_pauses_listener(self):
        """Descriptors run out below max_connections (the limit lowered under
        the running proxy, and slow requests holding a backend socket each):
        accept really fails with EMFILE, and the listener backs off."""
        b = self.backend()
        p = self.proxy(routes={"/cluster1": [b]}, threads=1,
                       config={"limits": {"max_connections": 100000}},
                       wrapper=["prlimit", "--nofile=1024:1024", "--"])
        self.assertEqual(wait_routable(p.port, timeout=10 * SLOW), 200, p.log())
        # max_connections capped to (1024 - 64) * 3/4 = 720 at start: more than
        # the clients below, so descriptors run out first.
        limit = self.starve(p, 24)
        slow = b"GET /cluster1/delay/3000 HTTP/1.1\r\nHost: x\r\n\r\n"
        socks = open_clients(p.port, 20, slow) + open_clients(p.port, 100)
        try:
            self.wait_emfile(p)
            self.assert_quiet(p, "EMFILE")
            self.assertRegex(p.log(), r"accept: Too many open files \(RLIMIT_NOFILE %d\): "
                             r"listener paused" % limit)
        finally:
            close_all(socks)
        self.serves_again(p)

    def test_d_drain_while_paused(self):
        """SIGTERM while the listener is paused: the drain closes the idle
        clients and the listener, and the proxy exits 0 at once."""
        p = self.proxy(threads=1, wrapper=["prlimit", "--nofile=1024:1024", "--"])
        self.starve(p, 16)
        socks = open_clients(p.port, 60)
        try:
            self.wait_emfile(p)
            t0 = time.monotonic()
            rc = p.stop(timeout=10 * SLOW)
            took = time.monotonic() - t0
        finally:
            close_all(socks)
        self.assertEqual(rc, 0, p.log()[-3000:])
        self.assertLess(took, 3 * SLOW, "drain took %.1f s:\n%s" % (took, p.log()[-3000:]))

    def test_c_startup_logs_raised_and_capped_limit(self):
        p = self.proxy(threads=1, config={"limits": {"max_connections": 100000}},
                       wrapper=["prlimit", "--nofile=256:1024", "--"])
        log = wait_until(lambda: "capped" in p.log() and p.log(), 5 * SLOW) or p.log()
        self.assertRegex(log, r"RLIMIT_NOFILE.*\b256\b.*\b1024\b")
        # 3/4 of the descriptors for clients, the rest for backend sockets
        self.assertRegex(log, r"max_connections 100000 capped to 720\b.*RLIMIT_NOFILE 1024")
        # the cap holds: 720 clients held, the next ones closed at once
        socks = open_clients(p.port, 730)
        try:
            self.assertEqual(len(socks), 730)
            closed = 0
            for s in socks[-10:]:
                s.settimeout(2 * SLOW)
                try:
                    closed += s.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            self.assertEqual(closed, 10, "clients beyond the cap of 720 left open:\n" + p.log()[-2000:])
        finally:
            close_all(socks)


if __name__ == "__main__":
    unittest.main()
