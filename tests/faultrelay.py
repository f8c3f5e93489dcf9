"""A fault-injecting TCP relay for HTTP/1.1 (in the spirit of toxiproxy, which
Debian lacks): one relay per backend, between the proxy and the backend, on
127.0.0.1. Python 3.11 stdlib only (asyncio protocols, one event loop thread
per relay).

It understands just enough HTTP/1.1 to count exchanges: each request head the
client (the proxy) sends upstream opens an exchange, answered by one response
from the backend whose length it learns from the response head's
Content-Length (HEAD requests, 1xx, 204 and 304 carry no body). A response
without Content-Length (chunked, or read to EOF), an upgrade or a chunked
request turns the rest of that connection into a plain relay: nothing more
is counted or injected on it ("passthrough" in the stats).

Faults, chosen per exchange with a seeded random.Random:

  reset_share              reset this share of exchanges at a uniformly random
                           byte offset of the response (head + body), in
                           [0, total_len): relay the bytes before the offset,
                           wait until the kernel has sent them, then close the
                           client side with SO_LINGER {1, 0} (a TCP RST) and
                           close the backend side.
  reset_before_head_share  reset once the backend's first response bytes
                           arrive, relaying none of them.
  latency_ms, jitter_ms    delay each response's first byte by latency +
                           uniform(-jitter, +jitter) ms (at least 0), without
                           reordering a connection's bytes.
  stall_share, stall_ms    stall this share of exchanges at a uniformly random
                           offset of the response for stall_ms, then go on.
  skip_paths               requests whose target starts with one of these
                           (e.g. ("/health",)) are never faulted.

The shares are exclusive, drawn in this order: reset before head, reset
mid-response, stall (their sum is clamped to 1). The k-th faultable exchange
(not on skip_paths) of a relay gets the fault plan(seed, ...)[k], whatever
the timing: one draw of random.Random(seed) per exchange (offsets and jitter
come from a second generator).

    r = FaultRelay(backend_port, reset_share=0.01, seed=1)
    r.start()           # listening on 127.0.0.1:r.port (r.addr)
    r.set(reset_share=0, latency_ms=50)   # change faults live
    r.stats()           # counters, a dict (see FaultRelay.stats)
    r.stop()

As a command (prints "ready PORT" once listening; its stats as one JSON line
on SIGTERM/SIGINT, then exits 0; SIGUSR1 prints them and goes on):

    python3 faultrelay.py --target 127.0.0.1:PORT [--listen 127.0.0.1:0]
        [--reset-share F] [--reset-before-head-share F]
        [--latency-ms N --jitter-ms N] [--stall-share F --stall-ms N]
        [--skip-path PREFIX]... [--seed N]
"""

import argparse
import asyncio
import collections
import fcntl
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time

__all__ = ["FaultRelay", "OPTIONS", "plan"]

# The options set() takes, with their defaults.
OPTIONS = {
    "reset_share": 0.0,
    "reset_before_head_share": 0.0,
    "latency_ms": 0.0,
    "jitter_ms": 0.0,
    "stall_share": 0.0,
    "stall_ms": 0.0,
    "skip_paths": (),
}

# The reset offsets kept in stats()["reset_offsets"] (the counters go on).
MAX_OFFSETS = 10000
MAX_HEAD = 65536
SIOCOUTQNSD = 0x894B  # linux/sockios.h: bytes in the send queue not yet sent
_LINGER_RST = struct.pack("ii", 1, 0)
_INT0 = struct.pack("i", 0)

_CL = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*(?=\r\n)", re.I)
_TE = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.I)
_UPGRADE = re.compile(rb"\r\nupgrade[ \t]*:", re.I)

# Exchange faults.
F_NONE, F_RESET_BEFORE_HEAD, F_RESET, F_STALL = range(4)
# Response states.
S_HEAD, S_BODY = range(2)


