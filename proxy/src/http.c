#define _GNU_SOURCE
#include "http.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const desync_class_names[DESYNC_CLASSES] = {"compliant", "acceptable", "ambiguous",
                                                        "severe"};

/* Trailer fields of a chunked body are checked by llhttp and dropped; this
 * bounds how many bytes of them one message may send. */
#define HTTP_MAX_TRAILER_BYTES 16384

/* ---- parsing ---- */

static struct http_msg *msg_of(llhttp_t *p) {
    return p->data;
}

static struct http_hdr *cur_hdr(struct http_msg *m) {
    /* Past max_hdr every header lands in the spare last slot: the head will be
     * refused with 431, but llhttp still gets to check its syntax. */
    return &m->hdr[m->nhdr < m->max_hdr ? m->nhdr : m->max_hdr];
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
    if (!m->url) m->url = at;
    m->url_len += len;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
    if (!m->reason) m->reason = at;
    m->reason_len += len;
    return 0;
}

/* After the head, the field callbacks see a chunked body's trailers: they
 * are only counted, never added to the head. */
static int trailer_bytes(struct http_msg *m, size_t len) {
    m->trailer_bytes += len;
    if (m->trailer_bytes <= HTTP_MAX_TRAILER_BYTES) return 0;
    m->why = "trailer section too large";
    return -1;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
    if (m->head_done) return trailer_bytes(m, len);
    struct http_hdr *h = cur_hdr(m);
    if (m->span != 1) {
        *h = (struct http_hdr){.name = at, .value = ""};
        m->span = 1;
    }
    h->nlen += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
    if (m->head_done) return trailer_bytes(m, len);
    struct http_hdr *h = cur_hdr(m);
    if (m->span != 2) {
        h->value = at;
        h->vlen = 0;
        m->span = 2;
    } else if (at != h->value + h->vlen) {
        m->folded = 1; /* llhttp calls again for an obs-fold continuation line */
    }
    h->vlen += (uint32_t)len;
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    struct http_msg *m = msg_of(p);
    if (m->head_done) return 0;
    if (m->nhdr >= m->max_hdr) m->too_many = 1;
    if (m->nhdr <= m->max_hdr) m->nhdr++;
    m->span = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    msg_of(p)->head_done = 1;
    return HPE_PAUSED;
}

static void put_hex(struct sbuf *out, uint64_t n) {
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    sbuf_add(out, tmp + i, sizeof(tmp) - (size_t)i);
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
    if (!m->body_out) return 0;
    if (m->rechunk) {
        put_hex(m->body_out, len);
        sbuf_add(m->body_out, "\r\n", 2);
    }
    sbuf_add(m->body_out, at, len);
    if (m->rechunk) sbuf_add(m->body_out, "\r\n", 2);
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    (void)p;
    return HPE_PAUSED;
}

static llhttp_settings_t settings;

static void settings_once(void) {
    if (settings.on_headers_complete) return;
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_url = on_url;
    s.on_status = on_status;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_message_complete = on_message_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    settings = s;
}

void http_msg_init_lent(struct http_msg *m, llhttp_type_t type, int max_headers) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_once);
    memset(m, 0, sizeof(*m));
    m->max_hdr = max_headers;
    llhttp_init(&m->parser, type, &settings);
    m->parser.data = m;
}

int http_msg_init(struct http_msg *m, llhttp_type_t type, int max_headers) {
    http_msg_init_lent(m, type, max_headers);
    m->hdr = calloc(HTTP_INDEX_LEN(max_headers), sizeof(*m->hdr));
    m->own_index = 1;
    return m->hdr ? 0 : -1;
}

void http_msg_free(struct http_msg *m) {
    if (m->own_index) free(m->hdr);
    m->hdr = NULL;
}

void http_msg_reset(struct http_msg *m) {
    struct http_hdr *hdr = m->hdr;
    int max = m->max_hdr, own = m->own_index;
    llhttp_t p = m->parser;
    memset(m, 0, sizeof(*m));
    m->hdr = hdr;
    m->max_hdr = max;
    m->own_index = own;
    m->parser = p;
    llhttp_reset(&m->parser);
    m->parser.data = m;
}

static int span_eq(const char *s, size_t len, const char *lit) {
    return strlen(lit) == len && !strncasecmp(s, lit, len);
}

const struct http_hdr *http_find(const struct http_msg *m, const char *name) {
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++)
        if (span_eq(m->hdr[i].name, m->hdr[i].nlen, name)) return &m->hdr[i];
    return NULL;
}

