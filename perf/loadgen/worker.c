/* One loadgen thread: its own ev_loop, its share of the connections, and
 * the state machine of a request on a connection:
 *
 *   idle --start--> [connect] --> send (recv posted alongside) --> response
 *        <--keep-alive-----------------------------------------------'
 *        <--close_finish-- closing (ops cancelled, waiting for their callbacks)
 *
 * Closed loop: a connection takes its next request as soon as it is free.
 * Open loop: request k is due at start + k/R; due requests go to free
 * connections, and their latency counts from the due time, so a request that
 * waited for a connection (or a slow target) shows it (no coordinated
 * omission). Timers have a millisecond's grain: rather than late, a request
 * leaves up to LOOKAHEAD_US early, its latency then counted from the send. A request not sent
 * within --timeout-ms of its due time is a timeout without being sent. */
#define _GNU_SOURCE
#include "loadgen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RBUF_SIZE   16384
#define CAPTURE_MAX 1024 /* body bytes kept to find "instance_id" in */
#define RETRY_MS    10   /* pause after socket() failed (EMFILE) */
/* Open loop: a request goes out up to this much before it is due (timers
 * have a millisecond's grain); its latency then counts from the send. */
#define LOOKAHEAD_US 1000

struct lg_conn {
    struct lg_worker *w;
    int fd;
    ev_op rd, wr;
    ev_timer timer; /* the request's timeout, or the pause after socket() failed */
    llhttp_t parser;
    uint8_t busy;    /* a request is in flight */
    uint8_t closing; /* ops cancelled, close_finish when both are idle */
    uint8_t done;    /* retired: no more requests */
    uint8_t retry;   /* the timer is the pause, not a timeout */
    uint8_t msg_done, keep, capture;
    int idle_pos; /* index in w->idle, -1 when not there */
    uint64_t seq, t0;
    size_t sent;
    int status;
    uint64_t body_bytes;
    size_t cap_len;
    char cap[CAPTURE_MAX];
    char rbuf[RBUF_SIZE];
};

static void conn_next(struct lg_conn *c);
static void close_begin(struct lg_conn *c);
static void on_send(ev_op *op, int res);
static void on_connect(ev_op *op, int res);

const char *lg_err_text(int kind, int err_no, char *buf, size_t len) {
    switch (kind) {
    case LG_OK: return "";
    case LG_ERR_SOCKET: snprintf(buf, len, "socket: %s", strerror(err_no)); break;
    case LG_ERR_CONNECT: snprintf(buf, len, "connect: %s", strerror(err_no)); break;
    case LG_ERR_SEND: snprintf(buf, len, "send: %s", strerror(err_no)); break;
    case LG_ERR_RECV: snprintf(buf, len, "recv: %s", strerror(err_no)); break;
    case LG_ERR_RESET: return "reset";
    case LG_ERR_CLOSED: return "closed";
    case LG_ERR_TIMEOUT: return "timeout";
    case LG_ERR_PARSE: snprintf(buf, len, "parse: %s", llhttp_errno_name(err_no)); break;
    default: return "error";
    }
    return buf;
}

/* ---- llhttp callbacks (the parser's data is the connection) ---- */

