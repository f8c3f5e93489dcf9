"""awsctl up / status / down end to end, with no AWS and no network beyond
this machine:

- EC2, SSM and IAM are tests/aws_standin.py: a local server that checks every
  request's SigV4 signature, keeps state (VPC, subnets, groups, key pairs,
  instances, the proxy's IAM role and instance profile), gives instances
  loopback addresses (the same one as public and private IP) and serves
  injected faults. awsctl reaches it through AWS_ENDPOINT_URL* with the
  stand-in's fake credentials.
- The "instances" are one real OpenSSH sshd (tests/sshd_fixture.py) that
  listens on all their addresses on one high port (AWSCTL_SSH_PORT); the
  stand-in writes each launched key pair's public key to its authorized_keys,
  as EC2 does on an instance. Every instance gets its own directory under the
  test's remote dir (AWSCTL_REMOTE_PER_INSTANCE=1), and the bootstraps start
  each backend and the proxy on the instance's own address, port 8000.
- --allow-cidr auto asks a small local HTTP server (AWSCTL_CHECKIP_URL).

The addresses are 127.X.Y.11 and up with X.Y random per run, so two runs on
one machine (build/ and build-asan/) do not collide. Every backend and proxy
the bootstraps start is stopped at the end by the PID in its pid file."""

import hashlib
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import unittest

import lbtest
from aws_standin import AwsClient, StandIn
from sshd_fixture import SSHD

AWSCTL = os.environ.get("AWSCTL_BIN", os.path.join(lbtest.BUILD, "awsctl"))
HERE = os.path.dirname(os.path.abspath(__file__))
NET = "127.%d.%d" % (random.randint(100, 250), random.randint(0, 255))
# sshd listens on at most 16 addresses; the stand-in restarts at .11 after
# every reset, so each test has .11 to .26.
ADDRESSES = ["%s.%d" % (NET, n) for n in range(11, 27)]
NAME = "e2e"
PROXY_ROLE = "awsctl-%s-proxy" % NAME  # and its instance profile
CMD_TIMEOUT = 120


