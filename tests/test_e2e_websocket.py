"""End-to-end WebSocket through the proxy (DESIGN.md: upgraded tunnels): the
upgrade handshake to the backend's echo, text and binary messages up to
1 MiB, fragments, ping/pong and the close handshake. Runs once per engine
(LB_ENGINE)."""

import os
import socket
import threading
import unittest

from lbtest import (SharedLBTestCase, first_difference, get, wait_status, ws_accept_for,
                    ws_connect, ws_frame, ws_read_message)

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


class WebSocket(SharedLBTestCase):
    @classmethod
    def start_shared(cls):
        cls.c1 = [cls.shared_backend("c1-%d" % i, "cluster1") for i in (1, 2)]
        cls.p = cls.shared_proxy(routes={"/cluster1": cls.c1})
        st = wait_status(cls.p.port, "/cluster1", 200, timeout=15)
        if st != 200:
            raise RuntimeError("/cluster1 answers %r, not 200:\n%s" % (st, cls.p.log()[-3000:]))

    def open(self, path="/cluster1/ws"):
        s, rd, r, key = ws_connect(self.p.port, path, timeout=15)
        self.addCleanup(s.close)
        self.assertEqual(r.status, 101, "upgrade answered %d %r" % (r.status, r.header_list))
        self.assertEqual(r.headers.get("sec-websocket-accept"), ws_accept_for(key))
        self.assertEqual(r.headers.get("upgrade", "").lower(), "websocket")
        self.assertIn("upgrade", r.headers.get("connection", "").lower())
        return s, rd

    def send_bg(self, s, data):
        """Sends from a thread, so that a large echo coming back cannot
        deadlock with our own send."""
        t = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        t.start()
        return t

    def test_handshake(self):
        self.open()

    def test_text_and_binary_echo(self):
        s, rd = self.open()
        msg = "hello, \u2713 websocket".encode()
        s.sendall(ws_frame(TEXT, msg))
        self.assertEqual(ws_read_message(rd), (TEXT, msg))
        small = os.urandom(100)
        s.sendall(ws_frame(BINARY, small))
        self.assertEqual(ws_read_message(rd), (BINARY, small))
        for n in (0, 125, 126, 65535, 65536):
            data = os.urandom(n)
            s.sendall(ws_frame(BINARY, data))
            self.assertEqual(ws_read_message(rd), (BINARY, data), "binary of %d bytes" % n)

    def test_one_mib_binary_and_text(self):
        s, rd = self.open()
        data = os.urandom(1 << 20)
        t = self.send_bg(s, ws_frame(BINARY, data))
        op, got = ws_read_message(rd)
        t.join(15)
        self.assertEqual(op, BINARY)
        self.assertEqual(len(got), len(data))
        self.assertIsNone(first_difference(got, data), "1 MiB binary echo")
        text = (b"0123456789abcdef" * 65536)
        t = self.send_bg(s, ws_frame(TEXT, text))
        op, got = ws_read_message(rd)
        t.join(15)
        self.assertEqual(op, TEXT)
        self.assertIsNone(first_difference(got, text), "1 MiB text echo")

    def test_fragmented_message(self):
        s, rd = self.open()
        s.sendall(ws_frame(TEXT, b"frag-", fin=False) + ws_frame(0, b"ment-", fin=False)
                  + ws_frame(0, b"ed", fin=True))
        self.assertEqual(ws_read_message(rd), (TEXT, b"frag-ment-ed"))

    def test_many_messages_in_order(self):
        s, rd = self.open()
        s.sendall(b"".join(ws_frame(TEXT, b"msg %d" % i) for i in range(100)))
        for i in range(100):
            self.assertEqual(ws_read_message(rd), (TEXT, b"msg %d" % i))

    def test_ping_pong(self):
        s, rd = self.open()
        s.sendall(ws_frame(PING, b"are you there"))
        self.assertEqual(ws_read_message(rd), (PONG, b"are you there"))
        s.sendall(ws_frame(TEXT, b"after ping"))
        self.assertEqual(ws_read_message(rd), (TEXT, b"after ping"))

    def test_close(self):
        s, rd = self.open()
        s.sendall(ws_frame(TEXT, b"before close"))
        self.assertEqual(ws_read_message(rd), (TEXT, b"before close"))
        s.sendall(ws_frame(CLOSE, b"\x03\xe8bye"))
        op, payload = ws_read_message(rd)
        self.assertEqual(op, CLOSE)
        if payload:
            self.assertEqual(payload[:2], b"\x03\xe8")
        # The backend closes the TCP connection; the proxy passes that on.
        s.settimeout(5)
        try:
            rest = rd.read_to_eof()
        except socket.timeout:
            rest = None
        self.assertEqual(rest, b"", "the connection stayed open after the close handshake")

    def test_two_tunnels_at_once(self):
        a, ra = self.open()
        b, rb = self.open()
        a.sendall(ws_frame(TEXT, b"to a"))
        b.sendall(ws_frame(TEXT, b"to b"))
        self.assertEqual(ws_read_message(rb), (TEXT, b"to b"))
        self.assertEqual(ws_read_message(ra), (TEXT, b"to a"))

    def test_http_still_served(self):
        s, rd = self.open()
        s.sendall(ws_frame(TEXT, b"x"))
        self.assertEqual(ws_read_message(rd), (TEXT, b"x"))
        st, _, _ = get(self.p.port, "/cluster1/plain")
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()
