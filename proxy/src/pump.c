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

static int pipe_get(struct pump *p) {
    if (p->pipe_r >= 0) return 0;
    if (pipe_cached) {
        pipe_cached--;
        p->pipe_r = pipe_cache[pipe_cached][0];
        p->pipe_w = pipe_cache[pipe_cached][1];
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
    fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort: the default 64 KiB works too */
    p->pipe_r = fds[0];
    p->pipe_w = fds[1];
    return 0;
}

static void pump_release(struct pump *p) {
    if (p->pipe_r < 0) return;
    if (p->piped == 0 && pipe_cached < PIPE_CACHE) {
        pipe_cache[pipe_cached][0] = p->pipe_r;
        pipe_cache[pipe_cached][1] = p->pipe_w;
        pipe_cached++;
    } else {
        close(p->pipe_r);
        close(p->pipe_w);
    }
    p->pipe_r = p->pipe_w = -1;
    p->piped = 0;
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

static void finish(struct pump *p, int err) {
    p->active = 0;
    give_back(p->rd, &p->rd_owner);
    if (p->wr) give_back(p->wr, &p->wr_owner);
    pump_release(p);
    sbuf_free(&p->enc);
    p->enc_off = 0;
    p->done(p, err);
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
    p->inflight = NULL;
    if (res <= 0) {
        p->failed_at_dst = 1;
        finish(p, res < 0 ? res : -EPIPE);
        return;
    }
    if (p->from_buffer && p->msg) {
        p->enc_off += (size_t)res;
        moved(p, (size_t)res, 1);
    } else if (p->from_buffer) {
        p->in->pos += (size_t)res;
        moved(p, (size_t)res, 1);
    } else {
        p->piped -= (size_t)res;
        p->moved += (size_t)res;
        if (p->progress) p->progress(p, 0);
    }
    step(p);
}

static void on_read(ev_op *op, int res) {
    struct pump *p = op->ctx;
    p->inflight = NULL;
    if (res < 0) {
        finish(p, res);
        return;
    }
    if (res == 0) { /* EOF: the end for a tunnel or a drain to the close, a truncation otherwise */
        finish(p, p->left == PUMP_UNTIL_EOF && !p->msg ? 0 : -ECONNRESET);
        return;
    }
    p->received += (size_t)res;
    if (p->drain && p->received > p->budget) {
        finish(p, -EMSGSIZE);
        return;
    }
    if (p->msg || p->pipe_r < 0) {
        p->in->len += (size_t)res;
    } else {
        p->piped += (size_t)res;
        if (p->left != PUMP_UNTIL_EOF) p->left -= (size_t)res;
    }
    step(p);
}

static void send_from(struct pump *p, const char *data, size_t n) {
    p->from_buffer = 1;
    p->inflight = p->wr;
    ev_send(p->loop, p->wr, p->dst, data, n);
}

/* Reads into the (empty) buffer: chunked bodies, drains, and a length body
 * when no pipe could be had (EMFILE: the proxy's own limit, not the peer's
 * fault, so the bytes take the slower way instead of failing). */
static void read_to_buffer(struct pump *p, size_t max) {
    p->in->pos = p->in->len = 0;
    p->inflight = p->rd;
    ev_recv(p->loop, p->rd, p->src, p->in->data, max < p->in->cap ? max : p->in->cap);
}

static void splice_out(struct pump *p) {
    p->from_buffer = 0;
    p->inflight = p->wr;
    ev_splice_out(p->loop, p->wr, p->pipe_r, p->dst, p->piped);
}

static void splice_in(struct pump *p) {
    p->inflight = p->rd;
    ev_splice_in(p->loop, p->rd, p->src, p->pipe_w,
                 p->left < PIPE_SIZE ? (size_t)p->left : PIPE_SIZE);
}

static void step_length(struct pump *p) {
    for (;;) {
        if (p->piped) {
            splice_out(p);
            return;
        }
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
        if (!p->left) {
            finish(p, 0);
            return;
        }
        if (p->drain || pipe_get(p) < 0)
            read_to_buffer(p, p->left < SIZE_MAX ? (size_t)p->left : SIZE_MAX);
        else
            splice_in(p);
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
        finish(p, -ECANCELED);
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
                       .pipe_r = -1,
                       .pipe_w = -1};
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
    return p->active && p->inflight == p->rd;
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
    if (p->inflight) ev_cancel(p->loop, p->inflight);
}
