/* WebSocket (RFC 6455): the handshake, then an echo server. Frames are
 * streamed: a frame's header is answered as soon as it is read and its
 * payload unmasked into the output as it arrives, so any size goes through
 * a fixed buffer. */
#define _GNU_SOURCE
#include "backend.h"
#include "sha1.h"

#include <stdio.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { WS_CONT = 0, WS_TEXT = 1, WS_BIN = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

int ws_handshake(struct conn *c) {
    struct req *r = &c->req;
    if (!r->n_key || r->n_key > 64) return respond_error(c, 400, "bad websocket handshake");
    char buf[64 + sizeof(WS_GUID)];
    memcpy(buf, req_key(c), r->n_key);
    memcpy(buf + r->n_key, WS_GUID, sizeof(WS_GUID) - 1);
    uint8_t digest[20];
    sha1(buf, r->n_key + sizeof(WS_GUID) - 1, digest);
    char accept[32];
    base64_encode(accept, digest, sizeof(digest));

    size_t need = 256 + strlen(cfg.instance_id);
    char *p = out_reserve(c, need);
    if (!p) return 0;
    burn_cpu(cfg.work_us);
    int n = snprintf(p, need,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Instance-Id: %s\r\n\r\n",
                     accept, cfg.instance_id);
    out_commit(c, p + n);
    r->status = 101;
    r->bytes_out = (uint64_t)n;
    request_log(c);
    memset(&c->ws, 0, sizeof(c->ws));
    c->phase = PH_WS;
    return 1;
}

/* Queues a close frame with `code` (when there is room) and closes. */
static int ws_fail(struct conn *c, unsigned code) {
    char *p = out_reserve(c, 4);
    if (p) {
        p[0] = (char)0x88;
        p[1] = 2;
        p[2] = (char)(code >> 8);
        p[3] = (char)(code & 0xff);
        out_commit(c, p + 4);
    }
    c->phase = PH_CLOSING;
    return 1;
}

static void unmask(char *dst, const char *src, size_t n, const uint8_t mask[4], uint8_t *pos) {
    uint8_t m[8];
    for (int i = 0; i < 8; i++)
        m[i] = mask[(*pos + i) & 3];
    uint64_t m64;
    memcpy(&m64, m, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= m64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = (char)(src[i] ^ m[i & 7]);
    *pos = (uint8_t)((*pos + n) & 3);
}

/* Reads a frame header from the input and queues the answer's header. */
static int ws_header(struct conn *c) {
    const uint8_t *p = (const uint8_t *)c->in + c->parse_off;
    size_t avail = c->in_len - c->parse_off;
    if (avail < 2) return 0;
    unsigned fin = p[0] & 0x80, rsv = p[0] & 0x70, op = p[0] & 0x0f;
    unsigned masked = p[1] & 0x80, len7 = p[1] & 0x7f;
    size_t hlen = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    if (rsv || !masked) return ws_fail(c, 1002);
    if (op != WS_CONT && op != WS_TEXT && op != WS_BIN && op != WS_CLOSE && op != WS_PING &&
        op != WS_PONG)
        return ws_fail(c, 1002);
    if (op >= WS_CLOSE && (!fin || len7 > 125)) return ws_fail(c, 1002);
    if (avail < hlen) return 0;
    uint64_t len = len7;
    if (len7 == 126) {
        len = (uint64_t)p[2] << 8 | p[3];
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len >> 62) return ws_fail(c, 1009);
    }
    char *o = out_reserve(c, 10);
    if (!o) return 0;
    unsigned out_op = op == WS_PING ? WS_PONG : op;
    *o++ = (char)(fin | out_op);
    if (len < 126) {
        *o++ = (char)len;
    } else if (len < 65536) {
        *o++ = 126;
        *o++ = (char)(len >> 8);
        *o++ = (char)len;
    } else {
        *o++ = 127;
        for (int i = 7; i >= 0; i--)
            *o++ = (char)(len >> (8 * i));
    }
    out_commit(c, o);
    memcpy(c->ws.mask, p + hlen - 4, 4);
    c->ws.mpos = 0;
    c->ws.opcode = (uint8_t)op;
    c->ws.left = len;
    c->ws.in_frame = 1;
    c->parse_off += (uint32_t)hlen;
    return 1;
}

int ws_step(struct conn *c) {
    if (out_pending(c) >= OUT_HIGH) return 0;
    if (!c->ws.in_frame) return ws_header(c);
    if (!c->ws.left) {
        c->ws.in_frame = 0;
        if (c->ws.opcode == WS_CLOSE) c->phase = PH_CLOSING; /* close echoed: we are done */
        return 1;
    }
    size_t avail = c->in_len - c->parse_off;
    if (!avail) return 0;
    size_t take = avail < c->ws.left ? avail : (size_t)c->ws.left;
    if (!out_reserve(c, take)) {
        size_t room = out_room(c);
        if (!room) return 0;
        if (take > room) take = room;
    }
    unmask(c->out + c->out_len, c->in + c->parse_off, take, c->ws.mask, &c->ws.mpos);
    c->out_len += take;
    c->parse_off += (uint32_t)take;
    c->ws.left -= take;
    return 1;
}
