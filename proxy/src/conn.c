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
 * Every callback first checks that the connection is still in the state
 * that issued the op: ops cancelled on the way out land in settle(), which
 * frees what is no longer in use once no op of it is pending. */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "net.h"
#include "sticky.h"

enum cstate { C_HEAD, C_TXN, C_TUNNEL, C_REPLY, C_DRAIN };

/* A request body left unread after its response is drained up to this much
 * (and this long) with the connection kept; beyond, the connection closes. */
#define DRAIN_MAX_BYTES (1u << 20)
#define DRAIN_MS        5000
/* limits.min_body_rate_bps is measured over windows of this length. */
#define BODY_RATE_WINDOW_MS 10000

_Static_assert(DESYNC_CLASSES == LB_DESYNC_CLASSES, "one counter per desync class");
enum after_out { AFTER_INTERIM, AFTER_RESP_HEAD, AFTER_TUNNEL_HEAD, AFTER_REPLY };

struct client {
    struct worker *w;
    struct client *prev, *next;
    int fd;
    ev_op rd, wr;
    ev_timer timer;
    struct iobuf in;
    struct http_msg req;
    enum cstate state;
    int closing;
    char ip[48];
    /* the request in flight */
    int in_request;     /* counted and logged by request_end() */
    struct cluster *lc; /* its route; NULL: none */
    int retries;        /* the cluster's, when it was routed */
    int status;         /* the response's, once its head is on its way */
    int own_reply;      /* the proxy made the response, not a backend */
    int error_counted;
    int classified;     /* req.klass counts and is logged: the head was complete, or refused */
    int isolate;        /* ambiguous (defensive): neither connection is reused after it */
    int body_read;      /* the request body came in whole from the client */
    int framing_lost;   /* where the next request starts is unknown: close after the reply */
    struct sbuf path;   /* the target, kept for the access log (the buffer is reused) */
    uint64_t bytes_out; /* sent by the proxy from its buffers */
    char be_name[sizeof(((struct backend *)0)->name)]; /* for the access log */
    char request_id[65];
    struct backend *be; /* picked: counted in flight until release_be() */
    const struct backend *failed_be;
    int attempts; /* sends of the request after the first, bounded by retries */
    int relayed;  /* a byte of an answer (a 1xx included) went to the client: no retry */
    int connecting, connect_timed_out;
    struct upconn *up;
    int up_discard; /* close it once its ops are idle */
    struct sbuf reqhead;
    size_t reqhead_off, reqhead_body;
    struct sbuf out;
    size_t out_off;
    enum after_out after;
    int keep; /* the client connection may stay open after this request */
    struct pump reqp, respp;
    ev_timer body_timer; /* the request body's rate check */
    uint64_t rate_mark;  /* reqp.received at the last check */
    int req_done, resp_done, req_err, resp_err;
    int resp_started;
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

static void count_error(struct client *c, enum lb_error kind) {
    ctr_add(&c->w->counters.errors[kind], 1);
    c->error_counted = 1;
}

static void log_request(struct client *c, uint64_t duration_us, uint64_t bytes_in,
                        uint64_t bytes_out) {
    int64_t now = ev_wall_us();
    const char *method = c->req.head_done ? llhttp_method_name(c->req.method) : NULL;
    struct alog_entry e = {
        .time_us = now - (int64_t)duration_us,
        .client = c->ip,
        .method = method,
        .path = c->path.len ? c->path.data : NULL,
        .path_len = c->path.len,
        .status = c->status,
        .cluster = c->lc ? c->lc->name : "none",
        .backend = c->be_name[0] ? c->be_name : NULL,
        .bytes_in = bytes_in,
        .bytes_out = bytes_out,
        .duration_us = duration_us,
        .backend_us = c->ttfb_us ? (int64_t)c->ttfb_us : -1,
        .request_id = c->request_id[0] ? c->request_id : NULL,
        .desync_class = c->classified ? desync_class_names[c->req.klass] : NULL,
        .desync_reason = c->classified && c->req.klass != DESYNC_COMPLIANT ? c->req.why : NULL,
    };
    alog_write(c->w->alog, &e);
}

/* A request is over (answered, failed or abandoned): count it once, in the
 * worker's own counters, and log it. */
static void request_end(struct client *c) {
    if (!c->in_request) return;
    c->in_request = 0;
    struct worker *w = c->w;
    struct cluster *lc = c->lc ? c->lc : balancer_unrouted(w->bal);
    struct cluster_counters *cc = &lc->per_worker[w->id];
    uint64_t duration = ev_clock_us() - c->t_start_us;
    ctr_add(&cc->requests, 1);
    if (c->status >= 100 && c->status <= 599) {
        ctr_add(&cc->responses[c->status / 100 - 1], 1);
        if (c->own_reply) ctr_add(&cc->own_responses[c->status / 100 - 1], 1);
    }
    if (c->classified) ctr_add(&w->counters.desync[c->req.klass], 1);
    hist_observe(&cc->duration, duration);
    if (c->ttfb_us) hist_observe(&cc->backend, c->ttfb_us);
    uint64_t in = c->req.head_done ? c->req.head_len + c->reqhead_body + c->reqp.moved : 0;
    uint64_t out = c->bytes_out + c->respp.moved;
    ctr_add(&w->counters.bytes_in, in);
    ctr_add(&w->counters.bytes_out, out);
    ctr_add(&w->counters.copied_bytes, c->reqp.copied + c->respp.copied);
    if (w->alog) log_request(c, duration, in, out);
    c->reqp.moved = c->reqp.copied = c->respp.moved = c->respp.copied = 0;
    c->reqhead_body = 0;
    c->bytes_out = 0;
    c->path.len = 0;
}

/* The first bytes of a request arrived. */
static void request_begin(struct client *c) {
    c->in_request = 1;
    c->t_start_us = ev_clock_us();
    c->lc = NULL;
    c->status = 0;
    c->own_reply = 0;
    c->error_counted = 0;
    c->classified = 0;
    c->isolate = c->body_read = c->framing_lost = 0;
    c->ttfb_us = 0;
    c->be_name[0] = c->request_id[0] = 0;
}

static const struct proxy_config *cfg_of(struct client *c) {
    return c->w->cfg;
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
    ev_timer_stop(w->loop, &c->body_timer);
    ev_forget_fd(w->loop, c->fd);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nclients--;
    atomic_fetch_sub_explicit(&g_connections, 1, memory_order_relaxed);
    http_msg_free(&c->req);
    sbuf_free(&c->reqhead);
    sbuf_free(&c->out);
    sbuf_free(&c->path);
    pump_free(&c->reqp);
    pump_free(&c->respp);
    free(c->in.data);
    free(c);
}

static int up_busy(const struct upconn *u) {
    return ev_op_busy(&u->rd) || ev_op_busy(&u->wr);
}

/* Frees the backend connection and then the client once nothing of theirs
 * is pending any more. */
static void settle(struct client *c) {
    /* (an aborted pump still points at the connection's ops until its
     * cancelled op has completed) */
    if (c->up && c->up_discard && !up_busy(c->up) && !c->reqp.active && !c->respp.active) {
        upconn_free(c->w, c->up);
        c->up = NULL;
        c->up_discard = 0;
    }
    if (c->closing && !c->up && !ev_op_busy(&c->rd) && !ev_op_busy(&c->wr)) client_free(c);
}

/* Drops the backend connection: cancels what it has pending. */
static void discard_up(struct client *c) {
    struct upconn *u = c->up;
    if (!u) return;
    c->up_discard = 1;
    ev_cancel(loop_of(c), &u->rd);
    ev_cancel(loop_of(c), &u->wr);
    if (u->fd >= 0) shutdown(u->fd, SHUT_RDWR);
}

static void client_close(struct client *c) {
    if (c->closing) return;
    c->closing = 1;
    if (c->in_request && !c->error_counted && c->state != C_TUNNEL)
        count_error(c, ERR_CLIENT_ABORT);
    request_end(c);
    release_be(c, OUTCOME_NEUTRAL, NULL);
    ev_timer_stop(loop_of(c), &c->timer);
    ev_timer_stop(loop_of(c), &c->body_timer);
    pump_abort(&c->reqp);
    pump_abort(&c->respp);
    ev_cancel(loop_of(c), &c->rd);
    ev_cancel(loop_of(c), &c->wr);
    discard_up(c);
    settle(c);
}

/* True when a callback belongs to a state the connection has left. */
static int stale(struct client *c, enum cstate want) {
    if (c->closing || c->state != want) {
        settle(c);
        return 1;
    }
    return 0;
}

/* ---- timers ---- */

static void on_timer(ev_timer *t) {
    struct client *c = t->ctx;
    if (c->closing) return;
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
        if (c->connecting) {
            c->connect_timed_out = 1;
            ev_cancel(loop_of(c), &c->up->wr); /* on_connect retries or fails */
        } else if (!c->resp_started) {
            count_error(c, ERR_BACKEND_TIMEOUT);
            release_be(c, OUTCOME_FAILED, "response timeout");
            fail(c, 504);
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
    arm(c, c->resp_started ? cfg->timeouts_ms.idle : cfg->timeouts_ms.backend_response);
}

/* ---- sending what the proxy writes itself ---- */

static void on_out_sent(ev_op *op, int res);

static void send_out(struct client *c, enum after_out after) {
    c->after = after;
    c->out_off = 0;
    c->wr.cb = on_out_sent;
    c->wr.ctx = c;
    ev_send(loop_of(c), &c->wr, c->fd, c->out.data, c->out.len);
}

static void local_reply(struct client *c, int keep_alive) {
    c->own_reply = 1;
    ev_timer_stop(loop_of(c), &c->timer);
    ev_timer_stop(loop_of(c), &c->body_timer);
    c->state = C_REPLY;
    c->keep = keep_alive;
    ev_cancel(loop_of(c), &c->rd);
    arm(c, cfg_of(c)->timeouts_ms.idle);
    send_out(c, AFTER_REPLY);
}

static void reply_with(struct client *c, int status, int keep) {
    c->status = status;
    c->out.len = 0;
    http_write_error(&c->out, status, keep);
    local_reply(c, keep);
}

/* An error after which the request's framing cannot be trusted: close. */
static void reply_error(struct client *c, int status) {
    c->framing_lost = 1;
    reply_with(c, status, 0);
}

/* A response of the proxy's own that leaves the connection usable when the
 * request had no body to skip (one that has is drained, then closed). */
static void reply_status(struct client *c, int status) {
    reply_with(c, status, c->keep && c->req.framing == BODY_NONE);
}

static void reply_default(struct client *c) {
    const struct proxy_config *cfg = cfg_of(c);
    int keep = c->keep && c->req.framing == BODY_NONE;
    c->status = cfg->default_response.status;
    c->out.len = 0;
    http_write_simple(&c->out, cfg->default_response.status, cfg->default_response.content_type,
                      cfg->default_response.body, cfg->default_response.body_len, keep);
    local_reply(c, keep);
}

/* A request that went wrong on the backend side: an error response if none
 * has started, then close (the request's framing may be lost). */
static void fail(struct client *c, int status) {
    if (c->resp_started || ev_op_busy(&c->wr)) {
        client_close(c);
        return;
    }
    release_be(c, OUTCOME_NEUTRAL, NULL);
    pump_abort(&c->reqp); /* its read may still be pending: no drain after this reply */
    discard_up(c);
    reply_error(c, status);
    settle(c);
}

/* ---- the request head ---- */

static void on_head_read(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_HEAD)) return;
    if (res <= 0) {
        client_close(c);
        return;
    }
    c->in.len += (size_t)res;
    parse_head(c);
}

