"""RawBackend: a backend for the request-smuggling tests, in Python threads
(one per accepted connection) on 127.0.0.1. It records the exact bytes each
connection received, in accept order, so a test sees what the proxy
forwarded, and answers the requests it parses itself:

  - a path ending in /health: 200 "ok" (the proxy health-checks it);
  - anything else: 200 with the body b"path=<request-target>\\n";
  - keep-alive unless the request said close (or is HTTP/1.0 without
    keep-alive); a request it cannot parse: 400 and close.

parse="strict" reads RFC 9112 framing (CRLF line ends only, chunked decoded
strictly: hex size, optional extensions, CRLF, data, CRLF). parse="lenient"
reads it the lax way many servers did, so that loose framing a proxy let
through is read as two requests:
  - lines may end in a bare LF; obs-fold continues the previous field;
  - a chunk-size line ends at the first CRLF (a bare CR or LF inside it is
    junk), its extension is cut at ';', the size is its leading hex digits;
  - whatever follows a chunk's data is skipped up to the next CRLF.

handler(req, conn), optional, is called once a request head is parsed and
before its body is read. It returns None to let the default answer run
(the body is read first), or "keep" / "close" when it answered itself (it
calls conn.read_body() if it wants the body; "close" closes the connection).
"""

import socket
import threading
import time

MAX_BODY = 16 << 20
HEX = b"0123456789abcdefABCDEF"


class ParseError(Exception):
    pass


class Request:
    """One parsed request: method, target, version (str), headers and
    trailers ([(name, value)] as received, latin-1 text), body (decoded
    bytes, None until read), raw_head and raw_body (the bytes as received),
    conn (index of the connection, in accept order), chunked."""

    def __init__(self, conn, method, target, version, headers, raw_head):
        self.conn = conn
        self.method, self.target, self.version = method, target, version
        self.headers = headers
        self.raw_head = raw_head
        self.trailers = []
        self.body = None
        self.raw_body = b""
        self.chunked = False

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def health(self):
        return self.path.endswith("/health")

    def values(self, name):
        """Every value of the field `name` (case-insensitive), in order."""
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name, default=None):
        v = self.values(name)
        return v[0] if v else default

    def wants_close(self):
        tokens = [t.strip().lower() for v in self.values("connection") for t in v.split(",")]
        if "close" in tokens:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in tokens

    def __repr__(self):
        return "Request(%s %s conn=%d)" % (self.method, self.target, self.conn)


