/* The client connection state machine, written once for both I/O engines.
 *
 *   C_HEAD   reading a request head (idle keep-alive or partial head)
 *   C_TXN    a request in flight: connect, send the head, then two pumps in
 *            both directions at once (request body, response body)
 *   C_TUNNEL after a 101 to a WebSocket upgrade: bytes both ways until each
 *            side closes
 *   C_REPLY  sending a response the proxy made itself (404, 4xx, 5xx)
 *   C_DRAIN  after a response, reading and dropping what is left of a
 *            request body that nobody took, so it is never read as requests
 *
 * Besides the state, a word of CF_* flags (state_str() prints both). Each op
 * is issued through op_to(), which names the callback that gets it, or held
 * by a pump between pump_start and its done (pump.h). Every callback first
 * checks that the connection is still in the state that issued the op: ops
 * cancelled on the way out land in settle(), which frees what is no longer
 * in use once no op of it is pending. A failed attempt on a backend goes one
 * way, upstream_failed(), which also decides whether the request goes again. */
#define _GNU_SOURCE
#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "inbuf.h"
#include "log.h"
#include "net.h"
#include "pump.h"
#include "sticky.h"
#include "upstream.h"
#include "worker.h"

enum cstate { C_HEAD, C_TXN, C_TUNNEL, C_REPLY, C_DRAIN };
static const char *const cstate_names[] = {"HEAD", "TXN", "TUNNEL", "REPLY", "DRAIN"};

/* What follows when c->out has been sent: the sub-state of the client's
 * write side while it sends what the proxy wrote itself. */
enum out_next { OUT_INTERIM, OUT_RESP_HEAD, OUT_TUNNEL_HEAD, OUT_REPLY };
static const char *const out_next_names[] = {"interim", "resp-head", "tunnel-head", "reply"};

/* Everything else that is true of a connection, one bit each in c->flags
 * (HAProxy's CF_* shape), rendered by state_str() for debug lines. The
 * request's bits are cleared when the next request begins. */
enum {
    CF_CLOSING = 1u << 0,     /* on its way out: ops cancelled, freed by settle() */
    CF_KEEP = 1u << 1,        /* the client connection may stay open after this request */
    CF_IN_REQUEST = 1u << 2,  /* counted and logged by request_end() */
    CF_OWN_REPLY = 1u << 3,   /* the proxy made the response, not a backend */
    CF_ERR_COUNTED = 1u << 4, /* lb_errors_total has it: client_close() adds no abort */
    CF_CLASSIFIED = 1u << 5, /* req.klass counts and is logged: the head was complete, or refused */
    CF_ISOLATE = 1u << 6,    /* ambiguous (defensive): neither connection is reused after it */
    CF_BODY_READ = 1u << 7,  /* the request body came in whole from the client */
    CF_FRAMING_LOST = 1u << 8, /* where the next request starts is unknown: close after the reply */
    CF_RELAYED = 1u << 9, /* a byte of an answer (a 1xx included) went to the client: no retry */
    CF_RESP_STARTED = 1u << 10,      /* the final response head is on its way to the client */
    CF_REQ_DONE = 1u << 11,          /* the request went to the backend (or failed to) */
    CF_RESP_DONE = 1u << 12,         /* the response came back whole (or failed to) */
    CF_CONNECTING = 1u << 13,        /* a connect to the backend is in flight */
    CF_CONNECT_TIMED_OUT = 1u << 14, /* and the connect timeout cancelled it */
    CF_UP_DISCARD = 1u << 15,        /* close the backend connection once its ops are idle */
};
static const char *const cflag_names[] = {
    "closing",   "keep",       "in-request",        "own-reply", "err-counted",  "classified",
    "isolate",   "body-read",  "framing-lost",      "relayed",   "resp-started", "req-done",
    "resp-done", "connecting", "connect-timed-out", "up-discard"};
_Static_assert(sizeof(cflag_names) / sizeof(cflag_names[0]) == 16, "a name for every flag");
/* cleared when a request begins */
#define CF_REQUEST                                                                                 \
    (CF_IN_REQUEST | CF_OWN_REPLY | CF_ERR_COUNTED | CF_CLASSIFIED | CF_ISOLATE | CF_BODY_READ |   \
     CF_FRAMING_LOST)
/* cleared when it goes to a backend */
#define CF_ATTEMPT (CF_RELAYED | CF_RESP_STARTED | CF_REQ_DONE | CF_RESP_DONE)

/* A request body left unread after its response is drained up to this much
 * (and this long) with the connection kept; beyond, the connection closes. */
#define DRAIN_MAX_BYTES (1u << 20)
#define DRAIN_MS        5000
/* limits.min_body_rate_bps is measured over windows of this length. */
#define BODY_RATE_WINDOW_MS 10000

_Static_assert(DESYNC_CLASSES == LB_DESYNC_CLASSES, "one counter per desync class");

/* What only a request in flight needs: allocated when its first bytes come,
 * freed when the connection goes idle, so that an idle one is small. */
struct txn {
    struct pump reqp, respp;
    ev_timer body_timer;                               /* the request body's rate check */
    uint64_t rate_mark;                                /* reqp.received at the last check */
    char be_name[sizeof(((struct backend *)0)->name)]; /* for the access log */
    char request_id[65];
};

struct client {
    struct worker *w;
    struct list in_worker; /* in w->clients */
    int fd;
    ev_op rd, wr; /* issued through op_to(), or held by a pump */
    ev_timer timer;
    struct iobuf in;
    struct http_msg req;
    enum cstate state;
    enum out_next after;
    unsigned flags; /* CF_* */
    char ip[48];
    /* the request in flight */
    struct cluster *lc; /* its route; NULL: none */
    int retries;        /* the cluster's, when it was routed */
    int status;         /* the response's, once its head is on its way */
    struct sbuf path;   /* the target, kept for the access log (the buffer is reused) */
    uint64_t bytes_out; /* sent by the proxy from its buffers */
    struct backend *be; /* picked: counted in flight until release_be() */
    const struct backend *failed_be;
    int attempts; /* sends of the request after the first, bounded by retries */
    struct upconn *up;
    struct sbuf reqhead;
    size_t reqhead_off, reqhead_body;
    uint64_t body_left; /* length: request body bytes not yet moved (the pump's while it runs) */
    struct sbuf out;
    size_t out_off;
    struct txn *t; /* while a request is in flight; NULL on an idle connection */
    int req_err, resp_err;
    uint64_t t_start_us, t_sent_us, ttfb_us;
};

