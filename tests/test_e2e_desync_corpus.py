"""The request-smuggling regression corpus (tests/desync_corpus.json)
replayed against the proxy in each desync mitigation mode (DESIGN.md,
"Request smuggling defence (`desync_mitigation`)").

One proxy per mode (defensive and strictest set in the JSON config,
monitor with --desync-mitigation), one worker thread (so the access log is
in the order the cases ran), an access log and an admin listener, in front
of a strict RawBackend (tests/rawbackend.py) that records every byte it
receives. Every case is sent at once on its own connection; then:

  - the outcome: "forward" (the backend got exactly one request of that
    method and target, with the body the case says, a chunked one
    re-encoded canonically; the client got the backend's 200 and its
    connection stays open, which a second request on it shows, unless the
    request asked to close), "forward_close" (forwarded and answered, then
    the client connection closed and the backend connection closed without
    another request on it), "reject" (400, the client connection closed,
    not a byte of the request at the backend);
  - the class: the case's access log line (matched by path; lines without
    a path, requests refused before their head was complete, in order) has
    its desync_class, and lb_desync_requests_total{class} rose by the
    number of cases of each class (plus the follow-up requests, compliant).

Each mode fails once, with every case that differs listed (name, expected,
got), not at the first. Runs once per engine (LB_ENGINE)."""

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest

from lbtest import (DESYNC_CLASSES as CLASSES, HTTPReader, SharedLBTestCase,
                    desync_counts, free_port, read_access_log, wait_routable, wait_until)
from rawbackend import RawBackend

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_PATH = os.path.join(HERE, "desync_corpus.json")
MODES = ("defensive", "strictest", "monitor")
OUTCOMES = ("forward", "forward_close", "reject")
HEALTH = "/cluster1/health"  # what wait_routable asks for through the proxy
RESPONSE_S = 2.5  # for the answer to a case
CLOSE_S = 1.0     # for the proxy to close a connection it should close


def load_corpus():
    with open(CORPUS_PATH) as f:
        return json.load(f)


CORPUS = load_corpus()
CASES = CORPUS["cases"]


def marker(case):
    """The bytes that show a case reached the backend: its path without the
    query (unique in the corpus, and no path holds another)."""
    return case["path"].split("?", 1)[0].encode("latin-1")


# --------------------------------------------------------------------------
# the corpus itself


class CorpusFile(unittest.TestCase):
    """The JSON is what its header says it is (no proxy needed)."""

    def test_cases_well_formed(self):
        self.assertGreaterEqual(len(CASES), 80)
        rules = CORPUS["modes"]
        names, markers = set(), []
        problems = []
        for c in CASES:
            n = c.get("name")
            for k in ("name", "class", "method", "path", "request", "expect", "why"):
                if k not in c:
                    problems.append("%s: no %r" % (n, k))
            if n in names:
                problems.append("%s: name twice" % n)
            names.add(n)
            if c.get("class") not in CLASSES:
                problems.append("%s: class %r" % (n, c.get("class")))
                continue
            for m in MODES:
                want = rules[m][c["class"]]
                if c["expect"].get(m) != want:
                    problems.append("%s: %s expects %r, the %s rule says %r"
                                    % (n, m, c["expect"].get(m), c["class"], want))
            if not c["path"].startswith("/cluster1/dc/%s/" % n):
                problems.append("%s: path %r" % (n, c["path"]))
            try:
                raw = c["request"].encode("latin-1")
            except UnicodeEncodeError:
                problems.append("%s: a character above U+00FF" % n)
                continue
            if marker(c) not in raw:
                problems.append("%s: its path is not in its request" % n)
            if "body" in c:
                c["body"].encode("latin-1")
            markers.append((n, marker(c)))
        for n, m in markers:
            for n2, m2 in markers:
                if n != n2 and m in m2:
                    problems.append("%s: its path is inside %s's" % (n, n2))
        self.assertEqual(problems, [])

    def test_every_class_present(self):
        counts = {k: sum(1 for c in CASES if c["class"] == k) for k in CLASSES}
        for k in CLASSES:
            self.assertGreater(counts[k], 0, counts)


# --------------------------------------------------------------------------
# helpers


