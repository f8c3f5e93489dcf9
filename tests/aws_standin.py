#!/usr/bin/env python3
"""A local stand-in for the AWS APIs that awsctl and the proxy call: EC2
(Query API, Version 2016-11-15), SSM (JSON 1.1: GetParameter, GetParameters),
CloudWatch (Query API, Version 2010-08-01: PutMetricData, and
GetMetricStatistics with percentiles to read back what was put) and IAM
(Query API, Version 2010-05-08: roles, their inline policies, instance
profiles), served on one HTTP endpoint on 127.0.0.1. Python 3.11 standard
library only.

Every datum PutMetricData accepts is kept as sent (dimensions, value or
values and counts, statistic set, timestamp, the request it came in), so a
test can check a publication's layout and distribution. stop() and start()
again make an outage: the state stays, the port too.

Every API request must be a POST signed with SigV4 (an `Authorization:
AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
SignedHeaders=..., Signature=...` header, as libcurl's CURLOPT_AWS_SIGV4 and
`curl --aws-sigv4 aws:amz:REGION:SERVICE` make it) for the stand-in's region
and for the service the request targets (IAM is global: signed for
us-east-1, whatever the stand-in's region). The signature is recomputed from
the canonical request and the known secret; anything else is answered 403
in that service's error format.

Which service a request targets (so one URL serves all four):
  X-Amz-Target: AmazonSSM.<Operation>               -> ssm        (JSON 1.1)
  Action=<CloudWatch action>, or Version=2010-08-01   -> monitoring (Query)
  Action=<IAM action>, or Version=2010-05-08          -> iam        (Query)
  any other Action=...                                -> ec2        (Query)
Point every client at the same URL: AWS_ENDPOINT_URL=http://127.0.0.1:PORT
(or AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL_SSM, AWS_ENDPOINT_URL_CLOUDWATCH,
AWS_ENDPOINT_URL_IAM, all that URL); sign with the service names ec2, ssm,
monitoring (CloudWatch's signing name) and iam. StandIn.env() returns those
variables.

Run as a script:
  python3 tests/aws_standin.py --port 0 --port-file F [--region us-east-1]
          [--access-key AKID --secret-key SECRET] [--session-token T]
          [--ip-start 127.0.0.11] [--authorized-keys FILE] ...
It writes the bound port to F once listening and runs until SIGTERM/SIGINT.
Or import it: `with StandIn() as s: ... s.url, s.env(), s.state() ...`.

Control API: unsigned, JSON in and out, under /_standin/ on the same port
(the same operations are StandIn methods; ControlClient calls them over
HTTP from another process):
  GET  /_standin/health
  GET  /_standin/state                     everything below, in one object
  GET  /_standin/requests[?action=A&service=S]
  GET  /_standin/metrics[?namespace=N&name=M]
  POST /_standin/inject      {"action": "RunInstances"|"*", "service": null,
                              "kind": "throttle"|"internal"|"error"|"disconnect"|"delay"
                                      |"reply",
                              "count": 1 (null: until cleared), "skip": 0, "code",
                              "message", "status", "delay_s", "body", "content_type"}
                             ("reply": answer status (200) with body instead, e.g. an
                             XML document that is not the action's; "skip": let that
                             many matching requests through first, e.g. skip 1 count 1
                             refuses only the second call)
  POST /_standin/clear-injections
  POST /_standin/instances   {"tags": {...}, "instance_type", "image_id",
                              "key_name", "state": "running", "ip"}
  POST /_standin/instance-state {"instance_id", "state"}
  POST /_standin/terminate   {"instance_id"}
  POST /_standin/config      {"pending_describes": 1, ...}   (see DEFAULT_CONFIG)
  POST /_standin/ssm-parameter {"name", "value", "type": "String"}
  POST /_standin/reset
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as xml_escape

EC2_VERSION = "2016-11-15"
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
CW_VERSION = "2010-08-01"
CW_NS = "http://monitoring.amazonaws.com/doc/2010-08-01/"
IAM_VERSION = "2010-05-08"
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
IAM_REGION = "us-east-1"   # IAM is global: requests are signed for us-east-1
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "AKIDSTANDINEXAMPLE"
DEFAULT_SECRET_KEY = "standin/Secret/Key/EXAMPLEKEY"
AL2023_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_AMI = "ami-0123456789abcdef0"
MAX_BODY = 16 * 1024 * 1024
CONTROL_PREFIX = "/_standin"

CW_ACTIONS = {"PutMetricData", "GetMetricData", "GetMetricStatistics", "ListMetrics",
              "PutMetricAlarm", "DescribeAlarms", "DeleteAlarms"}

# Settings a test may change (StandIn(**config), configure(), /_standin/config).
DEFAULT_CONFIG = {
    "ip_start": "127.0.0.11",      # first instance's address (private = public)
    "pending_describes": 1,        # DescribeInstances calls that still show pending
    "pending_seconds": None,       # or: running this long after launch
    "shutdown_describes": 1,       # same for shutting-down -> terminated
    "shutdown_seconds": None,
    "terminated_ttl_s": 3600.0,    # terminated instances stay listed this long
    "instance_limit": 64,          # pending + running instances at most
    "authorized_keys_file": None,  # RunInstances appends its key pair's public key here
    "max_skew_s": 900,             # x-amz-date this far from now: rejected
    "profile_propagation_runs": 0, # RunInstances calls that find a new instance profile
                                   # not usable yet (IAM is eventually consistent)
}


# --------------------------------------------------------------------------
# Errors and request parameters

class AwsError(Exception):
    """An AWS error reply: code, message and HTTP status."""

    def __init__(self, code, message, status=400):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.status = status


def missing(name):
    return AwsError("MissingParameter", "The request must contain the parameter %s" % name)


def invalid(message):
    return AwsError("InvalidParameterValue", message)


class Params:
    """Flat Query API parameters (`Filter.1.Value.2=x`) with helpers for
    their indexed lists and structures."""

    def __init__(self, flat):
        self.flat = dict(flat)

    def get(self, key, default=None):
        return self.flat.get(key, default)

    def require(self, key):
        value = self.flat.get(key)
        if value is None or value == "":
            raise missing(key)
        return value

    def int(self, key, default=None, lo=None, hi=None):
        raw = self.flat.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid("Invalid value '%s' for %s" % (raw, key))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise invalid("Value (%s) for parameter %s is invalid" % (raw, key))
        return value

    def bool(self, key, default=False):
        raw = self.flat.get(key)
        if raw is None:
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise invalid("Invalid value '%s' for %s: expecting true or false" % (raw, key))

    def _indexed(self, prefix):
        """{N: rest-of-key or '' : value} for keys prefix.N[.rest]."""
        pat = re.compile(re.escape(prefix) + r"\.(\d+)(?:\.(.+))?$")
        groups = {}
        for key, value in self.flat.items():
            m = pat.match(key)
            if m:
                groups.setdefault(int(m.group(1)), {})[m.group(2) or ""] = value
        return [groups[n] for n in sorted(groups)]

    def list(self, prefix):
        """The values of prefix.1, prefix.2, ... in index order."""
        return [g[""] for g in self._indexed(prefix) if "" in g]

    def structs(self, prefix):
        """Params for each prefix.N.*, in index order."""
        return [Params({k: v for k, v in g.items() if k}) for g in self._indexed(prefix)
                if any(g)]


def spec_regex(specs):
    """A regex matching the parameter names of `specs`, where a segment N is
    an index and * is anything."""
    def one(spec):
        segs = []
        for seg in spec.split("."):
            segs.append(r"\d+" if seg == "N" else ".+" if seg == "*" else re.escape(seg))
        return r"\.".join(segs)
    return re.compile("|".join("(?:%s)" % one(s) for s in specs))


def check_known_params(params, specs, code="UnknownParameter",
                       common=("Action", "Version", "DryRun")):
    pattern = spec_regex(list(specs) + list(common))
    for key in params.flat:
        if not pattern.fullmatch(key):
            raise AwsError(code, "The parameter %s is not recognized" % key)


# --------------------------------------------------------------------------
# SigV4

def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def aws_quote(text, safe=""):
    """URI-encode as SigV4 wants: everything but A-Z a-z 0-9 - _ . ~ (and safe)."""
    return urllib.parse.quote(text, safe=safe)


def canonical_uri(path):
    # Not S3: the path as sent is encoded once more (AWS's double encoding).
    return aws_quote(path or "/", safe="/")


def canonical_query(raw):
    pairs = []
    for part in raw.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((aws_quote(urllib.parse.unquote(key)),
                          aws_quote(urllib.parse.unquote(value))))
    return "&".join("%s=%s" % kv for kv in sorted(pairs))


def canonical_request(method, path, query, header_values, signed, payload_hash):
    """header_values(name) -> list of the values of that header."""
    lines = "".join("%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in header_values(name)))
                    for name in signed)
    return "\n".join([method, canonical_uri(path), canonical_query(query), lines,
                      ";".join(signed), payload_hash])


def string_to_sign(amz_date, scope, creq):
    return "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256_hex(creq.encode())])


def signature(secret, amz_date, region, service, creq):
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    key = signing_key(secret, amz_date[:8], region, service)
    return hmac.new(key, string_to_sign(amz_date, scope, creq).encode(), hashlib.sha256).hexdigest()


def sign_headers(method, url, headers, body, region, service, access_key, secret_key,
                 session_token=None, when=None, signed=None):
    """Headers for a SigV4-signed request (the tests' own signer; the
    project's clients use libcurl's). Signs host, content-type and x-amz-*,
    or the header names in `signed`."""
    parts = urllib.parse.urlsplit(url)
    when = when if when is not None else time.time()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    out = dict(headers)
    out["Host"] = parts.netloc
    out["X-Amz-Date"] = amz_date
    if session_token is not None:
        out["X-Amz-Security-Token"] = session_token
    lower = {k.lower(): v for k, v in out.items()}
    signed = sorted(signed or (n for n in lower
                               if n in ("host", "content-type") or n.startswith("x-amz-")))
    creq = canonical_request(method, parts.path or "/", parts.query, lambda n: [lower[n]],
                             signed, sha256_hex(body))
    sig = signature(secret_key, amz_date, region, service, creq)
    out["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, "
                            "SignedHeaders=%s, Signature=%s" % (
                                access_key, amz_date[:8], region, service, ";".join(signed), sig))
    return out


class AuthError(Exception):
    """Why a request's signature was refused; kind is one of missing,
    incomplete, unknown-key, token, scope, expired, signature."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


AUTH_CODES = {
    "ec2": dict.fromkeys(["missing", "incomplete", "unknown-key", "token", "scope", "signature"],
                         "AuthFailure") | {"expired": "RequestExpired"},
    "ssm": {"missing": "MissingAuthenticationTokenException",
            "incomplete": "IncompleteSignatureException",
            "unknown-key": "UnrecognizedClientException", "token": "UnrecognizedClientException",
            "scope": "InvalidSignatureException", "expired": "InvalidSignatureException",
            "signature": "InvalidSignatureException"},
    "monitoring": {"missing": "MissingAuthenticationToken", "incomplete": "IncompleteSignature",
                   "unknown-key": "InvalidClientTokenId", "token": "InvalidClientTokenId",
                   "scope": "SignatureDoesNotMatch", "expired": "SignatureDoesNotMatch",
                   "signature": "SignatureDoesNotMatch"},
}
AUTH_CODES["iam"] = AUTH_CODES["monitoring"]


def parse_authorization(value):
    """(algorithm, {Credential, SignedHeaders, Signature}) of an
    Authorization header."""
    algorithm, _, rest = value.strip().partition(" ")
    fields = {}
    for part in rest.split(","):
        name, eq, val = part.strip().partition("=")
        if eq:
            fields[name] = val
    return algorithm, fields


