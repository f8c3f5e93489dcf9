#!/usr/bin/env python3
"""Writes the hand-made seeds of proxy/fuzz/corpus (fuzz_http.c's input
format: byte 0 the mode, byte 1 the piece size, then the wire bytes).

Mode byte: 0x00 a client's request; 0x01 a backend's response, plus
0x02 the request was HEAD, 0x04 the client speaks HTTP/1.0, 0x08 the client
asked to close, 0x10 the GET asked for a WebSocket upgrade.

    proxy/fuzz/mkcorpus.py            # (re)writes the req-*/resp-* seeds

Files that `perf/fuzz` merged in (hash names) are left alone."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

REQ = 0x00
RESP, HEAD, V10, CLOSE, UPG = 0x01, 0x02, 0x04, 0x08, 0x10


def crlf(*lines):
    return "".join(l + "\r\n" for l in lines)


SEEDS = {
    # ---- requests ----
    "req-basic": (REQ, 7, crlf("GET /cluster1 HTTP/1.1", "Host: a", "Connection: keep-alive, X", "X: 1", "")),
    "req-10": (REQ, 11, crlf("GET / HTTP/1.0", "Connection: keep-alive", "X-Forwarded-For: 1.2.3.4", "")),
    "req-10-nohost": (REQ, 64, crlf("HEAD /x?y=1 HTTP/1.0", "")),
    "req-pipelined": (REQ, 5, crlf("GET /a HTTP/1.1", "Host: h", "", "GET /b HTTP/1.1", "Host: h", "")),
    "req-absolute": (REQ, 9, crlf("GET http://example.com/p/q?r=1 HTTP/1.1", "Host: other", "")),
    "req-absolute-https-port": (REQ, 3, crlf("GET https://example.com:8443/ HTTP/1.1", "Host: example.com:8443", "")),
    "req-absolute-10": (REQ, 17, crlf("GET http://h.example/x HTTP/1.0", "")),
    "req-options-star": (REQ, 4, crlf("OPTIONS * HTTP/1.1", "Host: a", "")),
    "req-cl": (REQ, 6, crlf("POST /upload HTTP/1.1", "Host: a", "Content-Length: 11", "") + "hello world"),
    "req-cl-short": (REQ, 6, crlf("PUT /upload HTTP/1.1", "Host: a", "Content-Length: 20", "") + "only part"),
    "req-cl-extra": (REQ, 40, crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 3", "") + "abcGET / HTTP/1.1\r\n\r\n"),
    "req-cl0-get": (REQ, 2, crlf("GET / HTTP/1.1", "Host: a", "Content-Length: 0", "")),
    "req-get-body": (REQ, 63, crlf("GET /g HTTP/1.1", "Host: a", "Content-Length: 2", "") + "hi"),
    "req-chunked": (REQ, 5, crlf("POST /e HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "5;x=y", "hello", "0", "T: v", "")),
    "req-chunked-zeros": (REQ, 1, crlf("POST /z HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "0005", "hello", "000A", "0123456789", "00", "")),
    "req-chunked-ext": (REQ, 8, crlf("POST /x HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "3;a;b=c;d=\"q s\"", "abc", "1;only", "d", "0;last=1", "")),
    "req-chunked-trailers": (REQ, 12, crlf("POST /t HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "4", "wiki", "6", "pedia ", "0", "Expires: never", "X-Sum: 1234", "")),
    "req-chunked-partial": (REQ, 7, crlf("POST /p HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "10", "0123456789abcdef", "20") + "not all of"),
    "req-chunked-bad": (REQ, 4, crlf("POST /b HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "3", "abcdef", "0", "")),
    "req-chunked-after": (REQ, 30, crlf("POST /a HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "", "1", "x", "0", "", "GET / HTTP/1.1", "Host: a", "")),
    "req-clte": (REQ, 3, crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked", "")),
    "req-te-list": (REQ, 3, crlf("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked", "", "0", "")),
    "req-hop-by-hop": (REQ, 10, crlf("GET / HTTP/1.1", "Host: a", "Connection: close, X-Drop, Host", "X-Drop: 1", "Keep-Alive: 5", "TE: trailers", "Upgrade: h2c", "Proxy-Connection: x", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-Proto: https", "X-Request-Id: abc", "")),
    "req-websocket": (REQ, 16, crlf("GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "")),
    "req-expect": (REQ, 20, crlf("PUT /e HTTP/1.1", "Host: a", "Expect: 100-continue", "Content-Length: 4", "") + "data"),
    "req-suspicious": (REQ, 20, crlf("POST / HTTP/1.1", "Host: a", "Transfer_Encoding: chunked", "Content-Length: 1", "") + "z"),
    "req-methods": (REQ, 9, crlf("DELETE /r/1 HTTP/1.1", "Host: a", "")),
    "req-patch": (REQ, 9, crlf("PATCH /r/1 HTTP/1.1", "Host: a", "Content-Length: 2", "") + "{}"),
    # ---- responses ----
    "resp-cl": (RESP, 9, crlf("HTTP/1.1 200 OK", "Content-Length: 3", "Connection: close", "") + "abc"),
    "resp-cl-extra": (RESP, 20, crlf("HTTP/1.1 200 OK", "Content-Length: 3", "") + "abcHTTP/1.1 200 OK\r\n\r\n"),
    "resp-cl-short": (RESP, 20, crlf("HTTP/1.1 200 OK", "Content-Length: 30", "") + "abc"),
    "resp-cl-10client": (RESP | V10, 5, crlf("HTTP/1.1 200 OK", "Content-Length: 2", "") + "ok"),
    "resp-close-client": (RESP | CLOSE, 5, crlf("HTTP/1.1 200 OK", "Content-Length: 2", "") + "ok"),
    "resp-10-backend": (RESP, 7, crlf("HTTP/1.0 200 OK", "Content-Length: 2", "Connection: keep-alive", "") + "ok"),
    "resp-until-close": (RESP, 8, crlf("HTTP/1.1 200 OK", "Content-Type: text/plain", "") + "all the rest\r\nis body"),
    "resp-until-close-10": (RESP | V10, 8, crlf("HTTP/1.0 200 OK", "") + "body"),
    "resp-chunked": (RESP, 6, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "5", "hello", "7;e=1", ", world", "0", "")),
    "resp-chunked-trailer": (RESP, 3, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Trailer: X-T", "", "001", "a", "0", "X-T: 1", "")),
    "resp-chunked-10client": (RESP | V10, 6, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "5", "hello", "0", "") + "HTTP/1.1 200 OK\r\n\r\n"),
    "resp-chunked-extra": (RESP, 11, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "2", "hi", "0", "", "junk after")),
    "resp-chunked-bad": (RESP, 11, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "2", "hiya", "0", "")),
    "resp-204": (RESP, 4, crlf("HTTP/1.1 204 No Content", "Content-Length: 5", "") + "extra"),
    "resp-304": (RESP, 4, crlf("HTTP/1.1 304 Not Modified", "Transfer-Encoding: chunked", "ETag: \"x\"", "")),
    "resp-head-cl": (RESP | HEAD, 10, crlf("HTTP/1.1 200 OK", "Content-Length: 1000", "") + "not a body"),
    "resp-head-chunked": (RESP | HEAD, 10, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "5", "hello", "0", "")),
    "resp-head-10client": (RESP | HEAD | V10, 10, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "")),
    "resp-100": (RESP, 5, crlf("HTTP/1.1 100 Continue", "", "HTTP/1.1 200 OK", "Content-Length: 1", "") + "x"),
    "resp-103-then-204": (RESP, 13, crlf("HTTP/1.1 103 Early Hints", "Link: </s.css>; rel=preload", "", "HTTP/1.1 102 Processing", "", "HTTP/1.1 204 No Content", "")),
    "resp-100-10client": (RESP | V10, 13, crlf("HTTP/1.1 100 Continue", "", "HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "1", "z", "0", "")),
    "resp-1xx-cl": (RESP, 13, crlf("HTTP/1.1 100 Continue", "Content-Length: 3", "", "HTTP/1.1 200 OK", "Content-Length: 0", "")),
    "resp-101": (RESP | UPG, 9, crlf("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket", "") + "\x81\x05hello"),
    "resp-101-unasked": (RESP, 9, crlf("HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "")),
    "resp-hop-by-hop": (RESP, 9, crlf("HTTP/1.1 200 OK", "Connection: X-A, close", "X-A: 1", "Keep-Alive: timeout=5", "Content-Length: 0", "")),
    "resp-noreason": (RESP, 9, crlf("HTTP/1.1 404 ", "Content-Length: 0", "")),
    "resp-500-close": (RESP | CLOSE, 9, crlf("HTTP/1.1 500 Internal Server Error", "Connection: close", "Content-Length: 4", "") + "oops"),
}


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for name, (mode, step, text) in SEEDS.items():
        data = bytes([mode, step - 1]) + text.encode("latin-1")
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {CORPUS}")


if __name__ == "__main__":
    main()
