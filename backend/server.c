/* Workers and connections: accepting, the per-connection I/O (which ops are
 * in flight), timers, buffers and the per-thread request log. */
#define _GNU_SOURCE
#include "backend.h"

#include "log.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

static atomic_uint_fast64_t next_conn_id = 1;

/* ---- the request log: per-thread buffer, flushed once per loop turn ---- */

static void log_flush(struct worker *w) {
    size_t off = 0;
    while (off < w->loglen) {
        ssize_t n = write(STDOUT_FILENO, w->logbuf + off, w->loglen - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* stdout gone: drop the lines */
        off += (size_t)n;
    }
    w->loglen = 0;
}

void log_line(struct worker *w, const char *line, size_t len) {
    if (w->loglen + len > LOG_CAP) log_flush(w);
    if (len > LOG_CAP) {
        ssize_t n = write(STDOUT_FILENO, line, len);
        (void)n;
        return;
    }
    memcpy(w->logbuf + w->loglen, line, len);
    w->loglen += len;
    if (w->loglen >= LOG_FLUSH_AT) log_flush(w);
}

/* ---- buffers ---- */

size_t out_room(const struct conn *c) {
    return c->out_cap - c->out_len;
}

/* Room for n more output bytes, or NULL while a send from the buffer is in
 * flight and the tail is too short (the buffer cannot move under it). */
char *out_reserve(struct conn *c, size_t n) {
    if (c->out_cap - c->out_len >= n) return c->out + c->out_len;
    if (c->wr_kind == WR_OUT) return NULL;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_cap - c->out_len >= n) return c->out + c->out_len;
    }
    size_t cap = c->out_cap * 2;
    while (cap - c->out_len < n)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) return NULL;
    c->out = p;
    c->out_cap = cap;
    return c->out + c->out_len;
}

/* Free space at the end of the input buffer, compacting it (and growing it
 * for a request head that does not fit yet). Only while no recv is pending. */
static size_t in_make_room(struct conn *c) {
    uint32_t keep = c->phase == PH_HEAD ? c->head_start : c->parse_off;
    if (keep == c->in_len) {
        c->in_len = c->parse_off = c->head_start = 0;
    } else if (keep && (c->in_len == c->in_cap || keep >= c->in_cap / 2)) {
        memmove(c->in, c->in + keep, c->in_len - keep);
        c->in_len -= keep;
        c->parse_off -= keep;
        c->head_start = c->head_start > keep ? c->head_start - keep : 0;
    }
    if (c->in_len == c->in_cap && c->phase == PH_HEAD && c->parse_off == c->in_len &&
        c->in_cap < IN_BUF_MAX) {
        char *p = realloc(c->in, IN_BUF_MAX);
        if (p) {
            c->in = p;
            c->in_cap = IN_BUF_MAX;
        }
    }
    return c->in_cap - c->in_len;
}

int conn_open_pipe(struct conn *c) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    c->pipe_r = p[0];
    c->pipe_w = p[1];
    int sz = fcntl(p[1], F_SETPIPE_SZ, (int)PIPE_SIZE);
    if (sz < 0) sz = fcntl(p[1], F_GETPIPE_SZ);
    c->pipe_cap = sz > 0 ? (size_t)sz : 65536;
    return 0;
}

/* ---- connection life ---- */

static void conn_free(struct conn *c) {
    struct worker *w = c->w;
    ev_forget_fd(w->loop, c->fd);
    close(c->fd);
    if (c->pipe_r >= 0) close(c->pipe_r);
    if (c->pipe_w >= 0) close(c->pipe_w);
    list_remove(&c->in_worker);
    w->nconns--;
    free(c->in);
    free(c->out);
    free(c->info);
    free(c);
}

/* Asks the connection to go: its pending ops are cancelled, and it is freed
 * by conn_settle() once none is left. Never frees by itself, so callers may
 * go on touching c until they return to the loop. */
void conn_close(struct conn *c) {
    if (c->closing) return;
    c->closing = 1;
    ev_loop *loop = c->w->loop;
    ev_timer_stop(loop, &c->idle_timer);
    ev_timer_stop(loop, &c->delay_timer);
    if (ev_op_busy(&c->rd)) ev_cancel(loop, &c->rd);
    if (ev_op_busy(&c->wr)) ev_cancel(loop, &c->wr);
}

/* The last thing every entry point into a connection does. */
static void conn_settle(struct conn *c) {
    if (c->closing && !ev_op_busy(&c->rd) && !ev_op_busy(&c->wr)) conn_free(c);
}