class CheckIp(http.server.BaseHTTPRequestHandler):
    """checkip.amazonaws.com's answer: the caller's address and a newline."""

    def do_GET(self):
        body = b"127.0.0.1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def http_get(addr, path, timeout=3):
    """(status, body) of GET http://addr:8000/path, or (None, error)."""
    c = http.client.HTTPConnection(addr, 8000, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, str(e).encode()
    finally:
        c.close()


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class AwsctlTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(AWSCTL, os.X_OK):
            raise unittest.SkipTest("%s not built" % AWSCTL)
        cls.sshd = SSHD(ADDRESSES)
        cls.standin = StandIn(ip_start=ADDRESSES[0],
                              authorized_keys_file=cls.sshd.authorized_keys).start()
        cls.checkip = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CheckIp)
        threading.Thread(target=cls.checkip.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.checkip.shutdown()
        cls.checkip.server_close()
        cls.standin.stop()
        cls.sshd.cleanup()

    def setUp(self):
        self.standin.reset()
        self.dir = tempfile.mkdtemp(prefix="awsctl-test-")
        self.remote = os.path.join(self.dir, "remote")
        os.makedirs(self.remote)
        self.state_path = os.path.join(self.dir, "awsctl-%s.json" % NAME)
        self.env = self.standin.env()
        self.env.update({
            "AWSCTL_SSH_PORT": str(self.sshd.port),
            "AWSCTL_SSH_USER": self.sshd.user,
            "AWSCTL_REMOTE_DIR": self.remote,
            "AWSCTL_REMOTE_PER_INSTANCE": "1",
            "AWSCTL_SERVICE_MODE": "nohup",
            "AWSCTL_PROXY_ADMIN": "127.0.0.1:%d" % lbtest.free_port(),
            "AWSCTL_CHECKIP_URL": "http://127.0.0.1:%d/" % self.checkip.server_address[1],
            # The proxy's EC2 discovery and CloudWatch ask the stand-in too.
            "AWSCTL_FORWARD_ENV": "AWS_ENDPOINT_URL,AWS_ENDPOINT_URL_EC2,"
                                  "AWS_ENDPOINT_URL_CLOUDWATCH,AWS_ACCESS_KEY_ID,"
                                  "AWS_SECRET_ACCESS_KEY,AWS_REGION,AWS_CONFIG_FILE,"
                                  "AWS_SHARED_CREDENTIALS_FILE",
            "LB_AWS_RETRY_BASE_MS": "20",
        })

    def tearDown(self):
        self.stop_started()
        reports = self.sanitizer_reports()
        shutil.rmtree(self.dir, ignore_errors=True)
        if reports:
            self.fail("\n\n".join(reports))

    # -- helpers -------------------------------------------------------------

    def stop_started(self):
        """Stops what the bootstraps started (grandchildren of the test), by
        the PIDs in their pid files, checking each PID still runs our file."""
        pids = []
        for root, _, files in os.walk(self.remote):
            for name in files:
                if not name.endswith(".pid"):
                    continue
                try:
                    with open(os.path.join(root, name)) as f:
                        pid = int(f.read().strip() or 0)
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        mine = f.read().startswith(root.encode() + b"/")
                except (OSError, ValueError):
                    continue
                if mine:
                    pids.append(pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            pids = [p for p in pids if not lbtest.wait_until(lambda: not pid_alive(p), 5)]

    def sanitizer_reports(self):
        """The logs of the started backends and proxy that hold a report."""
        found = []
        for root, _, files in os.walk(self.remote):
            for name in files:
                if name.endswith(".log"):
                    with open(os.path.join(root, name), errors="replace") as f:
                        log = f.read()
                    if any(m in log for m in ("AddressSanitizer", "LeakSanitizer",
                                              "runtime error:")):
                        found.append("%s/%s:\n%s" % (root, name, log[-4000:]))
        return found

    def awsctl(self, *args, expect=0, timeout=CMD_TIMEOUT):
        """Runs awsctl in the test's directory: (stdout, stderr)."""
        r = subprocess.run([AWSCTL] + list(args), cwd=self.dir, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if expect is not None:
            self.assertEqual(r.returncode, expect, "awsctl %s exited %d:\n%s\n%s"
                             % (" ".join(args), r.returncode, r.stdout, r.stderr))
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            self.assertNotIn(marker, r.stderr)
        return r.stdout, r.stderr

    def up(self, *args, **kw):
        return self.awsctl("up", "--name", NAME, *args, **kw)

    def instances(self, live=True):
        found = self.standin.instances(Deployment=NAME)
        if live:
            found = [i for i in found if i["state"] not in ("shutting-down", "terminated")]
        return found

    def served(self, action):
        return [r for r in self.standin.requests(action=action) if r["ok"]]

    def state(self):
        with open(self.state_path) as f:
            return json.load(f)

    def remote_path(self, instance_id, name):
        return os.path.join(self.remote, instance_id, name)

    def iam(self):
        return self.standin.state()["iam"]

    def iam_changes(self):
        """The IAM calls that were not reads."""
        return [r["action"] for r in self.standin.requests(service="iam")
                if not r["action"].startswith("Get")]

    def group(self):
        groups = [g for g in self.standin.state()["security_groups"]
                  if g["group_name"] == "awsctl-" + NAME]
        return groups[0] if groups else None

    # -- the deployment ------------------------------------------------------

    def check_instances(self, micro, large):
        insts = self.instances()
        self.assertEqual(len(insts), micro + large + 1, insts)
        for i in insts:
            self.assertEqual(i["state"], "running")
            self.assertEqual(i["tags"]["Deployment"], NAME)
            self.assertIn("Name", i["tags"])
            self.assertEqual(i["key_name"], "awsctl-" + NAME)
        kinds = sorted((i["tags"].get("Role"), i["tags"].get("Cluster"), i["instance_type"])
                       for i in insts)
        want = sorted([("backend", "cluster1", "t2.micro")] * micro +
                      [("backend", "cluster2", "t2.large")] * large +
                      [("proxy", None, "t2.large")])
        self.assertEqual(kinds, want)
        return insts

    def check_pushed(self, insts):
        """The binaries arrived intact and executable, the bootstraps ran,
        every backend answers /health on its own address as itself."""
        backend, proxy = lbtest.BACKEND_BIN, lbtest.PROXY_BIN
        for i in insts:
            binary = "proxy" if i["tags"]["Role"] == "proxy" else "backend"
            path = self.remote_path(i["instance_id"], binary)
            self.assertEqual(sha256(path), sha256(proxy if binary == "proxy" else backend))
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o755)
            with open(self.remote_path(i["instance_id"], binary + ".pid")) as f:
                self.assertTrue(pid_alive(int(f.read())), "%s on %s is not running"
                                % (binary, i["instance_id"]))
            if binary == "backend":
                status, body = http_get(i["public_ip"], "/health")
                self.assertEqual(status, 200, body)
                health = json.loads(body)
                self.assertEqual(health["instance_id"], i["instance_id"])
                self.assertEqual(health["cluster"], i["tags"]["Cluster"])

    def check_iam(self, insts):
        """The proxy's role may do exactly what the proxy does on AWS, its
        instance profile holds it, and only the proxy instance carries it."""
        iam = self.iam()
        [role] = iam["roles"]
        self.assertEqual((role["role_name"], role["tags"]),
                         (PROXY_ROLE, {"Deployment": NAME, "CreatedBy": "awsctl"}))
        self.assertEqual(role["assume_role_policy"]["Statement"], [{
            "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"}])
        [policy] = role["policies"].values()
        allowed = []
        for statement in policy["Statement"]:
            self.assertEqual((statement["Effect"], statement["Resource"]), ("Allow", "*"))
            action = statement["Action"]
            allowed += [action] if isinstance(action, str) else action
        self.assertEqual(sorted(allowed), ["cloudwatch:PutMetricData", "ec2:DescribeInstances"])
        [profile] = iam["instance_profiles"]
        self.assertEqual((profile["instance_profile_name"], profile["roles"]),
                         (PROXY_ROLE, [PROXY_ROLE]))
        self.assertEqual({i["instance_id"]: i["iam_instance_profile"] for i in insts},
                         {i["instance_id"]: profile["arn"] if i["tags"]["Role"] == "proxy" else None
                          for i in insts})
        state = self.state()
        self.assertEqual((state["iam_role"], state["iam_instance_profile"]),
                         (PROXY_ROLE, PROXY_ROLE))

    def check_routing(self, insts):
        """The proxy routes /cluster1 and /cluster2 to their own backends."""
        proxy = [i for i in insts if i["tags"]["Role"] == "proxy"][0]
        with open(self.remote_path(proxy["instance_id"], "proxy.json")) as f:
            config = json.load(f)
        discovery = config["clusters"][0]["discovery"]["ec2"]
        self.assertEqual(discovery["tags"], {"Cluster": "cluster1", "Deployment": NAME})
        self.assertEqual(discovery["interval_s"], 15)
        # every proxy of the deployment publishes as one load balancer
        self.assertEqual(config["cloudwatch"], {"namespace": "CustomLB",
                                                "region": discovery["region"],
                                                "load_balancer": "app/" + NAME})
        for cluster in ("cluster1", "cluster2"):
            members = {i["instance_id"] for i in insts if i["tags"].get("Cluster") == cluster}
            ok = lbtest.wait_until(lambda: http_get(proxy["public_ip"], "/%s/x" % cluster)[0]
                                   == 200, 15, 0.1)
            self.assertTrue(ok, "the proxy does not route /%s" % cluster)
            seen = set()
            for _ in range(40):
                status, body = http_get(proxy["public_ip"], "/%s/x" % cluster)
                self.assertEqual(status, 200, body)
                seen.add(json.loads(body)["instance_id"])
            self.assertTrue(seen <= members, "/%s answered by %s" % (cluster, seen - members))
            self.assertGreater(len(seen), 1, "/%s always went to one backend" % cluster)

    def test_up_again_status_down(self):
        out, _ = self.up()
        insts = self.check_instances(4, 4)
        proxy = [i for i in insts if i["tags"]["Role"] == "proxy"][0]
        self.assertIn("http://%s:8000/cluster1" % proxy["public_ip"], out)
        self.assertIn("http://%s:8000/cluster2" % proxy["public_ip"], out)
        self.assertRegex(out, r"waiting: \d+/9 running, \d+/9 ssh")
        # Spread over the three default subnets.
        self.assertEqual(len({i["subnet_id"] for i in insts}), 3)

        state = self.state()
        self.assertEqual(len(state["instances"]), 9)
        self.assertTrue(all(i["host_key"].startswith("ssh-ed25519 ") for i in state["instances"]))
        self.assertEqual(state["rule_cidrs"], ["127.0.0.1/32"])
        self.assertTrue(state["key_created"])
        self.assertEqual(stat.S_IMODE(os.stat(state["key_path"]).st_mode), 0o600)
        group = self.group()
        rules = {(r["from_port"], r.get("cidr")) for r in group["ingress"]}
        self.assertTrue({(22, "127.0.0.1/32"), (8000, "127.0.0.1/32")} <= rules, rules)
        self.assertIn(group["group_id"], {r.get("group") for r in group["ingress"]})

        self.check_iam(insts)
        self.check_pushed(insts)
        self.check_routing(insts)

        # Again: nothing new is created, the same instances are used.
        launches = len(self.standin.requests(action="RunInstances"))
        iam_changes = self.iam_changes()
        self.assertEqual(sorted(iam_changes), ["AddRoleToInstanceProfile",
                                               "CreateInstanceProfile", "CreateRole",
                                               "PutRolePolicy"])
        self.up()
        self.assertEqual(len(self.standin.requests(action="RunInstances")), launches)
        self.assertEqual(self.iam_changes(), iam_changes)
        self.assertEqual(len(self.served("CreateSecurityGroup")), 1)
        self.assertEqual(len(self.served("CreateKeyPair")), 1)
        self.assertEqual({i["instance_id"] for i in self.check_instances(4, 4)},
                         {i["instance_id"] for i in insts})

        out, _ = self.awsctl("status", "--name", NAME)
        self.assertIn("healthy: 8/8 backends, 1/1 proxy", out)
        region = self.state()["region"]
        self.assertIn("cloudwatch: CustomLB, LoadBalancer=app/%s: https://%s.console.aws.amazon."
                      "com/cloudwatch/home?region=%s#metricsV2:" % (NAME, region, region), out)
        for i in insts:
            self.assertRegex(out, re.escape(i["instance_id"]) + r" .* ok")

        # A backend that stops answering shows in status, which then fails.
        victim = [i for i in insts if i["tags"]["Role"] == "backend"][0]
        with open(self.remote_path(victim["instance_id"], "backend.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        self.assertTrue(lbtest.wait_until(lambda: not pid_alive(pid), 10))
        out, _ = self.awsctl("status", "--name", NAME, expect=1)
        self.assertIn("healthy: 7/8 backends", out)
        self.assertRegex(out, re.escape(victim["instance_id"]) + r" .* down \(")

        key_path = state["key_path"]
        self.awsctl("down", "--name", NAME)
        self.assertEqual(self.instances(), [])
        self.assertEqual(len(self.standin.instances(Deployment=NAME)), 9)
        self.assertIsNone(self.group())
        self.assertEqual(self.standin.state()["key_pairs"], [])
        self.assertEqual(self.iam(), {"roles": [], "instance_profiles": []})
        self.assertFalse(os.path.exists(self.state_path))
        self.assertFalse(os.path.exists(key_path))
        _, err = self.awsctl("status", "--name", NAME, expect=1)

    # -- faults --------------------------------------------------------------

    def test_throttling_is_retried(self):
        key = os.path.join(self.dir, "my_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True,
                       timeout=30)
        # Without key.pub: awsctl reads the public key from the private key file.
        with open(key + ".pub") as f:
            public = f.read().split()[:2]
        os.unlink(key + ".pub")
        self.standin.inject(kind="throttle", action="RunInstances", count=2)
        self.standin.inject(kind="throttle", action="DescribeInstances", count=1)
        _, err = self.up("--micro", "1", "--large", "1", "--allow-cidr", "127.0.0.1/32",
                         "--ssh-key", key)
        self.assertIn("RequestLimitExceeded", err)
        self.check_instances(1, 1)
        throttled = [r for r in self.standin.requests(action="RunInstances") if r["injected"]]
        self.assertEqual(len(throttled), 2)
        self.assertEqual(len(self.served("ImportKeyPair")), 1)
        self.assertEqual(self.standin.state()["key_pairs"][0]["public_key"].split()[:2], public)
        self.awsctl("down", "--name", NAME)
        self.assertEqual(self.standin.state()["key_pairs"], [])
        self.assertTrue(os.path.exists(key), "down removed the user's own key")

    def test_unauthorized_is_reported(self):
        self.standin.inject(kind="error", action="RunInstances", count=None,
                            code="UnauthorizedOperation", status=403,
                            message="You are not authorized to perform this operation.")
        _, err = self.up("--micro", "1", "--large", "1", "--allow-cidr", "127.0.0.1/32",
                         expect=1)
        self.assertIn("UnauthorizedOperation: You are not authorized to perform this "
                      "operation.", err)
        self.assertEqual(len(self.standin.requests(action="RunInstances")), 1, "retried")
        self.assertEqual(self.instances(), [])
        self.standin.clear_injections()
        self.awsctl("down", "--name", NAME)

    def test_new_instance_profile_is_retried(self):
        """EC2 learns of a new instance profile seconds after IAM made it, and
        refuses it until then: the proxy's launch waits for it."""
        self.standin.configure(profile_propagation_runs=2)
        out, _ = self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32")
        self.assertIn("instance profile %s is not known to EC2 yet: retrying in 1 s" % PROXY_ROLE,
                      out)
        refused = [r for r in self.standin.requests(action="RunInstances")
                   if r["code"] == "InvalidParameterValue"]
        self.assertEqual(len(refused), 2)
        self.assertTrue(all(r["params"]["IamInstanceProfile.Name"] == PROXY_ROLE
                            for r in refused))
        self.check_iam(self.check_instances(1, 0))
        self.awsctl("down", "--name", NAME)
        self.assertEqual(self.iam(), {"roles": [], "instance_profiles": []})

    def test_iam_refusals_stop_up_before_ec2(self):
        """Without IAM permissions, or with a role of that name that awsctl did
        not make, up stops before it changes anything in EC2."""
        self.standin.inject(kind="error", service="iam", action="CreateRole", count=None,
                            code="AccessDenied", status=403,
                            message="User: arn:aws:iam::123456789012:user/op is not authorized "
                                    "to perform: iam:CreateRole")
        _, err = self.up("--allow-cidr", "127.0.0.1/32", expect=1)
        self.assertIn("create IAM role %s (assumed by ec2.amazonaws.com) (CreateRole): "
                      "AccessDenied: User: " % PROXY_ROLE, err)
        self.assertIsNone(self.group())
        self.assertEqual(self.standin.requests(action="RunInstances"), [])
        self.standin.clear_injections()

        client = AwsClient(self.standin.url, self.standin.access_key, self.standin.secret_key)
        status, _ = client.iam("CreateRole", {"RoleName": PROXY_ROLE, "AssumeRolePolicyDocument":
                                              '{"Statement": [{"Effect": "Allow"}]}'})
        self.assertEqual(status, 200)
        changes = self.iam_changes()
        _, err = self.up("--allow-cidr", "127.0.0.1/32", expect=1)
        self.assertIn("IAM role %s exists but is not awsctl's for deployment %s"
                      % (PROXY_ROLE, NAME), err)
        self.assertEqual(self.iam_changes(), changes)
        out, _ = self.awsctl("down", "--name", NAME)
        self.assertIn("leaving IAM role %s: not awsctl's" % PROXY_ROLE, out)
        self.assertEqual([r["role_name"] for r in self.iam()["roles"]], [PROXY_ROLE])
        self.assertEqual(self.iam()["roles"][0]["policies"], {})

    def test_changed_host_key_is_refused(self):
        self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32")
        insts = self.instances()
        pushed = {i["instance_id"]: os.stat(self.remote_path(
            i["instance_id"], "proxy" if i["tags"]["Role"] == "proxy" else "backend")).st_mtime_ns
            for i in insts}
        self.sshd.rotate_host_key()
        _, err = self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32",
                         expect=1)
        for i in insts:
            self.assertRegex(err, re.escape(i["public_ip"]) + r": HOST KEY CHANGED")
            binary = "proxy" if i["tags"]["Role"] == "proxy" else "backend"
            self.assertEqual(os.stat(self.remote_path(i["instance_id"], binary)).st_mtime_ns,
                             pushed[i["instance_id"]], "pushed despite the changed key")
            self.assertFalse(os.path.exists(self.remote_path(i["instance_id"], binary + ".new")))
        self.awsctl("down", "--name", NAME)

    def test_interrupted_up_continues(self):
        # Instances stay pending for a while, so awsctl is still busy after
        # its first RunInstances; it is killed as soon as that is served.
        self.standin.configure(pending_describes=1000)
        p = subprocess.Popen([AWSCTL, "up", "--name", NAME, "--micro", "2", "--large", "2",
                              "--allow-cidr", "127.0.0.1/32"], cwd=self.dir, env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.standin.wait_for_request("RunInstances", timeout=30)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        launched = len(self.instances())
        self.assertGreater(launched, 0)
        self.standin.configure(pending_describes=1)
        self.up("--micro", "2", "--large", "2", "--allow-cidr", "127.0.0.1/32")
        insts = self.check_instances(2, 2)
        self.assertEqual(len(self.standin.instances(Deployment=NAME)), 5, "duplicates launched")
        self.check_pushed(insts)
        self.awsctl("down", "--name", NAME)
        self.assertEqual(self.instances(), [])

    def test_wait_timeout_then_up_again(self):
        self.standin.configure(pending_describes=100000)
        _, err = self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32",
                         "--wait-timeout", "2", expect=1)
        self.assertRegex(err, r"timed out after 2 s \(--wait-timeout\) waiting for i-\w+ "
                              r"\(pending\)")
        launched = {i["instance_id"] for i in self.instances()}
        self.assertEqual(len(launched), 2)
        self.assertEqual({i["id"] for i in self.state()["instances"]}, launched)
        self.standin.configure(pending_describes=1)
        self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32")
        self.assertEqual({i["instance_id"] for i in self.check_instances(1, 0)}, launched)
        self.awsctl("down", "--name", NAME)

    def test_down_without_state_file(self):
        """down finds the instances, the group and the key pair by their tags."""
        self.up("--micro", "1", "--large", "0", "--allow-cidr", "127.0.0.1/32")
        os.unlink(self.state_path)
        self.awsctl("down", "--name", NAME)
        self.assertEqual(self.instances(), [])
        self.assertIsNone(self.group())
        self.assertEqual(self.standin.state()["key_pairs"], [])
        self.assertEqual(self.iam(), {"roles": [], "instance_profiles": []})

    def test_dry_run_creates_nothing(self):
        out, _ = self.up("--dry-run")
        self.assertIn("would: create security group awsctl-%s" % NAME, out)
        self.assertIn("would: create ed25519 key pair awsctl-%s" % NAME, out)
        self.assertIn("would: launch 2 t2.micro (cluster1)", out)
        self.assertIn("would: launch 1 t2.large (proxy)", out)
        # IAM has no DryRun: only its reads are made.
        self.assertIn("would: create IAM role %s (assumed by ec2.amazonaws.com)" % PROXY_ROLE, out)
        self.assertIn("would: allow ec2:DescribeInstances and cloudwatch:PutMetricData to IAM "
                      "role %s" % PROXY_ROLE, out)
        self.assertIn("would: create instance profile %s" % PROXY_ROLE, out)
        self.assertIn("would: add IAM role %s to instance profile %s" % (PROXY_ROLE, PROXY_ROLE),
                      out)
        self.assertEqual(self.iam_changes(), [])
        self.assertEqual(self.iam(), {"roles": [], "instance_profiles": []})
        dry = [r for r in self.standin.requests(action="RunInstances")]
        self.assertEqual(len(dry), 7)
        self.assertTrue(all(r["params"].get("DryRun") == "true" and r["code"] == "DryRunOperation"
                            and "IamInstanceProfile.Name" not in r["params"] for r in dry))
        st = self.standin.state()
        self.assertEqual(st["instances"], [])
        self.assertEqual(st["key_pairs"], [])
        self.assertIsNone(self.group())
        self.assertEqual(sorted(os.listdir(self.dir)), ["remote"])

    # -- refused before anything happens -------------------------------------

    def test_bad_flags(self):
        for args, flag in ((["up", "--micro", "x"], "--micro"), (["up", "--bogus"], "--bogus"),
                           (["up", "--allow-cidr", "10.0.0.1"], "--allow-cidr"),
                           (["down", "--dry-run"], "--dry-run"), (["frobnicate"], "frobnicate")):
            _, err = self.awsctl(*args, expect=2)
            self.assertIn(flag, err)
        self.assertEqual(self.standin.requests(), [])

    def test_rsa_key_is_refused(self):
        key = os.path.join(self.dir, "id_rsa")
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", key],
                       check=True, timeout=30)
        _, err = self.up("--ssh-key", key, expect=1)
        self.assertIn("RSA", err)
        self.assertIn("use an ed25519 key", err)
        self.assertEqual(self.standin.requests(), [])

    # -- what is pushed runs on Amazon Linux 2023 ------------------------------

    def test_binaries_run_on_glibc_2_34(self):
        """Amazon Linux 2023 has glibc 2.34: the pushed binaries may need no
        newer symbol version. backend is linked statically (no dynamic
        symbols at all); proxy links glibc dynamically."""
        if lbtest.SANITIZE:
            self.skipTest("sanitizer builds are not what is pushed")
        for path in (lbtest.BACKEND_BIN, lbtest.PROXY_BIN):
            r = subprocess.run(["objdump", "-T", path], capture_output=True, text=True,
                               timeout=60)
            if path == lbtest.BACKEND_BIN:
                self.assertIn("not a dynamic object", r.stderr + r.stdout,
                              "backend is not linked statically")
                continue
            self.assertEqual(r.returncode, 0, r.stderr)
            versions = {tuple(int(n) for n in v.split("."))
                        for v in re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)", r.stdout)}
            self.assertTrue(versions, "no GLIBC_ versions in objdump -T %s" % path)
            self.assertLessEqual(max(versions), (2, 34), "%s needs GLIBC_%s" % (
                path, ".".join(map(str, max(versions)))))


if __name__ == "__main__":
    unittest.main()