class Conn:
    """One accepted connection: the bytes it received (raw), whether the
    peer closed it (eof), and the reads the parser does on it."""

    def __init__(self, backend, sock, index):
        self.backend = backend
        self.sock = sock
        self.index = index
        self.raw = bytearray()
        self.buf = bytearray()  # received, not yet parsed
        self.eof = False
        self.closed = False
        self.lock = threading.Lock()

    # -- reading (every byte received is recorded in raw)

    def _fill(self, deadline):
        while True:
            if self.eof or self.backend.stopping.is_set():
                raise EOFError()
            if time.monotonic() > deadline:
                raise EOFError("idle")
            try:
                b = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                b = b""
            with self.lock:
                if not b:
                    self.eof = True
                    raise EOFError()
                self.raw += b
            self.buf += b
            return

    def _deadline(self):
        return time.monotonic() + self.backend.idle_s

    def take_line(self, strict):
        """One line without its end. strict: it must end in CRLF and hold
        no other CR or LF; lenient: it ends at LF, a CR before it dropped."""
        deadline = self._deadline()
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                if strict:
                    if not line.endswith(b"\r") or b"\r" in line[:-1]:
                        raise ParseError("line not ended by CRLF: %r" % line[:80])
                return line[:-1] if line.endswith(b"\r") else line
            if strict and b"\r" in self.buf[:-1]:
                raise ParseError("bare CR")
            if len(self.buf) > 65536:
                raise ParseError("line too long")
            self._fill(deadline)

    def take_until_crlf(self):
        """Everything up to the next CRLF (dropped), bare CR/LF included."""
        deadline = self._deadline()
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            if len(self.buf) > 65536:
                raise ParseError("no CRLF")
            self._fill(deadline)

    def take(self, n):
        deadline = self._deadline()
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    # -- for handlers

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def respond(self, status, body=b"", headers=(), close=False, reason="X"):
        head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
        for k, v in headers:
            head += "%s: %s\r\n" % (k, v)
        if close:
            head += "Connection: close\r\n"
        self.send(head.encode("latin-1") + b"\r\n" + body)

    def close(self, linger=0.5):
        """Sends FIN, keeps reading (and recording) for up to `linger`
        seconds or until the peer closes, then closes the socket."""
        if self.closed:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + linger
        try:
            while True:
                self.buf.clear()
                self._fill(deadline)
        except EOFError:
            pass
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def read_body(self, req):
        """Reads the body the head announces (chunked per the parse mode)."""
        if req.body is not None:
            return req.body
        strict = self.backend.strict
        te = ",".join(req.values("transfer-encoding")).lower()
        cls = req.values("content-length")
        if strict and te and cls:
            raise ParseError("Content-Length with Transfer-Encoding")
        if "chunked" in te:
            req.chunked = True
            req.body = self._chunked(req, strict)
        elif cls:
            if strict and len(set(v.strip() for v in cls)) > 1:
                raise ParseError("different Content-Lengths")
            try:
                n = int(cls[0].strip())
            except ValueError:
                raise ParseError("bad Content-Length %r" % cls[0])
            if n < 0 or n > MAX_BODY:
                raise ParseError("Content-Length out of range")
            req.body = self.take(n)
            req.raw_body = req.body
        else:
            req.body = b""
        return req.body

    def _chunked(self, req, strict):
        start = len(self.raw) - len(self.buf)
        data = bytearray()
        while True:
            if strict:
                line = self.take_line(True)
                size_part = line.split(b";", 1)[0]
                if not size_part or any(c not in HEX for c in size_part):
                    raise ParseError("bad chunk size line %r" % line[:80])
            else:
                line = self.take_until_crlf()
                size_part = line.split(b";", 1)[0].strip()
                k = 0
                while k < len(size_part) and size_part[k] in HEX:
                    k += 1
                size_part = size_part[:k]
                if not size_part:
                    raise ParseError("no chunk size in %r" % line[:80])
            size = int(size_part, 16)
            if size > MAX_BODY or len(data) + size > MAX_BODY:
                raise ParseError("chunked body too large")
            if size == 0:
                break
            data += self.take(size)
            if strict:
                if self.take(2) != b"\r\n":
                    raise ParseError("chunk data not followed by CRLF")
            else:
                self.take_until_crlf()
        req.trailers = self._fields(strict)
        req.raw_body = bytes(self.raw[start:len(self.raw) - len(self.buf)])
        return bytes(data)

    def _fields(self, strict):
        """Header (or trailer) fields up to the empty line."""
        fields = []
        for _ in range(1000):
            line = self.take_line(strict)
            if not line:
                return fields
            if line[:1] in (b" ", b"\t"):
                if strict or not fields:
                    raise ParseError("obs-fold")
                k, v = fields[-1]
                fields[-1] = (k, v + " " + line.strip().decode("latin-1"))
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                if strict:
                    raise ParseError("field without colon %r" % line[:80])
                continue
            if strict and (not name or any(c in b" \t\0" for c in name)):
                raise ParseError("bad field name %r" % name[:80])
            if strict and b"\0" in value:
                raise ParseError("NUL in a field value")
            fields.append((name.decode("latin-1").strip() if not strict else
                           name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        raise ParseError("too many fields")

    def read_head(self):
        """The next request head, or None when the peer closed between
        requests."""
        strict = self.backend.strict
        head_start = len(self.raw) - len(self.buf)
        for _ in range(8):  # empty lines before a request line are ignored
            try:
                line = self.take_line(strict)
            except EOFError:
                if not self.buf:
                    return None
                raise
            if line:
                break
            head_start = len(self.raw) - len(self.buf)
        else:
            raise ParseError("only empty lines")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise ParseError("bad request line %r" % line[:80])
        fields = self._fields(strict)
        raw_head = bytes(self.raw[head_start:len(self.raw) - len(self.buf)])
        return Request(self.index, parts[0].decode("latin-1"), parts[1].decode("latin-1"),
                       parts[2].decode("latin-1"), fields, raw_head)


class RawBackend:
    def __init__(self, parse="strict", handler=None, idle_s=60.0):
        assert parse in ("strict", "lenient")
        self.strict = parse == "strict"
        self.handler = handler
        self.idle_s = idle_s
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._conns = []
        self._requests = []
        self._threads = []
        self.errors = []  # (conn index, ParseError text)
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    # -- what the tests read

    def connections(self):
        """The bytes each connection received, in accept order."""
        with self.lock:
            conns = list(self._conns)
        out = []
        for c in conns:
            with c.lock:
                out.append(bytes(c.raw))
        return out

    def conn_eof(self, index):
        """Whether the peer (the proxy) closed connection `index`."""
        with self.lock:
            return self._conns[index].eof

    def requests(self, health=False):
        """Requests parsed so far (heads complete), in order; health checks
        only with health=True."""
        with self.lock:
            return [r for r in self._requests if health or not r.health]

    def paths(self):
        return [r.target for r in self.requests()]

    def received(self, marker):
        """Whether any connection received the bytes `marker`."""
        return any(marker in c for c in self.connections())

    def stop(self):
        self.stopping.set()
        self._accepter.join(timeout=2)
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(timeout=2)
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass

    # -- serving

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(0.2)
            with self.lock:
                c = Conn(self, s, len(self._conns))
                self._conns.append(c)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            self._serve_requests(c)
        except EOFError:
            pass
        except ParseError as e:
            with self.lock:
                self.errors.append((c.index, str(e)))
            c.respond(400, b"bad request\n", close=True)
        finally:
            c.close(linger=0.2)

    def _serve_requests(self, c):
        for _ in range(10000):
            req = c.read_head()
            if req is None:
                return
            with self.lock:
                self._requests.append(req)
            if self.handler and not req.health:
                what = self.handler(req, c)
                if what == "close":
                    return
                if what == "keep":
                    continue
            c.read_body(req)
            close = req.wants_close()
            body = b"ok\n" if req.health else ("path=%s\n" % req.target).encode("latin-1")
            if req.method == "HEAD":
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                       % (len(body), b"Connection: close\r\n" if close else b""))
            else:
                c.respond(200, body, close=close, reason="OK")
            if close:
                return