void conn_start_delay(struct conn *c, uint64_t ms) {
    c->phase = PH_DELAY;
    ev_timer_start(c->w->loop, &c->delay_timer, ms);
}

static int step_respond(struct conn *c) {
    uint64_t delay = cfg.delay_ms + backend_slow_ms() + (c->req.route == R_DELAY ? c->req.arg : 0);
    if (c->req.route == R_FAIL) delay = 0; /* fail mode answers at once */
    if (delay && !c->req.delay_done) {
        c->req.delay_done = 1;
        conn_start_delay(c, delay);
        return 0;
    }
    return handler_respond(c);
}

/* One step of the state machine: 1 when it did something (call again). */
static int conn_step(struct conn *c) {
    switch (c->phase) {
    case PH_HEAD:
    case PH_BODY: return http_step_parse(c);
    case PH_BODY_START: return http_step_body_start(c);
    case PH_RESPOND: return step_respond(c);
    case PH_STREAM: return stream_step(c);
    case PH_WS: return ws_step(c);
    default: return 0;
    }
}

/* The client shut its side down: 1 when nothing more can be answered, or
 * what was answered is all sent. */
static int eof_ends(struct conn *c) {
    int unparsed = c->parse_off < c->in_len;
    int unsent = out_pending(c) || ev_op_busy(&c->wr);
    switch (c->phase) {
    case PH_HEAD:
        if (unparsed) return 0;
        if (!unsent) return 1;
        c->phase = PH_CLOSING; /* send what is answered, then go */
        return 0;
    case PH_BODY: return !unparsed;
    case PH_STREAM: return c->stream == S_ECHO && c->body_left && !unparsed;
    case PH_WS: c->phase = PH_CLOSING; return !unsent;
    case PH_CLOSING: return !unsent;
    case PH_LINGER: return 1;
    default: return 0;
    }
}

static void issue_write(struct conn *c) {
    ev_loop *loop = c->w->loop;
    if (out_pending(c)) {
        c->wr_kind = WR_OUT;
        ev_send(loop, &c->wr, c->fd, c->out + c->out_off, out_pending(c));
    } else if (c->phase == PH_STREAM && c->stream == S_BYTES && c->body_left) {
        size_t start = (size_t)(c->body_pos % PATTERN_PERIOD);
        size_t n = PATTERN_LEN - start;
        if (n > c->body_left) n = (size_t)c->body_left;
        c->wr_kind = WR_BYTES;
        ev_send(loop, &c->wr, c->fd, pattern_block + start, n);
    } else if (c->phase == PH_STREAM && c->stream == S_ECHO && c->pipe_fill) {
        c->wr_kind = WR_SPLICE;
        ev_splice_out(loop, &c->wr, c->pipe_r, c->fd, c->pipe_fill);
    } else if (c->phase == PH_CLOSING) {
        shutdown(c->fd, SHUT_WR);
        c->phase = PH_LINGER;
        ev_timer_start(loop, &c->delay_timer, LINGER_MS);
    }
}

static void issue_recv(struct conn *c) {
    size_t room = in_make_room(c);
    if (!room) return; /* full of unparsed requests: parse first */
    c->rd_kind = RD_RECV;
    ev_recv(c->w->loop, &c->rd, c->fd, c->in + c->in_len, room);
}

static void issue_read(struct conn *c) {
    if (c->phase == PH_CLOSING) return;
    if (c->phase == PH_LINGER) {
        c->in_len = c->parse_off = c->head_start = 0;
        issue_recv(c);
        return;
    }
    if (c->phase == PH_STREAM && c->stream == S_ECHO) {
        if (!c->body_left || c->parse_off < c->in_len) return; /* copy what we have first */
        if (!c->splicing && c->body_left <= SPLICE_MIN) {
            issue_recv(c);
            return;
        }
        c->splicing = 1;
        if (c->pipe_r < 0 && conn_open_pipe(c) < 0) {
            log_warn("pipe: %s", strerror(errno));
            conn_close(c);
            return;
        }
        /* Only into an empty pipe: a full one would leave the splice parked
         * on a readable socket (epoll) or spinning (io_uring). */
        if (c->pipe_fill) return;
        size_t n = c->body_left < c->pipe_cap ? (size_t)c->body_left : c->pipe_cap;
        c->rd_kind = RD_SPLICE;
        ev_splice_in(c->w->loop, &c->rd, c->fd, c->pipe_w, n);
        return;
    }
    issue_recv(c);
}

