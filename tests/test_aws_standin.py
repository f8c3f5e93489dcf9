"""Tests of the test fixtures for awsctl and the proxy's AWS features: the
EC2/SSM/CloudWatch/IAM stand-in (aws_standin.py), checked against signatures
made by curl's --aws-sigv4 (the same code as libcurl's CURLOPT_AWS_SIGV4
that the project's clients use), and the real-sshd fixture
(sshd_fixture.py), checked with the OpenSSH client. Everything runs on
127.0.0.0/8."""

import base64
import calendar
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

from aws_standin import (AL2023_PARAM, DEFAULT_AMI, DEFAULT_SG_ID, AwsClient, ControlClient,
                         StandIn, parse_xml, sign_headers)
from sshd_fixture import SSHD, process_ended

HERE = os.path.dirname(os.path.abspath(__file__))
CURL = shutil.which("curl")
INSTANCE_ADDRS = ["127.0.0.%d" % n for n in range(11, 20)]


def curl(url, service, data, headers=(), user=None, region="us-east-1", get=False, sign=True,
         path="/"):
    """(status, body) of a request made by curl, signed with --aws-sigv4."""
    if CURL is None:
        raise unittest.SkipTest("curl not installed")
    argv = [CURL, "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
    if sign:
        argv += ["--aws-sigv4", "aws:amz:%s:%s" % (region, service), "--user", user]
    for h in headers:
        argv += ["-H", h]
    argv += (["-G"] if get else []) + ["--data-binary", data, url + path]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def error_code(body):
    """The error code of an EC2 or CloudWatch XML error, or an SSM JSON one."""
    if body.lstrip().startswith("{"):
        return json.loads(body)["__type"]
    return parse_xml(body).find(".//Error/Code").text


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class StandInCase(unittest.TestCase):
    """A fresh stand-in per test, an AwsClient for it and curl helpers."""

    standin_args = {}

    def setUp(self):
        self.standin = StandIn(**self.standin_args).start()
        self.addCleanup(self.standin.stop)
        self.url = self.standin.url
        self.user = "%s:%s" % (self.standin.access_key, self.standin.secret_key)
        self.client = AwsClient(self.url, self.standin.access_key, self.standin.secret_key,
                                session_token=self.standin.session_token)

    def curl(self, service, data, **kw):
        kw.setdefault("user", self.user)
        return curl(self.url, service, data, **kw)

    def ec2(self, action, params=None):
        """The reply root of an EC2 call that must succeed."""
        status, root = self.client.ec2(action, params)
        self.assertEqual(status, 200, xml_text(root))
        return root

    def ec2_error(self, action, params=None):
        """(status, code) of an EC2 call that must fail."""
        status, root = self.client.ec2(action, params)
        self.assertNotEqual(status, 200, xml_text(root))
        self.assertEqual(root.tag, "Response")
        self.assertIsNotNone(root.find("RequestID"))
        return status, root.find("Errors/Error/Code").text

    def run_instances(self, count=1, tags=None, token=None, **extra):
        params = {"ImageId": DEFAULT_AMI, "InstanceType": "t2.micro", "MinCount": str(count),
                  "MaxCount": str(count)}
        if token:
            params["ClientToken"] = token
        for n, (k, v) in enumerate((tags or {}).items(), 1):
            params["TagSpecification.1.ResourceType"] = "instance"
            params["TagSpecification.1.Tag.%d.Key" % n] = k
            params["TagSpecification.1.Tag.%d.Value" % n] = v
        params.update(extra)
        root = self.ec2("RunInstances", params)
        return [i.find("instanceId").text for i in root.findall("instancesSet/item")]

    def describe(self, filters=None, ids=()):
        """{instance id: (state, public ip, private ip)} of DescribeInstances."""
        params = {}
        for n, (name, values) in enumerate((filters or {}).items(), 1):
            params["Filter.%d.Name" % n] = name
            for m, v in enumerate(values, 1):
                params["Filter.%d.Value.%d" % (n, m)] = v
        for n, i in enumerate(ids, 1):
            params["InstanceId.%d" % n] = i
        root = self.ec2("DescribeInstances", params)
        return {i.findtext("instanceId"): (i.findtext("instanceState/name"),
                                           i.findtext("ipAddress"), i.findtext("privateIpAddress"))
                for i in root.findall("reservationSet/item/instancesSet/item")}

    def last_request(self):
        return self.standin.requests()[-1]


def xml_text(root):
    return ET.tostring(root, encoding="unicode")[:2000]


DESCRIBE_VPCS = "Action=DescribeVpcs&Version=2016-11-15"


class SignatureTests(StandInCase):
    """SigV4 as AWS checks it, against requests signed by curl."""

    def assert_rejected(self, status, body, code="AuthFailure"):
        self.assertEqual(status, 403, body)
        self.assertEqual(error_code(body), code, body)
        entry = self.last_request()
        self.assertTrue(entry["rejected"])
        self.assertFalse(entry["ok"])

    def test_curl_signed_ec2_request_is_accepted(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS)
        self.assertEqual(status, 200, body)
        root = parse_xml(body)
        self.assertEqual(root.tag, "DescribeVpcsResponse")
        self.assertEqual(root.findtext("vpcSet/item/isDefault"), "true")
        self.assertIn('xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"', body)
        entry = self.last_request()
        self.assertEqual((entry["service"], entry["action"], entry["ok"], entry["rejected"]),
                         ("ec2", "DescribeVpcs", True, False))
        self.assertEqual(entry["access_key"], self.standin.access_key)

    def test_wrong_secret_is_rejected(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS, user=self.standin.access_key + ":wrong")
        self.assert_rejected(status, body)
        self.assertIn("signature we calculated does not match", body)
        self.assertEqual(self.last_request()["action"], "DescribeVpcs")

    def test_unknown_access_key_is_rejected(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS, user="AKIDNOBODY:" + self.standin.secret_key)
        self.assert_rejected(status, body)

    def test_wrong_region_is_rejected(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS, region="eu-west-1")
        self.assert_rejected(status, body)
        self.assertIn("region", body)

    def test_wrong_service_is_rejected(self):
        status, body = self.curl("ssm", DESCRIBE_VPCS)
        self.assert_rejected(status, body)
        self.assertIn("correct service: 'ec2'", body)
        status, body = self.curl("monitoring", DESCRIBE_VPCS)
        self.assert_rejected(status, body)

    def test_missing_authorization_is_rejected(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS, sign=False)
        self.assert_rejected(status, body)
        status, body = self.curl("monitoring", "Action=PutMetricData&Version=2010-08-01",
                                 sign=False)
        self.assert_rejected(status, body, "MissingAuthenticationToken")
        self.assertEqual(parse_xml(body).findtext("Error/Type"), "Sender")

    def test_tampered_body_is_rejected(self):
        status, text = self.client.query("DescribeVpcs")
        self.assertEqual(status, 200, text)
        status, text = self.client.query(
            "DescribeVpcs", tamper=lambda b: b.replace(b"DescribeVpcs", b"DescribeSubnets"))
        self.assert_rejected(status, text)
        self.assertEqual(self.last_request()["action"], "DescribeSubnets")

    def test_content_sha256_header_must_match_the_body(self):
        other = hashlib.sha256(b"something else").hexdigest()
        status, body = self.curl("ec2", DESCRIBE_VPCS, headers=["x-amz-content-sha256: " + other])
        self.assert_rejected(status, body)
        right = hashlib.sha256(DESCRIBE_VPCS.encode()).hexdigest()
        status, body = self.curl("ec2", DESCRIBE_VPCS, headers=["x-amz-content-sha256: " + right])
        self.assertEqual(status, 200, body)

    def test_date_more_than_15_minutes_off_is_rejected(self):
        # (The tests' signer: curl 7.88 sends a given X-Amz-Date twice.)
        for offset in (-20 * 60, 20 * 60):
            status, body = self.client.query("DescribeVpcs", when=time.time() + offset)
            self.assert_rejected(status, body, "RequestExpired")
        for offset in (-10 * 60, 10 * 60):
            status, body = self.client.query("DescribeVpcs", when=time.time() + offset)
            self.assertEqual(status, 200, body)

    def test_query_string_parameters_are_signed_too(self):
        # curl 7.88 signs the query as written (curl#9717); AWS sorts it, so
        # only a query already in order is accepted: put parameters in the body.
        status, body = self.curl("ec2", "", path="/?Action=DescribeVpcs&Version=2016-11-15")
        self.assertEqual(status, 200, body)

    def test_python_signer_matches_curl(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS)
        self.assertEqual(status, 200, body)
        sent = self.last_request()["headers"]
        when = calendar.timegm(time.strptime(sent["x-amz-date"], "%Y%m%dT%H%M%SZ"))
        mine = sign_headers("POST", self.url + "/", {}, DESCRIBE_VPCS.encode(), "us-east-1",
                            "ec2", self.standin.access_key, self.standin.secret_key, when=when,
                            signed=["host", "x-amz-date"])
        self.assertEqual(mine["Authorization"], sent["authorization"])

    def test_only_post_is_served(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS, get=True)
        self.assertEqual(status, 405, body)
        self.assertTrue(self.last_request()["rejected"])


class SessionTokenTests(StandInCase):
    """Temporary credentials: X-Amz-Security-Token must be the session's."""

    standin_args = {"session_token": "FwoGZXIvYXdzEXAMPLETOKEN"}

    def test_curl_with_the_session_token_is_accepted(self):
        token = self.standin.session_token
        status, body = self.curl("ec2", DESCRIBE_VPCS, headers=["X-Amz-Security-Token: " + token])
        self.assertEqual(status, 200, body)
        self.assertIn("x-amz-security-token", self.last_request()["headers"]["authorization"])

    def test_missing_or_wrong_session_token_is_rejected(self):
        status, body = self.curl("ec2", DESCRIBE_VPCS)
        self.assertEqual((status, error_code(body)), (403, "AuthFailure"))
        status, body = self.curl("ec2", DESCRIBE_VPCS, headers=["X-Amz-Security-Token: other"])
        self.assertEqual((status, error_code(body)), (403, "AuthFailure"))
        status, body = self.curl("ssm", json.dumps({"Name": AL2023_PARAM}), headers=[
            "X-Amz-Target: AmazonSSM.GetParameter", "Content-Type: application/x-amz-json-1.1"])
        self.assertEqual((status, error_code(body)), (403, "UnrecognizedClientException"))


class Ec2Tests(StandInCase):
    """The stateful EC2 model."""

    def test_default_vpc_subnets_and_security_group(self):
        vpc = self.ec2("DescribeVpcs").findtext("vpcSet/item/vpcId")
        subnets = self.ec2("DescribeSubnets", {"Filter.1.Name": "default-for-az",
                                               "Filter.1.Value.1": "true"})
        items = subnets.findall("subnetSet/item")
        self.assertGreaterEqual(len(items), 2)
        self.assertEqual({s.findtext("vpcId") for s in items}, {vpc})
        self.assertEqual(len({s.findtext("availabilityZone") for s in items}), len(items))
        root = self.ec2("DescribeSecurityGroups", {"Filter.1.Name": "group-name",
                                                   "Filter.1.Value.1": "default",
                                                   "Filter.2.Name": "vpc-id",
                                                   "Filter.2.Value.1": vpc})
        self.assertEqual(root.findtext("securityGroupInfo/item/groupId"), DEFAULT_SG_ID)

    def test_security_group_rules(self):
        gid = self.ec2("CreateSecurityGroup", {"GroupName": "lb-demo", "GroupDescription": "d"}
                       ).findtext("groupId")
        self.assertEqual(self.ec2_error("CreateSecurityGroup", {
            "GroupName": "lb-demo", "GroupDescription": "d"}), (400, "InvalidGroup.Duplicate"))
        rule = {"GroupId": gid, "IpPermissions.1.IpProtocol": "tcp",
                "IpPermissions.1.FromPort": "22", "IpPermissions.1.ToPort": "22",
                "IpPermissions.1.IpRanges.1.CidrIp": "203.0.113.7/32"}
        self.assertEqual(self.ec2("AuthorizeSecurityGroupIngress", rule).findtext("return"), "true")
        self.assertEqual(self.ec2_error("AuthorizeSecurityGroupIngress", rule),
                         (400, "InvalidPermission.Duplicate"))
        root = self.ec2("DescribeSecurityGroups", {"GroupId.1": gid})
        perm = root.find("securityGroupInfo/item/ipPermissions/item")
        self.assertEqual((perm.findtext("ipProtocol"), perm.findtext("fromPort"),
                          perm.findtext("toPort"), perm.findtext("ipRanges/item/cidrIp")),
                         ("tcp", "22", "22", "203.0.113.7/32"))
        by_name = self.ec2("DescribeSecurityGroups", {"Filter.1.Name": "group-name",
                                                      "Filter.1.Value.1": "lb-*"})
        self.assertEqual(by_name.findtext("securityGroupInfo/item/groupId"), gid)
        self.ec2("RevokeSecurityGroupIngress", rule)
        self.assertEqual(self.ec2_error("RevokeSecurityGroupIngress", rule),
                         (400, "InvalidPermission.NotFound"))
        root = self.ec2("DescribeSecurityGroups", {"GroupId.1": gid})
        self.assertIsNone(root.find("securityGroupInfo/item/ipPermissions/item"))
        bad = dict(rule, **{"IpPermissions.1.IpRanges.1.CidrIp": "203.0.113.7"})
        self.assertEqual(self.ec2_error("AuthorizeSecurityGroupIngress", bad),
                         (400, "InvalidParameterValue"))

    def test_key_pairs(self):
        self.assertEqual(self.ec2_error("DescribeKeyPairs", {"KeyName.1": "lb-demo"}),
                         (400, "InvalidKeyPair.NotFound"))
        root = self.ec2("CreateKeyPair", {"KeyName": "lb-demo", "KeyType": "ed25519"})
        material = root.findtext("keyMaterial")
        self.assertTrue(material.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"), material)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "key")
            with open(path, "w") as f:
                f.write(material)
            os.chmod(path, 0o600)
            public = subprocess.run(["ssh-keygen", "-y", "-f", path], capture_output=True,
                                    text=True, check=True, timeout=10).stdout.split()[:2]
        stored = self.standin.state()["key_pairs"][0]["public_key"].split()[:2]
        self.assertEqual(public, stored)
        self.assertEqual(self.ec2_error("CreateKeyPair", {"KeyName": "lb-demo"}),
                         (400, "InvalidKeyPair.Duplicate"))
        line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2tvLzYt2R8pWvHs3sVzn3mJrJqJz0l0m6YxbQw8mQs x"
        material = {"KeyName": "imported",
                    "PublicKeyMaterial": base64.b64encode(line.encode()).decode()}
        self.ec2("ImportKeyPair", material)
        self.assertEqual(self.ec2_error("ImportKeyPair", {"KeyName": "raw",
                                                          "PublicKeyMaterial": line}),
                         (400, "InvalidKey.Format"))
        root = self.ec2("DescribeKeyPairs", {"KeyName.1": "imported", "KeyName.2": "lb-demo"})
        self.assertEqual(sorted(k.findtext("keyName") for k in root.findall("keySet/item")),
                         ["imported", "lb-demo"])
        self.ec2("DeleteKeyPair", {"KeyName": "lb-demo"})
        self.ec2("DeleteKeyPair", {"KeyName": "lb-demo"})     # gone already: fine, as on EC2
        self.assertEqual(self.ec2_error("DescribeKeyPairs", {"KeyName.1": "lb-demo"}),
                         (400, "InvalidKeyPair.NotFound"))

    def test_run_instances_with_a_client_token_creates_them_once(self):
        first = self.run_instances(4, {"Cluster": "cluster1"}, token="lb-demo-cluster1")
        again = self.run_instances(4, {"Cluster": "cluster1"}, token="lb-demo-cluster1")
        self.assertEqual(first, again)
        self.assertEqual(len(set(first)), 4)
        self.assertEqual(len(self.standin.instances()), 4)
        self.assertEqual(self.ec2_error("RunInstances", {
            "ImageId": DEFAULT_AMI, "InstanceType": "t2.large", "MinCount": "4", "MaxCount": "4",
            "ClientToken": "lb-demo-cluster1"}), (400, "IdempotentParameterMismatch"))
        self.run_instances(1, token="another")
        self.assertEqual(len(self.standin.instances()), 5)

    def test_instances_get_loopback_addresses_and_go_running(self):
        ids = self.run_instances(2) + self.run_instances(1)
        self.assertEqual([self.standin.instances()[n]["ip"] for n in range(3)],
                         ["127.0.0.11", "127.0.0.12", "127.0.0.13"])
        first = self.describe(ids=ids)
        self.assertEqual({v[0] for v in first.values()}, {"pending"})
        self.assertEqual({v[1] for v in first.values()}, {None}, "no public IP while pending")
        second = self.describe(ids=ids)
        self.assertEqual([second[i] for i in ids],
                         [("running", ip, ip) for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.13")])

    def test_pending_for_a_time_instead(self):
        self.standin.configure(pending_describes=1000, pending_seconds=1.5)
        launched = time.monotonic()
        [iid] = self.run_instances(1)
        self.assertEqual(self.describe()[iid][0], "pending")
        time.sleep(max(0.0, launched + 1.6 - time.monotonic()))
        self.assertEqual(self.describe()[iid][0], "running")

    def test_describe_instances_filters_by_tag_and_state(self):
        c1 = self.run_instances(2, {"Cluster": "cluster1", "Deployment": "lb-demo"})
        c2 = self.run_instances(2, {"Cluster": "cluster2", "Deployment": "lb-demo"})
        other = self.run_instances(1, {"Cluster": "cluster1", "Deployment": "other"})
        self.describe()
        got = self.describe({"tag:Cluster": ["cluster1"], "tag:Deployment": ["lb-demo"],
                             "instance-state-name": ["running"]})
        self.assertEqual(sorted(got), sorted(c1))
        self.assertEqual(sorted(self.describe({"tag:Deployment": ["lb-demo"]})), sorted(c1 + c2))
        self.assertEqual(sorted(self.describe({"tag-key": ["Cluster"]})), sorted(c1 + c2 + other))
        self.ec2("TerminateInstances", {"InstanceId.1": c1[0]})
        self.assertEqual(self.describe(ids=[c1[0]])[c1[0]][0], "shutting-down")
        self.assertEqual(self.describe(ids=[c1[0]])[c1[0]][0], "terminated")
        running = self.describe({"tag:Cluster": ["cluster1"], "tag:Deployment": ["lb-demo"],
                                 "instance-state-name": ["running"]})
        self.assertEqual(list(running), [c1[1]])
        terminated = self.describe({"instance-state-name": ["terminated"]})
        self.assertEqual(terminated, {c1[0]: ("terminated", None, None)})
        self.assertEqual(self.ec2_error("DescribeInstances", {"Filter.1.Name": "no-such-filter",
                                                              "Filter.1.Value.1": "x"}),
                         (400, "InvalidParameterValue"))
        self.assertEqual(self.ec2_error("DescribeInstances", {"InstanceId.1": "i-0123456789abcdef0"}),
                         (400, "InvalidInstanceID.NotFound"))

    def test_terminated_instances_leave_the_listing_after_a_while(self):
        self.standin.configure(terminated_ttl_s=1.5)
        [iid] = self.run_instances(1)
        terminated = time.monotonic()
        self.standin.terminate_instance(iid)
        self.assertIn(iid, self.describe())
        time.sleep(max(0.0, terminated + 1.6 - time.monotonic()))
        self.assertNotIn(iid, self.describe())

    def test_pagination(self):
        ids = self.run_instances(7)
        root = self.ec2("DescribeInstances", {"MaxResults": "5"})
        token = root.findtext("nextToken")
        page1 = [i.findtext("instanceId") for i in root.findall(".//instancesSet/item")]
        root = self.ec2("DescribeInstances", {"MaxResults": "5", "NextToken": token})
        page2 = [i.findtext("instanceId") for i in root.findall(".//instancesSet/item")]
        self.assertIsNone(root.find("nextToken"))
        self.assertEqual(page1 + page2, ids)

    def test_throttling_is_injected_once_then_success(self):
        self.standin.inject("throttle", action="DescribeInstances")
        status, root = self.client.ec2("DescribeInstances")
        self.assertEqual(status, 503)
        self.assertEqual(root.findtext("Errors/Error/Code"), "RequestLimitExceeded")
        self.ec2("DescribeInstances")
        self.ec2("DescribeVpcs")
        log = self.standin.requests(action="DescribeInstances")
        self.assertEqual([(e["ok"], e["injected"]) for e in log], [(False, "throttle"), (True, None)])

    def test_injected_errors_by_action_and_for_any(self):
        self.standin.inject("error", action="RunInstances", code="UnauthorizedOperation",
                            message="You are not authorized to perform this operation.",
                            status=403)
        self.standin.inject("internal", count=2)
        self.assertEqual(self.ec2_error("DescribeVpcs"), (500, "InternalError"))
        self.assertEqual(self.ec2_error("RunInstances", {"ImageId": DEFAULT_AMI, "MinCount": "1",
                                                         "MaxCount": "1"}),
                         (403, "UnauthorizedOperation"))
        self.assertEqual(self.ec2_error("DescribeVpcs"), (500, "InternalError"))
        self.ec2("DescribeVpcs")
        self.assertEqual(self.standin.instances(), [])

    def test_injected_disconnect_and_delay(self):
        self.standin.inject("disconnect", action="DescribeVpcs")
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            self.client.ec2("DescribeVpcs")
        self.standin.inject("delay", delay_s=0.3)
        start = time.monotonic()
        self.ec2("DescribeVpcs")
        self.assertGreaterEqual(time.monotonic() - start, 0.3)

    def test_dry_run(self):
        run = {"ImageId": DEFAULT_AMI, "MinCount": "1", "MaxCount": "1", "DryRun": "true"}
        self.assertEqual(self.ec2_error("RunInstances", run), (412, "DryRunOperation"))
        status, root = self.client.ec2("RunInstances", run)
        self.assertEqual(root.findtext("Errors/Error/Message"),
                         "Request would have succeeded, but DryRun flag is set.")
        self.assertEqual(self.ec2_error("RunInstances", dict(run, KeyName="nope")),
                         (400, "InvalidKeyPair.NotFound"))
        self.assertEqual(self.ec2_error("CreateSecurityGroup", {
            "GroupName": "g", "GroupDescription": "d", "DryRun": "true"}),
            (412, "DryRunOperation"))
        self.assertEqual(self.standin.instances(), [])
        self.assertEqual(len(self.standin.state()["security_groups"]), 1)

    def test_unknown_action_and_parameter(self):
        self.assertEqual(self.ec2_error("StartInstances", {"InstanceId.1": "i-01234567"}),
                         (400, "InvalidAction"))
        self.assertEqual(self.ec2_error("RunInstances", {
            "ImageId": DEFAULT_AMI, "MinCount": "1", "MaxCount": "1", "SecurityGroupIds.1": "x"}),
            (400, "UnknownParameter"))
        status, text = self.client.query("DescribeVpcs", version="2014-01-01")
        self.assertEqual(status, 400, text)

    def test_run_instances_checks_its_references(self):
        base = {"ImageId": DEFAULT_AMI, "MinCount": "1", "MaxCount": "1"}
        self.assertEqual(self.ec2_error("RunInstances", dict(base, ImageId="ubuntu")),
                         (400, "InvalidAMIID.Malformed"))
        self.assertEqual(self.ec2_error("RunInstances", dict(base, **{
            "SecurityGroupId.1": "sg-0123456789abcdef0"})), (400, "InvalidGroup.NotFound"))
        self.assertEqual(self.ec2_error("RunInstances", dict(base, SubnetId="subnet-1234")),
                         (400, "InvalidSubnetID.NotFound"))
        self.standin.configure(instance_limit=3)
        self.assertEqual(self.ec2_error("RunInstances", dict(base, MinCount="4", MaxCount="4")),
                         (400, "InstanceLimitExceeded"))

    def test_instance_fields(self):
        self.ec2("CreateKeyPair", {"KeyName": "k", "KeyType": "ed25519"})
        gid = self.ec2("CreateSecurityGroup", {"GroupName": "g", "GroupDescription": "d"}
                       ).findtext("groupId")
        subnet = self.ec2("DescribeSubnets").findall("subnetSet/item")[1]
        [iid] = self.run_instances(1, {"Role": "proxy"}, KeyName="k", **{
            "SecurityGroupId.1": gid, "SubnetId": subnet.findtext("subnetId")})
        self.describe()
        item = self.ec2("DescribeInstances", {"InstanceId.1": iid}).find(
            "reservationSet/item/instancesSet/item")
        self.assertEqual(item.findtext("keyName"), "k")
        self.assertEqual(item.findtext("instanceType"), "t2.micro")
        self.assertEqual(item.findtext("imageId"), DEFAULT_AMI)
        self.assertEqual(item.findtext("instanceState/code"), "16")
        self.assertEqual(item.findtext("groupSet/item/groupId"), gid)
        self.assertEqual(item.findtext("subnetId"), subnet.findtext("subnetId"))
        self.assertEqual(item.findtext("placement/availabilityZone"),
                         subnet.findtext("availabilityZone"))
        self.assertEqual(item.findtext("tagSet/item/key"), "Role")
        self.assertEqual(item.findtext("tagSet/item/value"), "proxy")

    def test_control_api_over_http(self):
        control = ControlClient(self.url)
        inst = control.add_instance(tags={"Cluster": "cluster1", "Deployment": "lb-demo"})
        self.assertEqual(inst["state"], "running")
        got = self.describe({"tag:Cluster": ["cluster1"], "instance-state-name": ["running"]})
        self.assertEqual(got, {inst["instance_id"]: ("running", inst["ip"], inst["ip"])})
        control.terminate_instance(inst["instance_id"])
        self.assertEqual(self.describe({"instance-state-name": ["running"]}), {})
        control.inject(kind="throttle", action="DescribeInstances", count=1)
        status, _ = self.client.ec2("DescribeInstances")
        self.assertEqual(status, 503)
        self.assertEqual([e["ok"] for e in control.requests(action="DescribeInstances")],
                         [True, True, False])
        state = control.state()
        self.assertEqual(len(state["instances"]), 1)
        self.assertEqual(control.reset(), {"ok": True})
        self.assertEqual(control.state()["instances"], [])
        with self.assertRaises(RuntimeError):
            control.call("no-such-thing")

    def test_launch_installs_the_key_in_authorized_keys(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "authorized_keys")
            self.standin.configure(authorized_keys_file=path)
            self.ec2("CreateKeyPair", {"KeyName": "k", "KeyType": "ed25519"})
            self.assertFalse(os.path.exists(path))
            self.run_instances(2, KeyName="k")
            with open(path) as f:
                lines = f.read().splitlines()
            self.assertEqual(lines, [self.standin.state()["key_pairs"][0]["public_key"]])


class SsmTests(StandInCase):
    """SSM's JSON protocol, signed for service ssm."""

    HEADERS = ["X-Amz-Target: AmazonSSM.GetParameter", "Content-Type: application/x-amz-json-1.1"]

    def test_get_parameter_signed_by_curl(self):
        status, body = self.curl("ssm", json.dumps({"Name": AL2023_PARAM}), headers=self.HEADERS)
        self.assertEqual(status, 200, body)
        param = json.loads(body)["Parameter"]
        self.assertEqual((param["Name"], param["Type"], param["Value"], param["Version"]),
                         (AL2023_PARAM, "String", DEFAULT_AMI, 1))
        entry = self.last_request()
        self.assertEqual((entry["service"], entry["action"], entry["ok"]),
                         ("ssm", "GetParameter", True))

    def test_unknown_parameter_and_wrong_service(self):
        status, body = self.curl("ssm", json.dumps({"Name": "/no/such"}), headers=self.HEADERS)
        self.assertEqual((status, error_code(body)), (400, "ParameterNotFound"))
        status, body = self.curl("ec2", json.dumps({"Name": AL2023_PARAM}), headers=self.HEADERS)
        self.assertEqual((status, error_code(body)), (403, "InvalidSignatureException"))

    def test_throttling(self):
        self.standin.inject("throttle", service="ssm")
        status, obj = self.client.ssm("GetParameter", {"Name": AL2023_PARAM})
        self.assertEqual((status, obj["__type"]), (400, "ThrottlingException"))
        status, obj = self.client.ssm("GetParameter", {"Name": AL2023_PARAM})
        self.assertEqual(status, 200)


class CloudWatchTests(StandInCase):
    """CloudWatch's Query protocol, signed for service monitoring."""

    def test_put_metric_data_signed_by_curl_is_recorded(self):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = urllib.parse.urlencode([
            ("Action", "PutMetricData"), ("Version", "2010-08-01"), ("Namespace", "CustomLB"),
            ("MetricData.member.1.MetricName", "RequestCount"),
            ("MetricData.member.1.Value", "42"), ("MetricData.member.1.Unit", "Count"),
            ("MetricData.member.1.Timestamp", now),
            ("MetricData.member.1.Dimensions.member.1.Name", "TargetGroup"),
            ("MetricData.member.1.Dimensions.member.1.Value", "cluster1"),
            ("MetricData.member.2.MetricName", "TargetResponseTime"),
            ("MetricData.member.2.Unit", "Seconds"),
            ("MetricData.member.2.StatisticValues.SampleCount", "10"),
            ("MetricData.member.2.StatisticValues.Sum", "0.5"),
            ("MetricData.member.2.StatisticValues.Minimum", "0.01"),
            ("MetricData.member.2.StatisticValues.Maximum", "0.2")])
        status, body = self.curl("monitoring", data)
        self.assertEqual(status, 200, body)
        root = parse_xml(body)
        self.assertEqual(root.tag, "PutMetricDataResponse")
        self.assertIsNotNone(root.findtext("ResponseMetadata/RequestId"))
        count, latency = self.standin.metric_data(namespace="CustomLB")
        self.assertEqual((count["metric_name"], count["value"], count["unit"],
                          count["dimensions"], count["timestamp"]),
                         ("RequestCount", 42.0, "Count", {"TargetGroup": "cluster1"}, now))
        self.assertEqual(latency["statistic_values"],
                         {"SampleCount": 10.0, "Sum": 0.5, "Minimum": 0.01, "Maximum": 0.2})
        self.assertEqual(self.last_request()["service"], "monitoring")

    def test_invalid_data_and_faults_in_cloudwatch_format(self):
        status, text = self.client.query("PutMetricData", {
            "Namespace": "CustomLB", "MetricData.member.1.MetricName": "X",
            "MetricData.member.1.Value": "1", "MetricData.member.1.Unit": "Requests"},
            service="monitoring")
        self.assertEqual((status, error_code(text)), (400, "InvalidParameterValue"))
        self.standin.inject("throttle", action="PutMetricData")
        status, text = self.client.query("PutMetricData", {
            "Namespace": "CustomLB", "MetricData.member.1.MetricName": "X",
            "MetricData.member.1.Value": "1"}, service="monitoring")
        root = parse_xml(text)
        self.assertEqual((status, root.tag, root.findtext("Error/Type"),
                          root.findtext("Error/Code")),
                         (400, "ErrorResponse", "Sender", "Throttling"))
        self.assertEqual(self.standin.metric_data(), [])


    def put(self, *datums, stamp=None):
        params = {"Namespace": "CustomLB"}
        for i, d in enumerate(datums):
            for k, v in d.items():
                params["MetricData.member.%d.%s" % (i + 1, k)] = v
            if stamp:
                params["MetricData.member.%d.Timestamp" % (i + 1)] = stamp
        return self.client.query("PutMetricData", params, service="monitoring")

    def test_get_metric_statistics_reads_back_sums_counts_and_percentiles(self):
        lb = {"Dimensions.member.1.Name": "LoadBalancer", "Dimensions.member.1.Value": "app/x"}
        tg = dict(lb, **{"Dimensions.member.2.Name": "TargetGroup",
                         "Dimensions.member.2.Value": "targetgroup/c1"})
        self.assertEqual(self.put(dict(lb, MetricName="RequestCount", Value="3"),
                                  dict(tg, MetricName="RequestCount", Value="2"))[0], 200)
        self.assertEqual(self.put(dict(lb, MetricName="RequestCount", Value="4"))[0], 200)
        self.assertEqual(self.put(dict(tg, **{
            "MetricName": "TargetResponseTime", "Unit": "Seconds",
            "Values.member.1": "0.05", "Counts.member.1": "98",
            "Values.member.2": "1", "Counts.member.2": "2",
            "StatisticValues.SampleCount": "100", "StatisticValues.Sum": "5.1",
            "StatisticValues.Minimum": "0.025", "StatisticValues.Maximum": "1"}))[0], 200)
        now = time.time()

        def query(name, dims, what):
            q = dict(dims, Namespace="CustomLB", MetricName=name, Period="3600",
                     StartTime=iso(now - 600), EndTime=iso(now + 600), **what)
            return self.client.query("GetMetricStatistics", q, service="monitoring")

        def stats(name, dims, extended=()):
            status, text = query(name, dims, {"Statistics.member.1": "Sum",
                                              "Statistics.member.2": "SampleCount"})
            self.assertEqual(status, 200, text)
            [pt] = parse_xml(text).findall("GetMetricStatisticsResult/Datapoints/member")
            out = {k: float(pt.findtext(k)) for k in ("Sum", "SampleCount")}
            if extended:  # not with Statistics: CloudWatch refuses both in one call
                status, text = query(name, dims, {"ExtendedStatistics.member.%d" % (i + 1): e
                                                  for i, e in enumerate(extended)})
                self.assertEqual(status, 200, text)
                out.update({e.findtext("key"): float(e.findtext("value"))
                            for e in parse_xml(text).iter("entry")})
            return out

        # CloudWatch matches the exact set of dimensions
        self.assertEqual(stats("RequestCount", lb), {"Sum": 7.0, "SampleCount": 2.0})
        self.assertEqual(stats("RequestCount", tg), {"Sum": 2.0, "SampleCount": 1.0})
        self.assertEqual(stats("TargetResponseTime", tg, ["p50", "p99"]),
                         {"Sum": 5.1, "SampleCount": 100.0, "p50": 0.05, "p99": 1.0})
        self.assertEqual(self.standin.metric_statistics(
            "CustomLB", "TargetResponseTime", {"LoadBalancer": "app/x",
                                               "TargetGroup": "targetgroup/c1"},
            extended=["p98"])[0]["ExtendedStatistics"], {"p98": 0.05})
        status, text = self.client.query("GetMetricStatistics", {
            "Namespace": "CustomLB", "MetricName": "RequestCount", "Period": "60",
            "StartTime": iso(now - 60), "EndTime": iso(now)}, service="monitoring")
        self.assertEqual((status, error_code(text)), (400, "MissingParameter"))
        status, text = query("RequestCount", lb, {"Statistics.member.1": "Sum",
                                                  "ExtendedStatistics.member.1": "p99"})
        self.assertEqual((status, error_code(text)), (400, "InvalidParameterCombination"))

    def test_another_reply_and_a_refused_second_call(self):
        page = '<?xml version="1.0"?><html><body>Sign in</body></html>'
        self.standin.inject("reply", action="DescribeInstances", body=page)
        status, text = self.client.query("DescribeInstances")
        self.assertEqual((status, text), (200, page))
        self.assertEqual(self.last_request()["injected"], "reply")
        # skip 1 count 1: the first call goes through, the second is refused
        self.standin.inject("internal", action="PutMetricData", skip=1, count=1)
        datum = {"MetricName": "X", "Value": "1"}
        self.assertEqual([self.put(datum)[0] for _ in range(3)], [200, 500, 200])
        self.assertEqual(len(self.standin.metric_data()), 2)
        with self.assertRaises(ValueError):
            self.standin.inject("reply", action="DescribeInstances")

    def test_an_outage_by_stopping_keeps_the_state_and_the_port(self):
        self.assertEqual(self.put({"MetricName": "X", "Value": "1"})[0], 200)
        inst = self.standin.add_instance(tags={"Cluster": "c1"})
        port = self.standin.port
        self.standin.stop()
        with self.assertRaises(OSError):
            self.put({"MetricName": "X", "Value": "2"})
        self.standin.start()
        self.assertEqual(self.standin.port, port)
        self.assertEqual(self.put({"MetricName": "X", "Value": "3"})[0], 200)
        self.assertEqual([d["value"] for d in self.standin.metric_data()], [1.0, 3.0])
        self.assertEqual([i["instance_id"] for i in self.standin.instances(Cluster="c1")],
                         [inst["instance_id"]])


ASSUME_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})
DESCRIBE_ONLY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}]})