static int count_hdr(const struct http_msg *m, const char *name) {
    int n = 0;
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++)
        n += span_eq(m->hdr[i].name, m->hdr[i].nlen, name);
    return n;
}

static int is_ows(char c) {
    return c == ' ' || c == '\t';
}

/* Calls fn on each comma-separated token of a header value, trimmed. Stops
 * and returns 1 when fn does. */
static int each_token(const char *s, size_t len, int (*fn)(const char *, size_t, const void *),
                      const void *arg) {
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t end = i;
        while (start < end && is_ows(s[start]))
            start++;
        while (end > start && is_ows(s[end - 1]))
            end--;
        if (end > start && fn(s + start, end - start, arg)) return 1;
        i++;
    }
    return 0;
}

static int token_eq(const char *t, size_t len, const void *want) {
    return span_eq(t, len, want);
}

int http_token_in_list(const char *list, size_t len, const char *token) {
    return each_token(list, len, token_eq, token);
}

/* Whether any header `name` lists `token`. */
static int any_hdr_has_token(const struct http_msg *m, const char *name, const char *token) {
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++)
        if (span_eq(m->hdr[i].name, m->hdr[i].nlen, name) &&
            http_token_in_list(m->hdr[i].value, m->hdr[i].vlen, token))
            return 1;
    return 0;
}

/* ---- classification: the checks llhttp leaves to us, for both directions ---- */

/* Raises the message's class to k (never lowers it), keeping the first
 * reason of the highest class. */
static void note(struct http_msg *m, enum desync_class k, const char *why) {
    if (k > m->klass || !m->why) {
        m->klass = k;
        m->why = why;
    }
}

/* A head that is not forwarded: the status to answer it with. */
static int refuse(struct http_msg *m, int status) {
    m->refuse_status = status;
    return HTTP_REFUSED;
}

/* Every line of the head ends in CRLF: no bare LF (llhttp's strict mode
 * still takes one after the request line), no bare CR. */
static const char *line_end_problem(const char *head, size_t len) {
    for (const char *p = memchr(head, '\n', len); p;
         p = memchr(p + 1, '\n', len - (size_t)(p + 1 - head)))
        if (p == head || p[-1] != '\r') return "bare LF";
    for (const char *p = memchr(head, '\r', len); p;
         p = memchr(p + 1, '\r', len - (size_t)(p + 1 - head)))
        if (p + 1 == head + len || p[1] != '\n') return "bare CR";
    return NULL;
}

/* Field syntax llhttp lets through in strict mode and RFC 9112 5 refuses:
 * whitespace before the colon, obs-fold, CR/LF/NUL in a value. */
static const char *field_problem(const struct http_msg *m) {
    if (m->folded) return "obs-fold";
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        if (h->nlen == 0) return "empty field name";
        if (h->name[h->nlen] != ':') return "whitespace before a colon";
        /* a value that starts on a continuation line ("X:" CRLF SP "v") */
        for (const char *p = h->name + h->nlen + 1; h->vlen && p < h->value; p++)
            if (*p == '\r' || *p == '\n') return "obs-fold";
        for (uint32_t j = 0; j < h->vlen; j++) {
            unsigned char c = (unsigned char)h->value[j];
            if ((c < 0x20 && c != '\t') || c == 0x7f) return "control byte in a field value";
        }
    }
    return NULL;
}

/* A name that common normalisations (case, '_' for '-', other punctuation
 * dropped) turn into Transfer-Encoding or Content-Length, but is not it:
 * some servers in a chain would frame the message by it, others not. */
static int looks_like(const char *name, size_t len, const char *letters) {
    size_t k = 0, want = strlen(letters);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) continue;
        if (k == want || c != (unsigned char)letters[k]) return 0;
        k++;
    }
    return k == want;
}

static int suspicious_name(const struct http_hdr *h) {
    if (span_eq(h->name, h->nlen, "transfer-encoding") ||
        span_eq(h->name, h->nlen, "content-length"))
        return 0;
    return looks_like(h->name, h->nlen, "transferencoding") ||
           looks_like(h->name, h->nlen, "contentlength");
}

/* The transfer codings over every Transfer-Encoding line: how many, and
 * whether chunked is there exactly once, as the last. */
