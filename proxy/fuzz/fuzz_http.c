/* libFuzzer target for the proxy's HTTP edges, with a differential
 * property: what the proxy sends on, parsed by a second, independent llhttp
 * instance (strict mode, no lenient flags), is the message the proxy
 * checked and framed. Any difference is an abort().
 *
 * Input: byte 0 the mode, byte 1 the piece size (1 + b % 64) in which the
 * head (and then a chunked body) arrives, the rest the bytes on the wire.
 *
 * Request mode (byte 0 bit 0 clear): the bytes are what a client sends. As
 * the proxy does: http_parse_head() in pieces; on HTTP_HEAD_DONE below
 * DESYNC_SEVERE (CONNECT aside: the proxy answers it 405 itself)
 * http_write_request(), then the body: BODY_LENGTH the next content_length
 * bytes (those the input has), BODY_CHUNKED what http_dechunk(.., rechunk 1)
 * puts out, fed in pieces, up to HTTP_BODY_DONE (a -1 stops it: the output
 * of the failing call is not sent). The backend's parser must take these
 * bytes with no error and, when the body was complete, exactly one complete
 * message ending at the last byte: same method, target (m->path), version,
 * body bytes equal to what the proxy decided; persistent (the proxy wants
 * its backend connections kept).
 *
 * Response mode (bit 0 set): the bytes are what a backend answers to a
 * request; bit 1: the request was HEAD (else GET), bit 2: the client speaks
 * HTTP/1.0 (else 1.1), bit 3: the client asked to close, bit 4: the GET asked
 * for a WebSocket upgrade. As conn.c does: 1xx heads relayed to 1.1 clients
 * (dropped for 1.0 ones) and the next head parsed; 101 only to an upgrade
 * (then the rest is tunnel bytes); a final head written with the proxy's
 * keep-alive decision, then BODY_LENGTH content_length bytes, BODY_CHUNKED
 * http_dechunk(.., rechunk = 1.1 client), BODY_UNTIL_CLOSE the rest,
 * BODY_NONE nothing. The client's parser (told about HEAD by returning 1
 * from on_headers_complete, as llhttp documents) must see the same statuses,
 * HTTP/1.1, exactly one final response ending where the proxy's bytes end
 * (EOF-framed: at llhttp_finish), the same body, the same persistence; no
 * Content-Length / Transfer-Encoding line on 1xx/204/304, no
 * Transfer-Encoding to an HTTP/1.0 client. So nothing the backend sent after
 * its response reaches the client as part of it.
 *
 * Chunked bodies, both modes: the proxy's decoder run twice on the same
 * input (rechunk 0 and 1) agrees with itself; the canonical output
 * ("hex CRLF data CRLF" .. "0 CRLF CRLF", lowercase, no leading zeros)
 * decodes, by a simple decoder here, to the same bytes; and when a small
 * strict decoder here accepts the input's chunked body (sizes, ";name[=tok]"
 * extensions, plain trailer fields), the proxy must accept it too, end it at
 * the same byte and give the same data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

#define MAX_HEADERS 100
#define MAX_MSGS    64 /* messages the client's parser may see (1xx + final) */

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) abort();                                                                         \
    } while (0)

/* sbuf_add with a span that may be (NULL, 0): an sbuf not written yet. */
static void add(struct sbuf *b, const char *p, size_t n) {
    if (n) sbuf_add(b, p, n);
}

/* ---- the second parser: the backend's or the client's view ---- */

struct peer_msg {
    int status, major, minor, method, cl_lines, te_lines, keep;
};

struct peer {
    llhttp_t p;
    int head_req; /* a response to HEAD: no body */
    struct sbuf url, body;
    char field[32];
    size_t flen;
    int begun, complete, finals;
    struct peer_msg msg[MAX_MSGS];
};

static struct peer *peer_of(llhttp_t *p) {
    return p->data;
}

static struct peer_msg *cur(struct peer *pr) {
    int i = pr->begun ? pr->begun - 1 : 0;
    return &pr->msg[i < MAX_MSGS ? i : MAX_MSGS - 1];
}

static int is_final(const llhttp_t *p, int status) {
    return p->type == HTTP_REQUEST || status / 100 != 1 || status == 101;
}

static int peer_begin(llhttp_t *p) {
    struct peer *pr = peer_of(p);
    pr->begun++;
    *cur(pr) = (struct peer_msg){0};
    pr->flen = 0;
    return 0;
}

