/* The endpoints: routing a request, and building its response (head and
 * small bodies into the output buffer; large bodies streamed). */
#define _GNU_SOURCE
#include "backend.h"
#include "fmt.h"
#include "http_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const unsigned char *pattern_block;

/* ---- small writers ---- */

static char *put_hex(char *p, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t json_escaped_len(const char *src, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t' || ch == '\b' ||
            ch == '\f')
            n += 2;
        else if (ch < 0x20 || ch == 0x7f)
            n += 6;
        else
            n++;
    }
    return n;
}

size_t json_escape(char *dst, const char *src, size_t len) {
    static const char hex[] = "0123456789abcdef";
    char *o = dst;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)src[i];
        switch (ch) {
        case '"': o = FMT_LIT(o, "\\\""); break;
        case '\\': o = FMT_LIT(o, "\\\\"); break;
        case '\n': o = FMT_LIT(o, "\\n"); break;
        case '\r': o = FMT_LIT(o, "\\r"); break;
        case '\t': o = FMT_LIT(o, "\\t"); break;
        case '\b': o = FMT_LIT(o, "\\b"); break;
        case '\f': o = FMT_LIT(o, "\\f"); break;
        default:
            if (ch < 0x20 || ch == 0x7f) {
                o = FMT_LIT(o, "\\u00");
                *o++ = hex[ch >> 4];
                *o++ = hex[ch & 15];
            } else {
                *o++ = (char)ch;
            }
        }
    }
    return (size_t)(o - dst);
}

static char *json_dup(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *p = malloc(json_escaped_len(s, n) + 1);
    if (!p) return NULL;
    *len = json_escape(p, s, n);
    p[*len] = 0;
    return p;
}

/* ---- start-up ---- */

int handlers_init(void) {
    cfg.id_json = json_dup(cfg.instance_id, &cfg.id_json_len);
    cfg.cluster_json = json_dup(cfg.cluster, &cfg.cluster_json_len);
    if (!cfg.id_json || !cfg.cluster_json) return -1;
    if (asprintf(&cfg.health_body, "{\"status\":\"ok\",\"instance_id\":\"%s\",\"cluster\":\"%s\"}",
                 cfg.id_json, cfg.cluster_json) < 0)
        return -1;
    cfg.health_len = strlen(cfg.health_body);
    if (asprintf(&cfg.default_prefix,
                 "{\"message\":\"Instance %s from %s has received the request\","
                 "\"instance_id\":\"%s\",\"cluster\":\"%s\",\"path\":\"",
                 cfg.id_json, cfg.cluster_json, cfg.id_json, cfg.cluster_json) < 0)
        return -1;
    cfg.default_prefix_len = strlen(cfg.default_prefix);
    unsigned char *b = malloc(PATTERN_LEN);
    if (!b) return -1;
    for (size_t i = 0; i < PATTERN_LEN; i++)
        b[i] = (unsigned char)(i % PATTERN_PERIOD);
    pattern_block = b;
    return 0;
}

/* ---- routing ---- */