def canonical_chunked_problem(raw):
    """None when raw is a canonically encoded chunked body ("<hex>CRLF
    <data>CRLF" chunks without extensions or leading zeros, then "0CRLF
    CRLF", no trailers), else why not."""
    pos = 0
    for _ in range(100000):
        m = re.match(rb"(0|[1-9a-fA-F][0-9a-fA-F]{0,15})\r\n", raw[pos:pos + 20])
        if not m:
            return "no canonical chunk-size line at %d: %r" % (pos, raw[pos:pos + 30])
        size = int(m.group(1), 16)
        pos += m.end()
        if size == 0:
            return None if raw[pos:] == b"\r\n" else "after the last chunk: %r" % raw[pos:pos + 60]
        if raw[pos + size:pos + size + 2] != b"\r\n":
            return "chunk at %d not followed by CRLF" % pos
        pos += size + 2
    return "too many chunks"






def read_body(rd, status, headers, method):
    """The body of a response whose head was read (HTTPReader)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return rd.read_chunked()[0]
    if "content-length" in headers:
        return rd.read_exact(int(headers["content-length"]))
    return rd.read_to_eof()


def wait_closed(sock, timeout):
    """"closed" when the peer closes (EOF or reset) within timeout without
    sending more, "open" on timeout, else "sent more: ..."."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(65536)
    except socket.timeout:
        return "open"
    except OSError:  # reset, broken pipe
        return "closed"
    return "closed" if not b else "sent more: %r" % b[:80]


class Observation:
    def __init__(self):
        self.status = None    # of the first response, None when none
        self.resp_body = None
        self.client = "?"     # open, closed, or what else happened
        self.followup = False  # a follow-up request was answered by the backend
        self.notes = []


# --------------------------------------------------------------------------
# one mode