class IamTests(StandInCase):
    """IAM's Query protocol: global, so signed for us-east-1 whatever the
    stand-in's region; stateful roles, inline policies and instance profiles."""

    standin_args = {"region": "eu-west-1"}

    def setUp(self):
        super().setUp()
        self.client.region = self.standin.region  # for EC2; IAM's calls sign for us-east-1

    def iam(self, action, params=None):
        """The <ActionResult> (or the response root) of an IAM call that must succeed."""
        status, root = self.client.iam(action, params)
        self.assertEqual(status, 200, xml_text(root))
        self.assertEqual(root.tag, action + "Response")
        self.assertIsNotNone(root.findtext("ResponseMetadata/RequestId"))
        result = root.find(action + "Result")
        return root if result is None else result

    def iam_error(self, action, params=None):
        """(status, code) of an IAM call that must fail, in IAM's error format."""
        status, root = self.client.iam(action, params)
        self.assertNotEqual(status, 200, xml_text(root))
        self.assertEqual((root.tag, root.findtext("Error/Type")), ("ErrorResponse", "Sender"))
        self.assertTrue(root.findtext("Error/Message"))
        return status, root.findtext("Error/Code")

    def create_role(self, name="r1"):
        return self.iam("CreateRole", {
            "RoleName": name, "AssumeRolePolicyDocument": ASSUME_EC2,
            "Tags.member.1.Key": "Deployment", "Tags.member.1.Value": "d1"}).find("Role")

    def test_signed_by_curl_for_us_east_1(self):
        data = urllib.parse.urlencode([
            ("Action", "CreateRole"), ("Version", "2010-05-08"), ("RoleName", "r1"),
            ("AssumeRolePolicyDocument", ASSUME_EC2)])
        status, body = self.curl("iam", data, region="us-east-1")
        self.assertEqual(status, 200, body)
        self.assertIn('xmlns="https://iam.amazonaws.com/doc/2010-05-08/"', body)
        role = parse_xml(body).find("CreateRoleResult/Role")
        self.assertEqual(role.findtext("Arn"), "arn:aws:iam::123456789012:role/r1")
        self.assertEqual(json.loads(urllib.parse.unquote(
            role.findtext("AssumeRolePolicyDocument"))), json.loads(ASSUME_EC2))
        entry = self.last_request()
        self.assertEqual((entry["service"], entry["action"], entry["ok"]),
                         ("iam", "CreateRole", True))
        # Signed for the stand-in's own region, or as another service: refused.
        status, body = self.curl("iam", data, region="eu-west-1")
        self.assertEqual((status, error_code(body)), (403, "SignatureDoesNotMatch"), body)
        self.assertIn("Expected 'us-east-1'", body)
        status, body = self.curl("ec2", data, region="us-east-1")
        self.assertEqual((status, error_code(body)), (403, "SignatureDoesNotMatch"), body)
        self.assertEqual([r["role_name"] for r in self.standin.state()["iam"]["roles"]], ["r1"])

    def test_role_policy_and_profile_lifecycle(self):
        role = self.create_role()
        self.assertTrue(role.findtext("RoleId").startswith("AROA"))
        self.assertEqual(self.iam_error("CreateRole", {
            "RoleName": "r1", "AssumeRolePolicyDocument": ASSUME_EC2}),
            (409, "EntityAlreadyExists"))
        got = self.iam("GetRole", {"RoleName": "r1"}).find("Role")
        self.assertEqual([(t.findtext("Key"), t.findtext("Value"))
                          for t in got.findall("Tags/member")], [("Deployment", "d1")])
        self.assertEqual(self.iam_error("GetRole", {"RoleName": "r2"}), (404, "NoSuchEntity"))

        self.iam("PutRolePolicy", {"RoleName": "r1", "PolicyName": "p",
                                   "PolicyDocument": DESCRIBE_ONLY})
        doc = self.iam("GetRolePolicy", {"RoleName": "r1", "PolicyName": "p"})
        self.assertEqual(json.loads(urllib.parse.unquote(doc.findtext("PolicyDocument"))),
                         json.loads(DESCRIBE_ONLY))
        self.assertEqual(self.iam_error("GetRolePolicy", {"RoleName": "r1", "PolicyName": "q"}),
                         (404, "NoSuchEntity"))

        profile = self.iam("CreateInstanceProfile", {"InstanceProfileName": "ip1"}).find(
            "InstanceProfile")
        self.assertEqual(profile.findtext("Arn"),
                         "arn:aws:iam::123456789012:instance-profile/ip1")
        self.assertEqual(self.iam_error("CreateInstanceProfile", {"InstanceProfileName": "ip1"}),
                         (409, "EntityAlreadyExists"))
        self.iam("AddRoleToInstanceProfile", {"InstanceProfileName": "ip1", "RoleName": "r1"})
        self.assertEqual(self.iam_error("AddRoleToInstanceProfile", {
            "InstanceProfileName": "ip1", "RoleName": "r1"}), (409, "LimitExceeded"))
        got = self.iam("GetInstanceProfile", {"InstanceProfileName": "ip1"})
        self.assertEqual([r.findtext("RoleName") for r in
                          got.findall("InstanceProfile/Roles/member")], ["r1"])

        # Taken apart in the only order IAM allows.
        self.assertEqual(self.iam_error("DeleteRole", {"RoleName": "r1"}), (409, "DeleteConflict"))
        self.assertEqual(self.iam_error("DeleteInstanceProfile", {"InstanceProfileName": "ip1"}),
                         (409, "DeleteConflict"))
        self.iam("RemoveRoleFromInstanceProfile", {"InstanceProfileName": "ip1", "RoleName": "r1"})
        self.assertEqual(self.iam_error("RemoveRoleFromInstanceProfile", {
            "InstanceProfileName": "ip1", "RoleName": "r1"}), (404, "NoSuchEntity"))
        self.assertEqual(self.iam_error("DeleteRole", {"RoleName": "r1"}), (409, "DeleteConflict"))
        self.iam("DeleteRolePolicy", {"RoleName": "r1", "PolicyName": "p"})
        self.iam("DeleteRole", {"RoleName": "r1"})
        self.iam("DeleteInstanceProfile", {"InstanceProfileName": "ip1"})
        self.assertEqual(self.iam_error("DeleteRole", {"RoleName": "r1"}), (404, "NoSuchEntity"))
        self.assertEqual(self.iam_error("GetInstanceProfile", {"InstanceProfileName": "ip1"}),
                         (404, "NoSuchEntity"))
        self.assertEqual(self.standin.state()["iam"], {"roles": [], "instance_profiles": []})

    def test_bad_input(self):
        self.assertEqual(self.iam_error("CreateRole", {
            "RoleName": "r1", "AssumeRolePolicyDocument": "{not json"}),
            (400, "MalformedPolicyDocument"))
        self.assertEqual(self.iam_error("CreateRole", {
            "RoleName": "bad name", "AssumeRolePolicyDocument": ASSUME_EC2}),
            (400, "ValidationError"))
        self.assertEqual(self.iam_error("CreateRole", {"RoleName": "x" * 65,
                                                       "AssumeRolePolicyDocument": ASSUME_EC2}),
                         (400, "ValidationError"))
        # IAM has no DryRun: a client that sends it would change things for real.
        self.assertEqual(self.iam_error("CreateRole", {
            "RoleName": "r1", "AssumeRolePolicyDocument": ASSUME_EC2, "DryRun": "true"}),
            (400, "InvalidInput"))
        self.assertEqual(self.iam_error("ListUsers"), (400, "InvalidAction"))
        self.assertEqual(self.standin.state()["iam"]["roles"], [])

    def test_run_instances_with_an_instance_profile(self):
        base = {"ImageId": DEFAULT_AMI, "MinCount": "1", "MaxCount": "1"}
        status, root = self.client.ec2("RunInstances", dict(base, **{
            "IamInstanceProfile.Name": "ip1"}))
        self.assertEqual((status, root.findtext("Errors/Error/Code"),
                          root.findtext("Errors/Error/Message")),
                         (400, "InvalidParameterValue", "Value (ip1) for parameter "
                          "iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"))
        self.create_role()
        arn = self.iam("CreateInstanceProfile", {"InstanceProfileName": "ip1"}).findtext(
            "InstanceProfile/Arn")
        self.iam("AddRoleToInstanceProfile", {"InstanceProfileName": "ip1", "RoleName": "r1"})
        [by_name] = self.run_instances(1, **{"IamInstanceProfile.Name": "ip1"})
        [by_arn] = self.run_instances(1, **{"IamInstanceProfile.Arn": arn})
        [plain] = self.run_instances(1)
        root = self.ec2("DescribeInstances")
        profiles = {i.findtext("instanceId"): i.findtext("iamInstanceProfile/arn")
                    for i in root.findall("reservationSet/item/instancesSet/item")}
        self.assertEqual(profiles, {by_name: arn, by_arn: arn, plain: None})
        self.assertEqual({i["instance_id"]: i["iam_instance_profile"]
                          for i in self.standin.instances()}, profiles)
        self.assertEqual(self.ec2_error("RunInstances", dict(base, **{
            "IamInstanceProfile.Name": "ip1", "IamInstanceProfile.Arn": arn})),
            (400, "InvalidParameterCombination"))
        # A role in use by no profile can go; one in a profile cannot.
        self.assertEqual(self.iam_error("DeleteRole", {"RoleName": "r1"}), (409, "DeleteConflict"))

    def test_a_new_profile_takes_a_while_to_reach_ec2(self):
        self.standin.configure(profile_propagation_runs=2)
        self.iam("CreateInstanceProfile", {"InstanceProfileName": "ip1"})
        params = {"ImageId": DEFAULT_AMI, "MinCount": "1", "MaxCount": "1",
                  "IamInstanceProfile.Name": "ip1"}
        for _ in range(2):
            self.assertEqual(self.ec2_error("RunInstances", params), (400, "InvalidParameterValue"))
        self.assertEqual(len(self.run_instances(1, **{"IamInstanceProfile.Name": "ip1"})), 1)


