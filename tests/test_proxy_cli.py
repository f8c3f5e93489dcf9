"""The proxy's command line: --version, --help, bad flags and bad configs
(exit 2, a message naming the flag or field, nothing started), --check.
Runs once (not per engine)."""

import json
import os
import socket
import subprocess
import tempfile
import unittest

from lbtest import PROXY_BIN, free_port

FLAGS = ["--listen", "--route", "--config", "--threads", "--engine", "--strategy",
         "--admin", "--access-log", "--log-level", "--check", "--version", "--help"]


def run(args, timeout=10):
    """Runs the proxy; (exit code, stdout, stderr). Killed after timeout."""
    p = subprocess.Popen([PROXY_BIN] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("proxy %s still running after %ds (killed)\n%s%s"
                             % (" ".join(args), timeout, out.decode(errors="replace"),
                                err.decode(errors="replace")))
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def port_free(port):
    """True when nothing listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def valid_config(port=None):
    cfg = {
        "listen": "127.0.0.1:%d" % (port or free_port()),
        "threads": 1,
        "engine": "epoll",
        "timeouts_ms": {"connect": 500, "client_header": 1000, "idle": 5000,
                        "backend_response": 1000, "drain": 1000},
        "limits": {"max_header_bytes": 16384, "max_headers": 100},
        "clusters": [
            {"name": "cluster1", "path_prefix": "/cluster1",
             "backends": ["127.0.0.1:18101", "127.0.0.1:18102"], "retries": 1},
            {"name": "cluster2", "path_prefix": "/cluster2",
             "backends": ["127.0.0.1:18201"], "retries": 0},
        ],
    }
    return cfg


class CLITest(unittest.TestCase):
    def setUp(self):
        self.assertTrue(os.path.exists(PROXY_BIN), "no proxy binary at %s" % PROXY_BIN)
        self._files = []

    def tearDown(self):
        for f in self._files:
            try:
                os.unlink(f)
            except OSError:
                pass

    def write_config(self, cfg):
        fd, path = tempfile.mkstemp(prefix="proxy-cli-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            if isinstance(cfg, str):
                f.write(cfg)
            else:
                json.dump(cfg, f)
        self._files.append(path)
        return path

    def assert_fails(self, args, *names, code=2):
        """Runs with a listen port of its own: exit `code`, a message that
        names each of `names`, nothing left listening."""
        port = free_port()
        rc, out, err = run(["--listen", "127.0.0.1:%d" % port] + list(args))
        msg = out + err
        self.assertEqual(rc, code, "proxy %s: exit %d, expected %d\n%s"
                         % (" ".join(args), rc, code, msg))
        self.assertTrue(msg.strip(), "proxy %s: exit %d without a message" % (" ".join(args), rc))
        for n in names:
            self.assertIn(n, msg, "proxy %s: message does not name %r:\n%s"
                          % (" ".join(args), n, msg))
        self.assertTrue(port_free(port), "something listens on %d after a failed start" % port)
        return msg

    # ---- --version / --help

    def test_version(self):
        rc, out, err = run(["--version"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("proxy ", out, "--version prints %r / %r" % (out, err))

    def test_help_mentions_every_flag(self):
        rc, out, err = run(["--help"])
        self.assertEqual(rc, 0, out + err)
        for flag in FLAGS:
            self.assertIn(flag, out, "--help does not mention %s:\n%s" % (flag, out))
        for word in ("auto", "uring", "epoll"):
            self.assertIn(word, out)

    # ---- bad flags

    def test_unknown_flag(self):
        self.assert_fails(["--bogus-flag"], "--bogus-flag")

    def test_threads_not_a_number(self):
        self.assert_fails(["--threads", "x"], "--threads")

    def test_threads_zero_or_negative(self):
        self.assert_fails(["--threads", "-1"], "--threads")

    def test_engine_bogus(self):
        self.assert_fails(["--engine", "bogus"], "engine")

    def test_route_without_address(self):
        self.assert_fails(["--route", "nohost"], "--route")

    def test_route_bad_address(self):
        self.assert_fails(["--route", "/cluster1=127.0.0.1:notaport"], "--route")

    def test_missing_flag_value(self):
        self.assert_fails(["--threads"], "--threads")

    def test_log_level_bogus(self):
        self.assert_fails(["--log-level", "loud"], "--log-level")

    def test_strategy_bogus(self):
        self.assert_fails(["--strategy", "nope"], "strategy")

    def test_flag_followed_by_a_flag_is_missing_its_value(self):
        # "--listen --threads 2": --threads is the next flag, not --listen's value.
        self.assert_fails(["--admin", "--threads", "2"], "--admin: missing value")

    def test_empty_flag_value(self):
        self.assert_fails(["--access-log="], "--access-log")

    def test_desync_mitigation_bogus(self):
        self.assert_fails(["--desync-mitigation", "lenient"], "--desync-mitigation")

    def test_each_bad_flag_is_one_line(self):
        for args in (["--threads", "0"], ["--engine", "x"], ["--admin", "x:1"], ["--bogus"],
                     ["8000"], ["-t"], ["--check=1"]):
            rc, out, err = run(["--listen", "127.0.0.1:%d" % free_port()] + args)
            self.assertEqual(rc, 2, "%s: %s%s" % (args, out, err))
            self.assertEqual(err.count("\n"), 1, "%s: %r" % (args, err))
            self.assertTrue(err.startswith("proxy: "), "%s: %r" % (args, err))

    def test_listen_bogus(self):
        rc, out, err = run(["--listen", "127.0.0.1:99999"])
        self.assertEqual(rc, 2, out + err)
        self.assertIn("listen", out + err)

    # ---- bad configs

    def test_config_missing_file(self):
        path = os.path.join(tempfile.gettempdir(), "no-such-proxy-config-%d.json" % os.getpid())
        self.assert_fails(["--config", path], path)

    def test_config_invalid_json(self):
        path = self.write_config('{"clusters": [ {"name": "c1", ')
        self.assert_fails(["--config", path])

    def test_config_unknown_top_level_field(self):
        cfg = valid_config()
        cfg["bogus_field"] = 1
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "bogus_field")

    def test_config_unknown_cluster_field(self):
        cfg = valid_config()
        cfg["clusters"][0]["wieght"] = 3
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "clusters[0]", "wieght")

    def test_config_wrong_type(self):
        cfg = valid_config()
        cfg["clusters"][1]["retries"] = "two"
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "clusters[1]", "retries")

    def test_config_wrong_type_top_level(self):
        cfg = valid_config()
        cfg["timeouts_ms"]["idle"] = "soon"
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "idle")

    def test_config_bad_backend_address(self):
        cfg = valid_config()
        cfg["clusters"][0]["backends"] = ["127.0.0.1:18101", "not-an-address"]
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "clusters[0]", "backends")

    def test_config_duplicate_prefix(self):
        cfg = valid_config()
        cfg["clusters"][1]["path_prefix"] = "/cluster1"
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "path_prefix")

    def test_config_prefix_without_slash(self):
        cfg = valid_config()
        cfg["clusters"][0]["path_prefix"] = "cluster1"
        path = self.write_config(cfg)
        self.assert_fails(["--config", path], "clusters[0]", "path_prefix")

    # ---- --check

    def check_ok(self, args):
        rc, out, err = run(args + ["--check"])
        self.assertEqual(rc, 0, "proxy %s --check: exit %d\n%s%s" % (" ".join(args), rc, out, err))
        for s in ("cluster1", "/cluster1", "127.0.0.1:18101", "127.0.0.1:18102",
                  "cluster2", "/cluster2", "127.0.0.1:18201"):
            self.assertIn(s, out + err, "--check output does not show %r:\n%s%s" % (s, out, err))
        return out + err

    def test_check_valid_config(self):
        path = self.write_config(valid_config())
        self.check_ok(["--config", path])

    def test_check_route_flags(self):
        self.check_ok(["--listen", "127.0.0.1:%d" % free_port(),
                       "--route", "/cluster1=127.0.0.1:18101,127.0.0.1:18102",
                       "--route", "/cluster2=127.0.0.1:18201"])

    def test_check_does_not_bind(self):
        # The port is taken: --check still succeeds (it binds nothing).
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)
        port = ls.getsockname()[1]
        try:
            path = self.write_config(valid_config(port))
            self.check_ok(["--config", path])
            self.check_ok(["--listen", "127.0.0.1:%d" % port, "--config", path])
        finally:
            ls.close()

    def test_check_leaves_nothing_listening(self):
        port = free_port()
        path = self.write_config(valid_config(port))
        self.check_ok(["--config", path])
        self.assertTrue(port_free(port))

    def test_check_bad_config_fails(self):
        # Contract: --check exits 0/1; a bad config exits 2 ("nothing started").
        cfg = valid_config()
        cfg["clusters"][0]["backends"] = ["nope"]
        path = self.write_config(cfg)
        rc, out, err = run(["--config", path, "--check"])
        self.assertIn(rc, (1, 2), out + err)
        self.assertIn("backends", out + err)

    def test_check_prints_every_setting(self):
        cfg = valid_config()
        cfg["cloudwatch"] = {"region": "us-east-1"}
        path = self.write_config(cfg)
        rc, out, err = run(["--config", path, "--check"])
        self.assertEqual(rc, 0, out + err)
        for s in ("listen ", "threads 1\n", "engine epoll\n", "admin off\n", "access_log off\n",
                  "log_level info\n", "desync_mitigation defensive\n",
                  "limits max_header_bytes=16384 max_headers=100 max_connections=100000 "
                  "min_body_rate_bps=1024\n",
                  "timeouts_ms connect=500 client_header=1000 idle=5000 backend_response=1000 "
                  "drain=1000\n",
                  "default_response 404 text/plain (9 bytes)\n", "cluster cluster1\n",
                  "  strip_prefix false\n", "  strategy peak-ewma\n", "  retries 0\n",
                  "  discovery.ec2 off\n", "  health_check path=/health interval_ms=1000",
                  "  outlier_detection consecutive_5xx=5", "  slow_start_ms 0\n",
                  "  stickiness off\n", "  dns_refresh_s 30\n",
                  "cloudwatch namespace=CustomLB region=us-east-1 interval_s=60"):
            self.assertIn(s, out, "--check output lacks %r:\n%s" % (s, out))

    def test_flag_overrides_config_route(self):
        # --route with a prefix from the config replaces that cluster's backends.
        path = self.write_config(valid_config())
        out = run(["--config", path, "--route", "/cluster1=127.0.0.1:18999", "--check"])
        rc, text = out[0], out[1] + out[2]
        self.assertEqual(rc, 0, text)
        self.assertIn("127.0.0.1:18999", text)
        self.assertNotIn("127.0.0.1:18101", text)
        self.assertIn("127.0.0.1:18201", text)


if __name__ == "__main__":
    unittest.main()
