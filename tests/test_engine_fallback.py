"""The proxy where io_uring_setup is refused (seccomp, as in many container
runtimes): `--engine auto` falls back to epoll with one log line and serves;
`--engine uring` refuses to start."""

import os
import subprocess
import unittest

from lbtest import LBTestCase, PROXY_BIN, free_port, get

DENY = os.environ.get("DENY_URING_BIN", "")


@unittest.skipUnless(DENY and os.path.exists(DENY), "deny_uring helper not built")
class EngineFallback(LBTestCase):
    def test_auto_falls_back_to_epoll(self):
        b = self.backend("f1", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]}, engine="auto", wrapper=[DENY])
        status, _, body = get(p.port, "/cluster1/x")
        self.assertEqual(status, 200)
        self.assertIn(b'"instance_id":"f1"', body)
        log = p.log()
        self.assertEqual(log.count("io_uring unavailable"), 1, log)
        self.assertIn("engine epoll", log)

    def test_uring_required_refuses_to_start(self):
        port = free_port()
        r = subprocess.run([DENY, PROXY_BIN, "--listen", "127.0.0.1:%d" % port, "--engine",
                            "uring"], capture_output=True, text=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("io_uring", r.stderr)

    def test_without_filter_auto_uses_uring(self):
        b = self.backend("f2", "cluster1")
        p = self.proxy(routes={"/cluster1": [b]}, engine="auto")
        log = p.log()
        if "io_uring unavailable" in log:
            self.skipTest("io_uring refused on this machine itself")
        self.assertIn("engine uring", log)


if __name__ == "__main__":
    unittest.main()
