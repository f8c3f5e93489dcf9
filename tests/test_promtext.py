"""tests/promtext.py, the checker of the Prometheus text format (0.0.4) that
the /metrics tests use: it accepts a realistic exposition and the syntax the
format allows, and rejects each violation with the right line. Where the
Debian package python3-prometheus-client is installed, its parser must accept
the valid exposition too and read the same samples (skipped otherwise).
Needs no binary; runs once."""

import math
import unittest

import promtext
from promtext import PromFormatError, parse, sum_values, value

VALID = r'''# A comment: ignored.
# HELP lb_requests_total Requests received, unrouted ones under cluster="none".
# TYPE lb_requests_total counter
lb_requests_total{cluster="cluster1"} 1027
lb_requests_total{cluster="none"} 3
# HELP lb_responses_total Responses sent, by class of status code.
# TYPE lb_responses_total counter
lb_responses_total{cluster="cluster1",code="2xx"} 1020
lb_responses_total{cluster="cluster1",code="5xx"} 7
lb_responses_total{cluster="none",code="4xx"} 3
# HELP lb_request_duration_seconds From the request's first byte to the response's last.
# TYPE lb_request_duration_seconds histogram
lb_request_duration_seconds_bucket{cluster="cluster1",le="0.0005"} 100
lb_request_duration_seconds_bucket{cluster="cluster1",le="0.001"} 400
lb_request_duration_seconds_bucket{cluster="cluster1",le="0.01"} 1000
lb_request_duration_seconds_bucket{cluster="cluster1",le="0.1"} 1020
lb_request_duration_seconds_bucket{cluster="cluster1",le="1"} 1020
lb_request_duration_seconds_bucket{cluster="cluster1",le="+Inf"} 1027
lb_request_duration_seconds_sum{cluster="cluster1"} 2.5
lb_request_duration_seconds_count{cluster="cluster1"} 1027
lb_request_duration_seconds_bucket{cluster="none",le="0.0005"} 3
lb_request_duration_seconds_bucket{cluster="none",le="0.001"} 3
lb_request_duration_seconds_bucket{cluster="none",le="0.01"} 3
lb_request_duration_seconds_bucket{cluster="none",le="0.1"} 3
lb_request_duration_seconds_bucket{cluster="none",le="1"} 3
lb_request_duration_seconds_bucket{cluster="none",le="+Inf"} 3
lb_request_duration_seconds_sum{cluster="none"} 0.0004
lb_request_duration_seconds_count{cluster="none"} 3
# HELP lb_backend_response_seconds From the request sent to the backend to its response's last byte.
# TYPE lb_backend_response_seconds histogram
# HELP lb_errors_total Errors, by kind.
# TYPE lb_errors_total counter
# HELP lb_backend_healthy 1 when the backend passes its health checks, else 0.
# TYPE lb_backend_healthy gauge
lb_backend_healthy{cluster="cluster1",backend="127.0.0.1:9001"} 1
lb_backend_healthy{cluster="we\"ird\\na\nme",backend="127.0.0.1:9002"} 0
# HELP lb_backend_latency_seconds EWMA of the response time; a back\\slash and a new\nline.
# TYPE lb_backend_latency_seconds gauge
lb_backend_latency_seconds{cluster="cluster1",backend="127.0.0.1:9001"} 4.2e-04
lb_backend_latency_seconds{cluster="cluster1",backend="127.0.0.1:9002"} NaN
# HELP lb_backend_inflight Requests sent to the backend and not yet answered.
# TYPE lb_backend_inflight gauge
lb_backend_inflight{cluster="cluster1",backend="127.0.0.1:9001"} 0
# HELP lb_connections_active Client connections open now.
# TYPE lb_connections_active gauge
lb_connections_active 64
# HELP lb_bytes_total Bytes from clients (in) and to clients (out).
# TYPE lb_bytes_total counter
lb_bytes_total{direction="in"} 1.5e+06
lb_bytes_total{direction="out"} 123456789
# HELP rpc_duration_seconds A summary.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 0.01
rpc_duration_seconds{quantile="0.99"} 0.2
rpc_duration_seconds_sum 17.5
rpc_duration_seconds_count 1000
# HELP temperature_low A gauge at minus infinity.
# TYPE temperature_low gauge
temperature_low -Inf
process_start_time_seconds 1.7e+09 1700000000000
'''

HIST = '''# TYPE h histogram
h_bucket{le="0.1"} 1
h_bucket{le="1"} 2
h_bucket{le="+Inf"} 3
h_sum 1.5
h_count 3
'''