static int peer_url(llhttp_t *p, const char *at, size_t len) {
    add(&peer_of(p)->url, at, len);
    return 0;
}

static int peer_field(llhttp_t *p, const char *at, size_t len) {
    struct peer *pr = peer_of(p);
    size_t room = sizeof(pr->field) - 1 - (pr->flen < sizeof(pr->field) ? pr->flen : 0);
    if (pr->flen < sizeof(pr->field)) memcpy(pr->field + pr->flen, at, len < room ? len : room);
    pr->flen += len;
    return 0;
}

static int peer_field_done(llhttp_t *p) {
    struct peer *pr = peer_of(p);
    struct peer_msg *m = cur(pr);
    if (pr->flen < sizeof(pr->field)) {
        if (pr->flen == 14 && !strncasecmp(pr->field, "content-length", 14)) m->cl_lines++;
        if (pr->flen == 17 && !strncasecmp(pr->field, "transfer-encoding", 17)) m->te_lines++;
    }
    pr->flen = 0;
    return 0;
}

static int peer_headers_done(llhttp_t *p) {
    struct peer *pr = peer_of(p);
    struct peer_msg *m = cur(pr);
    m->status = p->status_code;
    m->major = p->http_major;
    m->minor = p->http_minor;
    m->method = p->method;
    /* llhttp: "return 1 ... to skip the body" for a response to HEAD */
    return p->type == HTTP_RESPONSE && pr->head_req && p->status_code >= 200 ? 1 : 0;
}

static int peer_body(llhttp_t *p, const char *at, size_t len) {
    add(&peer_of(p)->body, at, len);
    return 0;
}

/* Pauses after the final message: where it paused is where it ended. */
static int peer_complete(llhttp_t *p) {
    struct peer *pr = peer_of(p);
    struct peer_msg *m = cur(pr);
    pr->complete++;
    m->keep = llhttp_should_keep_alive(p);
    if (!is_final(p, m->status)) return 0;
    pr->finals++;
    return HPE_PAUSED;
}

static void peer_init(struct peer *pr, llhttp_type_t type, int head_req) {
    static llhttp_settings_t s;
    if (!s.on_message_complete) {
        llhttp_settings_init(&s);
        s.on_message_begin = peer_begin;
        s.on_url = peer_url;
        s.on_header_field = peer_field;
        s.on_header_field_complete = peer_field_done;
        s.on_headers_complete = peer_headers_done;
        s.on_body = peer_body;
        s.on_message_complete = peer_complete;
    }
    memset(pr, 0, sizeof(*pr));
    pr->head_req = head_req;
    llhttp_init(&pr->p, type, &s);
    pr->p.data = pr;
}

static void peer_free(struct peer *pr) {
    sbuf_free(&pr->url);
    sbuf_free(&pr->body);
}

/* llhttp_execute over a buffer that may be empty (never written). */
static llhttp_errno_t execute(llhttp_t *p, const struct sbuf *b) {
    return b->len ? llhttp_execute(p, b->data, b->len) : llhttp_get_errno(p);
}

static int same_bytes(const struct sbuf *a, const struct sbuf *b) {
    return a->len == b->len && (!a->len || !memcmp(a->data, b->data, a->len));
}

/* ---- chunked bodies ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int crlf_at(const char *s, size_t n, size_t i) {
    return i + 2 <= n && s[i] == '\r' && s[i + 1] == '\n';
}

/* The proxy's canonical chunks: whole "SIZE CRLF data CRLF" chunks, SIZE in
 * lowercase hex without leading zeros, and, when terminated, "0 CRLF CRLF"
 * as the last five bytes. The data goes to out. 1 if s is exactly that. */
static int canon_decode(const char *s, size_t n, int terminated, struct sbuf *out) {
    size_t i = 0;
    for (;;) {
        if (i == n) return !terminated;
        if (s[i] == '0') return terminated && n - i == 5 && !memcmp(s + i, "0\r\n\r\n", 5);
        uint64_t size = 0;
        size_t d = i;
        while (i < n && hexval(s[i]) >= 0 && !(s[i] >= 'A' && s[i] <= 'F')) {
            if (i - d == 15) return 0;
            size = size * 16 + (uint64_t)hexval(s[i++]);
        }
        if (i == d || !crlf_at(s, n, i)) return 0;
        i += 2;
        if (n - i < size + 2) return 0;
        add(out, s + i, (size_t)size);
        i += (size_t)size;
        if (!crlf_at(s, n, i)) return 0;
        i += 2;
    }
}