static void start_head(struct client *c);
static void parse_head(struct client *c);
static void parse_resp(struct client *c);
static void connect_backend(struct client *c, struct backend *be, int fresh);
static void client_close(struct client *c);
static void reply_error(struct client *c, int status);
static void fail(struct client *c, int status);
static void after_response(struct client *c);

static ev_loop *loop_of(struct client *c) {
    return c->w->loop;
}

static const struct proxy_config *cfg_of(struct client *c) {
    return c->w->cfg;
}

static void on_out_sent(ev_op *op, int res);

/* The state and the flags as text, for debug lines: "TXN/resp-head
 * keep|in-request" (after the slash: what follows the proxy's own write in
 * flight). */
static const char *state_str(const struct client *c, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "%s", cstate_names[c->state]);
    if (ev_op_busy(&c->wr) && c->wr.cb == on_out_sent && n < len)
        n += (size_t)snprintf(buf + n, len - n, "/%s", out_next_names[c->after]);
    const char *sep = " ";
    for (size_t i = 0; i < sizeof(cflag_names) / sizeof(cflag_names[0]); i++) {
        if (!(c->flags & (1u << i)) || n >= len) continue;
        n += (size_t)snprintf(buf + n, len - n, "%s%s", sep, cflag_names[i]);
        sep = "|";
    }
    return buf;
}

/* Every op of a connection is issued with the callback that takes its
 * completion named here, at the call; a pump takes the op for a while and
 * gives it back (pump.h). */
static ev_op *op_to(ev_op *op, ev_cb cb, void *ctx) {
    assert(!ev_op_busy(op));
    op->cb = cb;
    op->ctx = ctx;
    return op;
}

static void count_error(struct client *c, enum lb_error kind) {
    ctr_add(&c->w->counters.errors[kind], 1);
    c->flags |= CF_ERR_COUNTED;
}

static void log_request(struct client *c, uint64_t duration_us, uint64_t bytes_in,
                        uint64_t bytes_out) {
    int64_t now = ev_wall_us();
    const char *method = c->req.head_done ? llhttp_method_name(c->req.method) : NULL;
    int classified = (c->flags & CF_CLASSIFIED) != 0;
    struct alog_entry e = {
        .time_us = now - (int64_t)duration_us,
        .client = c->ip,
        .method = method,
        .path = c->path.len ? c->path.data : NULL,
        .path_len = c->path.len,
        .status = c->status,
        .cluster = c->lc ? c->lc->name : "none",
        .backend = c->t->be_name[0] ? c->t->be_name : NULL,
        .bytes_in = bytes_in,
        .bytes_out = bytes_out,
        .duration_us = duration_us,
        .backend_us = c->ttfb_us ? (int64_t)c->ttfb_us : -1,
        .request_id = c->t->request_id[0] ? c->t->request_id : NULL,
        .desync_class = classified ? desync_class_names[c->req.klass] : NULL,
        .desync_reason = classified && c->req.klass != DESYNC_COMPLIANT ? c->req.why : NULL,
    };
    alog_write(c->w->alog, &e);
}

/* A request is over (answered, failed or abandoned): count it once, in the
 * worker's own counters, and log it. */
static void request_end(struct client *c) {
    if (!(c->flags & CF_IN_REQUEST)) return;
    c->flags &= ~CF_IN_REQUEST;
    struct worker *w = c->w;
    struct cluster *lc = c->lc ? c->lc : balancer_unrouted(w->bal);
    struct cluster_counters *cc = &lc->per_worker[w->id];
    uint64_t duration = ev_clock_us() - c->t_start_us;
    ctr_add(&cc->requests, 1);
    if (c->status >= 100 && c->status <= 599) {
        ctr_add(&cc->responses[c->status / 100 - 1], 1);
        if (c->flags & CF_OWN_REPLY) ctr_add(&cc->own_responses[c->status / 100 - 1], 1);
    }
    if (c->flags & CF_CLASSIFIED) ctr_add(&w->counters.desync[c->req.klass], 1);
    hist_observe(&cc->duration, duration);
    if (c->ttfb_us) hist_observe(&cc->backend, c->ttfb_us);
    uint64_t req_moved, req_copied, resp_moved, resp_copied;
    pump_take_counts(&c->t->reqp, &req_moved, &req_copied);
    pump_take_counts(&c->t->respp, &resp_moved, &resp_copied);
    uint64_t in = c->req.head_done ? c->req.head_len + c->reqhead_body + req_moved : 0;
    uint64_t out = c->bytes_out + resp_moved;
    ctr_add(&w->counters.bytes_in, in);
    ctr_add(&w->counters.bytes_out, out);
    ctr_add(&w->counters.copied_bytes, req_copied + resp_copied);
    if (w->alog) log_request(c, duration, in, out);
    c->reqhead_body = 0;
    c->bytes_out = 0;
    c->path.len = 0;
}

static void on_body_timer(ev_timer *t);
static void on_reqp_done(struct pump *p, int err);
static void on_respp_done(struct pump *p, int err);
static void on_progress(struct pump *p, int err);

static int pumps_active(const struct client *c) {
    return c->t && (c->t->reqp.active || c->t->respp.active);
}

/* The request's own state: 0, or -1 out of memory. */
static int txn_new(struct client *c) {
    if (c->t) return 0;
    struct txn *t = malloc(sizeof(*t));
    if (!t) return -1;
    ev_timer_init(&t->body_timer, on_body_timer, c);
    pump_init(&t->reqp, loop_of(c), c, on_reqp_done, on_progress);
    pump_init(&t->respp, loop_of(c), c, on_respp_done, on_progress);
    c->t = t;
    return 0;
}

