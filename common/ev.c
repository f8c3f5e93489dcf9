/* The parts of the loop both back ends share: set-up, timers, the run loop,
 * and the non-blocking syscalls that each op stands for. */
#define _GNU_SOURCE
#include "ev_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

uint64_t ev_clock_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t ev_clock_ms(void) {
    return ev_clock_us() / 1000u;
}

int64_t ev_wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct timespec ev_timespec_in(clockid_t clock, uint64_t ms) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

const char *ev_engine_name(enum ev_engine e) {
    switch (e) {
    case EV_ENGINE_URING: return "uring";
    case EV_ENGINE_EPOLL: return "epoll";
    default: return "auto";
    }
}

int ev_engine_parse(const char *s) {
    if (!strcmp(s, "auto")) return EV_ENGINE_AUTO;
    if (!strcmp(s, "uring") || !strcmp(s, "io_uring")) return EV_ENGINE_URING;
    if (!strcmp(s, "epoll")) return EV_ENGINE_EPOLL;
    return -1;
}

static ev_loop *loop_with(const struct ev_backend *be, enum ev_engine e, char *why, size_t len) {
    ev_loop *loop = calloc(1, sizeof(*loop));
    if (!loop) {
        snprintf(why, len, "out of memory");
        return NULL;
    }
    loop->be = be;
    loop->engine = e;
    loop->now_ms = ev_clock_ms();
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        snprintf(why, len, "eventfd: %s", strerror(errno));
        free(loop);
        return NULL;
    }
    if (be->init(loop, why, len) != 0) {
        close(loop->wake_fd);
        free(loop);
        return NULL;
    }
    return loop;
}

ev_loop *ev_loop_new(enum ev_engine want, char *why_fallback, size_t why_len) {
    char why[256] = "";
    if (want == EV_ENGINE_EPOLL) return loop_with(&ev_epoll_backend, want, why, sizeof(why));
    ev_loop *loop = loop_with(&ev_uring_backend, EV_ENGINE_URING, why, sizeof(why));
    if (loop || want == EV_ENGINE_URING) {
        if (!loop && why_fallback) snprintf(why_fallback, why_len, "%s", why);
        return loop;
    }
    if (why_fallback) snprintf(why_fallback, why_len, "%s", why);
    return loop_with(&ev_epoll_backend, EV_ENGINE_EPOLL, why, sizeof(why));
}

void ev_loop_free(ev_loop *loop) {
    if (!loop) return;
    loop->be->fini(loop);
    while (loop->buf_free) {
        void *next = *(void **)loop->buf_free;
        free(loop->buf_free);
        loop->buf_free = next;
    }
    close(loop->wake_fd);
    free(loop->heap);
    free(loop);
}

enum ev_engine ev_loop_engine(const ev_loop *loop) {
    return loop->engine;
}

const struct ev_stats *ev_loop_stats(const ev_loop *loop) {
    return &loop->stats;
}

uint64_t ev_now_ms(const ev_loop *loop) {
    return loop->now_ms;
}

void ev_set_tick(ev_loop *loop, void (*tick)(ev_loop *, void *), void *arg) {
    loop->tick = tick;
    loop->tick_arg = arg;
}

void ev_stop(ev_loop *loop) {
    loop->stopping = 1;
}

/* One write per wake-up however many threads call: wake_sent stays set until
 * the loop drains the eventfd. The exchange orders what the caller stored
 * before it (a flag) before the loop's drain, and so before its tick. */
void ev_wake(ev_loop *loop) {
    if (atomic_exchange_explicit(&loop->wake_sent, 1, memory_order_acq_rel)) return;
    uint64_t one = 1;
    /* Fails only with the counter at its maximum: the loop is woken anyway. */
    if (write(loop->wake_fd, &one, sizeof(one)) < 0) return;
}

/* wake_sent is cleared before the read: a wake that comes between the two
 * either is read here (the loop's tick runs after) or leaves the eventfd
 * readable for the next wait. */
void ev_wake_drain(ev_loop *loop) {
    atomic_exchange_explicit(&loop->wake_sent, 0, memory_order_acq_rel);
    uint64_t n;
    if (read(loop->wake_fd, &n, sizeof(n)) < 0) return; /* EAGAIN: already drained */
}

/* ---- timers: a binary min-heap, each timer knowing its slot ---- */

