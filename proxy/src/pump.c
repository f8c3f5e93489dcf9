#define _GNU_SOURCE
#include "pump.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define PIPE_SIZE  (256 * 1024)
#define PIPE_CACHE 64

/* Empty pipes kept per thread: creating one costs two syscalls and a resize. */
static __thread int pipe_cache[PIPE_CACHE][2];
static __thread int pipe_cached;

static int pipe_open(struct pump_pipe *pp) {
    if (pp->r >= 0) return 0;
    if (pipe_cached) {
        pipe_cached--;
        pp->r = pipe_cache[pipe_cached][0];
        pp->w = pipe_cache[pipe_cached][1];
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
    fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort: the default 64 KiB works too */
    pp->r = fds[0];
    pp->w = fds[1];
    return 0;
}

static void pipe_close(struct pump_pipe *pp) {
    if (pp->r < 0) return;
    if (pp->piped == 0 && pipe_cached < PIPE_CACHE) {
        pipe_cache[pipe_cached][0] = pp->r;
        pipe_cache[pipe_cached][1] = pp->w;
        pipe_cached++;
    } else {
        close(pp->r);
        close(pp->w);
    }
    *pp = (struct pump_pipe){.r = -1, .w = -1};
}

static void pump_release(struct pump *p) {
    pipe_close(&p->pipes[0]);
    pipe_close(&p->pipes[1]);
    p->fill = p->empty = 0;
}

void pump_thread_cleanup(void) {
    while (pipe_cached) {
        pipe_cached--;
        close(pipe_cache[pipe_cached][0]);
        close(pipe_cache[pipe_cached][1]);
    }
}

static void on_read(ev_op *op, int res);
static void on_write(ev_op *op, int res);

static void take(struct pump *p, ev_op *op, struct op_owner *saved, ev_cb cb) {
    saved->cb = op->cb;
    saved->ctx = op->ctx;
    op->cb = cb;
    op->ctx = p;
}

static void give_back(ev_op *op, const struct op_owner *saved) {
    op->cb = saved->cb;
    op->ctx = saved->ctx;
}

static int reading(const struct pump *p) {
    return ev_op_busy(p->rd);
}

static int writing(const struct pump *p) {
    return p->wr && ev_op_busy(p->wr);
}

static void finish(struct pump *p, int err) {
    p->active = 0;
    give_back(p->rd, &p->rd_owner);
    if (p->wr) give_back(p->wr, &p->wr_owner);
    pump_release(p);
    sbuf_free(&p->enc);
    p->enc_off = 0;
    p->done(p, err);
}

/* The first failure wins: the other op is cancelled, and done runs once
 * neither is in flight. */
static void fail(struct pump *p, int err, int at_dst) {
    if (!p->err) {
        p->err = err;
        p->failed_at_dst = at_dst;
    }
    if (reading(p)) ev_cancel(p->loop, p->rd);
    if (writing(p)) ev_cancel(p->loop, p->wr);
    if (!reading(p) && !writing(p)) finish(p, p->err);
}

static void step(struct pump *p);

static void moved(struct pump *p, size_t n, int from_user) {
    p->moved += n;
    if (from_user) p->copied += n;
    if (p->left != PUMP_UNTIL_EOF && !p->msg) p->left -= n;
    if (p->progress) p->progress(p, 0);
}

static void on_write(ev_op *op, int res) {
    struct pump *p = op->ctx;
    if (p->err) {
        fail(p, p->err, p->failed_at_dst);
        return;
    }
    if (res <= 0) {
        fail(p, res < 0 ? res : -EPIPE, 1);
        return;
    }
    if (p->from_buffer && p->msg) {
        p->enc_off += (size_t)res;
        moved(p, (size_t)res, 1);
    } else if (p->from_buffer) {
        p->in->pos += (size_t)res;
        moved(p, (size_t)res, 1);
    } else {
        struct pump_pipe *pp = &p->pipes[p->empty];
        pp->piped -= (size_t)res;
        if (!pp->piped && p->pipes[p->empty ^ 1].r >= 0) p->empty ^= 1;
        p->moved += (size_t)res;
        if (p->progress) p->progress(p, 0);
    }
    step(p);
}

static void on_read(ev_op *op, int res) {
    struct pump *p = op->ctx;
    if (p->err) {
        fail(p, p->err, p->failed_at_dst);
        return;
    }
    if (res < 0) {
        fail(p, res, 0);
        return;
    }
    if (res == 0) { /* EOF: the end for a tunnel or a drain to the close, a truncation otherwise */
        if (p->left != PUMP_UNTIL_EOF || p->msg) {
            fail(p, -ECONNRESET, 0);
            return;
        }
        p->src_eof = 1;
        step(p); /* what is piped still goes */
        return;
    }
    p->received += (size_t)res;
    if (p->drain && p->received > p->budget) {
        fail(p, -EMSGSIZE, 0);
        return;
    }
    if (p->msg || p->pipes[0].r < 0) {
        p->in->len += (size_t)res;
    } else {
        p->pipes[p->fill].piped += (size_t)res;
        if (p->pipes[p->fill ^ 1].r >= 0) p->fill ^= 1;
        if (p->left != PUMP_UNTIL_EOF) p->left -= (size_t)res;
    }
    step(p);
}

static void send_from(struct pump *p, const char *data, size_t n) {
    p->from_buffer = 1;
    ev_send(p->loop, p->wr, p->dst, data, n);
}

/* Reads into the (empty) buffer: chunked bodies, drains, and a length body
 * when no pipe could be had (EMFILE: the proxy's own limit, not the peer's
 * fault, so the bytes take the slower way instead of failing). */
static void read_to_buffer(struct pump *p, size_t max) {
    p->in->pos = p->in->len = 0;
    ev_recv(p->loop, p->rd, p->src, p->in->data, max < p->in->cap ? max : p->in->cap);
}

/* The buffer's bytes first (they came before any piped ones), then, at once
 * if both can go, splice_out from the pipe filled first and splice_in into
 * an empty one: the sink drains one pipe while the source fills the other. */
static void step_pipes(struct pump *p) {
    size_t avail = p->in->len - p->in->pos; /* of the body: a next message may follow */
    if (avail > p->left) avail = (size_t)p->left;
    struct pump_pipe *out = &p->pipes[p->empty], *in = &p->pipes[p->fill];
    if (!writing(p)) {
        if (avail)
            send_from(p, p->in->data + p->in->pos, avail);
        else if (out->piped) {
            p->from_buffer = 0;
            ev_splice_out(p->loop, p->wr, out->r, p->dst, out->piped);
        }
    }
    if (!reading(p) && !avail && p->left && !p->src_eof && !in->piped)
        ev_splice_in(p->loop, p->rd, p->src, in->w,
                     p->left < PIPE_SIZE ? (size_t)p->left : PIPE_SIZE);
    if (!reading(p) && !writing(p)) finish(p, 0); /* nothing left to move */
}

/* A second pipe when one can be had: without it the pipe fills and drains in
 * turn. 0, or -1 when there is not even one (the buffer path then). */
static int pipes_open(struct pump *p) {
    if (pipe_open(&p->pipes[0]) < 0) return -1;
    pipe_open(&p->pipes[1]); /* (left at -1 when it fails) */
    return 0;
}

static void step_length(struct pump *p) {
    if (p->pipes[0].r >= 0 || (!p->drain && pipes_open(p) == 0)) {
        step_pipes(p);
        return;
    }
    for (;;) { /* through the buffer: a drain, or no pipe */
        size_t avail = p->in->len - p->in->pos;
        if (avail && p->left) {
            size_t n = p->left < avail ? (size_t)p->left : avail;
            if (!p->drain) {
                send_from(p, p->in->data + p->in->pos, n);
                return;
            }
            p->in->pos += n; /* drained */
            if (p->left != PUMP_UNTIL_EOF) p->left -= n;
            continue;
        }
        if (!p->left || p->src_eof) {
            finish(p, 0);
            return;
        }
        read_to_buffer(p, p->left < SIZE_MAX ? (size_t)p->left : SIZE_MAX);
        return;
    }
}

/* One pass of the decoder over what is buffered. */
static int decode(struct pump *p) {
    size_t avail = p->in->len - p->in->pos, used;
    if (p->complete || !avail) return 0;
    int r = http_dechunk(p->msg, p->in->data + p->in->pos, avail, &used, p->drain ? NULL : &p->enc,
                         p->rechunk);
    if (r < 0) return -EBADMSG;
    p->in->pos += used;
    if (r == HTTP_BODY_DONE) p->complete = 1;
    return 0;
}

int pump_decode_buffered(struct pump *p) {
    return decode(p);
}

static void step_chunked(struct pump *p) {
    for (;;) {
        if (p->enc_off < p->enc.len) {
            send_from(p, p->enc.data + p->enc_off, p->enc.len - p->enc_off);
            return;
        }
        p->enc.len = p->enc_off = 0;
        if (p->complete) {
            finish(p, 0);
            return;
        }
        if (p->in->len == p->in->pos) {
            read_to_buffer(p, SIZE_MAX);
            return;
        }
        if (decode(p) < 0) {
            finish(p, -EBADMSG);
            return;
        }
    }
}

static void step(struct pump *p) {
    if (p->aborted) {
        fail(p, -ECANCELED, 0);
        return;
    }
    if (p->msg)
        step_chunked(p);
    else
        step_length(p);
}

void pump_init(struct pump *p, ev_loop *loop, void *owner, pump_fn done, pump_fn progress) {
    *p = (struct pump){.loop = loop,
                       .owner = owner,
                       .done = done,
                       .progress = progress,
                       .pipes = {{.r = -1, .w = -1}, {.r = -1, .w = -1}}};
}

void pump_prepare(struct pump *p, ev_op *rd, int src, struct iobuf *in, ev_op *wr, int dst,
                  struct http_msg *chunked_msg, int rechunk) {
    p->rd = rd;
    p->src = src;
    p->in = in;
    pump_set_sink(p, wr, dst);
    p->msg = chunked_msg;
    p->rechunk = rechunk;
    p->enc.len = p->enc_off = 0;
    p->complete = 0;
    p->received = p->moved = p->copied = 0;
    p->budget = UINT64_MAX;
    p->drain = 0;
    p->aborted = 0;
    p->failed_at_dst = 0;
    p->err = 0;
    p->src_eof = 0;
}

void pump_set_sink(struct pump *p, ev_op *wr, int dst) {
    p->wr = wr;
    p->dst = dst;
}

void pump_start(struct pump *p, uint64_t length) {
    p->left = p->msg ? PUMP_UNTIL_EOF : length;
    p->active = 1;
    take(p, p->rd, &p->rd_owner, on_read);
    if (p->wr) take(p, p->wr, &p->wr_owner, on_write);
    step(p);
}

void pump_start_drain(struct pump *p, uint64_t length, uint64_t budget) {
    p->drain = 1;
    pump_set_sink(p, NULL, -1);
    p->budget = budget;
    pump_start(p, length);
}

int pump_waits_for_source(const struct pump *p) {
    return p->active && reading(p) && !writing(p);
}

int pump_source_done(const struct pump *p) {
    return p->msg ? p->complete : p->left == 0;
}

uint64_t pump_left(const struct pump *p) {
    return p->left;
}

void pump_free(struct pump *p) {
    sbuf_free(&p->enc);
}

void pump_abort(struct pump *p) {
    if (!p->active) return;
    p->aborted = 1;
    if (reading(p)) ev_cancel(p->loop, p->rd);
    if (writing(p)) ev_cancel(p->loop, p->wr);
}
