"""The proxy on AWS, against the local stand-in (tests/aws_standin.py, which
checks every request's SigV4 signature): EC2 discovery adds an instance and
drops a terminated one with no failed request, a failing DescribeInstances
keeps the last known set, and CloudWatch receives the ALB metric names with
the values the proxy counted."""

import os
import time
import unittest
from unittest import mock

from aws_standin import StandIn
from lbtest import LBTestCase, Loadgen, admin_status, free_port, get, wait_until

TAGS = {"Cluster": "cluster1", "Deployment": "lb-test"}


def backends_of(admin):
    """{address: healthy} of cluster1 in /status."""
    return {b["address"]: b["healthy"] for b in admin_status(admin)["clusters"][0]["backends"]}


class ProxyOnAWS(LBTestCase):
    def setUp(self):
        super().setUp()
        self.aws = StandIn().start()
        self.addCleanup(self.aws.stop)
        self.port = free_port()  # every instance's backend listens on its own address, this port
        self.admin = free_port()

    def instance(self, ip, name):
        """A backend on ip and the stand-in's instance for it."""
        b = self.backend(name, "cluster1", host=ip, port=self.port)
        inst = self.aws.add_instance(tags=TAGS, ip=ip)
        return b, inst["instance_id"]

    def start_proxy(self, cloudwatch=False):
        cfg = {"admin": "127.0.0.1:%d" % self.admin,
               "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                             "discovery": {"ec2": {"region": self.aws.region, "tags": TAGS,
                                                   "port": self.port, "interval_s": 1}},
                             # generous: a sanitizer build on a busy machine answers
                             # a probe slowly, and both backends must stay in
                             "health_check": {"interval_ms": 400, "timeout_ms": 400,
                                              "healthy_threshold": 2,
                                              "unhealthy_threshold": 4}}]}
        if cloudwatch:
            cfg["cloudwatch"] = {"namespace": "CustomLB", "region": self.aws.region,
                                 "interval_s": 1}
        with mock.patch.dict(os.environ, self.aws.env(), clear=True):
            return self.proxy(config=cfg)

    def test_discovery_follows_instances_without_failed_requests(self):
        b1, i1 = self.instance("127.0.0.11", "d1")
        b2, i2 = self.instance("127.0.0.12", "d2")
        other = self.aws.add_instance(tags={"Cluster": "cluster2", "Deployment": "lb-test"},
                                      ip="127.0.0.20")
        self.assertTrue(other)
        p = self.start_proxy()
        want = {b1.addr: True, b2.addr: True}
        self.assertTrue(wait_until(lambda: backends_of(self.admin) == want, 10),
                        "%r\n%s" % (backends_of(self.admin), p.log()[-3000:]))

        lg = Loadgen("http://127.0.0.1:%d/cluster1/x" % p.port,
                     ["--concurrency", "8", "--duration", "8", "--threads", "1"])
        self._procs.append(lg)
        time.sleep(1)

        b3, i3 = self.instance("127.0.0.13", "d3")
        self.assertTrue(wait_until(lambda: len(b3.requests_logged()) > 20, 8),
                        "the discovered instance got no traffic:\n" + p.log()[-3000:])
        self.aws.terminate_instance(i1)
        self.assertTrue(wait_until(lambda: "backend %s leaves cluster cluster1" % b1.addr
                                   in p.log(), 5), p.log()[-3000:])
        time.sleep(0.5)
        b1_after = len(b1.requests_logged())

        self.assertEqual(lg.wait(30), 0, lg.log())
        row = lg.summary()
        self.assertGreater(int(row["requests"]), 500)
        self.assertEqual(int(row["errors"]), 0, "requests failed while membership changed")
        self.assertEqual(len(b1.requests_logged()), b1_after,
                         "the terminated instance still got new requests")
        self.assertEqual(set(backends_of(self.admin)), {b2.addr, b3.addr})
        self.assertIn("discovery cluster1: backend %s joins" % b3.addr, p.log())
        self.assertTrue(self.aws.requests(action="DescribeInstances"))

    def test_failed_describe_keeps_the_last_known_set(self):
        b1, _ = self.instance("127.0.0.11", "k1")
        p = self.start_proxy()
        self.assertTrue(wait_until(lambda: backends_of(self.admin) == {b1.addr: True}, 10))
        # one throttled reply is retried inside the call: nothing to see
        self.aws.inject(kind="throttle", action="DescribeInstances", count=1)
        # then every reply fails for a while: the set is kept and traffic flows
        self.aws.inject(kind="internal", action="DescribeInstances", count=None)
        self.assertTrue(wait_until(lambda: "keeping the last known backends" in p.log(), 8),
                        p.log()[-3000:])
        self.assertEqual(backends_of(self.admin), {b1.addr: True})
        self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        self.aws.clear_injections()
        self.assertTrue(wait_until(lambda: "DescribeInstances works again" in p.log(), 8),
                        p.log()[-3000:])

    def test_cloudwatch_receives_alb_metrics(self):
        b1, _ = self.instance("127.0.0.11", "c1")
        b2, _ = self.instance("127.0.0.12", "c2")
        p = self.start_proxy(cloudwatch=True)
        self.assertTrue(wait_until(lambda: backends_of(self.admin) == {b1.addr: True,
                                                                       b2.addr: True}, 10))
        n_ok, n_404 = 25, 5
        for _ in range(n_ok):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200, p.log()[-3000:])
        for _ in range(n_404):
            self.assertEqual(get(p.port, "/elsewhere")[0], 404)

        def total(name, group):
            return sum(d["value"] for d in self.aws.metric_data("CustomLB", name)
                       if d["dimensions"].get("TargetGroup") == group)

        self.assertTrue(wait_until(lambda: total("RequestCount", "cluster1") >= n_ok, 6),
                        p.log()[-3000:])
        time.sleep(1.5)  # one more interval: nothing is counted twice
        self.assertEqual(total("RequestCount", "cluster1"), n_ok)
        self.assertEqual(total("HTTPCode_Target_2XX_Count", "cluster1"), n_ok)
        self.assertEqual(total("HTTPCode_ELB_4XX_Count", "none"), n_404)
        self.assertEqual(total("HTTPCode_Target_4XX_Count", "none"), 0)
        names = {d["metric_name"] for d in self.aws.metric_data("CustomLB")}
        for name in ("RequestCount", "TargetResponseTime", "HTTPCode_Target_2XX_Count",
                     "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_4XX_Count",
                     "HTTPCode_ELB_5XX_Count", "HealthyHostCount", "UnHealthyHostCount",
                     "ActiveConnectionCount", "NewConnectionCount", "ProcessedBytes"):
            self.assertIn(name, names)
        healthy = [d["value"] for d in self.aws.metric_data("CustomLB", "HealthyHostCount")
                   if d["dimensions"].get("TargetGroup") == "cluster1"]
        self.assertEqual(healthy[-1], 2)
        latencies = [d["value"] for d in self.aws.metric_data("CustomLB", "TargetResponseTime")]
        self.assertTrue(all(0 < v < 1 for v in latencies), latencies)
        self.assertGreaterEqual(total("NewConnectionCount", "all"), n_ok + n_404)
        self.assertGreater(total("ProcessedBytes", "all"), (n_ok + n_404) * 100)
        # a CloudWatch outage: logged, and the next success carries the missed data
        self.aws.inject(kind="internal", action="PutMetricData", count=4)
        self.assertTrue(wait_until(lambda: "PutMetricData failed" in p.log(), 6))
        for _ in range(3):
            get(p.port, "/cluster1/x")
        self.assertTrue(wait_until(lambda: total("RequestCount", "cluster1") == n_ok + 3, 8),
                        p.log()[-3000:])


if __name__ == "__main__":
    unittest.main()
