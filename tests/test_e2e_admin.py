"""The admin listener (/metrics, /status, /healthz) and the access log, on a
real proxy with real backends: counters move by exactly the requests made,
the exposition parses strictly, a killed backend shows as unhealthy, and
the access log has one JSON line per request, rotated by SIGUSR1 without
losing any."""

import http.client
import json
import os
import shutil
import signal
import tempfile
import threading
import unittest

import promtext
from lbtest import (LBTestCase, admin_get, free_port, get, raw, wait_routable, wait_until)

CONTRACT_FAMILIES = {
    "lb_requests_total": "counter",
    "lb_request_duration_seconds": "histogram",
    "lb_backend_response_seconds": "histogram",
    "lb_responses_total": "counter",
    "lb_errors_total": "counter",
    "lb_backend_healthy": "gauge",
    "lb_backend_latency_seconds": "gauge",
    "lb_backend_inflight": "gauge",
    "lb_connections_active": "gauge",
    "lb_connections_total": "counter",
    "lb_bytes_total": "counter",
    "lb_desync_requests_total": "counter",
}

LOG_FIELDS = ["time", "client", "method", "path", "status", "cluster", "backend", "bytes_in",
              "bytes_out", "duration_us", "backend_us", "request_id", "desync_class",
              "desync_reason"]


def scrape(port):
    status, ctype, body = admin_get(port, "/metrics")
    assert status == 200, status
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return promtext.parse(body.decode())


def log_lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


