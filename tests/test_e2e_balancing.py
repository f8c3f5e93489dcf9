"""Choosing a backend (DESIGN.md, "Choosing a backend"): the strategies keep
traffic off a slow backend (round-robin does not), active and passive health
checks take a dead backend out of rotation and bring it back, a flapping one
moves no more than its thresholds allow, and a cluster with no healthy
backend answers 503 at once. Runs once per engine (LB_ENGINE).

The proxy logs each health change once on stderr, in this form:
    backend 127.0.0.1:9101 (cluster1): healthy -> unhealthy (<reason>)"""

import http.client
import json
import re
import statistics
import threading
import time
import unittest

from lbtest import LBTestCase, SharedLBTestCase, free_port, get, request_log, wait_status, wait_until

# Short health checks so that a test sees several in a few seconds.
INTERVAL_MS = 200
TIMEOUT_MS = 150
HEALTHY = 2
UNHEALTHY = 2

TRANSITION = re.compile(r"backend (\S+) \(([^)\s]+)\): (healthy|unhealthy) -> (healthy|unhealthy) "
                        r"\((.*)\)\s*$")


def cluster_config(backends, strategy=None, interval_ms=INTERVAL_MS, timeout_ms=TIMEOUT_MS,
                   healthy=HEALTHY, unhealthy=UNHEALTHY, name="cluster1"):
    """A proxy configuration with one cluster, /cluster1, on these backends
    (Backend or "host:port")."""
    c = {"name": name, "path_prefix": "/" + name,
         "backends": [b if isinstance(b, str) else b.addr for b in backends],
         "health_check": {"path": "/health", "interval_ms": interval_ms, "timeout_ms": timeout_ms,
                          "healthy_threshold": healthy, "unhealthy_threshold": unhealthy,
                          "expect_status": "200-399"}}
    if strategy:
        c["strategy"] = strategy
    return {"clusters": [c]}


def transitions(proxy, addr=None):
    """The proxy's health-change lines as (addr, cluster, from, to, reason),
    in log order; only those of addr when given."""
    out = []
    for line in proxy.log().splitlines():
        m = TRANSITION.search(line)
        if m and (addr is None or m.group(1) == addr):
            out.append(m.groups())
    return out


def has_transition(proxy, addr, to):
    return any(t[3] == to for t in transitions(proxy, addr))


class Load:
    """Closed-loop GET load from `threads` client threads, each with its own
    keep-alive http.client connection (reopened after an error). Stops after
    `total` requests (when given), at stop(), or at `max_s`, whichever comes
    first. Every result is (t_sent, t_done, status or None, instance_id or
    None, error text or None), times from time.monotonic()."""

    def __init__(self, port, path, threads, total=None, max_s=20.0, timeout=10.0):
        self.port, self.path, self.total, self.timeout = port, path, total, timeout
        self.results = []
        self.lock = threading.Lock()
        self.issued = 0
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + max_s
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        return self.join()

    def join(self):
        for t in self.threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + self.timeout + 5)
        return self.results

    def _take(self):
        with self.lock:
            if self.total is not None and self.issued >= self.total:
                return False
            self.issued += 1
            return True

    def _run(self):
        conn = None
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline and self._take():
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                t0 = time.monotonic()
                status = inst = err = None
                try:
                    conn.request("GET", self.path)
                    r = conn.getresponse()
                    body = r.read()
                    status = r.status
                    if status == 200:
                        inst = json.loads(body).get("instance_id")
                    if r.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException, ValueError) as e:
                    err = "%s: %s" % (type(e).__name__, e)
                    conn.close()
                    conn = None
                with self.lock:
                    self.results.append((t0, time.monotonic(), status, inst, err))
        finally:
            if conn is not None:
                conn.close()


def share_of(results, instance_id):
    got = [r for r in results if r[2] == 200]
    return sum(1 for r in got if r[3] == instance_id) / max(1, len(got))


def failures(results):
    return [r for r in results if r[2] != 200 or r[4]]