static void te_codings(const struct http_msg *m, int *codings, int *chunked_once_last) {
    int n = 0, chunked = 0, last_chunked = 0;
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        if (!span_eq(h->name, h->nlen, "transfer-encoding")) continue;
        size_t k = 0;
        while (k < h->vlen) {
            size_t s = k;
            while (k < h->vlen && h->value[k] != ',')
                k++;
            size_t e = k++;
            while (s < e && is_ows(h->value[s]))
                s++;
            while (e > s && is_ows(h->value[e - 1]))
                e--;
            if (e == s) continue;
            n++;
            last_chunked = span_eq(h->value + s, e - s, "chunked");
            chunked += last_chunked;
        }
    }
    *codings = n;
    *chunked_once_last = chunked == 1 && last_chunked;
}

static int persistent(const struct http_msg *m) {
    if (any_hdr_has_token(m, "connection", "close")) return 0;
    if (m->minor >= 1) return 1;
    return any_hdr_has_token(m, "connection", "keep-alive");
}

/* The framing fields of either direction: Content-Length (llhttp has
 * checked its syntax and refused a second one) and Transfer-Encoding,
 * which must be exactly "chunked". 0, or -1 with m->why set. */
static int read_framing(struct http_msg *m) {
    int ncl = count_hdr(m, "content-length");
    int has_te = count_hdr(m, "transfer-encoding") > 0;
    if (ncl > 1) return m->why = "two Content-Length fields", -1;
    if (ncl && has_te) return m->why = "Content-Length with Transfer-Encoding", -1;
    if (has_te) {
        int codings, chunked_ok;
        te_codings(m, &codings, &chunked_ok);
        if (!chunked_ok) return m->why = "chunked not once and last in Transfer-Encoding", -1;
        if (codings != 1) return m->why = "a transfer coding other than chunked", -1;
        if (m->minor == 0) return m->why = "Transfer-Encoding in HTTP/1.0", -1;
        /* what llhttp will decode by ("chunked," is not chunked to it) */
        if (!(m->parser.flags & F_CHUNKED))
            return m->why = "Transfer-Encoding llhttp does not take as chunked", -1;
        m->te_chunked = 1;
        m->framing = BODY_CHUNKED;
    } else if (ncl) {
        m->has_length = 1;
        m->content_length = m->parser.content_length;
        m->framing = m->content_length ? BODY_LENGTH : BODY_NONE;
    } else {
        m->framing = BODY_NONE;
    }
    return 0;
}

/* The request line is exactly method SP target SP version CRLF. */
static int request_line_ok(const struct http_msg *m) {
    const char *end = m->url + m->url_len;
    return m->url[-1] == ' ' && m->url[-2] != ' ' && !memcmp(end, " HTTP/1.", 8) && end[9] == '\r';
}

/* Splits the target: origin-form as it is, absolute-form ("http://host/p")
 * into its authority and an origin-form path. 0, or -1 with m->why. */
static int split_target(struct http_msg *m) {
    const char *u = m->url;
    size_t n = m->url_len, skip = 0;
    m->path = u;
    m->path_len = n;
    if (m->method == HTTP_CONNECT) return 0; /* authority-form: refused by the proxy (405) */
    if (n && u[0] == '/') return 0;
    if (n == 1 && u[0] == '*' && m->method == HTTP_OPTIONS) return 0;
    if (n > 7 && !strncasecmp(u, "http://", 7))
        skip = 7;
    else if (n > 8 && !strncasecmp(u, "https://", 8))
        skip = 8;
    else
        return m->why = "request-target not in origin or absolute form", -1;
    size_t a = skip;
    while (a < n && u[a] != '/' && u[a] != '?' && u[a] != '#')
        a++;
    if (a == skip) return m->why = "absolute-form target without a host", -1;
    if (memchr(u + skip, '@', a - skip)) return m->why = "userinfo in the target", -1;
    m->authority = u + skip;
    m->authority_len = a - skip;
    m->path = u + a;
    m->path_len = n - a;
    if (!m->path_len) {
        m->path = "/"; /* RFC 9112 3.2.1: an empty path is "/" */
        m->path_len = 1;
    } else if (m->path[0] != '/') {
        return m->why = "absolute-form target with a query but no path", -1;
    }
    return 0;
}

