"""The proxy on AWS: EC2 discovery and CloudWatch publication, with real
`backend`s on the addresses the instances were given.

ProxyOnAWS runs against the local stand-in (tests/aws_standin.py, which
checks every request's SigV4 signature); ProxyOnMoto runs the same tests a
second time against moto (tests/moto_server.py, signatures checked too), an
implementation this project did not write, and is skipped, saying why, where
moto is not installed. ProxyOnAWSFaults needs what only the stand-in does:
replies moto cannot give (a 200 that is another XML document, a refused
second call, a slow reply) and outages by stopping it with its state kept.

CloudWatch is read back as a user reads it, with GetMetricStatistics."""

import datetime
import json
import os
import re
import signal
import sys
import time
import unittest
from unittest import mock

import moto_server
from aws_standin import AwsClient, StandIn, parse_xml
from lbtest import (SANITIZE, LBTestCase, Loadgen, admin_status, free_port, get, wait_admin,
                    wait_until)

NS = "CustomLB"
LB_NAME = "app/lb-test"
TG_METRICS = {"RequestCount", "TargetResponseTime", "HTTPCode_Target_2XX_Count",
              "HTTPCode_Target_3XX_Count", "HTTPCode_Target_4XX_Count",
              "HTTPCode_Target_5XX_Count", "HealthyHostCount", "UnHealthyHostCount"}
LB_METRICS = {"RequestCount", "HTTPCode_ELB_4XX_Count", "HTTPCode_ELB_5XX_Count",
              "ActiveConnectionCount", "NewConnectionCount", "ProcessedBytes"}
# the latency histogram's bounds (proxy/src/stats.c), in seconds
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


def tags(cluster):
    return {"Cluster": cluster, "Deployment": "lb-test"}


def backends_of(admin, cluster="cluster1"):
    """{address: healthy} of a cluster in /status."""
    for c in admin_status(admin)["clusters"]:
        if c["name"] == cluster:
            return {b["address"]: b["healthy"] for b in c["backends"]}
    return {}


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class StandInAWS:
    """The stand-in, as the tests use an AWS."""
    exact_dimensions = True

    def __init__(self):
        self.standin = StandIn().start()
        self.region, self.url = self.standin.region, self.standin.url
        self.access_key, self.secret_key = self.standin.access_key, self.standin.secret_key

    def env(self):
        return self.standin.env()

    def add_instance(self, ip, cluster):
        return self.standin.add_instance(tags=tags(cluster), ip=ip)["instance_id"]

    def terminate(self, instance_id):
        self.standin.terminate_instance(instance_id)

    def stop(self):
        self.standin.stop()


class MotoAWS:
    """moto, with a VPC whose subnet is 127.0.0.0/24, so that an instance's
    private address is a loopback one a backend can listen on."""
    # moto matches every datum whose dimensions include the asked ones;
    # CloudWatch only those with exactly the asked set
    exact_dimensions = False

    def __init__(self):
        self.moto = moto_server.MotoServer().start()
        self.region, self.url = self.moto.region, self.moto.url
        self.access_key, self.secret_key = self.moto.access_key, self.moto.secret_key
        self.ec2 = self.moto.client("ec2")
        vpc = self.ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc,
                                             CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
        self.image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def env(self):
        return self.moto.env()

    def add_instance(self, ip, cluster):
        spec = [{"ResourceType": "instance",
                 "Tags": [{"Key": k, "Value": v} for k, v in tags(cluster).items()]}]
        r = self.ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1,
                                   SubnetId=self.subnet, PrivateIpAddress=ip,
                                   TagSpecifications=spec)
        return r["Instances"][0]["InstanceId"]

    def terminate(self, instance_id):
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def stop(self):
        self.moto.stop()