/* Decimal digits only, no overflow, at most max. */
static int parse_dec(const char *s, size_t n, uint64_t max, uint64_t *out) {
    if (!n || n > 20) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int has_prefix(const char *s, size_t n, const char *prefix, size_t *plen) {
    *plen = strlen(prefix);
    return n >= *plen && !memcmp(s, prefix, *plen);
}

/* "chunked=1" (or =true) among the query's parameters. */
static int query_chunked(const char *q, size_t n) {
    while (n) {
        const char *amp = memchr(q, '&', n);
        size_t len = amp ? (size_t)(amp - q) : n;
        if ((len == 9 && !memcmp(q, "chunked=1", 9)) ||
            (len == 12 && !memcmp(q, "chunked=true", 12)))
            return 1;
        if (!amp) break;
        n -= len + 1;
        q = amp + 1;
    }
    return 0;
}

/* The endpoint a path (without its query) names; R_DEFAULT for none. */
static enum route match_endpoint(struct conn *c, const char *path, size_t n, const char *query,
                                 size_t qlen) {
    struct req *r = &c->req;
    size_t plen;
    if (n == 7 && !memcmp(path, "/health", 7)) return R_HEALTH;
    if (n == 5 && !memcmp(path, "/echo", 5) && (r->method == HTTP_POST || r->method == HTTP_PUT))
        return R_ECHO;
    if (has_prefix(path, n, "/bytes/", &plen)) {
        r->chunked_out =
            query && query_chunked(query, qlen) && r->http_major == 1 && r->http_minor >= 1;
        return parse_dec(path + plen, n - plen, UINT64_MAX >> 1, &r->arg) ? R_BAD : R_BYTES;
    }
    if (has_prefix(path, n, "/status/", &plen))
        return parse_dec(path + plen, n - plen, 599, &r->arg) || r->arg < 200 ? R_BAD : R_STATUS;
    if (has_prefix(path, n, "/delay/", &plen))
        return parse_dec(path + plen, n - plen, 3600000, &r->arg) ? R_BAD : R_DELAY;
    return R_DEFAULT;
}

void route_request(struct conn *c) {
    struct req *r = &c->req;
    const char *url = req_url(c);
    size_t len = r->n_url;
    /* The absolute form (http://host/path) names the same endpoints. */
    const char *scheme = memmem(url, len < 9 ? len : 9, "://", 3);
    if (scheme && url[0] != '/') {
        const char *slash = memchr(scheme + 3, '/', len - (size_t)(scheme + 3 - url));
        len = slash ? len - (size_t)(slash - url) : 0;
        url = slash ? slash : url + r->n_url;
    }
    const char *qm = memchr(url, '?', len);
    size_t n = qm ? (size_t)(qm - url) : len;
    const char *query = qm ? qm + 1 : NULL;
    size_t qlen = qm ? len - n - 1 : 0;
    if (r->method == HTTP_CONNECT) {
        r->route = R_BAD;
        r->keepalive = 0;
        return;
    }
    if (r->method == HTTP_GET && r->ws_upgrade) {
        r->route = R_WS;
        return;
    }
    r->route = match_endpoint(c, url, n, query, qlen);
    /* The proxy forwards /cluster1/echo as it is: endpoints also answer
     * under one leading path segment. */
    const char *second = n > 1 ? memchr(url + 1, '/', n - 1) : NULL;
    if (r->route == R_DEFAULT && second)
        r->route = match_endpoint(c, second, n - (size_t)(second - url), query, qlen);
    /* Decided once per request: a response can be attempted more than once. */
    int fail = backend_fail_status();
    if (fail && !(r->route == R_HEALTH && r->method == HTTP_GET)) {
        r->route = R_FAIL; /* a body is read and dropped, as for any non-echo route */
        r->arg = (uint64_t)fail;
        return;
    }
    if (r->route == R_HEALTH && cfg.health_flip) r->arg = (uint64_t)backend_health_flip_fails();
}

/* ---- responses ---- */

size_t head_max(const struct conn *c, size_t ctype_len) {
    (void)c;
    return 256 + ctype_len + strlen(cfg.instance_id);
}

char *put_head(struct conn *c, char *p, int status, const char *ctype, size_t ctype_len,
               int framing, uint64_t clen) {
    const char *why = http_reason(status);
    p = FMT_LIT(p, "HTTP/1.1 ");
    p = fmt_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = fmt_put(p, why, strlen(why));
    if (ctype) {
        p = FMT_LIT(p, "\r\nContent-Type: ");
        p = fmt_put(p, ctype, ctype_len);
    }
    if (framing == FR_LENGTH) {
        p = FMT_LIT(p, "\r\nContent-Length: ");
        p = fmt_u64(p, clen);
    } else if (framing == FR_CHUNKED) {
        p = FMT_LIT(p, "\r\nTransfer-Encoding: chunked");
    }
    p = FMT_LIT(p, "\r\nX-Instance-Id: ");
    p = fmt_put(p, cfg.instance_id, strlen(cfg.instance_id));
    if (!c->req.keepalive)
        p = FMT_LIT(p, "\r\nConnection: close");
    else if (c->req.http_major == 1 && c->req.http_minor == 0)
        p = FMT_LIT(p, "\r\nConnection: keep-alive");
    return FMT_LIT(p, "\r\n\r\n");
}

void burn_cpu(unsigned us) {
    if (!us) return;
    uint64_t start = ev_clock_us();
    while (ev_clock_us() - start < us) {
    }
}

static const char json_type[] = "application/json";
static const char octet_type[] = "application/octet-stream";
#define JSON_TYPE json_type, sizeof(json_type) - 1

/* Reserves room for a response and burns --work-us: NULL (nothing done) when
 * the output buffer cannot take it yet. */
static char *begin_response(struct conn *c, size_t need) {
    char *p = out_reserve(c, need);
    if (p) burn_cpu(cfg.work_us);
    return p;
}

/* Commits a response built from `start` to `end`, counting for the log
 * what it takes plus `more_body` bytes streamed after it. */
static int end_response(struct conn *c, int status, const char *start, char *end,
                        uint64_t more_body) {
    out_commit(c, end);
    c->req.status = status;
    c->req.bytes_out += (uint64_t)(end - start) + more_body;
    return 1;
}

/* A JSON body given whole, after --work-us when `work`. */
static int respond_body(struct conn *c, int status, const char *body, size_t len, int work) {
    size_t need = head_max(c, sizeof(json_type)) + len;
    char *p = work ? begin_response(c, need) : out_reserve(c, need);
    if (!p) return 0;
    char *o = put_head(c, p, status, JSON_TYPE, FR_LENGTH, len);
    if (!c->req.head_only) o = fmt_put(o, body, len);
    end_response(c, status, p, o, 0);
    request_finished(c);
    return 1;
}

static int respond_json(struct conn *c, int status, const char *body, size_t len) {
    return respond_body(c, status, body, len, 1);
}

/* Fail mode: the status at once, no --work-us (nor delay: step_respond). */
static int respond_fail(struct conn *c) {
    int status = (int)c->req.arg;
    char body[2048];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":\"fail mode\",\"status\":%d,\"instance_id\":\"%s\","
                     "\"cluster\":\"%s\"}",
                     status, cfg.id_json, cfg.cluster_json);
    if (n < 0 || (size_t)n >= sizeof(body)) n = snprintf(body, sizeof(body), "{}");
    return respond_body(c, status, body, (size_t)n, 0);
}