static int finish_request_head(struct http_msg *m, const char *buf) {
    const llhttp_t *p = &m->parser;
    const char *why;
    m->method = p->method;
    m->major = p->http_major;
    m->minor = p->http_minor;
    if (m->major == 0) {
        note(m, DESYNC_SEVERE, "no HTTP version in the request line");
        return refuse(m, 400);
    }
    if (m->major != 1 || m->minor > 1) {
        note(m, DESYNC_SEVERE, "unsupported HTTP version");
        return refuse(m, 505);
    }
    if (m->too_many) return m->why = "too many fields", refuse(m, 431);
    if ((why = line_end_problem(buf, m->head_len)) || (why = field_problem(m))) {
        note(m, DESYNC_SEVERE, why);
        return refuse(m, 400);
    }
    if (!request_line_ok(m)) {
        note(m, DESYNC_SEVERE, "malformed request line");
        return refuse(m, 400);
    }
    int hosts = count_hdr(m, "host");
    if (hosts > 1 || (hosts == 0 && m->minor == 1)) {
        note(m, DESYNC_SEVERE, hosts ? "two Host fields" : "no Host field");
        return refuse(m, 400);
    }
    if (read_framing(m) < 0 || split_target(m) < 0) {
        note(m, DESYNC_SEVERE, m->why);
        return refuse(m, 400);
    }
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++)
        if (suspicious_name(&m->hdr[i])) note(m, DESYNC_AMBIGUOUS, "field name like a framing one");
    if (m->method == HTTP_GET || m->method == HTTP_HEAD) {
        if (m->framing != BODY_NONE)
            note(m, DESYNC_AMBIGUOUS, "a body on GET or HEAD");
        else if (m->has_length)
            note(m, DESYNC_ACCEPTABLE, "Content-Length: 0 on GET or HEAD");
    }
    m->keep_alive = persistent(m);
    m->upgrade = m->method == HTTP_GET && m->framing == BODY_NONE &&
                 any_hdr_has_token(m, "upgrade", "websocket") &&
                 any_hdr_has_token(m, "connection", "upgrade");
    const struct http_hdr *ex = http_find(m, "expect");
    m->expect_continue = ex && span_eq(ex->value, ex->vlen, "100-continue");
    if (!m->why) m->why = "compliant";
    return HTTP_HEAD_DONE;
}

/* A response is framed by the same rules with its own: no body for HEAD,
 * 1xx, 204, 304; else Content-Length, chunked, or until the close. Anything
 * invalid or ambiguous in its framing is a 502. */
static int finish_response_head(struct http_msg *m, const char *buf, int response_to_head) {
    const llhttp_t *p = &m->parser;
    const char *why;
    m->status = p->status_code;
    m->major = p->http_major;
    m->minor = p->http_minor;
    if (m->major != 1)
        why = "HTTP version";
    else if (m->status < 100)
        why = "status code below 100";
    else if (m->too_many)
        why = "too many fields";
    else if (!(why = line_end_problem(buf, m->head_len)) && !(why = field_problem(m)) &&
             read_framing(m) < 0)
        why = m->why;
    if (why) {
        note(m, DESYNC_SEVERE, why);
        return refuse(m, 502);
    }
    if (response_to_head || m->status < 200 || m->status == 204 || m->status == 304)
        m->framing = BODY_NONE;
    else if (m->framing == BODY_NONE && !m->has_length)
        m->framing = BODY_UNTIL_CLOSE;
    m->keep_alive = persistent(m) && m->framing != BODY_UNTIL_CLOSE;
    m->upgrade = m->status == 101;
    m->why = "compliant";
    return HTTP_HEAD_DONE;
}

int http_parse_head(struct http_msg *m, const char *buf, size_t len, int response_to_head) {
    int is_request = m->parser.type == HTTP_REQUEST;
    llhttp_errno_t e = llhttp_execute(&m->parser, buf + m->parsed, len - m->parsed);
    if (e == HPE_OK) {
        m->parsed = len;
        if (m->too_many) return m->why = "too many fields", refuse(m, is_request ? 431 : 502);
        return HTTP_NEED_MORE;
    }
    if (e != HPE_PAUSED || !m->head_done) {
        note(m, DESYNC_SEVERE, llhttp_get_error_reason(&m->parser));
        return refuse(m, is_request ? 400 : 502);
    }
    m->head_len = (size_t)(llhttp_get_error_pos(&m->parser) - buf);
    m->parsed = m->head_len;
    return is_request ? finish_request_head(m, buf)
                      : finish_response_head(m, buf, response_to_head);
}