def describe_failures(results, t0, limit=8):
    bad = failures(results)
    lines = ["%d of %d requests failed; first ones (sent/done s after start, status, error):"
             % (len(bad), len(results))]
    for r in sorted(bad)[:limit]:
        lines.append("  %.3f %.3f %s %s" % (r[0] - t0, r[1] - t0, r[2], r[4]))
    return "\n".join(lines)


class SlowBackend(SharedLBTestCase):
    """Four backends, the first 50 ms slower: the latency-aware strategies
    keep it under 10% of 2,000 requests from 32 clients; round-robin gives
    it its quarter."""

    REQUESTS = 2000
    CLIENTS = 32

    @classmethod
    def start_shared(cls):
        cls.slow = cls.shared_backend("slow-1", "cluster1", args=["--delay-ms", "50"])
        cls.fast = [cls.shared_backend("fast-%d" % i, "cluster1") for i in (2, 3, 4)]
        cls.backends = [cls.slow] + cls.fast

    def run_strategy(self, strategy):
        p = self.proxy(config=cluster_config(self.backends, strategy))
        self.assertEqual(wait_status(p.port, "/cluster1/x", 200, timeout=5), 200, p.log()[-3000:])
        time.sleep(1.0)  # a few health checks: every backend has a probed latency
        t0 = time.monotonic()
        results = Load(p.port, "/cluster1/x", self.CLIENTS, total=self.REQUESTS, max_s=15).start().join()
        took = time.monotonic() - t0
        self.assertEqual(len(results), self.REQUESTS,
                         "only %d of %d requests in %.1fs" % (len(results), self.REQUESTS, took))
        self.assertFalse(failures(results), describe_failures(results, t0))
        counts = {b.instance_id: sum(1 for r in results if r[3] == b.instance_id)
                  for b in self.backends}
        self.assertEqual(sum(counts.values()), self.REQUESTS, counts)
        return share_of(results, self.slow.instance_id), counts, took, p

    def check_avoids_slow(self, strategy):
        share, counts, took, p = self.run_strategy(strategy)
        self.assertLess(share, 0.10, "%s sent %.1f%% to the slow backend: %r (%.1fs)"
                        % (strategy, 100 * share, counts, took))
        # All healthy: no backend changed state.
        self.assertEqual(transitions(p), [], p.log()[-3000:])

    def test_peak_ewma(self):
        self.check_avoids_slow("peak-ewma")

    def test_fastest(self):
        self.check_avoids_slow("fastest")

    def test_least_outstanding(self):
        self.check_avoids_slow("least-outstanding")

    def test_round_robin_shares(self):
        share, counts, took, _ = self.run_strategy("round-robin")
        self.assertGreaterEqual(share, 0.20, counts)
        self.assertLessEqual(share, 0.30, counts)

    def test_default_is_latency_aware(self):
        # No strategy in the config: peak-ewma, also through --route.
        p = self.proxy(routes={"/cluster1": self.backends})
        self.assertEqual(wait_status(p.port, "/cluster1/x", 200, timeout=5), 200)
        time.sleep(1.0)
        results = Load(p.port, "/cluster1/x", self.CLIENTS, total=1000, max_s=15).start().join()
        self.assertFalse(failures(results), describe_failures(results, results[0][0]))
        self.assertLess(share_of(results, self.slow.instance_id), 0.10)