/* Starts the ops the connection's state calls for. */
static void conn_io(struct conn *c) {
    if (!ev_op_busy(&c->wr)) issue_write(c);
    if (c->peer_eof) {
        if (eof_ends(c)) conn_close(c);
    } else if (!ev_op_busy(&c->rd)) {
        issue_read(c);
    }
}

void conn_pump(struct conn *c) {
    while (!c->closing && conn_step(c)) {
    }
    if (!c->closing) conn_io(c);
}

static void on_rd(ev_op *op, int res) {
    struct conn *c = op->ctx;
    int kind = c->rd_kind;
    c->rd_kind = RD_NONE;
    if (c->closing) {
        conn_settle(c);
        return;
    }
    if (res > 0) {
        c->last_active_ms = ev_now_ms(c->w->loop);
        if (kind == RD_RECV) {
            c->in_len += (uint32_t)res;
        } else {
            c->pipe_fill += (size_t)res;
            c->body_left -= (uint64_t)res;
        }
    } else if (res == 0) {
        c->peer_eof = 1;
    } else if (res != -EAGAIN && res != -EINTR) {
        conn_close(c);
        conn_settle(c);
        return;
    }
    conn_pump(c);
    conn_settle(c);
}

static void on_wr(ev_op *op, int res) {
    struct conn *c = op->ctx;
    int kind = c->wr_kind;
    c->wr_kind = WR_NONE;
    if (c->closing) {
        conn_settle(c);
        return;
    }
    if (res > 0) {
        c->last_active_ms = ev_now_ms(c->w->loop);
        if (kind == WR_OUT) {
            c->out_off += (size_t)res;
            if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
        } else if (kind == WR_BYTES) {
            c->body_pos += (uint64_t)res;
            c->body_left -= (uint64_t)res;
        } else {
            c->pipe_fill -= (size_t)res;
        }
    } else if (res != -EAGAIN && res != -EINTR) {
        conn_close(c); /* 0 (nothing moved) included: it would spin */
        conn_settle(c);
        return;
    }
    conn_pump(c);
    conn_settle(c);
}

static void on_idle(ev_timer *t) {
    struct conn *c = t->ctx;
    ev_loop *loop = c->w->loop;
    uint64_t now = ev_now_ms(loop), idle = now - c->last_active_ms;
    if (c->phase == PH_DELAY) {
        ev_timer_start(loop, t, IDLE_MS);
    } else if (idle >= IDLE_MS) {
        conn_close(c);
        conn_settle(c);
    } else {
        ev_timer_start(loop, t, IDLE_MS - idle);
    }
}

static void on_delay(ev_timer *t) {
    struct conn *c = t->ctx;
    if (c->phase == PH_LINGER) {
        conn_close(c);
    } else if (c->phase == PH_DELAY) {
        c->last_active_ms = ev_now_ms(c->w->loop);
        c->phase = PH_RESPOND;
        conn_pump(c);
    }
    conn_settle(c);
}