static int is_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A small strict decoder of a client's (or backend's) chunked body, for the
 * plain cases only: hex sizes (leading zeros allowed), extensions
 * ";name" / ";name=token" with no whitespace, CRLFs, trailer fields
 * "token: visible-chars" (not the ones llhttp treats specially). 1: a
 * complete body it accepts, data in out, *end the bytes it spans; 0: not
 * accepted or not sure (nothing is claimed then). */
static int ref_dechunk(const char *s, size_t n, struct sbuf *out, size_t *end) {
    static const char *const special[] = {"content-length",   "transfer-encoding", "connection",
                                          "proxy-connection", "upgrade",           "keep-alive"};
    size_t i = 0;
    for (;;) {
        uint64_t size = 0;
        size_t d = i;
        while (i < n && hexval(s[i]) >= 0) {
            size = size * 16 + (uint64_t)hexval(s[i++]);
            if (size >> 40) return 0;
        }
        if (i == d) return 0;
        for (int valued = 0; i < n && s[i] == ';';) {
            /* llhttp 8.1 refuses another extension after a token value
             * ("0;a=b;c"): not claimed either way */
            if (valued) return 0;
            size_t t = ++i;
            while (i < n && is_tchar(s[i]))
                i++;
            if (i == t) return 0;
            if (i < n && s[i] == '=') {
                t = ++i;
                while (i < n && is_tchar(s[i]))
                    i++;
                if (i == t) return 0;
                valued = 1;
            }
        }
        if (!crlf_at(s, n, i)) return 0;
        i += 2;
        if (!size) break;
        if (n - i < size + 2) return 0;
        add(out, s + i, (size_t)size);
        i += (size_t)size;
        if (!crlf_at(s, n, i)) return 0;
        i += 2;
    }
    for (int fields = 0;; fields++) {
        if (crlf_at(s, n, i)) {
            *end = i + 2;
            return 1;
        }
        if (fields == 8) return 0;
        size_t t = i;
        while (i < n && is_tchar(s[i]))
            i++;
        if (i == t || i - t > 40 || i >= n || s[i] != ':') return 0;
        for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++)
            if (strlen(special[k]) == i - t && !strncasecmp(s + t, special[k], i - t)) return 0;
        i++;
        if (i < n && s[i] == ' ') i++;
        while (i < n && s[i] >= 0x21 && s[i] <= 0x7e)
            i++;
        if (!crlf_at(s, n, i)) return 0;
        i += 2;
    }
}

/* The proxy's decoding of a chunked body that follows a head m took, fed in
 * pieces of `step`, as the pump does. Appends what goes out to `wire` (the
 * output of a call that fails is not sent) and the bare data to `data`, and
 * cross-checks: the same decoder run with rechunk 0 and 1 agrees, the
 * canonical output decodes to the data, the small strict decoder's verdict.
 * HTTP_BODY_DONE, HTTP_NEED_MORE (input ran out) or -1. */
static int proxy_dechunk(struct http_msg *m, const char *b, size_t n, size_t step, int rechunk,
                         struct sbuf *wire, struct sbuf *data) {
    struct http_msg twin = *m; /* same parser state; trailers never touch the shared hdr */
    twin.parser.data = &twin;
    struct sbuf canon = {0};
    size_t pos = 0;
    int res = HTTP_NEED_MORE;
    while (pos < n) {
        size_t k = n - pos < step ? n - pos : step, used = 0, used2 = 0;
        size_t before = canon.len, dbefore = data->len;
        int r1 = http_dechunk(m, b + pos, k, &used, &canon, 1);
        int r2 = http_dechunk(&twin, b + pos, k, &used2, data, 0);
        CHECK(r1 == r2);
        if (r1 < 0) {
            canon.len = before;
            data->len = dbefore;
            res = -1;
            break;
        }
        CHECK(used == used2 && used <= k);
        CHECK(r1 == HTTP_BODY_DONE || used == k);
        pos += used;
        if (r1 == HTTP_BODY_DONE) {
            res = HTTP_BODY_DONE;
            break;
        }
    }
    struct sbuf dec = {0};
    CHECK(canon_decode(canon.data, canon.len, res == HTTP_BODY_DONE, &dec));
    CHECK(same_bytes(&dec, data));
    if (rechunk)
        add(wire, canon.data, canon.len);
    else
        add(wire, data->data, data->len);

    struct sbuf ref = {0};
    size_t end = 0;
    if (ref_dechunk(b, n, &ref, &end)) {
        CHECK(res == HTTP_BODY_DONE);
        CHECK(pos == end);
        CHECK(same_bytes(&ref, data));
    }
    sbuf_free(&ref);
    sbuf_free(&dec);
    sbuf_free(&canon);
    return res;
}