class AWSCase(LBTestCase):
    """Backends as instances, proxies with discovery (and CloudWatch), and
    CloudWatch's statistics read back."""
    make_aws = StandInAWS

    def setUp(self):
        super().setUp()
        self.aws = self.make_aws()
        self.addCleanup(self.aws.stop)
        self.port = free_port()  # every instance's backend listens on its own address, this port
        self.t0 = time.time()

    def instance(self, ip, name, cluster="cluster1", args=()):
        """A backend on ip and the instance for it."""
        b = self.backend(name, cluster, host=ip, port=self.port, args=args)
        return b, self.aws.add_instance(ip, cluster)

    def start_proxy(self, clusters=("cluster1",), cloudwatch=None, health=None, drain_ms=None):
        """A proxy discovering each cluster every second; p.admin is its
        admin port. cloudwatch: settings over namespace, region, a 1 s
        interval and LB_NAME."""
        admin = free_port()
        hc = {"interval_ms": 400, "timeout_ms": 400, "healthy_threshold": 2,
              # generous: a sanitizer build on a busy machine answers a probe
              # slowly, and the backends must stay in
              "unhealthy_threshold": 4}
        hc.update(health or {})
        cfg = {"admin": "127.0.0.1:%d" % admin,
               "clusters": [{"name": c, "path_prefix": "/" + c,
                             "discovery": {"ec2": {"region": self.aws.region, "tags": tags(c),
                                                   "port": self.port, "interval_s": 1}},
                             "health_check": hc} for c in clusters]}
        if cloudwatch is not None:
            cfg["cloudwatch"] = dict({"namespace": NS, "region": self.aws.region,
                                      "interval_s": 1, "load_balancer": LB_NAME}, **cloudwatch)
        if drain_ms is not None:
            cfg["timeouts_ms"] = {"drain": drain_ms}
        with mock.patch.dict(os.environ, self.aws.env(), clear=True):
            p = self.proxy(config=cfg)
        p.admin = admin
        wait_admin(admin)  # the public port listens before the admin one does
        return p

    def wait_ready(self, p, backends, cluster="cluster1", timeout=15):
        want = {b.addr: True for b in backends}
        self.assertTrue(wait_until(lambda: backends_of(p.admin, cluster) == want, timeout),
                        "%r\n%s" % (backends_of(p.admin, cluster), p.log()[-3000:]))

    def stop_proxy(self, p):
        rc = p.stop()
        self.assertEqual(rc, 0, p.log()[-3000:])
        return p.log()

    def _query(self, name, dims, what):
        """The datapoints of one GetMetricStatistics call (what: its
        Statistics.member.N or ExtendedStatistics.member.N)."""
        params = dict(what, Namespace=NS, MetricName=name, StartTime=iso(self.t0 - 3600),
                      EndTime=iso(time.time() + 3600), Period="60")
        for i, (k, v) in enumerate(dims):
            params["Dimensions.member.%d.Name" % (i + 1)] = k
            params["Dimensions.member.%d.Value" % (i + 1)] = v
        client = AwsClient(self.aws.url, self.aws.access_key, self.aws.secret_key,
                           self.aws.region)
        status, text = client.query("GetMetricStatistics", params, service="monitoring")
        self.assertEqual(status, 200, text)
        return list(parse_xml(text).iter("member"))

    def _statistics(self, name, dims, extended=()):
        out = {"Sum": 0.0, "SampleCount": 0.0, "Maximum": None}
        for pt in self._query(name, dims, {"Statistics.member.1": "Sum",
                                           "Statistics.member.2": "SampleCount",
                                           "Statistics.member.3": "Maximum"}):
            out["Sum"] += float(pt.find("Sum").text)
            out["SampleCount"] += float(pt.find("SampleCount").text)
            mx = float(pt.find("Maximum").text)
            out["Maximum"] = mx if out["Maximum"] is None else max(out["Maximum"], mx)
        if extended:  # CloudWatch answers these in a call of their own
            what = {"ExtendedStatistics.member.%d" % (i + 1): e for i, e in enumerate(extended)}
            for pt in self._query(name, dims, what):
                for entry in pt.iter("entry"):
                    key, value = entry.find("key").text, float(entry.find("value").text)
                    out[key] = max(out.get(key, value), value)
        return out

    def stats(self, name, cluster=None, extended=(), clusters=("cluster1",)):
        """CloudWatch's statistics (Sum, SampleCount over the whole test) of
        name under the load balancer alone, or its target group for cluster."""
        dims = [("LoadBalancer", LB_NAME)]
        if cluster:
            return self._statistics(name, dims + [("TargetGroup", "targetgroup/" + cluster)],
                                    extended)
        got = self._statistics(name, dims, extended)
        if not self.aws.exact_dimensions:
            for c in clusters:
                sub = self._statistics(name, dims + [("TargetGroup", "targetgroup/" + c)])
                got["Sum"] -= sub["Sum"]
                got["SampleCount"] -= sub["SampleCount"]
        return got


