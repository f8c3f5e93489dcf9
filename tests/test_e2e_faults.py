"""Faults between the proxy and its backends (DESIGN.md, "Choosing a backend",
"Data path", "Faults, warm-up and affinity"), each backend behind its own
fault-injecting relay (tests/faultrelay.py): sporadic resets never eject a
busy backend and never deliver a cut body as complete; resets before the
response head are retried (a POST with a body is not); a backend failing
every exchange is ejected after exactly consecutive_gateway_failure
failures, gets no traffic while ejected, is readmitted on time and ejected
for longer the next time; ejections stop at max_ejection_percent (never the
last backend). Runs once per engine (LB_ENGINE).

The relays never fault a health probe (skip_paths), so the active checks
stay green and only outlier detection takes a backend out.

The proxy logs, on stderr (a UTC timestamp starts each line):
    backend 127.0.0.1:PORT (cluster1): ejected for 2000 ms (<reason>)
    backend 127.0.0.1:PORT (cluster1): readmitted (<reason>)"""

import datetime
import http.client
import json
import re
import threading
import time
import unittest

import faultrelay
import promtext
from faultrelay import FaultRelay
from lbtest import (SANITIZE, LBTestCase, admin_metrics, admin_status, free_port, pattern,
                    request_log, wait_routable, wait_until)

SKIP = ("/health", "/cluster1/health")
CLIENT_ERRORS = (http.client.HTTPException, OSError)
BIG = pattern(70000)

STAMP = r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z "
EJECTED = re.compile(STAMP + r".*backend (\S+) \(([^)\s]+)\): ejected for (\d+) ms \((.*)\)\s*$")
READMITTED = re.compile(STAMP + r".*backend (\S+) \(([^)\s]+)\): readmitted \((.*)\)\s*$")

# Outlier detection's readmission comes at its next sweep: the margin past
# the ejection time a test allows (the sweep interval and slack).
MARGIN_S = 1.0 if SANITIZE else 0.5