static void heap_set(ev_loop *loop, size_t i, ev_timer *t) {
    loop->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(ev_loop *loop, size_t i) {
    ev_timer *t = loop->heap[i];
    while (i > 1 && loop->heap[i / 2]->deadline_ms > t->deadline_ms) {
        heap_set(loop, i, loop->heap[i / 2]);
        i /= 2;
    }
    heap_set(loop, i, t);
}

static void heap_down(ev_loop *loop, size_t i) {
    ev_timer *t = loop->heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > loop->heap_len) break;
        if (c + 1 <= loop->heap_len && loop->heap[c + 1]->deadline_ms < loop->heap[c]->deadline_ms)
            c++;
        if (loop->heap[c]->deadline_ms >= t->deadline_ms) break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

void ev_timer_init(ev_timer *t, void (*cb)(ev_timer *), void *ctx) {
    *t = (ev_timer){.cb = cb, .ctx = ctx};
}

void ev_timer_stop(ev_loop *loop, ev_timer *t) {
    size_t i = t->heap_idx;
    if (!i) return;
    t->heap_idx = 0;
    ev_timer *last = loop->heap[loop->heap_len--];
    if (last == t) return;
    heap_set(loop, i, last);
    heap_up(loop, i);
    heap_down(loop, last->heap_idx);
}

void ev_timer_start(ev_loop *loop, ev_timer *t, uint64_t after_ms) {
    ev_timer_stop(loop, t);
    if (loop->heap_len + 1 >= loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 256;
        ev_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h) abort(); /* a timer we cannot arm would hang a connection */
        loop->heap = h;
        loop->heap_cap = cap;
    }
    /* From the clock, rounded up, not from now_ms (as old as this loop
     * iteration): a timer never fires before after_ms have passed. */
    t->deadline_ms = (ev_clock_us() + 999) / 1000 + after_ms;
    loop->heap_len++;
    heap_set(loop, loop->heap_len, t);
    heap_up(loop, loop->heap_len);
}

static void run_timers(ev_loop *loop) {
    while (loop->heap_len && loop->heap[1]->deadline_ms <= loop->now_ms) {
        ev_timer *t = loop->heap[1];
        ev_timer_stop(loop, t);
        t->cb(t);
    }
}

/* Until the first timer, or -1 (no timer: forever). Other threads reach a
 * sleeping loop through ev_wake(), so no wake-up is needed to poll flags. */
static int next_timeout(const ev_loop *loop) {
    if (loop->done_head) return 0;
    if (!loop->heap_len) return -1;
    uint64_t d = loop->heap[1]->deadline_ms;
    if (d <= loop->now_ms) return 0;
    return d - loop->now_ms > INT_MAX ? INT_MAX : (int)(d - loop->now_ms);
}

void ev_run(ev_loop *loop) {
    while (!loop->stopping) {
        loop->now_ms = ev_clock_ms();
        run_timers(loop);
        if (loop->tick) loop->tick(loop, loop->tick_arg);
        if (loop->stopping) break;
        loop->be->wait(loop, next_timeout(loop));
    }
    loop->stopping = 0;
}

/* ---- ops ---- */

static void submit(ev_loop *loop, ev_op *op, int kind, int fd, int fd_out, void *buf, size_t len) {
    op->kind = (uint8_t)kind;
    op->fd = fd;
    op->fd_out = fd_out;
    op->buf = buf;
    op->len = len;
    op->state = EV_OP_PENDING;
    loop->be->submit(loop, op);
}

void ev_accept(ev_loop *loop, ev_op *op, int listen_fd) {
    submit(loop, op, EVK_ACCEPT, listen_fd, -1, NULL, 0);
}

void ev_connect(ev_loop *loop, ev_op *op, int fd, const struct sockaddr *sa, socklen_t len) {
    op->addr = sa;
    op->addrlen = len;
    submit(loop, op, EVK_CONNECT, fd, -1, NULL, 0);
}

void ev_recv(ev_loop *loop, ev_op *op, int fd, void *buf, size_t len) {
    submit(loop, op, EVK_RECV, fd, -1, buf, len);
}

void ev_send(ev_loop *loop, ev_op *op, int fd, const void *buf, size_t len) {
    submit(loop, op, EVK_SEND, fd, -1, (void *)buf, len);
}

/* Free blocks kept per loop beyond those in use: a burst's worth (a block
 * freed and allocated again costs its page faults each time). */
#define BUF_FREE_MAX 1024

int ev_bufs_init(ev_loop *loop, size_t headroom, size_t size) {
    /* aligned blocks: the headroom holds the caller's structures */
    loop->buf_headroom = (headroom + 15) & ~(size_t)15;
    loop->buf_size = size;
    return loop->be->bufs_init ? loop->be->bufs_init(loop) : 0;
}

size_t ev_buf_headroom(const ev_loop *loop) {
    return loop->buf_headroom;
}

size_t ev_buf_size(const ev_loop *loop) {
    return loop->buf_size;
}