def _decide(rng, before_head, reset, stall):
    """One exchange's fault: one draw of rng."""
    x = rng.random()
    if x < before_head:
        return F_RESET_BEFORE_HEAD
    if x < before_head + reset:
        return F_RESET
    if x < before_head + reset + stall:
        return F_STALL
    return F_NONE


FAULT_NAMES = {F_NONE: None, F_RESET_BEFORE_HEAD: "reset_before_head", F_RESET: "reset",
               F_STALL: "stall"}


def plan(seed, n, reset_share=0.0, reset_before_head_share=0.0, stall_share=0.0):
    """The faults a relay made with this seed and these shares (not changed
    by set()) gives its first n faultable exchanges (those not on
    skip_paths), in the order their request heads reach it: a list of None,
    "reset_before_head", "reset" or "stall". Offsets and jitter come from
    another generator, so this holds whatever the timing."""
    rng = random.Random(seed)
    if not (reset_share or reset_before_head_share or stall_share):
        return [None] * n
    return [FAULT_NAMES[_decide(rng, reset_before_head_share, reset_share, stall_share)]
            for _ in range(n)]


class _Opts:
    __slots__ = tuple(OPTIONS)

    def __init__(self, values):
        for k, v in values.items():
            setattr(self, k, v)


def _check_opts(values):
    out = {}
    for k, v in values.items():
        if k not in OPTIONS:
            raise TypeError("unknown fault option %r (known: %s)" % (k, ", ".join(OPTIONS)))
        if k == "skip_paths":
            if isinstance(v, (str, bytes)):
                v = (v,)
            v = tuple(p.encode() if isinstance(p, str) else bytes(p) for p in v)
        else:
            v = float(v)
            if v < 0 or (k.endswith("_share") and v > 1):
                raise ValueError("%s=%r out of range" % (k, v))
        out[k] = v
    return out


class _Exchange:
    __slots__ = ("head_only", "fault", "delay", "upgrade", "state", "head", "scan",
                 "total", "done", "head_len", "cut")

    def __init__(self, head_only, fault, delay, upgrade):
        self.head_only = head_only
        self.fault = fault
        self.delay = delay      # seconds before the first response byte, or 0
        self.upgrade = upgrade
        self.state = S_HEAD
        self.head = None        # bytearray of the response head while incomplete
        self.scan = 0
        self.total = 0          # head + body length, once the head is known
        self.done = 0           # bytes of this response relayed so far
        self.head_len = 0
        self.cut = -1           # offset of the reset or stall, -1 for none


def _response_body_len(head, head_only):
    """(body length, or None when the response is not length-delimited,
    status). head is the complete head (bytes)."""
    try:
        status = int(head[9:12])
    except ValueError:
        return None, 0
    if 100 <= status < 200:
        return 0, status
    if head_only or status in (204, 304):
        return 0, status
    if _TE.search(head):
        return None, status
    m = _CL.search(head)
    if not m:
        return None, status
    return int(m.group(1)), status


class _Upstream(asyncio.Protocol):
    """The relay's connection to the backend."""

    __slots__ = ("c",)

    def __init__(self, c):
        self.c = c

    def connection_made(self, transport):
        self.c._up_made(transport)

    def data_received(self, data):
        c = self.c
        if c.closed:
            return
        if c.held or c.inq:
            c.inq.append(data)
        else:
            rest = c._process(data)
            if rest:
                c.inq.appendleft(rest)

    def eof_received(self):
        self.c._up_eof()
        return False

    def connection_lost(self, exc):
        self.c._up_lost(exc)

    def pause_writing(self):
        self.c._client_reading(False)

    def resume_writing(self):
        self.c._client_reading(True)


