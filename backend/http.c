/* HTTP/1.x requests with llhttp (strict): the parser callbacks, one request
 * at a time out of the input buffer, and the end of each request. */
#define _GNU_SOURCE
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct conn *conn_of(llhttp_t *p) {
    return p->data;
}

/* Grows a span over the next piece of a field: the pieces llhttp hands over
 * for one field are contiguous in the input buffer. */
static void span_add(struct conn *c, struct span *s, uint8_t *open, const char *at, size_t len) {
    uint32_t off = (uint32_t)(at - (c->in + c->head_start));
    if (!*open) {
        s->off = off;
        *open = 1;
    }
    s->len = off + (uint32_t)len - s->off;
}

static const char *span_ptr(const struct conn *c, struct span s) {
    return c->in + c->head_start + s.off;
}

static int span_is(const struct conn *c, struct span s, const char *name) {
    size_t n = strlen(name);
    return s.len == n && !strncasecmp(span_ptr(c, s), name, n);
}

static struct span span_trim(const struct conn *c, struct span s) {
    const char *p = span_ptr(c, s);
    while (s.len && (p[s.len - 1] == ' ' || p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

static int span_contains_ci(const struct conn *c, struct span s, const char *word) {
    size_t n = strlen(word);
    const char *p = span_ptr(c, s);
    for (size_t i = 0; i + n <= s.len; i++)
        if (!strncasecmp(p + i, word, n)) return 1;
    return 0;
}

static int cb_message_begin(llhttp_t *p) {
    struct conn *c = conn_of(p);
    if (!cfg.quiet) c->req.t_start_us = ev_clock_us();
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = conn_of(p);
    span_add(c, &c->req.url, &c->req.url_open, at, len);
    return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = conn_of(p);
    span_add(c, &c->req.field, &c->req.field_open, at, len);
    return 0;
}

static int cb_header_field_complete(llhttp_t *p) {
    struct conn *c = conn_of(p);
    c->req.field_open = 0;
    c->req.value = (struct span){0, 0};
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = conn_of(p);
    span_add(c, &c->req.value, &c->req.value_open, at, len);
    return 0;
}

static int cb_header_value_complete(llhttp_t *p) {
    struct conn *c = conn_of(p);
    struct req *r = &c->req;
    r->value_open = 0;
    struct span v = span_trim(c, r->value);
    switch (r->field.len) {
    case 6:
        if (span_is(c, r->field, "expect")) r->expect = v;
        break;
    case 7:
        if (span_is(c, r->field, "upgrade")) r->upgrade = v;
        break;
    case 12:
        if (span_is(c, r->field, "content-type")) r->ctype = v;
        break;
    case 17:
        if (span_is(c, r->field, "sec-websocket-key")) r->wskey = v;
        break;
    }
    return 0;
}

/* Copies the fields the response needs out of the input buffer, so that the
 * head need not stay there while the body streams through. */
static int copy_info(struct conn *c) {
    struct req *r = &c->req;
    size_t need = (size_t)r->url.len + r->ctype.len + r->wskey.len + 3;
    if (need > c->info_cap) {
        size_t cap = c->info_cap ? c->info_cap : 256;
        while (cap < need)
            cap *= 2;
        char *p = realloc(c->info, cap);
        if (!p) return -1;
        c->info = p;
        c->info_cap = cap;
    }
    char *p = c->info;
    memcpy(p, span_ptr(c, r->url), r->url.len);
    p[r->url.len] = 0;
    r->n_url = r->url.len;
    r->i_ctype = r->n_url + 1;
    memcpy(p + r->i_ctype, span_ptr(c, r->ctype), r->ctype.len);
    p[r->i_ctype + r->ctype.len] = 0;
    r->n_ctype = r->ctype.len;
    r->i_key = r->i_ctype + r->n_ctype + 1;
    memcpy(p + r->i_key, span_ptr(c, r->wskey), r->wskey.len);
    p[r->i_key + r->wskey.len] = 0;
    r->n_key = r->wskey.len;
    return 0;
}

static int cb_headers_complete(llhttp_t *p) {
    struct conn *c = conn_of(p);
    struct req *r = &c->req;
    r->head_done = 1;
    r->method = llhttp_get_method(p);
    r->http_major = llhttp_get_http_major(p);
    r->http_minor = llhttp_get_http_minor(p);
    r->keepalive = (uint8_t)llhttp_should_keep_alive(p);
    r->chunked_in = (p->flags & F_CHUNKED) != 0;
    r->content_length = (p->flags & F_CONTENT_LENGTH) && !r->chunked_in ? p->content_length : 0;
    r->has_body = r->chunked_in || r->content_length > 0;
    r->head_only = r->method == HTTP_HEAD;
    r->expect_continue = r->has_body && span_is(c, r->expect, "100-continue");
    r->ws_upgrade = r->upgrade.len && span_contains_ci(c, r->upgrade, "websocket");
    if (copy_info(c) < 0) return -1;
    route_request(c);
    if (r->method == HTTP_CONNECT) r->has_body = 0;
    /* A body follows: stop here and decide how to read it. An upgrade
     * without one completes right away. */
    return r->has_body ? HPE_PAUSED : 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len) {
    struct conn *c = conn_of(p);
    if (c->req.route != R_ECHO) return 0; /* read and dropped */
    /* A chunked echo: room was reserved before llhttp_execute (see
     * http_step_parse), this only checks it. */
    if (out_room(c) < len + 24) return HPE_USER;
    char *o = c->out + c->out_len, *start = o;
    if (c->req.chunked_out) o += sprintf(o, "%zx\r\n", len);
    memcpy(o, at, len);
    o += len;
    if (c->req.chunked_out) {
        memcpy(o, "\r\n", 2);
        o += 2;
    }
    out_commit(c, o);
    c->req.bytes_out += (uint64_t)(o - start);
    return 0;
}

static int cb_message_complete(llhttp_t *p) {
    struct conn *c = conn_of(p);
    c->req.msg_complete = 1;
    return HPE_PAUSED; /* one request at a time */
}

static const llhttp_settings_t settings = {
    .on_message_begin = cb_message_begin,
    .on_url = cb_url,
    .on_header_field = cb_header_field,
    .on_header_field_complete = cb_header_field_complete,
    .on_header_value = cb_header_value,
    .on_header_value_complete = cb_header_value_complete,
    .on_headers_complete = cb_headers_complete,
    .on_body = cb_body,
    .on_message_complete = cb_message_complete,
};

static void req_reset(struct conn *c) {
    memset(&c->req, 0, sizeof(c->req));
    c->stream = S_NONE;
    c->splicing = 0;
    c->body_left = c->body_pos = 0;
}

void http_conn_init(struct conn *c) {
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    c->phase = PH_HEAD;
    req_reset(c);
}

void request_log(struct conn *c) {
    if (cfg.quiet) return;
    struct req *r = &c->req;
    const char *method = r->head_done ? llhttp_method_name((llhttp_method_t)r->method) : "-";
    const char *url = r->head_done && r->n_url ? req_url(c) : "-";
    int url_len = r->head_done && r->n_url ? (int)(r->n_url > 8192 ? 8192 : r->n_url) : 1;
    uint64_t dur = r->t_start_us ? ev_clock_us() - r->t_start_us : 0;
    char line[9000];
    int n =
        snprintf(line, sizeof(line), "instance=%s cluster=%s conn=%llu %s %.*s %d %lluB %lluus\n",
                 cfg.instance_id, cfg.cluster, (unsigned long long)c->id, method, url_len, url,
                 r->status, (unsigned long long)r->bytes_out, (unsigned long long)dur);
    if (n <= 0) return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    log_line(c->w, line, (size_t)n);
}

/* The response is complete (queued or sent): on to the next request. */
void request_finished(struct conn *c) {
    request_log(c);
    int keep = c->req.keepalive;
    req_reset(c);
    if (!keep) {
        c->phase = PH_CLOSING;
        return;
    }
    c->phase = PH_HEAD;
    c->head_start = c->parse_off;
}

/* A request we cannot go on from: answer and close. */
void http_error(struct conn *c, int status) {
    c->req.keepalive = 0;
    if (!respond_error(c, status,
                       status == 431 ? "request header fields too large" : "bad request"))
        conn_close(c);
}

/* The whole request is read. */
static void message_done(struct conn *c) {
    if (c->phase == PH_BODY && c->req.route == R_ECHO) {
        /* A chunked echo: its head and chunks are out already. */
        if (c->req.chunked_out) {
            char *p = out_reserve(c, 5);
            if (!p) {
                conn_close(c);
                return;
            }
            memcpy(p, "0\r\n\r\n", 5);
            out_commit(c, p + 5);
            c->req.bytes_out += 5;
        }
        request_finished(c);
        return;
    }
    c->phase = PH_RESPOND;
}

/* Feeds llhttp what the input buffer holds; 1 when it made progress. */
int http_step_parse(struct conn *c) {
    size_t avail = c->in_len - c->parse_off;
    if (!avail || out_pending(c) >= OUT_HIGH) return 0;
    size_t n = avail;
    int echo = c->phase == PH_BODY && c->req.route == R_ECHO;
    if (c->phase == PH_HEAD) {
        size_t seen = c->parse_off - c->head_start;
        if (n > MAX_HEAD + 1 - seen) n = MAX_HEAD + 1 - seen;
    } else if (echo) {
        /* A chunk's framing out is never longer than its framing in, but
         * for the pieces cut at the slice's ends: 96 bytes cover those and
         * the last chunk. */
        size_t want = (n < 65536 ? n : 65536) + 96;
        if (!out_reserve(c, want)) {
            want = out_room(c);
            if (want < 192) return 0; /* wait for the send in flight */
        }
        if (n > want - 96) n = want - 96;
    }
    enum llhttp_errno err = llhttp_execute(&c->parser, c->in + c->parse_off, n);
    if (err == HPE_OK) {
        c->parse_off += (uint32_t)n;
        if (c->phase == PH_HEAD && c->parse_off - c->head_start > MAX_HEAD) {
            http_error(c, 431);
            return 0;
        }
        return n < avail;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        c->parse_off = (uint32_t)(llhttp_get_error_pos(&c->parser) - c->in);
        if (c->req.msg_complete) {
            llhttp_reset(&c->parser);
            message_done(c);
            return 1;
        }
        if (err == HPE_PAUSED) {
            llhttp_resume(&c->parser);
            c->phase = PH_BODY_START;
            return 1;
        }
    }
    if (echo)
        conn_close(c); /* the answer is under way: nothing to say any more */
    else
        http_error(c, 400);
    return 0;
}

/* The head is parsed and a body follows. */
int http_step_body_start(struct conn *c) {
    if (c->req.route == R_ECHO) {
        c->phase = PH_RESPOND; /* the echo answers as the body comes */
        return 1;
    }
    if (c->req.expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        char *p = out_reserve(c, sizeof(cont) - 1);
        if (!p) return 0;
        memcpy(p, cont, sizeof(cont) - 1);
        out_commit(c, p + sizeof(cont) - 1);
        c->req.expect_continue = 0;
    }
    c->phase = PH_BODY;
    return 1;
}