static void read_head(struct client *c) {
    c->rd.cb = on_head_read;
    c->rd.ctx = c;
    ev_recv(loop_of(c), &c->rd, c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
}

static void start_head(struct client *c) {
    c->state = C_HEAD;
    if (c->w->draining) {
        client_close(c);
        return;
    }
    http_msg_reset(&c->req);
    if (c->in.pos) {
        memmove(c->in.data, c->in.data + c->in.pos, c->in.len - c->in.pos);
        c->in.len -= c->in.pos;
        c->in.pos = 0;
    }
    if (c->in.len) {
        arm(c, cfg_of(c)->timeouts_ms.client_header);
        parse_head(c);
        return;
    }
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
    c->classified = 1;
    int mode = cfg_of(c)->desync_mode;
    if (mode == DESYNC_STRICTEST && c->req.klass != DESYNC_COMPLIANT) {
        head_error(c, 400);
        return 0;
    }
    c->isolate = mode == DESYNC_DEFENSIVE && c->req.klass == DESYNC_AMBIGUOUS;
    return 1;
}

static void parse_head(struct client *c) {
    const struct proxy_config *cfg = cfg_of(c);
    int was_idle = c->req.parsed == 0;
    if (was_idle) request_begin(c);
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
        c->classified = r != -431; /* 400 and 505 refuse a severe head */
        head_error(c, -r);
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
    if (h && h->vlen && h->vlen < sizeof(c->request_id)) {
        memcpy(c->request_id, h->value, h->vlen);
        c->request_id[h->vlen] = 0;
        return;
    }
    uint64_t a = worker_random(c->w), b = worker_random(c->w);
    snprintf(c->request_id, sizeof(c->request_id), "%016llx%016llx", (unsigned long long)a,
             (unsigned long long)b);
}

static void build_request_head(struct client *c, const struct cluster_config *cc) {
    request_id(c);
    struct forward_info fi = {.client_ip = c->ip,
                              .listen_port = net_addr_port(&cfg_of(c)->listen),
                              .request_id = c->request_id,
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
        c->reqp.left -= n;
        ctr_add(&c->w->counters.copied_bytes, n);
    }
}

static void start_txn(struct client *c) {
    ev_timer_stop(loop_of(c), &c->timer);
    c->keep = c->req.keep_alive && !c->w->draining && !c->isolate;
    c->body_read = c->req.framing == BODY_NONE;
    /* the body bytes still to come from the client (the pump moves them) */
    c->reqp.left = c->req.framing == BODY_LENGTH ? c->req.content_length : 0;
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
    pump_prepare(&c->reqp, &c->rd, c->fd, &c->in, NULL, -1,
                 c->req.framing == BODY_CHUNKED ? &c->req : NULL, 1);
    /* A chunked body whose first bytes are already bad never reaches a backend. */
    if (c->req.framing == BODY_CHUNKED && pump_decode_buffered(&c->reqp) < 0) {
        count_error(c, ERR_BAD_REQUEST); /* http_dechunk made the request severe */
        reply_error(c, 400);
        return;
    }
    build_request_head(c, cc);
    c->state = C_TXN;
    c->attempts = c->relayed = 0;
    c->failed_be = NULL;
    c->req_done = c->resp_done = 0;
    c->req_err = c->resp_err = 0;
    c->resp_started = 0;
    char sticky[sizeof(((struct backend *)0)->name)];
    int has_sticky =
        cc->sticky.enabled &&
        sticky_find(&cc->sticky, cc->name, &c->req, ev_wall_us() / 1000000, sticky, sizeof(sticky));
    struct backend *be = balancer_pick(c->w->bal, c->lc, NULL, has_sticky ? sticky : NULL,
                                       worker_random(c->w), c->w->id);
    if (!be) {
        count_error(c, ERR_NO_HEALTHY_BACKEND);
        reply_status(c, 503); /* nothing healthy: no connect attempt */
        return;
    }
    connect_backend(c, be, 0);
}

/* May the request go out once more? `retries` bounds the attempts in all;
 * never once a byte of an answer reached the client; after bytes of it
 * reached a backend, only when it is safe to repeat. */
static int may_retry(const struct client *c, int request_sent) {
    if (c->relayed || c->attempts >= c->retries || up_busy(c->up)) return 0;
    return !request_sent || (c->req.framing == BODY_NONE && http_method_idempotent(c->req.method));
}

static void backend_error(struct client *c, enum lb_error kind, const char *why) {
    log_debug("backend %s: %s", c->be ? c->be->name : "?", why);
    count_error(c, kind);
    release_be(c, OUTCOME_FAILED, why);
}

/* The one way a failed attempt goes: sent again when may_retry() allows,
 * else answered `status`. A reused pooled connection found closed is not
 * held against its backend (an idle timeout, most often; a backend just
 * killed, sometimes): the next attempt goes on a new connection, to another
 * backend when there is one. Any other failure counts against the backend
 * and the next attempt avoids it. */
static void attempt_failed(struct client *c, enum lb_error kind, const char *why, int status,
                           int request_sent) {
    struct upconn *u = c->up;
    int dead_pooled = kind == ERR_BACKEND_RESET && u->reused && !u->in.len;
    if (may_retry(c, request_sent)) {
        c->failed_be = c->be;
        if (dead_pooled)
            release_be(c, OUTCOME_NEUTRAL, NULL);
        else
            backend_error(c, kind, why);
        struct backend *be =
            balancer_pick(c->w->bal, c->lc, c->failed_be, NULL, worker_random(c->w), c->w->id);
        if (be) {
            upconn_free(c->w, u);
            c->up = NULL;
            c->attempts++;
            ctr_add(&c->w->counters.errors[ERR_RETRY], 1);
            ctr_add(&c->w->counters.retries[kind == ERR_BACKEND_CONNECT ? RETRY_CONNECT
                                            : dead_pooled               ? RETRY_STALE_CONNECTION
                                                          : RETRY_RESET_BEFORE_RESPONSE],
                    1);
            connect_backend(c, be, dead_pooled);
            return;
        }
        if (dead_pooled) count_error(c, kind);
    } else {
        backend_error(c, kind, why);
    }
    fail(c, status);
}

static void send_reqhead(struct client *c);

static void on_connect(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_TXN)) return;
    c->connecting = 0;
    if (res < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s",
                 c->connect_timed_out ? "timed out" : strerror(-res));
        attempt_failed(c, ERR_BACKEND_CONNECT, why, c->connect_timed_out ? 504 : 502, 0);
        return;
    }
    send_reqhead(c);
}