class DeadBackend(LBTestCase):
    """A backend killed under load: no client error (connect failures are
    retried on another backend), out of rotation within unhealthy_threshold
    checks, back after healthy_threshold checks once restarted."""

    CLIENTS = 8

    def kill_and_restart(self, strategy):
        others = [self.backend("b%d" % i, "cluster1") for i in (1, 2, 3)]
        # One thread: its log is in the order it served.
        victim = self.backend("victim", "cluster1", threads=1)
        p = self.proxy(config=cluster_config(others + [victim], strategy))
        self.assertEqual(wait_status(p.port, "/cluster1/x", 200, timeout=5), 200)
        time.sleep(0.5)

        t0 = time.monotonic()
        load = Load(p.port, "/cluster1/x", self.CLIENTS, max_s=10.0).start()
        try:
            time.sleep(1.0)
            self.assertEqual(victim.stop(), 0)  # SIGTERM by PID; waits for it
            t_kill = time.monotonic()
            # Out within unhealthy_threshold checks and one more interval.
            bound = (UNHEALTHY * INTERVAL_MS + INTERVAL_MS) / 1000.0
            out = wait_until(lambda: has_transition(p, victim.addr, "unhealthy"), bound + 2.0)
            t_out = time.monotonic()
            self.assertTrue(out, "no '%s ... healthy -> unhealthy' line %.1fs after the kill:\n%s"
                            % (victim.addr, bound + 2.0, p.log()[-3000:]))
            self.assertLessEqual(t_out - t_kill, bound + 0.3,
                                 "marked unhealthy %.2fs after the kill" % (t_out - t_kill))
            time.sleep(0.8)  # load on the three others only
            t_restart = time.monotonic()
            again = self.backend("victim", "cluster1", port=victim.port, threads=1)
            back = wait_until(lambda: transitions(p, victim.addr)[-1][3] == "healthy", 3.0)
            self.assertTrue(back, "no '... unhealthy -> healthy' line 3s after the restart:\n%s"
                            % p.log()[-3000:])
            served = wait_until(lambda: [l for l in request_log(again) if "/cluster1/" in l[4]],
                                3.0)
            t_served = time.monotonic()
        finally:
            results = load.stop()

        self.assertFalse(failures(results), describe_failures(results, t0) + (
            "\n(killed at %.3f, marked unhealthy by %.3f, restarted at %.3f)\n%s"
            % (t_kill - t0, t_out - t0, t_restart - t0, p.log()[-3000:])))
        self.assertTrue(served, "the restarted backend got no request in 3s:\n" + again.log()[-2000:])
        # Between "unhealthy" and the restart, the three others served everything;
        # afterwards the victim (a new process, same id) served again.
        during = [r for r in results if t_out + 0.05 <= r[0] and r[1] <= t_restart]
        self.assertTrue(during)
        self.assertFalse([r for r in during if r[3] == "victim"])
        later = [r for r in results if r[0] >= t_restart and r[3] == "victim"]
        self.assertTrue(later, "no reply from the restarted backend (%.1fs to its first request)"
                        % (t_served - t_restart))
        # It served live requests only after healthy_threshold successful checks.
        lines = request_log(again)
        first_live = next(i for i, l in enumerate(lines) if "/cluster1/" in l[4])
        checks_before = [l for l in lines[:first_live] if l[4] == "/health" and l[5] == "200"]
        self.assertGreaterEqual(len(checks_before), HEALTHY,
                                "live requests before %d checks:\n%s"
                                % (HEALTHY, again.log()[-2000:]))
        # One line per change, for the victim only, and a reason in each.
        tr = transitions(p)
        self.assertEqual([(t[0], t[1], t[2], t[3]) for t in tr],
                         [(victim.addr, "cluster1", "healthy", "unhealthy"),
                          (victim.addr, "cluster1", "unhealthy", "healthy")], p.log()[-3000:])
        self.assertTrue(all(t[4].strip() for t in tr), tr)

    def test_kill_and_restart_round_robin(self):
        self.kill_and_restart("round-robin")

    def test_kill_and_restart_peak_ewma(self):
        self.kill_and_restart("peak-ewma")