class ProxyOnAWS(AWSCase):
    """What works against any AWS: the stand-in here, moto below."""

    def test_discovery_follows_instances_without_failed_requests(self):
        b1, i1 = self.instance("127.0.0.11", "d1")
        b2, _ = self.instance("127.0.0.12", "d2")
        self.aws.add_instance("127.0.0.20", "cluster2")
        p = self.start_proxy()
        self.wait_ready(p, [b1, b2])

        lg = Loadgen("http://127.0.0.1:%d/cluster1/x" % p.port,
                     ["--concurrency", "8", "--duration", "8", "--threads", "1"])
        self._procs.append(lg)
        time.sleep(1)

        b3, _ = self.instance("127.0.0.13", "d3")
        self.assertTrue(wait_until(lambda: len(b3.requests_logged()) > 20, 8),
                        "the discovered instance got no traffic:\n" + p.log()[-3000:])
        self.aws.terminate(i1)
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
        self.assertEqual(set(backends_of(p.admin)), {b2.addr, b3.addr})
        self.assertIn("discovery cluster1: backend %s joins" % b3.addr, p.log())
        self.assertNotIn("DescribeInstances failed", p.log())

    def test_cloudwatch_has_the_alb_dimension_layout(self):
        """Defect 5: TargetGroup=<cluster>, "none" and "all" were not the
        ALB's layout. Now a cluster's metrics are under LoadBalancer +
        TargetGroup=targetgroup/<cluster>, the proxy's under LoadBalancer
        alone, unrouted requests counted there."""
        b1, _ = self.instance("127.0.0.11", "c1")
        b2, _ = self.instance("127.0.0.12", "c2")
        p = self.start_proxy(cloudwatch={})
        self.wait_ready(p, [b1, b2])
        n_ok, n_404, n_5xx = 25, 5, 3
        for _ in range(n_ok):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200, p.log()[-3000:])
        for _ in range(n_5xx):
            self.assertEqual(get(p.port, "/cluster1/status/503")[0], 503)
        for _ in range(n_404):
            self.assertEqual(get(p.port, "/elsewhere")[0], 404)
        self.assertTrue(wait_until(lambda: self.stats("RequestCount", "cluster1")["Sum"]
                                   >= n_ok + n_5xx, 8), p.log()[-3000:])
        time.sleep(1.5)  # one more interval: nothing is counted twice
        tg = lambda name: self.stats(name, "cluster1")["Sum"]  # noqa: E731
        lb = lambda name: self.stats(name)["Sum"]  # noqa: E731
        self.assertEqual(tg("RequestCount"), n_ok + n_5xx)
        self.assertEqual(tg("HTTPCode_Target_2XX_Count"), n_ok)
        self.assertEqual(tg("HTTPCode_Target_5XX_Count"), n_5xx)
        self.assertEqual(tg("HTTPCode_Target_4XX_Count"), 0)
        self.assertEqual(lb("RequestCount"), n_ok + n_5xx + n_404)
        self.assertEqual(lb("HTTPCode_ELB_4XX_Count"), n_404)
        self.assertEqual(lb("HTTPCode_ELB_5XX_Count"), 0)
        self.assertGreaterEqual(lb("NewConnectionCount"), n_ok + n_5xx + n_404)
        self.assertGreater(lb("ProcessedBytes"), (n_ok + n_404) * 100)
        self.assertEqual(self.stats("HealthyHostCount", "cluster1")["Maximum"], 2)
        self.assertEqual(self.stats("TargetResponseTime", "cluster1")["SampleCount"],
                         n_ok + n_5xx)

    def test_target_response_time_is_a_distribution(self):
        """Defect 4: one mean per interval made SampleCount, Maximum and
        percentiles meaningless. Now SampleCount is the number of backend
        responses and the values are the histogram's buckets."""
        # 30 ms: the (25 ms, 50 ms] bucket, sent as 0.05
        b1, _ = self.instance("127.0.0.11", "t1", args=["--delay-ms", "30"])
        p = self.start_proxy(cloudwatch={"interval_s": 2})
        self.wait_ready(p, [b1])
        n = 12
        for _ in range(n):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        self.stop_proxy(p)
        st = self.stats("TargetResponseTime", "cluster1")
        self.assertEqual(st["SampleCount"], n)
        self.assertGreaterEqual(st["Sum"], n * 0.03)
        self.assertLess(st["Sum"], n * 0.5)

    def test_last_publication_at_sigterm(self):
        """Defect 3: 10 requests, then SIGTERM: CloudWatch received 0 (the
        interval is a minute). Now the counts since the last publication are
        sent before the proxy exits."""
        b1, _ = self.instance("127.0.0.11", "s1")
        p = self.start_proxy(cloudwatch={"interval_s": 60})
        self.wait_ready(p, [b1])
        for _ in range(10):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        log = self.stop_proxy(p)
        self.assertIn("cloudwatch: last publication delivered", log)
        self.assertEqual(self.stats("RequestCount", "cluster1")["Sum"], 10)
        self.assertEqual(self.stats("RequestCount")["Sum"], 10)
        self.assertEqual(self.stats("TargetResponseTime", "cluster1")["SampleCount"], 10)

    def test_fleet_of_two_proxies_adds_up_as_one_load_balancer(self):
        """Two proxies with one load_balancer name: CloudWatch's Sum of
        RequestCount is the requests sent through both, TargetResponseTime's
        SampleCount the backend responses of both."""
        b1, _ = self.instance("127.0.0.11", "f1")
        b2, _ = self.instance("127.0.0.12", "f2")
        proxies = [self.start_proxy(cloudwatch={}) for _ in range(2)]
        for p in proxies:
            self.wait_ready(p, [b1, b2])
        sent = {"routed": 0, "unrouted": 0}
        for p, routed, unrouted in zip(proxies, (23, 17), (2, 3)):
            for _ in range(routed):
                self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
            for _ in range(unrouted):
                self.assertEqual(get(p.port, "/nowhere")[0], 404)
            sent["routed"] += routed
            sent["unrouted"] += unrouted
        for p in proxies:
            self.stop_proxy(p)
        figures = {
            "sent through both (routed + unrouted)": "%(routed)d + %(unrouted)d" % sent,
            "Sum RequestCount, LoadBalancer+TargetGroup": self.stats("RequestCount",
                                                                     "cluster1")["Sum"],
            "Sum RequestCount, LoadBalancer": self.stats("RequestCount")["Sum"],
            "SampleCount TargetResponseTime": self.stats("TargetResponseTime",
                                                         "cluster1")["SampleCount"],
            "Sum HTTPCode_Target_2XX_Count": self.stats("HTTPCode_Target_2XX_Count",
                                                        "cluster1")["Sum"],
            "Sum HTTPCode_ELB_4XX_Count": self.stats("HTTPCode_ELB_4XX_Count")["Sum"],
        }
        sys.stderr.write("\nfleet sum (%s): %s\n" % (type(self).__name__,
                                                     json.dumps(figures, indent=1)))
        self.assertEqual(figures["Sum RequestCount, LoadBalancer+TargetGroup"], sent["routed"])
        self.assertEqual(figures["Sum RequestCount, LoadBalancer"],
                         sent["routed"] + sent["unrouted"])
        self.assertEqual(figures["SampleCount TargetResponseTime"], sent["routed"])
        self.assertEqual(figures["Sum HTTPCode_Target_2XX_Count"], sent["routed"])
        self.assertEqual(figures["Sum HTTPCode_ELB_4XX_Count"], sent["unrouted"])