class Valid(unittest.TestCase):
    def test_realistic_exposition(self):
        fams = parse(VALID)
        self.assertEqual(list(fams), [
            "lb_requests_total", "lb_responses_total", "lb_request_duration_seconds",
            "lb_backend_response_seconds", "lb_errors_total", "lb_backend_healthy",
            "lb_backend_latency_seconds", "lb_backend_inflight", "lb_connections_active",
            "lb_bytes_total", "rpc_duration_seconds", "temperature_low",
            "process_start_time_seconds"])
        types = {n: f.type for n, f in fams.items()}
        self.assertEqual(types["lb_requests_total"], "counter")
        self.assertEqual(types["lb_request_duration_seconds"], "histogram")
        self.assertEqual(types["lb_backend_healthy"], "gauge")
        self.assertEqual(types["rpc_duration_seconds"], "summary")
        self.assertEqual(types["process_start_time_seconds"], "untyped")
        self.assertFalse(fams["process_start_time_seconds"].typed)
        self.assertIsNone(fams["process_start_time_seconds"].help)
        # Families declared with no sample.
        for name in ("lb_backend_response_seconds", "lb_errors_total"):
            self.assertEqual(fams[name].samples, [])
            self.assertTrue(fams[name].typed)
        self.assertEqual(fams["lb_requests_total"].help,
                         'Requests received, unrouted ones under cluster="none".')
        self.assertEqual(fams["lb_backend_latency_seconds"].help,
                         "EWMA of the response time; a back\\slash and a new\nline.")
        # Escaped label values come back unescaped.
        self.assertEqual(value(fams, "lb_backend_healthy", cluster='we"ird\\na\nme',
                               backend="127.0.0.1:9002"), 0)
        self.assertEqual(len(fams["lb_request_duration_seconds"].samples), 16)
        self.assertEqual(value(fams, "lb_request_duration_seconds_bucket", cluster="cluster1",
                               le="+Inf"), 1027)
        self.assertEqual(value(fams, "lb_request_duration_seconds_count", cluster="none"), 3)
        self.assertTrue(math.isnan(value(fams, "lb_backend_latency_seconds", cluster="cluster1",
                                         backend="127.0.0.1:9002")))
        self.assertEqual(value(fams, "temperature_low"), -math.inf)
        self.assertEqual(value(fams, "lb_bytes_total", direction="in"), 1.5e6)
        ts = fams["process_start_time_seconds"].samples[0]
        self.assertEqual((ts.value, ts.timestamp), (1.7e9, 1700000000000))
        self.assertEqual(ts.line, len(VALID.splitlines()))
        self.assertEqual(fams["lb_requests_total"].samples[0].line, 4)

    def test_helpers(self):
        fams = parse(VALID)
        self.assertEqual(sum_values(fams, "lb_requests_total"), 1030)
        self.assertEqual(sum_values(fams, "lb_responses_total", cluster="cluster1"), 1027)
        self.assertEqual(sum_values(fams, "lb_responses_total", code="4xx"), 3)
        self.assertEqual(sum_values(fams, "lb_responses_total", code="3xx"), 0)
        self.assertEqual(sum_values(fams, "lb_errors_total"), 0)
        self.assertEqual(len(promtext.samples(fams, "lb_request_duration_seconds_bucket",
                                              cluster="none")), 6)
        # value() wants the exact label set.
        with self.assertRaises(KeyError):
            value(fams, "lb_responses_total", cluster="cluster1")
        with self.assertRaises(KeyError):
            value(fams, "lb_nothing_total")
        hist = parse(HIST)
        self.assertEqual(value(hist, "h_bucket", le="0.1"), 1)
        self.assertEqual(value(hist, "h_bucket", le=1), 2)  # non-str label values as str()

    def test_syntax_the_format_allows(self):
        text = ('\n'
                '  # indented comment\n'
                '#no space, a comment\n'
                '# TYPE\tc_total   counter  \n'
                '# HELP c_total\n'
                'c_total{ a = "x" , b="{}=,#\\\\" , } 1 \n'
                'c_total{} 2\n'
                '\t c_total{a="\u00e9\u4e2d"}\t3\t-5\n'
                '\n'
                'g:sub_name:rate5m {x_1="" ,} +Inf\n'
                'g2 .5\n'
                'g3 1.\n'
                'g4 -0\n'
                'g5 1E-3\n'
                'g6 Inf\n')
        fams = parse(text)
        self.assertEqual(fams["c_total"].help, "")
        self.assertEqual(fams["c_total"].type, "counter")
        self.assertEqual(value(fams, "c_total", a="x", b="{}=,#\\"), 1)
        self.assertEqual(value(fams, "c_total"), 2)
        s = fams["c_total"].samples[2]
        self.assertEqual((s.labels, s.value, s.timestamp), ({"a": "\u00e9\u4e2d"}, 3, -5))
        self.assertEqual(value(fams, "g:sub_name:rate5m", x_1=""), math.inf)
        self.assertEqual([value(fams, n) for n in ("g2", "g3", "g4", "g5", "g6")],
                         [0.5, 1.0, 0.0, 0.001, math.inf])

    def test_more_valid_shapes(self):
        cases = {
            "empty text": "",
            "only comments": "# nothing\n",
            "help after its own samples": "# TYPE a gauge\na 1\n# HELP a late help\n",
            "bytes input": b"a 1\n",
            "buckets out of order in the text": ('# TYPE h histogram\nh_bucket{le="+Inf"} 3\n'
                                                 'h_bucket{le="1"} 2\nh_sum 1\nh_count 3\n'),
            "equal buckets and zero": ('# TYPE h histogram\nh_bucket{le="1"} 0\nh_bucket{le="2"} 0\n'
                                       'h_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n'),
            "negative histogram sum": ('# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum -4\n'
                                       'h_count 1\n'),
            "summary without quantiles": "# TYPE s summary\ns_sum 1\ns_count 1\n",
            "gauge negative and NaN": "# TYPE g gauge\ng{a=\"1\"} -3\ng{a=\"2\"} NaN\n",
            "counter not ending in _total": "# TYPE c counter\nc 1\n",
            # 0.0.4: "x_total" is another (untyped) family than the counter "x".
            "counter x and untyped x_total": "# TYPE x counter\nx_total 1\n",
            "untyped histogram-like names": "x_bucket 1\nx_sum 2\nx_count -1\n",
            "histogram per label set": ('# TYPE h histogram\nh_bucket{a="1",le="1"} 1\n'
                                        'h_bucket{a="1",le="+Inf"} 1\nh_sum{a="1"} 1\n'
                                        'h_count{a="1"} 1\nh_bucket{a="2",le="1"} 4\n'
                                        'h_bucket{a="2",le="+Inf"} 5\nh_sum{a="2"} 9\n'
                                        'h_count{a="2"} 5\n'),
        }
        for name, text in cases.items():
            with self.subTest(name):
                parse(text)
        self.assertEqual(parse(""), {})
        self.assertEqual(parse("# TYPE x counter\nx_total 1\n")["x_total"].type, "untyped")
        parse("# TYPE c_total counter\nc_total 1\n", counter_total=True)

    def test_prometheus_client_reads_it_alike(self):
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            self.skipTest("python3-prometheus-client is not installed")
        theirs = {}
        for fam in text_string_to_metric_families(VALID):
            for s in fam.samples:
                theirs[(s.name, frozenset(s.labels.items()))] = s.value
        ours = {(s.name, frozenset(s.labels.items())): s.value
                for f in parse(VALID).values() for s in f.samples}
        self.assertEqual(set(theirs), set(ours))
        for key, v in ours.items():
            if math.isnan(v):
                self.assertTrue(math.isnan(theirs[key]), key)
            else:
                self.assertEqual(theirs[key], v, key)