static void txn_free(struct client *c) {
    struct txn *t = c->t;
    if (!t) return;
    ev_timer_stop(loop_of(c), &t->body_timer);
    pump_free(&t->reqp);
    pump_free(&t->respp);
    free(t);
    c->t = NULL;
}

/* The first bytes of a request arrived: -1 when there is no memory for it. */
static int request_begin(struct client *c) {
    if (txn_new(c) < 0) return -1;
    c->flags = (c->flags & ~CF_REQUEST) | CF_IN_REQUEST;
    c->t_start_us = ev_clock_us();
    c->lc = NULL;
    c->status = 0;
    c->ttfb_us = 0;
    c->t->be_name[0] = c->t->request_id[0] = 0;
    return 0;
}

/* Ends the request's hold on its backend, telling the table how it went. */
static void release_be(struct client *c, enum outcome o, const char *why) {
    if (!c->be) return;
    balancer_done(c->w->bal, c->be, o, c->status, c->ttfb_us, why, c->w->id);
    c->be = NULL;
}

/* ---- lifetime ---- */

static void client_free(struct client *c) {
    struct worker *w = c->w;
    ev_timer_stop(w->loop, &c->timer);
    txn_free(c);
    ev_forget_fd(w->loop, c->fd);
    close(c->fd);
    list_remove(&c->in_worker);
    w->nclients--;
    atomic_fetch_sub_explicit(&g_connections, 1, memory_order_relaxed);
    sbuf_free(&c->reqhead);
    sbuf_free(&c->out);
    sbuf_free(&c->path);
    inbuf_release(w->loop, &c->in, &c->req);
    free(c);
}

static int up_busy(const struct upconn *u) {
    return ev_op_busy(&u->rd) || ev_op_busy(&u->wr);
}

/* Frees the backend connection and then the client once nothing of theirs
 * is pending any more. */
static void settle(struct client *c) {
    /* (an aborted pump holds the connection's ops until its cancelled op has
     * completed) */
    if (c->up && (c->flags & CF_UP_DISCARD) && !up_busy(c->up) && !pumps_active(c)) {
        upconn_free(c->w, c->up);
        c->up = NULL;
        c->flags &= ~CF_UP_DISCARD;
    }
    if ((c->flags & CF_CLOSING) && !c->up && !ev_op_busy(&c->rd) && !ev_op_busy(&c->wr))
        client_free(c);
}

/* Drops the backend connection: cancels what it has pending. */
static void discard_up(struct client *c) {
    struct upconn *u = c->up;
    if (!u) return;
    c->flags |= CF_UP_DISCARD;
    ev_cancel(loop_of(c), &u->rd);
    ev_cancel(loop_of(c), &u->wr);
    if (u->fd >= 0) shutdown(u->fd, SHUT_RDWR);
}

static void client_close(struct client *c) {
    if (c->flags & CF_CLOSING) return;
    if ((c->flags & CF_IN_REQUEST) && c->state != C_TUNNEL) {
        char st[160];
        log_debug("client %s: closed in %s", c->ip, state_str(c, st, sizeof(st)));
        if (!(c->flags & CF_ERR_COUNTED)) count_error(c, ERR_CLIENT_ABORT);
    }
    c->flags |= CF_CLOSING;
    request_end(c);
    release_be(c, OUTCOME_NEUTRAL, NULL);
    ev_timer_stop(loop_of(c), &c->timer);
    if (c->t) {
        ev_timer_stop(loop_of(c), &c->t->body_timer);
        pump_abort(&c->t->reqp);
        pump_abort(&c->t->respp);
    }
    ev_cancel(loop_of(c), &c->rd);
    ev_cancel(loop_of(c), &c->wr);
    discard_up(c);
    settle(c);
}

/* True when a callback belongs to a state the connection has left. */
static int stale(struct client *c, enum cstate want) {
    if ((c->flags & CF_CLOSING) || c->state != want) {
        settle(c);
        return 1;
    }
    return 0;
}

/* A pump made ready for another run: its buffer freed, its callbacks set. */
static void pump_reset(struct client *c, struct pump *p, pump_fn done, pump_fn progress) {
    pump_free(p);
    pump_init(p, loop_of(c), c, done, progress);
}

/* ---- timers ---- */

static void upstream_failed(struct client *c, enum lb_error kind, const char *why);

static void on_timer(ev_timer *t) {
    struct client *c = t->ctx;
    if (c->flags & CF_CLOSING) return;
    switch (c->state) {
    case C_HEAD:
        if (c->in.len > c->in.pos) {
            count_error(c, ERR_CLIENT_TIMEOUT);
            reply_error(c, 408);
        } else {
            client_close(c); /* idle keep-alive connection */
        }
        break;
    case C_TXN:
        if (c->flags & CF_CONNECTING) {
            c->flags |= CF_CONNECT_TIMED_OUT;
            ev_cancel(loop_of(c), &c->up->wr); /* on_connect retries or fails */
        } else if (!(c->flags & CF_RESP_STARTED)) {
            upstream_failed(c, ERR_BACKEND_TIMEOUT, "response timeout");
        } else {
            client_close(c); /* no progress mid-body */
        }
        break;
    default: client_close(c); break;
    }
}

static void arm(struct client *c, int ms) {
    ev_timer_start(loop_of(c), &c->timer, (uint64_t)ms);
}

/* Bytes moved: the inactivity timeout starts again. */
static void on_progress(struct pump *p, int err) {
    (void)err;
    struct client *c = p->owner;
    const struct proxy_config *cfg = cfg_of(c);
    arm(c,
        (c->flags & CF_RESP_STARTED) ? cfg->timeouts_ms.idle : cfg->timeouts_ms.backend_response);
}

/* ---- sending what the proxy writes itself ---- */

static void send_out_more(struct client *c) {
    ev_send(loop_of(c), op_to(&c->wr, on_out_sent, c), c->fd, c->out.data + c->out_off,
            c->out.len - c->out_off);
}