class ScriptTests(unittest.TestCase):
    """aws_standin.py run as a program, as a test of another process would."""

    def test_port_file_signed_request_and_sigterm(self):
        with tempfile.TemporaryDirectory() as d:
            port_file = os.path.join(d, "port")
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "aws_standin.py"),
                                     "--port", "0", "--port-file", port_file,
                                     "--access-key", "AKIDSCRIPT", "--secret-key", "s3cret"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while not os.path.exists(port_file) and time.monotonic() < deadline:
                    self.assertIsNone(proc.poll(), "the stand-in exited early")
                    time.sleep(0.02)
                with open(port_file) as f:
                    url = "http://127.0.0.1:%d" % int(f.read())
                status, body = curl(url, "ec2", DESCRIBE_VPCS, user="AKIDSCRIPT:s3cret")
                self.assertEqual(status, 200, body)
                control = ControlClient(url)
                self.assertEqual([e["action"] for e in control.requests()], ["DescribeVpcs"])
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=10), 0)
                proc.stderr.close()


class SshdTests(unittest.TestCase):
    """The real sshd fixture: nine "instance" addresses, one port."""

    @classmethod
    def setUpClass(cls):
        for tool in ("ssh", "sftp", "scp"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s not installed" % tool)
        cls.sshd = SSHD(INSTANCE_ADDRS)

    @classmethod
    def tearDownClass(cls):
        cls.sshd.cleanup()

    def test_ssh_runs_commands_on_every_address(self):
        r = self.sshd.ssh("127.0.0.12", "true")
        self.assertEqual(r.returncode, 0, r.stderr + self.sshd.log()[-2000:])
        for addr in ("127.0.0.11", "127.0.0.12", "127.0.0.19"):
            r = self.sshd.ssh(addr, "echo hi; echo $SSH_CONNECTION")
            self.assertEqual(r.returncode, 0, r.stderr)
            hi, conn = r.stdout.splitlines()
            self.assertEqual(hi, "hi")
            self.assertEqual(conn.split()[2:], [addr, str(self.sshd.port)])

    def test_known_hosts_gets_the_fixture_host_key(self):
        with tempfile.TemporaryDirectory() as d:
            known = os.path.join(d, "known_hosts")
            r = self.sshd.ssh("127.0.0.13", "true", known_hosts=known)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run(["ssh-keygen", "-F", "[127.0.0.13]:%d" % self.sshd.port,
                                "-f", known, "-l"], capture_output=True, text=True, timeout=10)
            self.assertIn(self.sshd.host_fingerprint(), r.stdout)

    def test_uploads_arrive_intact(self):
        payload = os.urandom(3 * 1024 * 1024 + 17)
        digest = hashlib.sha256(payload).hexdigest()
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(payload)
        self.addCleanup(os.unlink, f.name)
        for name, put in (("sftp", self.sshd.sftp_put),
                          ("scp", self.sshd.scp_put),
                          ("scp-legacy", lambda a, l, r: self.sshd.scp_put(a, l, r, legacy=True))):
            remote = os.path.join(self.sshd.workdir, name + ".bin")
            r = put("127.0.0.14", f.name, remote)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = self.sshd.ssh("127.0.0.14", "sha256sum " + remote)
            self.assertEqual(r.stdout.split()[0], digest, name)

    def test_other_keys_are_refused(self):
        with tempfile.TemporaryDirectory() as d:
            key = os.path.join(d, "k")
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key],
                           check=True, timeout=10)
            r = self.sshd.ssh("127.0.0.15", "true", key=key)
            self.assertEqual(r.returncode, 255)
            self.assertIn("Permission denied", r.stderr)
            with open(key + ".pub") as f:
                self.sshd.authorize_key(f.read())
            self.assertEqual(self.sshd.ssh("127.0.0.15", "true", key=key).returncode, 0)