def log_time(stamp):
    """A log line's timestamp (UTC, ms) as time.time() seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def ejection_lines(proxy, addr=None):
    """(time, addr, cluster, ms, reason) of each ejection the proxy logged."""
    out = []
    for line in proxy.log().splitlines():
        m = EJECTED.search(line)
        if m and (addr is None or m.group(2) == addr):
            out.append((log_time(m.group(1)), m.group(2), m.group(3), int(m.group(4)),
                        m.group(5)))
    return out


def readmission_lines(proxy, addr=None):
    """(time, addr, cluster, reason) of each readmission the proxy logged."""
    out = []
    for line in proxy.log().splitlines():
        m = READMITTED.search(line)
        if m and (addr is None or m.group(2) == addr):
            out.append((log_time(m.group(1)), m.group(2), m.group(3), m.group(4)))
    return out




def backend_status(admin_port, addr):
    """The /status entry of backend addr (in any cluster)."""
    for c in admin_status(admin_port)["clusters"]:
        for b in c["backends"]:
            if b["address"] == addr:
                return b
    raise AssertionError("backend %s not in /status" % addr)


def faultable(relay):
    """Exchanges a relay saw that it may fault (not health probes)."""
    st = relay.stats()
    return st["exchanges"] - st["skipped"]


def retries(fams, reason=None):
    if reason is None:
        return promtext.sum_values(fams, "lb_retries_total")
    return promtext.sum_values(fams, "lb_retries_total", reason=reason)


def sparse_seed(base, n, share, window):
    """The first seed from base whose plan for n exchanges at this reset
    share never has 3 resets among `window` consecutive exchanges: 1%
    sporadic resets then never make 3 consecutive failures at the proxy,
    whatever the timing (the proxy sees a backend's outcomes in an order
    that differs from the relay's by less than the requests in flight)."""
    for seed in range(base, base + 100000):
        pos = [i for i, f in enumerate(faultrelay.plan(seed, n, reset_share=share)) if f]
        if all(pos[i + 2] - pos[i] >= window for i in range(len(pos) - 2)):
            return seed
    raise AssertionError("no sparse seed")


class FaultCase(LBTestCase):
    def relay(self, backend, **faults):
        faults.setdefault("skip_paths", SKIP)
        r = FaultRelay(backend.port, **faults).start()
        self.addCleanup(r.stop)
        r.backend = backend
        return r

    def start_proxy(self, relays, outlier=None, strategy="round-robin", retries_=None,
                    hc_interval_ms=300, threads=2):
        """A proxy with an admin listener and one cluster, /cluster1, on
        these relays (their addresses are the backends' names)."""
        c = {"name": "cluster1", "path_prefix": "/cluster1",
             "backends": [r.addr for r in relays],
             "health_check": {"path": "/health", "interval_ms": hc_interval_ms,
                              "timeout_ms": 250, "healthy_threshold": 1,
                              "unhealthy_threshold": 2, "expect_status": "200-399"}}
        if strategy:
            c["strategy"] = strategy
        if outlier is not None:
            c["outlier_detection"] = outlier
        if retries_ is not None:
            c["retries"] = retries_
        admin = free_port()
        cfg = {"admin": "127.0.0.1:%d" % admin,
               "timeouts_ms": {"connect": 1000, "backend_response": 5000},
               "clusters": [c]}
        p = self.proxy(config=cfg, threads=threads)
        p.admin = admin
        self.assertEqual(wait_routable(p.port, timeout=10), 200, p.log()[-3000:])
        return p


def one_get(conn_holder, port, path, timeout=10):
    """GET path on the keep-alive connection in conn_holder[0] (made or
    remade as needed): (status or None, body or None, error text or None)."""
    c = conn_holder[0]
    if c is None:
        c = conn_holder[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.will_close:
            c.close()
            conn_holder[0] = None
        return r.status, body, None
    except CLIENT_ERRORS as e:
        c.close()
        conn_holder[0] = None
        return None, None, "%s: %s" % (type(e).__name__, e)


# --------------------------------------------------------------------------


class SporadicResets(FaultCase):
    """1% of the exchanges of each of 3 backends reset at a random offset,
    at full speed from keep-alive clients: nobody is ejected, nothing
    answers 503, every cut the client could see is an error at the client
    (never a short body as a complete 200), and every other reset was
    retried."""

    REQUESTS = 5000 if SANITIZE else 20000
    CLIENTS = 6
    SIZES = (0, 1, 100, 250, 1000, 2000, 4096, 5000, 8000, 16384, 30000, 65536)

    def test_one_percent_resets(self):
        backends = self.cluster("cluster1", 3, args=["--quiet"])
        window = 2 * self.CLIENTS + 4
        relays = []
        for i, b in enumerate(backends):
            seed = sparse_seed(1000 * (i + 1), self.REQUESTS, 0.01, window)
            relays.append(self.relay(b, reset_share=0.01, seed=seed))
        p = self.start_proxy(relays, strategy=None)  # default strategy, default outlier detection
        base = admin_metrics(p.admin)

        lock = threading.Lock()
        results = []  # (status or None, error text or None)
        bad_bodies = []
        counter = [0]
        deadline = time.monotonic() + (240 if SANITIZE else 150)

        def client(k):
            holder = [None]
            try:
                while time.monotonic() < deadline:
                    with lock:
                        i = counter[0]
                        if i >= self.REQUESTS:
                            return
                        counter[0] += 1
                    n = self.SIZES[(i * 7 + k) % len(self.SIZES)]
                    st, body, err = one_get(holder, p.port, "/cluster1/bytes/%d" % n)
                    if st == 200 and (len(body) != n or body != BIG[:n]):
                        with lock:
                            bad_bodies.append((i, n, len(body)))
                    with lock:
                        results.append((st, err))
            finally:
                if holder[0] is not None:
                    holder[0].close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(self.CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()) + 15)
        took = time.monotonic() - t0
        self.assertEqual(len(results), self.REQUESTS,
                         "only %d of %d requests in %.1fs" % (len(results), self.REQUESTS, took))
        self.assertEqual(bad_bodies, [], "a cut or corrupted body delivered as a complete 200 "
                         "(request, expected length, got length)")

        stats = [r.stats() for r in relays]
        mid = sum(s["resets_mid_response"] for s in stats)
        after_head = sum(s["resets_after_head"] for s in stats)
        in_head = sum(s["resets_in_head"] for s in stats)
        self.assertEqual(sum(s["resets_before_head"] for s in stats), 0)
        fams = admin_metrics(p.admin)
        sent_again = retries(fams) - retries(base)
        errors = [r for r in results if r[0] != 200]
        by_kind = {}
        for st, err in errors:
            key = st if st is not None else err.split(":")[0]
            by_kind[key] = by_kind.get(key, 0) + 1
        summary = ("%d requests in %.1fs: %d resets (%d after the head, %d in it), %d retries, "
                   "%d client-visible errors %r" % (len(results), took, mid, after_head, in_head,
                                                    sent_again, len(errors), by_kind))
        self.assertGreater(mid, 0.005 * self.REQUESTS, summary)
        self.assertNotIn(503, by_kind, summary)
        for key in by_kind:
            self.assertTrue(key == 502 or isinstance(key, str), "unexpected status: " + summary)
        # Every reset is either retried (nothing had reached the client: the
        # cut was in the head) or one error at the client (the head was
        # complete: a response already under way). A retry reset in its
        # head again is the only other error (retries: 1).
        self.assertEqual(len(errors) + sent_again, mid, summary)
        self.assertGreaterEqual(len(errors), after_head, summary)
        self.assertLessEqual(len(errors), after_head + in_head // 2, summary)
        # Nobody ejected.
        for r in relays:
            self.assertEqual(promtext.value(fams, "lb_backend_ejections_total", cluster="cluster1",
                                            backend=r.addr), 0, summary)
            self.assertEqual(promtext.value(fams, "lb_backend_ejected", cluster="cluster1",
                                            backend=r.addr), 0, summary)
            b = backend_status(p.admin, r.addr)
            self.assertFalse(b["ejected"], b)
            self.assertEqual(b["ejections"], 0, b)
        self.assertEqual(ejection_lines(p), [], summary)


class ResetsBeforeHead(FaultCase):
    def test_get_retried_on_another_backend(self):
        backends = self.cluster("cluster1", 3)
        # Only the probes pass: a request the proxy sent it (wait_routable's
        # too) never leaves a pooled connection, so a reset on a reused one
        # (which a proxy may take for a stale connection) cannot happen.
        bad = self.relay(backends[0], reset_before_head_share=1.0, skip_paths=("/health",))
        good = [self.relay(b) for b in backends[1:]]
        p = self.start_proxy([bad] + good, outlier=False)
        base = admin_metrics(p.admin)
        resets0 = bad.stats()["resets_before_head"]
        holder = [None]
        seen = {}
        try:
            for i in range(60):
                st, body, err = one_get(holder, p.port, "/cluster1/r%d" % i)
                self.assertEqual(st, 200, "request %d: %s %s\n%s" % (i, st, err, p.log()[-2000:]))
                inst = json.loads(body)["instance_id"]
                seen[inst] = seen.get(inst, 0) + 1
        finally:
            if holder[0] is not None:
                holder[0].close()
        self.assertNotIn(backends[0].instance_id, seen, seen)
        self.assertEqual(faultable(bad), bad.stats()["resets_before_head"])
        resets = bad.stats()["resets_before_head"] - resets0
        self.assertGreaterEqual(resets, 10, "round-robin sent the resetting backend only %d of "
                                "60 requests" % resets)
        fams = admin_metrics(p.admin)
        got = {k: retries(fams, k) - retries(base, k)
               for k in ("reset_before_response", "stale_connection", "connect")}
        self.assertEqual(got, {"reset_before_response": resets, "stale_connection": 0,
                               "connect": 0}, "lb_retries_total by reason")
        # Each of them reached the backend before the reset.
        logged = wait_until(lambda: len([l for l in request_log(backends[0])
                                         if l[4].startswith("/cluster1/r")]) >= resets, 3)
        self.assertTrue(logged, backends[0].log()[-2000:])

    def post(self, port, path, body):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("POST", path, body=body,
                      headers={"Content-Type": "application/octet-stream"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def test_post_with_body_not_retried(self):
        # One backend, reset before every response head: a POST with a body
        # is answered 502 and reaches the backend once. (The backend logs a
        # request once its response is complete: an echo answers as the body
        # comes and the reset cuts it, so it may go unlogged; another path
        # reads the whole body first, answers and logs at once.)
        b = self.backend("post-1", "cluster1")
        bad = self.relay(b, reset_before_head_share=1.0)
        p = self.start_proxy([bad])
        base = admin_metrics(p.admin)
        for n, path in enumerate(("/cluster1/echo", "/cluster1/submit"), 1):
            st, body = self.post(p.port, path, BIG[:1000])
            self.assertEqual(st, 502, "POST %s: %d %r" % (path, st, body[:200]))
            self.assertEqual(faultable(bad), n, "POST %s went to the backend %d times"
                             % (path, faultable(bad) - n + 1))
        posts = lambda: [l for l in request_log(b) if l[3] == "POST" and l[4] == "/cluster1/submit"]
        wait_until(posts, 3)
        time.sleep(0.3)
        self.assertEqual(len(posts()), 1, b.log()[-2000:])
        self.assertEqual(retries(admin_metrics(p.admin)) - retries(base), 0)

    def test_post_not_sent_to_another_backend(self):
        # Two backends, one resetting before the head: a POST routed to it
        # gets 502 and does not go to the other.
        b1 = self.backend("postb-1", "cluster1")
        b2 = self.backend("postb-2", "cluster1")
        bad = self.relay(b1, reset_before_head_share=1.0)
        good = self.relay(b2)
        p = self.start_proxy([bad, good], outlier=False)
        statuses = []
        for i in range(6):
            c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            try:
                payload = BIG[i:i + 500]
                c.request("POST", "/cluster1/echo", body=payload)
                r = c.getresponse()
                got = r.read()
                statuses.append(r.status)
                if r.status == 200:
                    self.assertEqual(got, payload)
            finally:
                c.close()
        self.assertEqual(sorted(set(statuses)), [200, 502], statuses)
        self.assertEqual(faultable(bad), statuses.count(502), statuses)
        self.assertEqual(faultable(good), statuses.count(200), statuses)
        wait_until(lambda: len([l for l in request_log(b2) if l[3] == "POST"]) >= statuses.count(200), 3)
        self.assertEqual(len([l for l in request_log(b2) if l[3] == "POST"]), statuses.count(200))


class Ejection(FaultCase):
    """One of three backends resets every exchange (its probes pass):
    ejected after exactly 3 failures for base_ejection_ms, no traffic while
    ejected, readmitted on time, then ejected for twice as long."""

    OUTLIER = {"consecutive_gateway_failure": 3, "base_ejection_ms": 2000, "interval_ms": 200}

    def test_eject_readmit_eject_longer(self):
        backends = self.cluster("cluster1", 3)
        bad = self.relay(backends[0], reset_share=1.0, seed=3)
        good = [self.relay(b) for b in backends[1:]]
        p = self.start_proxy([bad] + good, outlier=self.OUTLIER)
        addr = bad.addr
        holder = [None]
        self.addCleanup(lambda: holder[0] and holder[0].close())
        client_errors = []

        def send(path):
            st, body, err = one_get(holder, p.port, path)
            if st != 200:
                client_errors.append((path, st, err))
            elif json.loads(body)["instance_id"] == backends[0].instance_id:
                self.fail("the resetting backend answered %s" % path)
            return st

        # 1. Exactly 3 failures, one at a time (round-robin: every third pick).
        fails = 0
        for i in range(60):
            send("/cluster1/a%d" % i)
            k = faultable(bad)
            if k == fails:
                continue
            self.assertEqual(k, fails + 1, "two requests to the resetting backend at once?")
            fails = k
            if fails < 3:
                b = wait_until(lambda: (lambda s: s["consecutive_gateway_failures"] == fails
                                        and s)(backend_status(p.admin, addr)), 2)
                self.assertTrue(b, "after %d failures: %r" % (fails, backend_status(p.admin, addr)))
                self.assertFalse(b["ejected"], b)
                self.assertEqual(ejection_lines(p, addr), [], "ejected after %d failures" % fails)
            else:
                break
        self.assertEqual(fails, 3, "the resetting backend got %d of 60 requests" % fails)
        lines = wait_until(lambda: ejection_lines(p, addr), 2)
        self.assertEqual(len(lines), 1, p.log()[-3000:])
        t_eject1, _, cluster, ms, why = lines[0]
        self.assertEqual((cluster, ms), ("cluster1", 2000), lines)
        b = backend_status(p.admin, addr)
        self.assertTrue(b["ejected"], b)
        self.assertEqual(b["ejections"], 1, b)
        fams = admin_metrics(p.admin)
        self.assertEqual(promtext.value(fams, "lb_backend_ejected", cluster="cluster1",
                                        backend=addr), 1)
        self.assertEqual(promtext.value(fams, "lb_backend_ejections_total", cluster="cluster1",
                                        backend=addr), 1)
        for g in good:
            self.assertEqual(promtext.value(fams, "lb_backend_ejected", cluster="cluster1",
                                            backend=g.addr), 0)
        # The cut responses the client saw were cut by the relay after their head.
        self.assertLessEqual(len(client_errors), bad.stats()["resets_after_head"], client_errors)

        # 2. While ejected: no traffic, every request answered by the others,
        # though its health checks pass.
        before = faultable(bad)
        probes_before = bad.stats()["skipped"]
        for i in range(30):
            self.assertEqual(send("/cluster1/b%d" % i), 200, client_errors)
        self.assertEqual(faultable(bad), before, "traffic to an ejected backend")

        # 3. Readmitted between 2.0 s and 2.0 s + the margin after the ejection.
        line = wait_until(lambda: readmission_lines(p, addr), 2.0 + MARGIN_S + 1.0, 0.005)
        self.assertTrue(line, "not readmitted %.1fs after the ejection:\n%s"
                        % (time.time() - t_eject1, p.log()[-3000:]))
        t_readmit1 = line[0][0]
        self.assertEqual(faultable(bad), before, "traffic to an ejected backend")
        self.assertGreater(bad.stats()["skipped"], probes_before, "no health checks while ejected")
        took = t_readmit1 - t_eject1
        self.assertGreaterEqual(took, 2.0 - 0.002, "readmitted %.3fs after the ejection" % took)
        self.assertLessEqual(took, 2.0 + MARGIN_S, "readmitted %.3fs after the ejection" % took)
        self.assertFalse(backend_status(p.admin, addr)["ejected"])

        # 4. At once 3 more failures: ejected again, for 2 x 2000 ms.
        for i in range(60):
            send("/cluster1/c%d" % i)
            if faultable(bad) - before >= 3:
                break
        self.assertEqual(faultable(bad) - before, 3)
        lines = wait_until(lambda: len(ejection_lines(p, addr)) >= 2 and ejection_lines(p, addr), 2)
        self.assertTrue(lines, p.log()[-3000:])
        self.assertEqual(len(lines), 2, lines)
        t_eject2, ms2 = lines[1][0], lines[1][3]
        self.assertEqual(ms2, 4000, "the second ejection: %r" % (lines,))
        self.assertEqual(backend_status(p.admin, addr)["ejections"], 2)
        self.assertEqual(promtext.value(admin_metrics(p.admin), "lb_backend_ejections_total",
                                        cluster="cluster1", backend=addr), 2)
        # ... and that long.
        before = faultable(bad)
        line = wait_until(lambda: len(readmission_lines(p, addr)) >= 2, 4.0 + MARGIN_S + 1.0, 0.02)
        self.assertTrue(line, p.log()[-3000:])
        t_readmit2 = readmission_lines(p, addr)[1][0]
        took = t_readmit2 - t_eject2
        self.assertGreaterEqual(took, 4.0 - 0.002, "readmitted %.3fs after the ejection" % took)
        self.assertLessEqual(took, 4.0 + MARGIN_S, "readmitted %.3fs after the ejection" % took)
        self.assertEqual(faultable(bad), before, "traffic to an ejected backend")


class EjectionCap(FaultCase):
    def run_all_failing(self, n_backends, percent, requests, max_out):
        backends = self.cluster("cluster1", n_backends)
        relays = [self.relay(b, reset_share=1.0, seed=i + 1) for i, b in enumerate(backends)]
        p = self.start_proxy(relays, outlier={"consecutive_gateway_failure": 3,
                                              "base_ejection_ms": 30000, "interval_ms": 1000,
                                              "max_ejection_percent": percent})
        holder = [None]
        self.addCleanup(lambda: holder[0] and holder[0].close())
        statuses = {}
        most_out = 0
        for i in range(requests):
            st, _, err = one_get(holder, p.port, "/cluster1/x%d" % i)
            key = st if st is not None else "error"
            statuses[key] = statuses.get(key, 0) + 1
            if i % 10 == 9:
                out = sum(1 for r in relays if backend_status(p.admin, r.addr)["ejected"])
                most_out = max(most_out, out)
                self.assertLessEqual(out, max_out, "%d of %d ejected (cap %d%%)"
                                     % (out, n_backends, percent))
        self.assertNotIn(503, statuses, statuses)
        self.assertNotIn(200, statuses, statuses)
        self.assertIn(502, statuses, statuses)
        self.assertTrue(set(statuses) <= {502, "error"}, statuses)
        fams = admin_metrics(p.admin)
        out = [r for r in relays if promtext.value(fams, "lb_backend_ejected", cluster="cluster1",
                                                   backend=r.addr) == 1]
        self.assertEqual(len(out), max_out, "ejected: %r\n%s" % ([r.addr for r in out],
                                                                 p.log()[-3000:]))
        total = sum(promtext.value(fams, "lb_backend_ejections_total", cluster="cluster1",
                                   backend=r.addr) for r in relays)
        self.assertEqual(total, max_out)
        self.assertEqual(len(ejection_lines(p)), max_out)
        # The ones kept in still get the traffic.
        kept = [r for r in relays if r not in out]
        before = [faultable(r) for r in kept]
        for i in range(10):
            st, _, _ = one_get(holder, p.port, "/cluster1/y%d" % i)
            self.assertNotEqual(st, 503)
        self.assertGreater(sum(faultable(r) for r in kept), sum(before))
        return statuses

    def test_at_most_max_ejection_percent(self):
        # 4 backends, 50%: 2 out at most, the cluster still answers (502).
        self.run_all_failing(4, 50, 150 if SANITIZE else 200, 2)

    def test_never_the_last_backend(self):
        # 2 backends, 100%: one always stays.
        self.run_all_failing(2, 100, 60, 1)


if __name__ == "__main__":
    unittest.main()