/* Sends the request to be (picked, held by c): on a pooled connection
 * unless fresh, else on a new one. */
static void connect_backend(struct client *c, struct backend *be, int fresh) {
    struct worker *w = c->w;
    c->connect_timed_out = 0;
    c->be = be;
    if (w->alog) memcpy(c->be_name, be->name, sizeof(c->be_name));
    c->up = fresh ? NULL : pool_take(w, be);
    if (c->up) {
        send_reqhead(c);
        return;
    }
    c->up = upconn_open(w, be);
    if (!c->up) { /* the proxy's own limit (EMFILE): not the backend's fault */
        count_error(c, ERR_BACKEND_CONNECT);
        fail(c, 502);
        return;
    }
    c->connecting = 1;
    arm(c, cfg_of(c)->timeouts_ms.connect);
    c->up->wr.cb = on_connect;
    c->up->wr.ctx = c;
    ev_connect(loop_of(c), &c->up->wr, c->up->fd, (const struct sockaddr *)&be->addr.ss,
               be->addr.len);
}

static void on_reqhead_sent(ev_op *op, int res);
static void on_resp_read(ev_op *op, int res);
static void on_reqp_done(struct pump *p, int err);

static void send_reqhead_more(struct client *c) {
    c->up->wr.cb = on_reqhead_sent;
    c->up->wr.ctx = c;
    ev_send(loop_of(c), &c->up->wr, c->up->fd, c->reqhead.data + c->reqhead_off,
            c->reqhead.len - c->reqhead_off);
}

