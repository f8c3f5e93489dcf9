"""Weights, slow start and sticky sessions (DESIGN.md, "Faults, warm-up and
affinity (per cluster)"): "weights" set each backend's share under every
strategy (0: no new requests); a backend that joins after start-up (SIGHUP
reload, EC2 discovery) ramps from ~1% to its full share over slow_start_ms;
a "stickiness" cookie sends a client back to its backend while that one is
available, is signed (forged, expired, other-secret and other-cluster
cookies are ignored) and is honoured by every proxy sharing the secret.
Runs once per engine (LB_ENGINE).

The proxy logs (stderr, wall-clock timestamps to the millisecond):
    <ts> proxy[PID] info: SIGHUP: backend ADDR joins cluster CLUSTER
    <ts> proxy[PID] warn: backend ADDR (CLUSTER): unhealthy -> healthy (...)"""

import calendar
import json
import os
import re
import signal
import tempfile
import time
import unittest
from unittest import mock

import promtext
from lbtest import (SANITIZE, admin_metrics, admin_status, ClientLoad, free_port, KeepAliveClient,
                    LBTestCase, Sampler, tally, wait_admin, wait_status, wait_until)

TS = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"
SECRET = "test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-fedcba9876543210"
COOKIE_RE = re.compile(r"^(?P<name>[^=;\s]+)=(?P<value>[^;\s]+); Max-Age=(?P<age>\d+); "
                       r"Path=(?P<path>[^;\s]+); HttpOnly$")


def log_time(text):
    """A log timestamp (UTC, ms) as seconds since the epoch (time.time())."""
    day, frac = text.split(".")
    return calendar.timegm(time.strptime(day, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000.0


def logged_at(proxy, pattern):
    """The time of the first log line matching pattern (after its timestamp), or None."""
    m = re.search(TS + r" \S+ \w+: " + pattern, proxy.log())
    return log_time(m.group(1)) if m else None


def write_config(path, cfg):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f)
    os.replace(tmp, path)  # the proxy never reads a half-written file






def requests_by_backend(admin, cluster="cluster1"):
    """{backend: lb_backend_requests_total} of the cluster."""
    return {s.labels["backend"]: s.value
            for s in promtext.samples(admin_metrics(admin), "lb_backend_requests_total",
                                      cluster=cluster)}


def backend_rows(admin, cluster="cluster1"):
    for c in admin_status(admin)["clusters"]:
        if c["name"] == cluster:
            return {b["address"]: b for b in c["backends"]}
    raise AssertionError("no cluster %s in /status" % cluster)


def health(interval_ms=200, healthy=2, unhealthy=5):
    return {"path": "/health", "interval_ms": interval_ms, "timeout_ms": interval_ms,
            "healthy_threshold": healthy, "unhealthy_threshold": unhealthy}


def window_share(samples, addr, t_from, t_to):
    """addr's share of the requests counted between the last sample at or
    before t_from and the first at or after t_to (a window a little wider
    than asked, never narrower): (share, its requests, all requests)."""
    before = [s for s in samples if s[0] <= t_from]
    after = [s for s in samples if s[0] >= t_to]
    if not before or not after:
        raise AssertionError("no samples around %.3f..%.3f" % (t_from, t_to))
    a, b = before[-1][1], after[0][1]
    mine = b.get(addr, 0) - a.get(addr, 0)
    total = sum(b.values()) - sum(a.values())
    return mine / max(1.0, total), mine, total


class Weights(LBTestCase):
    """Two backends weighted 3:1 and one weighted 0: ~4,000 sequential
    requests split 0.75 +- 0.04 under round-robin, peak-ewma, random and
    least-outstanding, none to the weight-0 one."""

    N = 1500 if SANITIZE else 4000

    def check_weights(self, strategy):
        heavy = self.backend("heavy", "cluster1")
        light = self.backend("light", "cluster1")
        off = self.backend("off", "cluster1")
        admin = free_port()
        cfg = {"admin": "127.0.0.1:%d" % admin,
               "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                             "strategy": strategy,
                             "backends": [light.addr, off.addr, heavy.addr],
                             "weights": {heavy.addr: 3, off.addr: 0},
                             "health_check": health(300)}]}
        p = self.proxy(config=cfg)
        wait_admin(admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200)
        before = requests_by_backend(admin)
        c = KeepAliveClient(p.port)
        self.addCleanup(c.close)
        counts = {}
        for _ in range(self.N):
            st, inst, _ = c.get("/cluster1/x")
            self.assertEqual(st, 200, inst)
            counts[inst] = counts.get(inst, 0) + 1
        share = counts.get("heavy", 0) / self.N
        self.assertAlmostEqual(share, 0.75, delta=0.04,
                               msg="%s: heavy got %.3f: %r" % (strategy, share, counts))
        self.assertNotIn("off", counts, counts)
        # the proxy's counts say the same
        after = requests_by_backend(admin)
        sent = {a: after[a] - before.get(a, 0) for a in after}
        self.assertEqual(sent[off.addr], 0, sent)
        self.assertEqual(sent[heavy.addr], counts["heavy"], sent)
        rows = backend_rows(admin)
        self.assertEqual((rows[heavy.addr]["weight"], rows[light.addr]["weight"],
                          rows[off.addr]["weight"]), (3, 1, 0))

    def test_round_robin(self):
        self.check_weights("round-robin")

    def test_peak_ewma(self):
        self.check_weights("peak-ewma")

    def test_random(self):
        self.check_weights("random")

    def test_least_outstanding(self):
        self.check_weights("least-outstanding")