static void send_out(struct client *c, enum out_next after) {
    c->after = after;
    c->out_off = 0;
    send_out_more(c);
}

static void local_reply(struct client *c, int keep_alive) {
    c->flags |= CF_OWN_REPLY;
    ev_timer_stop(loop_of(c), &c->timer);
    if (c->t) ev_timer_stop(loop_of(c), &c->t->body_timer);
    c->state = C_REPLY;
    c->flags = keep_alive ? c->flags | CF_KEEP : c->flags & ~CF_KEEP;
    ev_cancel(loop_of(c), &c->rd);
    arm(c, cfg_of(c)->timeouts_ms.idle);
    send_out(c, OUT_REPLY);
}

static void reply_with(struct client *c, int status, int keep) {
    c->status = status;
    c->out.len = 0;
    http_write_error(&c->out, status, keep);
    local_reply(c, keep);
}

/* An error after which the request's framing cannot be trusted: close. */
static void reply_error(struct client *c, int status) {
    c->flags |= CF_FRAMING_LOST;
    reply_with(c, status, 0);
}

/* Whether the connection stays usable after a response of the proxy's own:
 * when the request had no body to skip (one that has is drained, then
 * closed). */
static int own_reply_keeps(const struct client *c) {
    return (c->flags & CF_KEEP) && c->req.framing == BODY_NONE;
}

static void reply_status(struct client *c, int status) {
    reply_with(c, status, own_reply_keeps(c));
}

static void reply_default(struct client *c) {
    const struct proxy_config *cfg = cfg_of(c);
    int keep = own_reply_keeps(c);
    c->status = cfg->default_response.status;
    c->out.len = 0;
    http_write_simple(&c->out, cfg->default_response.status, cfg->default_response.content_type,
                      cfg->default_response.body, cfg->default_response.body_len, keep);
    local_reply(c, keep);
}

/* A request that went wrong: an error response if none has started, then
 * close (the request's framing may be lost). */
static void fail(struct client *c, int status) {
    if ((c->flags & CF_RESP_STARTED) || ev_op_busy(&c->wr)) {
        client_close(c);
        return;
    }
    release_be(c, OUTCOME_NEUTRAL, NULL);
    if (c->t)
        pump_abort(&c->t->reqp); /* its read may still be pending: no drain after this reply */
    discard_up(c);
    reply_error(c, status);
    settle(c);
}

/* ---- the request head ---- */

static void on_head_read(ev_op *op, int res) {
    struct client *c = op->ctx;
    inbuf_took(loop_of(c), &c->in, &c->req, op, res);
    if (stale(c, C_HEAD)) return;
    if (res <= 0) {
        client_close(c);
        return;
    }
    parse_head(c);
}

static void read_head(struct client *c) {
    inbuf_read(loop_of(c), op_to(&c->rd, on_head_read, c), c->fd, &c->in);
}

/* Between requests with nothing buffered: the connection gives back its
 * buffer and the heads' growable buffers, so an idle one holds none. */
static void go_idle(struct client *c) {
    if (!pumps_active(c)) txn_free(c); /* (a pump that ran holds no op any more) */
    inbuf_release(loop_of(c), &c->in, &c->req);
    sbuf_free(&c->reqhead);
    sbuf_free(&c->out);
    sbuf_free(&c->path);
}

static void start_head(struct client *c) {
    c->state = C_HEAD;
    if (c->w->draining) {
        client_close(c);
        return;
    }
    http_msg_reset(&c->req);
    iobuf_compact(&c->in);
    if (c->in.len) {
        arm(c, cfg_of(c)->timeouts_ms.client_header);
        parse_head(c);
        return;
    }
    go_idle(c);
    arm(c, cfg_of(c)->timeouts_ms.idle);
    read_head(c);
}

static void start_txn(struct client *c);

/* A head the proxy will not forward: counted as a request to no cluster. */
static void head_error(struct client *c, int status) {
    log_debug("client %s: %d: %s", c->ip, status, c->req.why ? c->req.why : "");
    count_error(c, status == 431 ? ERR_HEADER_TOO_LARGE : ERR_BAD_REQUEST);
    reply_error(c, status);
}

/* What the request's class gets in the configured mode (the ALB's):
 * severe never reaches here; strictest refuses everything not compliant;
 * defensive forwards an ambiguous one on connections used for it alone. */
static int admit(struct client *c) {
    c->flags |= CF_CLASSIFIED;
    int mode = cfg_of(c)->desync_mode;
    if (mode == DESYNC_STRICTEST && c->req.klass != DESYNC_COMPLIANT) {
        head_error(c, 400);
        return 0;
    }
    if (mode == DESYNC_DEFENSIVE && c->req.klass == DESYNC_AMBIGUOUS) c->flags |= CF_ISOLATE;
    return 1;
}

static void parse_head(struct client *c) {
    const struct proxy_config *cfg = cfg_of(c);
    int was_idle = c->req.parsed == 0;
    if (was_idle && request_begin(c) < 0) {
        log_warn("client %s: out of memory for a request: closed", c->ip);
        client_close(c);
        return;
    }
    int r = http_parse_head(&c->req, c->in.data, c->in.len, 0);
    if (r == HTTP_NEED_MORE) {
        if (c->in.len > (size_t)cfg->limits.max_header_bytes) {
            head_error(c, 431);
            return;
        }
        if (was_idle) arm(c, cfg->timeouts_ms.client_header);
        read_head(c);
        return;
    }
    if (r < 0) {
        /* 400 and 505 refuse a severe head */
        if (c->req.refuse_status != 431) c->flags |= CF_CLASSIFIED;
        head_error(c, c->req.refuse_status);
        return;
    }
    if (c->req.head_len > (size_t)cfg->limits.max_header_bytes) {
        head_error(c, 431);
        return;
    }
    c->in.pos = c->req.head_len;
    if (admit(c)) start_txn(c);
}

/* ---- the transaction ---- */