static void send_reqhead(struct client *c) {
    c->reqhead_off = 0;
    c->t_sent_us = ev_clock_us();
    arm(c, cfg_of(c)->timeouts_ms.backend_response);
    send_reqhead_more(c);
}

static void read_resp(struct client *c) {
    struct upconn *u = c->up;
    u->rd.cb = on_resp_read;
    u->rd.ctx = c;
    ev_recv(loop_of(c), &u->rd, u->fd, u->in.data + u->in.len, u->in.cap - u->in.len);
}

/* The body is cut when the client sends it slower than min_body_rate_bps
 * over a window (time the proxy waits for the backend does not count). */
static void on_body_timer(ev_timer *t) {
    struct client *c = t->ctx;
    if (c->closing || c->state != C_TXN || !c->reqp.active) return;
    uint64_t got = c->reqp.received - c->rate_mark;
    uint64_t want = (uint64_t)cfg_of(c)->limits.min_body_rate_bps * BODY_RATE_WINDOW_MS / 1000;
    c->rate_mark = c->reqp.received;
    if (!pump_waits_for_source(&c->reqp) || got >= want) {
        ev_timer_start(loop_of(c), t, BODY_RATE_WINDOW_MS);
        return;
    }
    log_info("client %s: request body at %llu B in %d s, under %d B/s: cut", c->ip,
             (unsigned long long)got, BODY_RATE_WINDOW_MS / 1000,
             cfg_of(c)->limits.min_body_rate_bps);
    count_error(c, ERR_CLIENT_TIMEOUT);
    c->framing_lost = 1;
    fail(c, 408);
}