class SlowStartAfterReload(LBTestCase):
    """Two backends at start (at full share at once), slow_start_ms 4000; a
    third added by a SIGHUP reload while 4 clients load the cluster gets
    under a quarter of its full share (1/3) in its first 0.4 s, about half of
    it at 2 s, and close to 1/3 once the 4 s are over (round-robin; peak-ewma,
    whose shares follow latency too, with rougher bounds)."""

    SLOW_MS = 4000

    def config(self, backends, strategy):
        return {"admin": "127.0.0.1:%d" % self.admin,
                "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                              "strategy": strategy, "slow_start_ms": self.SLOW_MS,
                              "backends": [b.addr for b in backends],
                              "health_check": health(300)}]}

    def check_ramp(self, strategy):
        b1, b2, b3 = self.cluster("cluster1", 3)
        self.admin = free_port()
        fd, path = tempfile.mkstemp(prefix="proxy-slowstart-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        write_config(path, self.config([b1, b2], strategy))
        p = self.proxy(args=["--config", path])
        wait_admin(self.admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200)
        rows = backend_rows(self.admin)
        self.assertEqual({a: r["slow_start"] for a, r in rows.items()}, {b1.addr: 1, b2.addr: 1})

        sampler = Sampler(lambda: requests_by_backend(self.admin), clock=time.time).start()
        load = ClientLoad(p.port, "/cluster1/x", 4, 30.0).start()
        try:
            time.sleep(1.0)
            write_config(path, self.config([b1, b2, b3], strategy))
            p.signal(signal.SIGHUP)
            joins = r"SIGHUP: backend %s joins cluster cluster1" % re.escape(b3.addr)
            self.assertTrue(wait_until(lambda: logged_at(p, joins), 3), p.log()[-3000:])
            t_join = logged_at(p, joins)
            ramp = [backend_rows(self.admin)[b3.addr]["slow_start"]]
            wait_until(lambda: time.time() > t_join + 2.0, 5)
            ramp.append(backend_rows(self.admin)[b3.addr]["slow_start"])
            wait_until(lambda: time.time() > t_join + self.SLOW_MS / 1000 + 1.6, 10)
            ramp.append(backend_rows(self.admin)[b3.addr]["slow_start"])
            sampler.wait_past(t_join + self.SLOW_MS / 1000 + 1.6)
        finally:
            counts = tally(load.stop())
            samples = sampler.stop()
        self.assertFalse(sampler.errors, sampler.errors[:3])
        self.assertEqual({st for st, _ in counts}, {200}, counts)
        first, n_first, all_first = window_share(samples, b3.addr, t_join, t_join + 0.4)
        mid, _, _ = window_share(samples, b3.addr, t_join + 1.8, t_join + 2.2)
        full, n_full, all_full = window_share(samples, b3.addr, t_join + 4.5, t_join + 5.5)
        report = ("%s: share of the added backend: first 0.4 s %.3f (%d of %d), at 2 s %.3f, "
                  "4.5-5.5 s %.3f (%d of %d); /status slow_start %r"
                  % (strategy, first, n_first, all_first, mid, full, n_full, all_full, ramp))
        print(report)
        self.assertGreater(all_first, 50, report)
        if strategy == "round-robin":
            # a weight is a share: 1/3 in full, a quarter of that at most at first
            self.assertLess(first, 1 / 12, report)
            self.assertLess(full, 0.45, report)
            self.assertGreater(full, 0.22, report)
            self.assertLess(first, mid, report)
            self.assertLess(mid, full, report)
        else:
            # latency-aware: the weight scales its load, not its share exactly
            # (latency noise moves shares by +-0.1 here, and a fresh backend
            # may be the fastest one): held at first, real traffic after
            self.assertLess(first, 0.12, report)
            self.assertGreater(full, 0.15, report)
            self.assertLess(first, full, report)
        self.assertLess(ramp[0], 0.2, report)
        self.assertTrue(0.3 < ramp[1] < 0.8, report)
        self.assertEqual(ramp[2], 1, report)
        # the two that were there at the start never ramped
        rows = backend_rows(self.admin)
        self.assertEqual((rows[b1.addr]["slow_start"], rows[b2.addr]["slow_start"]), (1, 1))

    def test_round_robin(self):
        self.check_ramp("round-robin")

    def test_peak_ewma(self):
        self.check_ramp("peak-ewma")


class SlowStartAfterDiscovery(LBTestCase):
    """EC2 discovery (against tests/aws_standin.py) finds an instance added
    while 4 clients load the cluster: once its checks pass it ramps up over
    slow_start_ms like a reloaded one (rougher bounds: the moment it turns
    healthy is known from the log to the millisecond, its first requests
    not)."""

    SLOW_MS = 3000
    TAGS = {"Cluster": "cluster1", "Deployment": "lb-slowstart"}

    def setUp(self):
        super().setUp()
        from aws_standin import StandIn
        self.aws = StandIn().start()
        self.addCleanup(self.aws.stop)
        self.port = free_port()  # every instance's backend on its own address, this port
        self.admin = free_port()

    def instance(self, ip, name):
        b = self.backend(name, "cluster1", host=ip, port=self.port)
        self.aws.add_instance(tags=self.TAGS, ip=ip)
        return b

    def test_discovered_backend_ramps_up(self):
        b1 = self.instance("127.0.0.21", "s1")
        b2 = self.instance("127.0.0.22", "s2")
        cfg = {"admin": "127.0.0.1:%d" % self.admin,
               "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                             "strategy": "round-robin", "slow_start_ms": self.SLOW_MS,
                             "discovery": {"ec2": {"region": self.aws.region, "tags": self.TAGS,
                                                   "port": self.port, "interval_s": 1}},
                             "health_check": health(200, healthy=2, unhealthy=5)}]}
        with mock.patch.dict(os.environ, self.aws.env(), clear=True):
            p = self.proxy(config=cfg)
        wait_admin(self.admin)
        both = {b1.addr, b2.addr}
        self.assertTrue(wait_until(lambda: {a for a, r in backend_rows(self.admin).items()
                                            if r["healthy"]} == both, 10), p.log()[-3000:])
        # (the first ones turn healthy after start-up too: a slow start of theirs
        # is over before the instance below is added)
        wait_until(lambda: all(r["slow_start"] == 1 for r in backend_rows(self.admin).values()),
                   self.SLOW_MS / 1000 + 2)

        sampler = Sampler(lambda: requests_by_backend(self.admin), clock=time.time).start()
        ramp = Sampler(lambda: backend_rows(self.admin).get("127.0.0.23:%d" % self.port),
                       every=0.05, clock=time.time).start()
        load = ClientLoad(p.port, "/cluster1/x", 4, 30.0).start()
        try:
            time.sleep(0.5)
            b3 = self.instance("127.0.0.23", "s3")
            healthy = r"backend %s \(cluster1\): unhealthy -> healthy" % re.escape(b3.addr)
            self.assertTrue(wait_until(lambda: logged_at(p, healthy), 8), p.log()[-3000:])
            t_up = logged_at(p, healthy)
            wait_until(lambda: time.time() > t_up + self.SLOW_MS / 1000 + 1.6, 10)
            sampler.wait_past(t_up + self.SLOW_MS / 1000 + 1.6)
            ramp.wait_past(t_up + self.SLOW_MS / 1000 + 1.6)
        finally:
            counts = tally(load.stop())
            samples = sampler.stop()
            rows = ramp.stop()
        self.assertFalse(sampler.errors + ramp.errors, (sampler.errors + ramp.errors)[:3])
        self.assertEqual({st for st, _ in counts}, {200}, counts)
        self.assertIn("joins", p.log())
        first, n_first, all_first = window_share(samples, b3.addr, t_up, t_up + 0.4)
        full, n_full, all_full = window_share(samples, b3.addr, t_up + self.SLOW_MS / 1000 + 0.5,
                                              t_up + self.SLOW_MS / 1000 + 1.5)
        serving = [(t, r["slow_start"]) for t, r in rows if r and r["healthy"]]
        report = ("share of the discovered backend: first 0.4 s healthy %.3f (%d of %d), "
                  "after the ramp %.3f (%d of %d); /status slow_start while healthy: %r"
                  % (first, n_first, all_first, full, n_full, all_full,
                     [(round(t - t_up, 2), round(v, 3)) for t, v in serving[:3] + serving[-2:]]))
        print(report)
        self.assertGreater(all_first, 50, report)
        self.assertLess(first, 0.12, report)
        self.assertGreater(full, 0.22, report)
        self.assertLess(full, 0.45, report)
        self.assertTrue(serving, report)
        self.assertLess(serving[0][1], 0.5, report)
        self.assertEqual(serving[-1][1], 1, report)
        values = [v for _, v in serving]
        self.assertEqual(values, sorted(values), "the ramp went down: " + report)


