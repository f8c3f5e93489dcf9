/* HTTP/1.x messages as the proxy sees them: heads parsed with llhttp (strict)
 * into spans of the connection's buffer, the smuggling checks llhttp leaves
 * to us, chunked bodies checked as they pass, and heads rewritten for the
 * other side (hop-by-hop headers out, X-Forwarded-* in). */
#ifndef LB_HTTP_H
#define LB_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "http_status.h"

struct http_hdr {
    const char *name, *value;
    uint32_t nlen, vlen;
};

enum http_framing { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

struct http_msg {
    llhttp_t parser;
    struct http_hdr *hdr;
    int nhdr, max_hdr;
    int span; /* 0: between headers, 1: in a name, 2: in a value */
    const char *url, *reason;
    size_t url_len, reason_len;
    size_t parsed;   /* bytes of the head fed to llhttp so far */
    size_t head_len; /* set when the head is complete */
    int head_done;
    int too_many;
    /* what the head says, set when it is complete */
    int method, status, major, minor;
    enum http_framing framing;
    uint64_t content_length;
    int keep_alive; /* persistent per the version and Connection */
    int upgrade;    /* request: asks to upgrade; response: 101 */
    int expect_continue;
};

enum { HTTP_NEED_MORE = 0, HTTP_HEAD_DONE = 1, HTTP_BODY_DONE = 2 };

/* Allocates room for max_headers headers. 0 or -1. */
int http_msg_init(struct http_msg *m, llhttp_type_t type, int max_headers);
void http_msg_free(struct http_msg *m);
/* Ready for the next message on the same connection. */
void http_msg_reset(struct http_msg *m);

/* Feeds the head bytes buf[m->parsed .. len) (buf holds the whole head so
 * far, from its first byte). HTTP_NEED_MORE, HTTP_HEAD_DONE (m->head_len
 * set), or a negative HTTP status to answer with (-400, -431, -505).
 * head_is_for_head_request: for responses, whether the request was HEAD. */
int http_parse_head(struct http_msg *m, const char *buf, size_t len, int response_to_head);
/* Checks chunked body bytes. HTTP_NEED_MORE (all consumed), HTTP_BODY_DONE
 * (*used = bytes up to the end of the message) or -400. */
int http_parse_chunked(struct http_msg *m, const char *data, size_t len, size_t *used);

/* Header lookup, case-insensitive; the first match or NULL. */
const struct http_hdr *http_find(const struct http_msg *m, const char *name);
int http_token_in_list(const char *list, size_t len, const char *token);

/* A growable byte buffer for heads being written. */
struct sbuf {
    char *data;
    size_t len, cap;
};
void sbuf_add(struct sbuf *b, const void *p, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

struct forward_info {
    const char *client_ip;
    int listen_port;
    const char *request_id; /* used when the request has none */
    size_t strip_len;       /* bytes of path prefix to remove, 0 to keep */
};

/* The request head to send to the backend. */
void http_write_request(struct sbuf *out, const struct http_msg *req,
                        const struct forward_info *fi);
/* The response head to send to the client; keep_alive says whether the
 * client connection stays open after this response. */
void http_write_response(struct sbuf *out, const struct http_msg *resp, int client_minor,
                         int keep_alive);
/* A complete short response made by the proxy itself. */
void http_write_error(struct sbuf *out, int status, int keep_alive);
void http_write_simple(struct sbuf *out, int status, const char *content_type, const char *body,
                       size_t body_len, int keep_alive);
int http_method_idempotent(int method);

#endif