static void start_request_body(struct client *c) {
    struct upconn *u = c->up;
    c->reqp.wr = &u->wr;
    c->reqp.dst = u->fd;
    c->rate_mark = 0;
    if (cfg_of(c)->limits.min_body_rate_bps)
        ev_timer_start(loop_of(c), &c->body_timer, BODY_RATE_WINDOW_MS);
    pump_start(&c->reqp, c->reqp.left);
}

static void on_reqhead_sent(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_TXN)) return;
    if (res <= 0) {
        /* Nothing of it reached the backend (a connect into a dying listener's
         * backlog), or it is safe to repeat: another backend may get it. */
        attempt_failed(c, ERR_BACKEND_RESET, "connection reset sending the request", 502,
                       c->reqhead_off > 0);
        return;
    }
    c->reqhead_off += (size_t)res;
    if (c->reqhead_off < c->reqhead.len) {
        send_reqhead_more(c);
        return;
    }
    if (c->req.framing == BODY_NONE)
        c->req_done = 1;
    else
        start_request_body(c);
    read_resp(c);
}

/* Whether the backend connection may serve another request: its response
 * ended where it said, nothing came after it, the request went whole. */
static int up_reusable(const struct client *c, const struct upconn *u) {
    return !c->req_err && !c->resp_err && u->resp.keep_alive && !c->w->draining && !c->isolate &&
           u->in.pos == u->in.len;
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
    ev_timer_stop(loop_of(c), &c->body_timer);
    c->req_done = 1;
    c->req_err = err;
    c->body_read = pump_source_done(p);
    if (err == -EBADMSG) {
        count_error(c, ERR_BAD_REQUEST); /* http_dechunk made the request severe */
        c->framing_lost = 1;
        fail(c, 400); /* bad chunk framing: nothing after the last good chunk went */
        return;
    }
    if (err && !p->failed_at_dst) {
        client_close(c); /* the client went away mid-body */
        return;
    }
    /* A backend that stopped reading may still answer: wait for it. */
    if (c->resp_done) txn_done(c);
}