class Flapping(LBTestCase):
    """A backend whose /health answers 200 and 503 in turn."""

    WATCH_S = 3.0

    def test_thresholds_two_never_change_state(self):
        # Consecutive counts never pass 1 either way: no change, ever.
        steady = self.backend("steady", "cluster1")
        flip = self.backend("flip", "cluster1", args=["--health-flip"])
        p = self.proxy(config=cluster_config([steady, flip], "round-robin"))
        self.assertEqual(wait_status(p.port, "/cluster1/x", 200, timeout=5), 200)
        time.sleep(self.WATCH_S)
        checks = [l for l in request_log(flip) if l[4] == "/health"]
        self.assertGreaterEqual(len(checks), int(self.WATCH_S * 1000 / INTERVAL_MS) // 2,
                                "too few health checks of the flapping backend")
        self.assertIn("503", [l[5] for l in checks])
        self.assertEqual(transitions(p, flip.addr), [], p.log()[-3000:])
        # Still in rotation: it answers live requests.
        results = Load(p.port, "/cluster1/x", 4, total=200, max_s=10).start().join()
        self.assertFalse(failures(results), describe_failures(results, results[0][0]))
        self.assertGreater(share_of(results, "flip"), 0.2)

    def test_thresholds_one_at_most_one_change_per_check(self):
        steady = self.backend("steady", "cluster1")
        flip = self.backend("flip", "cluster1", args=["--health-flip"])
        t0 = time.monotonic()
        p = self.proxy(config=cluster_config([steady, flip], "round-robin", healthy=1, unhealthy=1))
        time.sleep(self.WATCH_S)
        tr = transitions(p, flip.addr)
        elapsed = time.monotonic() - t0
        limit = elapsed * 1000 / INTERVAL_MS + 1
        self.assertGreaterEqual(len(tr), 3, "a flapping backend with thresholds 1 did not change "
                                "state:\n" + p.log()[-3000:])
        self.assertLessEqual(len(tr), limit, "%d changes in %.1fs of %d ms checks:\n%s"
                             % (len(tr), elapsed, INTERVAL_MS, "\n".join(map(str, tr))))
        # Each one a real change, alternating, starting from healthy.
        want = "healthy"
        for t in tr:
            self.assertEqual(t[2], want, tr)
            want = "unhealthy" if want == "healthy" else "healthy"
            self.assertEqual(t[3], want, tr)
        self.assertEqual(transitions(p, steady.addr), [])
        # The steady one keeps serving throughout.
        for _ in range(10):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200)


class AllDown(LBTestCase):
    """No backend listening: once both are known unhealthy, 503 at once."""

    def test_fast_503(self):
        ports = [free_port(), free_port()]
        addrs = ["127.0.0.1:%d" % port for port in ports]
        p = self.proxy(config=cluster_config(addrs))
        # Live requests fail over (502 while the table learns) and count
        # toward the threshold; the checks mark them too.
        def both_down():
            try:
                get(p.port, "/cluster1/x", timeout=2)
            except (OSError, http.client.HTTPException):
                pass
            return all(has_transition(p, a, "unhealthy") for a in addrs)

        self.assertTrue(wait_until(both_down, 5.0, 0.05),
                        "not both marked unhealthy in 5s:\n" + p.log()[-3000:])
        times, statuses = [], []
        for _ in range(20):
            t = time.monotonic()
            st, _, body = get(p.port, "/cluster1/x", timeout=5)
            times.append(time.monotonic() - t)
            statuses.append(st)
        self.assertEqual(statuses, [503] * 20, p.log()[-3000:])
        self.assertLess(statistics.median(times), 0.05, times)
        # One line per backend: they stay unhealthy.
        for a in addrs:
            self.assertEqual([t[3] for t in transitions(p, a)], ["unhealthy"], p.log()[-3000:])

    def all_down_proxy(self):
        addrs = ["127.0.0.1:%d" % free_port() for _ in range(2)]
        p = self.proxy(config=cluster_config(addrs))
        # The checks alone mark them: 2 failures at 200 ms.
        self.assertTrue(wait_until(lambda: all(has_transition(p, a, "unhealthy") for a in addrs),
                                   3.0), p.log()[-3000:])
        return p

    def test_fast_503_keepalive(self):
        # The same with a keep-alive client (reconnecting if the proxy closes).
        p = self.all_down_proxy()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        try:
            times = []
            for _ in range(20):
                t = time.monotonic()
                c.request("GET", "/cluster1/x")
                r = c.getresponse()
                r.read()
                times.append(time.monotonic() - t)
                self.assertEqual(r.status, 503)
                if r.will_close:
                    c.close()
        finally:
            c.close()
        self.assertLess(statistics.median(times), 0.05, times)

    def test_503_keeps_connection(self):
        # README, "Errors": 503 (no healthy backend) keeps the connection.
        p = self.all_down_proxy()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        try:
            for i in range(3):
                c.request("GET", "/cluster1/x")
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 503)
                self.assertFalse(r.will_close, "request %d: 503 with %r" % (
                    i + 1, r.getheader("Connection")))
        finally:
            c.close()

if __name__ == "__main__":
    unittest.main()