class SshdLifecycleTests(unittest.TestCase):
    """Host key rotation, per-address homes, stopping by PID."""

    def setUp(self):
        if shutil.which("ssh") is None:
            self.skipTest("ssh not installed")

    def test_rotated_host_key_is_refused_by_a_client_that_knows_the_old_one(self):
        with SSHD(["127.0.0.11", "127.0.0.12"]) as sshd:
            self.assertEqual(sshd.ssh("127.0.0.11", "true").returncode, 0)
            old, port, pid = sshd.host_fingerprint(), sshd.port, sshd.pid
            sshd.rotate_host_key()
            self.assertEqual(sshd.port, port)
            self.assertNotEqual(sshd.pid, pid)
            self.assertNotEqual(sshd.host_fingerprint(), old)
            r = sshd.ssh("127.0.0.11", "true", strict="yes")
            self.assertEqual(r.returncode, 255)
            self.assertIn("REMOTE HOST IDENTIFICATION HAS CHANGED", r.stderr)
            # an address the client never saw is simply new
            self.assertEqual(sshd.ssh("127.0.0.12", "true").returncode, 0)

    def test_per_address_home(self):
        with SSHD(["127.0.0.11", "127.0.0.12"], per_address_home=True) as sshd:
            for addr in ("127.0.0.11", "127.0.0.12"):
                r = sshd.ssh(addr, "pwd; echo $HOME; echo %s > whoami" % addr)
                self.assertEqual(r.stdout.split(), [sshd.home(addr)] * 2, r.stderr)
            with tempfile.NamedTemporaryFile("w", delete=False) as f:
                f.write("backend binary\n")
            self.addCleanup(os.unlink, f.name)
            r = sshd.sftp_put("127.0.0.12", f.name, "backend")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = sshd.scp_put("127.0.0.11", f.name, "bootstrap.sh", legacy=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(sorted(os.listdir(sshd.home("127.0.0.12"))), ["backend", "whoami"])
            self.assertEqual(sorted(os.listdir(sshd.home("127.0.0.11"))),
                             ["bootstrap.sh", "whoami"])
            with open(os.path.join(sshd.home("127.0.0.11"), "whoami")) as f:
                self.assertEqual(f.read(), "127.0.0.11\n")

    def test_stop_ends_sshd_and_what_sessions_left_running(self):
        sshd = SSHD(["127.0.0.11"], per_address_home=True)
        try:
            r = sshd.ssh("127.0.0.11", "nohup sleep 300 >/dev/null 2>&1 & echo $!")
            self.assertEqual(r.returncode, 0, r.stderr)
            sleeper = int(r.stdout)
            self.assertIn(sleeper, sshd.session_pids())
            pid, port = sshd.pid, sshd.port
            sshd.stop()
            for p in (pid, sleeper):
                self.assertTrue(process_ended(p), "process %d still runs" % p)
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.11", port), timeout=1).close()
        finally:
            sshd.cleanup()


class StandInWithSshdTests(StandInCase):
    """awsctl's path in small: a key pair from CreateKeyPair logs in to the
    instance RunInstances made, at the instance's address, on the sshd port."""

    def test_created_key_pair_logs_in_to_the_launched_instance(self):
        if shutil.which("ssh") is None:
            self.skipTest("ssh not installed")
        with SSHD(INSTANCE_ADDRS[:3]) as sshd:
            self.standin.configure(authorized_keys_file=sshd.authorized_keys)
            material = self.ec2("CreateKeyPair", {"KeyName": "lb-demo", "KeyType": "ed25519"}
                                ).findtext("keyMaterial")
            key = os.path.join(sshd.dir, "lb-demo.pem")
            with open(key, "w") as f:
                f.write(material)
            os.chmod(key, 0o600)
            [iid] = self.run_instances(1, KeyName="lb-demo")
            self.describe()
            ip = self.describe()[iid][1]
            self.assertEqual(ip, "127.0.0.11")
            r = sshd.ssh(ip, "echo up", key=key)
            self.assertEqual((r.returncode, r.stdout), (0, "up\n"), r.stderr)


if __name__ == "__main__":
    unittest.main()
