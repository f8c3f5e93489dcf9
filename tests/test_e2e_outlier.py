"""Outlier detection and the failure penalty (DESIGN.md, "Faults, warm-up and
affinity (per cluster)" and "Choosing a backend"): a backend answering 5xx in
a row is ejected for base_ejection_ms x times ejected, readmitted when its
time is up, and ejected again for twice as long; no more than
max_ejection_percent of a cluster is out at once; and every latency-aware
strategy keeps a fast-failing backend's share small before any ejection (and
with outlier detection off). Runs once per engine (LB_ENGINE).

The proxy logs (stderr, wall-clock timestamps to the millisecond):
    <ts> proxy[PID] warn: backend ADDR (CLUSTER): ejected for N ms (K consecutive 5xx...; ejection M)
    <ts> proxy[PID] info: backend ADDR (CLUSTER): readmitted (ejection M over)"""

import calendar
import json
import re
import time
import unittest

import promtext
from lbtest import (SANITIZE, admin_metrics, admin_status, ClientLoad, free_port, KeepAliveClient,
                    LBTestCase, Sampler, wait_admin, wait_status, wait_until)

TS = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"
EJECTED = re.compile(TS + r" \S+ \w+: backend (\S+) \(([^)\s]+)\): ejected for (\d+) ms "
                     r"\((\d+) (consecutive [^,;]*)[^;]*; ejection (\d+)\)")
READMITTED = re.compile(TS + r" \S+ \w+: backend (\S+) \(([^)\s]+)\): readmitted")


