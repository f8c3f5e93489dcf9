"""A strict checker of the Prometheus text exposition format, version 0.0.4
(what the proxy's admin listener serves at /metrics). Python stdlib only.

    families = promtext.parse(text)      # dict: family name -> Family
    promtext.value(families, "lb_requests_total", cluster="cluster1")
    promtext.sum_values(families, "lb_responses_total", code="2xx")

parse() raises PromFormatError (with .line, 1-based, and .reason) on the first
violation it finds:

  * the text is not empty and does not end with "\\n"; a line has "\\r";
  * "# HELP name text" / "# TYPE name counter|gauge|histogram|summary|untyped":
    a bad metric name, an unknown type, extra text after the type, a bad escape
    in the help text (only \\\\ and \\n), a second HELP or TYPE line for a family,
    a TYPE line after the family's first sample, a HELP or TYPE line for a name
    that is one of the samples of a histogram or summary (x_bucket, x_sum, x_count);
  * the lines of a family (its HELP, TYPE and samples) not in one block;
  * sample lines: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names
    [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__", label values in double
    quotes with only \\\\, \\" and \\n as escapes, no label name twice in a sample,
    no series (name and label set) twice in the text, the value a float (digits,
    or +Inf, -Inf, Inf, NaN), an optional integer timestamp (milliseconds), and
    nothing else on the line;
  * counters: values not negative and not NaN. Samples of a counter carry the
    family's name: "# TYPE x_total counter" then "x_total ..." (a "_total"
    suffix is the convention, required only with parse(..., counter_total=True));
  * histograms: only x_bucket (with an "le" label, a float), x_sum and x_count
    (without "le") samples; for each label set: buckets not negative, cumulative
    (not decreasing in le order), no le twice, an le="+Inf" bucket equal to
    x_count, and x_sum and x_count present;
  * summaries: x samples with a "quantile" label in [0, 1], x_sum and x_count
    without it, and x_sum and x_count present for each label set; x_count not
    negative.

Blank lines and "#" lines other than HELP and TYPE (comments) are ignored; as in
Prometheus' own parser, blanks and tabs separate tokens, also inside braces,
and a trailing comma in a label set is allowed.

As a command: python3 promtext.py [FILE|-] checks the file (default stdin) and
prints a summary of its families, or the error (exit status 1)."""

import math
import re
import sys
from dataclasses import dataclass, field

TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?Inf|NaN")
TIMESTAMP = re.compile(r"-?[0-9]+")
BLANKS = re.compile(r"[ \t]*")
LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
HELP_ESCAPES = {"\\": "\\", "n": "\n"}
# Sample-name suffixes of the families that have several sample names.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


class PromFormatError(ValueError):
    def __init__(self, line, reason):
        super().__init__("line %d: %s" % (line, reason))
        self.line = line
        self.reason = reason


@dataclass
class Sample:
    name: str
    labels: dict
    value: float
    timestamp: int = None
    line: int = 0


@dataclass
class Family:
    name: str
    help: str = None            # None: no HELP line
    type: str = "untyped"
    typed: bool = False         # a TYPE line was seen
    samples: list = field(default_factory=list)
    line: int = 0               # its first line


def _float(text):
    """The float of a sample value or an le/quantile label, None if not one."""
    if not FLOAT.fullmatch(text):
        return None
    return float(text)


def _fmt_labels(labels):
    return "{%s}" % ",".join('%s="%s"' % (k, v) for k, v in sorted(labels.items()))