/* The client's X-Request-Id, or a new one. */
static void request_id(struct client *c) {
    const struct http_hdr *h = http_find(&c->req, "x-request-id");
    if (h && h->vlen && h->vlen < sizeof(c->t->request_id)) {
        memcpy(c->t->request_id, h->value, h->vlen);
        c->t->request_id[h->vlen] = 0;
        return;
    }
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t r = worker_random(c->w);
        for (int i = 15; i >= 0; i--, r >>= 4)
            c->t->request_id[half * 16 + i] = hex[r & 15];
    }
    c->t->request_id[32] = 0;
}

static void build_request_head(struct client *c, const struct cluster_config *cc) {
    request_id(c);
    struct forward_info fi = {.client_ip = c->ip,
                              .listen_port = net_addr_port(&cfg_of(c)->listen),
                              .request_id = c->t->request_id,
                              .strip_len = cc->strip_prefix ? cc->prefix_len : 0};
    c->reqhead.len = 0;
    http_write_request(&c->reqhead, &c->req, &fi);
    c->reqhead_body = 0;
    if (c->req.framing == BODY_LENGTH) {
        /* The body bytes that came with the head go out with it. */
        size_t avail = c->in.len - c->in.pos;
        size_t n = avail < c->req.content_length ? avail : (size_t)c->req.content_length;
        sbuf_add(&c->reqhead, c->in.data + c->in.pos, n);
        c->in.pos += n;
        c->reqhead_body = n;
        c->body_left -= n;
        ctr_add(&c->w->counters.copied_bytes, n);
    }
}

/* The backend for a routed request: the one its sticky cookie names when
 * that one can serve, else the strategy's pick; NULL when none is healthy. */
static struct backend *pick_backend(struct client *c, const struct cluster_config *cc) {
    char sticky[sizeof(((struct backend *)0)->name)];
    int has_sticky =
        cc->sticky.enabled &&
        sticky_find(&cc->sticky, cc->name, &c->req, ev_wall_us() / 1000000, sticky, sizeof(sticky));
    return balancer_pick(c->w->bal, c->lc, NULL, has_sticky ? sticky : NULL, worker_random(c->w),
                         c->w->id);
}

/* Routes the request and sends it to a backend, or answers it at once. */
static void start_txn(struct client *c) {
    ev_timer_stop(loop_of(c), &c->timer);
    if (c->req.keep_alive && !c->w->draining && !(c->flags & CF_ISOLATE))
        c->flags |= CF_KEEP;
    else
        c->flags &= ~CF_KEEP;
    if (c->req.framing == BODY_NONE) c->flags |= CF_BODY_READ;
    c->body_left = c->req.framing == BODY_LENGTH ? c->req.content_length : 0;
    /* The head's spans point into the buffer a body is read into next:
     * what outlives them is copied now. */
    if (c->w->alog) sbuf_add(&c->path, c->req.path, c->req.path_len);
    if (c->req.method == HTTP_CONNECT) {
        reply_status(c, 405); /* a reverse proxy: no tunnels to anywhere */
        return;
    }
    const struct cluster_config *cc;
    c->lc = balancer_route(c->w->bal, c->req.path, c->req.path_len, &cc);
    if (!c->lc) {
        reply_default(c);
        return;
    }
    c->retries = cc->retries;
    pump_prepare(&c->t->reqp, &c->rd, c->fd, &c->in, NULL, -1,
                 c->req.framing == BODY_CHUNKED ? &c->req : NULL, 1);
    /* A chunked body whose first bytes are already bad never reaches a backend. */
    if (c->req.framing == BODY_CHUNKED && pump_decode_buffered(&c->t->reqp) < 0) {
        count_error(c, ERR_BAD_REQUEST); /* http_dechunk made the request severe */
        reply_error(c, 400);
        return;
    }
    build_request_head(c, cc);
    c->state = C_TXN;
    c->flags &= ~CF_ATTEMPT;
    c->attempts = 0;
    c->failed_be = NULL;
    c->req_err = c->resp_err = 0;
    struct backend *be = pick_backend(c, cc);
    if (!be) {
        count_error(c, ERR_NO_HEALTHY_BACKEND);
        reply_status(c, 503); /* nothing healthy: no connect attempt */
        return;
    }
    connect_backend(c, be, 0);
}

/* ---- one failure path for an attempt on a backend ---- */

/* May the request go out once more after a failure of this kind? Only a
 * connect that failed or a connection that reset or closed before any
 * response head (a timeout or a bad response is the backend's answer, and
 * no socket at all is the proxy's own limit); `retries` bounds the attempts
 * in all; never once a byte of an answer reached the client; after bytes of
 * it reached a backend, only when it is safe to repeat. */
static int may_retry(const struct client *c, enum lb_error kind) {
    if (kind != ERR_BACKEND_CONNECT && kind != ERR_BACKEND_RESET) return 0;
    if (!c->up || (c->flags & CF_RELAYED) || c->attempts >= c->retries || up_busy(c->up)) return 0;
    int sent = kind == ERR_BACKEND_RESET && c->reqhead_off > 0;
    return !sent || (c->req.framing == BODY_NONE && http_method_idempotent(c->req.method));
}

/* Counts the failure and tells the table the backend failed; without a
 * connection (no socket could be had) it is not the backend's fault, and
 * fail() releases it as neutral. */
static void charge_backend(struct client *c, enum lb_error kind, const char *why) {
    count_error(c, kind);
    if (c->up) release_be(c, OUTCOME_FAILED, why);
}

/* Sends the request again, to another backend than the one that failed when
 * there is one: 1, or 0 when the table has none to give. */
static int retry(struct client *c, enum lb_error kind, int stale_conn) {
    struct worker *w = c->w;
    struct backend *be = balancer_pick(w->bal, c->lc, c->failed_be, NULL, worker_random(w), w->id);
    if (!be) return 0;
    upconn_free(w, c->up);
    c->up = NULL;
    c->attempts++;
    enum lb_retry reason = kind == ERR_BACKEND_CONNECT ? RETRY_CONNECT
                           : stale_conn                ? RETRY_STALE_CONNECTION
                                                       : RETRY_RESET_BEFORE_RESPONSE;
    ctr_add(&w->counters.errors[ERR_RETRY], 1);
    ctr_add(&w->counters.retries[reason], 1);
    connect_backend(c, be, stale_conn);
    return 1;
}