def log_time(text):
    """A log timestamp (UTC, ms) as seconds since the epoch."""
    day, frac = text.split(".")
    return calendar.timegm(time.strptime(day, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000.0


def ejections_logged(proxy, addr=None):
    """[(t, addr, cluster, ms, count, what, nth)] in log order."""
    out = []
    for m in EJECTED.finditer(proxy.log()):
        if addr is None or m.group(2) == addr:
            out.append((log_time(m.group(1)), m.group(2), m.group(3), int(m.group(4)),
                        int(m.group(5)), m.group(6), int(m.group(7))))
    return out


def readmissions_logged(proxy, addr=None):
    """[(t, addr, cluster)] in log order."""
    return [(log_time(m.group(1)), m.group(2), m.group(3))
            for m in READMITTED.finditer(proxy.log()) if addr is None or m.group(2) == addr]


def cluster_config(backends, admin, strategy="round-robin", outlier=None, name="cluster1",
                   interval_ms=300):
    c = {"name": name, "path_prefix": "/" + name, "strategy": strategy,
         "backends": [b.addr for b in backends],
         # generous: the health checks must never take anyone out here
         "health_check": {"path": "/health", "interval_ms": interval_ms, "timeout_ms": interval_ms,
                          "healthy_threshold": 2, "unhealthy_threshold": 5}}
    if outlier is not None:
        c["outlier_detection"] = outlier
    return {"admin": "127.0.0.1:%d" % admin, "clusters": [c]}






def backend_rows(admin, cluster="cluster1"):
    """{address: /status row} of the cluster."""
    for c in admin_status(admin)["clusters"]:
        if c["name"] == cluster:
            return {b["address"]: b for b in c["backends"]}
    raise AssertionError("no cluster %s in /status" % cluster)


class EjectionTimings(LBTestCase):
    """One of three backends answers 500 to everything (its /health stays
    200): with round-robin and sequential requests, exactly 5 500s reach the
    client, then it is ejected for base_ejection_ms (none of its answers
    while out), readmitted when that is over (picks compare the clock; the
    log says so within ~100 ms), and after exactly 5 more 500s ejected again
    for twice as long."""

    BASE_MS = 1500

    def cycle(self, pace_s):
        """Sequential requests (pace_s apart after the first ejection) until
        the failing backend's second ejection, /status polled every 20 ms
        meanwhile. Returns a dict of what was seen."""
        ok1 = self.backend("ok-1", "cluster1")
        bad = self.backend("bad-1", "cluster1", args=["--fail-status", "500"])
        ok2 = self.backend("ok-2", "cluster1")
        admin = free_port()
        p = self.proxy(config=cluster_config(
            [ok1, bad, ok2], admin, outlier={"consecutive_5xx": 5,
                                             "base_ejection_ms": self.BASE_MS,
                                             "interval_ms": 100}))
        wait_admin(admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200,
                         p.log()[-3000:])
        c = KeepAliveClient(p.port)
        self.addCleanup(c.close)
        seen = []  # (t, status, instance)

        def one():
            st, inst, _ = c.get("/cluster1/x")
            seen.append((time.monotonic(), st, inst))
            self.assertIn(st, (200, 500), "%s %s\n%s" % (st, inst, p.log()[-3000:]))

        # Phase 1: until the ejection line (the 5th 500 triggers it).
        for _ in range(200):
            one()
            if ejections_logged(p, bad.addr):
                break
        first = ejections_logged(p, bad.addr)
        self.assertTrue(first, "no ejection after %d requests:\n%s" % (len(seen), p.log()[-3000:]))
        fails_before = [s for s in seen if s[1] == 500]
        self.assertEqual(len(fails_before), 5, "500s before the ejection: %r" % fails_before)
        self.assertTrue(all(s[2] == "bad-1" for s in fails_before), fails_before)
        self.assertEqual(first[0][3:], (self.BASE_MS, 5, "consecutive 5xx", 1), first)
        row = backend_rows(admin)[bad.addr]
        self.assertTrue(row["ejected"], row)
        self.assertLessEqual(row["ejected_for_ms"], self.BASE_MS, row)
        self.assertGreater(row["ejected_for_ms"], self.BASE_MS - 300, row)
        self.assertEqual(row["ejections"], 1, row)
        self.assertEqual(promtext.value(admin_metrics(admin), "lb_backend_ejected", cluster="cluster1",
                                        backend=bad.addr), 1)

        # Phase 2: requests until the second ejection.
        poll = Sampler(lambda: backend_rows(admin)[bad.addr]["ejected"]).start()
        n_phase1 = len(seen)
        try:
            deadline = time.monotonic() + self.BASE_MS / 1000 * 3 + 2
            while time.monotonic() < deadline and len(ejections_logged(p, bad.addr)) < 2:
                one()
                time.sleep(pace_s)
        finally:
            samples = poll.stop()
        self.assertFalse(poll.errors, poll.errors[:3])
        ej = ejections_logged(p, bad.addr)
        self.assertEqual(len(ej), 2, "no second ejection:\n" + p.log()[-3000:])
        later = seen[n_phase1:]
        fails = [s for s in later if s[1] == 500]
        self.assertTrue(fails, "no 500 after the readmission")
        return {"proxy": p, "admin": admin, "bad": bad, "good": (ok1, ok2),
                "t_fifth": fails_before[-1][0], "later": later, "fails": fails,
                "ejections": ej, "readmissions": readmissions_logged(p, bad.addr),
                "polled": samples}

    def check_readmission_logged(self, r):
        ej, rd = r["ejections"], r["readmissions"]
        self.assertEqual(len(rd), 1, "readmission lines for %s: %r\n%s"
                         % (r["bad"].addr, rd, r["proxy"].log()[-3000:]))
        self.assertGreaterEqual(rd[0][0] - ej[0][0], self.BASE_MS / 1000 - 0.002)
        self.assertLess(rd[0][0] - ej[0][0], self.BASE_MS / 1000 + 0.15)
        self.assertLessEqual(rd[0][0], ej[1][0])

    def check_five_more(self, r):
        t0 = r["t_fifth"]
        self.assertEqual(len(r["fails"]), 5,
                         "500s from the readmission to the second ejection (s after the first "
                         "ejection): %r; log:\n%s"
                         % ([round(t - t0, 3) for t, _, _ in r["fails"]],
                            r["proxy"].log()[-1500:]))

    def test_ejection_readmission_and_multiplier(self):
        r = self.cycle(0.002)  # the failing backend gets a request every ~10 ms
        t_fifth, later, fails, ej = r["t_fifth"], r["later"], r["fails"], r["ejections"]
        bad, admin = r["bad"], r["admin"]
        # none while it was out, then back when its time was up (client clock)
        back_after = fails[0][0] - t_fifth
        self.assertGreaterEqual(back_after, self.BASE_MS / 1000 - 0.02,
                                "a 500 %.3fs into a %d ms ejection" % (back_after, self.BASE_MS))
        self.assertLess(back_after, self.BASE_MS / 1000 + 0.4)
        ok_while_out = [s for s in later if s[0] < fails[0][0]]
        self.assertGreater(len(ok_while_out), 100, "too few requests while it was out")
        self.assertEqual({s[1] for s in ok_while_out}, {200})
        self.assertEqual({s[2] for s in ok_while_out}, {"ok-1", "ok-2"})
        # /status said "ejected" at once, and no longer once its time was up
        out = [t for t, v in r["polled"] if v]
        self.assertTrue(out, "/status never showed it ejected")
        self.assertLess(out[0] - t_fifth, 0.1)
        freed = [t for t, v in r["polled"] if not v]
        if freed:  # (a poll may miss the few ms before it is ejected again)
            self.assertGreaterEqual(freed[0] - t_fifth, self.BASE_MS / 1000 - 0.02)
            self.assertLess(freed[0] - t_fifth, self.BASE_MS / 1000 + 0.4)
        # exactly 5 more 500s, then out for twice as long
        self.check_five_more(r)
        self.assertEqual(ej[1][3:], (2 * self.BASE_MS, 5, "consecutive 5xx", 2), ej)
        gap = ej[1][0] - ej[0][0]
        self.assertGreaterEqual(gap, self.BASE_MS / 1000 - 0.002, ej)
        self.assertLess(gap, self.BASE_MS / 1000 + 0.4, ej)
        row = backend_rows(admin)[bad.addr]
        self.assertTrue(row["ejected"], row)
        self.assertGreater(row["ejected_for_ms"], 2 * self.BASE_MS - 500, row)
        self.assertEqual(row["ejections"], 2, row)
        fams = admin_metrics(admin)
        self.assertEqual(promtext.value(fams, "lb_backend_ejections_total", cluster="cluster1",
                                        backend=bad.addr), 2)
        for b in r["good"]:
            self.assertEqual(promtext.value(fams, "lb_backend_ejections_total",
                                            cluster="cluster1", backend=b.addr), 0)
        # the healthy ones were never ejected, and nothing changed health
        self.assertEqual([e[1] for e in ejections_logged(r["proxy"])], [bad.addr, bad.addr])
        self.assertNotIn("-> unhealthy", r["proxy"].log())
        # and the readmission was logged (also when it was ejected again at once)
        self.check_readmission_logged(r)

    def test_failures_just_after_readmission_count(self):
        # Slower: the failing backend gets a request every ~40 ms, so one or
        # two arrive between its time being up and the readmission's log
        # line; they are 5xx in a row like any other.
        r = self.cycle(0.012)
        self.check_readmission_logged(r)
        self.check_five_more(r)
        self.assertEqual(r["ejections"][1][3:], (2 * self.BASE_MS, 5, "consecutive 5xx", 2),
                         r["ejections"])


class EjectionCap(LBTestCase):
    """Four backends all answering 500: at most max_ejection_percent (50%: 2)
    are out at once, and the cluster keeps answering (their 500s, never a
    503 of its own)."""

    def test_at_most_half_ejected_and_never_503(self):
        bs = [self.backend("f-%d" % i, "cluster1", args=["--fail-status", "500"])
              for i in range(4)]
        admin = free_port()
        p = self.proxy(config=cluster_config(
            bs, admin, outlier={"consecutive_5xx": 3, "base_ejection_ms": 400,
                                "interval_ms": 100}))
        wait_admin(admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200)
        addrs = [b.addr for b in bs]

        def ejected_now():
            fams = admin_metrics(admin)
            return sum(promtext.value(fams, "lb_backend_ejected", cluster="cluster1", backend=a)
                       for a in addrs)

        poll = Sampler(ejected_now, every=0.02).start()
        try:
            results = ClientLoad(p.port, "/cluster1/x", 4, 1.5 if SANITIZE else 2.5).start().join()
        finally:
            samples = poll.stop()
        self.assertFalse(poll.errors, poll.errors[:3])
        self.assertGreater(len(samples), 20)
        counts = [v for _, v in samples]
        self.assertLessEqual(max(counts), 2, "more than half out at once: %r" % counts)
        self.assertEqual(max(counts), 2, "the cap was never reached: %r" % counts)
        self.assertGreater(len(results), 200)
        statuses = {}
        for _, st, _ in results:
            statuses[st] = statuses.get(st, 0) + 1
        self.assertEqual(set(statuses), {500}, statuses)
        # ejections came and went: more than the cap over the run
        fams = admin_metrics(admin)
        total = sum(promtext.value(fams, "lb_backend_ejections_total", cluster="cluster1",
                                   backend=a) for a in addrs)
        self.assertGreater(total, 2, p.log()[-3000:])
        self.assertEqual(len(ejections_logged(p)), total)
        # every ejection line happened while no more than one other was out
        log = [e for e in ejections_logged(p)]
        for t, addr, _, ms, *_ in log:
            overlapping = [e for e in log if e[1] != addr and e[0] <= t < e[0] + e[3] / 1000 - 0.01]
            self.assertLessEqual(len(overlapping), 1, (t, addr, overlapping))
        self.assertNotIn("-> unhealthy", p.log())


class FailurePenalty(LBTestCase):
    """Three backends 5 ms slow, one answering 500 at once (its /health stays
    200 and fast). The latency-aware strategies count its 500s as slow
    answers: with outlier detection off it gets under 10% of 8 clients'
    requests (round-robin would give it 25%) and is never ejected; with the
    default outlier detection its 500s stay under 5%."""

    SECONDS = 1.5 if SANITIZE else 2.0

    def setUp(self):
        super().setUp()
        self.good = [self.backend("slow-%d" % i, "cluster1", args=["--delay-ms", "5"])
                     for i in range(3)]
        self.bad = self.backend("fail-1", "cluster1", args=["--fail-status", "500"])
        self.backends = self.good[:1] + [self.bad] + self.good[1:]

    def run_load(self, strategy, outlier):
        admin = free_port()
        p = self.proxy(config=cluster_config(self.backends, admin, strategy, outlier,
                                             interval_ms=200))
        wait_admin(admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200)
        # every backend probed (fastest ranks by probe latency)
        self.assertTrue(wait_until(lambda: all(r["last_probe_ms"] for r in
                                               backend_rows(admin).values()), 3),
                        backend_rows(admin))
        results = ClientLoad(p.port, "/cluster1/x", 8, self.SECONDS).start().join()
        self.assertGreater(len(results), 300, "only %d requests" % len(results))
        bad = sum(1 for _, st, _ in results if st == 500)
        other = [r for r in results if r[1] not in (200, 500)]
        self.assertFalse(other, other[:5])
        self.assertTrue(all(inst == "fail-1" for _, st, inst in results if st == 500))
        fams = admin_metrics(admin)
        sent = {b.addr: promtext.value(fams, "lb_backend_requests_total", cluster="cluster1",
                                       backend=b.addr) for b in self.backends}
        ejections = promtext.sum_values(fams, "lb_backend_ejections_total", cluster="cluster1")
        return p, results, bad, sent, ejections

    def check_penalty_without_ejection(self, strategy):
        p, results, bad, sent, ejections = self.run_load(strategy, False)
        share = bad / len(results)
        print("%s, outlier detection off: %d 500s of %d" % (strategy, bad, len(results)))
        self.assertLess(share, 0.10, "%s: the failing backend got %.1f%% of %d requests: %r"
                        % (strategy, 100 * share, len(results), sent))
        self.assertGreater(bad, 0, "it never got a request: not a test of the penalty")
        # the proxy's own count says the same (health checks are not requests)
        self.assertLess(sent[self.bad.addr] / sum(sent.values()), 0.10, sent)
        self.assertEqual(ejections, 0, "outlier detection is off:\n" + p.log()[-3000:])
        self.assertEqual(ejections_logged(p), [])
        self.assertNotIn("-> unhealthy", p.log())
        row = backend_rows(admin_port(p))[self.bad.addr]
        self.assertFalse(row["ejected"], row)
        self.assertGreater(row["error_share"], 0.0, row)

    def test_peak_ewma_penalty(self):
        self.check_penalty_without_ejection("peak-ewma")

    def test_fastest_penalty(self):
        self.check_penalty_without_ejection("fastest")

    def test_least_outstanding_penalty(self):
        self.check_penalty_without_ejection("least-outstanding")

    def test_default_outlier_detection(self):
        p, results, bad, sent, ejections = self.run_load("peak-ewma", None)
        share = bad / len(results)
        self.assertLess(share, 0.05, "%.1f%% 500s of %d: %r" % (100 * share, len(results), sent))
        # (the penalty may keep it under the 5 answers in a row that eject
        # it); when it is ejected, the defaults: 30 s, once, and it stays out
        self.assertLessEqual(ejections, 1, p.log()[-3000:])
        logged = ejections_logged(p)
        self.assertEqual(len(logged), ejections)
        for e in logged:
            self.assertEqual((e[1], e[3], e[4], e[6]), (self.bad.addr, 30000, 5, 1), e)
            self.assertTrue(backend_rows(admin_port(p))[self.bad.addr]["ejected"])
            last = max(t for t, st, _ in results if st == 500)
            self.assertFalse([r for r in results if r[0] > last + 0.05 and r[1] == 500])
        print("default outlier detection: %d 500s of %d, %d ejection(s), sent %r"
              % (bad, len(results), ejections, sent))


def admin_port(proxy):
    with open(proxy.config_path) as f:
        return int(json.load(f)["admin"].rsplit(":", 1)[1])


if __name__ == "__main__":
    unittest.main()