void *ev_buf_get(ev_loop *loop) {
    void *b = loop->buf_free;
    if (b) {
        loop->buf_free = *(void **)b;
        loop->buf_nfree--;
        return b;
    }
    b = malloc(loop->buf_headroom + loop->buf_size);
    if (b) loop->stats.bufs_allocated++;
    return b;
}

void ev_buf_put(ev_loop *loop, void *block) {
    if (!block) return;
    if (loop->buf_nfree >= BUF_FREE_MAX) {
        free(block);
        return;
    }
    *(void **)block = loop->buf_free;
    loop->buf_free = block;
    loop->buf_nfree++;
}

void ev_recv_lent(ev_loop *loop, ev_op *op, int fd) {
    submit(loop, op, EVK_RECV_LENT, fd, -1, NULL, loop->buf_size);
}

void ev_splice_in(ev_loop *loop, ev_op *op, int sock, int pipe_w, size_t len) {
    submit(loop, op, EVK_SPLICE_IN, sock, pipe_w, NULL, len);
}

void ev_splice_out(ev_loop *loop, ev_op *op, int pipe_r, int sock, size_t len) {
    submit(loop, op, EVK_SPLICE_OUT, sock, pipe_r, NULL, len);
}

void ev_cancel(ev_loop *loop, ev_op *op) {
    if (op->state == EV_OP_PENDING) loop->be->cancel(loop, op);
}

void ev_forget_fd(ev_loop *loop, int fd) {
    if (fd >= 0) loop->be->forget_fd(loop, fd);
}

int ev_fd_quiet(ev_loop *loop, int fd) {
    return fd >= 0 && loop->be->fd_quiet && loop->be->fd_quiet(loop, fd);
}

int ev_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
    return -err;
}

static int try_recv_lent(ev_loop *loop, ev_op *op) {
    char *block = ev_buf_get(loop);
    if (!block) return -ENOMEM;
    ssize_t r = recv(op->fd, block + loop->buf_headroom, op->len, MSG_DONTWAIT);
    if (r > 0) {
        op->buf = block;
        return (int)r;
    }
    ev_buf_put(loop, block);
    if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return 0;
}

int ev_try_op(ev_loop *loop, ev_op *op) {
    ssize_t r;
    switch (op->kind) {
    case EVK_RECV_LENT: return try_recv_lent(loop, op);
    case EVK_ACCEPT: r = accept4(op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); break;
    case EVK_CONNECT:
        /* The first try starts the connect; later ones read its outcome. */
        if (op->addr) {
            r = connect(op->fd, op->addr, op->addrlen);
            op->addr = NULL;
            if (r < 0 && errno == EINPROGRESS) return -EAGAIN;
        } else {
            return ev_socket_error(op->fd);
        }
        break;
    case EVK_RECV: r = recv(op->fd, op->buf, op->len, MSG_DONTWAIT); break;
    case EVK_SEND: r = send(op->fd, op->buf, op->len, MSG_DONTWAIT | MSG_NOSIGNAL); break;
    case EVK_SPLICE_IN:
        r = splice(op->fd, NULL, op->fd_out, NULL, op->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        break;
    case EVK_SPLICE_OUT:
        r = splice(op->fd_out, NULL, op->fd, NULL, op->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        break;
    default: return -EINVAL;
    }
    if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return (int)r;
}

void ev_queue_done(ev_loop *loop, ev_op *op, int res) {
    op->res = res;
    op->state = EV_OP_DONE;
    op->next = NULL;
    if (loop->done_tail)
        loop->done_tail->next = op;
    else
        loop->done_head = op;
    loop->done_tail = op;
}

void ev_run_done(ev_loop *loop) {
    ev_op *op = loop->done_head;
    loop->done_head = loop->done_tail = NULL;
    while (op) {
        ev_op *next = op->next;
        ev_complete(loop, op, op->res);
        op = next;
    }
}

void ev_complete(ev_loop *loop, ev_op *op, int res) {
    op->state = EV_OP_IDLE;
    if (op->kind == EVK_RECV_LENT && res <= 0 && op->buf) {
        ev_buf_put(loop, op->buf); /* no bytes: no block for the caller */
        op->buf = NULL;
    }
    if (res > 0) {
        switch (op->kind) {
        case EVK_RECV:
        case EVK_RECV_LENT: loop->stats.recv_bytes += (unsigned)res; break;
        case EVK_SEND: loop->stats.send_bytes += (unsigned)res; break;
        case EVK_SPLICE_OUT:
            loop->stats.splice_ops++;
            loop->stats.splice_bytes += (unsigned)res;
            break;
        case EVK_SPLICE_IN: loop->stats.splice_ops++; break;
        default: break;
        }
    }
    op->cb(op, res);
}