/* ---- heads ---- */

/* http_parse_head over buf[0..len) arriving in pieces of `step`. */
static int feed_head(struct http_msg *m, const char *buf, size_t len, size_t step, int to_head,
                     size_t *fed_out) {
    int r = HTTP_NEED_MORE;
    size_t fed = 0;
    while (r == HTTP_NEED_MORE && fed < len) {
        fed = fed + step < len ? fed + step : len;
        r = http_parse_head(m, buf, fed, to_head);
    }
    if (r == HTTP_HEAD_DONE) CHECK(m->head_len <= fed && m->klass < DESYNC_SEVERE);
    *fed_out = fed;
    return r;
}

/* ---- request mode ---- */

static void request_mode(const char *buf, size_t len, size_t step) {
    struct http_msg m;
    http_msg_init(&m, HTTP_REQUEST, MAX_HEADERS);
    size_t fed;
    if (feed_head(&m, buf, len, step, 0, &fed) != HTTP_HEAD_DONE || m.method == HTTP_CONNECT) {
        http_msg_free(&m);
        return;
    }
    struct forward_info fi = {
        .client_ip = "192.0.2.1", .listen_port = 8000, .request_id = "fuzz", .strip_len = 0};
    struct sbuf wire = {0}, body = {0};
    http_write_request(&wire, &m, &fi);
    size_t head_len = wire.len;

    /* The proxy's own parser takes its rewritten head, with the same framing. */
    struct http_msg again;
    http_msg_init(&again, HTTP_REQUEST, MAX_HEADERS * 2);
    CHECK(http_parse_head(&again, wire.data, wire.len, 0) == HTTP_HEAD_DONE);
    CHECK(again.framing == m.framing && again.content_length == m.content_length &&
          again.head_len == wire.len);
    http_msg_free(&again);

    const char *b = buf + m.head_len;
    size_t n = len - m.head_len;
    int complete = 1;
    if (m.framing == BODY_LENGTH) {
        size_t k = n < m.content_length ? n : (size_t)m.content_length;
        add(&wire, b, k);
        add(&body, b, k);
        complete = k == m.content_length;
    } else if (m.framing == BODY_CHUNKED) {
        complete = proxy_dechunk(&m, b, n, step, 1, &wire, &body) == HTTP_BODY_DONE;
    }

    struct peer be;
    peer_init(&be, HTTP_REQUEST, 0);
    llhttp_errno_t e = execute(&be.p, &wire);
    if (complete) {
        CHECK(e == HPE_PAUSED || (m.upgrade && e == HPE_PAUSED_UPGRADE));
        CHECK(llhttp_get_error_pos(&be.p) == wire.data + wire.len); /* nothing left over */
        CHECK(be.complete == 1 && be.finals == 1);
        if (!m.upgrade) CHECK(be.msg[0].keep);
    } else {
        CHECK(e == HPE_OK && be.complete == 0);
    }
    CHECK(be.begun == 1);
    CHECK(be.msg[0].method == m.method && be.msg[0].major == 1 && be.msg[0].minor == m.minor);
    CHECK(be.url.len == m.path_len && (!m.path_len || !memcmp(be.url.data, m.path, m.path_len)));
    CHECK(same_bytes(&be.body, &body));
    CHECK(be.msg[0].cl_lines + be.msg[0].te_lines <= 1 && head_len <= wire.len);
    peer_free(&be);
    sbuf_free(&body);
    sbuf_free(&wire);
    http_msg_free(&m);
}

/* ---- response mode ---- */