class _Parser:
    def __init__(self, text, counter_total):
        self.text = text
        self.counter_total = counter_total
        self.families = {}
        self.current = None     # the family of the last HELP/TYPE/sample line
        self.series = {}        # (name, frozenset(labels)) -> line
        self.lineno = 0

    def fail(self, reason, line=None):
        raise PromFormatError(self.lineno if line is None else line, reason)

    def run(self):
        text = self.text
        lines = text.split("\n")
        if text and not text.endswith("\n"):
            raise PromFormatError(len(lines), "the text does not end with \\n")
        for self.lineno, line in enumerate(lines[:-1], 1):
            if "\r" in line:
                self.fail("carriage return in the line (lines end with \\n alone)")
            stripped = line.lstrip(" \t")
            if not stripped:
                continue
            if stripped.startswith("#"):
                self.comment(stripped)
            else:
                self.sample(stripped)
        for fam in self.families.values():
            if fam.type == "histogram":
                self.check_histogram(fam)
            elif fam.type == "summary":
                self.check_summary(fam)
        return self.families

    # --- families ------------------------------------------------------------
    def enter(self, name):
        """Makes `name` the current family (created if new); its lines must be
        one block."""
        if name == self.current:
            return self.families[name]
        if name in self.families:
            self.fail("family %s is not in one block: its lines began at line %d, another "
                      "family came between" % (name, self.families[name].line))
        self.families[name] = Family(name, line=self.lineno)
        self.current = name
        return self.families[name]

    def owner(self, name):
        """The histogram or summary family whose sample `name` is, or None."""
        for ftype, suffixes in SUFFIXES.items():
            for suffix in suffixes:
                if name.endswith(suffix):
                    fam = self.families.get(name[:-len(suffix)])
                    if fam is not None and fam.type == ftype:
                        return fam
        return None

    def comment(self, line):
        m = re.match(r"#[ \t]*([^ \t]*)", line)
        keyword = m.group(1)
        if keyword not in ("HELP", "TYPE"):
            return  # a comment
        rest = line[m.end():]
        b = BLANKS.match(rest).end()
        n = METRIC_NAME.match(rest, b)
        if b == len(rest):
            self.fail("%s line without a metric name" % keyword)
        if not n or (n.end() < len(rest) and rest[n.end()] not in " \t"):
            bad = re.match(r"[^ \t]*", rest[b:]).group(0)
            self.fail("invalid metric name %r in %s line" % (bad, keyword))
        name = n.group(0)
        tail = rest[BLANKS.match(rest, n.end()).end():]
        owner = self.owner(name)
        if owner is not None:
            self.fail("%s line for %s, a sample name of %s %s" % (keyword, name, owner.type, owner.name))
        if keyword == "HELP":
            help_text = self.unescape_help(tail)
            fam = self.enter(name)
            if fam.help is not None:
                self.fail("second HELP line for %s" % name)
            fam.help = help_text
            return
        parts = tail.split()
        if not parts:
            self.fail("TYPE line for %s without a type" % name)
        if parts[0] not in TYPES:
            self.fail("unknown type %r for %s (one of %s)" % (parts[0], name, ", ".join(TYPES)))
        if len(parts) > 1 or any(c not in " \t" for c in tail[len(parts[0]):]):
            self.fail("text after the type in the TYPE line for %s" % name)
        if parts[0] in SUFFIXES:
            for suffix in SUFFIXES[parts[0]]:
                if name + suffix in self.families:
                    self.fail("%s %s: its sample name %s is already a family (line %d)"
                              % (parts[0], name, name + suffix, self.families[name + suffix].line))
        fam = self.enter(name)
        if fam.typed:
            self.fail("second TYPE line for %s" % name)
        if fam.samples:
            self.fail("TYPE line for %s after its first sample (line %d)" % (name, fam.samples[0].line))
        if parts[0] == "counter" and self.counter_total and not name.endswith("_total"):
            self.fail("counter %s: its name does not end in _total" % name)
        fam.type = parts[0]
        fam.typed = True

    def unescape_help(self, text):
        out = []
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\\":
                e = text[i + 1:i + 2]
                if not e:
                    self.fail("a lone \\ at the end of the HELP text")
                if e not in HELP_ESCAPES:
                    self.fail("invalid escape \\%s in HELP text (only \\\\ and \\n)" % e)
                out.append(HELP_ESCAPES[e])
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)

    # --- samples -------------------------------------------------------------
    def sample(self, line):
        m = METRIC_NAME.match(line)
        if not m:
            self.fail("invalid metric name at %r" % line[:40])
        name = m.group(0)
        i = BLANKS.match(line, m.end()).end()
        labels = {}
        if i < len(line) and line[i] == "{":
            i = self.labels(line, i + 1, labels)
            if i < len(line) and line[i] not in " \t":
                self.fail("no blank between the labels and the value of %s" % name)
        elif m.end() < len(line) and line[m.end()] not in " \t":
            self.fail("invalid character %r in metric name %s" % (line[m.end()], name + line[m.end()]))
        tokens = line[i:].split()
        if any(c not in " \t" for c in line[i:] if c.isspace()):
            self.fail("whitespace other than blanks and tabs in the sample of %s" % name)
        if not tokens:
            self.fail("no value for %s" % name)
        if len(tokens) > 2:
            self.fail("text after the timestamp of %s: %r" % (name, " ".join(tokens[2:])))
        value = _float(tokens[0])
        if value is None:
            self.fail("value %r of %s is not a float" % (tokens[0], name))
        ts = None
        if len(tokens) == 2:
            if not TIMESTAMP.fullmatch(tokens[1]):
                self.fail("timestamp %r of %s is not an integer" % (tokens[1], name))
            ts = int(tokens[1])

        fam = self.owner(name) or self.families.get(name)
        fam = self.enter(fam.name if fam is not None else name)
        key = (name, frozenset(labels.items()))
        if key in self.series:
            self.fail("duplicate series %s%s (first at line %d)" % (name, _fmt_labels(labels), self.series[key]))
        self.series[key] = self.lineno
        self.check_sample(fam, name, labels, value)
        fam.samples.append(Sample(name, labels, value, ts, self.lineno))

    def labels(self, line, i, labels):
        """Parses the label set from after "{" into `labels`; the index after "}"."""
        n = len(line)
        while True:
            i = BLANKS.match(line, i).end()
            if i >= n:
                self.fail("unterminated label set")
            if line[i] == "}":
                return i + 1
            m = LABEL_NAME.match(line, i)
            if not m:
                self.fail("invalid label name at %r" % line[i:i + 40])
            lname = m.group(0)
            if lname.startswith("__"):
                self.fail("label name %s: names beginning with __ are reserved" % lname)
            if lname in labels:
                self.fail("label %s twice in one sample" % lname)
            i = BLANKS.match(line, m.end()).end()
            if i >= n or line[i] != "=":
                self.fail("no = after label name %s" % lname)
            i = BLANKS.match(line, i + 1).end()
            if i >= n or line[i] != '"':
                self.fail("the value of label %s is not in double quotes" % lname)
            i += 1
            out = []
            while True:
                if i >= n:
                    self.fail("unterminated value of label %s" % lname)
                c = line[i]
                if c == "\\":
                    e = line[i + 1:i + 2]
                    if not e:
                        self.fail("unterminated value of label %s (a \\ ends the line)" % lname)
                    if e not in LABEL_ESCAPES:
                        self.fail("invalid escape \\%s in the value of label %s (only \\\\, \\\" and \\n)"
                                  % (e, lname))
                    out.append(LABEL_ESCAPES[e])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    out.append(c)
                    i += 1
            labels[lname] = "".join(out)
            i = BLANKS.match(line, i).end()
            if i >= n:
                self.fail("unterminated label set")
            if line[i] == ",":
                i += 1
            elif line[i] == "}":
                return i + 1
            else:
                self.fail("no , or } after the value of label %s" % lname)

    def check_sample(self, fam, name, labels, value):
        t = fam.type
        if t == "counter":
            if math.isnan(value) or value < 0:
                self.fail("counter %s has the value %r (counters are not negative, not NaN)" % (name, value))
        elif t == "histogram":
            suffix = name[len(fam.name):]
            if suffix == "_bucket":
                if "le" not in labels:
                    self.fail("%s without an le label" % name)
                if _float(labels["le"]) is None:
                    self.fail("le=%r of %s is not a float" % (labels["le"], name))
                if math.isnan(value) or value < 0:
                    self.fail("%s%s has the value %r (bucket counts are not negative)"
                              % (name, _fmt_labels(labels), value))
            elif suffix in ("_sum", "_count"):
                if "le" in labels:
                    self.fail("%s with an le label" % name)
                if suffix == "_count" and (math.isnan(value) or value < 0):
                    self.fail("%s has the value %r (counts are not negative)" % (name, value))
            else:
                self.fail("sample %s of histogram %s: only %s_bucket, %s_sum and %s_count"
                          % (name, fam.name, fam.name, fam.name, fam.name))
        elif t == "summary":
            if name == fam.name:
                q = _float(labels["quantile"]) if "quantile" in labels else None
                if "quantile" not in labels:
                    self.fail("sample %s of summary %s without a quantile label" % (name, fam.name))
                if q is None or not 0 <= q <= 1:
                    self.fail("quantile=%r of %s is not a float in [0, 1]" % (labels["quantile"], name))
            else:
                if "quantile" in labels:
                    self.fail("%s with a quantile label" % name)
                if name.endswith("_count") and (math.isnan(value) or value < 0):
                    self.fail("%s has the value %r (counts are not negative)" % (name, value))

    def check_histogram(self, fam):
        groups = {}  # label set without le -> {"bucket": [...], "sum": s, "count": s}
        for s in fam.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if k != "le")
            g = groups.setdefault(key, {"bucket": [], "sum": None, "count": None})
            kind = s.name[len(fam.name) + 1:]
            if kind == "bucket":
                g["bucket"].append(s)
            else:
                g[kind] = s
        for key, g in groups.items():
            where = "histogram %s%s" % (fam.name, _fmt_labels(dict(key)))
            first = min(s.line for s in g["bucket"] + [g["sum"], g["count"]] if s is not None)
            if not g["bucket"]:
                self.fail("%s has no _bucket samples" % where, first)
            seen = {}
            for s in g["bucket"]:
                le = float(s.labels["le"])
                if le in seen:
                    self.fail("%s: two buckets for le=%s (lines %d and %d)"
                              % (where, s.labels["le"], seen[le].line, s.line), s.line)
                seen[le] = s
            ordered = sorted(g["bucket"], key=lambda s: float(s.labels["le"]))
            for lo, hi in zip(ordered, ordered[1:]):
                if hi.value < lo.value:
                    self.fail("%s is not cumulative: le=%s has %r, less than le=%s with %r"
                              % (where, hi.labels["le"], hi.value, lo.labels["le"], lo.value), hi.line)
            inf = ordered[-1]
            if float(inf.labels["le"]) != math.inf:
                self.fail('%s has no le="+Inf" bucket' % where, inf.line)
            if g["count"] is None:
                self.fail("%s has no %s_count" % (where, fam.name), first)
            if g["sum"] is None:
                self.fail("%s has no %s_sum" % (where, fam.name), first)
            if g["count"].value != inf.value:
                self.fail('%s: %s_count is %r but the le="+Inf" bucket is %r'
                          % (where, fam.name, g["count"].value, inf.value), g["count"].line)

    def check_summary(self, fam):
        groups = {}
        for s in fam.samples:
            key = frozenset((k, v) for k, v in s.labels.items() if k != "quantile")
            groups.setdefault(key, {}).setdefault(s.name[len(fam.name):], []).append(s)
        for key, g in groups.items():
            where = "summary %s%s" % (fam.name, _fmt_labels(dict(key)))
            first = min(s.line for ss in g.values() for s in ss)
            for suffix in ("_sum", "_count"):
                if suffix not in g:
                    self.fail("%s has no %s%s" % (where, fam.name, suffix), first)


