"""perf/loadgen end to end: against a real backend, a closed port, targets
that reset, close or never answer; its CSV files; its flags."""

import csv
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from lbtest import BUILD, LBTestCase, free_port, request_log

LOADGEN_BIN = os.environ.get("LOADGEN_BIN", os.path.join(BUILD, "loadgen"))
ENGINES = ("auto", "epoll")  # auto is io_uring where the kernel allows it

SUMMARY_HEADER = ("label,url,requests,ok,errors,duration_s,rps,mean_ms,p50_ms,p90_ms,p99_ms,"
                  "p999_ms,max_ms,mbytes_s")


def run_loadgen(*args, timeout=60):
    """(exit status, stdout, stderr); a sanitizer report or a crash fails."""
    p = subprocess.run([LOADGEN_BIN] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       text=True)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        if marker in p.stderr:
            raise AssertionError("loadgen reported %s:\n%s" % (marker, p.stderr[-6000:]))
    if p.returncode < 0:
        raise AssertionError("loadgen died of signal %d:\n%s" % (-p.returncode, p.stderr))
    return p.returncode, p.stdout, p.stderr


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Peer:
    """A TCP server on 127.0.0.1 in a thread that treats every connection the
    same way: "reset" (reads the request, closes with RST), "close" (reads,
    closes with FIN, no reply) or "silent" (reads, never answers)."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        deadline = time.monotonic() + 120  # bounded, whatever happens
        while not self.stopping and time.monotonic() < deadline:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.accepted += 1
            c.settimeout(2)
            try:
                c.recv(65536)
            except OSError:
                pass
            if self.mode == "silent":
                self.held.append(c)
                continue
            if self.mode == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


class LoadgenTest(LBTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory(prefix="loadgen-test-")
        self.addCleanup(self.tmp.cleanup)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def peer(self, mode):
        p = Peer(mode)
        self.addCleanup(p.stop)
        return p

    def summary_row(self, path):
        with open(path) as f:
            self.assertEqual(f.readline().rstrip("\n"), SUMMARY_HEADER)
        rows = read_csv(path)
        self.assertEqual(len(rows), 1)
        return rows[0]

    def test_requests_csv(self):
        b = self.backend("lg-one", threads=2)
        for engine in ENGINES:
            with self.subTest(engine=engine):
                out, summ = self.path("req-%s.csv" % engine), self.path("sum-%s.csv" % engine)
                rc, stdout, stderr = run_loadgen(
                    "http://127.0.0.1:%d/" % b.port, "--requests", 500, "--concurrency", 8,
                    "--csv", out, "--summary", summ, "--label", "e2e, \"%s\"" % engine,
                    "--engine", engine)
                self.assertEqual(rc, 0, stderr)
                with open(out) as f:
                    self.assertEqual(f.readline().rstrip("\n"),
                                     "seq,start_us,latency_us,status,bytes,instance_id,error")
                rows = read_csv(out)
                self.assertEqual(len(rows), 500)
                self.assertEqual([int(r["seq"]) for r in rows], list(range(500)))
                self.assertEqual({r["status"] for r in rows}, {"200"})
                self.assertEqual({r["instance_id"] for r in rows}, {"lg-one"})
                self.assertEqual({r["error"] for r in rows}, {""})
                self.assertTrue(all(int(r["bytes"]) > 0 for r in rows))
                self.assertTrue(all(int(r["latency_us"]) > 0 for r in rows))
                s = self.summary_row(summ)
                self.assertEqual(s["label"], "e2e, \"%s\"" % engine)
                self.assertEqual(s["url"], "http://127.0.0.1:%d/" % b.port)
                self.assertEqual((s["requests"], s["ok"], s["errors"]), ("500", "500", "0"))
                self.assertGreater(float(s["rps"]), 0)
                p50, p99, mx = float(s["p50_ms"]), float(s["p99_ms"]), float(s["max_ms"])
                self.assertTrue(0 < p50 <= p99 <= mx * 1.01, s)
                self.assertIn("requests 500: ok 500, errors 0", stdout)
        # keep-alive: no more connections than --concurrency
        self.assertLessEqual(len(served_conns(b)), 2 * 8)

    def test_open_loop_rate(self):
        b = self.backend("lg-rate")
        summ = self.path("sum.csv")
        t0 = time.monotonic()
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % b.port, "--rate", 200,
                                         "--duration", 2, "--summary", summ)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, stderr)
        s = self.summary_row(summ)
        self.assertTrue(340 <= int(s["requests"]) <= 460, s)
        self.assertEqual(s["errors"], "0")
        # the last request is due at 1.995 s; its answer may be late on a
        # busy machine
        self.assertTrue(1.7 <= float(s["duration_s"]) <= 4, s)
        self.assertTrue(100 <= float(s["rps"]) <= 230, s)
        self.assertLess(took, 10)

    def test_open_loop_csv_schedule(self):
        # request i is due at i/R: start_us follows the schedule (a request
        # may leave up to 1 ms early, never late while connections are free)
        b = self.backend("lg-sched")
        out = self.path("req.csv")
        rc, _, stderr = run_loadgen("http://127.0.0.1:%d/" % b.port, "--rate", 500,
                                    "--requests", 250, "--concurrency", 4, "--csv", out)
        self.assertEqual(rc, 0, stderr)
        rows = read_csv(out)
        self.assertEqual([int(r["seq"]) for r in rows], list(range(250)))
        for r in rows:
            due = int(r["seq"]) * 2000
            self.assertTrue(due - 1001 <= int(r["start_us"]) <= due + 1, r)
            self.assertEqual(r["status"], "200")

    def test_closed_port(self):
        port = free_port()
        for engine in ENGINES:
            for ka in ([], ["--no-keepalive"]):
                with self.subTest(engine=engine, keepalive=not ka):
                    out, summ = self.path("c.csv"), self.path("s-%s-%d.csv" % (engine, len(ka)))
                    rc, stdout, stderr = run_loadgen(
                        "http://127.0.0.1:%d/x" % port, "--requests", 200, "--concurrency", 8,
                        "--engine", engine, "--csv", out, "--summary", summ, *ka)
                    self.assertEqual(rc, 0, stderr)
                    s = self.summary_row(summ)
                    self.assertEqual((s["requests"], s["ok"], s["errors"]), ("200", "0", "200"))
                    rows = read_csv(out)
                    self.assertEqual(len(rows), 200)
                    self.assertEqual({r["error"] for r in rows}, {"connect: Connection refused"})
                    self.assertEqual({r["status"] for r in rows}, {"0"})
                    self.assertIn("error connect: Connection refused: 200", stdout)
        # duration-bound and open loop against nothing end on time too
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % port, "--duration", 0.5,
                                         "--concurrency", 4, "--no-keepalive")
        self.assertEqual(rc, 0, stderr)
        self.assertIn("ok 0,", stdout)
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % port, "--duration", 0.5,
                                         "--rate", 100)
        self.assertEqual(rc, 0, stderr)
        self.assertIn("requests 50: ok 0, errors 50", stdout)

    def test_peer_resets_or_closes(self):
        for mode, texts in (("reset", {"reset", "closed"}), ("close", {"closed", "reset"})):
            peer = self.peer(mode)
            for engine in ENGINES:
                for ka in ([], ["--no-keepalive"]):
                    with self.subTest(mode=mode, engine=engine, keepalive=not ka):
                        out = self.path("r.csv")
                        rc, stdout, stderr = run_loadgen(
                            "http://127.0.0.1:%d/" % peer.port, "--requests", 100,
                            "--concurrency", 4, "--engine", engine, "--csv", out, *ka)
                        self.assertEqual(rc, 0, stderr)
                        self.assertIn("requests 100: ok 0, errors 100", stdout)
                        rows = read_csv(out)
                        self.assertEqual(len(rows), 100)
                        self.assertLessEqual({r["error"] for r in rows}, texts, rows[:3])

    def test_timeout(self):
        peer = self.peer("silent")
        out = self.path("t.csv")
        t0 = time.monotonic()
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % peer.port, "--requests", 6,
                                         "--concurrency", 3, "--timeout-ms", 200, "--csv", out)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, stderr)
        rows = read_csv(out)
        self.assertEqual({r["error"] for r in rows}, {"timeout"})
        self.assertEqual(len(rows), 6)
        for r in rows:
            self.assertTrue(190000 <= int(r["latency_us"]) < 1000000, r)
        self.assertLess(took, 5)
        # open loop: a request that found no free connection within the
        # timeout of its due time is a timeout without being sent
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % peer.port, "--rate", 100,
                                         "--requests", 20, "--concurrency", 1,
                                         "--timeout-ms", 100)
        self.assertEqual(rc, 0, stderr)
        self.assertIn("requests 20: ok 0, errors 20", stdout)
        self.assertIn("error timeout: 20", stdout)

    def test_no_keepalive_connection_per_request(self):
        b = self.backend("lg-nka")
        out = self.path("n.csv")
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/" % b.port, "--requests", 200,
                                         "--concurrency", 4, "--no-keepalive", "--csv", out)
        self.assertEqual(rc, 0, stderr)
        rows = read_csv(out)
        self.assertEqual({r["status"] for r in rows}, {"200"})
        self.assertEqual({r["instance_id"] for r in rows}, {"lg-nka"})
        self.assertTrue(wait_for(lambda: len(served_conns(b)) == 200), len(served_conns(b)))

    def test_method_body_and_framing(self):
        b = self.backend("lg-body")
        cases = (
            (["--method", "POST", "--body-size", 100000], "/echo", 100000),
            (["--method", "PUT", "--body-size", 0], "/echo", 0),
            ([], "/bytes/70000?chunked=1", 70000),  # chunked, more than one recv
            ([], "/bytes/5", 5),
            (["--method", "HEAD"], "/bytes/5000", 0),  # a length, and no body
        )
        for args, path, size in cases:
            with self.subTest(args=args, path=path):
                out = self.path("m.csv")
                rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d%s" % (b.port, path),
                                                 "--requests", 50, "--concurrency", 3,
                                                 "--csv", out, *args)
                self.assertEqual(rc, 0, stderr)
                rows = read_csv(out)
                self.assertEqual(len(rows), 50)
                self.assertEqual({r["status"] for r in rows}, {"200"}, rows[:2])
                self.assertEqual({int(r["bytes"]) for r in rows}, {size})
        # a 404 is a response (in rps and latencies) but not ok
        summ = self.path("s404.csv")
        rc, stdout, stderr = run_loadgen("http://127.0.0.1:%d/status/404" % b.port,
                                         "--requests", 20, "--summary", summ)
        self.assertEqual(rc, 0, stderr)
        s = self.summary_row(summ)
        self.assertEqual((s["requests"], s["ok"], s["errors"]), ("20", "0", "20"))
        self.assertGreater(float(s["rps"]), 0)
        self.assertIn("4xx 20", stdout)

    def test_summary_appends(self):
        b = self.backend("lg-sum")
        summ = self.path("sum.csv")
        for label in ("first", "second"):
            rc, _, stderr = run_loadgen("http://localhost:%d/" % b.port, "--requests", 30,
                                        "--summary", summ, "--label", label, "--threads", 1)
            self.assertEqual(rc, 0, stderr)
        with open(summ) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], SUMMARY_HEADER)
        self.assertEqual(len(lines), 3)
        self.assertEqual([r["label"] for r in read_csv(summ)], ["first", "second"])

    def test_bad_arguments(self):
        url = "http://127.0.0.1:%d/" % free_port()
        cases = (
            (["--bogus", url], "--bogus"),
            (["--requests", "x", url], "--requests"),
            (["--requests", "0", url], "--requests"),
            (["--concurrency", "-3", url], "--concurrency"),
            (["--rate", "0", url], "--rate"),
            (["--duration", "soon", url], "--duration"),
            (["--threads", "0", url], "--threads"),
            (["--timeout-ms", "", url], "--timeout-ms"),
            (["--body-size", "1e3", url], "--body-size"),
            (["--method", "G T", url], "--method"),
            (["--engine", "kqueue", url], "--engine"),
            (["--no-keepalive=1", url], "--no-keepalive"),
            ([url, "--requests"], "--requests"),
            (["--csv", "x.csv", "--requests", "20000000", url], "--csv"),
            (["http://example.com/"], "URL"),
            (["https://127.0.0.1:1/"], "URL"),
            (["http://127.0.0.1:0/"], "URL"),
            (["http://127.0.0.1:80x/"], "URL"),
            (["http://[::1]:80/"], "URL"),
            (["http://127.0.0.1:80/a b"], "URL"),
            ([], "URL"),
            ([url, url], "one URL"),
        )
        for args, named in cases:
            with self.subTest(args=args):
                rc, stdout, stderr = run_loadgen(*args, timeout=10)
                self.assertEqual(rc, 2, stderr)
                self.assertIn(named, stderr)
                self.assertEqual(stdout, "")
        rc, stdout, _ = run_loadgen("--help")
        self.assertEqual(rc, 0)
        self.assertIn("--concurrency", stdout)


def served_conns(backend):
    """The connections on which the backend answered requests."""
    return {conn for (_, _, conn, *_rest) in request_log(backend)}


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


if __name__ == "__main__":
    unittest.main()