class ProxyOnMoto(ProxyOnAWS):
    """The same, against moto."""
    make_aws = MotoAWS

    @classmethod
    def setUpClass(cls):
        if SANITIZE:  # the same C paths run under the sanitizers against the stand-in
            raise unittest.SkipTest("moto runs in the Release build only")
        ok, why = moto_server.available()
        if not ok:
            raise unittest.SkipTest(why)


class ProxyOnAWSFaults(AWSCase):
    """What only the stand-in can do: replies moto cannot give, outages with
    the state kept."""

    def datums(self, name=None):
        return self.aws.standin.metric_data(NS, name)

    def test_a_200_that_is_not_ec2s_reply_keeps_the_cluster(self):
        """Defect 1: a captive portal's page (well-formed XML, status 200)
        read as "no instances" and emptied the cluster: 14 of 14 requests
        answered 503. Now it is a failed call: the last backends stay."""
        b1, _ = self.instance("127.0.0.11", "x1")
        p = self.start_proxy()
        self.wait_ready(p, [b1])
        pages = ['<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
                 '<title>Sign in</title></head><body><p>Please sign in</p></body></html>',
                 '<?xml version="1.0"?><DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/'
                 'doc/2016-11-15/"><requestId>1</requestId><vpcSet/></DescribeVpcsResponse>']
        for page in pages:
            seen = len(self.aws.standin.requests(action="DescribeInstances"))
            self.aws.standin.inject(kind="reply", action="DescribeInstances", count=None,
                                    body=page)
            self.assertTrue(wait_until(lambda: len(self.aws.standin.requests(
                action="DescribeInstances")) >= seen + 3, 10))
            codes = [get(p.port, "/cluster1/x")[0] for _ in range(14)]
            self.assertEqual(codes, [200] * 14, p.log()[-3000:])
            self.assertEqual(backends_of(p.admin), {b1.addr: True})
            self.aws.standin.clear_injections()
            self.assertTrue(wait_until(lambda: p.log().count("DescribeInstances works again")
                                       == pages.index(page) + 1, 8), p.log()[-3000:])
        log = p.log()
        self.assertNotIn("leaves cluster", log)
        self.assertIn("the reply is not a DescribeInstancesResponse but a <html> document", log)
        self.assertIn("but a <DescribeVpcsResponse> document", log)

    def test_failed_describe_keeps_the_last_known_set(self):
        b1, _ = self.instance("127.0.0.11", "k1")
        p = self.start_proxy()
        self.wait_ready(p, [b1])
        # one throttled reply is retried inside the call: nothing to see
        self.aws.standin.inject(kind="throttle", action="DescribeInstances", count=1)
        # then every reply fails for a while: the set is kept and traffic flows
        self.aws.standin.inject(kind="internal", action="DescribeInstances", count=None)
        self.assertTrue(wait_until(lambda: "keeping the last known backends" in p.log(), 8),
                        p.log()[-3000:])
        self.assertEqual(backends_of(p.admin), {b1.addr: True})
        self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        self.aws.standin.clear_injections()
        self.assertTrue(wait_until(lambda: "DescribeInstances works again" in p.log(), 8),
                        p.log()[-3000:])

    def test_failing_calls_log_a_line_when_they_start_and_stop(self):
        """Defect 6: each failing interval logged two lines per cluster and two
        for CloudWatch (a call's failure and its retry). Now: one line when
        it starts failing, at most one a minute, one when it works again."""
        b1, _ = self.instance("127.0.0.11", "l1")
        b2, _ = self.instance("127.0.0.12", "l2", cluster="cluster2")
        p = self.start_proxy(clusters=("cluster1", "cluster2"), cloudwatch={})
        self.wait_ready(p, [b1])
        self.wait_ready(p, [b2], "cluster2")
        self.aws.standin.inject(kind="internal", action="DescribeInstances", count=None)
        self.aws.standin.inject(kind="internal", action="PutMetricData", count=None)
        time.sleep(4.5)  # four intervals and more, each call tried twice
        self.aws.standin.clear_injections()
        self.assertTrue(wait_until(lambda: p.log().count("works again") == 3, 8),
                        p.log()[-3000:])
        log = p.log()
        for c in ("cluster1", "cluster2"):
            self.assertEqual(len(re.findall(r"discovery %s: DescribeInstances failed" % c, log)),
                             1, log[-3000:])
            self.assertEqual(log.count("discovery %s: DescribeInstances works again" % c), 1)
        self.assertEqual(log.count("cloudwatch: PutMetricData failed"), 1, log[-3000:])
        self.assertEqual(log.count("cloudwatch: PutMetricData works again"), 1)
        self.assertNotIn("still failing", log)
        self.assertNotIn("retrying in", log)

    def test_a_refused_later_call_is_retried_alone(self):
        """Defect 2: with more than 20 datums a publication takes several
        calls, and when a later one failed the next interval sent again what
        the earlier ones had delivered (RequestCount 40 for 20 requests). Now
        only the refused call's datums are sent again, with their timestamp."""
        b1, _ = self.instance("127.0.0.11", "r1")
        b2, _ = self.instance("127.0.0.12", "r2", cluster="cluster2")
        # two target groups (8 datums each) and the load balancer's 6: two calls
        p = self.start_proxy(clusters=("cluster1", "cluster2"), cloudwatch={"interval_s": 2})
        self.wait_ready(p, [b1])
        self.wait_ready(p, [b2], "cluster2")
        seen = len(self.aws.standin.requests(action="PutMetricData"))
        # the next publication's second call fails, both attempts of it
        self.aws.standin.inject(kind="internal", action="PutMetricData", skip=1, count=2)
        for _ in range(20):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        self.assertTrue(wait_until(lambda: len([
            r for r in self.aws.standin.requests(action="PutMetricData")[seen:]
            if r["ok"]]) >= 4, 15), p.log()[-3000:])
        self.stop_proxy(p)
        calls = self.aws.standin.requests(action="PutMetricData")[seen:]
        refused = [r for r in calls if r["injected"]]
        self.assertEqual(len(refused), 2)
        retried = [r for r in calls if r["ok"] and r["params"] == refused[0]["params"]]
        self.assertEqual(len(retried), 1, "the refused call is sent again as it was")
        keys = [(d["metric_name"], tuple(sorted(d["dimensions"].items())), d["timestamp"])
                for d in self.datums()]
        self.assertEqual(len(keys), len(set(keys)), "a datum was delivered twice")
        self.assertEqual(self.stats("RequestCount", "cluster1")["Sum"], 20)
        self.assertEqual(self.stats("RequestCount")["Sum"], 20)
        self.assertEqual(self.stats("TargetResponseTime", "cluster1")["SampleCount"], 20)

    def test_undeliverable_datums_are_dropped_after_three_retries(self):
        b1, _ = self.instance("127.0.0.11", "u1")
        p = self.start_proxy(cloudwatch={})
        self.wait_ready(p, [b1])
        self.aws.standin.inject(kind="error", code="AccessDenied", status=403,
                                action="PutMetricData", count=None)
        seen = len(self.aws.standin.requests(action="PutMetricData"))
        self.assertTrue(wait_until(lambda: len(self.aws.standin.requests(
            action="PutMetricData")) >= seen + 12, 15))
        self.aws.standin.clear_injections()
        self.assertTrue(wait_until(lambda: "PutMetricData works again" in p.log(), 8))
        self.assertRegex(p.log(), r"works again \(\d+ publications failed\); \d+ datums "
                                  r"dropped after 3 retries")
        stamps = {}
        for r in self.aws.standin.requests(action="PutMetricData")[seen:]:
            stamp = r["params"].get("MetricData.member.1.Timestamp")
            stamps[stamp] = stamps.get(stamp, 0) + 1
        self.assertLessEqual(max(stamps.values()), 4, "a call tried more than 1 + 3 times")
        self.assertIn(4, stamps.values())

    def test_an_outage_keeps_the_backends_and_delivers_its_counts_after(self):
        """The stand-in stopped (connection refused) for a while: discovery
        keeps the last backends, traffic flows, and CloudWatch receives the
        outage's counts once it is back, once each."""
        b1, _ = self.instance("127.0.0.11", "o1")
        p = self.start_proxy(cloudwatch={"interval_s": 2})
        self.wait_ready(p, [b1])
        self.aws.standin.stop()
        codes = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            codes.append(get(p.port, "/cluster1/x")[0])
            time.sleep(0.05)
        self.assertTrue(wait_until(lambda: "keeping the last known backends" in p.log(), 5))
        self.aws.standin.start()
        self.assertEqual(set(codes), {200})
        self.assertTrue(wait_until(lambda: "PutMetricData works again" in p.log(), 10),
                        p.log()[-3000:])
        self.stop_proxy(p)
        self.assertNotIn("dropped", p.log())
        self.assertEqual(self.stats("RequestCount", "cluster1")["Sum"], len(codes))
        self.assertEqual(self.stats("TargetResponseTime", "cluster1")["SampleCount"], len(codes))

    def test_the_distribution_as_sent(self):
        """TargetResponseTime as PutMetricData carries it: Values (bucket
        bounds) and Counts, at most 150 pairs, and a statistic set."""
        b1, _ = self.instance("127.0.0.11", "v1", args=["--delay-ms", "30"])
        p = self.start_proxy(cloudwatch={"interval_s": 60})
        self.wait_ready(p, [b1])
        for _ in range(12):
            self.assertEqual(get(p.port, "/cluster1/x")[0], 200)
        self.stop_proxy(p)
        [d] = self.datums("TargetResponseTime")
        self.assertEqual(d["dimensions"], {"LoadBalancer": LB_NAME,
                                           "TargetGroup": "targetgroup/cluster1"})
        self.assertEqual(d["unit"], "Seconds")
        self.assertIsNone(d["value"])
        self.assertLessEqual(len(d["values"]), 150)
        self.assertEqual(sum(d["counts"]), 12)
        self.assertTrue(set(d["values"]) <= set(BUCKETS), d["values"])
        self.assertIn(0.05, d["values"])  # 30 ms and a little more
        sv = d["statistic_values"]
        self.assertEqual(sv["SampleCount"], 12)
        self.assertLessEqual(sv["Minimum"], sv["Sum"] / 12)
        self.assertLessEqual(sv["Sum"] / 12, sv["Maximum"])
        self.assertGreaterEqual(sv["Sum"], 12 * 0.03)
        p99 = self.stats("TargetResponseTime", "cluster1", extended=["p99"])["p99"]
        self.assertIn(p99, BUCKETS)
        self.assertGreaterEqual(p99, 0.05)
        # the layout: every datum names the load balancer; the target groups' and
        # the load balancer's metrics, nothing else
        by_dims = {}
        for x in self.datums():
            by_dims.setdefault(tuple(sorted(x["dimensions"].items())), set()).add(
                x["metric_name"])
        self.assertEqual(by_dims, {
            (("LoadBalancer", LB_NAME),): LB_METRICS,
            (("LoadBalancer", LB_NAME), ("TargetGroup", "targetgroup/cluster1")): TG_METRICS})

    def test_last_publication_never_outlasts_the_drain(self):
        """CloudWatch answers nothing for 20 s while a publication is in
        flight: SIGTERM still exits within the drain time."""
        b1, _ = self.instance("127.0.0.11", "w1")
        p = self.start_proxy(cloudwatch={}, drain_ms=1500)
        self.wait_ready(p, [b1])
        get(p.port, "/cluster1/x")
        self.aws.standin.inject(kind="delay", delay_s=20, action="PutMetricData", count=None)
        time.sleep(1.5)  # a publication (every second) in flight
        t = time.monotonic()
        p.signal(signal.SIGTERM)
        rc = p.wait(30)
        took = time.monotonic() - t
        self.assertEqual(rc, 0, p.log()[-3000:])
        self.assertLess(took, 1.5 + (2.5 if SANITIZE else 1.0), p.log()[-3000:])
        self.assertRegex(p.log(), r"cloudwatch: (last publication: \d+ datums not delivered|"
                                  r"no time left in the drain)")

    def test_replacing_the_only_instance_costs_one_probe_not_healthy_threshold(self):
        """Defect 7 (needs the balancer/probe side: a backend added to a
        cluster with no healthy backend is checked at once and serves on its
        first passing check): replacing a cluster's only instance cost
        healthy_threshold health intervals of 503s (4 s here). The same
        refresh removes the old instance and adds the new one."""
        b1, i1 = self.instance("127.0.0.11", "only1")
        b2 = self.backend("only2", "cluster1", host="127.0.0.12", port=self.port)
        p = self.start_proxy(health={"interval_ms": 1000, "timeout_ms": 500,
                                     "healthy_threshold": 5, "unhealthy_threshold": 2})
        self.wait_ready(p, [b1], timeout=20)
        with self.aws.standin.lock:  # between two DescribeInstances
            self.aws.terminate(i1)
            self.aws.add_instance("127.0.0.12", "cluster1")
        joined = "discovery cluster1: backend %s joins" % b2.addr
        self.assertTrue(wait_until(lambda: joined in p.log(), 5), p.log()[-3000:])
        t = time.monotonic()
        served = None
        while time.monotonic() - t < 10:
            status, _, body = get(p.port, "/cluster1/x")
            if status == 200 and b'"only2"' in body:
                served = time.monotonic() - t
                break
            time.sleep(0.05)
        self.assertIsNotNone(served, p.log()[-3000:])
        self.assertLess(served, 2.5 if SANITIZE else 1.5,
                        "the new instance served %.1f s after it joined" % served)


if __name__ == "__main__":
    unittest.main()
