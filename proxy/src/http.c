#define _GNU_SOURCE
#include "http.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    struct http_msg *m = msg_of(p);
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
    struct http_hdr *h = cur_hdr(m);
    if (m->span != 2) {
        h->value = at;
        h->vlen = 0;
        m->span = 2;
    }
    h->vlen += (uint32_t)len;
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    struct http_msg *m = msg_of(p);
    if (m->nhdr >= m->max_hdr) m->too_many = 1;
    if (m->nhdr <= m->max_hdr) m->nhdr++;
    m->span = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    msg_of(p)->head_done = 1;
    return HPE_PAUSED;
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
    settings = s;
}

int http_msg_init(struct http_msg *m, llhttp_type_t type, int max_headers) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_once);
    memset(m, 0, sizeof(*m));
    m->max_hdr = max_headers;
    m->hdr = calloc((size_t)max_headers + 1, sizeof(*m->hdr));
    if (!m->hdr) return -1;
    llhttp_init(&m->parser, type, &settings);
    m->parser.data = m;
    return 0;
}

void http_msg_free(struct http_msg *m) {
    free(m->hdr);
    m->hdr = NULL;
}

void http_msg_reset(struct http_msg *m) {
    struct http_hdr *hdr = m->hdr;
    int max = m->max_hdr;
    llhttp_t p = m->parser;
    memset(m, 0, sizeof(*m));
    m->hdr = hdr;
    m->max_hdr = max;
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

/* Syntax llhttp lets through in strict mode and RFC 9112 says to refuse:
 * whitespace before the colon, obs-fold (a CR/LF inside a value), NUL. */
static int headers_well_formed(const struct http_msg *m) {
    for (int i = 0; i < m->nhdr && i < m->max_hdr; i++) {
        const struct http_hdr *h = &m->hdr[i];
        if (h->nlen == 0 || h->name[h->nlen] != ':') return 0;
        for (uint32_t j = 0; j < h->vlen; j++) {
            char c = h->value[j];
            if (c == '\r' || c == '\n' || c == '\0') return 0;
        }
    }
    return 1;
}

/* The last coding of Transfer-Encoding, over all its lines. */
static int te_ends_in_chunked(const struct http_msg *m, int *only_chunked) {
    int chunked_last = 0, codings = 0;
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
            codings++;
            chunked_last = span_eq(h->value + s, e - s, "chunked");
        }
    }
    *only_chunked = codings == 1 && chunked_last;
    return chunked_last;
}

static int persistent(const struct http_msg *m) {
    if (any_hdr_has_token(m, "connection", "close")) return 0;
    if (m->minor >= 1) return 1;
    return any_hdr_has_token(m, "connection", "keep-alive");
}

static int finish_request_head(struct http_msg *m) {
    const llhttp_t *p = &m->parser;
    m->method = p->method;
    m->major = p->http_major;
    m->minor = p->http_minor;
    if (m->major != 1 || m->minor > 1) return -505;
    if (m->too_many) return -431;
    if (!headers_well_formed(m)) return -400;
    int hosts = count_hdr(m, "host");
    if (hosts > 1 || (hosts == 0 && m->minor == 1)) return -400;
    int has_te = count_hdr(m, "transfer-encoding") > 0;
    int ncl = count_hdr(m, "content-length");
    if (ncl > 1 || (ncl && has_te)) return -400;
    if (has_te) {
        int only_chunked;
        te_ends_in_chunked(m, &only_chunked);
        if (!only_chunked || m->minor == 0) return -400;
        m->framing = BODY_CHUNKED;
    } else if (ncl) {
        m->content_length = p->content_length;
        m->framing = m->content_length ? BODY_LENGTH : BODY_NONE;
    } else {
        m->framing = BODY_NONE;
    }
    m->keep_alive = persistent(m);
    m->upgrade = m->framing == BODY_NONE && http_find(m, "upgrade") &&
                 any_hdr_has_token(m, "connection", "upgrade");
    const struct http_hdr *ex = http_find(m, "expect");
    m->expect_continue = ex && span_eq(ex->value, ex->vlen, "100-continue");
    return HTTP_HEAD_DONE;
}

static int finish_response_head(struct http_msg *m, int response_to_head) {
    const llhttp_t *p = &m->parser;
    m->status = p->status_code;
    m->major = p->http_major;
    m->minor = p->http_minor;
    if (m->major != 1 || m->too_many || !headers_well_formed(m)) return -502;
    int ncl = count_hdr(m, "content-length");
    int has_te = count_hdr(m, "transfer-encoding") > 0;
    if (ncl > 1 || (ncl && has_te)) return -502;
    int only_chunked;
    if (response_to_head || m->status < 200 || m->status == 204 || m->status == 304)
        m->framing = BODY_NONE;
    else if (has_te)
        m->framing = te_ends_in_chunked(m, &only_chunked) ? BODY_CHUNKED : BODY_UNTIL_CLOSE;
    else if (ncl) {
        m->content_length = p->content_length;
        m->framing = m->content_length ? BODY_LENGTH : BODY_NONE;
    } else
        m->framing = BODY_UNTIL_CLOSE;
    m->keep_alive = persistent(m) && m->framing != BODY_UNTIL_CLOSE;
    m->upgrade = m->status == 101;
    return HTTP_HEAD_DONE;
}

