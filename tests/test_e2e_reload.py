"""SIGHUP reload under steady load, a broken config refused, and SIGTERM
drain under load, on a real proxy with real backends and 32 clients."""

import http.client
import json
import os
import signal
import socket
import tempfile
import threading
import time
import unittest

from lbtest import LBTestCase, Loadgen, admin_status, free_port, wait_routable, wait_until



def write_config(path, cfg):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f)
    os.replace(tmp, path)  # the proxy never reads a half-written file


class Reload(LBTestCase):
    def config(self, backends, strategy):
        return {"admin": "127.0.0.1:%d" % self.admin,
                "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                              "strategy": strategy,
                              "backends": [b.addr for b in backends],
                              "health_check": {"interval_ms": 500, "unhealthy_threshold": 4}}]}

    def test_reload_under_load(self):
        b1, b2, b3 = self.cluster("cluster1", 3)
        self.admin = free_port()
        fd, path = tempfile.mkstemp(prefix="proxy-reload-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        write_config(path, self.config([b1, b2], "peak-ewma"))
        p = self.proxy(args=["--config", path])
        self.assertEqual(wait_routable(p.port), 200)

        lg = Loadgen("http://127.0.0.1:%d/cluster1/x" % p.port,
                     ["--concurrency", "32", "--duration", "6", "--threads", "1"])
        self._procs.append(lg)
        time.sleep(1.5)

        write_config(path, self.config([b1, b3], "round-robin"))
        t_reload = time.monotonic()
        p.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration reloaded" in p.log(), 3), p.log())
        time.sleep(0.5)  # in-flight requests to b2 finish
        b2_after_reload = len(b2.requests_logged())

        with open(path, "w") as f:
            f.write('{"clusters": [{"name": "cluster1", "path_prefix": ')  # truncated JSON
        p.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration refused" in p.log(), 3), p.log())

        self.assertEqual(lg.wait(30), 0, lg.log())
        self.assertGreater(time.monotonic() - t_reload, 3)
        row = lg.summary()
        self.assertGreater(int(row["requests"]), 1000)
        self.assertEqual(int(row["errors"]), 0, "requests failed across the reloads")
        self.assertEqual({r["status"] for r in lg.rows()}, {"200"})

        self.assertGreater(len(b3.requests_logged()), 100, "the added backend got no traffic")
        self.assertEqual(len(b2.requests_logged()), b2_after_reload,
                         "the removed backend still got new requests")
        s = admin_status(self.admin)
        [c] = s["clusters"]
        self.assertEqual(c["strategy"], "round-robin")
        self.assertEqual(sorted(b["address"] for b in c["backends"]), sorted([b1.addr, b3.addr]))
        self.assertEqual((s["reload"]["count"], s["reload"]["failed"]), (2, 1))
        self.assertFalse(s["reload"]["last"]["ok"])
        log = p.log()
        self.assertIn("backend %s joins cluster cluster1" % b3.addr, log)
        self.assertIn("backend %s leaves cluster cluster1" % b2.addr, log)
        self.assertIn("strategy peak-ewma -> round-robin", log)
        self.assertNotIn("only after a restart", log)

    def test_settings_that_need_a_restart_are_named(self):
        b1 = self.backend("r1", "cluster1")
        self.admin = free_port()
        fd, path = tempfile.mkstemp(prefix="proxy-reload-", suffix=".json")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        write_config(path, self.config([b1], "peak-ewma"))
        p = self.proxy(args=["--config", path])
        p.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "configuration reloaded" in p.log(), 3), p.log())
        self.assertNotIn("only after a restart", p.log())
        cfg = self.config([b1], "peak-ewma")
        cfg["timeouts_ms"] = {"idle": 1234}
        cfg["admin"] = "127.0.0.1:%d" % free_port()
        write_config(path, cfg)
        p.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: '"timeouts_ms" changed' in p.log(), 3), p.log())
        self.assertIn('"admin" changed', p.log())
        self.assertTrue(wait_until(lambda: admin_status(self.admin)["reload"]["count"] == 2, 3))


class DrainUnderLoad(LBTestCase):
    def test_sigterm_completes_accepted_requests(self):
        backends = self.cluster("cluster1", 2)
        p = self.proxy(routes={"/cluster1": backends}, threads=2)
        self.assertEqual(wait_routable(p.port), 200)
        n = 32
        in_flight = threading.Barrier(n + 1)
        results = [None] * n

        def client(i):
            c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            try:
                c.request("GET", "/cluster1/x")  # a keep-alive connection, warmed up
                c.getresponse().read()
                c.request("GET", "/cluster1/delay/800")
                in_flight.wait(5)
                r = c.getresponse()
                results[i] = (r.status, r.getheader("Connection"), len(r.read()))
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = repr(e)
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        in_flight.wait(5)
        time.sleep(0.2)  # every delayed request has reached a backend
        p.signal(signal.SIGTERM)
        time.sleep(0.4)
        with self.assertRaises(OSError, msg="a new connection was accepted during the drain"):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
            try:
                s.sendall(b"GET /cluster1/x HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(100):
                    raise ConnectionResetError("closed without a response")
            finally:
                s.close()
        for t in threads:
            t.join(15)
        for i, r in enumerate(results):
            self.assertIsInstance(r, tuple, "request %d: %s" % (i, r))
            self.assertEqual(r[0], 200, "request %d" % i)
            self.assertEqual(r[1], "close", "request %d: keep-alive response during the drain" % i)
        self.assertEqual(p.proc.wait(10), 0, p.log()[-2000:])
        self.assertIn("draining", p.log())


if __name__ == "__main__":
    unittest.main()
