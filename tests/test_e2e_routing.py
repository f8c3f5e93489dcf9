"""End-to-end routing through the proxy (DESIGN.md, "Routing" and "Data
path"): longest prefix on a segment boundary, the default 404, spreading
over a cluster's backends, the path forwarded unchanged, the X-Forwarded-*
and X-Request-Id headers, and hop-by-hop headers removed. Runs once per
engine (LB_ENGINE)."""

import collections
import http.client
import http.server
import json
import threading
import time
import unittest

from lbtest import (SharedLBTestCase, connect, get, wait_status, wait_until)

NO_ROUTE = b"no route\n"


class RecordingServer:
    """An HTTP/1.1 server on 127.0.0.1 in a Python thread that records, for
    every request, (method, target, [(header, value)], body) and answers 200
    with a small JSON body (keep-alive)."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 15

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with rec.lock:
                    rec.requests.append((self.command, self.path, list(self.headers.items()),
                                         body))
                out = json.dumps({"path": self.path, "instance_id": "recorder",
                                  "cluster": "rec"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def find(self, path_prefix, timeout=5.0):
        """The recorded requests whose target starts with path_prefix."""
        def look():
            with self.lock:
                return [r for r in self.requests if r[1].startswith(path_prefix)]
        return wait_until(look, timeout)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def headers_of(recorded):
    """The recorded header list as {lower-case name: [values]}."""
    d = collections.defaultdict(list)
    for k, v in recorded[2]:
        d[k.lower()].append(v)
    return d


class TwoClusters(SharedLBTestCase):
    """/cluster1 -> 2 backends, /cluster2 -> 2 backends, one proxy."""

    @classmethod
    def start_shared(cls):
        cls.c1 = [cls.shared_backend("c1-%d" % i, "cluster1") for i in (1, 2)]
        cls.c2 = [cls.shared_backend("c2-%d" % i, "cluster2") for i in (1, 2)]
        # round-robin: the spread test sends one request at a time, and at
        # that concurrency peak-ewma rightly favours whichever backend has
        # answered fastest lately (covered by test_e2e_balancing).
        cls.p = cls.shared_proxy(routes={"/cluster1": cls.c1, "/cluster2": cls.c2},
                                 args=["--strategy", "round-robin"])
        for path in ("/cluster1", "/cluster2"):
            st = wait_status(cls.p.port, path, 200, timeout=15)
            if st != 200:
                raise RuntimeError("%s answers %r, not 200:\n%s" % (path, st, cls.p.log()[-3000:]))

    def json_get(self, path, **kw):
        st, h, body = get(self.p.port, path, **kw)
        self.assertEqual(st, 200, "%s: %s %r" % (path, st, body[:300]))
        return json.loads(body)

    def test_cluster1_prefix_matches(self):
        ids = {"c1-1", "c1-2"}
        for path in ("/cluster1", "/cluster1/", "/cluster1/x", "/cluster1?q",
                     "/cluster1?q=1&r=2", "/cluster1/x/y/z"):
            j = self.json_get(path)
            self.assertEqual(j["cluster"], "cluster1", path)
            self.assertIn(j["instance_id"], ids, path)

    def test_cluster2_prefix_matches(self):
        ids = {"c2-1", "c2-2"}
        for path in ("/cluster2", "/cluster2/abc", "/cluster2?x"):
            j = self.json_get(path)
            self.assertEqual(j["cluster"], "cluster2", path)
            self.assertIn(j["instance_id"], ids, path)

    def test_other_methods_route(self):
        for method in ("POST", "PUT", "DELETE"):
            j = self.json_get("/cluster2/item", method=method, body=b"x" if method != "DELETE"
                              else None)
            self.assertEqual(j["cluster"], "cluster2", method)

    def test_no_route_404(self):
        for path in ("/cluster10", "/", "/other", "/cluster", "/cluster1x/y", "/x/cluster1"):
            st, h, body = get(self.p.port, path)
            self.assertEqual(st, 404, path)
            self.assertEqual(body, NO_ROUTE, path)

    def test_404_keeps_connection(self):
        c = http.client.HTTPConnection("127.0.0.1", self.p.port, timeout=10)
        try:
            c.request("GET", "/other")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (404, NO_ROUTE))
            sock = c.sock
            self.assertIsNotNone(sock, "the proxy closed the connection after a 404")
            c.request("GET", "/cluster1/after404")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(json.loads(r.read())["cluster"], "cluster1")
            self.assertIs(c.sock, sock, "the proxy closed the connection after a 404")
        finally:
            c.close()

    def test_spread_over_backends(self):
        counts = collections.Counter()
        for i in range(40):
            counts[self.json_get("/cluster1/spread/%d" % i)["instance_id"]] += 1
        self.assertEqual(set(counts), {"c1-1", "c1-2"}, counts)
        for inst, n in counts.items():
            self.assertGreaterEqual(n, 5, "40 requests went %r" % dict(counts))

    def test_path_forwarded_unchanged(self):
        for path in ("/cluster1/a/b", "/cluster1/a/b%20c/%7Ed", "/cluster2/x/y.json"):
            self.assertEqual(self.json_get(path)["path"], path)
        j = self.json_get("/cluster1/q?x=1&y=%2F")
        self.assertIn(j["path"], ("/cluster1/q?x=1&y=%2F", "/cluster1/q"))


class NoRoutes(SharedLBTestCase):
    def test_everything_404_and_warns_once(self):
        p = self.proxy(routes={})
        for method, path in (("GET", "/"), ("GET", "/cluster1"), ("POST", "/x"),
                             ("GET", "/health"), ("DELETE", "/a/b?c")):
            st, _, body = get(p.port, path, method=method, body=b"b" if method == "POST" else None)
            self.assertEqual(st, 404, (method, path))
            self.assertEqual(body, NO_ROUTE, (method, path))
        time.sleep(0.2)
        warns = [l for l in p.log().splitlines()
                 if "warn" in l.lower() and "route" in l.lower()]
        self.assertEqual(len(warns), 1, "expected one warning about no routes:\n" + p.log())


class ForwardedHeaders(SharedLBTestCase):
    """What reaches the backend, seen by a recording Python server."""

    @classmethod
    def start_shared(cls):
        cls.rec = RecordingServer()
        cls.cleanups.append(cls.rec.stop)
        cls.p = cls.shared_proxy(routes={"/rec": [cls.rec.addr]})
        st = wait_status(cls.p.port, "/rec/ready", 200, timeout=15)
        if st != 200:
            raise RuntimeError("/rec answers %r, not 200:\n%s" % (st, cls.p.log()[-3000:]))

    def one(self, path, headers=None, method="GET", body=None):
        st, _, _ = get(self.p.port, path, method=method, body=body, headers=headers)
        self.assertEqual(st, 200)
        found = self.rec.find(path.split("?")[0])
        self.assertTrue(found, "the backend did not see %s" % path)
        self.assertEqual(len(found), 1, found)
        return found[0], headers_of(found[0])

    def test_forwarded_for_proto_port(self):
        _, h = self.one("/rec/fwd")
        self.assertEqual(h["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(h["x-forwarded-proto"], ["http"])
        self.assertEqual(h["x-forwarded-port"], [str(self.p.port)])

    def test_forwarded_for_appended(self):
        _, h = self.one("/rec/xff", headers={"X-Forwarded-For": "1.2.3.4"})
        self.assertEqual(h["x-forwarded-for"], ["1.2.3.4, 127.0.0.1"])

    def test_request_id_kept(self):
        _, h = self.one("/rec/rid-kept", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(h["x-request-id"], ["abc-123"])

    def test_request_id_generated(self):
        _, h1 = self.one("/rec/rid-gen-1")
        _, h2 = self.one("/rec/rid-gen-2")
        self.assertEqual(len(h1["x-request-id"]), 1, h1)
        self.assertEqual(len(h2["x-request-id"]), 1, h2)
        self.assertGreaterEqual(len(h1["x-request-id"][0]), 8)
        self.assertNotEqual(h1["x-request-id"], h2["x-request-id"])

    def test_hop_by_hop_removed(self):
        s, rd = connect(self.p.port)
        with s:
            s.sendall(b"GET /rec/hop HTTP/1.1\r\nHost: example\r\n"
                      b"Connection: foo, keep-alive\r\nFoo: bar\r\nKeep-Alive: timeout=5\r\n"
                      b"TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\n"
                      b"X-Keep: yes\r\n\r\n")
            r = rd.read_response()
        self.assertEqual(r.status, 200)
        found = self.rec.find("/rec/hop")
        self.assertTrue(found)
        h = headers_of(found[0])
        for name in ("foo", "keep-alive", "te", "trailer", "proxy-connection"):
            self.assertNotIn(name, h, "%s reached the backend: %r" % (name, found[0][2]))
        for v in h.get("connection", []):
            self.assertNotIn("foo", v.lower())
        self.assertEqual(h["x-keep"], ["yes"])
        self.assertEqual(h["host"], ["example"])

    def test_upgrade_removed_when_not_upgrading(self):
        _, h = self.one("/rec/noupgrade", headers={"Upgrade": "h2c"})
        self.assertNotIn("upgrade", h)

    def test_target_and_body_forwarded(self):
        rq, h = self.one("/rec/a/b%20c?x=1&y=%2F", method="POST", body=b"payload",
                         headers={"Content-Type": "text/plain", "X-Custom": "v"})
        self.assertEqual(rq[0], "POST")
        self.assertEqual(rq[1], "/rec/a/b%20c?x=1&y=%2F")
        self.assertEqual(rq[3], b"payload")
        self.assertEqual(h["x-custom"], ["v"])
        self.assertEqual(h["content-type"], ["text/plain"])


if __name__ == "__main__":
    unittest.main()