/* The one way an attempt on a backend fails: logged, counted as `kind` in
 * lb_errors_total, the backend released as failed, and then sent again when
 * may_retry() allows, else answered (504 for a timeout, else 502). A reused
 * pooled connection found closed is not held against its backend (an idle
 * timeout, most often; a backend just killed, sometimes): the next attempt
 * goes on a new connection, to another backend when there is one. */
static void upstream_failed(struct client *c, enum lb_error kind, const char *why) {
    struct upconn *u = c->up;
    int stale_conn = kind == ERR_BACKEND_RESET && u && u->reused && !u->in.len;
    int timed_out = kind == ERR_BACKEND_TIMEOUT ||
                    (kind == ERR_BACKEND_CONNECT && (c->flags & CF_CONNECT_TIMED_OUT));
    char st[160];
    if (kind == ERR_BACKEND_MALFORMED && !(c->flags & CF_RESP_STARTED))
        log_warn("backend %s: response refused: %s", c->be->name, why);
    log_debug("backend %s: %s (%s)", c->be ? c->be->name : "?", why, state_str(c, st, sizeof(st)));
    if (may_retry(c, kind)) {
        c->failed_be = c->be;
        if (stale_conn)
            release_be(c, OUTCOME_NEUTRAL, NULL);
        else
            charge_backend(c, kind, why);
        if (retry(c, kind, stale_conn)) return;
        if (stale_conn) count_error(c, kind);
    } else {
        charge_backend(c, kind, why);
    }
    fail(c, timed_out ? 504 : 502);
}

/* ---- the request on its way to the backend ---- */

static void send_reqhead(struct client *c);

static void on_connect(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_TXN)) return;
    c->flags &= ~CF_CONNECTING;
    if (res < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s",
                 (c->flags & CF_CONNECT_TIMED_OUT) ? "timed out" : strerror(-res));
        upstream_failed(c, ERR_BACKEND_CONNECT, why);
        return;
    }
    send_reqhead(c);
}

/* Sends the request to be (picked, held by c): on a pooled connection
 * unless fresh, else on a new one. */
static void connect_backend(struct client *c, struct backend *be, int fresh) {
    struct worker *w = c->w;
    c->flags &= ~CF_CONNECT_TIMED_OUT;
    c->be = be;
    if (w->alog) memcpy(c->t->be_name, be->name, sizeof(c->t->be_name));
    c->up = fresh ? NULL : pool_take(w, be);
    if (c->up) {
        send_reqhead(c);
        return;
    }
    c->up = upconn_open(w, be);
    if (!c->up) { /* the proxy's own limit (EMFILE): not the backend's fault */
        upstream_failed(c, ERR_BACKEND_CONNECT, "no socket");
        return;
    }
    c->flags |= CF_CONNECTING;
    arm(c, cfg_of(c)->timeouts_ms.connect);
    ev_connect(loop_of(c), op_to(&c->up->wr, on_connect, c), c->up->fd,
               (const struct sockaddr *)&be->addr.ss, be->addr.len);
}

static void on_reqhead_sent(ev_op *op, int res);
static void on_resp_read(ev_op *op, int res);

static void send_reqhead_more(struct client *c) {
    ev_send(loop_of(c), op_to(&c->up->wr, on_reqhead_sent, c), c->up->fd,
            c->reqhead.data + c->reqhead_off, c->reqhead.len - c->reqhead_off);
}

static void send_reqhead(struct client *c) {
    c->reqhead_off = 0;
    c->t_sent_us = ev_clock_us();
    arm(c, cfg_of(c)->timeouts_ms.backend_response);
    send_reqhead_more(c);
}

static void read_resp(struct client *c) {
    struct upconn *u = c->up;
    inbuf_read(loop_of(c), op_to(&u->rd, on_resp_read, c), u->fd, &u->in);
}

/* The body is cut when the client sends it slower than min_body_rate_bps
 * over a window (time the proxy waits for the backend does not count). */
static void on_body_timer(ev_timer *t) {
    struct client *c = t->ctx;
    if ((c->flags & CF_CLOSING) || c->state != C_TXN || !c->t->reqp.active) return;
    uint64_t got = c->t->reqp.received - c->t->rate_mark;
    uint64_t want = (uint64_t)cfg_of(c)->limits.min_body_rate_bps * BODY_RATE_WINDOW_MS / 1000;
    c->t->rate_mark = c->t->reqp.received;
    if (!pump_waits_for_source(&c->t->reqp) || got >= want) {
        ev_timer_start(loop_of(c), t, BODY_RATE_WINDOW_MS);
        return;
    }
    log_info("client %s: request body at %llu B in %d s, under %d B/s: cut", c->ip,
             (unsigned long long)got, BODY_RATE_WINDOW_MS / 1000,
             cfg_of(c)->limits.min_body_rate_bps);
    count_error(c, ERR_CLIENT_TIMEOUT);
    c->flags |= CF_FRAMING_LOST;
    fail(c, 408);
}

static void start_request_body(struct client *c) {
    pump_set_sink(&c->t->reqp, &c->up->wr, c->up->fd);
    c->t->rate_mark = 0;
    if (cfg_of(c)->limits.min_body_rate_bps)
        ev_timer_start(loop_of(c), &c->t->body_timer, BODY_RATE_WINDOW_MS);
    pump_start(&c->t->reqp, c->body_left);
}

static void on_reqhead_sent(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_TXN)) return;
    if (res <= 0) {
        /* Nothing of it reached the backend (a connect into a dying listener's
         * backlog), or it is safe to repeat: another backend may get it. */
        upstream_failed(c, ERR_BACKEND_RESET, "connection reset sending the request");
        return;
    }
    c->reqhead_off += (size_t)res;
    if (c->reqhead_off < c->reqhead.len) {
        send_reqhead_more(c);
        return;
    }
    if (c->req.framing == BODY_NONE)
        c->flags |= CF_REQ_DONE;
    else
        start_request_body(c);
    read_resp(c);
}