int http_dechunk(struct http_msg *m, const char *data, size_t len, size_t *used, struct sbuf *out,
                 int rechunk) {
    if (llhttp_get_errno(&m->parser) == HPE_PAUSED) llhttp_resume(&m->parser);
    m->body_out = out;
    m->rechunk = rechunk;
    llhttp_errno_t e = llhttp_execute(&m->parser, data, len);
    m->body_out = NULL;
    if (e == HPE_OK) {
        *used = len;
        if (len) m->body_tail = data[len - 1];
        return HTTP_NEED_MORE;
    }
    if (e == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&m->parser) - data);
        /* strict llhttp still takes a bare LF as the trailer section's end */
        char before = *used >= 2 ? data[*used - 2] : m->body_tail;
        if (before != '\r') {
            note(m, DESYNC_SEVERE, "bare LF ending the chunked body");
            return -1;
        }
        if (out && rechunk) sbuf_add(out, "0\r\n\r\n", 5);
        return HTTP_BODY_DONE;
    }
    /* (HPE_USER: a callback refused, m->why says why) */
    note(m, DESYNC_SEVERE, e == HPE_USER ? m->why : llhttp_get_error_reason(&m->parser));
    return -1;
}

/* ---- writing ---- */

void sbuf_add(struct sbuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) abort(); /* a head we cannot build: nothing sane to do */
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sbuf_adds(struct sbuf *b, const char *s) {
    sbuf_add(b, s, strlen(s));
}

void sbuf_addu(struct sbuf *b, uint64_t v) {
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sbuf_add(b, tmp + i, sizeof(tmp) - i);
}

void sbuf_addf(struct sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(tmp)) {
        sbuf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sbuf_add(b, big, (size_t)n);
    free(big);
}

void sbuf_free(struct sbuf *b) {
    free(b->data);
    *b = (struct sbuf){0};
}

static const char *const hop_by_hop[] = {"connection", "keep-alive", "proxy-connection",
                                         "te",         "trailer",    "upgrade"};
/* The framing is the proxy's to write, from what it decided. */
static const char *const framing_fields[] = {"content-length", "transfer-encoding"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int in_set(const char *name, size_t len, const char *const *set, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (span_eq(name, len, set[i])) return 1;
    return 0;
}

/* Connection may not take Host away ("Connection: host" is a trick to make
 * a next hop route by something else); the framing fields go anyway. */
static int listed_in_connection(const struct http_msg *m, const struct http_hdr *h) {
    if (span_eq(h->name, h->nlen, "host")) return 0;
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++) {
        const struct http_hdr *c = &m->hdr[i];
        if (!span_eq(c->name, c->nlen, "connection")) continue;
        char name[128];
        if (h->nlen >= sizeof(name)) continue;
        memcpy(name, h->name, h->nlen);
        name[h->nlen] = 0;
        if (http_token_in_list(c->value, c->vlen, name)) return 1;
    }
    return 0;
}

static int drop_header(const struct http_msg *m, const struct http_hdr *h) {
    return in_set(h->name, h->nlen, hop_by_hop, NELEM(hop_by_hop)) ||
           in_set(h->name, h->nlen, framing_fields, NELEM(framing_fields)) ||
           listed_in_connection(m, h);
}

static void add_field(struct sbuf *out, const char *name, size_t nlen, const char *value,
                      size_t vlen) {
    sbuf_add(out, name, nlen);
    sbuf_add(out, ": ", 2);
    sbuf_add(out, value, vlen);
    sbuf_add(out, "\r\n", 2);
}

static void add_header(struct sbuf *out, const struct http_hdr *h) {
    add_field(out, h->name, h->nlen, h->value, h->vlen);
}

static void add_target(struct sbuf *out, const struct http_msg *req, size_t strip_len) {
    if (!strip_len || strip_len > req->path_len) {
        sbuf_add(out, req->path, req->path_len);
        return;
    }
    const char *rest = req->path + strip_len;
    size_t rlen = req->path_len - strip_len;
    if (!rlen || rest[0] != '/') sbuf_add(out, "/", 1);
    sbuf_add(out, rest, rlen);
}

static void add_upgrade(struct sbuf *out, const struct http_msg *m) {
    const struct http_hdr *up = http_find(m, "upgrade");
    sbuf_adds(out, "Connection: Upgrade\r\n");
    add_field(out, "Upgrade", 7, up ? up->value : "", up ? up->vlen : 0);
}

/* (written without printf: the heads are the data path's hottest strings) */
static void add_length(struct sbuf *out, uint64_t n) {
    sbuf_adds(out, "Content-Length: ");
    sbuf_addu(out, n);
    sbuf_add(out, "\r\n", 2);
}