class ModeRun(SharedLBTestCase):
    mode = None
    by_flag = False

    @classmethod
    def start_shared(cls):
        cls.dir = tempfile.mkdtemp(prefix="lb-desync-corpus-")
        cls.cleanups.append(lambda: shutil.rmtree(cls.dir, True))
        cls.raw = RawBackend("strict")
        cls.cleanups.append(cls.raw.stop)
        cls.alog = os.path.join(cls.dir, "access.log")
        cls.admin = free_port()
        cfg = {"timeouts_ms": {"connect": 1000, "client_header": 1500, "idle": 10000,
                               "backend_response": 3000, "drain": 1000},
               "clusters": [{"name": "cluster1", "path_prefix": "/cluster1",
                             "strip_prefix": False, "backends": [cls.raw.addr], "retries": 0,
                             "health_check": {"path": "/health", "interval_ms": 60000,
                                              "timeout_ms": 1000, "healthy_threshold": 1,
                                              "unhealthy_threshold": 10,
                                              "expect_status": "200-399"}}]}
        args = ["--admin", "127.0.0.1:%d" % cls.admin, "--access-log", cls.alog]
        if cls.by_flag:
            args += ["--desync-mitigation", cls.mode]
        else:
            cfg["desync_mitigation"] = cls.mode
        # One worker thread: the access log's lines come in the cases' order.
        cls.p = cls.shared_proxy(config=cfg, threads=1, args=args)
        if wait_routable(cls.p.port) != 200:
            raise RuntimeError("cluster1 never became routable:\n" + cls.p.log()[-3000:])
        # The log is written off the data path: once the 200 to the probe is
        # there, so is every line before it, and the cases' lines start after.
        wait_until(lambda: any(l.get("path") == HEALTH and l.get("status") == 200
                               for l in read_access_log(cls.alog)), 5.0)

    # -- one case on its own connection

    def send_case(self, case):
        mode = self.mode
        o = Observation()
        expect = case["expect"][mode]
        s = socket.create_connection(("127.0.0.1", self.p.port), timeout=RESPONSE_S)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.sendall(case["request"].encode("latin-1"))
            except (BrokenPipeError, ConnectionResetError):
                o.notes.append("the proxy closed before it had the whole request")
            rd = HTTPReader(s)
            try:
                status, _, hl = rd.read_head()
            except socket.timeout:
                o.client = "open"
                o.notes.append("no response within %.1fs" % RESPONSE_S)
                return o
            except (EOFError, ConnectionResetError, BrokenPipeError):
                o.client = "closed"
                o.notes.append("closed without a response")
                return o
            except ValueError as e:
                o.client = "?"
                o.notes.append("unparsable response: %s" % e)
                return o
            o.status = status
            headers = {}
            for k, v in hl:
                headers[k] = headers[k] + ", " + v if k in headers else v
            try:
                o.resp_body = read_body(rd, status, headers,
                                        case["method"] if status == 200 else "GET")
            except (socket.timeout, EOFError, ConnectionResetError, ValueError) as e:
                o.notes.append("response body unreadable: %r" % e)
                o.client = "?"
                return o
            if rd.buf:
                o.notes.append("bytes after the response: %r" % bytes(rd.buf[:80]))
            if status == 200 and expect == "forward" and not case.get("close_requested"):
                o.client = self.follow_up(s, rd, case, o)
            else:
                o.client = wait_closed(s, CLOSE_S)
            return o
        finally:
            s.close()

    def follow_up(self, s, rd, case, o):
        """A second request on the connection: "open" when the backend
        answers it, "closed" when the proxy closed the connection."""
        path = "/cluster1/ka/%s/" % case["name"]
        try:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: corpus.test\r\n\r\n")
            st, _, hl = rd.read_head()
            body = read_body(rd, st, dict(hl), "GET")
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return "closed"
        except (socket.timeout, ValueError) as e:
            o.notes.append("the follow-up request got %r" % e)
            return "open?"
        if st == 200 and body == ("path=%s\n" % path).encode():
            o.followup = True
            return "open"
        o.notes.append("the follow-up request got %d %r" % (st, body[:80]))
        return "open?"

    # -- what the backend received, after the run

    def judge(self, case, o, all_reqs):
        """(label, facts): the outcome the observation shows ("forward",
        "forward_close", "reject" or "other") and what it is made of."""
        target = case["path"]
        mine = [r for r in all_reqs if r.target == target]
        received = self.raw.received(marker(case))
        facts = ["status=%s" % o.status, "client %s" % o.client]
        backend_ok = False
        backend_closed = None
        if mine:
            facts.append("backend got %d request(s)" % len(mine))
        elif received:
            facts.append("backend received bytes of it: %r"
                         % next(c for c in self.raw.connections() if marker(case) in c)[:200])
        else:
            facts.append("backend got nothing")
        if len(mine) == 1:
            r = mine[0]
            bad = []
            if r.method != case["method"]:
                bad.append("method %s" % r.method)
            if "body" in case:
                want = case["body"].encode("latin-1")
                if r.body != want:
                    bad.append("body %r, not %r" % ((r.body or b"")[:60], want[:60]))
                if r.chunked:
                    why = canonical_chunked_problem(r.raw_body)
                    if why:
                        bad.append("chunked body not canonical: " + why)
            if "backend_host" in case and r.values("host") != [case["backend_host"]]:
                bad.append("Host %r" % r.values("host"))
            want_resp = b"" if case["method"] == "HEAD" else ("path=%s\n" % target).encode("latin-1")
            if o.status == 200 and o.resp_body != want_resp:
                bad.append("the client got %r" % (o.resp_body or b"")[:80])
            every = self.raw.requests(health=True)
            pos = next(i for i, x in enumerate(every) if x is r)
            later = [x for x in every[pos + 1:] if x.conn == r.conn]
            backend_closed = self.raw.conn_eof(r.conn) and not later
            facts.append("backend connection %s" % ("closed after it" if backend_closed else
                                                    "reused" if later else "kept"))
            if bad:
                facts.append("; ".join(bad))
            backend_ok = not bad
        for t in case.get("never", ()):
            if t in [r.target for r in all_reqs]:
                facts.append("THE BACKEND RAN %s" % t)
                backend_ok = False
        facts += o.notes
        if not mine and not received and o.status == 400 and o.client == "closed":
            label = "reject"
        elif len(mine) == 1 and backend_ok and o.status == 200 and o.client == "open":
            label = "forward"
        elif len(mine) == 1 and backend_ok and o.status == 200 and o.client == "closed":
            label = "forward_close" if backend_closed else "forward+client_closed"
        else:
            label = "other"
        return label, facts

    @staticmethod
    def matches(case, expect, label):
        if expect == "forward" and case.get("close_requested"):
            return label in ("forward_close", "forward+client_closed")
        return label == expect

    # -- the run

    def test_corpus(self):
        mode = self.mode
        t0 = time.monotonic()
        before = desync_counts(self.admin)
        log_off = len(read_access_log(self.alog))
        errors_off = len(self.raw.errors)
        obs = []
        for case in CASES:
            obs.append(self.send_case(case))
        time.sleep(0.3)  # anything the proxy would still forward
        followups = sum(1 for o in obs if o.followup)
        all_reqs = self.raw.requests()
        diffs = []
        got_counts = {k: 0 for k in OUTCOMES}
        for case, o in zip(CASES, obs):
            label, facts = self.judge(case, o, all_reqs)
            if label in got_counts:
                got_counts[label] += 1
            expect = case["expect"][mode]
            if not self.matches(case, expect, label):
                diffs.append([case, "outcome: expected %s, got %s (%s)"
                              % (expect, label, ", ".join(facts))])
        # the classes, in the access log
        want_lines = len(CASES) + followups
        wait_until(lambda: len([l for l in read_access_log(self.alog)[log_off:]
                                if l.get("path") != HEALTH]) >= want_lines, 5.0)
        lines = [l for l in read_access_log(self.alog)[log_off:] if l.get("path") != HEALTH]
        used = set()
        cursor = -1
        class_diffs = {}
        for case in CASES:
            path = case["path"]
            idx = next((i for i, l in enumerate(lines) if i not in used and l.get("path") in
                        (path, path.split("?", 1)[0])), None)
            if idx is None:
                idx = next((i for i in range(cursor + 1, len(lines))
                            if i not in used and lines[i].get("path") is None), None)
            if idx is None:
                class_diffs[case["name"]] = "no access log line"
                continue
            used.add(idx)
            cursor = max(cursor, idx)
            line = lines[idx]
            if line.get("desync_class") != case["class"]:
                class_diffs[case["name"]] = ("class: expected %s, logged %s (reason %r, path %r, "
                                             "status %r)" % (case["class"],
                                                             line.get("desync_class"),
                                                             line.get("desync_reason"),
                                                             line.get("path"),
                                                             line.get("status")))
        for d in diffs:
            extra = class_diffs.pop(d[0]["name"], None)
            if extra:
                d[1] += "; " + extra
        by_name = {c["name"]: c for c in CASES}
        for name, text in class_diffs.items():
            diffs.append([by_name[name], text])
        diffs.sort(key=lambda d: CASES.index(d[0]))
        # the counters
        after = desync_counts(self.admin)
        want = {k: sum(1 for c in CASES if c["class"] == k) for k in CLASSES}
        want["compliant"] += followups
        got = {k: int(after[k] - before[k]) for k in CLASSES}
        problems = ["%s [%s]: %s" % (d[0]["name"], d[0]["class"], d[1]) for d in diffs]
        if got != want:
            problems.append("lb_desync_requests_total rose by %r, expected %r (%d cases + %d "
                            "compliant follow-ups)" % (got, want, len(CASES), followups))
        if len(lines) != want_lines:
            problems.append("the access log has %d new lines, expected %d"
                            % (len(lines), want_lines))
        stray = [l for i, l in enumerate(lines) if i not in used
                 and not (l.get("path") or "").startswith("/cluster1/ka/")]
        if stray:
            problems.append("access log lines of no case: %r" % stray[:5])
        new_errors = self.raw.errors[errors_off:]
        if new_errors:
            problems.append("the backend could not parse what it received: %r" % new_errors[:10])
        took = time.monotonic() - t0
        sys.stderr.write("\n[%s] %d cases in %.1fs: %d as expected; outcomes seen %r\n"
                         % (mode, len(CASES), took, len(CASES) - len(diffs), got_counts))
        if problems:
            self.fail("mode %s: %d of %d cases differ\n  %s"
                      % (mode, len(diffs), len(CASES), "\n  ".join(problems)))


class Defensive(ModeRun):
    mode = "defensive"


class Strictest(ModeRun):
    mode = "strictest"


class Monitor(ModeRun):
    mode = "monitor"
    by_flag = True


del ModeRun  # (a base, not a test case of its own)

if __name__ == "__main__":
    unittest.main()