/* Whether the backend connection may serve another request: its response
 * ended where it said, nothing came after it, the request went whole. */
static int up_reusable(const struct client *c, const struct upconn *u) {
    return !c->req_err && !c->resp_err && u->resp.keep_alive && !c->w->draining &&
           !(c->flags & CF_ISOLATE) && u->in.pos == u->in.len;
}

static void txn_done(struct client *c) {
    struct upconn *u = c->up;
    struct worker *w = c->w;
    request_end(c);
    release_be(c, OUTCOME_OK, NULL);
    c->up = NULL;
    if (up_reusable(c, u))
        pool_put(w, u);
    else
        upconn_free(w, u);
    after_response(c);
}

static void on_reqp_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_TXN)) return;
    ev_timer_stop(loop_of(c), &c->t->body_timer);
    c->flags |= CF_REQ_DONE;
    c->req_err = err;
    c->body_left = pump_left(p);
    if (pump_source_done(p)) c->flags |= CF_BODY_READ;
    if (err == -EBADMSG) {
        count_error(c, ERR_BAD_REQUEST); /* http_dechunk made the request severe */
        c->flags |= CF_FRAMING_LOST;
        fail(c, 400); /* bad chunk framing: nothing after the last good chunk went */
        return;
    }
    if (err && !p->failed_at_dst) {
        client_close(c); /* the client went away mid-body */
        return;
    }
    /* A backend that stopped reading may still answer: wait for it. */
    if (c->flags & CF_RESP_DONE) txn_done(c);
}

/* ---- the response on its way to the client ---- */

static void on_respp_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_TXN)) return;
    c->flags |= CF_RESP_DONE;
    c->resp_err = err;
    if (err == -EBADMSG)
        upstream_failed(c, ERR_BACKEND_MALFORMED, "bad chunk framing in the response");
    else if (err && !p->failed_at_dst)
        upstream_failed(c, ERR_BACKEND_RESET, "reset mid-response");
    else if (err)
        client_close(c); /* the client went away mid-body */
    else if (c->flags & CF_REQ_DONE)
        txn_done(c);
}

static void start_resp_body(struct client *c) {
    struct upconn *u = c->up;
    struct http_msg *r = &u->resp;
    if (r->framing == BODY_NONE) {
        c->flags |= CF_RESP_DONE;
        if (c->flags & CF_REQ_DONE) txn_done(c);
        return;
    }
    arm(c, cfg_of(c)->timeouts_ms.idle);
    /* chunked: re-encoded for HTTP/1.1 clients, de-chunked for 1.0 ones */
    pump_prepare(&c->t->respp, &u->rd, u->fd, &u->in, &c->wr, c->fd,
                 r->framing == BODY_CHUNKED ? r : NULL, c->req.minor >= 1);
    uint64_t left =
        r->framing == BODY_LENGTH ? r->content_length - (u->in.pos - r->head_len) : PUMP_UNTIL_EOF;
    pump_start(&c->t->respp, left);
}

static void on_tunnel_done(struct pump *p, int err);

static void start_tunnel(struct client *c) {
    struct upconn *u = c->up;
    c->state = C_TUNNEL;
    release_be(c, OUTCOME_OK, NULL); /* answered; the tunnel is not a request in flight */
    arm(c, cfg_of(c)->timeouts_ms.idle);
    pump_reset(c, &c->t->reqp, on_tunnel_done, on_progress);
    pump_reset(c, &c->t->respp, on_tunnel_done, on_progress);
    pump_prepare(&c->t->reqp, &c->rd, c->fd, &c->in, &u->wr, u->fd, NULL, 0);
    pump_prepare(&c->t->respp, &u->rd, u->fd, &u->in, &c->wr, c->fd, NULL, 0);
    pump_start(&c->t->reqp, PUMP_UNTIL_EOF);
    pump_start(&c->t->respp, PUMP_UNTIL_EOF);
}

static void on_tunnel_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_TUNNEL)) return;
    if (err) {
        client_close(c);
        return;
    }
    shutdown(p == &c->t->reqp ? c->up->fd : c->fd, SHUT_WR); /* pass the half-close on */
    if (!pumps_active(c)) client_close(c);
}

/* ---- after a response: the next request, a drain, or the close ---- */

static void on_drain_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_DRAIN)) return;
    pump_reset(c, &c->t->reqp, on_reqp_done, on_progress);
    if (!err && (c->flags & CF_KEEP))
        start_head(c);
    else
        client_close(c);
}

/* Reads and drops the rest of a request body nobody took, so that it is
 * never parsed as requests: the connection is kept when that ends within
 * DRAIN_MAX_BYTES and DRAIN_MS, else closed (after a half-close, so that
 * the client reads the response before it sees the end). */
static void start_drain(struct client *c) {
    int chunked = c->req.framing == BODY_CHUNKED;
    uint64_t left = chunked ? PUMP_UNTIL_EOF : c->body_left; /* chunked: to its last chunk */
    if (!chunked && left > DRAIN_MAX_BYTES) c->flags &= ~CF_KEEP;
    if (!(c->flags & CF_KEEP)) {
        shutdown(c->fd, SHUT_WR);
        if (!chunked) left = PUMP_UNTIL_EOF;
    }
    c->state = C_DRAIN;
    arm(c, DRAIN_MS);
    pump_reset(c, &c->t->reqp, on_drain_done, NULL);
    pump_prepare(&c->t->reqp, &c->rd, c->fd, &c->in, NULL, -1, chunked ? &c->req : NULL, 0);
    pump_start_drain(&c->t->reqp, left, DRAIN_MAX_BYTES);
}

static void after_response(struct client *c) {
    if (c->flags & CF_FRAMING_LOST)
        client_close(c);
    else if (!(c->flags & CF_BODY_READ))
        start_drain(c);
    else if (c->flags & CF_KEEP)
        start_head(c);
    else
        client_close(c);
}