void http_write_request(struct sbuf *out, const struct http_msg *req,
                        const struct forward_info *fi) {
    sbuf_adds(out, llhttp_method_name((llhttp_method_t)req->method));
    sbuf_add(out, " ", 1);
    add_target(out, req, fi->strip_len);
    sbuf_adds(out, " HTTP/1.");
    sbuf_addu(out, (unsigned)req->minor);
    sbuf_add(out, "\r\n", 2);
    struct sbuf xff = {0};
    int has_id = 0;
    if (req->authority) add_field(out, "Host", 4, req->authority, req->authority_len);
    for (int i = 0; i < req->nhdr && i < req->max_hdr; i++) {
        const struct http_hdr *h = &req->hdr[i];
        if (drop_header(req, h)) continue;
        if (req->authority && span_eq(h->name, h->nlen, "host")) continue;
        if (span_eq(h->name, h->nlen, "x-forwarded-for")) {
            if (h->vlen) {
                sbuf_add(&xff, h->value, h->vlen);
                sbuf_add(&xff, ", ", 2);
            }
            continue;
        }
        if (span_eq(h->name, h->nlen, "x-forwarded-proto") ||
            span_eq(h->name, h->nlen, "x-forwarded-port"))
            continue;
        if (span_eq(h->name, h->nlen, "x-request-id")) has_id = 1;
        add_header(out, h);
    }
    if (req->framing == BODY_CHUNKED)
        sbuf_adds(out, "Transfer-Encoding: chunked\r\n");
    else if (req->has_length)
        add_length(out, req->content_length);
    sbuf_adds(out, "X-Forwarded-For: ");
    if (xff.len) sbuf_add(out, xff.data, xff.len);
    sbuf_free(&xff);
    sbuf_adds(out, fi->client_ip);
    sbuf_adds(out, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ");
    sbuf_addu(out, (unsigned)fi->listen_port);
    sbuf_add(out, "\r\n", 2);
    if (!has_id) {
        sbuf_adds(out, "X-Request-Id: ");
        sbuf_adds(out, fi->request_id);
        sbuf_add(out, "\r\n", 2);
    }
    if (req->upgrade)
        add_upgrade(out, req);
    else if (req->minor == 0)
        sbuf_adds(out, "Connection: keep-alive\r\n");
    sbuf_add(out, "\r\n", 2);
}

/* What frames the response's body for the client. */
static void add_response_framing(struct sbuf *out, const struct http_msg *resp, int client_minor) {
    if (resp->status < 200 || resp->status == 204 || resp->status == 304) return;
    /* (a HEAD response keeps the framing fields it came with, its body none) */
    if (resp->has_length)
        add_length(out, resp->content_length);
    else if (resp->te_chunked && client_minor >= 1)
        sbuf_adds(out, "Transfer-Encoding: chunked\r\n"); /* the pump re-encodes the body */
}

void http_write_response(struct sbuf *out, const struct http_msg *resp, int client_minor,
                         int keep_alive) {
    sbuf_adds(out, "HTTP/1.1 ");
    sbuf_addu(out, (unsigned)resp->status);
    sbuf_add(out, " ", 1);
    if (resp->reason_len)
        sbuf_add(out, resp->reason, resp->reason_len);
    else
        sbuf_adds(out, http_reason(resp->status));
    sbuf_add(out, "\r\n", 2);
    for (int i = 0; i < resp->nhdr && i < resp->max_hdr; i++)
        if (!drop_header(resp, &resp->hdr[i])) add_header(out, &resp->hdr[i]);
    add_response_framing(out, resp, client_minor);
    if (resp->upgrade) {
        add_upgrade(out, resp);
    } else if (resp->status >= 200) {
        if (!keep_alive)
            sbuf_adds(out, "Connection: close\r\n");
        else if (client_minor == 0)
            sbuf_adds(out, "Connection: keep-alive\r\n");
    }
    sbuf_add(out, "\r\n", 2);
}

void http_write_simple(struct sbuf *out, int status, const char *content_type, const char *body,
                       size_t body_len, int keep_alive) {
    sbuf_addf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
              http_reason(status), content_type, body_len,
              keep_alive ? "" : "Connection: close\r\n");
    sbuf_add(out, body, body_len);
}

void http_write_error(struct sbuf *out, int status, int keep_alive) {
    char body[96];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, http_reason(status));
    http_write_simple(out, status, "text/plain", body, (size_t)n, keep_alive);
}

int http_method_idempotent(int method) {
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE: return 1;
    default: return 0;
    }
}