class _Conn(asyncio.Protocol):
    """One client (proxy) connection and its backend connection."""

    def __init__(self, relay):
        self.relay = relay
        self.loop = relay._loop
        self.t = None           # client transport
        self.up = None          # backend transport
        self.early = []         # client bytes before the backend connection is up
        self.client_eof = False
        self.closed = False     # given up: a reset, or either side gone
        self.up_done = False    # the backend side closed (EOF) or lost
        # request side
        self.req_pass = False
        self.req_head = b""
        self.req_body_left = 0
        # response side
        self.resp_pass = False
        self.queue = collections.deque()
        self.inq = collections.deque()  # backend bytes not yet processed
        self.held = False
        self.client_blocked = False

    # ---- client side ----

    def connection_made(self, transport):
        self.t = transport
        r = self.relay
        r._conns.add(self)
        with r._lock:
            r._stats["connections"] += 1
        self.loop.create_task(self._connect())

    async def _connect(self):
        r = self.relay
        try:
            await self.loop.create_connection(lambda: _Upstream(self), r.target_host,
                                              r.target_port)
        except OSError:
            with r._lock:
                r._stats["connect_failures"] += 1
            self._rst_client()

    def _up_made(self, transport):
        if self.closed:
            transport.abort()
            return
        self.up = transport
        if self.early:
            transport.write(b"".join(self.early))
            self.early = None
        else:
            self.early = None
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()
        if self.client_blocked:
            transport.pause_reading()

    def data_received(self, data):
        if self.closed:
            return
        if not self.req_pass:
            self._parse_requests(data)
        if self.up is not None:
            self.up.write(data)
        else:
            self.early.append(data)

    def eof_received(self):
        self.client_eof = True
        if self.up is not None and not self.up.is_closing() and self.up.can_write_eof():
            self.up.write_eof()
        return True  # keep the client side open for the rest of the response

    def connection_lost(self, exc):
        self.relay._conns.discard(self)
        self.closed = True
        if self.up is not None:
            if exc is not None:
                self.up.abort()
            else:
                self.up.close()

    def pause_writing(self):
        self.client_blocked = True
        self._update_up_reading()

    def resume_writing(self):
        self.client_blocked = False
        self._update_up_reading()

    def _client_reading(self, on):
        if self.t is not None and not self.t.is_closing():
            (self.t.resume_reading if on else self.t.pause_reading)()

    def _update_up_reading(self):
        up = self.up
        if up is None or up.is_closing():
            return
        if self.held or self.client_blocked or self.closed:
            up.pause_reading()
        else:
            up.resume_reading()

    # ---- requests (client -> backend) ----

    def _parse_requests(self, data):
        pos, n = 0, len(data)
        while pos < n:
            if self.req_body_left:
                take = min(self.req_body_left, n - pos)
                self.req_body_left -= take
                pos += take
                continue
            if self.req_head:
                buf = self.req_head + data[pos:]
                start = max(0, len(self.req_head) - 3)
                base = pos - len(self.req_head)  # buf[i] is data[base + i] past the old part
            else:
                buf = data if pos == 0 else data[pos:]
                start = 0
                base = pos
                # (RFC 9112 2.2: empty lines before a request line are ignored)
                while buf.startswith(b"\r\n"):
                    buf = buf[2:]
                    base += 2
                    pos += 2
                if pos >= n:
                    return
            i = buf.find(b"\r\n\r\n", start)
            if i < 0:
                if len(buf) > MAX_HEAD:
                    self._passthrough_requests()
                    return
                self.req_head = bytes(buf)
                return
            head = buf[:i + 4]
            self.req_head = b""
            pos = base + i + 4
            self._request(head)
            if self.req_pass:
                return

    def _passthrough_requests(self):
        self.req_pass = True
        self.req_head = b""

    def _request(self, head):
        r = self.relay
        o = r._opts
        sp = head.find(b" ")
        method = head[:sp]
        target = head[sp + 1:head.find(b" ", sp + 1)]
        upgrade = _UPGRADE.search(head) is not None
        chunked = _TE.search(head) is not None
        m = _CL.search(head)
        self.req_body_left = int(m.group(1)) if m else 0
        skipped = bool(o.skip_paths) and target.startswith(o.skip_paths)
        fault, delay = F_NONE, 0.0
        if not skipped:
            if o.reset_before_head_share or o.reset_share or o.stall_share:
                fault = _decide(r._rng, o.reset_before_head_share, o.reset_share, o.stall_share)
            if o.latency_ms or o.jitter_ms:
                d = o.latency_ms
                if o.jitter_ms:
                    d += r._rng2.uniform(-o.jitter_ms, o.jitter_ms)
                delay = max(0.0, d) / 1000.0
        with r._lock:
            r._stats["exchanges"] += 1
            if skipped:
                r._stats["skipped"] += 1
        if not self.resp_pass:
            self.queue.append(_Exchange(method == b"HEAD", fault, delay, upgrade))
        if upgrade or chunked:
            self._passthrough_requests()

    # ---- responses (backend -> client) ----

    def _process(self, data):
        """Relays data (backend bytes) exchange by exchange; returns the bytes
        not processed because a hold (latency, stall) began, or None."""
        out = []
        pos, n = 0, len(data)
        while pos < n:
            q = self.queue
            if self.resp_pass or not q:
                out.append(data[pos:] if pos else data)
                break
            ex = q[0]
            if ex.state == S_BODY:
                take = ex.total - ex.done
                if take > n - pos:
                    take = n - pos
                if ex.cut >= 0 and ex.done + take > ex.cut:
                    k = ex.cut - ex.done
                    if k:
                        out.append(data[pos:pos + k])
                    ex.done += k
                    pos += k
                    ex.cut = -1
                    self._flush(out)
                    if ex.fault == F_RESET:
                        self._fault_reset(ex)
                        return None
                    self._count("stalls")
                    self._hold(self.relay._opts.stall_ms / 1000.0)
                    return data[pos:]
                out.append(data[pos:pos + take] if (pos or take != n) else data)
                ex.done += take
                pos += take
                if ex.done == ex.total:
                    q.popleft()
                    self._count("responses")
                continue
            # S_HEAD
            if ex.fault == F_RESET_BEFORE_HEAD and ex.head is None:
                self._flush(out)
                self._reset_client("resets_before_head", None)
                return None
            if ex.delay:
                d, ex.delay = ex.delay, 0.0
                self._flush(out)
                self._count("delayed")
                self._hold(d)
                return data[pos:]
            piece = data[pos:] if pos else data
            if ex.head is None:
                buf = piece
                start = 0
            else:
                start = max(0, len(ex.head) - 3)
                ex.head += piece
                buf = ex.head
            i = buf.find(b"\r\n\r\n", start)
            if i < 0:
                if ex.head is None:
                    ex.head = bytearray(piece)
                if len(ex.head) > MAX_HEAD:
                    self._resp_passthrough(out, bytes(ex.head))
                    ex.head = None
                break
            # the head is complete: buf (the head and what followed) is now
            # this exchange's data, from its first byte
            head_len = i + 4
            if ex.head is not None:
                buf = bytes(buf)
                ex.head = None
            data, pos, n = buf, 0, len(buf)
            body_len, status = _response_body_len(buf[:head_len], ex.head_only)
            if 100 <= status < 200:
                out.append(data[:head_len])
                if status == 101:
                    self._resp_passthrough(out, data[head_len:])
                    break
                # an interim response: the final one follows, same exchange
                pos = head_len
                continue
            if body_len is None or ex.upgrade:
                self._resp_passthrough(out, data)
                break
            ex.state = S_BODY
            ex.head_len = head_len
            ex.total = head_len + body_len
            if ex.fault in (F_RESET, F_STALL):
                ex.cut = self.relay._rng2.randrange(ex.total)
        self._flush(out)
        return None

    def _flush(self, out):
        if out:
            self.t.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _resp_passthrough(self, out, data):
        self.resp_pass = True
        self.queue.clear()
        self._count("passthrough")
        if data:
            out.append(data)

    def _count(self, key, n=1):
        r = self.relay
        with r._lock:
            r._stats[key] += n

    def _hold(self, seconds):
        self.held = True
        self._update_up_reading()
        self.loop.call_later(seconds, self._release)

    def _release(self):
        self.held = False
        if self.closed:
            return
        self._pump()
        self._update_up_reading()

    def _pump(self):
        inq = self.inq
        while inq and not self.held and not self.closed:
            rest = self._process(inq.popleft())
            if rest:
                inq.appendleft(rest)
        if not inq and not self.held and self.up_done and not self.closed:
            self.closed = True
            self.t.close()

    def _up_eof(self):
        self.up_done = True
        if not self.closed and not self.inq and not self.held:
            self.closed = True
            self.t.close()

    def _up_lost(self, exc):
        if self.closed:
            return
        if exc is not None:
            # the backend reset: so does the relay
            self._abort_client_rst()
        else:
            self._up_eof()

    # ---- resets ----

    def _fault_reset(self, ex):
        r = self.relay
        offset, head_len = ex.done, ex.head_len
        with r._lock:
            st = r._stats
            st["resets_mid_response"] += 1
            st["resets_after_head" if offset >= head_len else "resets_in_head"] += 1
            if len(r._offsets) < MAX_OFFSETS:
                r._offsets.append((offset, head_len, ex.total))
        self._reset_client(None, (offset, head_len, ex.total))

    def _reset_client(self, counter, _info):
        if counter:
            self._count(counter)
        self._count("resets")
        self.closed = True
        if self.up is not None:
            self.up.close()
        self.inq.clear()
        self.queue.clear()
        self._rst_when_sent(time.monotonic() + 1.0)

    def _rst_when_sent(self, deadline):
        """The RST once the bytes before it are on their way: asyncio's buffer
        empty and nothing unsent in the kernel's send queue (an RST drops
        what is still queued)."""
        t = self.t
        if t.is_closing():
            return
        if time.monotonic() < deadline:
            if t.get_write_buffer_size():
                self.loop.call_later(0.001, self._rst_when_sent, deadline)
                return
            sock = t.get_extra_info("socket")
            try:
                unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, _INT0))[0]
            except OSError:
                unsent = 0
            if unsent:
                self.loop.call_later(0.001, self._rst_when_sent, deadline)
                return
        self._abort_client_rst()

    def _abort_client_rst(self):
        self.closed = True
        t = self.t
        if t is None or t.is_closing():
            return
        sock = t.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        t.abort()
        if self.up is not None:
            self.up.close()

    def _rst_client(self):
        self._abort_client_rst()