def parse(text, counter_total=False):
    """Checks an exposition (str, or bytes in UTF-8) and returns its families,
    in the order of the text: {name: Family}. counter_total: also require
    counter families' names to end in _total."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PromFormatError(bytes(text).count(b"\n", 0, e.start) + 1, "not UTF-8: %s" % e) from None
    return _Parser(text, counter_total).run()


def _samples(families):
    for fam in families.values():
        yield from fam.samples


def _want(labels):
    return {k: v if isinstance(v, str) else str(v) for k, v in labels.items()}


def samples(families, name, **labels_subset):
    """The samples named `name` whose labels include labels_subset."""
    want = _want(labels_subset)
    return [s for s in _samples(families)
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items())]


def value(families, name, **labels):
    """The value of the sample named `name` with exactly these labels; KeyError
    when there is none."""
    want = _want(labels)
    for s in _samples(families):
        if s.name == name and s.labels == want:
            return s.value
    raise KeyError("no sample %s%s (there are: %s)" % (
        name, _fmt_labels(want),
        ", ".join(s.name + _fmt_labels(s.labels) for s in _samples(families) if s.name == name)
        or "none of that name"))


def sum_values(families, name, **labels_subset):
    """The sum of the values of the samples named `name` whose labels include
    labels_subset (0.0 when none)."""
    return float(sum(s.value for s in samples(families, name, **labels_subset)))


def main(argv):
    path = argv[1] if len(argv) > 1 else "-"
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        fams = parse(data)
    except PromFormatError as e:
        print("%s: %s" % (path, e), file=sys.stderr)
        return 1
    for fam in fams.values():
        print("%-40s %-9s %d samples" % (fam.name, fam.type, len(fam.samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