static void on_respp_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_TXN)) return;
    c->resp_done = 1;
    c->resp_err = err;
    if (err) {
        if (err == -EBADMSG)
            backend_error(c, ERR_BACKEND_MALFORMED, "bad chunk framing in the response");
        else if (!p->failed_at_dst)
            backend_error(c, ERR_BACKEND_RESET, "reset mid-response");
        client_close(c); /* mid-body: nothing else to tell the client */
        return;
    }
    if (c->req_done) txn_done(c);
}

static void start_resp_body(struct client *c) {
    struct upconn *u = c->up;
    struct http_msg *r = &u->resp;
    if (r->framing == BODY_NONE) {
        c->resp_done = 1;
        if (c->req_done) txn_done(c);
        return;
    }
    arm(c, cfg_of(c)->timeouts_ms.idle);
    /* chunked: re-encoded for HTTP/1.1 clients, de-chunked for 1.0 ones */
    pump_prepare(&c->respp, &u->rd, u->fd, &u->in, &c->wr, c->fd,
                 r->framing == BODY_CHUNKED ? r : NULL, c->req.minor >= 1);
    uint64_t left =
        r->framing == BODY_LENGTH ? r->content_length - (u->in.pos - r->head_len) : PUMP_UNTIL_EOF;
    pump_start(&c->respp, left);
}

static void on_tunnel_done(struct pump *p, int err);

static void start_tunnel(struct client *c) {
    struct upconn *u = c->up;
    c->state = C_TUNNEL;
    release_be(c, OUTCOME_OK, NULL); /* answered; the tunnel is not a request in flight */
    arm(c, cfg_of(c)->timeouts_ms.idle);
    pump_init(&c->reqp, loop_of(c), c, on_tunnel_done);
    pump_init(&c->respp, loop_of(c), c, on_tunnel_done);
    c->reqp.progress = c->respp.progress = on_progress;
    pump_prepare(&c->reqp, &c->rd, c->fd, &c->in, &u->wr, u->fd, NULL, 0);
    pump_prepare(&c->respp, &u->rd, u->fd, &u->in, &c->wr, c->fd, NULL, 0);
    pump_start(&c->reqp, PUMP_UNTIL_EOF);
    pump_start(&c->respp, PUMP_UNTIL_EOF);
}