class AdminCase(LBTestCase):
    def start(self, nbackends=2, extra=()):
        self.dir = tempfile.mkdtemp(prefix="lb-admin-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.log_path = os.path.join(self.dir, "access.log")
        self.backends = self.cluster("cluster1", nbackends)
        self.admin = free_port()
        self.p = self.proxy(routes={"/cluster1": self.backends},
                            args=["--admin", "127.0.0.1:%d" % self.admin,
                                  "--access-log", self.log_path] + list(extra))
        self.assertEqual(wait_routable(self.p.port), 200)
        wait_until(lambda: len(log_lines(self.log_path)) >= 1, 3)


class Metrics(AdminCase):
    def test_every_family_declared_from_start(self):
        self.start()
        fams = scrape(self.admin)
        for name, kind in CONTRACT_FAMILIES.items():
            self.assertIn(name, fams, "family %s missing" % name)
            self.assertEqual(fams[name].type, kind, name)
            self.assertTrue(fams[name].help, "%s has no HELP" % name)
        for b in self.backends:
            self.assertEqual(promtext.value(fams, "lb_backend_healthy", cluster="cluster1",
                                            backend=b.addr), 1)

    def test_counters_move_by_exactly_the_requests(self):
        self.start()
        before = scrape(self.admin)
        for _ in range(7):
            self.assertEqual(get(self.p.port, "/cluster1/x")[0], 200)
        for _ in range(3):
            self.assertEqual(get(self.p.port, "/no-such-route")[0], 404)
        for _ in range(2):
            self.assertEqual(get(self.p.port, "/cluster1/status/502")[0], 502)
        # a malformed head: 400, counted under "none" with its error kind
        self.assertIn(b" 400 ", raw(self.p.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))

        def delta(name, **labels):
            return (promtext.sum_values(after, name, **labels)
                    - promtext.sum_values(before, name, **labels))

        after = None

        def settled():
            nonlocal after
            after = scrape(self.admin)
            return delta("lb_requests_total", cluster="none") == 4 and \
                delta("lb_requests_total", cluster="cluster1") == 9

        self.assertTrue(wait_until(settled, 3), "requests never reached the counters")
        self.assertEqual(delta("lb_responses_total", cluster="cluster1", code="2xx"), 7)
        self.assertEqual(delta("lb_responses_total", cluster="cluster1", code="5xx"), 2)
        self.assertEqual(delta("lb_responses_total", cluster="cluster1", code="4xx"), 0)
        self.assertEqual(delta("lb_responses_total", cluster="none", code="4xx"), 4)
        self.assertEqual(delta("lb_request_duration_seconds_count", cluster="cluster1"), 9)
        self.assertEqual(delta("lb_request_duration_seconds_bucket", cluster="cluster1",
                               le="+Inf"), 9)
        self.assertEqual(delta("lb_backend_response_seconds_count", cluster="cluster1"), 9)
        self.assertEqual(delta("lb_request_duration_seconds_count", cluster="none"), 4)
        self.assertEqual(delta("lb_backend_response_seconds_count", cluster="none"), 0)
        self.assertGreater(delta("lb_request_duration_seconds_sum", cluster="cluster1"), 0)
        self.assertEqual(delta("lb_errors_total", kind="bad_request"), 1)
        self.assertEqual(delta("lb_connections_total"), 13)
        self.assertGreater(delta("lb_bytes_total", direction="in"), 13 * 30)
        self.assertGreater(delta("lb_bytes_total", direction="out"), 13 * 60)
        per_backend = sum(delta("lb_backend_requests_total", cluster="cluster1", backend=b.addr)
                          for b in self.backends)
        self.assertEqual(per_backend, 9)

    def test_errors_by_kind(self):
        dead = free_port()  # nothing listens: every connect is refused
        self.start(extra=["--route", "/dead=127.0.0.1:%d" % dead])
        before = scrape(self.admin)
        self.assertEqual(get(self.p.port, "/dead/x")[0], 502)
        after = None

        def settled():
            nonlocal after
            after = scrape(self.admin)
            return promtext.sum_values(after, "lb_requests_total", cluster="dead") == 1

        self.assertTrue(wait_until(settled, 3))
        self.assertGreaterEqual(promtext.sum_values(after, "lb_errors_total",
                                                    kind="backend_connect")
                                - promtext.sum_values(before, "lb_errors_total",
                                                      kind="backend_connect"), 1)
        self.assertEqual(promtext.value(after, "lb_responses_total", cluster="dead", code="5xx"), 1)

    def test_admin_paths_and_methods(self):
        self.start()
        st, ctype, body = admin_get(self.admin, "/healthz")
        self.assertEqual((st, body), (200, b"ok\n"))
        self.assertEqual(admin_get(self.admin, "/nope")[0], 404)
        self.assertEqual(admin_get(self.admin, "/metrics", "POST")[0], 405)
        st, _, body = admin_get(self.admin, "/metrics", "HEAD")
        self.assertEqual((st, body), (200, b""))
        # the public port does not serve the admin endpoints: /metrics there is unrouted
        self.assertEqual(get(self.p.port, "/metrics")[0], 404)
        # several scrapes on one keep-alive connection
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=5)
        try:
            for _ in range(3):
                c.request("GET", "/metrics")
                r = c.getresponse()
                promtext.parse(r.read().decode())
                self.assertEqual(r.status, 200)
        finally:
            c.close()


class Status(AdminCase):
    def status(self):
        st, ctype, body = admin_get(self.admin, "/status")
        self.assertEqual(st, 200)
        self.assertEqual(ctype, "application/json")
        return json.loads(body)

    def test_lists_backends_and_sees_one_die(self):
        self.start(nbackends=3)
        for _ in range(6):
            get(self.p.port, "/cluster1/x")
        s = self.status()
        for key in ("version", "uptime_s", "connections", "draining", "reload", "clusters"):
            self.assertIn(key, s)
        self.assertGreaterEqual(s["uptime_s"], 0)
        [c] = s["clusters"]
        self.assertEqual(c["name"], "cluster1")
        self.assertEqual({b["address"] for b in c["backends"]},
                         {b.addr for b in self.backends})
        for b in c["backends"]:
            for key in ("healthy", "last_probe_ms", "ewma_ms", "inflight", "requests", "errors",
                        "last_transition"):
                self.assertIn(key, b)
            self.assertTrue(b["healthy"])
        self.assertGreaterEqual(sum(b["requests"] for b in c["backends"]), 6)
        self.assertTrue(any(b["last_probe_ms"] for b in c["backends"]))

        victim = self.backends[1]
        victim.stop(signal.SIGKILL)

        def victim_down():
            for b in self.status()["clusters"][0]["backends"]:
                if b["address"] == victim.addr:
                    return not b["healthy"] and b
            return False

        b = wait_until(victim_down, 8, 0.1)
        self.assertTrue(b, "the killed backend never showed as unhealthy")
        self.assertIsNotNone(b["last_transition"])
        self.assertIn("unhealthy", b["last_transition"]["why"])
        others = [x for x in self.status()["clusters"][0]["backends"] if x["address"] != victim.addr]
        self.assertTrue(all(x["healthy"] for x in others))
        fams = scrape(self.admin)
        self.assertEqual(promtext.value(fams, "lb_backend_healthy", cluster="cluster1",
                                        backend=victim.addr), 0)