/* After a 1xx: the final response head follows. */
static void next_resp_head(struct client *c) {
    struct upconn *u = c->up;
    iobuf_compact(&u->in);
    http_msg_reset(&u->resp);
    if (u->in.len)
        parse_resp(c);
    else
        read_resp(c);
}

static void on_out_sent(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (c->flags & CF_CLOSING) {
        settle(c);
        return;
    }
    if (res <= 0) {
        client_close(c);
        return;
    }
    c->out_off += (size_t)res;
    c->bytes_out += (size_t)res;
    if (c->out_off < c->out.len) {
        send_out_more(c);
        return;
    }
    switch (c->after) {
    case OUT_REPLY:
        request_end(c);
        if (c->state != C_REPLY)
            client_close(c);
        else
            after_response(c);
        break;
    case OUT_INTERIM:
        if (stale(c, C_TXN)) return;
        next_resp_head(c);
        break;
    case OUT_RESP_HEAD:
        if (stale(c, C_TXN)) return;
        start_resp_body(c);
        break;
    case OUT_TUNNEL_HEAD:
        if (stale(c, C_TXN)) return;
        start_tunnel(c);
        break;
    }
}

/* A sticky cluster's response names its backend in a cookie (renewed on
 * every response, as the ALB does). The head ends with its blank line: the
 * field goes in before it. */
static void add_sticky_cookie(struct client *c) {
    const struct cluster_config *cc = balancer_cluster_config(c->w->bal, c->lc);
    if (!cc || !cc->sticky.enabled || !c->be) return;
    c->out.len -= 2;
    sticky_set_cookie(&c->out, &cc->sticky, cc->name, cc->path_prefix, c->be->name,
                      ev_wall_us() / 1000000);
    sbuf_adds(&c->out, "\r\n");
}

/* The final response head to the client, with what of its body of known
 * length came in the same read. */
static void send_final_head(struct client *c) {
    struct upconn *u = c->up;
    struct http_msg *r = &u->resp;
    if (r->framing == BODY_UNTIL_CLOSE || c->w->draining ||
        (r->framing == BODY_CHUNKED && c->req.minor == 0))
        c->flags &= ~CF_KEEP;
    c->status = r->status;
    http_write_response(&c->out, r, c->req.minor, (c->flags & CF_KEEP) != 0);
    add_sticky_cookie(c);
    if (r->framing == BODY_LENGTH) {
        size_t avail = u->in.len - u->in.pos;
        size_t n = avail < r->content_length ? avail : (size_t)r->content_length;
        sbuf_add(&c->out, u->in.data + u->in.pos, n);
        u->in.pos += n;
        ctr_add(&c->w->counters.copied_bytes, n);
    }
    c->flags |= CF_RESP_STARTED | CF_RELAYED;
    send_out(c, OUT_RESP_HEAD);
}

static void send_resp_head(struct client *c) {
    struct http_msg *r = &c->up->resp;
    c->out.len = 0;
    if (r->status == 101) {
        c->status = 101;
        http_write_response(&c->out, r, c->req.minor, 1);
        c->flags |= CF_RESP_STARTED | CF_RELAYED;
        ev_timer_stop(loop_of(c), &c->timer);
        send_out(c, OUT_TUNNEL_HEAD);
        return;
    }
    if (r->status < 200) { /* interim: only HTTP/1.1 clients understand it */
        if (c->req.minor == 0) {
            next_resp_head(c);
            return;
        }
        http_write_response(&c->out, r, c->req.minor, 1);
        c->flags |= CF_RELAYED;
        send_out(c, OUT_INTERIM);
        return;
    }
    send_final_head(c);
}

static void parse_resp(struct client *c) {
    struct upconn *u = c->up;
    int r = http_parse_head(&u->resp, u->in.data, u->in.len, c->req.method == HTTP_HEAD);
    if (r == HTTP_NEED_MORE) {
        if (u->in.len == u->in.cap) {
            upstream_failed(c, ERR_BACKEND_MALFORMED, "response head too large");
            return;
        }
        read_resp(c);
        return;
    }
    const char *refused = NULL;
    if (r < 0)
        refused = u->resp.why ? u->resp.why : "malformed response head";
    else if (u->resp.status == 101 && !c->req.upgrade)
        refused = "101 to a request that did not ask to upgrade";
    if (refused) {
        upstream_failed(c, ERR_BACKEND_MALFORMED, refused);
        return;
    }
    u->in.pos = u->resp.head_len;
    if (!c->ttfb_us) c->ttfb_us = ev_clock_us() - c->t_sent_us;
    send_resp_head(c);
}

static void on_resp_read(ev_op *op, int res) {
    struct client *c = op->ctx;
    inbuf_took(loop_of(c), &c->up->in, &c->up->resp, op, res);
    if (stale(c, C_TXN)) return;
    if (res <= 0) {
        /* No answer yet: an idempotent request without a body may go again,
         * as with nginx's proxy_next_upstream. */
        upstream_failed(c, ERR_BACKEND_RESET,
                        res ? "connection reset before the response"
                            : "closed before the response");
        return;
    }
    parse_resp(c);
}

/* ---- accept and drain ---- */

void client_accept(struct worker *w, int fd) {
    const struct proxy_config *cfg = w->cfg;
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        atomic_fetch_sub_explicit(&g_connections, 1, memory_order_relaxed);
        return;
    }
    http_msg_init_lent(&c->req, HTTP_REQUEST, cfg->limits.max_headers);
    c->w = w;
    c->fd = fd;
    net_set_nodelay(fd);
    net_peer_ip(fd, c->ip, sizeof(c->ip));
    ev_op_init(&c->rd, on_head_read, c);
    ev_op_init(&c->wr, on_out_sent, c);
    ev_timer_init(&c->timer, on_timer, c);
    list_append(&w->clients, &c->in_worker);
    w->nclients++;
    ctr_add(&w->counters.connections, 1);
    start_head(c);
}

void clients_close_idle(struct worker *w) {
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->clients) {
        struct client *c = list_entry(pos, struct client, in_worker);
        if (c->state == C_HEAD && c->in.len == c->in.pos) client_close(c);
    }
}