int http_parse_head(struct http_msg *m, const char *buf, size_t len, int response_to_head) {
    int is_request = m->parser.type == HTTP_REQUEST;
    llhttp_errno_t e = llhttp_execute(&m->parser, buf + m->parsed, len - m->parsed);
    if (e == HPE_OK) {
        m->parsed = len;
        if (m->too_many) return is_request ? -431 : -502;
        return HTTP_NEED_MORE;
    }
    if (e != HPE_PAUSED || !m->head_done) return is_request ? -400 : -502;
    m->head_len = (size_t)(llhttp_get_error_pos(&m->parser) - buf);
    m->parsed = m->head_len;
    return is_request ? finish_request_head(m) : finish_response_head(m, response_to_head);
}

int http_parse_chunked(struct http_msg *m, const char *data, size_t len, size_t *used) {
    if (llhttp_get_errno(&m->parser) == HPE_PAUSED) llhttp_resume(&m->parser);
    llhttp_errno_t e = llhttp_execute(&m->parser, data, len);
    if (e == HPE_OK) {
        *used = len;
        return HTTP_NEED_MORE;
    }
    if (e == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&m->parser) - data);
        return HTTP_BODY_DONE;
    }
    return -400;
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
/* Connection may not take these away: the framing and the target are ours
 * to keep consistent with the backend ("Connection: content-length" is a
 * smuggling trick). */
static const char *const never_listed[] = {"content-length", "transfer-encoding", "host"};

static int in_set(const char *name, size_t len, const char *const *set, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (span_eq(name, len, set[i])) return 1;
    return 0;
}

static int listed_in_connection(const struct http_msg *m, const struct http_hdr *h) {
    if (in_set(h->name, h->nlen, never_listed, 3)) return 0;
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
    return in_set(h->name, h->nlen, hop_by_hop, sizeof(hop_by_hop) / sizeof(hop_by_hop[0])) ||
           listed_in_connection(m, h);
}

static void add_header(struct sbuf *out, const struct http_hdr *h) {
    sbuf_add(out, h->name, h->nlen);
    sbuf_add(out, ": ", 2);
    sbuf_add(out, h->value, h->vlen);
    sbuf_add(out, "\r\n", 2);
}

static void add_target(struct sbuf *out, const struct http_msg *req, size_t strip_len) {
    if (!strip_len || strip_len > req->url_len) {
        sbuf_add(out, req->url, req->url_len);
        return;
    }
    const char *rest = req->url + strip_len;
    size_t rlen = req->url_len - strip_len;
    if (!rlen || rest[0] != '/') sbuf_add(out, "/", 1);
    sbuf_add(out, rest, rlen);
}

void http_write_request(struct sbuf *out, const struct http_msg *req,
                        const struct forward_info *fi) {
    sbuf_adds(out, llhttp_method_name((llhttp_method_t)req->method));
    sbuf_add(out, " ", 1);
    add_target(out, req, fi->strip_len);
    sbuf_addf(out, " HTTP/1.%d\r\n", req->minor);
    struct sbuf xff = {0};
    int has_id = 0;
    for (int i = 0; i < req->nhdr && i < req->max_hdr; i++) {
        const struct http_hdr *h = &req->hdr[i];
        if (drop_header(req, h)) continue;
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
    sbuf_adds(out, "X-Forwarded-For: ");
    if (xff.len) sbuf_add(out, xff.data, xff.len);
    sbuf_free(&xff);
    sbuf_addf(out, "%s\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: %d\r\n", fi->client_ip,
              fi->listen_port);
    if (!has_id) sbuf_addf(out, "X-Request-Id: %s\r\n", fi->request_id);
    if (req->upgrade) {
        const struct http_hdr *up = http_find(req, "upgrade");
        sbuf_adds(out, "Connection: Upgrade\r\nUpgrade: ");
        sbuf_add(out, up->value, up->vlen);
        sbuf_add(out, "\r\n", 2);
    } else if (req->minor == 0) {
        sbuf_adds(out, "Connection: keep-alive\r\n");
    }
    sbuf_add(out, "\r\n", 2);
}

void http_write_response(struct sbuf *out, const struct http_msg *resp, int client_minor,
                         int keep_alive) {
    sbuf_addf(out, "HTTP/1.1 %d ", resp->status);
    if (resp->reason_len)
        sbuf_add(out, resp->reason, resp->reason_len);
    else
        sbuf_adds(out, http_reason(resp->status));
    sbuf_add(out, "\r\n", 2);
    for (int i = 0; i < resp->nhdr && i < resp->max_hdr; i++)
        if (!drop_header(resp, &resp->hdr[i])) add_header(out, &resp->hdr[i]);
    const struct http_hdr *up = resp->upgrade ? http_find(resp, "upgrade") : NULL;
    if (up) {
        sbuf_adds(out, "Connection: Upgrade\r\nUpgrade: ");
        sbuf_add(out, up->value, up->vlen);
        sbuf_add(out, "\r\n", 2);
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