int respond_error(struct conn *c, int status, const char *msg) {
    char body[2048]; /* the escaped names are at most 6 * 128 bytes each */
    int n = snprintf(body, sizeof(body),
                     "{\"error\":\"%s\",\"status\":%d,\"instance_id\":\"%s\",\"cluster\":\"%s\"}",
                     msg, status, cfg.id_json, cfg.cluster_json);
    if (n < 0 || (size_t)n >= sizeof(body)) n = snprintf(body, sizeof(body), "{}");
    return respond_json(c, status, body, (size_t)n);
}

static int respond_status(struct conn *c) {
    int status = (int)c->req.arg;
    if (status == 204 || status == 304) {
        char *p = begin_response(c, head_max(c, sizeof(json_type)));
        if (!p) return 0;
        char *o = put_head(c, p, status, JSON_TYPE, FR_NONE, 0);
        end_response(c, status, p, o, 0);
        request_finished(c);
        return 1;
    }
    char body[2048];
    int n =
        snprintf(body, sizeof(body), "{\"status\":%d,\"instance_id\":\"%s\",\"cluster\":\"%s\"}",
                 status, cfg.id_json, cfg.cluster_json);
    if (n < 0 || (size_t)n >= sizeof(body)) n = snprintf(body, sizeof(body), "{}");
    return respond_json(c, status, body, (size_t)n);
}

static int respond_default(struct conn *c) {
    const char *url = req_url(c);
    size_t n = c->req.n_url, esc = json_escaped_len(url, n);
    size_t len = cfg.default_prefix_len + esc + 2;
    char *p = begin_response(c, head_max(c, sizeof(json_type)) + len);
    if (!p) return 0;
    char *o = put_head(c, p, 200, JSON_TYPE, FR_LENGTH, len);
    if (!c->req.head_only) {
        o = fmt_put(o, cfg.default_prefix, cfg.default_prefix_len);
        o += json_escape(o, url, n);
        o = FMT_LIT(o, "\"}");
    }
    end_response(c, 200, p, o, 0);
    request_finished(c);
    return 1;
}

static void start_stream(struct conn *c, enum stream_kind kind, uint64_t len) {
    c->stream = kind;
    c->body_left = len;
    c->body_pos = 0;
    c->phase = PH_STREAM;
}

static int respond_bytes(struct conn *c) {
    uint64_t len = c->req.arg;
    int chunked = c->req.chunked_out;
    size_t inline_len = !chunked && !c->req.head_only && len <= 4096 ? (size_t)len : 0;
    char *p = begin_response(c, head_max(c, sizeof(octet_type)) + inline_len);
    if (!p) return 0;
    char *o = put_head(c, p, 200, octet_type, sizeof(octet_type) - 1,
                       chunked ? FR_CHUNKED : FR_LENGTH, len);
    o = fmt_put(o, (const char *)pattern_block, inline_len);
    if (c->req.head_only || (!chunked && inline_len == len)) {
        end_response(c, 200, p, o, 0);
        request_finished(c);
    } else if (chunked) {
        end_response(c, 200, p, o, 0);
        start_stream(c, S_CHUNKED, len);
    } else {
        end_response(c, 200, p, o, len);
        start_stream(c, S_BYTES, len);
    }
    return 1;
}