static void on_tunnel_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_TUNNEL)) return;
    if (err) {
        client_close(c);
        return;
    }
    shutdown(p->dst, SHUT_WR); /* pass the half-close on */
    if (!c->reqp.active && !c->respp.active) client_close(c);
}

/* ---- after a response: the next request, a drain, or the close ---- */

static void on_drain_done(struct pump *p, int err) {
    struct client *c = p->owner;
    if (stale(c, C_DRAIN)) return;
    pump_init(&c->reqp, loop_of(c), c, on_reqp_done);
    c->reqp.progress = on_progress;
    if (!err && c->keep)
        start_head(c);
    else
        client_close(c);
}

/* The body bytes still to come from the client, when its framing is known. */
static uint64_t body_left(const struct client *c) {
    if (c->req.framing == BODY_CHUNKED) return PUMP_UNTIL_EOF; /* to its last chunk */
    return c->reqp.left;
}

/* Reads and drops the rest of a request body nobody took, so that it is
 * never parsed as requests: the connection is kept when that ends within
 * DRAIN_MAX_BYTES and DRAIN_MS, else closed (after a half-close, so that
 * the client reads the response before it sees the end). */
static void start_drain(struct client *c) {
    uint64_t left = body_left(c);
    int chunked = c->req.framing == BODY_CHUNKED;
    if (!chunked && left > DRAIN_MAX_BYTES) c->keep = 0;
    if (!c->keep) {
        shutdown(c->fd, SHUT_WR);
        if (!chunked) left = PUMP_UNTIL_EOF;
    }
    c->state = C_DRAIN;
    arm(c, DRAIN_MS);
    pump_free(&c->reqp);
    pump_init(&c->reqp, loop_of(c), c, on_drain_done);
    pump_prepare(&c->reqp, &c->rd, c->fd, &c->in, NULL, -1, chunked ? &c->req : NULL, 0);
    pump_start_drain(&c->reqp, left, DRAIN_MAX_BYTES);
}

static void after_response(struct client *c) {
    if (c->framing_lost)
        client_close(c);
    else if (!c->body_read)
        start_drain(c);
    else if (c->keep)
        start_head(c);
    else
        client_close(c);
}

/* After a 1xx: the final response head follows. */
static void next_resp_head(struct client *c) {
    struct upconn *u = c->up;
    memmove(u->in.data, u->in.data + u->in.pos, u->in.len - u->in.pos);
    u->in.len -= u->in.pos;
    u->in.pos = 0;
    http_msg_reset(&u->resp);
    if (u->in.len)
        parse_resp(c);
    else
        read_resp(c);
}