class SigV4Verifier:
    """Checks an AWS4-HMAC-SHA256 Authorization header as AWS does: known
    access key, session token, credential scope (date, region, service),
    x-amz-date within max_skew_s of now, x-amz-content-sha256 (when sent)
    equal to the body's hash, and the signature over the canonical request."""

    def __init__(self, region, credentials, max_skew_s=900):
        self.region = region
        self.credentials = credentials   # access key -> (secret, session token or None)
        self.max_skew_s = max_skew_s

    def verify(self, req, service, now=None, region=None):
        """The access key of a correctly signed request (for `region`, by
        default the verifier's); raises AuthError."""
        expected_region = region or self.region
        value = req.header("authorization")
        if not value:
            raise AuthError("missing", "Request is missing Authentication Token")
        algorithm, fields = parse_authorization(value)
        if algorithm != "AWS4-HMAC-SHA256":
            raise AuthError("incomplete", "Unsupported Authorization algorithm '%s'" % algorithm)
        for name in ("Credential", "SignedHeaders", "Signature"):
            if not fields.get(name):
                raise AuthError("incomplete", "Authorization header requires '%s' parameter. "
                                "Authorization=%s" % (name, value))
        scope = fields["Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise AuthError("incomplete", "Credential should be scoped to a valid region, service "
                            "and 'aws4_request': '%s'" % fields["Credential"])
        access_key, date, region, signed_service, _ = scope
        if access_key not in self.credentials:
            raise AuthError("unknown-key", "The security token included in the request is invalid "
                            "(access key '%s' is not known)." % access_key)
        secret, token = self.credentials[access_key]
        amz_date = self._amz_date(req, date, now)
        if region != expected_region:
            raise AuthError("scope", "Credential should be scoped to a valid region, not '%s'. "
                            "Expected '%s'." % (region, expected_region))
        if signed_service != service:
            raise AuthError("scope", "Credential should be scoped to correct service: '%s'. "
                            "Got '%s'." % (service, signed_service))
        if req.header("x-amz-security-token") != token:
            raise AuthError("token", "The security token included in the request is invalid.")
        self._check_signature(req, fields, secret, amz_date, region, service)
        return access_key

    def _amz_date(self, req, scope_date, now):
        amz_date = req.header("x-amz-date")
        if not amz_date:
            raise AuthError("incomplete", "Authorization header requires existence of either a "
                            "'X-Amz-Date' or a 'Date' header.")
        try:
            t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            raise AuthError("incomplete", "X-Amz-Date '%s' is not YYYYMMDD'T'HHMMSS'Z'" % amz_date)
        if scope_date != amz_date[:8]:
            raise AuthError("scope", "Date in Credential scope does not match YYYYMMDD from "
                            "ISO-8601 version of date from HTTP: '%s' != '%s'"
                            % (scope_date, amz_date[:8]))
        now = time.time() if now is None else now
        if abs(now - t) > self.max_skew_s:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
            raise AuthError("expired", "Signature expired: %s is now earlier or later than %s "
                            "(%s +/- %d min.)" % (amz_date, stamp, stamp, self.max_skew_s // 60))
        return amz_date

    def _check_signature(self, req, fields, secret, amz_date, region, service):
        signed = fields["SignedHeaders"].split(";")
        for required in ("host", "x-amz-date"):
            if required not in signed:
                raise AuthError("signature", "'%s' must be a SignedHeader in the AWS "
                                "Authorization." % required)
        for name in signed:
            if not req.header_values(name):
                raise AuthError("signature", "SignedHeaders names '%s', which the request "
                                "does not carry." % name)
        actual = sha256_hex(req.body)
        declared = req.header("x-amz-content-sha256")
        if declared is not None and declared != actual:
            raise AuthError("signature", "The provided 'x-amz-content-sha256' header does not "
                            "match what was computed.")
        creq = canonical_request(req.method, req.path, req.query, req.header_values, signed, actual)
        expected = signature(secret, amz_date, region, service, creq)
        if not hmac.compare_digest(expected, fields["Signature"]):
            scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
            raise AuthError("signature", "The request signature we calculated does not match the "
                            "signature you provided. Check your AWS Secret Access Key and signing "
                            "method. The Canonical String for this request should have been\n'%s'\n"
                            "\nThe String-to-Sign should have been\n'%s'\n"
                            % (creq, string_to_sign(amz_date, scope, creq)))


# --------------------------------------------------------------------------
# Requests, replies and the three wire formats

class Request:
    """One HTTP request as the stand-in sees it (headers as sent, body bytes)."""

    def __init__(self, method, target, headers, body):
        self.method = method
        path, _, self.query = target.partition("?")
        self.path = path or "/"
        self.headers = [(n.lower(), v) for n, v in headers]
        self.body = body

    def header_values(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def header(self, name):
        values = self.header_values(name)
        return values[0] if values else None


class Reply:
    """What to answer: status, body, content type; or drop the connection."""

    def __init__(self, status, body=b"", content_type="text/plain", request_id=None,
                 headers=None, disconnect=False):
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.content_type = content_type
        self.headers = dict(headers or {})
        if request_id:
            self.headers["x-amzn-RequestId"] = request_id
        self.disconnect = disconnect


def _xml_element(name, value, out, member):
    if value is None:
        return
    if isinstance(value, dict):
        out.append("<%s>" % name)
        for key, item in value.items():
            _xml_element(key, item, out, member)
        out.append("</%s>" % name)
    elif isinstance(value, (list, tuple)):
        out.append("<%s>" % name)
        for item in value:
            _xml_element(member, item, out, member)
        out.append("</%s>" % name)
    else:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append("<%s>%s</%s>" % (name, xml_escape(text), name))


def xml_children(fields, member="item"):
    """XML for a dict: dicts nest, lists become <item>s (EC2; IAM says
    <member>), None is left out."""
    out = []
    for name, value in fields.items():
        _xml_element(name, value, out, member)
    return "".join(out)


XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def ec2_reply(action, request_id, fields):
    body = '%s<%sResponse xmlns="%s"><requestId>%s</requestId>%s</%sResponse>' % (
        XML_DECL, action, EC2_NS, request_id, xml_children(fields), action)
    return Reply(200, body, "text/xml;charset=UTF-8", request_id, {"Server": "AmazonEC2"})


def ec2_error(err, request_id):
    body = ("%s<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors>"
            "<RequestID>%s</RequestID></Response>" % (
                XML_DECL, xml_escape(err.code), xml_escape(err.message), request_id))
    return Reply(err.status, body, "text/xml;charset=UTF-8", request_id, {"Server": "AmazonEC2"})


def cw_reply(action, request_id):
    body = ('%s<%sResponse xmlns="%s"><ResponseMetadata><RequestId>%s</RequestId>'
            '</ResponseMetadata></%sResponse>' % (XML_DECL, action, CW_NS, request_id, action))
    return Reply(200, body, "text/xml", request_id)


def cw_statistics_reply(name, points, request_id):
    out = []
    for pt in points:
        fields = "".join("<%s>%s</%s>" % (k, repr(float(v)), k) for k, v in pt.items()
                         if k in CW_STATISTICS)
        ext = "".join("<entry><key>%s</key><value>%s</value></entry>" % (k, repr(float(v)))
                      for k, v in pt.get("ExtendedStatistics", {}).items() if v is not None)
        out.append("<member><Timestamp>%s</Timestamp>%s%s<Unit>%s</Unit></member>" % (
            iso_time(pt["Timestamp"]), fields,
            "<ExtendedStatistics>%s</ExtendedStatistics>" % ext if ext else "", pt["Unit"]))
    body = ('%s<GetMetricStatisticsResponse xmlns="%s"><GetMetricStatisticsResult><Label>%s'
            '</Label><Datapoints>%s</Datapoints></GetMetricStatisticsResult><ResponseMetadata>'
            '<RequestId>%s</RequestId></ResponseMetadata></GetMetricStatisticsResponse>' % (
                XML_DECL, CW_NS, xml_escape(name), "".join(out), request_id))
    return Reply(200, body, "text/xml", request_id)


def query_error(namespace):
    """The error reply of a Query API in namespace (CloudWatch, IAM)."""
    def reply(err, request_id):
        kind = "Sender" if err.status < 500 else "Receiver"
        body = ('%s<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code>'
                '<Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>' % (
                    XML_DECL, namespace, kind, xml_escape(err.code), xml_escape(err.message),
                    request_id))
        return Reply(err.status, body, "text/xml", request_id)
    return reply


def iam_reply(action, request_id, result):
    """<ActionResponse> with <ActionResult> (unless result is None) and the
    request id, in IAM's namespace; lists as <member>s."""
    inner = "" if result is None else "<%sResult>%s</%sResult>" % (
        action, xml_children(result, "member"), action)
    body = ('%s<%sResponse xmlns="%s">%s<ResponseMetadata><RequestId>%s</RequestId>'
            '</ResponseMetadata></%sResponse>' % (XML_DECL, action, IAM_NS, inner, request_id,
                                                   action))
    return Reply(200, body, "text/xml", request_id)


def ssm_reply(obj, request_id):
    return Reply(200, json.dumps(obj), "application/x-amz-json-1.1", request_id)


def ssm_error(err, request_id):
    body = {"__type": err.code}
    if err.message:
        body["message"] = err.message
    return Reply(err.status, json.dumps(body), "application/x-amz-json-1.1", request_id,
                 {"x-amzn-ErrorType": err.code})


ERROR_REPLIES = {"ec2": ec2_error, "monitoring": query_error(CW_NS), "iam": query_error(IAM_NS),
                 "ssm": ssm_error, "unknown": ssm_error}


def classify(req):
    """(service, action, payload) of an API request: payload is Params for
    the Query API, the decoded JSON body for SSM, or an AwsError to answer."""
    target = req.header("x-amz-target")
    if target:
        prefix, _, op = target.partition(".")
        if prefix != "AmazonSSM":
            return "unknown", target, AwsError("UnknownOperationException",
                                               "The stand-in does not serve %s" % target)
        try:
            payload = json.loads(req.body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError as e:
            payload = AwsError("SerializationException", "Request body is not JSON: %s" % e)
        return "ssm", op, payload
    body = req.body
    if (req.header("content-encoding") or "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return "ec2", None, AwsError("MalformedInput", "Content-Encoding gzip, body is not")
    try:
        flat = urllib.parse.parse_qsl(req.query, keep_blank_values=True)
        flat += urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return "ec2", None, AwsError("MalformedQueryString", "The body is not UTF-8")
    params = Params(flat)
    action = params.get("Action")
    if params.get("Version") == CW_VERSION or action in CW_ACTIONS:
        return "monitoring", action, params
    if params.get("Version") == IAM_VERSION or action in IAM_PARAMS:
        return "iam", action, params
    return "ec2", action, params


# --------------------------------------------------------------------------
# Filters (EC2 Describe* calls)

def wildcard_regex(pattern):
    """EC2 filter values: * and ? are wildcards, backslash escapes them."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        elif c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.S)


def parse_filters(params, table):
    """[(name, [compiled value patterns])] of Filter.N, names checked against
    the resource's table (plus tag:KEY, tag-key, tag-value)."""
    filters = []
    for f in params.structs("Filter"):
        name = f.require("Name")
        if not (name.startswith("tag:") or name in ("tag-key", "tag-value") or name in table):
            raise invalid("The filter '%s' is invalid" % name)
        values = f.list("Value")
        if not values:
            raise invalid("The filter '%s' requires at least one value" % name)
        filters.append((name, [wildcard_regex(v) for v in values]))
    return filters


def filter_values(obj, name, table):
    if name.startswith("tag:"):
        value = obj.tags.get(name[4:])
        return [] if value is None else [value]
    if name == "tag-key":
        return list(obj.tags)
    if name == "tag-value":
        return list(obj.tags.values())
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in table[name](obj)
            if v is not None]


def apply_filters(objs, filters, table):
    def keep(obj):
        for name, patterns in filters:
            values = filter_values(obj, name, table)
            if not any(p.fullmatch(v) for p in patterns for v in values):
                return False
        return True
    return [o for o in objs if keep(o)]


def tag_set(tags):
    return [{"key": k, "value": v} for k, v in tags.items()]


def parse_tag_specs(params, allowed=("instance",)):
    """{resource type: {key: value}} from TagSpecification.N."""
    out = {}
    for spec in params.structs("TagSpecification"):
        rtype = spec.require("ResourceType")
        if rtype not in allowed + ("volume", "network-interface"):
            raise invalid("'%s' is not a valid taggable resource type for this operation." % rtype)
        tags = out.setdefault(rtype, {})
        for tag in spec.structs("Tag"):
            key = tag.require("Key")
            if key.startswith("aws:"):
                raise invalid("Tag keys starting with 'aws:' are reserved for internal use")
            tags[key] = tag.get("Value", "")
    return out


STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}


# --------------------------------------------------------------------------
# EC2

VPC_ID = "vpc-0a1b2c3d4e5f60001"
DEFAULT_SG_ID = "sg-0a1b2c3d4e5f60021"
SUBNETS = [("subnet-0a1b2c3d4e5f60011", "a", "172.31.0.0/20"),
           ("subnet-0a1b2c3d4e5f60012", "b", "172.31.16.0/20"),
           ("subnet-0a1b2c3d4e5f60013", "c", "172.31.32.0/20")]

FILTER_SPECS = ["Filter.N.Name", "Filter.N.Value.N"]
TAG_SPECS = ["TagSpecification.N.ResourceType", "TagSpecification.N.Tag.N.Key",
             "TagSpecification.N.Tag.N.Value"]
PERMISSION_SPECS = [
    "GroupId", "GroupName", "IpProtocol", "FromPort", "ToPort", "CidrIp",
    "SourceSecurityGroupName", "SourceSecurityGroupOwnerId",
    "IpPermissions.N.IpProtocol", "IpPermissions.N.FromPort", "IpPermissions.N.ToPort",
    "IpPermissions.N.IpRanges.N.CidrIp", "IpPermissions.N.IpRanges.N.Description",
    "IpPermissions.N.Ipv6Ranges.N.CidrIpv6", "IpPermissions.N.Ipv6Ranges.N.Description",
    "IpPermissions.N.Groups.N.GroupId", "IpPermissions.N.Groups.N.GroupName",
    "IpPermissions.N.Groups.N.UserId", "IpPermissions.N.Groups.N.Description"]
EC2_PARAMS = {
    "DescribeVpcs": ["VpcId.N", "MaxResults", "NextToken"] + FILTER_SPECS,
    "DescribeSubnets": ["SubnetId.N", "MaxResults", "NextToken"] + FILTER_SPECS,
    "DescribeSecurityGroups": ["GroupId.N", "GroupName.N", "MaxResults", "NextToken"] + FILTER_SPECS,
    "CreateSecurityGroup": ["GroupName", "GroupDescription", "VpcId"] + TAG_SPECS,
    "DeleteSecurityGroup": ["GroupId", "GroupName"],
    "AuthorizeSecurityGroupIngress": PERMISSION_SPECS + TAG_SPECS,
    "RevokeSecurityGroupIngress": PERMISSION_SPECS + ["SecurityGroupRuleId.N"],
    "DescribeKeyPairs": ["KeyName.N", "KeyPairId.N", "IncludePublicKey"] + FILTER_SPECS,
    "ImportKeyPair": ["KeyName", "PublicKeyMaterial"] + TAG_SPECS,
    "CreateKeyPair": ["KeyName", "KeyType", "KeyFormat"] + TAG_SPECS,
    "DeleteKeyPair": ["KeyName", "KeyPairId"],
    "RunInstances": [
        "ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "SubnetId",
        "SecurityGroupId.N", "SecurityGroup.N", "ClientToken", "UserData",
        "Placement.AvailabilityZone", "Placement.Tenancy", "Monitoring.Enabled",
        "InstanceInitiatedShutdownBehavior", "IamInstanceProfile.Name", "IamInstanceProfile.Arn",
        "BlockDeviceMapping.N.*", "MetadataOptions.*", "EbsOptimized", "DisableApiTermination",
        "CreditSpecification.CpuCredits", "PrivateIpAddress",
        "NetworkInterface.N.DeviceIndex", "NetworkInterface.N.SubnetId",
        "NetworkInterface.N.SecurityGroupId.N", "NetworkInterface.N.AssociatePublicIpAddress",
        "NetworkInterface.N.DeleteOnTermination"] + TAG_SPECS,
    "DescribeInstances": ["InstanceId.N", "MaxResults", "NextToken"] + FILTER_SPECS,
    "TerminateInstances": ["InstanceId.N"],
    "CreateTags": ["ResourceId.N", "Tag.N.Key", "Tag.N.Value"],
    "DeleteTags": ["ResourceId.N", "Tag.N.Key", "Tag.N.Value"],
}

VPC_FILTERS = {"vpc-id": lambda v: [v.id], "is-default": lambda v: [True],
               "state": lambda v: ["available"], "cidr-block": lambda v: [v.cidr],
               "owner-id": lambda v: [ACCOUNT_ID]}
SUBNET_FILTERS = {"subnet-id": lambda s: [s.id], "vpc-id": lambda s: [s.vpc_id],
                  "availability-zone": lambda s: [s.az], "default-for-az": lambda s: [True],
                  "state": lambda s: ["available"], "cidr-block": lambda s: [s.cidr],
                  "map-public-ip-on-launch": lambda s: [True]}
SG_FILTERS = {"group-id": lambda g: [g.id], "group-name": lambda g: [g.name],
              "vpc-id": lambda g: [g.vpc_id], "description": lambda g: [g.description],
              "owner-id": lambda g: [ACCOUNT_ID],
              "ip-permission.cidr": lambda g: [r.source for r in g.ingress if r.kind == "cidr"],
              "ip-permission.protocol": lambda g: [r.protocol for r in g.ingress],
              "ip-permission.from-port": lambda g: [r.from_port for r in g.ingress],
              "ip-permission.to-port": lambda g: [r.to_port for r in g.ingress]}
KEY_FILTERS = {"key-name": lambda k: [k.name], "key-pair-id": lambda k: [k.id],
               "fingerprint": lambda k: [k.fingerprint], "key-type": lambda k: [k.type]}
INSTANCE_FILTERS = {
    "instance-id": lambda i: [i.id], "instance-state-name": lambda i: [i.state],
    "instance-state-code": lambda i: [STATE_CODES[i.state]],
    "instance-type": lambda i: [i.instance_type], "image-id": lambda i: [i.image_id],
    "key-name": lambda i: [i.key_name], "subnet-id": lambda i: [i.subnet_id],
    "vpc-id": lambda i: [i.vpc_id], "availability-zone": lambda i: [i.az],
    "private-ip-address": lambda i: [_private_ip(i)], "ip-address": lambda i: [_public_ip(i)],
    "reservation-id": lambda i: [i.reservation_id], "client-token": lambda i: [i.client_token],
    "instance.group-id": lambda i: i.group_ids, "group-id": lambda i: i.group_ids,
    "owner-id": lambda i: [ACCOUNT_ID]}

IMAGE_RE = re.compile(r"ami-[0-9a-f]{8}(?:[0-9a-f]{9})?")
INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
PUBLIC_KEY_RE = re.compile(r"(ssh-ed25519|ssh-rsa) ([A-Za-z0-9+/]+={0,2})(?: .*)?")


def _private_ip(inst):
    return None if inst.state == "terminated" else inst.ip


def _public_ip(inst):
    return inst.ip if inst.state in ("running", "stopping", "shutting-down") else None


def new_id(prefix):
    return "%s-0%s" % (prefix, secrets.token_hex(8))


def iso_time(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def state_xml(state):
    return {"code": STATE_CODES[state], "name": state}


class Rule:
    """One security-group rule: protocol, ports and one source (a CIDR or a group)."""

    def __init__(self, protocol, from_port, to_port, kind, source, description=None):
        self.id = new_id("sgr")
        self.protocol, self.from_port, self.to_port = protocol, from_port, to_port
        self.kind, self.source, self.description = kind, source, description

    def key(self):
        return (self.protocol, self.from_port, self.to_port, self.kind, self.source)

    def describe(self):
        ports = "ALL" if self.protocol == "-1" else "from port: %s, to port: %s" % (
            self.from_port, self.to_port)
        proto = {"-1": "ALL"}.get(self.protocol, self.protocol.upper())
        return "peer: %s, %s, %s, ALLOW" % (self.source, proto, ports)

    def to_json(self):
        return {"rule_id": self.id, "protocol": self.protocol, "from_port": self.from_port,
                "to_port": self.to_port, self.kind: self.source, "description": self.description}


PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
             "-1": "-1", "all": "-1"}


def permissions_xml(rules):
    """ipPermissions items: rules grouped by protocol and ports, as EC2 shows them."""
    groups = {}
    for r in rules:
        g = groups.setdefault((r.protocol, r.from_port, r.to_port), {
            "ipProtocol": r.protocol, "fromPort": r.from_port, "toPort": r.to_port,
            "groups": [], "ipRanges": [], "ipv6Ranges": [], "prefixListIds": []})
        if r.kind == "cidr":
            g["ipRanges"].append({"cidrIp": r.source, "description": r.description})
        elif r.kind == "cidr6":
            g["ipv6Ranges"].append({"cidrIpv6": r.source, "description": r.description})
        else:
            g["groups"].append({"userId": ACCOUNT_ID, "groupId": r.source,
                                "description": r.description})
    return list(groups.values())


def fingerprint_of(public_line):
    """EC2-style fingerprint: base64 SHA-256 for ed25519, hex MD5 for RSA."""
    kind, blob_b64 = public_line.split()[:2]
    blob = base64.b64decode(blob_b64)
    if kind == "ssh-ed25519":
        return base64.b64encode(hashlib.sha256(blob).digest()).decode()
    return ":".join("%02x" % b for b in hashlib.md5(blob).digest())


def generate_key(key_type, comment):
    """(private key text, public key line) from ssh-keygen."""
    argv = ["ssh-keygen", "-q", "-N", "", "-C", comment]
    argv += ["-t", "ed25519"] if key_type == "ed25519" else ["-t", "rsa", "-b", "2048", "-m", "PEM"]
    with tempfile.TemporaryDirectory(prefix="standin-key-") as d:
        path = os.path.join(d, "key")
        try:
            subprocess.run(argv + ["-f", path], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise AwsError("InternalError", "the stand-in could not run ssh-keygen: %s" % e, 500)
        with open(path) as f:
            private = f.read()
        with open(path + ".pub") as f:
            public = f.read().strip()
    return private, public


class Ec2Model:
    """EC2's state: one default VPC with a default subnet per zone and its
    `default` security group, plus what the API creates: security groups and
    their rules, key pairs, and instances in reservations. Every instance
    gets the next loopback address (from config ip_start) as both its
    private and its public IP. Handlers are do_<Action>(params, dry_run) and
    return the reply's fields; the caller holds the lock."""

    def __init__(self, region, config, iam):
        self.region = region
        self.config = config
        self.iam = iam               # RunInstances' IamInstanceProfile
        self.vpcs = {VPC_ID: types.SimpleNamespace(id=VPC_ID, cidr="172.31.0.0/16", tags={})}
        self.subnets = {}
        for sid, zone, cidr in SUBNETS:
            self.subnets[sid] = types.SimpleNamespace(id=sid, vpc_id=VPC_ID, az=region + zone,
                                                      cidr=cidr, tags={})
        self.groups = {}
        default = self._add_group("default", "default VPC security group", VPC_ID, DEFAULT_SG_ID)
        default.ingress.append(Rule("-1", None, None, "group", DEFAULT_SG_ID))
        self.key_pairs = {}
        self.instances = {}          # id -> namespace, in creation order
        self.reservations = {}       # id -> [instance ids]
        self.client_tokens = {}      # token -> (fingerprint, reservation id)
        self.next_ip = int(ipaddress.IPv4Address(config["ip_start"]))

    # -- helpers ----------------------------------------------------------

    @staticmethod
    def commit(dry_run):
        """Called where a request has passed every check and would act."""
        if dry_run:
            raise AwsError("DryRunOperation",
                           "Request would have succeeded, but DryRun flag is set.", 412)

    def _add_group(self, name, description, vpc_id, group_id=None, tags=None):
        g = types.SimpleNamespace(id=group_id or new_id("sg"), name=name, description=description,
                                  vpc_id=vpc_id, tags=dict(tags or {}), ingress=[],
                                  egress=[Rule("-1", None, None, "cidr", "0.0.0.0/0")])
        self.groups[g.id] = g
        return g

    def _group(self, group_id=None, name=None):
        if group_id:
            if not group_id.startswith("sg-"):
                raise AwsError("InvalidGroupId.Malformed", "Invalid id: \"%s\"" % group_id)
            if group_id not in self.groups:
                raise AwsError("InvalidGroup.NotFound",
                               "The security group '%s' does not exist" % group_id)
            return self.groups[group_id]
        if name:
            for g in self.groups.values():
                if g.name == name and g.vpc_id == VPC_ID:
                    return g
            raise AwsError("InvalidGroup.NotFound", "The security group '%s' does not exist in "
                           "default VPC '%s'" % (name, VPC_ID))
        raise missing("GroupId")

    def _key_pair(self, name):
        if name not in self.key_pairs:
            raise AwsError("InvalidKeyPair.NotFound", "The key pair '%s' does not exist" % name)
        return self.key_pairs[name]

    def _allocate_ip(self):
        while True:
            addr = ipaddress.IPv4Address(self.next_ip)
            self.next_ip += 1
            if str(addr).split(".")[-1] not in ("0", "255"):
                return str(addr)

    def _listed(self, now):
        ttl = self.config["terminated_ttl_s"]
        return [i for i in self.instances.values()
                if i.state != "terminated" or now - i.state_since <= ttl]

    def _instance(self, instance_id, now):
        if not INSTANCE_ID_RE.fullmatch(instance_id):
            raise AwsError("InvalidInstanceID.Malformed", "Invalid id: \"%s\"" % instance_id)
        inst = self.instances.get(instance_id)
        if inst is None or inst not in self._listed(now):
            raise AwsError("InvalidInstanceID.NotFound",
                           "The instance ID '%s' does not exist" % instance_id)
        return inst

    def _instances(self, ids, now):
        bad = [i for i in ids if i not in self.instances and INSTANCE_ID_RE.fullmatch(i)]
        if len(bad) > 1:
            raise AwsError("InvalidInstanceID.NotFound",
                           "The instance IDs '%s' do not exist" % ", ".join(bad))
        return [self._instance(i, now) for i in ids]

    def set_state(self, inst, state, now=None):
        inst.state = state
        inst.state_since = time.time() if now is None else now
        inst.seen = 0

    def advance(self, inst, now, described):
        """pending -> running and shutting-down -> terminated, after
        config's number of DescribeInstances calls or seconds."""
        steps = {"pending": ("running", "pending_describes", "pending_seconds"),
                 "shutting-down": ("terminated", "shutdown_describes", "shutdown_seconds")}
        if inst.state not in steps:
            return
        nxt, describes, seconds = steps[inst.state]
        if described:
            inst.seen += 1
        limit_s = self.config[seconds]
        if inst.seen > self.config[describes] or (limit_s is not None and
                                                  now - inst.state_since >= limit_s):
            self.set_state(inst, nxt, now)

    def _install_key(self, key_name):
        """What EC2 does on the instance: its key pair's public key goes to
        authorized_keys (here: config authorized_keys_file, for the sshd)."""
        path = self.config["authorized_keys_file"]
        if not path or not key_name or key_name not in self.key_pairs:
            return
        line = self.key_pairs[key_name].public_key
        try:
            with open(path) as f:
                present = line in f.read().splitlines()
        except FileNotFoundError:
            present = False
        if not present:
            with open(path, "a") as f:
                f.write(line + "\n")

    # -- VPCs and subnets -------------------------------------------------

    def do_DescribeVpcs(self, p, dry_run):
        ids = p.list("VpcId")
        for vid in ids:
            if vid not in self.vpcs:
                raise AwsError("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist" % vid)
        filters = parse_filters(p, VPC_FILTERS)
        self.commit(dry_run)
        vpcs = apply_filters([self.vpcs[i] for i in ids] if ids else list(self.vpcs.values()),
                             filters, VPC_FILTERS)
        return {"vpcSet": [{
            "vpcId": v.id, "ownerId": ACCOUNT_ID, "state": "available", "cidrBlock": v.cidr,
            "cidrBlockAssociationSet": [{"cidrBlock": v.cidr, "associationId": "vpc-cidr-assoc-0a1b",
                                         "cidrBlockState": {"state": "associated"}}],
            "dhcpOptionsId": "dopt-0a1b2c3d", "tagSet": tag_set(v.tags),
            "instanceTenancy": "default", "isDefault": True} for v in vpcs]}

    def do_DescribeSubnets(self, p, dry_run):
        ids = p.list("SubnetId")
        for sid in ids:
            if sid not in self.subnets:
                raise AwsError("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist" % sid)
        filters = parse_filters(p, SUBNET_FILTERS)
        self.commit(dry_run)
        subnets = apply_filters([self.subnets[i] for i in ids] if ids else
                                list(self.subnets.values()), filters, SUBNET_FILTERS)
        return {"subnetSet": [{
            "subnetId": s.id, "subnetArn": "arn:aws:ec2:%s:%s:subnet/%s" % (
                self.region, ACCOUNT_ID, s.id),
            "state": "available", "ownerId": ACCOUNT_ID, "vpcId": s.vpc_id, "cidrBlock": s.cidr,
            "availableIpAddressCount": 4091, "availabilityZone": s.az,
            "availabilityZoneId": "use1-az%d" % (ord(s.az[-1]) - ord("a") + 1),
            "defaultForAz": True, "mapPublicIpOnLaunch": True, "assignIpv6AddressOnCreation": False,
            "tagSet": tag_set(s.tags)} for s in subnets]}

    # -- security groups ---------------------------------------------------

    def _group_xml(self, g):
        return {"ownerId": ACCOUNT_ID, "groupId": g.id, "groupName": g.name,
                "groupDescription": g.description, "vpcId": g.vpc_id,
                "ipPermissions": permissions_xml(g.ingress),
                "ipPermissionsEgress": permissions_xml(g.egress), "tagSet": tag_set(g.tags)}

    def do_DescribeSecurityGroups(self, p, dry_run):
        chosen = [self._group(group_id=i) for i in p.list("GroupId")]
        chosen += [self._group(name=n) for n in p.list("GroupName")]
        filters = parse_filters(p, SG_FILTERS)
        self.commit(dry_run)
        groups = apply_filters(chosen or list(self.groups.values()), filters, SG_FILTERS)
        return {"securityGroupInfo": [self._group_xml(g) for g in groups]}

    def do_CreateSecurityGroup(self, p, dry_run):
        name = p.require("GroupName")
        description = p.require("GroupDescription")
        vpc_id = p.get("VpcId", VPC_ID)
        if vpc_id not in self.vpcs:
            raise AwsError("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist" % vpc_id)
        if name.startswith("sg-") or len(name) > 255:
            raise invalid("Invalid security group name '%s'" % name)
        if any(g.name == name and g.vpc_id == vpc_id for g in self.groups.values()):
            raise AwsError("InvalidGroup.Duplicate", "The security group '%s' already exists for "
                           "VPC '%s'" % (name, vpc_id))
        tags = parse_tag_specs(p, ("security-group",)).get("security-group", {})
        self.commit(dry_run)
        g = self._add_group(name, description, vpc_id, tags=tags)
        return {"return": True, "groupId": g.id, "tagSet": tag_set(g.tags) if g.tags else None}

    def do_DeleteSecurityGroup(self, p, dry_run):
        g = self._group(group_id=p.get("GroupId"), name=p.get("GroupName"))
        if g.name == "default":
            raise AwsError("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot "
                           "be deleted by a user" % g.id)
        for inst in self.instances.values():
            if g.id in inst.group_ids and inst.state != "terminated":
                raise AwsError("DependencyViolation", "resource %s has a dependent object" % g.id)
        self.commit(dry_run)
        del self.groups[g.id]
        return {"return": True, "groupId": g.id}

    def _parse_ports(self, proto, perm):
        if proto == "-1":
            return None, None
        lo, hi = (-1, 255) if proto == "icmp" else (0, 65535)
        from_port = perm.int("FromPort", lo=lo, hi=hi)
        to_port = perm.int("ToPort", lo=lo, hi=hi)
        if from_port is None or to_port is None:
            raise invalid("Invalid value 'Must specify both from and to ports with TCP/UDP.' "
                          "for portRange")
        if proto != "icmp" and from_port > to_port:
            raise invalid("Invalid TCP/UDP port range (%d, %d)" % (from_port, to_port))
        return from_port, to_port

    def _parse_sources(self, perm, legacy):
        sources = []
        if legacy:
            if perm.get("CidrIp"):
                sources.append(("cidr", perm.get("CidrIp"), None))
            if perm.get("SourceSecurityGroupName"):
                sources.append(("group", self._group(name=perm.get("SourceSecurityGroupName")).id,
                                None))
            return sources
        for r in perm.structs("IpRanges"):
            sources.append(("cidr", r.require("CidrIp"), r.get("Description")))
        for r in perm.structs("Ipv6Ranges"):
            sources.append(("cidr6", r.require("CidrIpv6"), r.get("Description")))
        for r in perm.structs("Groups"):
            g = self._group(group_id=r.get("GroupId"), name=r.get("GroupName"))
            sources.append(("group", g.id, r.get("Description")))
        return sources

    @staticmethod
    def _check_cidr(kind, cidr):
        if kind == "group":
            return
        try:
            if "/" not in cidr:
                raise ValueError
            (ipaddress.IPv4Network if kind == "cidr" else ipaddress.IPv6Network)(cidr)
        except ValueError:
            raise invalid("CIDR block %s is malformed" % cidr)

    def _parse_rules(self, p):
        """The Rules an Authorize/Revoke request names (IpPermissions.N or
        the legacy flat IpProtocol/FromPort/ToPort/CidrIp)."""
        perms = [(perm, False) for perm in p.structs("IpPermissions")]
        if not perms and (p.get("IpProtocol") or p.get("CidrIp")):
            perms = [(p, True)]
        if not perms:
            raise missing("IpPermissions")
        rules = []
        for perm, legacy in perms:
            raw = perm.require("IpProtocol")
            proto = PROTOCOLS.get(raw.lower())
            if proto is None:
                raise invalid("Invalid value '%s' for IP protocol. Unknown protocol." % raw)
            from_port, to_port = self._parse_ports(proto, perm)
            sources = self._parse_sources(perm, legacy)
            if not sources:
                raise missing("IpPermissions.IpRanges")
            for kind, source, description in sources:
                self._check_cidr(kind, source)
                rules.append(Rule(proto, from_port, to_port, kind, source, description))
        return rules

    def do_AuthorizeSecurityGroupIngress(self, p, dry_run):
        g = self._group(group_id=p.get("GroupId"), name=p.get("GroupName"))
        rules = self._parse_rules(p)
        existing = {r.key() for r in g.ingress}
        seen = set()
        for r in rules:
            if r.key() in existing or r.key() in seen:
                raise AwsError("InvalidPermission.Duplicate",
                               "the specified rule \"%s\" already exists" % r.describe())
            seen.add(r.key())
        self.commit(dry_run)
        g.ingress.extend(rules)
        return {"return": True, "securityGroupRuleSet": [{
            "securityGroupRuleId": r.id, "groupId": g.id, "groupOwnerId": ACCOUNT_ID,
            "isEgress": False, "ipProtocol": r.protocol,
            "fromPort": -1 if r.from_port is None else r.from_port,
            "toPort": -1 if r.to_port is None else r.to_port,
            "cidrIpv4": r.source if r.kind == "cidr" else None,
            "cidrIpv6": r.source if r.kind == "cidr6" else None,
            "referencedGroupInfo": {"groupId": r.source, "userId": ACCOUNT_ID}
            if r.kind == "group" else None,
            "description": r.description} for r in rules]}

    def do_RevokeSecurityGroupIngress(self, p, dry_run):
        g = self._group(group_id=p.get("GroupId"), name=p.get("GroupName"))
        rule_ids = p.list("SecurityGroupRuleId")
        if rule_ids:
            by_id = {r.id: r for r in g.ingress}
            for rid in rule_ids:
                if rid not in by_id:
                    raise AwsError("InvalidSecurityGroupRuleId.NotFound",
                                   "The security group rule ID '%s' does not exist" % rid)
            doomed = {by_id[rid].key() for rid in rule_ids}
        else:
            doomed = set()
            existing = {r.key() for r in g.ingress}
            for r in self._parse_rules(p):
                if r.key() not in existing:
                    raise AwsError("InvalidPermission.NotFound",
                                   "The specified rule does not exist in this security group.")
                doomed.add(r.key())
        self.commit(dry_run)
        g.ingress = [r for r in g.ingress if r.key() not in doomed]
        return {"return": True}

    # -- key pairs ---------------------------------------------------------

    def _add_key_pair(self, name, key_type, public_line, origin, tags):
        k = types.SimpleNamespace(name=name, id=new_id("key"), type=key_type,
                                  fingerprint=fingerprint_of(public_line), public_key=public_line,
                                  origin=origin, created=time.time(), tags=dict(tags))
        self.key_pairs[name] = k
        return k

    def _check_new_key_name(self, name):
        if len(name) > 255 or not name.isprintable():
            raise invalid("Invalid key name '%s'" % name)
        if name in self.key_pairs:
            raise AwsError("InvalidKeyPair.Duplicate", "The keypair '%s' already exists." % name)

    def do_DescribeKeyPairs(self, p, dry_run):
        chosen = [self._key_pair(n) for n in p.list("KeyName")]
        for kid in p.list("KeyPairId"):
            match = [k for k in self.key_pairs.values() if k.id == kid]
            if not match:
                raise AwsError("InvalidKeyPair.NotFound", "The key pair '%s' does not exist" % kid)
            chosen += match
        filters = parse_filters(p, KEY_FILTERS)
        with_public = p.bool("IncludePublicKey")
        self.commit(dry_run)
        keys = apply_filters(chosen or list(self.key_pairs.values()), filters, KEY_FILTERS)
        return {"keySet": [{
            "keyPairId": k.id, "keyType": k.type, "tagSet": tag_set(k.tags), "keyName": k.name,
            "keyFingerprint": k.fingerprint, "createTime": iso_time(k.created),
            "publicKey": k.public_key if with_public else None} for k in keys]}

    def do_ImportKeyPair(self, p, dry_run):
        name = p.require("KeyName")
        material = p.require("PublicKeyMaterial")
        self._check_new_key_name(name)
        try:
            line = base64.b64decode(material, validate=True).decode("ascii").strip()
        except (ValueError, UnicodeDecodeError):
            line = ""
        m = PUBLIC_KEY_RE.fullmatch(line)
        if not m:
            raise AwsError("InvalidKey.Format", "Key is not in valid OpenSSH public key format "
                           "(PublicKeyMaterial must be the base64 of the public key line)")
        tags = parse_tag_specs(p, ("key-pair",)).get("key-pair", {})
        self.commit(dry_run)
        k = self._add_key_pair(name, "ed25519" if m.group(1) == "ssh-ed25519" else "rsa",
                               "%s %s %s" % (m.group(1), m.group(2), name), "import", tags)
        return {"keyFingerprint": k.fingerprint, "keyName": k.name, "keyPairId": k.id,
                "tagSet": tag_set(k.tags) if k.tags else None}

    def do_CreateKeyPair(self, p, dry_run):
        name = p.require("KeyName")
        key_type = p.get("KeyType", "rsa")
        if key_type not in ("rsa", "ed25519"):
            raise invalid("Invalid value '%s' for KeyType" % key_type)
        if p.get("KeyFormat", "pem") != "pem":
            raise AwsError("UnsupportedOperation", "The stand-in makes pem (OpenSSH) keys only")
        self._check_new_key_name(name)
        tags = parse_tag_specs(p, ("key-pair",)).get("key-pair", {})
        self.commit(dry_run)
        private, public = generate_key(key_type, name)
        k = self._add_key_pair(name, key_type, public, "create", tags)
        return {"keyName": k.name, "keyFingerprint": k.fingerprint, "keyMaterial": private,
                "keyPairId": k.id, "tagSet": tag_set(k.tags) if k.tags else None}

    def do_DeleteKeyPair(self, p, dry_run):
        name, kid = p.get("KeyName"), p.get("KeyPairId")
        if not name and not kid:
            raise missing("KeyName")
        self.commit(dry_run)
        doomed = [k for k in self.key_pairs.values() if k.name == name or k.id == kid]
        for k in doomed:           # a missing key pair is no error, as on EC2
            del self.key_pairs[k.name]
        return {"return": True, "keyPairId": doomed[0].id if doomed else None}

    # -- instances ---------------------------------------------------------

    def _instance_xml(self, i):
        private_ip, public_ip = _private_ip(i), _public_ip(i)
        groups = [{"groupId": g, "groupName": self.groups[g].name if g in self.groups else ""}
                  for g in i.group_ids]
        terminated = i.state == "terminated"
        return {
            "instanceId": i.id, "imageId": i.image_id, "instanceState": state_xml(i.state),
            "privateDnsName": "" if terminated else "ip-%s.ec2.internal" % i.ip.replace(".", "-"),
            "dnsName": "",
            "reason": "User initiated (%s)" % iso_time(i.state_since)
            if i.state in ("shutting-down", "terminated") else "",
            "keyName": i.key_name, "amiLaunchIndex": i.launch_index, "productCodes": [],
            "instanceType": i.instance_type, "launchTime": iso_time(i.launch_time),
            "placement": {"availabilityZone": i.az, "groupName": "", "tenancy": "default"},
            "monitoring": {"state": "disabled"}, "subnetId": i.subnet_id, "vpcId": i.vpc_id,
            "privateIpAddress": private_ip, "ipAddress": public_ip, "sourceDestCheck": True,
            "groupSet": groups,
            "stateReason": {"code": "Client.UserInitiatedShutdown",
                            "message": "Client.UserInitiatedShutdown: User initiated shutdown"}
            if i.state in ("shutting-down", "terminated") else None,
            "architecture": "x86_64", "rootDeviceType": "ebs", "rootDeviceName": "/dev/xvda",
            "blockDeviceMapping": [], "virtualizationType": "hvm",
            "clientToken": i.client_token or "", "tagSet": tag_set(i.tags),
            "hypervisor": "xen", "networkInterfaceSet": [] if terminated else [{
                "networkInterfaceId": "eni-" + i.id[2:], "subnetId": i.subnet_id,
                "vpcId": i.vpc_id, "ownerId": ACCOUNT_ID, "status": "in-use",
                "privateIpAddress": private_ip,
                "association": {"publicIp": public_ip, "publicDnsName": "",
                                "ipOwnerId": "amazon"} if public_ip else None}],
            "iamInstanceProfile": i.iam_profile, "ebsOptimized": False, "enaSupport": True}

    def instance_json(self, i):
        return {"instance_id": i.id, "reservation_id": i.reservation_id, "state": i.state,
                "ip": i.ip, "private_ip": _private_ip(i), "public_ip": _public_ip(i),
                "instance_type": i.instance_type, "image_id": i.image_id, "key_name": i.key_name,
                "subnet_id": i.subnet_id, "availability_zone": i.az,
                "security_group_ids": list(i.group_ids), "tags": dict(i.tags),
                "client_token": i.client_token, "launch_time": iso_time(i.launch_time),
                "iam_instance_profile": i.iam_profile["arn"] if i.iam_profile else None}

    def _reservation_xml(self, rid, insts):
        return {"reservationId": rid, "ownerId": ACCOUNT_ID, "groupSet": [],
                "instancesSet": [self._instance_xml(i) for i in insts]}

    def _network(self, p):
        """(subnet, group ids) of RunInstances, top level or NetworkInterface.1."""
        nics = p.structs("NetworkInterface")
        subnet_id, group_ids = p.get("SubnetId"), p.list("SecurityGroupId")
        if nics:
            if subnet_id or group_ids:
                raise AwsError("InvalidParameterCombination", "Network interfaces and an "
                               "instance-level subnet ID or security groups may not be "
                               "specified on the same request")
            subnet_id, group_ids = nics[0].get("SubnetId"), nics[0].list("SecurityGroupId")
        if subnet_id and subnet_id not in self.subnets:
            raise AwsError("InvalidSubnetID.NotFound",
                           "The subnet ID '%s' does not exist" % subnet_id)
        subnet = self.subnets[subnet_id] if subnet_id else next(iter(self.subnets.values()))
        groups = [self._group(group_id=g).id for g in group_ids]
        groups += [self._group(name=n).id for n in p.list("SecurityGroup")]
        return subnet, groups or [DEFAULT_SG_ID]

    def add_instance(self, rid, image_id, instance_type, key_name, subnet, group_ids, tags,
                     state="pending", ip=None, client_token=None, index=0, now=None,
                     iam_profile=None):
        now = time.time() if now is None else now
        inst = types.SimpleNamespace(
            id=new_id("i"), reservation_id=rid, image_id=image_id, instance_type=instance_type,
            key_name=key_name, subnet_id=subnet.id, vpc_id=subnet.vpc_id, az=subnet.az,
            group_ids=list(group_ids), tags=dict(tags), ip=ip or self._allocate_ip(),
            launch_time=now, client_token=client_token, launch_index=index,
            state=state, state_since=now, seen=0, iam_profile=iam_profile)
        self.instances[inst.id] = inst
        self.reservations.setdefault(rid, []).append(inst.id)
        self._install_key(key_name)
        return inst

    def _active_count(self):
        return sum(1 for i in self.instances.values() if i.state in ("pending", "running"))

    def _run_arguments(self, p):
        image_id = p.require("ImageId")
        if not IMAGE_RE.fullmatch(image_id):
            raise AwsError("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting "
                           "\"ami-...\")" % image_id)
        instance_type = p.get("InstanceType", "m1.small")
        if not INSTANCE_TYPE_RE.fullmatch(instance_type):
            raise invalid("Invalid value '%s' for InstanceType." % instance_type)
        min_count = p.int("MinCount", lo=1)
        max_count = p.int("MaxCount", lo=1)
        if min_count is None:
            raise missing("MinCount")
        if max_count is None:
            raise missing("MaxCount")
        if min_count > max_count:
            raise invalid("MinCount (%d) must be less than or equal to MaxCount (%d)"
                          % (min_count, max_count))
        key_name = p.get("KeyName")
        if key_name:
            self._key_pair(key_name)
        subnet, groups = self._network(p)
        iam_profile = self._iam_profile(p)
        tags = parse_tag_specs(p).get("instance", {})
        user_data = p.get("UserData")
        if user_data:
            try:
                base64.b64decode(user_data, validate=True)
            except ValueError:
                raise invalid("Invalid BASE64 encoding of user data.")
        room = self.config["instance_limit"] - self._active_count()
        if room < min_count:
            raise AwsError("InstanceLimitExceeded", "You have requested more instances (%d) than "
                           "your current instance limit of %d allows for the specified instance "
                           "type." % (min_count, self.config["instance_limit"]))
        return dict(image_id=image_id, instance_type=instance_type, key_name=key_name,
                    subnet=subnet, group_ids=groups, tags=tags,
                    iam_profile=iam_profile), min(max_count, room)

    def _iam_profile(self, p):
        """{"arn", "id"} of RunInstances' IamInstanceProfile.Name or .Arn, or
        None. A profile that has not propagated yet is as unknown as a
        missing one, as on EC2 (config profile_propagation_runs)."""
        name, arn = p.get("IamInstanceProfile.Name"), p.get("IamInstanceProfile.Arn")
        if name and arn:
            raise AwsError("InvalidParameterCombination", "The parameter 'iamInstanceProfile.name' "
                           "may not be used in combination with 'iamInstanceProfile.arn'")
        if not name and not arn:
            return None
        found = [ip for ip in self.iam.profiles.values() if ip.name == name or ip.arn == arn]
        if found and found[0].unseen_runs > 0:
            found[0].unseen_runs -= 1
            found = []
        if not found:
            raise invalid("Value (%s) for parameter iamInstanceProfile.%s is invalid. Invalid IAM "
                          "Instance Profile %s" % (name or arn, "name" if name else "arn",
                                                   "name" if name else "ARN"))
        return {"arn": found[0].arn, "id": found[0].id}

    def do_RunInstances(self, p, dry_run):
        token = p.get("ClientToken")
        if token is not None and not 0 < len(token) <= 64:
            raise invalid("Value (%s) for parameter clientToken is invalid" % token)
        fingerprint = json.dumps(sorted((k, v) for k, v in p.flat.items()
                                        if k not in ("ClientToken", "DryRun")))
        if token in self.client_tokens:
            known, rid = self.client_tokens[token]
            if known != fingerprint:
                raise AwsError("IdempotentParameterMismatch", "Arguments on this idempotent "
                               "request are inconsistent with arguments used in previous "
                               "request(s).")
            self.commit(dry_run)
            return self._reservation_xml(rid, [self.instances[i] for i in self.reservations[rid]])
        args, count = self._run_arguments(p)
        self.commit(dry_run)
        rid = new_id("r")
        insts = [self.add_instance(rid, client_token=token, index=n, **args) for n in range(count)]
        if token is not None:
            self.client_tokens[token] = (fingerprint, rid)
        return self._reservation_xml(rid, insts)

    def do_DescribeInstances(self, p, dry_run):
        now = time.time()
        ids = p.list("InstanceId")
        max_results = p.int("MaxResults")
        if ids and max_results is not None:
            raise AwsError("InvalidParameterCombination", "The parameter instancesSet cannot be "
                           "used with the parameter maxResults")
        if max_results is not None and not 5 <= max_results <= 1000:
            raise invalid("Value ( %d ) for parameter maxResults is invalid. Expecting a value "
                          "between 5 and 1000." % max_results)
        chosen = self._instances(ids, now)
        filters = parse_filters(p, INSTANCE_FILTERS)
        self.commit(dry_run)
        for inst in self.instances.values():
            self.advance(inst, now, described=True)
        insts = apply_filters(chosen or self._listed(now), filters, INSTANCE_FILTERS)
        token = p.get("NextToken") or "0"
        if not token.isdigit():
            raise invalid("Invalid value '%s' for NextToken" % token)
        start = int(token)
        next_token = None
        if max_results is not None:
            if start + max_results < len(insts):
                next_token = str(start + max_results)
            insts = insts[start:start + max_results]
        by_rid = {}
        for i in insts:
            by_rid.setdefault(i.reservation_id, []).append(i)
        return {"reservationSet": [self._reservation_xml(rid, group)
                                   for rid, group in by_rid.items()],
                "nextToken": next_token}

    def terminate(self, inst, now=None):
        """shutting-down (then terminated, see advance); its previous state."""
        previous = inst.state
        if previous not in ("shutting-down", "terminated"):
            self.set_state(inst, "shutting-down", now)
        return previous

    def do_TerminateInstances(self, p, dry_run):
        now = time.time()
        ids = p.list("InstanceId")
        if not ids:
            raise missing("InstanceId")
        insts = self._instances(ids, now)
        self.commit(dry_run)
        items = []
        for inst in insts:
            previous = self.terminate(inst, now)
            items.append({"instanceId": inst.id, "currentState": state_xml(inst.state),
                          "previousState": state_xml(previous)})
        return {"instancesSet": items}

    # -- tags --------------------------------------------------------------

    def _taggable(self, resource_id):
        pools = [self.instances, self.groups, self.vpcs, self.subnets,
                 {k.id: k for k in self.key_pairs.values()}]
        for pool in pools:
            if resource_id in pool:
                return pool[resource_id]
        raise AwsError("InvalidID", "The ID '%s' is not valid" % resource_id)

    def _tag_request(self, p):
        ids = p.list("ResourceId")
        if not ids:
            raise missing("ResourceId")
        return [self._taggable(r) for r in ids], [(t.require("Key"), t.get("Value"))
                                                  for t in p.structs("Tag")]

    def do_CreateTags(self, p, dry_run):
        resources, tags = self._tag_request(p)
        if not tags:
            raise missing("Tag")
        self.commit(dry_run)
        for r in resources:
            for key, value in tags:
                r.tags[key] = value or ""
        return {"return": True}

    def do_DeleteTags(self, p, dry_run):
        resources, tags = self._tag_request(p)
        self.commit(dry_run)
        for r in resources:
            for key, value in tags or [(k, None) for k in list(r.tags)]:
                if key in r.tags and (value is None or r.tags[key] == value):
                    del r.tags[key]
        return {"return": True}

    def to_json(self):
        return {
            "vpcs": [{"vpc_id": v.id, "cidr": v.cidr, "is_default": True}
                     for v in self.vpcs.values()],
            "subnets": [{"subnet_id": s.id, "availability_zone": s.az, "cidr": s.cidr,
                         "default_for_az": True} for s in self.subnets.values()],
            "security_groups": [{"group_id": g.id, "group_name": g.name,
                                 "description": g.description, "vpc_id": g.vpc_id,
                                 "tags": dict(g.tags),
                                 "ingress": [r.to_json() for r in g.ingress]}
                                for g in self.groups.values()],
            "key_pairs": [{"key_name": k.name, "key_pair_id": k.id, "key_type": k.type,
                           "fingerprint": k.fingerprint, "public_key": k.public_key,
                           "origin": k.origin, "tags": dict(k.tags)}
                          for k in self.key_pairs.values()],
            "instances": [self.instance_json(i) for i in self.instances.values()],
        }


# --------------------------------------------------------------------------
# IAM

IAM_TAG_SPECS = ["Tags.member.N.Key", "Tags.member.N.Value"]
IAM_PARAMS = {
    "CreateRole": ["RoleName", "AssumeRolePolicyDocument", "Path", "Description",
                   "MaxSessionDuration", "PermissionsBoundary"] + IAM_TAG_SPECS,
    "GetRole": ["RoleName"],
    "DeleteRole": ["RoleName"],
    "PutRolePolicy": ["RoleName", "PolicyName", "PolicyDocument"],
    "GetRolePolicy": ["RoleName", "PolicyName"],
    "DeleteRolePolicy": ["RoleName", "PolicyName"],
    "CreateInstanceProfile": ["InstanceProfileName", "Path"] + IAM_TAG_SPECS,
    "GetInstanceProfile": ["InstanceProfileName"],
    "DeleteInstanceProfile": ["InstanceProfileName"],
    "AddRoleToInstanceProfile": ["InstanceProfileName", "RoleName"],
    "RemoveRoleFromInstanceProfile": ["InstanceProfileName", "RoleName"],
}
IAM_NAME_RE = re.compile(r"[\w+=,.@-]+")
IAM_PATH_RE = re.compile(r"/|/[\x21-\x7e]+/")


def no_such_entity(message):
    return AwsError("NoSuchEntity", message, 404)


def iam_id(prefix):
    return prefix + secrets.token_hex(8).upper()


class IamModel:
    """IAM's state: roles (assume-role policy, inline policies, tags) and
    instance profiles (at most one role each, as on AWS), checked as IAM
    checks them. Handlers are do_<Action>(params) and return the fields of
    the <ActionResult>, or None for actions that answer none."""

    def __init__(self, config):
        self.config = config
        self.roles = {}      # name -> namespace
        self.profiles = {}   # name -> namespace

    # -- helpers ----------------------------------------------------------

    @staticmethod
    def _name(p, key, limit):
        value = p.get(key)
        if not value:
            raise AwsError("ValidationError", "1 validation error detected: Value null at '%s' "
                           "failed to satisfy constraint: Member must not be null"
                           % (key[0].lower() + key[1:]))
        if len(value) > limit or not IAM_NAME_RE.fullmatch(value):
            raise AwsError("ValidationError", "1 validation error detected: Value '%s' at '%s' "
                           "failed to satisfy constraint: Member must have length less than or "
                           "equal to %d and satisfy regular expression pattern: [\\w+=,.@-]+"
                           % (value, key[0].lower() + key[1:], limit))
        return value

    @staticmethod
    def _path(p):
        path = p.get("Path", "/")
        if len(path) > 512 or not IAM_PATH_RE.fullmatch(path):
            raise AwsError("ValidationError", "The specified value for path is invalid. It must "
                           "begin and end with / and contain only alphanumeric characters and/or "
                           "/ characters.")
        return path

    @staticmethod
    def _policy(p, key):
        """The policy document of parameter key, which must be a JSON policy."""
        text = p.get(key)
        if not text:
            raise AwsError("ValidationError", "1 validation error detected: Value null at '%s' "
                           "failed to satisfy constraint: Member must not be null"
                           % (key[0].lower() + key[1:]))
        try:
            doc = json.loads(text)
        except ValueError:
            raise AwsError("MalformedPolicyDocument", "This policy contains invalid Json")
        if not isinstance(doc, dict) or not doc.get("Statement"):
            raise AwsError("MalformedPolicyDocument", "Syntax errors in policy.")
        return text

    @staticmethod
    def _tags(p):
        tags = {}
        for t in p.structs("Tags.member"):
            key = t.require("Key")
            if key.lower().startswith("aws:"):
                raise AwsError("InvalidInput", "User-defined tag keys can't start with 'aws:'.")
            tags[key] = t.get("Value", "")
        if len(tags) > 50:
            raise AwsError("LimitExceeded", "Cannot exceed quota for TagsPerRole: 50", 409)
        return tags

    def _role(self, name):
        if name not in self.roles:
            raise no_such_entity("The role with name %s cannot be found." % name)
        return self.roles[name]

    def _profile(self, name):
        if name not in self.profiles:
            raise no_such_entity("Instance Profile %s cannot be found." % name)
        return self.profiles[name]

    @staticmethod
    def _tags_xml(tags):
        return [{"Key": k, "Value": v} for k, v in tags.items()] or None

    def _role_xml(self, r):
        return {"Path": r.path, "RoleName": r.name, "RoleId": r.id, "Arn": r.arn,
                "CreateDate": iso_time(r.created),
                "AssumeRolePolicyDocument": urllib.parse.quote(r.assume_policy, safe=""),
                "Description": r.description, "MaxSessionDuration": r.max_session,
                "Tags": self._tags_xml(r.tags)}

    def _profile_xml(self, ip):
        return {"Path": ip.path, "InstanceProfileName": ip.name, "InstanceProfileId": ip.id,
                "Arn": ip.arn, "CreateDate": iso_time(ip.created),
                "Roles": [self._role_xml(self.roles[n]) for n in ip.roles],
                "Tags": self._tags_xml(ip.tags)}

    # -- roles and their inline policies ------------------------------------

    def do_CreateRole(self, p):
        name = self._name(p, "RoleName", 64)
        path = self._path(p)
        assume = self._policy(p, "AssumeRolePolicyDocument")
        max_session = p.int("MaxSessionDuration", 3600)
        if not 3600 <= max_session <= 43200:
            raise AwsError("ValidationError", "The requested MaxSessionDuration exceeds the "
                           "allowed range of 3600 to 43200 seconds.")
        tags = self._tags(p)
        if name in self.roles:
            raise AwsError("EntityAlreadyExists", "Role with name %s already exists." % name, 409)
        r = types.SimpleNamespace(
            name=name, id=iam_id("AROA"), path=path, assume_policy=assume,
            arn="arn:aws:iam::%s:role%s%s" % (ACCOUNT_ID, path, name),
            description=p.get("Description"), max_session=max_session, tags=tags,
            created=time.time(), policies={})
        self.roles[name] = r
        return {"Role": self._role_xml(r)}

    def do_GetRole(self, p):
        return {"Role": self._role_xml(self._role(self._name(p, "RoleName", 64)))}

    def do_DeleteRole(self, p):
        r = self._role(self._name(p, "RoleName", 64))
        if any(r.name in ip.roles for ip in self.profiles.values()):
            raise AwsError("DeleteConflict", "Cannot delete entity, must remove roles from "
                           "instance profile first.", 409)
        if r.policies:
            raise AwsError("DeleteConflict", "Cannot delete entity, must delete policies first.",
                           409)
        del self.roles[r.name]
        return None

    def do_PutRolePolicy(self, p):
        r = self._role(self._name(p, "RoleName", 64))
        name = self._name(p, "PolicyName", 128)
        r.policies[name] = self._policy(p, "PolicyDocument")
        return None

    def _role_policy(self, p):
        r = self._role(self._name(p, "RoleName", 64))
        name = self._name(p, "PolicyName", 128)
        if name not in r.policies:
            raise no_such_entity("The role policy with name %s cannot be found." % name)
        return r, name

    def do_GetRolePolicy(self, p):
        r, name = self._role_policy(p)
        return {"RoleName": r.name, "PolicyName": name,
                "PolicyDocument": urllib.parse.quote(r.policies[name], safe="")}

    def do_DeleteRolePolicy(self, p):
        r, name = self._role_policy(p)
        del r.policies[name]
        return None

    # -- instance profiles ---------------------------------------------------

    def do_CreateInstanceProfile(self, p):
        name = self._name(p, "InstanceProfileName", 128)
        path = self._path(p)
        tags = self._tags(p)
        if name in self.profiles:
            raise AwsError("EntityAlreadyExists", "Instance Profile %s already exists." % name,
                           409)
        ip = types.SimpleNamespace(
            name=name, id=iam_id("AIPA"), path=path, tags=tags, created=time.time(), roles=[],
            arn="arn:aws:iam::%s:instance-profile%s%s" % (ACCOUNT_ID, path, name),
            unseen_runs=self.config["profile_propagation_runs"])
        self.profiles[name] = ip
        return {"InstanceProfile": self._profile_xml(ip)}

    def do_GetInstanceProfile(self, p):
        return {"InstanceProfile": self._profile_xml(
            self._profile(self._name(p, "InstanceProfileName", 128)))}

    def do_DeleteInstanceProfile(self, p):
        ip = self._profile(self._name(p, "InstanceProfileName", 128))
        if ip.roles:
            raise AwsError("DeleteConflict", "Cannot delete entity, must remove roles from "
                           "instance profile first.", 409)
        del self.profiles[ip.name]
        return None

    def do_AddRoleToInstanceProfile(self, p):
        ip = self._profile(self._name(p, "InstanceProfileName", 128))
        r = self._role(self._name(p, "RoleName", 64))
        if ip.roles:
            raise AwsError("LimitExceeded", "Cannot exceed quota for "
                           "InstanceSessionsPerInstanceProfile: 1", 409)
        ip.roles.append(r.name)
        return None

    def do_RemoveRoleFromInstanceProfile(self, p):
        ip = self._profile(self._name(p, "InstanceProfileName", 128))
        r = self._role(self._name(p, "RoleName", 64))
        if r.name not in ip.roles:
            raise no_such_entity("The role with name %s cannot be found in instance profile "
                                 "%s." % (r.name, ip.name))
        ip.roles.remove(r.name)
        return None

    def to_json(self):
        return {
            "roles": [{"role_name": r.name, "role_id": r.id, "arn": r.arn, "path": r.path,
                       "assume_role_policy": json.loads(r.assume_policy),
                       "description": r.description, "tags": dict(r.tags),
                       "policies": {n: json.loads(d) for n, d in r.policies.items()}}
                      for r in self.roles.values()],
            "instance_profiles": [{"instance_profile_name": ip.name, "instance_profile_id": ip.id,
                                   "arn": ip.arn, "path": ip.path, "roles": list(ip.roles),
                                   "tags": dict(ip.tags)} for ip in self.profiles.values()],
        }


# --------------------------------------------------------------------------
# CloudWatch and SSM

CW_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
            "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
            "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
            "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
            "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}
CW_PARAMS = ["Namespace", "StrictEntityValidation", "EntityMetricData.*",
             "MetricData.member.N.MetricName", "MetricData.member.N.Value",
             "MetricData.member.N.Unit", "MetricData.member.N.Timestamp",
             "MetricData.member.N.StorageResolution",
             "MetricData.member.N.Dimensions.member.N.Name",
             "MetricData.member.N.Dimensions.member.N.Value",
             "MetricData.member.N.StatisticValues.SampleCount",
             "MetricData.member.N.StatisticValues.Sum",
             "MetricData.member.N.StatisticValues.Minimum",
             "MetricData.member.N.StatisticValues.Maximum",
             "MetricData.member.N.Values.member.N", "MetricData.member.N.Counts.member.N"]


def cw_number(text, name):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise invalid("The value %s for parameter %s is invalid." % (text, name))
    return value


def cw_timestamp(text, name, now):
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise invalid("The value %s for parameter %s is invalid." % (text, name))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    ts = t.timestamp()
    if ts > now + 2 * 3600:
        raise invalid("The parameter %s must specify a time no more than two hours in the "
                      "future." % name)
    if ts < now - 14 * 86400:
        raise invalid("The parameter %s must specify a time within the past two weeks." % name)
    return ts


CW_GET_PARAMS = ["Namespace", "MetricName", "Dimensions.member.N.Name",
                 "Dimensions.member.N.Value", "StartTime", "EndTime", "Period",
                 "Statistics.member.N", "ExtendedStatistics.member.N", "Unit"]
CW_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")


def datum_samples(d):
    """(SampleCount, Sum, Minimum, Maximum, [(value, count)] for percentiles)
    of one recorded datum, as CloudWatch reads it: a statistic set gives the
    first four (its values, when it has them too, the percentiles)."""
    pairs = [(v, c) for v, c in zip(d["values"], d["counts"] or [1.0] * len(d["values"]))
             if c > 0]
    if d["value"] is not None:
        pairs = [(d["value"], 1.0)]
    sv = d["statistic_values"]
    if sv is not None:
        return sv["SampleCount"], sv["Sum"], sv["Minimum"], sv["Maximum"], pairs
    return (sum(c for _, c in pairs), sum(v * c for v, c in pairs),
            min(v for v, _ in pairs), max(v for v, _ in pairs), pairs)


def percentile(pairs, p):
    """The nearest-rank p-th percentile of (value, count) pairs, or None."""
    total = sum(c for _, c in pairs)
    if not total:
        return None
    rank, seen = max(1.0, math.ceil(p / 100.0 * total)), 0.0
    for v, c in sorted(pairs):
        seen += c
        if seen >= rank:
            return v
    return max(v for v, _ in pairs)


class CloudWatchModel:
    """PutMetricData: each datum is checked as CloudWatch checks it and
    recorded as sent (namespace, name, dimensions, value or statistics, unit,
    timestamp)."""

    def __init__(self):
        self.data = []

    def put_metric_data(self, p, seq):
        check_known_params(p, CW_PARAMS, "InvalidParameterValue")
        namespace = p.get("Namespace")
        if not namespace:
            raise AwsError("MissingParameter", "The parameter Namespace is required.")
        if namespace.startswith("AWS/"):
            raise invalid("The value AWS/ for parameter Namespace is invalid.")
        members = p.structs("MetricData.member")
        if not members:
            raise AwsError("MissingParameter", "The parameter MetricData is required.")
        if len(members) > 1000:
            raise invalid("The collection MetricData must not have a size greater than 1000.")
        now = time.time()
        data = [self._datum(namespace, m, n + 1, now, seq) for n, m in enumerate(members)]
        self.data.extend(data)

    def statistics(self, namespace, name, dimensions, start, end, period, statistics=CW_STATISTICS,
                   extended=(), unit=None):
        """GetMetricStatistics over the recorded datums: those of exactly
        these dimensions with start <= time < end, one datapoint per period
        (oldest first): {"Timestamp", each statistic, "ExtendedStatistics":
        {"p99": ...}, "Unit"}."""
        groups = {}
        for d in self.data:
            if (d["namespace"] == namespace and d["metric_name"] == name
                    and d["dimensions"] == dimensions and start <= d["time"] < end
                    and (unit is None or d["unit"] == unit)):
                groups.setdefault(int((d["time"] - start) // period), []).append(d)
        points = []
        for k in sorted(groups):
            parts = [datum_samples(d) for d in groups[k]]
            n, total = sum(p[0] for p in parts), sum(p[1] for p in parts)
            pairs = [pair for p in parts for pair in p[4]]
            values = {"SampleCount": n, "Sum": total, "Average": total / n if n else 0.0,
                      "Minimum": min(p[2] for p in parts), "Maximum": max(p[3] for p in parts)}
            point = {"Timestamp": start + k * period, "Unit": groups[k][0]["unit"] or "None"}
            point.update({s: values[s] for s in statistics})
            if extended:
                point["ExtendedStatistics"] = {e: percentile(pairs, float(e[1:]))
                                               for e in extended}
            points.append(point)
        return points

    def get_metric_statistics(self, p):
        check_known_params(p, CW_GET_PARAMS, "InvalidParameterValue")
        for key in ("Namespace", "MetricName", "StartTime", "EndTime", "Period"):
            if not p.get(key):
                raise AwsError("MissingParameter", "The parameter %s is required." % key)
        now = time.time() + 3 * 3600  # any time is fine here
        start = cw_timestamp(p.get("StartTime"), "StartTime", now)
        end = cw_timestamp(p.get("EndTime"), "EndTime", now)
        if start >= end:
            raise invalid("The parameter StartTime must be less than the parameter EndTime.")
        period = p.int("Period", lo=1)
        stats, extended = p.list("Statistics.member"), p.list("ExtendedStatistics.member")
        if not stats and not extended:
            raise AwsError("MissingParameter", "Must specify either Statistics or "
                           "ExtendedStatistics")
        if stats and extended:
            raise AwsError("InvalidParameterCombination", "The parameters Statistics and "
                           "ExtendedStatistics are mutually exclusive and you have specified "
                           "both.")
        for st in stats:
            if st not in CW_STATISTICS:
                raise invalid("The value %s for parameter Statistics is invalid." % st)
        for e in extended:
            if not re.fullmatch(r"p\d+(\.\d+)?", e) or not 0 <= float(e[1:]) <= 100:
                raise invalid("The value %s for parameter ExtendedStatistics is invalid." % e)
        dims = {d.get("Name"): d.get("Value") for d in p.structs("Dimensions.member")}
        return self.statistics(p.get("Namespace"), p.get("MetricName"), dims, start, end, period,
                               stats, extended, p.get("Unit"))

    def _datum(self, namespace, m, n, now, seq):
        where = "MetricData.member.%d" % n
        name = m.get("MetricName")
        if not name:
            raise AwsError("MissingParameter", "The parameter %s.MetricName is required." % where)
        dims = m.structs("Dimensions.member")
        if len(dims) > 30:
            raise invalid("The collection %s.Dimensions must not have a size greater than 30."
                          % where)
        dimensions = {}
        for d in dims:
            if not d.get("Name") or d.get("Value") is None:
                raise AwsError("MissingParameter", "The parameter %s.Dimensions.member.Name and "
                               "Value are required." % where)
            dimensions[d.get("Name")] = d.get("Value")
        unit = m.get("Unit")
        if unit is not None and unit not in CW_UNITS:
            raise invalid("The value %s for parameter %s.Unit is invalid." % (unit, where))
        stats = self._statistics(m, where)
        value = m.get("Value")
        values = [cw_number(v, where + ".Values") for v in m.list("Values.member")]
        counts = [cw_number(v, where + ".Counts") for v in m.list("Counts.member")]
        if value is not None and stats is not None:
            raise AwsError("InvalidParameterCombination", "The parameters %s.Value and "
                           "%s.StatisticValues are mutually exclusive and you have specified "
                           "both." % (where, where))
        if value is None and stats is None and not values:
            raise AwsError("MissingParameter", "The parameter %s.Value is required." % where)
        if counts and len(counts) != len(values):
            raise invalid("The parameters %s.Values and %s.Counts must be of the same size."
                          % (where, where))
        stamp = m.get("Timestamp")
        return {"namespace": namespace, "metric_name": name, "dimensions": dimensions,
                "value": None if value is None else cw_number(value, where + ".Value"),
                "statistic_values": stats, "values": values, "counts": counts, "unit": unit,
                "timestamp": stamp,
                "time": cw_timestamp(stamp, where + ".Timestamp", now) if stamp else now,
                "storage_resolution": m.int("StorageResolution"), "request": seq}

    @staticmethod
    def _statistics(m, where):
        keys = ("SampleCount", "Sum", "Minimum", "Maximum")
        given = {k: m.get("StatisticValues." + k) for k in keys}
        if all(v is None for v in given.values()):
            return None
        for k, v in given.items():
            if v is None:
                raise AwsError("MissingParameter", "The parameter %s.StatisticValues.%s is "
                               "required." % (where, k))
        return {k: cw_number(v, "%s.StatisticValues.%s" % (where, k)) for k, v in given.items()}


DEFAULT_SSM_PARAMETERS = {
    AL2023_PARAM: DEFAULT_AMI,
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64": DEFAULT_AMI,
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64": "ami-0fedcba9876543210",
}


class SsmModel:
    """Parameter Store, read only through the API: the public Amazon Linux
    2023 AMI parameters, plus what a test adds."""

    def __init__(self, region):
        self.region = region
        self.parameters = {}
        for name, value in DEFAULT_SSM_PARAMETERS.items():
            self.put(name, value)

    def put(self, name, value, type="String"):
        old = self.parameters.get(name)
        self.parameters[name] = {"name": name, "value": value, "type": type,
                                 "version": old["version"] + 1 if old else 1,
                                 "modified": time.time()}
        return dict(self.parameters[name])

    def _parameter(self, name):
        p = self.parameters[name]
        return {"ARN": "arn:aws:ssm:%s::parameter%s" % (self.region, name),
                "DataType": "text", "LastModifiedDate": p["modified"], "Name": name,
                "Type": p["type"], "Value": p["value"], "Version": p["version"]}

    def call(self, op, body):
        if op == "GetParameter":
            name = body.get("Name")
            if not isinstance(name, str) or not name:
                raise AwsError("ValidationException", "1 validation error detected: Value null at "
                               "'name' failed to satisfy constraint: Member must not be null")
            if name not in self.parameters:
                raise AwsError("ParameterNotFound", "Parameter %s not found." % name)
            return {"Parameter": self._parameter(name)}
        if op == "GetParameters":
            names = body.get("Names")
            if not isinstance(names, list) or not 1 <= len(names) <= 10:
                raise AwsError("ValidationException", "1 validation error detected: Value at "
                               "'names' failed to satisfy constraint: Member must have length "
                               "between 1 and 10")
            return {"Parameters": [self._parameter(n) for n in names if n in self.parameters],
                    "InvalidParameters": [n for n in names if n not in self.parameters]}
        raise AwsError("UnknownOperationException", "The stand-in does not serve AmazonSSM.%s"
                       % op)


# --------------------------------------------------------------------------
# Fault injection

FAULT_PRESETS = {
    "throttle": {"ec2": ("RequestLimitExceeded", "Request limit exceeded.", 503),
                 "monitoring": ("Throttling", "Rate exceeded", 400),
                 "ssm": ("ThrottlingException", "Rate exceeded", 400)},
    "internal": {"ec2": ("InternalError", "An internal error has occurred", 500),
                 "monitoring": ("InternalFailure", "The request processing has failed because "
                                "of an unknown error, exception or failure.", 500),
                 "ssm": ("InternalServerError", "An internal error has occurred", 500)},
}
FAULT_KINDS = ("throttle", "internal", "error", "disconnect", "delay", "reply")


class Injection:
    """A fault served instead of the next `count` replies (None: every one)
    to `action` ("*": any) of `service` (None: any), once `skip` of them
    went through: an error reply, a dropped connection, a delay before the
    normal reply, or another reply (`body`, `status` 200 by default) in its
    place."""

    def __init__(self, kind="throttle", action="*", service=None, count=1, code=None,
                 message=None, status=None, delay_s=0.0, skip=0, body=None,
                 content_type=None):
        if kind not in FAULT_KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(FAULT_KINDS))
        if kind == "error" and not code:
            raise ValueError("kind error needs a code")
        if kind == "reply" and body is None:
            raise ValueError("kind reply needs a body")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1 (or null: until cleared)")
        if int(skip or 0) < 0:
            raise ValueError("skip must be at least 0")
        self.kind, self.action, self.service = kind, action or "*", service
        self.count = None if count is None else int(count)
        self.code, self.message, self.status = code, message, status
        self.delay_s = float(delay_s or 0)
        self.skip = int(skip or 0)
        self.body, self.content_type = body, content_type

    def matches(self, service, action):
        return ((self.service is None or self.service == service)
                and (self.action == "*" or self.action == action))

    def reply(self, request_id):
        """The Reply of kind reply."""
        return Reply(int(self.status or 200), self.body, self.content_type or "text/xml",
                     request_id)

    def error(self, service):
        """The AwsError to answer, or None (disconnect, delay, reply)."""
        if self.kind in FAULT_PRESETS:
            code, message, status = FAULT_PRESETS[self.kind].get(
                service, FAULT_PRESETS[self.kind]["ssm"])
            return AwsError(self.code or code, self.message or message, self.status or status)
        if self.kind == "error":
            return AwsError(self.code, self.message or self.code, int(self.status or 400))
        return None

    def to_json(self):
        return {"kind": self.kind, "action": self.action, "service": self.service,
                "count": self.count, "code": self.code, "message": self.message,
                "status": self.status, "delay_s": self.delay_s, "skip": self.skip,
                "body": self.body, "content_type": self.content_type}


# --------------------------------------------------------------------------
# The server

class StandIn:
    """The stand-in: a ThreadingHTTPServer on host:port (port 0: a free one)
    serving EC2, SSM and CloudWatch to SigV4-signed POSTs, and the unsigned
    control API under /_standin/. start()/stop(), or use it as a context
    manager; url, port and env() tell clients where it is."""

    def __init__(self, host="127.0.0.1", port=0, region=DEFAULT_REGION,
                 access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY,
                 session_token=None, verbose=False, **config):
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise TypeError("unknown StandIn settings: %s" % ", ".join(sorted(unknown)))
        self.host, self._port = host, port
        self.region = region
        self.access_key, self.secret_key, self.session_token = access_key, secret_key, session_token
        self.verbose = verbose
        self._initial_config = dict(DEFAULT_CONFIG, **config)
        self.credentials = {access_key: (secret_key, session_token)}
        self.lock = threading.RLock()
        self._server = None
        self._thread = None
        self.reset()

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        self._server = _Server((self.host, self._port), _Handler)
        self._server.standin = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="aws-standin")
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._port

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self._port)

    def env(self, base=None):
        """Environment for a client of the stand-in: `base` (default
        os.environ) without its AWS_* settings, plus endpoint, credentials and
        region, and no shared config or credentials file."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("AWS_")}
        env.update({
            "AWS_ENDPOINT_URL": self.url, "AWS_ENDPOINT_URL_EC2": self.url,
            "AWS_ENDPOINT_URL_SSM": self.url, "AWS_ENDPOINT_URL_CLOUDWATCH": self.url,
            "AWS_ENDPOINT_URL_IAM": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"})
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env

    def add_credentials(self, access_key, secret_key, session_token=None):
        with self.lock:
            self.credentials[access_key] = (secret_key, session_token)

    # -- the API -----------------------------------------------------------

    def handle(self, req):
        """The Reply to one HTTP request."""
        if req.path == CONTROL_PREFIX or req.path.startswith(CONTROL_PREFIX + "/"):
            return self._control_http(req)
        request_id = str(uuid.uuid4())
        service, action, payload = classify(req)
        entry = {"seq": None, "time": time.time(), "method": req.method, "path": req.path,
                 "service": service, "action": action, "access_key": None, "ok": False,
                 "rejected": False, "injected": None, "status": None, "code": None,
                 "message": None, "request_id": request_id, "headers": dict(req.headers),
                 "params": payload.flat if isinstance(payload, Params) else
                 payload if isinstance(payload, dict) else None}
        with self.lock:
            self._seq += 1
            entry["seq"] = self._seq
        try:
            fault = self._admit(req, service, action, payload, entry)
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.kind == "disconnect":
                reply = Reply(0, disconnect=True)
            elif fault is not None and fault.kind == "reply":
                reply = fault.reply(request_id)
            elif fault is not None and fault.error(service) is not None:
                raise fault.error(service)
            else:
                with self.lock:
                    reply = self._dispatch(service, action, payload, request_id, entry)
        except AwsError as err:
            reply = ERROR_REPLIES[service](err, request_id)
            entry["code"], entry["message"] = err.code, err.message
        entry["status"] = reply.status
        entry["ok"] = reply.status == 200
        with self.lock:
            self.request_log.append(entry)
        return reply

    def _admit(self, req, service, action, payload, entry):
        """Checks method and signature; the injected fault to serve, if any."""
        if req.method != "POST":
            entry["rejected"] = True
            raise AwsError("UnsupportedHttpVerb", "The stand-in accepts only POST, not %s"
                           % req.method, 405)
        with self.lock:
            try:
                entry["access_key"] = self._verifier().verify(
                    req, service, region=IAM_REGION if service == "iam" else None)
            except AuthError as e:
                entry["rejected"] = True
                if service == "unknown":
                    raise payload
                raise AwsError(AUTH_CODES[service][e.kind], e.message, 403)
            if isinstance(payload, AwsError):
                raise payload
            for inj in self.injections:
                if inj.matches(service, action):
                    if inj.skip:
                        inj.skip -= 1
                        continue
                    if inj.count is not None:
                        inj.count -= 1
                        if inj.count == 0:
                            self.injections.remove(inj)
                    entry["injected"] = inj.kind
                    return inj
        return None

    def _verifier(self):
        return SigV4Verifier(self.region, self.credentials, self.config["max_skew_s"])

    def _dispatch(self, service, action, payload, request_id, entry):
        if service == "ssm":
            return ssm_reply(self.ssm.call(action, payload), request_id)
        if service == "monitoring":
            if action not in ("PutMetricData", "GetMetricStatistics"):
                raise AwsError("InvalidAction", "The action %s is not valid for this web service."
                               % action)
            if payload.get("Version") != CW_VERSION:
                raise AwsError("InvalidParameterValue", "The stand-in speaks CloudWatch API "
                               "version %s, not %s" % (CW_VERSION, payload.get("Version")))
            if action == "GetMetricStatistics":
                return cw_statistics_reply(payload.get("MetricName"),
                                           self.cloudwatch.get_metric_statistics(payload),
                                           request_id)
            self.cloudwatch.put_metric_data(payload, entry["seq"])
            return cw_reply(action, request_id)
        if service == "iam":
            return self._dispatch_iam(action, payload, request_id)
        return self._dispatch_ec2(action, payload, request_id)

    def _dispatch_iam(self, action, p, request_id):
        if action not in IAM_PARAMS:
            raise AwsError("InvalidAction", "Could not find operation %s for version %s"
                           % (action, IAM_VERSION))
        if p.get("Version") != IAM_VERSION:
            raise AwsError("InvalidParameterValue", "The stand-in speaks IAM API version %s, "
                           "not %s" % (IAM_VERSION, p.get("Version")))
        # IAM has no DryRun: a client that sends it would change things.
        check_known_params(p, IAM_PARAMS[action], "InvalidInput", ("Action", "Version"))
        return iam_reply(action, request_id, getattr(self.iam, "do_" + action)(p))

    def _dispatch_ec2(self, action, p, request_id):
        if not action:
            raise missing("Action")
        if action not in EC2_PARAMS:
            raise AwsError("InvalidAction", "The action %s is not valid for this web service."
                           % action)
        version = p.get("Version")
        if not version:
            raise missing("Version")
        if version != EC2_VERSION:
            raise AwsError("InvalidParameterValue", "The stand-in speaks EC2 API version %s, "
                           "not %s" % (EC2_VERSION, version))
        check_known_params(p, EC2_PARAMS[action])
        fields = getattr(self.ec2, "do_" + action)(p, p.bool("DryRun"))
        return ec2_reply(action, request_id, fields)

    # -- control (Python) --------------------------------------------------

    def reset(self):
        """Back to a fresh start: constructor settings, no instances, no
        key pairs, only the default security group, no IAM roles or
        instance profiles, empty logs."""
        with self.lock:
            self.config = dict(self._initial_config)
            self.iam = IamModel(self.config)
            self.ec2 = Ec2Model(self.region, self.config, self.iam)
            self.ssm = SsmModel(self.region)
            self.cloudwatch = CloudWatchModel()
            self.injections = []
            self.request_log = []
            self._seq = 0
        return {"ok": True}

    def configure(self, **settings):
        """Changes settings of DEFAULT_CONFIG; returns them all."""
        with self.lock:
            unknown = set(settings) - set(DEFAULT_CONFIG)
            if unknown:
                raise ValueError("unknown settings: %s" % ", ".join(sorted(unknown)))
            self.config.update(settings)
            if "ip_start" in settings:
                self.ec2.next_ip = int(ipaddress.IPv4Address(settings["ip_start"]))
            return dict(self.config)

    def inject(self, kind="throttle", action="*", service=None, count=1, code=None,
               message=None, status=None, delay_s=0.0, skip=0, body=None, content_type=None):
        """Serves a fault instead of the next `count` matching replies, once
        `skip` of them went through."""
        inj = Injection(kind, action, service, count, code, message, status, delay_s, skip,
                        body, content_type)
        with self.lock:
            self.injections.append(inj)
        return inj.to_json()

    def clear_injections(self):
        with self.lock:
            self.injections = []
        return {"ok": True}

    def add_instance(self, tags=None, instance_type="t2.micro", image_id=DEFAULT_AMI,
                     key_name=None, state="running", ip=None, subnet_id=None,
                     security_group_ids=None):
        """An instance launched by someone else (no API call): returns it."""
        if state not in STATE_CODES:
            raise ValueError("unknown state %r" % state)
        with self.lock:
            subnet = self.ec2.subnets[subnet_id] if subnet_id else \
                next(iter(self.ec2.subnets.values()))
            inst = self.ec2.add_instance(new_id("r"), image_id, instance_type, key_name, subnet,
                                         security_group_ids or [DEFAULT_SG_ID], tags or {},
                                         state=state, ip=ip)
            return self.ec2.instance_json(inst)

    def set_instance_state(self, instance_id, state):
        """Puts an instance in a state at once (stopped, running, ...)."""
        if state not in STATE_CODES:
            raise ValueError("unknown state %r" % state)
        with self.lock:
            inst = self._find_instance(instance_id)
            self.ec2.set_state(inst, state)
            return self.ec2.instance_json(inst)

    def terminate_instance(self, instance_id):
        """Terminates an instance at once, as another actor would."""
        return self.set_instance_state(instance_id, "terminated")

    def _find_instance(self, instance_id):
        if instance_id not in self.ec2.instances:
            raise KeyError("no instance %s" % instance_id)
        return self.ec2.instances[instance_id]

    def put_ssm_parameter(self, name, value, type="String"):
        with self.lock:
            return self.ssm.put(name, value, type)

    def requests(self, action=None, service=None):
        """The request log (API requests only, oldest first)."""
        with self.lock:
            return [dict(e) for e in self.request_log
                    if (action is None or e["action"] == action)
                    and (service is None or e["service"] == service)]

    def metric_data(self, namespace=None, name=None):
        """Every datum PutMetricData accepted."""
        with self.lock:
            return [dict(d) for d in self.cloudwatch.data
                    if (namespace is None or d["namespace"] == namespace)
                    and (name is None or d["metric_name"] == name)]

    def metric_statistics(self, namespace, name, dimensions, start=0.0, end=None, period=None,
                          statistics=CW_STATISTICS, extended=()):
        """What GetMetricStatistics answers for these exact dimensions; by
        default one datapoint for everything recorded."""
        end = time.time() + 3600 if end is None else end
        with self.lock:
            return self.cloudwatch.statistics(namespace, name, dimensions, start, end,
                                              period or (end - start), statistics, extended)

    def instances(self, **tags):
        """The instances (JSON views), those with all the given tags."""
        with self.lock:
            return [self.ec2.instance_json(i) for i in self.ec2.instances.values()
                    if all(i.tags.get(k) == v for k, v in tags.items())]

    def state(self):
        """Everything, as JSON-ready data."""
        with self.lock:
            out = self.ec2.to_json()
            out.update({"region": self.region, "config": dict(self.config),
                        "iam": self.iam.to_json(),
                        "injections": [i.to_json() for i in self.injections],
                        "ssm_parameters": [dict(v) for v in self.ssm.parameters.values()],
                        "metric_data": self.metric_data(), "requests": self.requests()})
            return out

    def wait_for_request(self, action, count=1, timeout=10.0, ok=True):
        """Waits until `count` requests for `action` were answered (ok=True:
        with 200; None: any outcome); returns them, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [e for e in self.requests(action=action) if ok is None or e["ok"] == ok]
            if len(hits) >= count:
                return hits
            if time.monotonic() >= deadline:
                raise TimeoutError("%d %s request(s) after %.0fs, wanted %d"
                                   % (len(hits), action, timeout, count))
            time.sleep(0.02)

    # -- control (HTTP) ----------------------------------------------------

    def _control_routes(self, query, body):
        return {
            "health": lambda: {"ok": True, "region": self.region},
            "state": self.state,
            "requests": lambda: {"requests": self.requests(query.get("action"),
                                                           query.get("service"))},
            "metrics": lambda: {"metric_data": self.metric_data(query.get("namespace"),
                                                                query.get("name"))},
            "inject": lambda: {"injection": self.inject(**body)},
            "clear-injections": self.clear_injections,
            "instances": lambda: ({"instance": self.add_instance(**body)} if body else
                                  {"instances": self.instances()}),
            "instance-state": lambda: {"instance": self.set_instance_state(**body)},
            "terminate": lambda: {"instance": self.terminate_instance(**body)},
            "config": lambda: {"config": self.configure(**body)},
            "ssm-parameter": lambda: {"parameter": self.put_ssm_parameter(**body)},
            "reset": self.reset,
        }

    def _control_http(self, req):
        name = req.path[len(CONTROL_PREFIX):].strip("/")
        query = dict(urllib.parse.parse_qsl(req.query))
        try:
            body = json.loads(req.body) if req.body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return _json_reply(400, {"error": "bad JSON: %s" % e})
        route = self._control_routes(query, body).get(name)
        if route is None:
            return _json_reply(404, {"error": "no control operation %r" % name})
        try:
            return _json_reply(200, route())
        except (TypeError, ValueError, KeyError) as e:
            return _json_reply(400, {"error": "%s: %s" % (type(e).__name__, e)})


def _json_reply(status, obj):
    return Reply(status, json.dumps(obj, default=str), "application/json")


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose handler threads never block shutdown."""
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads one request, hands it to the StandIn, writes its reply."""
    protocol_version = "HTTP/1.1"
    server_version = "aws-standin"
    timeout = 60

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def _serve(self):
        try:
            body = self._read_body()
        except ValueError as e:
            self.send_error(400, str(e))
            self.close_connection = True
            return
        req = Request(self.command, self.path, self.headers.items(), body)
        reply = self.server.standin.handle(req)
        if reply.disconnect:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (a delayed reply it abandoned): nothing to answer
            self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

    def log_message(self, fmt, *args):
        if self.server.standin.verbose:
            sys.stderr.write("aws_standin: %s %s\n" % (self.address_string(), fmt % args))


# --------------------------------------------------------------------------
# Clients for tests

def parse_xml(text):
    """An ElementTree root with the namespaces taken off the tags."""
    root = ET.fromstring(text)
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


class AwsClient:
    """A small SigV4-signing client for the stand-in, for tests (the
    project's own clients sign with libcurl). Answers are (status, text)."""

    def __init__(self, url, access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY,
                 region=DEFAULT_REGION, session_token=None, timeout=10.0):
        self.url = url
        self.access_key, self.secret_key = access_key, secret_key
        self.region, self.session_token = region, session_token
        self.timeout = timeout

    def send(self, body, headers, service, when=None, tamper=None, region=None):
        """POSTs body signed for service (and region, by default the
        client's); tamper(body) -> bytes sent instead."""
        signed = sign_headers("POST", self.url + "/", headers, body, region or self.region,
                              service, self.access_key, self.secret_key, self.session_token, when)
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            sent = tamper(body) if tamper else body
            signed.pop("Host")
            conn.request("POST", "/", body=sent, headers=signed)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def query(self, action, params=None, service=None, version=None, **kw):
        """A Query API call (EC2 unless service says otherwise)."""
        service = service or "ec2"
        version = version or {"monitoring": CW_VERSION, "iam": IAM_VERSION}.get(service,
                                                                                EC2_VERSION)
        fields = [("Action", action), ("Version", version)] + list((params or {}).items())
        body = urllib.parse.urlencode(fields).encode()
        return self.send(body, {"Content-Type": "application/x-www-form-urlencoded; "
                                "charset=utf-8"}, service, **kw)

    def ec2(self, action, params=None, **kw):
        """(status, root element without namespaces) of an EC2 call."""
        status, text = self.query(action, params, "ec2", **kw)
        return status, parse_xml(text)

    def iam(self, action, params=None, **kw):
        """(status, root element without namespaces) of an IAM call, signed
        for us-east-1 as IAM is (region= to sign otherwise)."""
        kw.setdefault("region", IAM_REGION)
        status, text = self.query(action, params, "iam", **kw)
        return status, parse_xml(text)

    def ssm(self, operation, obj, service="ssm", **kw):
        status, text = self.send(json.dumps(obj).encode(), {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonSSM." + operation}, service, **kw)
        return status, json.loads(text)


class ControlClient:
    """The control API of a stand-in in another process, as methods."""

    def __init__(self, url, timeout=10.0):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout

    def call(self, name, body=None, query=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            path = "%s/%s" % (CONTROL_PREFIX, name)
            if query:
                path += "?" + urllib.parse.urlencode(query)
            conn.request("POST", path, body=json.dumps(body or {}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            if resp.status != 200:
                raise RuntimeError("control %s: %s" % (name, out.get("error")))
            return out
        finally:
            conn.close()

    def state(self):
        return self.call("state")

    def requests(self, action=None, service=None):
        q = {k: v for k, v in (("action", action), ("service", service)) if v}
        return self.call("requests", query=q)["requests"]

    def metric_data(self, namespace=None, name=None):
        q = {k: v for k, v in (("namespace", namespace), ("name", name)) if v}
        return self.call("metrics", query=q)["metric_data"]

    def inject(self, **kw):
        return self.call("inject", kw)["injection"]

    def clear_injections(self):
        return self.call("clear-injections")

    def add_instance(self, **kw):
        return self.call("instances", kw or {"state": "running"})["instance"]

    def set_instance_state(self, instance_id, state):
        return self.call("instance-state", {"instance_id": instance_id, "state": state})["instance"]

    def terminate_instance(self, instance_id):
        return self.call("terminate", {"instance_id": instance_id})["instance"]

    def configure(self, **kw):
        return self.call("config", kw)["config"]

    def put_ssm_parameter(self, name, value, type="String"):
        return self.call("ssm-parameter", {"name": name, "value": value, "type": type})

    def reset(self):
        return self.call("reset")


# --------------------------------------------------------------------------

def write_port_file(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Local EC2/SSM/CloudWatch stand-in (SigV4 checked).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--region", default=DEFAULT_REGION)
    ap.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    ap.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    ap.add_argument("--session-token")
    ap.add_argument("--ip-start", default=DEFAULT_CONFIG["ip_start"])
    ap.add_argument("--pending-describes", type=int, default=DEFAULT_CONFIG["pending_describes"])
    ap.add_argument("--pending-seconds", type=float)
    ap.add_argument("--instance-limit", type=int, default=DEFAULT_CONFIG["instance_limit"])
    ap.add_argument("--authorized-keys", help="append launched instances' public keys here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    standin = StandIn(args.host, args.port, args.region, args.access_key, args.secret_key,
                      args.session_token, args.verbose, ip_start=args.ip_start,
                      pending_describes=args.pending_describes,
                      pending_seconds=args.pending_seconds, instance_limit=args.instance_limit,
                      authorized_keys_file=args.authorized_keys).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.port_file:
        write_port_file(args.port_file, standin.port)
    sys.stderr.write("aws_standin: listening on %s (region %s)\n" % (standin.url, args.region))
    sys.stderr.flush()
    while not done.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