_COUNTERS = ("connections", "connect_failures", "exchanges", "skipped", "responses",
             "resets", "resets_before_head", "resets_mid_response", "resets_in_head",
             "resets_after_head", "stalls", "delayed", "passthrough")


class FaultRelay:
    """One relay: listens on listen_host:listen_port (0: a free port) and
    relays every connection to target_host:target_port, injecting the
    faults of OPTIONS (keyword arguments here and to set())."""

    def __init__(self, target_port, target_host="127.0.0.1", listen_host="127.0.0.1",
                 listen_port=0, seed=1, **faults):
        self.target_host = target_host
        self.target_port = int(target_port)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.seed = seed
        opts = dict(OPTIONS)
        opts.update(_check_opts(faults))
        self._opts = _Opts(opts)
        self._rng = random.Random(seed)         # one draw per faultable exchange
        self._rng2 = random.Random(seed ^ 0x5DEECE66D)  # offsets, jitter
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._offsets = []
        self._conns = set()
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None
        self.port = None
        self.addr = None

    # ---- control (any thread) ----

    def start(self, timeout=10.0):
        """Starts the relay's thread; returns self once it listens."""
        self._thread = threading.Thread(target=self._run, name="faultrelay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fault relay not listening after %.0fs" % timeout)
        if self._error:
            raise self._error
        return self

    def set(self, **faults):
        """Changes faults live (the options not given stay)."""
        new = _check_opts(faults)
        with self._lock:
            opts = {k: getattr(self._opts, k) for k in OPTIONS}
            opts.update(new)
            self._opts = _Opts(opts)

    def options(self):
        return {k: getattr(self._opts, k) for k in OPTIONS}

    def stats(self):
        """The counters, a dict:
        connections         client connections accepted
        connect_failures    of those, ones the backend refused (reset at once)
        exchanges           request heads relayed (each opens an exchange)
        skipped             of those, requests on skip_paths (never faulted)
        responses           responses relayed whole (Content-Length framed)
        resets              resets_before_head + resets_mid_response
        resets_before_head  resets before any byte of the response was relayed
        resets_mid_response resets at a random offset of the response, split in
        resets_in_head      (offset < head length: the head incomplete) and
        resets_after_head   (offset >= head length: the whole head relayed)
        reset_offsets       [[offset, head_len, total_len], ...] of the latter
        stalls              exchanges stalled
        delayed             responses delayed by latency/jitter
        passthrough         connections relayed unparsed from some point on
                            (chunked or unframed response, upgrade, chunked
                            request)"""
        with self._lock:
            out = dict(self._stats)
            out["reset_offsets"] = [list(x) for x in self._offsets]
        return out

    def reset_stats(self):
        with self._lock:
            self._stats = dict.fromkeys(_COUNTERS, 0)
            self._offsets = []

    def stop(self, timeout=5.0):
        """Closes the listener and every connection (reset), joins the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._loop.is_running():
            try:
                self._loop.call_soon_threadsafe(self._shutdown)
            except RuntimeError:
                pass
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- the loop thread ----

    def _run(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(loop.create_server(
                lambda: _Conn(self), self.listen_host, self.listen_port, backlog=1024,
                reuse_address=True))
        except OSError as e:
            self._error = e
            self._ready.set()
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        self.addr = "%s:%d" % (self.listen_host, self.port)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                for _ in range(3):
                    loop.run_until_complete(asyncio.sleep(0))
            except RuntimeError:
                pass
            loop.close()

    def _shutdown(self):
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.closed = True
            if c.t is not None:
                c.t.abort()
            if c.up is not None:
                c.up.abort()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_soon(self._loop.stop)


def _hostport(text, default_host="127.0.0.1"):
    host, _, port = text.rpartition(":")
    return host or default_host, int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="faultrelay.py",
                                 description="A fault-injecting HTTP/1.1 TCP relay.")
    ap.add_argument("--target", required=True, help="HOST:PORT of the backend")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    ap.add_argument("--reset-share", type=float, default=0.0)
    ap.add_argument("--reset-before-head-share", type=float, default=0.0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--stall-share", type=float, default=0.0)
    ap.add_argument("--stall-ms", type=float, default=0.0)
    ap.add_argument("--skip-path", action="append", default=[],
                    help="never fault requests whose target starts with this (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    thost, tport = _hostport(a.target)
    lhost, lport = _hostport(a.listen)
    try:
        relay = FaultRelay(tport, target_host=thost, listen_host=lhost, listen_port=lport,
                           seed=a.seed, reset_share=a.reset_share,
                           reset_before_head_share=a.reset_before_head_share,
                           latency_ms=a.latency_ms, jitter_ms=a.jitter_ms,
                           stall_share=a.stall_share, stall_ms=a.stall_ms,
                           skip_paths=tuple(a.skip_path))
    except (TypeError, ValueError) as e:
        ap.error(str(e))
    stop = threading.Event()
    dump = threading.Event()

    def on_stop(signum, frame):
        stop.set()

    def on_usr1(signum, frame):
        dump.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        relay.start()
    except OSError as e:
        print("faultrelay: cannot listen on %s: %s" % (a.listen, e), file=sys.stderr)
        return 1
    print("ready %d" % relay.port, flush=True)
    while not stop.is_set():
        stop.wait(0.2)
        if dump.is_set():
            dump.clear()
            print(json.dumps(relay.stats(), sort_keys=True), flush=True)
    stats = relay.stats()
    relay.stop()
    print(json.dumps(stats, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