class Stickiness(LBTestCase):
    """Round-robin clusters (so that without a cookie requests spread) with
    "stickiness"."""

    def sticky_config(self, backends, secret=SECRET, extra=None):
        addrs = [b.addr for b in backends]

        def cluster(name, prefix, sticky):
            if secret is not None:
                sticky = dict(sticky, secret=secret)
            return {"name": name, "path_prefix": prefix, "strategy": "round-robin",
                    "backends": addrs, "stickiness": sticky, "health_check": health(200)}

        cfg = {"clusters": [
            cluster("cluster1", "/cluster1", {"cookie": "LBSTICKY"}),
            # same backends, same cookie name and secret: only the cluster differs
            cluster("peer", "/peer", {"cookie": "LBSTICKY"}),
            cluster("other", "/other", {"cookie": "SID", "duration_s": 600}),
            cluster("short", "/short", {"cookie": "LBSTICKY", "duration_s": 1}),
        ]}
        cfg.update(extra or {})
        return cfg

    def start(self, n=3, secret=SECRET, extra=None):
        bs = self.cluster("cluster1", n)
        return bs, self.sticky_proxy(bs, secret, extra)

    def sticky_proxy(self, bs, secret=SECRET, extra=None):
        p = self.proxy(config=self.sticky_config(bs, secret, extra))
        for prefix in ("/cluster1", "/peer", "/other", "/short"):
            self.assertEqual(wait_status(p.port, prefix + "/health", 200, timeout=5), 200)
        return p

    def parse_cookie(self, set_cookie, name="LBSTICKY", path="/cluster1", age=86400):
        self.assertEqual(len(set_cookie), 1, set_cookie)
        m = COOKIE_RE.match(set_cookie[0])
        self.assertTrue(m, "Set-Cookie %r" % set_cookie[0])
        self.assertEqual((m.group("name"), m.group("path"), int(m.group("age"))),
                         (name, path, age), set_cookie[0])
        return m.group("value")

    def first_cookie(self, port, url="/cluster1/x", **kw):
        """(cookie value, the backend that served it) from a request with none."""
        c = KeepAliveClient(port)
        try:
            st, inst, sc = c.get(url)
        finally:
            c.close()
        self.assertEqual(st, 200, inst)
        return self.parse_cookie(sc, **kw), inst

    def spread(self, port, url, cookie, n=30, name="LBSTICKY", **kw):
        """n requests with the cookie on one connection: {instance: count}, and
        the cookie values the responses set (each checked)."""
        c = KeepAliveClient(port)
        counts, fresh = {}, []
        try:
            for _ in range(n):
                st, inst, sc = c.get(url, "%s=%s" % (name, cookie) if cookie else None)
                self.assertEqual(st, 200, inst)
                counts[inst] = counts.get(inst, 0) + 1
                fresh.append(self.parse_cookie(sc, name=name, **kw))
        finally:
            c.close()
        return counts, fresh

    def assert_spread(self, counts, n_backends=3, msg=""):
        self.assertEqual(len(counts), n_backends, "not spread over every backend: %r %s"
                         % (counts, msg))
        self.assertTrue(all(v >= 5 for v in counts.values()), "%r %s" % (counts, msg))

    def test_cookie_attributes_and_honoured(self):
        bs, p = self.start()
        # without a cookie, round-robin spreads
        counts, _ = self.spread(p.port, "/cluster1/x", None)
        self.assert_spread(counts)
        value, inst = self.first_cookie(p.port)
        counts, fresh = self.spread(p.port, "/cluster1/x", value, n=50)
        self.assertEqual(counts, {inst: 50})
        # every response renews the cookie, naming the same backend
        counts, _ = self.spread(p.port, "/cluster1/x", fresh[-1], n=20)
        self.assertEqual(counts, {inst: 20})
        # among other cookies of the request, and on a new connection each time
        c = KeepAliveClient(p.port)
        for i in range(10):
            st, got, _ = c.get("/cluster1/y", "a=1; LBSTICKY=%s; b=2" % value)
            c.close()
            self.assertEqual((st, got), (200, inst), i)
        # another cluster's attributes: its cookie name, duration and path
        v2, inst2 = self.first_cookie(p.port, "/other/x", name="SID", path="/other", age=600)
        counts, _ = self.spread(p.port, "/other/x", v2, n=20, name="SID", path="/other", age=600)
        self.assertEqual(counts, {inst2: 20})

    def test_forged_and_foreign_cookies_ignored(self):
        bs, p = self.start()
        value, inst = self.first_cookie(p.port)
        # a character flipped: in the middle of the value, and at its start
        for pos in (len(value) // 2, 0, len(value) - 3):
            ch = value[pos]
            forged = value[:pos] + ("B" if ch != "B" else "C") + value[pos + 1:]
            counts, fresh = self.spread(p.port, "/cluster1/x", forged)
            self.assert_spread(counts, msg="(flipped at %d: %s)" % (pos, forged))
            self.assertNotIn(forged, fresh)
            # the cookie set instead is a good one
            got, _ = self.spread(p.port, "/cluster1/x", fresh[0], n=10)
            self.assertEqual(len(got), 1, got)
        for junk in ("garbage", "", "a.b", value + "x", value.split(".")[0]):
            counts, _ = self.spread(p.port, "/cluster1/x", junk or '""', n=15)
            self.assertEqual(len(counts), 3, (junk, counts))
        # a proxy with another secret made this one: ignored
        other = self.sticky_proxy(bs, secret=OTHER_SECRET)
        foreign, _ = self.first_cookie(other.port)
        counts, _ = self.spread(p.port, "/cluster1/x", foreign)
        self.assert_spread(counts, msg="(another secret's cookie)")
        # another cluster's cookie (same name, secret and backends): ignored
        counts, fresh = self.spread(p.port, "/peer/x", value, path="/peer")
        self.assert_spread(counts, msg="(cluster1's cookie sent to /peer)")
        peer_value = fresh[0]
        counts, _ = self.spread(p.port, "/cluster1/x", peer_value)
        self.assert_spread(counts, msg="(peer's cookie sent to /cluster1)")
        counts, _ = self.spread(p.port, "/peer/x", peer_value, n=10, path="/peer")
        self.assertEqual(len(counts), 1, counts)
        # expired: duration_s 1 honoured at once, ignored 2 s later
        short, sinst = self.first_cookie(p.port, "/short/x", path="/short", age=1)
        counts, _ = self.spread(p.port, "/short/x", short, n=9, path="/short", age=1)
        self.assertEqual(counts, {sinst: 9})
        time.sleep(2.1)
        counts, _ = self.spread(p.port, "/short/x", short, n=15, path="/short", age=1)
        self.assert_spread(counts, msg="(an expired cookie)")

    def test_dead_backend_falls_back(self):
        admin = free_port()
        bs, p = self.start(extra={"admin": "127.0.0.1:%d" % admin})
        wait_admin(admin)
        value, inst = self.first_cookie(p.port)
        [dead] = [b for b in bs if b.instance_id == inst]
        counts, _ = self.spread(p.port, "/cluster1/x", value, n=10)
        self.assertEqual(counts, {inst: 10})
        retries0 = promtext.sum_values(admin_metrics(admin), "lb_retries_total")
        dead.stop()
        counts, fresh = self.spread(p.port, "/cluster1/x", value, n=20)
        self.assertNotIn(inst, counts)
        self.assertGreaterEqual(promtext.sum_values(admin_metrics(admin), "lb_retries_total"),
                                retries0 + 1, "the first request after the kill was not retried")
        # the new cookie names a live backend, and sticks to it
        counts2, _ = self.spread(p.port, "/cluster1/x", fresh[0], n=20)
        self.assertEqual(len(counts2), 1, counts2)
        self.assertNotIn(inst, counts2)
        # without a cookie the two live ones share the load
        counts3, _ = self.spread(p.port, "/cluster1/x", None, n=20)
        self.assert_spread(counts3, 2)

    def test_ejected_or_weight_zero_backend_falls_back(self):
        admin = free_port()
        bs = [self.backend("sticky-%d" % i, "cluster1", args=["--fail-status", "500"])
              for i in range(3)]
        for b in bs:  # fail mode off to start with
            b.signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: all("fail mode off" in b.log() for b in bs), 5))
        fd, path = tempfile.mkstemp(prefix="proxy-sticky-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        cfg = self.sticky_config(bs, extra={"admin": "127.0.0.1:%d" % admin})
        write_config(path, cfg)
        p = self.proxy(args=["--config", path])
        wait_admin(admin)
        self.assertEqual(wait_status(p.port, "/cluster1/health", 200, timeout=5), 200)
        value, inst = self.first_cookie(p.port)
        [b] = [x for x in bs if x.instance_id == inst]
        # its backend answers 500 from now: the cookie holds until it is ejected
        b.signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: "fail mode on" in b.log(), 5))
        c = KeepAliveClient(p.port)
        self.addCleanup(c.close)
        seen = [c.get("/cluster1/x", "LBSTICKY=" + value)[:2] for _ in range(12)]
        self.assertEqual(seen[:5], [(500, inst)] * 5, seen)
        self.assertTrue(all(st == 200 and i != inst for st, i in seen[5:]), seen)
        self.assertTrue(backend_rows(admin)[b.addr]["ejected"])
        # another one, weight 0 by a reload: its cookie is not honoured either
        value2, inst2 = self.first_cookie(p.port)
        self.assertNotEqual(inst2, inst)
        [b2] = [x for x in bs if x.instance_id == inst2]
        counts, _ = self.spread(p.port, "/cluster1/x", value2, n=5)
        self.assertEqual(counts, {inst2: 5})
        cfg["clusters"][0]["weights"] = {b2.addr: 0}
        write_config(path, cfg)
        p.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration reloaded" in p.log(), 3), p.log())
        counts, _ = self.spread(p.port, "/cluster1/x", value2, n=10)
        self.assertNotIn(inst2, counts)
        self.assertNotIn(inst, counts)  # still ejected

    def test_proxies_sharing_a_secret_honour_each_others_cookies(self):
        bs, p1 = self.start()
        p2 = self.sticky_proxy(bs)
        for src, dst in ((p1, p2), (p2, p1)):
            value, inst = self.first_cookie(src.port)
            counts, _ = self.spread(dst.port, "/cluster1/x", value, n=30)
            self.assertEqual(counts, {inst: 30}, "a cookie of proxy :%d at proxy :%d"
                             % (src.port, dst.port))
        # without a secret each proxy has its own key: honoured by itself only
        q1 = self.sticky_proxy(bs, secret=None)
        q2 = self.sticky_proxy(bs, secret=None)
        value, inst = self.first_cookie(q1.port)
        counts, _ = self.spread(q1.port, "/cluster1/x", value, n=10)
        self.assertEqual(counts, {inst: 10})
        counts, _ = self.spread(q2.port, "/cluster1/x", value)
        self.assert_spread(counts, msg="(a cookie of another proxy with a generated key)")
        counts, _ = self.spread(p1.port, "/cluster1/x", value)
        self.assert_spread(counts, msg="(a generated key's cookie at a proxy with a secret)")


if __name__ == "__main__":
    unittest.main()