static int respond_echo(struct conn *c) {
    struct req *r = &c->req;
    const char *ctype = r->n_ctype ? req_ctype(c) : octet_type;
    size_t ctype_len = r->n_ctype ? r->n_ctype : sizeof(octet_type) - 1;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uint64_t buffered = c->in_len - c->parse_off;
    int send_continue = r->expect_continue && (r->chunked_in || buffered < r->content_length);
    char *p = begin_response(c, head_max(c, ctype_len) + sizeof(cont));
    if (!p) return 0;
    char *o = p;
    if (send_continue) o = FMT_LIT(o, cont);
    char *head = o;
    if (!r->has_body) {
        o = put_head(c, o, 200, ctype, ctype_len, FR_LENGTH, 0);
        out_commit(c, o);
        end_response(c, 200, head, o, 0);
        request_finished(c);
        return 1;
    }
    if (r->chunked_in) {
        /* HTTP/1.0 has no chunks: the body then ends with the connection. */
        r->chunked_out = r->http_major == 1 && r->http_minor >= 1;
        if (!r->chunked_out) r->keepalive = 0;
        o = put_head(c, o, 200, ctype, ctype_len, r->chunked_out ? FR_CHUNKED : FR_NONE, 0);
        end_response(c, 200, head, o, 0);
        c->phase = PH_BODY; /* llhttp decodes, cb_body echoes */
        return 1;
    }
    o = put_head(c, o, 200, ctype, ctype_len, FR_LENGTH, r->content_length);
    end_response(c, 200, head, o, r->content_length);
    /* The body bypasses llhttp (copied or spliced): it expects a head next. */
    llhttp_reset(&c->parser);
    start_stream(c, S_ECHO, r->content_length);
    return 1;
}

int handler_respond(struct conn *c) {
    switch (c->req.route) {
    case R_HEALTH:
        if (c->req.arg) return respond_error(c, 503, "unhealthy (health flip)");
        return respond_json(c, 200, cfg.health_body, cfg.health_len);
    case R_STATUS: return respond_status(c);
    case R_BYTES: return respond_bytes(c);
    case R_ECHO: return respond_echo(c);
    case R_WS: return ws_handshake(c);
    case R_BAD: return respond_error(c, 400, "bad request");
    case R_FAIL: return respond_fail(c);
    case R_DELAY:
    case R_DEFAULT: return respond_default(c);
    }
    return respond_default(c);
}

static void stream_done(struct conn *c) {
    c->stream = S_NONE;
    request_finished(c);
}

/* The next piece of a streamed body; 1 when it made progress. */
int stream_step(struct conn *c) {
    switch (c->stream) {
    case S_BYTES: /* conn_io sends straight from the pattern block */
        if (c->body_left) return 0;
        stream_done(c);
        return 1;
    case S_CHUNKED: {
        if (out_pending(c) >= 32768) return 0;
        size_t n = c->body_left < 32768 ? (size_t)c->body_left : 32768;
        char *p = out_reserve(c, n + 32);
        if (!p) return 0;
        char *o = p;
        if (n) {
            o = put_hex(o, n);
            o = FMT_LIT(o, "\r\n");
            o = fmt_put(o, (const char *)pattern_block + c->body_pos % PATTERN_PERIOD, n);
            o = FMT_LIT(o, "\r\n");
            c->body_left -= n;
            c->body_pos += n;
        }
        if (!c->body_left) o = FMT_LIT(o, "0\r\n\r\n");
        out_commit(c, o);
        c->req.bytes_out += (uint64_t)(o - p);
        if (!c->body_left) stream_done(c);
        return 1;
    }
    case S_ECHO: {
        size_t avail = c->in_len - c->parse_off;
        if (c->body_left && avail) {
            /* Body bytes that came with the head (or a recv): copy them. */
            if (out_pending(c) >= OUT_HIGH) return 0;
            size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
            if (!out_reserve(c, take)) {
                size_t room = out_room(c);
                if (!room) return 0;
                if (take > room) take = room;
            }
            memcpy(c->out + c->out_len, c->in + c->parse_off, take);
            c->out_len += take;
            c->parse_off += (uint32_t)take;
            c->body_left -= take;
            return 1;
        }
        if (c->body_left || c->pipe_fill) return 0;
        stream_done(c);
        return 1;
    }
    default: return 0;
    }
}