static void conn_new(struct worker *w, int fd) {
    struct conn *c = calloc(1, sizeof(*c));
    char *in = malloc(IN_BUF_INIT), *out = malloc(OUT_BUF_INIT);
    if (!c || !in || !out) {
        free(c);
        free(in);
        free(out);
        close(fd);
        return;
    }
    net_set_nodelay(fd);
    c->w = w;
    c->fd = fd;
    c->id = atomic_fetch_add(&next_conn_id, 1);
    c->in = in;
    c->in_cap = IN_BUF_INIT;
    c->out = out;
    c->out_cap = OUT_BUF_INIT;
    c->pipe_r = c->pipe_w = -1;
    ev_op_init(&c->rd, on_rd, c);
    ev_op_init(&c->wr, on_wr, c);
    ev_timer_init(&c->idle_timer, on_idle, c);
    ev_timer_init(&c->delay_timer, on_delay, c);
    http_conn_init(c);
    list_push(&w->conns, &c->in_worker);
    w->nconns++;
    if (!cfg.quiet) {
        char line[600];
        int n = snprintf(line, sizeof(line), "instance=%s cluster=%s accepted conn=%llu\n",
                         cfg.instance_id, cfg.cluster, (unsigned long long)c->id);
        if (n > 0) log_line(w, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
    c->last_active_ms = ev_now_ms(w->loop);
    ev_timer_start(w->loop, &c->idle_timer, IDLE_MS);
    conn_pump(c);
    conn_settle(c);
}

/* ---- accepting ---- */

static void accept_failed(struct worker *w, int err) {
    static _Atomic uint64_t last_warn_ms;
    uint64_t now = ev_now_ms(w->loop);
    if (now - atomic_load(&last_warn_ms) >= 1000) {
        atomic_store(&last_warn_ms, now);
        log_warn("accept: %s", strerror(err));
    }
}

static void on_accept(ev_op *op, int res) {
    struct worker *w = op->ctx;
    if (w->draining) {
        if (res >= 0) close(res);
        return;
    }
    if (res >= 0) {
        conn_new(w, res);
        /* Take what else is queued now, one loop turn for all of them. */
        for (int i = 0; i < 64; i++) {
            int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                    res = -errno;
                break;
            }
            conn_new(w, fd);
        }
    }
    if (res < 0 && res != -ECONNABORTED && res != -EINTR && res != -EAGAIN && res != -EPERM &&
        res != -EPROTO) {
        accept_failed(w, -res);
        ev_timer_start(w->loop, &w->accept_retry, 100); /* do not spin on it */
        return;
    }
    ev_accept(w->loop, &w->accept_op, w->lfd);
}

static void on_accept_retry(ev_timer *t) {
    struct worker *w = t->ctx;
    if (!w->draining && !ev_op_busy(&w->accept_op)) ev_accept(w->loop, &w->accept_op, w->lfd);
}

/* ---- the worker ---- */

/* Connections whose ops are not cancelled by then are left to the teardown. */
#define DRAIN_MS 1000

static void on_drain_timeout(ev_timer *t) {
    struct worker *w = t->ctx;
    ev_stop(w->loop);
}

static void begin_drain(struct worker *w) {
    w->draining = 1;
    ev_timer_start(w->loop, &w->drain_timer, DRAIN_MS);
    ev_timer_stop(w->loop, &w->accept_retry);
    if (ev_op_busy(&w->accept_op)) ev_cancel(w->loop, &w->accept_op);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &w->conns) {
        struct conn *c = list_entry(pos, struct conn, in_worker);
        conn_close(c);
        conn_settle(c);
    }
}

/* Once per loop iteration: main sets the stop flag and interrupts the
 * loop's wait with SIGRTMIN. */
static void on_tick(ev_loop *loop, void *arg) {
    struct worker *w = arg;
    if (w->loglen) log_flush(w);
    if (!w->draining && backend_stop_requested()) begin_drain(w);
    if (w->draining && !w->nconns && !ev_op_busy(&w->accept_op)) ev_stop(loop);
}

int worker_setup(struct worker *w, const struct net_addr *addr) {
    w->lfd = -1;
    list_init(&w->conns);
    w->loop = ev_loop_new(cfg.engine, w->why_fallback, sizeof(w->why_fallback));
    if (!w->loop) {
        snprintf(w->errmsg, sizeof(w->errmsg), "cannot start the %s event loop: %.200s",
                 ev_engine_name(cfg.engine), w->why_fallback);
        return -1;
    }
    w->engine = ev_loop_engine(w->loop);
    w->lfd = net_listen(addr, 1, 4096);
    if (w->lfd < 0) {
        char buf[128];
        snprintf(w->errmsg, sizeof(w->errmsg), "cannot listen on %s: %s",
                 net_addr_str(addr, buf, sizeof(buf)), strerror(-w->lfd));
        return -1;
    }
    ev_set_tick(w->loop, on_tick, w);
    ev_op_init(&w->accept_op, on_accept, w);
    ev_timer_init(&w->accept_retry, on_accept_retry, w);
    ev_timer_init(&w->drain_timer, on_drain_timeout, w);
    ev_accept(w->loop, &w->accept_op, w->lfd);
    return 0;
}

void worker_run(struct worker *w) {
    ev_run(w->loop);
    log_flush(w);
}

void worker_teardown(struct worker *w) {
    /* The loop goes first: nothing may complete into freed memory. */
    if (w->loop) ev_loop_free(w->loop);
    w->loop = NULL;
    while (!list_empty(&w->conns)) {
        struct conn *c = list_first(&w->conns, struct conn, in_worker);
        list_remove(&c->in_worker);
        close(c->fd);
        if (c->pipe_r >= 0) close(c->pipe_r);
        if (c->pipe_w >= 0) close(c->pipe_w);
        free(c->in);
        free(c->out);
        free(c->info);
        free(c);
    }
    if (w->lfd >= 0) close(w->lfd);
    w->lfd = -1;
}