static void on_out_sent(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (c->closing) {
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
        ev_send(loop_of(c), &c->wr, c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        return;
    }
    switch (c->after) {
    case AFTER_REPLY:
        request_end(c);
        if (c->state != C_REPLY)
            client_close(c);
        else
            after_response(c);
        break;
    case AFTER_INTERIM:
        if (stale(c, C_TXN)) return;
        next_resp_head(c);
        break;
    case AFTER_RESP_HEAD:
        if (stale(c, C_TXN)) return;
        start_resp_body(c);
        break;
    case AFTER_TUNNEL_HEAD:
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

static void send_resp_head(struct client *c) {
    struct upconn *u = c->up;
    struct http_msg *r = &u->resp;
    c->out.len = 0;
    if (r->status == 101) {
        c->status = 101;
        http_write_response(&c->out, r, c->req.minor, 1);
        c->resp_started = c->relayed = 1;
        ev_timer_stop(loop_of(c), &c->timer);
        send_out(c, AFTER_TUNNEL_HEAD);
        return;
    }
    if (r->status < 200) { /* interim: only HTTP/1.1 clients understand it */
        if (c->req.minor == 0) {
            next_resp_head(c);
            return;
        }
        http_write_response(&c->out, r, c->req.minor, 1);
        c->relayed = 1;
        send_out(c, AFTER_INTERIM);
        return;
    }
    if (r->framing == BODY_UNTIL_CLOSE || c->w->draining ||
        (r->framing == BODY_CHUNKED && c->req.minor == 0))
        c->keep = 0;
    c->status = r->status;
    http_write_response(&c->out, r, c->req.minor, c->keep);
    add_sticky_cookie(c);
    if (r->framing == BODY_LENGTH) {
        size_t avail = u->in.len - u->in.pos;
        size_t n = avail < r->content_length ? avail : (size_t)r->content_length;
        sbuf_add(&c->out, u->in.data + u->in.pos, n);
        u->in.pos += n;
        ctr_add(&c->w->counters.copied_bytes, n);
    }
    c->resp_started = c->relayed = 1;
    send_out(c, AFTER_RESP_HEAD);
}

/* A response refused for its framing: a 502, the backend connection closed,
 * counted against the backend, logged with the reason. */
static void bad_response(struct client *c, const char *why) {
    log_warn("backend %s: response refused: %s", c->be->name, why);
    backend_error(c, ERR_BACKEND_MALFORMED, why);
    fail(c, 502);
}

static void parse_resp(struct client *c) {
    struct upconn *u = c->up;
    int r = http_parse_head(&u->resp, u->in.data, u->in.len, c->req.method == HTTP_HEAD);
    if (r == HTTP_NEED_MORE) {
        if (u->in.len == u->in.cap) {
            bad_response(c, "response head too large");
            return;
        }
        read_resp(c);
        return;
    }
    if (r < 0) {
        bad_response(c, u->resp.why ? u->resp.why : "malformed response head");
        return;
    }
    if (u->resp.status == 101 && !c->req.upgrade) {
        bad_response(c, "101 to a request that did not ask to upgrade");
        return;
    }
    u->in.pos = u->resp.head_len;
    if (!c->ttfb_us) c->ttfb_us = ev_clock_us() - c->t_sent_us;
    send_resp_head(c);
}

static void on_resp_read(ev_op *op, int res) {
    struct client *c = op->ctx;
    if (stale(c, C_TXN)) return;
    if (res <= 0) {
        /* No answer yet: an idempotent request without a body may go again,
         * as with nginx's proxy_next_upstream. */
        attempt_failed(c, ERR_BACKEND_RESET,
                       res ? "connection reset before the response" : "closed before the response",
                       502, 1);
        return;
    }
    c->up->in.len += (size_t)res;
    parse_resp(c);
}

/* ---- accept and drain ---- */

void client_accept(struct worker *w, int fd) {
    const struct proxy_config *cfg = w->cfg;
    struct client *c = calloc(1, sizeof(*c));
    size_t cap = (size_t)cfg->limits.max_header_bytes + 1;
    if (cap < 16384) cap = 16384;
    if (!c || !(c->in.data = malloc(cap)) ||
        http_msg_init(&c->req, HTTP_REQUEST, cfg->limits.max_headers) < 0) {
        if (c) free(c->in.data);
        free(c);
        close(fd);
        atomic_fetch_sub_explicit(&g_connections, 1, memory_order_relaxed);
        return;
    }
    c->in.cap = cap;
    c->w = w;
    c->fd = fd;
    net_set_nodelay(fd);
    net_peer_ip(fd, c->ip, sizeof(c->ip));
    ev_op_init(&c->rd, on_head_read, c);
    ev_op_init(&c->wr, on_out_sent, c);
    ev_timer_init(&c->timer, on_timer, c);
    ev_timer_init(&c->body_timer, on_body_timer, c);
    pump_init(&c->reqp, w->loop, c, on_reqp_done);
    pump_init(&c->respp, w->loop, c, on_respp_done);
    c->reqp.progress = c->respp.progress = on_progress;
    c->next = w->clients;
    if (w->clients) w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    ctr_add(&w->counters.connections, 1);
    start_head(c);
}

void clients_close_idle(struct worker *w) {
    struct client *c = w->clients;
    while (c) {
        struct client *next = c->next;
        if (c->state == C_HEAD && c->in.len == c->in.pos) client_close(c);
        c = next;
    }
}