# (name, text, line of the error, a piece of its reason)
BAD = [
    ("no final newline", "a 1\nb 2", 2, "does not end with \\n"),
    ("carriage return", "a 1\r\n", 1, "carriage return"),
    ("not UTF-8", b"a 1\nb{x=\"\xff\"} 1\n", 2, "not UTF-8"),
    # HELP and TYPE
    ("second HELP", "# HELP a one\n# HELP a two\na 1\n", 2, "second HELP"),
    ("second TYPE", "# TYPE a gauge\n# TYPE a gauge\n", 2, "second TYPE"),
    ("TYPE after the samples", "# HELP a x\na 1\n# TYPE a gauge\n", 3, "after its first sample"),
    ("unknown type", "# TYPE a timer\n", 1, "unknown type 'timer'"),
    ("type in capitals", "# TYPE a Counter\n", 1, "unknown type"),
    ("text after the type", "# TYPE a gauge extra\n", 1, "text after the type"),
    ("TYPE without type", "# TYPE a\n", 1, "without a type"),
    ("HELP without name", "# HELP\n", 1, "without a metric name"),
    ("HELP bad name", "# HELP 1a text\n", 1, "invalid metric name '1a'"),
    ("TYPE bad name", "# TYPE a-b gauge\n", 1, "invalid metric name 'a-b'"),
    ("HELP bad escape", "# HELP a tab\\there\n", 1, "invalid escape \\t in HELP"),
    ("HELP escaped quote", '# HELP a say \\"hi\\"\n', 1, "invalid escape"),
    ("HELP for a histogram's sample", "# TYPE h histogram\n# HELP h_bucket x\n", 2,
     "sample name of histogram h"),
    ("TYPE histogram over a family", "h_count 1\n# TYPE h histogram\n", 2,
     "h_count is already a family"),
    # families in one block
    ("interleaved samples", 'a 1\nb 1\na{x="y"} 2\n', 3, "family a is not in one block"),
    ("HELP after another family", "# TYPE a gauge\nb 1\n# HELP a late\n", 3,
     "family a is not in one block"),
    ("histogram split", HIST.replace("h_sum 1.5\n", "other 1\nh_sum 1.5\n"), 6,
     "family h is not in one block"),
    # names
    ("name starts with a digit", "1abc 1\n", 1, "invalid metric name"),
    ("dash in name", "a-b 1\n", 1, "invalid character '-'"),
    ("dot in name", "a.b 1\n", 1, "invalid character '.'"),
    ("label name with a digit first", 'a{1x="y"} 1\n', 1, "invalid label name"),
    ("colon in label name", 'a{x:y="z"} 1\n', 1, "no = after label name x"),
    ("reserved label name", 'a{__name__="b"} 1\n', 1, "reserved"),
    ("reserved label prefix", 'a{x="1",__meta="b"} 1\n', 1, "reserved"),
    # label values
    ("unquoted label value", "a{x=y} 1\n", 1, "not in double quotes"),
    ("single quotes", "a{x='y'} 1\n", 1, "not in double quotes"),
    ("bad escape in label value", 'a{x="\\t"} 1\n', 1, "invalid escape \\t"),
    ("backslash at the end of the line", 'a{x="y\\\n', 1, "unterminated value of label x"),
    ("backslash at the end of HELP", '# HELP a text\\\n', 1, "lone \\ at the end"),
    ("backslash before the closing quote", 'a{x="y\\"} 1\n', 1, "unterminated value of label x"),
    ("unterminated label set", 'a{x="y" 1\n', 1, "no , or }"),
    ("label set open at the end", 'a{x="y"\n', 1, "unterminated label set"),
    ("label set open after a comma", 'a{x="y",\n', 1, "unterminated label set"),
    ("missing comma", 'a{x="1" y="2"} 1\n', 1, "no , or }"),
    ("label twice", 'a{x="1",x="2"} 1\n', 1, "label x twice"),
    ("duplicate series", 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\n', 2, "duplicate series"),
    ("duplicate series without labels", "a 1\na{} 2\n", 2, "duplicate series"),
    # values and timestamps
    ("no value", "a\n", 1, "no value"),
    ("no value after labels", 'a{x="1"}\n', 1, "no value"),
    ("no blank before the value", 'a{x="1"}1\n', 1, "no blank"),
    ("comma decimal", "a 1,5\n", 1, "not a float"),
    ("word value", "a one\n", 1, "not a float"),
    ("lower-case inf", "a inf\n", 1, "not a float"),
    ("lower-case nan", "a nan\n", 1, "not a float"),
    ("hex float", "a 0x1p3\n", 1, "not a float"),
    ("underscore in number", "a 1_000\n", 1, "not a float"),
    ("float timestamp", "a 1 1.5\n", 1, "timestamp '1.5'"),
    ("text after the timestamp", "a 1 2 3\n", 1, "text after the timestamp"),
    ("vertical tab", "a\x0b1\n", 1, "invalid character"),
    ("form feed before timestamp", "a 1\x0c2\n", 1, "whitespace other than blanks"),
    # counters
    ("negative counter", "# TYPE c_total counter\nc_total -1\n", 2, "counters are not negative"),
    ("NaN counter", "# TYPE c_total counter\nc_total{a=\"b\"} NaN\n", 2, "counters are not negative"),
    ("-Inf counter", "# TYPE c_total counter\nc_total -Inf\n", 2, "counters are not negative"),
    # histograms
    ("histogram sample without suffix", "# TYPE h histogram\nh 1\n", 2, "only h_bucket, h_sum and h_count"),
    ("bucket without le", '# TYPE h histogram\nh_bucket{a="1"} 1\n', 2, "without an le label"),
    ("le not a float", '# TYPE h histogram\nh_bucket{le="big"} 1\n', 2, "le='big'"),
    ("le on the sum", '# TYPE h histogram\nh_sum{le="1"} 1\n', 2, "h_sum with an le label"),
    ("le on the count", '# TYPE h histogram\nh_count{le="1"} 1\n', 2, "h_count with an le label"),
    ("negative bucket", HIST.replace('h_bucket{le="0.1"} 1', 'h_bucket{le="0.1"} -1'), 2,
     "bucket counts are not negative"),
    ("negative count", HIST.replace("h_count 3", "h_count -3"), 6, "counts are not negative"),
    ("not cumulative", HIST.replace('h_bucket{le="1"} 2', 'h_bucket{le="1"} 0'), 3,
     "not cumulative: le=1 has 0.0, less than le=0.1 with 1.0"),
    ("not cumulative, out of text order",
     '# TYPE h histogram\nh_bucket{le="+Inf"} 3\nh_bucket{le="2"} 5\nh_bucket{le="1"} 1\nh_sum 1\nh_count 3\n',
     2, "not cumulative: le=+Inf"),
    ("no +Inf bucket", HIST.replace('h_bucket{le="+Inf"} 3\n', ""), 3, 'no le="+Inf" bucket'),
    ("count differs from +Inf", HIST.replace("h_count 3", "h_count 4"), 6,
     'h_count is 4.0 but the le="+Inf" bucket is 3.0'),
    ("no sum", HIST.replace("h_sum 1.5\n", ""), 2, "has no h_sum"),
    ("no count", HIST.replace("h_count 3\n", ""), 2, "has no h_count"),
    ("two buckets for one le", HIST.replace('h_bucket{le="1"} 2', 'h_bucket{le="1"} 2\nh_bucket{le="1.0"} 2'),
     4, "two buckets for le=1.0"),
    ("sum and count without buckets", "# TYPE h histogram\nh_sum 0\nh_count 0\n", 2, "no _bucket samples"),
    ("one label set incomplete",
     HIST + 'h_bucket{a="2",le="+Inf"} 1\nh_count{a="2"} 1\n', 7, 'histogram h{a="2"} has no h_sum'),
    # summaries
    ("summary sample without quantile", "# TYPE s summary\ns 1\ns_sum 1\ns_count 1\n", 2,
     "without a quantile label"),
    ("quantile out of range", '# TYPE s summary\ns{quantile="1.5"} 1\ns_sum 1\ns_count 1\n', 2,
     "not a float in [0, 1]"),
    ("quantile on the sum", '# TYPE s summary\ns_sum{quantile="0.5"} 1\n', 2, "with a quantile label"),
    ("summary without sum", '# TYPE s summary\ns{quantile="0.5"} 1\ns_count 1\n', 2, "has no s_sum"),
    ("summary without count", '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 1\n', 2, "has no s_count"),
]


class Invalid(unittest.TestCase):
    def test_each_violation(self):
        for name, text, line, reason in BAD:
            with self.subTest(name):
                with self.assertRaises(PromFormatError) as cm:
                    parse(text)
                self.assertIn(reason, cm.exception.reason)
                self.assertEqual(cm.exception.line, line, str(cm.exception))
                self.assertTrue(str(cm.exception).startswith("line %d: " % line))

    def test_each_violation_inside_the_valid_exposition(self):
        """The same checks hold in the middle of a long text: one bad line
        inserted after the valid text's line 10 is reported with its number."""
        lines = VALID.splitlines(keepends=True)
        for bad_line, reason in [('lb_responses_total{cluster="x",code="4xx"} -3\n', "not negative"),
                                 ('lb_responses_total{cluster="none",code="4xx"} 3\n', "duplicate series"),
                                 ('lb_responses_total{code="2xx",code="3xx"} 3\n', "label code twice"),
                                 ('lb_responses_total{cluster="a\\b"} 3\n', "invalid escape"),
                                 ("# TYPE lb_responses_total counter\n", "second TYPE"),
                                 ("lb_requests_total 5\n", "not in one block")]:
            with self.subTest(bad_line):
                text = "".join(lines[:10] + [bad_line] + lines[10:])
                with self.assertRaises(PromFormatError) as cm:
                    parse(text)
                self.assertEqual(cm.exception.line, 11, str(cm.exception))
                self.assertIn(reason, cm.exception.reason)

    def test_counter_total_option(self):
        with self.assertRaises(PromFormatError) as cm:
            parse("# HELP c x\n# TYPE c counter\nc 1\n", counter_total=True)
        self.assertEqual(cm.exception.line, 2)
        self.assertIn("does not end in _total", cm.exception.reason)


if __name__ == "__main__":
    unittest.main()