static void response_mode(unsigned flags, const char *buf, size_t len, size_t step) {
    int head_req = (flags & 2) != 0;
    int client_minor = flags & 4 ? 0 : 1;
    int client_keep = !(flags & 8);
    int upgrade_req = (flags & 16) && !head_req;

    struct sbuf wire = {0}, body = {0};
    int want[MAX_MSGS], nwant = 0; /* the statuses the client is sent */
    int have_final = 0, complete = 0, eof_framed = 0, keep = 0;
    size_t tunnel = 0, pos = 0, fed;
    struct http_msg m;
    http_msg_init(&m, HTTP_RESPONSE, MAX_HEADERS);
    while (nwant < MAX_MSGS - 2 &&
           feed_head(&m, buf + pos, len - pos, step, head_req, &fed) == HTTP_HEAD_DONE) {
        const char *b = buf + pos + m.head_len;
        size_t n = len - pos - m.head_len;
        if (m.status == 101) {
            if (!upgrade_req) break; /* refused: a 502 */
            http_write_response(&wire, &m, client_minor, 1);
            want[nwant++] = 101;
            add(&wire, b, n); /* the tunnel */
            tunnel = n;
            have_final = complete = 1;
            break;
        }
        if (m.status < 200) { /* interim: to 1.1 clients only; then the next head */
            if (client_minor >= 1) {
                http_write_response(&wire, &m, client_minor, 1);
                want[nwant++] = m.status;
            }
            pos += m.head_len;
            http_msg_reset(&m);
            continue;
        }
        keep = client_keep;
        if (m.framing == BODY_UNTIL_CLOSE || (m.framing == BODY_CHUNKED && client_minor == 0))
            keep = 0;
        http_write_response(&wire, &m, client_minor, keep);
        want[nwant++] = m.status;
        have_final = 1;
        switch (m.framing) {
        case BODY_NONE: complete = 1; break;
        case BODY_LENGTH: {
            size_t k = n < m.content_length ? n : (size_t)m.content_length;
            add(&wire, b, k);
            add(&body, b, k);
            complete = k == m.content_length;
            break;
        }
        case BODY_CHUNKED:
            complete =
                proxy_dechunk(&m, b, n, step, client_minor >= 1, &wire, &body) == HTTP_BODY_DONE;
            eof_framed = client_minor == 0;
            break;
        case BODY_UNTIL_CLOSE:
            add(&wire, b, n);
            add(&body, b, n);
            complete = eof_framed = 1;
            break;
        }
        break;
    }
    http_msg_free(&m);

    struct peer cl;
    peer_init(&cl, HTTP_RESPONSE, head_req);
    llhttp_errno_t e = execute(&cl.p, &wire);
    if (!have_final || !complete) {
        /* Interim heads only, or a body cut short (the proxy closes): no error
         * so far, no final response; a de-chunked body to a 1.0 client is
         * framed by the close, which the client cannot tell from the end. */
        CHECK(e == HPE_OK && cl.finals == 0);
    } else if (eof_framed) {
        CHECK(e == HPE_OK && cl.finals == 0);
        CHECK(llhttp_finish(&cl.p) == HPE_PAUSED && cl.finals == 1);
    } else {
        CHECK(e == HPE_PAUSED || (tunnel && e == HPE_PAUSED_UPGRADE));
        CHECK(llhttp_get_error_pos(&cl.p) == wire.data + wire.len - tunnel);
        CHECK(cl.finals == 1);
    }
    CHECK(cl.begun == nwant);
    for (int i = 0; i < nwant && i < cl.begun; i++) {
        const struct peer_msg *pm = &cl.msg[i];
        CHECK(pm->status == want[i] && pm->major == 1 && pm->minor == 1);
        if (pm->status < 200 || pm->status == 204 || pm->status == 304)
            CHECK(pm->cl_lines == 0 && pm->te_lines == 0);
        if (client_minor == 0) CHECK(pm->te_lines == 0);
        CHECK(pm->cl_lines + pm->te_lines <= 1);
    }
    if (have_final && complete && want[nwant - 1] != 101) CHECK(cl.msg[nwant - 1].keep == keep);
    CHECK(same_bytes(&cl.body, &body));
    peer_free(&cl);
    sbuf_free(&body);
    sbuf_free(&wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t step = 1 + data[1] % 64;
    const char *buf = (const char *)data + 2;
    if (data[0] & 1)
        response_mode(data[0], buf, size - 2, step);
    else
        request_mode(buf, size - 2, step);
    return 0;
}