class AccessLog(AdminCase):
    def test_one_line_per_request(self):
        self.start()
        start = len(log_lines(self.log_path))
        req = b"GET /cluster1/bytes/1000 HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n" \
              b"Connection: close\r\n\r\n"
        resp = raw(self.p.port, req)
        self.assertIn(b" 200 ", resp[:20])
        get(self.p.port, "/elsewhere")
        lines = wait_until(lambda: (l := log_lines(self.log_path)) and len(l) >= start + 2 and l, 3)
        self.assertEqual(len(lines), start + 2)
        # Each worker hands its lines over in batches: two requests on two
        # connections may be logged in either order (the time field orders them).
        ok, miss = sorted(lines[start:], key=lambda l: l["path"] != "/cluster1/bytes/1000")
        self.assertEqual(list(ok), LOG_FIELDS)
        self.assertEqual((ok["method"], ok["path"], ok["status"], ok["cluster"]),
                         ("GET", "/cluster1/bytes/1000", 200, "cluster1"))
        self.assertIn(ok["backend"], {b.addr for b in self.backends})
        self.assertEqual(ok["bytes_in"], len(req))
        self.assertEqual(ok["bytes_out"], len(resp))
        self.assertEqual(ok["request_id"], "abc-123")
        self.assertEqual(ok["client"], "127.0.0.1")
        self.assertEqual((ok["desync_class"], ok["desync_reason"]), ("compliant", None))
        self.assertGreaterEqual(ok["duration_us"], ok["backend_us"])
        self.assertRegex(ok["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual((miss["status"], miss["cluster"], miss["backend"], miss["backend_us"]),
                         (404, "none", None, None))
        self.assertLessEqual(ok["time"], miss["time"])

    def test_sigusr1_reopens_without_losing_lines(self):
        self.start()
        total = 400
        sent = [0]
        failures = []

        def client():
            c = http.client.HTTPConnection("127.0.0.1", self.p.port, timeout=10)
            try:
                for _ in range(total // 4):
                    c.request("GET", "/cluster1/x")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append(r.status)
                    sent[0] += 1
            finally:
                c.close()

        base = len(log_lines(self.log_path))
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: sent[0] >= total // 3, 10)
        rotated = self.log_path + ".1"
        os.rename(self.log_path, rotated)
        self.p.signal(signal.SIGUSR1)
        for t in threads:
            t.join(30)
        self.assertEqual(failures, [])
        self.assertEqual(sent[0], total)

        def all_there():
            return len(log_lines(rotated)) + len(log_lines(self.log_path)) >= base + total

        wait_until(all_there, 3)
        old, new = log_lines(rotated), log_lines(self.log_path)
        self.assertEqual(len(old) + len(new), base + total)
        self.assertGreater(len(new), 0, "nothing went to the reopened file")
        ids = [l["request_id"] for l in old + new]
        self.assertEqual(len(ids), len(set(ids)), "a line was written twice")
        self.assertIn("reopening the access log", self.p.log())


if __name__ == "__main__":
    unittest.main()