static int on_headers_complete(llhttp_t *p) {
    struct lg_conn *c = p->data;
    c->status = p->status_code;
    c->capture = c->w->run->record && c->status >= 200 && c->status < 300;
    return c->w->run->cfg->head ? 1 : 0; /* 1: no body follows */
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    struct lg_conn *c = p->data;
    c->body_bytes += len;
    if (c->capture && c->cap_len < CAPTURE_MAX) {
        size_t n = len < CAPTURE_MAX - c->cap_len ? len : CAPTURE_MAX - c->cap_len;
        memcpy(c->cap + c->cap_len, at, n);
        c->cap_len += n;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    struct lg_conn *c = p->data;
    if (p->status_code < 200 && p->status_code != 101) {
        /* an interim response (100 Continue): the final one follows */
        c->body_bytes = 0;
        c->cap_len = 0;
        return 0;
    }
    c->msg_done = 1;
    c->keep = (uint8_t)llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* stop at the end of the response */
}

static const llhttp_settings_t parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- results ---- */

/* The instance id of a JSON reply ("instance_id":"..."), interned in the
 * worker's table: its index + 1, or 0. */
static uint16_t instance_of(struct lg_conn *c) {
    static const char key[] = "\"instance_id\":\"";
    struct lg_worker *w = c->w;
    const char *p = memmem(c->cap, c->cap_len, key, sizeof(key) - 1);
    if (!p) return 0;
    p += sizeof(key) - 1;
    const char *end = c->cap + c->cap_len;
    char id[256];
    size_t n = 0;
    for (; p < end && *p != '"'; p++) {
        if (*p == '\\' && p + 1 < end) p++; /* \" \\ \/: the character itself */
        if (n < sizeof(id) - 1) id[n++] = *p;
    }
    if (p >= end) return 0; /* cut off */
    id[n] = 0;
    for (size_t i = 0; i < w->nids; i++)
        if (!strcmp(w->ids[i], id)) return (uint16_t)(i + 1);
    if (w->nids >= 65535) return 0;
    if (w->nids == w->capids) {
        size_t cap = w->capids ? w->capids * 2 : 16;
        char **ids = realloc(w->ids, cap * sizeof(*ids));
        if (!ids) return 0;
        w->ids = ids;
        w->capids = cap;
    }
    char *s = strdup(id);
    if (!s) return 0;
    w->ids[w->nids++] = s;
    return (uint16_t)w->nids;
}

/* Counts a request that ended at `now`: with a response (err LG_OK, c's
 * status and body) or without; keeps its row for --csv. */
static void record_request(struct lg_worker *w, const struct lg_conn *c, uint64_t seq, uint64_t t0,
                           int err, int err_no, uint64_t now) {
    struct lg_stats *st = &w->st;
    uint64_t lat = now > t0 ? now - t0 : 0;
    st->requests++;
    if (err == LG_OK) {
        st->responses++;
        st->body_bytes += c->body_bytes;
        int cls = c->status / 100;
        st->status_class[cls >= 1 && cls <= 5 ? cls : 0]++;
        if (c->status >= 200 && c->status < 400)
            st->ok++;
        else
            st->errors++;
        hist_record(&st->hist, lat);
    } else {
        st->errors++;
        st->err_count[err][err_no & 255]++;
    }
    st->last_us = now;
    atomic_store_explicit(&w->progress_requests, st->requests, memory_order_relaxed);
    atomic_store_explicit(&w->progress_errors, st->errors, memory_order_relaxed);
    if (!w->run->record || w->oom) return;
    if (w->nrecs == w->caprecs) {
        size_t cap = w->caprecs ? w->caprecs * 2 : 4096;
        struct lg_rec *r = realloc(w->recs, cap * sizeof(*r));
        if (!r) {
            w->oom = 1;
            return;
        }
        w->recs = r;
        w->caprecs = cap;
    }
    struct lg_rec *r = &w->recs[w->nrecs++];
    r->start_us = t0 > w->run->start_us ? t0 - w->run->start_us : 0;
    r->bytes = err == LG_OK ? c->body_bytes : 0;
    r->seq = (uint32_t)seq;
    r->latency_us = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
    r->status = err == LG_OK ? (uint16_t)c->status : 0;
    r->iid = 0;
    r->err = (uint8_t)err;
    r->pad = 0;
    r->err_no = (uint16_t)err_no;
}

static void record(struct lg_conn *c, int err, int err_no, uint64_t now) {
    struct lg_worker *w = c->w;
    record_request(w, c, c->seq, c->t0, err, err_no, now);
    if (err == LG_OK && c->cap_len && w->run->record && !w->oom)
        w->recs[w->nrecs - 1].iid = instance_of(c);
}

/* The request ends without a response: counted, and the connection closed. */
static void fail(struct lg_conn *c, int err, int err_no) {
    if (c->busy) {
        record(c, err, err_no, ev_clock_us());
        c->busy = 0;
    }
    close_begin(c);
}

/* ---- connections ---- */

static void close_finish(struct lg_conn *c) {
    ev_forget_fd(c->w->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    c->closing = 0;
    conn_next(c);
}

static void close_begin(struct lg_conn *c) {
    struct lg_worker *w = c->w;
    ev_timer_stop(w->loop, &c->timer);
    c->retry = 0;
    if (c->fd < 0) {
        conn_next(c);
        return;
    }
    c->closing = 1;
    if (ev_op_busy(&c->rd)) ev_cancel(w->loop, &c->rd);
    if (ev_op_busy(&c->wr)) ev_cancel(w->loop, &c->wr);
    if (!ev_op_busy(&c->rd) && !ev_op_busy(&c->wr)) close_finish(c);
}

/* An op's callback while the connection closes: finish when it was the last. */
static int closing_step(struct lg_conn *c) {
    if (!c->closing) return 0;
    if (!ev_op_busy(&c->rd) && !ev_op_busy(&c->wr)) close_finish(c);
    return 1;
}

static void post_recv(struct lg_conn *c) {
    if (!ev_op_busy(&c->rd)) ev_recv(c->w->loop, &c->rd, c->fd, c->rbuf, sizeof(c->rbuf));
}

static void do_send(struct lg_conn *c) {
    const struct lg_config *cfg = c->w->run->cfg;
    c->wr.cb = on_send;
    ev_send(c->w->loop, &c->wr, c->fd, cfg->req + c->sent, cfg->req_len - c->sent);
}

static void retire(struct lg_conn *c) {
    struct lg_worker *w = c->w;
    if (c->fd >= 0) {
        close_begin(c); /* comes back here without the descriptor */
        return;
    }
    if (c->done) return;
    c->done = 1;
    if (++w->ndone == w->nconns) ev_stop(w->loop);
}

static void complete(struct lg_conn *c) {
    const struct lg_config *cfg = c->w->run->cfg;
    ev_timer_stop(c->w->loop, &c->timer);
    record(c, LG_OK, 0, ev_clock_us());
    c->busy = 0;
    if (cfg->keepalive && c->keep && c->sent == cfg->req_len && !ev_op_busy(&c->wr))
        conn_next(c);
    else
        close_begin(c);
}

static void on_connect(ev_op *op, int res) {
    struct lg_conn *c = op->ctx;
    if (closing_step(c)) return;
    if (res < 0) {
        fail(c, LG_ERR_CONNECT, -res);
        return;
    }
    do_send(c);
    post_recv(c);
}

static void on_send(ev_op *op, int res) {
    struct lg_conn *c = op->ctx;
    if (closing_step(c)) return;
    if (res < 0) {
        if (res == -EPIPE || res == -ECONNRESET)
            fail(c, LG_ERR_RESET, -res);
        else
            fail(c, LG_ERR_SEND, -res);
        return;
    }
    c->sent += (size_t)res;
    if (c->sent < c->w->run->cfg->req_len) do_send(c);
}

static void on_recv(ev_op *op, int res) {
    struct lg_conn *c = op->ctx;
    if (closing_step(c)) return;
    if (!c->busy) {
        /* an idle keep-alive connection heard something: the peer closed
         * it (or said what it should not): it is of no more use */
        if (c->idle_pos >= 0) {
            struct lg_worker *w = c->w;
            struct lg_conn *last = w->idle[--w->nidle];
            w->idle[c->idle_pos] = last;
            last->idle_pos = c->idle_pos;
            c->idle_pos = -1;
        }
        close_begin(c);
        return;
    }
    if (res < 0) {
        fail(c, res == -ECONNRESET ? LG_ERR_RESET : LG_ERR_RECV, -res);
        return;
    }
    if (res == 0) {
        /* a response framed by the end of the connection ends here */
        llhttp_errno_t e = llhttp_finish(&c->parser);
        if (c->msg_done) {
            c->keep = 0;
            complete(c);
        } else {
            fail(c, e != HPE_OK && e != HPE_PAUSED ? LG_ERR_PARSE : LG_ERR_CLOSED,
                 e != HPE_OK && e != HPE_PAUSED ? (int)e : 0);
        }
        return;
    }
    c->w->st.rx_bytes += (unsigned)res;
    llhttp_errno_t e = llhttp_execute(&c->parser, c->rbuf, (size_t)res);
    if (c->msg_done) {
        /* bytes after the response: nothing we asked for, do not reuse */
        if (e == HPE_PAUSED && llhttp_get_error_pos(&c->parser) != c->rbuf + res) c->keep = 0;
        complete(c);
    } else if (e != HPE_OK) {
        fail(c, LG_ERR_PARSE, (int)e);
    } else {
        post_recv(c);
    }
}

static void on_timer(ev_timer *t) {
    struct lg_conn *c = t->ctx;
    if (c->retry) {
        c->retry = 0;
        conn_next(c);
        return;
    }
    fail(c, LG_ERR_TIMEOUT, 0);
}

/* The delay for ev_timer_start() that fires at the first loop iteration at
 * or after the absolute time at_us. */
static uint64_t ms_until(ev_loop *loop, uint64_t at_us) {
    uint64_t at_ms = (at_us + 999) / 1000, now_ms = ev_now_ms(loop);
    return at_ms > now_ms ? at_ms - now_ms : 0;
}

/* Starts request seq on c; its latency counts from t0. */
static void conn_start(struct lg_conn *c, uint64_t seq, uint64_t t0) {
    struct lg_worker *w = c->w;
    const struct lg_config *cfg = w->run->cfg;
    c->busy = 1;
    c->seq = seq;
    c->t0 = t0;
    c->sent = 0;
    c->status = 0;
    c->body_bytes = 0;
    c->cap_len = 0;
    c->capture = 0;
    c->msg_done = 0;
    c->keep = 0;
    llhttp_init(&c->parser, HTTP_RESPONSE, &parser_settings);
    c->parser.data = c;
    /* the timeout counts from t0 (the due time in an open loop), and the
     * timer from the loop's clock, which may be behind */
    ev_timer_start(w->loop, &c->timer, ms_until(w->loop, t0 + (uint64_t)cfg->timeout_ms * 1000u));
    if (c->fd >= 0) {
        do_send(c);
        post_recv(c);
        return;
    }
    int fd = net_socket_for(&cfg->addr);
    if (fd < 0) {
        /* out of descriptors, most likely: counted, tried again shortly */
        record(c, LG_ERR_SOCKET, -fd, ev_clock_us());
        c->busy = 0;
        c->retry = 1;
        ev_timer_start(w->loop, &c->timer, RETRY_MS);
        return;
    }
    c->fd = fd;
    c->wr.cb = on_connect;
    ev_connect(w->loop, &c->wr, fd, (const struct sockaddr *)&cfg->addr.ss, cfg->addr.len);
}

/* ---- closed loop ---- */

static int claim_seq(struct lg_worker *w, uint64_t *seq) {
    struct lg_run *run = w->run;
    if (w->stopping) return 0;
    if (run->end_us != UINT64_MAX && ev_clock_us() >= run->end_us) return 0;
    if (run->cfg->requests &&
        atomic_load_explicit(&run->next_seq, memory_order_relaxed) >= run->cfg->requests)
        return 0;
    uint64_t s = atomic_fetch_add_explicit(&run->next_seq, 1, memory_order_relaxed);
    if (run->cfg->requests && s >= run->cfg->requests) return 0;
    if (run->record && s >= LG_MAX_ROWS) {
        atomic_store(&run->cap_hit, 1);
        return 0;
    }
    *seq = s;
    return 1;
}

/* ---- open loop ---- */

static uint64_t due_us(const struct lg_run *run, uint64_t k) {
    return run->start_us + (uint64_t)((double)k * 1e6 / run->cfg->rate);
}

static void retire_idle(struct lg_worker *w) {
    while (w->nidle) {
        struct lg_conn *c = w->idle[--w->nidle];
        c->idle_pos = -1;
        retire(c);
    }
}

/* Sends what is due to free connections; counts what waited too long as
 * timeouts; arms the timer for what comes next. */
static void dispatch(struct lg_worker *w) {
    struct lg_run *run = w->run;
    uint64_t timeout_us = (uint64_t)run->cfg->timeout_ms * 1000u;
    uint64_t now = ev_clock_us();
    while (!w->stopping && w->next_k < run->k_end) {
        uint64_t due = due_us(run, w->next_k);
        if (due > now + LOOKAHEAD_US) {
            /* the timer has a millisecond's grain: wake up when the request
             * is at most LOOKAHEAD_US ahead of its time */
            ev_timer_start(w->loop, &w->sched_timer, ms_until(w->loop, due - LOOKAHEAD_US));
            return;
        }
        if (now > due && now - due >= timeout_us) {
            record_request(w, NULL, w->next_k, due, LG_ERR_TIMEOUT, 0, now);
            w->next_k += w->step;
            continue;
        }
        if (!w->nidle) {
            /* all connections busy: the next one to finish takes it, or it
             * times out unsent */
            ev_timer_start(w->loop, &w->sched_timer, ms_until(w->loop, due + timeout_us));
            return;
        }
        /* Take the free connections in turn, not the last one freed: an open
         * loop then keeps all --concurrency connections open and in use. */
        unsigned i = w->rotate++ % w->nidle;
        struct lg_conn *c = w->idle[i], *last = w->idle[--w->nidle];
        w->idle[i] = last;
        last->idle_pos = (int)i;
        c->idle_pos = -1;
        conn_start(c, w->next_k, due < now ? due : now);
        w->next_k += w->step;
    }
    ev_timer_stop(w->loop, &w->sched_timer);
    retire_idle(w);
}

static void on_sched_timer(ev_timer *t) {
    dispatch(t->ctx);
}

/* c is free (no request, not closing): its next request, or retirement. */
static void conn_next(struct lg_conn *c) {
    struct lg_worker *w = c->w;
    if (!w->run->open_loop) {
        uint64_t seq;
        if (claim_seq(w, &seq)) {
            conn_start(c, seq, ev_clock_us());
        } else {
            retire(c);
        }
        return;
    }
    if (w->stopping || w->next_k >= w->run->k_end) {
        retire(c);
        return;
    }
    c->idle_pos = (int)w->nidle;
    w->idle[w->nidle++] = c;
    /* a free keep-alive connection listens, to see the peer close it */
    if (c->fd >= 0) post_recv(c);
    dispatch(w);
}

/* SIGINT/SIGTERM: requests in flight are dropped, not counted. */
static void tick(ev_loop *loop, void *arg) {
    (void)loop;
    struct lg_worker *w = arg;
    if (w->stopping || !atomic_load_explicit(&w->run->stop, memory_order_relaxed)) return;
    w->stopping = 1;
    ev_timer_stop(w->loop, &w->sched_timer);
    retire_idle(w);
    for (unsigned i = 0; i < w->nconns; i++) {
        struct lg_conn *c = &w->conns[i];
        if (c->done || c->closing) continue;
        if (c->retry) {
            ev_timer_stop(w->loop, &c->timer);
            c->retry = 0;
            retire(c);
        } else if (c->busy) {
            c->busy = 0;
            close_begin(c);
        }
    }
}

void *lg_worker_main(void *arg) {
    struct lg_worker *w = arg;
    struct lg_run *run = w->run;
    w->loop = ev_loop_new(run->cfg->engine, w->why, sizeof(w->why));
    if (!w->loop) w->failed = 1;
    if (!w->failed) {
        w->conns = calloc(w->nconns, sizeof(*w->conns));
        w->idle = calloc(w->nconns, sizeof(*w->idle));
        if (!w->conns || !w->idle) {
            snprintf(w->why, sizeof(w->why), "out of memory for %u connections", w->nconns);
            w->failed = 1;
        }
    }
    pthread_barrier_wait(&run->ready);
    pthread_barrier_wait(&run->go); /* the main thread set start_us, or abort */
    if (!w->failed && !run->abort) {
        for (unsigned i = 0; i < w->nconns; i++) {
            struct lg_conn *c = &w->conns[i];
            c->w = w;
            c->fd = -1;
            c->idle_pos = -1;
            ev_op_init(&c->rd, on_recv, c);
            ev_op_init(&c->wr, on_send, c);
            ev_timer_init(&c->timer, on_timer, c);
        }
        ev_timer_init(&w->sched_timer, on_sched_timer, w);
        ev_set_tick(w->loop, tick, w);
        for (unsigned i = 0; i < w->nconns; i++) {
            struct lg_conn *c = &w->conns[i];
            if (run->open_loop) {
                c->idle_pos = (int)w->nidle;
                w->idle[w->nidle++] = c;
            } else {
                conn_next(c);
            }
        }
        if (run->open_loop) dispatch(w);
        if (w->ndone < w->nconns) ev_run(w->loop);
    }
    free(w->conns);
    free(w->idle);
    w->conns = NULL;
    w->idle = NULL;
    ev_loop_free(w->loop);
    w->loop = NULL;
    atomic_store(&w->finished, 1);
    return NULL;
}
