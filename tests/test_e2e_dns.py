"""Backends given as DNS names: resolved at start (a name that does not
resolve stops the start, exit 2), by --check (each name's addresses; exit
1 when one does not resolve), and every dns_refresh_s while running (a
change is applied like a reload; a failed resolution keeps the last set).

Names other than localhost come from a private hosts file: the proxy runs
in a mount namespace of its own (`unshare --mount`, root only) where that
file is bind-mounted over /etc/hosts and an nsswitch.conf that says
"hosts: files" over /etc/nsswitch.conf, so that no lookup leaves the
machine. Those tests are skipped where that cannot be done. Every backend
listens on 127.0.0.0/8."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import lbtest
from lbtest import LBTestCase, admin_status, free_port, get, wait_routable, wait_until

# The proxy's PID stays the one Popen started: unshare (no --fork) and sh's
# exec both keep it.
NS_SCRIPT = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf && '
             'shift 2 && exec "$@"')
RUN_TIMEOUT = 30

_ns_ok = None


def private_ns_problem():
    """Why the private hosts file cannot be used here, or None."""
    global _ns_ok
    if _ns_ok is None:
        _ns_ok = _probe_ns()
    return _ns_ok or None


def _probe_ns():
    if os.geteuid() != 0:
        return "not root: cannot mount a private /etc/hosts"
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "no unshare or mount"
    if not os.path.isfile("/etc/hosts") or not os.path.isfile("/etc/nsswitch.conf"):
        return "no /etc/hosts or /etc/nsswitch.conf to mount over"
    d = tempfile.mkdtemp(prefix="dns-probe-")
    try:
        hosts, nss = os.path.join(d, "hosts"), os.path.join(d, "nsswitch.conf")
        with open(hosts, "w") as f:
            f.write("127.0.0.2 probe.test\n")
        with open(nss, "w") as f:
            f.write("hosts: files\n")
        try:
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                NS_SCRIPT, "sh", hosts, nss, "getent", "hosts", "probe.test"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "unshare --mount failed: %s" % e
        if r.returncode != 0 or b"127.0.0.2" not in r.stdout:
            return "unshare --mount with a bind-mounted /etc/hosts failed (%d): %s" % (
                r.returncode, r.stdout.decode(errors="replace")[-300:])
        return ""
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cluster_of(status, name="cluster1"):
    return next(c for c in status["clusters"] if c["name"] == name)


def served_by(port, path="/cluster1/x"):
    """The instance_id of the backend that answered GET path (None: no 200)."""
    try:
        status, _, body = get(port, path, timeout=5)
    except OSError:
        return None
    if status != 200:
        return None
    return json.loads(body).get("instance_id")


class DnsLocalhost(LBTestCase):
    """localhost needs no private hosts file."""

    def test_route_localhost(self):
        b = self.backend("b1")
        admin = free_port()
        name = "localhost:%d" % b.port
        p = self.proxy(routes={"/cluster1": [name]}, args=["--admin", "127.0.0.1:%d" % admin])
        self.assertEqual(wait_routable(p.port), 200, p.log())
        for _ in range(20):
            self.assertEqual(served_by(p.port), "b1")
        rows = cluster_of(admin_status(admin))["backends"]
        # localhost resolves to 127.0.0.1 (and maybe ::1, whose row fails its
        # checks: the backend listens on 127.0.0.1 only). config.c may also
        # take "localhost" as the numeric 127.0.0.1, a row of its own name.
        v4 = [r for r in rows if r["address"] in ("127.0.0.1:%d" % b.port, name)]
        self.assertEqual(len(v4), 1, rows)
        if v4[0]["address"] != name:
            self.assertEqual(v4[0].get("name"), name, rows)
        self.assertTrue(v4[0]["healthy"], rows)
        self.assertGreaterEqual(v4[0]["requests"], 20, rows)


class DnsPrivateHosts(LBTestCase):
    """Names from a hosts file of the test's own (see the module's doc)."""

    def setUp(self):
        super().setUp()
        why = private_ns_problem()
        if why:
            self.skipTest(why)
        self.dir = tempfile.mkdtemp(prefix="dns-test-")
        self.hosts = os.path.join(self.dir, "hosts")
        self.nss = os.path.join(self.dir, "nsswitch.conf")
        with open(self.nss, "w") as f:
            f.write("hosts: files\n")
        self.write_hosts("")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write_hosts(self, text):
        """Rewrites the hosts file in place: the same inode, which the bind
        mount shows (a new file would not be seen)."""
        mode = "r+" if os.path.exists(self.hosts) else "w"
        with open(self.hosts, mode) as f:
            f.seek(0)
            f.truncate()
            f.write("127.0.0.1 localhost\n" + text)

    def wrapper(self):
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", NS_SCRIPT, "sh",
                self.hosts, self.nss]

    def run_proxy(self, args):
        """The proxy with args in the namespace, to its end: (rc, stdout, stderr)."""
        r = subprocess.run(self.wrapper() + [lbtest.PROXY_BIN] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def config_file(self, cfg):
        path = os.path.join(self.dir, "proxy.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def test_resolution_changes_and_failure_keeps_the_last(self):
        port = free_port()
        b2 = self.backend("b2", host="127.0.0.2", port=port)
        b3 = self.backend("b3", host="127.0.0.3", port=port)
        name = "app.test:%d" % port
        self.write_hosts("127.0.0.2 app.test\n")
        admin = free_port()
        cfg = {"clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                             "backends": [name], "dns_refresh_s": 1,
                             "health_check": {"interval_ms": 200}}]}
        p = self.proxy(config=cfg, args=["--admin", "127.0.0.1:%d" % admin],
                       wrapper=self.wrapper())
        self.assertEqual(wait_routable(p.port), 200, p.log())
        for _ in range(10):
            self.assertEqual(served_by(p.port), "b2", p.log())
        rows = cluster_of(admin_status(admin))["backends"]
        self.assertEqual([(r["address"], r.get("name")) for r in rows], [(b2.addr, name)])
        self.assertIn("resolves to %s" % b2.addr, p.log())

        # the name moves: within a few seconds requests go to 127.0.0.3
        self.write_hosts("127.0.0.3 app.test\n")
        moved = wait_until(lambda: all(served_by(p.port) == "b3" for _ in range(5)), 6.0, 0.1)
        self.assertTrue(moved, p.log())
        rows = wait_until(lambda: [(r["address"], r.get("name")) for r in
                                   cluster_of(admin_status(admin))["backends"]] ==
                          [(b3.addr, name)], 3.0)
        self.assertTrue(rows, cluster_of(admin_status(admin)))
        log = p.log()
        self.assertIn("backend %s joins cluster cluster1" % b3.addr, log)
        self.assertIn("backend %s leaves cluster cluster1" % b2.addr, log)

        # the name stops resolving: the last set stays, one log line says so
        self.write_hosts("")
        self.assertTrue(wait_until(lambda: 'cannot resolve "app.test"' in p.log(), 5.0), p.log())
        time.sleep(2.5)  # two more refreshes fail too
        for _ in range(10):
            self.assertEqual(served_by(p.port), "b3", p.log())
        rows = cluster_of(admin_status(admin))["backends"]
        self.assertEqual([(r["address"], r.get("name")) for r in rows], [(b3.addr, name)])
        self.assertEqual(p.log().count('cannot resolve "app.test"'), 1, p.log())

        # and again: one line says it works again
        self.write_hosts("127.0.0.3 app.test\n")
        self.assertTrue(wait_until(lambda: "%s resolves again" % name in p.log(), 5.0), p.log())
        self.assertEqual(served_by(p.port), "b3")

    def test_several_addresses_and_names(self):
        port = free_port()
        b2 = self.backend("b2", host="127.0.0.2", port=port)
        b3 = self.backend("b3", host="127.0.0.3", port=port)
        self.write_hosts("127.0.0.2 one.test\n127.0.0.3 one.test\n127.0.0.3 two.test\n")
        admin = free_port()
        p = self.proxy(routes={"/cluster1": ["one.test:%d" % port, "two.test:%d" % port]},
                       args=["--admin", "127.0.0.1:%d" % admin, "--strategy", "round-robin"],
                       wrapper=self.wrapper())
        self.assertEqual(wait_routable(p.port), 200, p.log())
        rows = cluster_of(admin_status(admin))["backends"]
        # the union, each address once, sorted
        self.assertEqual([r["address"] for r in rows], [b2.addr, b3.addr], rows)
        seen = {served_by(p.port) for _ in range(20)}
        self.assertEqual(seen, {"b2", "b3"}, p.log())

    def test_reload_changes_the_names(self):
        port = free_port()
        b2 = self.backend("b2", host="127.0.0.2", port=port)
        b3 = self.backend("b3", host="127.0.0.3", port=port)
        self.write_hosts("127.0.0.2 one.test\n127.0.0.3 two.test\n")
        admin = free_port()

        def cfg(backends):
            return {"listen": "127.0.0.1:%d" % p.port, "clusters": [
                {"name": "cluster1", "path_prefix": "/cluster1", "backends": backends,
                 "health_check": {"interval_ms": 200}}]}

        p = self.proxy(config={"clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                                             "backends": ["one.test:%d" % port]}]},
                       args=["--admin", "127.0.0.1:%d" % admin], wrapper=self.wrapper())
        self.assertEqual(wait_routable(p.port), 200, p.log())
        self.assertEqual(served_by(p.port), "b2")

        def addresses():
            return [(r["address"], r.get("name")) for r in
                    cluster_of(admin_status(admin))["backends"]]

        # another name (refresh 30 s): resolved within a second or so of the reload
        with open(p.config_path, "w") as f:
            json.dump(cfg(["two.test:%d" % port]), f)
        p.signal(lbtest.signal.SIGHUP)
        want = [(b3.addr, "two.test:%d" % port)]
        self.assertTrue(wait_until(lambda: addresses() == want, 4.0), (addresses(), p.log()))
        self.assertEqual(served_by(p.port), "b3")

        # no names any more: the resolved rows go with them
        with open(p.config_path, "w") as f:
            json.dump(cfg([b2.addr]), f)
        p.signal(lbtest.signal.SIGHUP)
        want = [(b2.addr, None)]
        self.assertTrue(wait_until(lambda: addresses() == want, 4.0), (addresses(), p.log()))
        self.assertEqual(served_by(p.port), "b2")

    def test_check(self):
        port = free_port()
        self.write_hosts("127.0.0.2 app.test\n")
        ok = "app.test:%d" % port
        rc, out, err = self.run_proxy(["--route", "/cluster1=" + ok, "--check"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("backend %s (DNS name)" % ok, out)
        self.assertIn("backend %s -> 127.0.0.2:%d" % (ok, port), out)

        bad = "nosuch.test:%d" % port
        path = self.config_file({"listen": "127.0.0.1:%d" % free_port(), "clusters": [
            {"name": "cluster1", "path_prefix": "/cluster1", "backends": [ok, bad]}]})
        rc, out, err = self.run_proxy(["--config", path, "--check"])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("backend %s -> 127.0.0.2:%d" % (ok, port), out)
        self.assertIn('backend %s: cannot resolve "nosuch.test"' % bad, out)
        self.assertIn('proxy: clusters[0].backends[1]: cannot resolve "nosuch.test"', err)

    def test_unresolvable_at_start(self):
        port = free_port()
        self.write_hosts("127.0.0.2 app.test\n")
        listen = "127.0.0.1:%d" % free_port()
        rc, out, err = self.run_proxy(["--listen", listen, "--route",
                                       "/cluster1=app.test:%d,nosuch.test:%d" % (port, port)])
        self.assertEqual(rc, 2, out + err)
        self.assertIn('proxy: --route /cluster1: cannot resolve "nosuch.test"', err)

        path = self.config_file({"listen": listen, "clusters": [
            {"name": "cluster1", "path_prefix": "/cluster1",
             "backends": ["127.0.0.2:%d" % port, "nosuch.test:%d" % port]}]})
        rc, out, err = self.run_proxy(["--config", path])
        self.assertEqual(rc, 2, out + err)
        self.assertIn('proxy: clusters[0].backends[1]: cannot resolve "nosuch.test"', err)


if __name__ == "__main__":
    unittest.main()
