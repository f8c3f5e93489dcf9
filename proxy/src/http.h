/* HTTP/1.x messages as the proxy sees them: heads parsed with llhttp (built
 * with LLHTTP_STRICT_MODE, no lenient flags) into spans of the connection's
 * buffer; every head classified (compliant .. severe) by the checks llhttp
 * leaves to us; chunked bodies decoded and re-encoded canonically; heads
 * rebuilt for the other side from the parsed fields, with the framing the
 * proxy decided (hop-by-hop fields out, X-Forwarded-* in). */
#ifndef LB_HTTP_H
#define LB_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <llhttp.h>

#include "http_status.h"

struct sbuf;

struct http_hdr {
    const char *name, *value;
    uint32_t nlen, vlen;
};

enum http_framing { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

/* The classes of aws/http-desync-guardian, in rising order of risk. */
enum desync_class {
    DESYNC_COMPLIANT,
    DESYNC_ACCEPTABLE, /* not RFC compliant, no known risk */
    DESYNC_AMBIGUOUS,  /* servers may frame it differently */
    DESYNC_SEVERE,     /* malformed or crafted: never forwarded */
    DESYNC_CLASSES
};
extern const char *const desync_class_names[DESYNC_CLASSES];

struct http_msg {
    llhttp_t parser;
    struct http_hdr *hdr; /* the index: HTTP_INDEX_LEN(max_hdr) entries */
    int nhdr, max_hdr;
    int own_index; /* allocated by http_msg_init, else the caller's */
    int span;      /* 0: between headers, 1: in a name, 2: in a value */
    const char *url, *reason;
    size_t url_len, reason_len;
    size_t parsed;     /* bytes of the head fed to llhttp so far */
    size_t head_len;   /* set when the head is complete */
    int refuse_status; /* HTTP_REFUSED: what to answer (400, 431, 505; 502 for a response) */
    int head_done;
    int too_many;
    int folded;            /* a field value continued on another line (obs-fold) */
    size_t trailer_bytes;  /* chunked: bytes of trailer fields seen (dropped) */
    char body_tail;        /* chunked: the last byte decoded so far */
    struct sbuf *body_out; /* chunked: where http_dechunk() puts the data, or NULL */
    int rechunk;           /* chunked: put it there as canonical chunks */
    enum desync_class klass;
    const char *why; /* the reason for klass (or for a refusal): a static string */
    /* request: the target in origin-form (an absolute-form target rewritten),
     * and the authority an absolute-form target named (replaces Host) */
    const char *path, *authority;
    size_t path_len, authority_len;
    /* what the head says, set when it is complete */
    int method, status, major, minor;
    enum http_framing framing;
    uint64_t content_length;
    int has_length; /* a Content-Length field was there (0 included) */
    int te_chunked; /* Transfer-Encoding: chunked was there (a HEAD response keeps it) */
    int keep_alive; /* persistent per the version and Connection */
    int upgrade;    /* request: a WebSocket upgrade; response: 101 */
    int expect_continue;
};

enum { HTTP_REFUSED = -1, HTTP_NEED_MORE = 0, HTTP_HEAD_DONE = 1, HTTP_BODY_DONE = 2 };

/* Entries of a message's header index: one spare past max_headers. */
#define HTTP_INDEX_LEN(max_headers) ((size_t)(max_headers) + 1)
/* Allocates room for max_headers headers. 0 or -1. */
int http_msg_init(struct http_msg *m, llhttp_type_t type, int max_headers);
/* Without an index: the caller sets m->hdr (HTTP_INDEX_LEN entries) before
 * each parse, from the buffer the head is read into (inbuf.h). */
void http_msg_init_lent(struct http_msg *m, llhttp_type_t type, int max_headers);
void http_msg_free(struct http_msg *m);
/* Ready for the next message on the same connection. */
void http_msg_reset(struct http_msg *m);

/* Feeds the head bytes buf[m->parsed .. len) (buf holds the whole head so
 * far, from its first byte). HTTP_NEED_MORE, HTTP_HEAD_DONE (m->head_len,
 * m->klass set), or HTTP_REFUSED with m->refuse_status the status to answer
 * with: for requests 400 (severe), 431, 505; for responses 502 (framing
 * invalid or ambiguous). m->why says why. response_to_head: for responses, whether the
 * request was HEAD. */
int http_parse_head(struct http_msg *m, const char *buf, size_t len, int response_to_head);
/* Decodes chunked body bytes (RFC 9112 7.1, strictly). The data is appended
 * to out (NULL: dropped): as canonical chunks ("SIZE CRLF data CRLF", no
 * extensions) when rechunk, with "0 CRLF CRLF" at the end; as bare data
 * otherwise. Trailer fields are checked and dropped. HTTP_NEED_MORE (all
 * consumed), HTTP_BODY_DONE (*used = bytes up to the end of the message) or
 * -1 (bad framing: m->klass is then severe, m->why says why). */
int http_dechunk(struct http_msg *m, const char *data, size_t len, size_t *used, struct sbuf *out,
                 int rechunk);

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
/* v in decimal. */
void sbuf_addu(struct sbuf *b, uint64_t v);
void sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

/* A fixed buffer that reads land in: a connection's input. */
struct iobuf {
    char *data;
    size_t cap, pos, len; /* unread bytes are data[pos..len) */
};
/* Moves the unread bytes to the front, making room for the next read. */
static inline void iobuf_compact(struct iobuf *b) {
    if (!b->pos) return;
    memmove(b->data, b->data + b->pos, b->len - b->pos);
    b->len -= b->pos;
    b->pos = 0;
}

struct forward_info {
    const char *client_ip;
    int listen_port;
    const char *request_id; /* used when the request has none */
    size_t strip_len;       /* bytes of path prefix to remove, 0 to keep */
};

/* The request head to send to the backend: the parsed fields, hop-by-hop
 * ones and the framing fields dropped, the framing the proxy decided
 * written once, Host from an absolute-form target. */
void http_write_request(struct sbuf *out, const struct http_msg *req,
                        const struct forward_info *fi);
/* The response head to send to the client, rebuilt the same way; keep_alive
 * says whether the client connection stays open after this response. A
 * chunked body goes as chunked to HTTP/1.1 clients and de-chunked (no
 * framing field, the connection closed) to HTTP/1.0 ones; 1xx, 204 and 304
 * carry neither Content-Length nor Transfer-Encoding. */
void http_write_response(struct sbuf *out, const struct http_msg *resp, int client_minor,
                         int keep_alive);
/* A complete short response made by the proxy itself. */
void http_write_error(struct sbuf *out, int status, int keep_alive);
void http_write_simple(struct sbuf *out, int status, const char *content_type, const char *body,
                       size_t body_len, int keep_alive);
int http_method_idempotent(int method);

#endif
