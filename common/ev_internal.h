/* Shared between ev.c and its two back ends; not for users of the loop. */
#ifndef LB_EV_INTERNAL_H
#define LB_EV_INTERNAL_H

#include <stdatomic.h>

#include "ev.h"

enum ev_kind {
    EVK_ACCEPT = 1,
    EVK_CONNECT,
    EVK_RECV,
    EVK_SEND,
    EVK_SPLICE_IN,
    EVK_SPLICE_OUT,
    EVK_RECV_LENT
};

struct ev_backend {
    const char *name;
    int (*init)(ev_loop *loop, char *why, size_t why_len);
    void (*fini)(ev_loop *loop);
    void (*submit)(ev_loop *loop, ev_op *op);
    void (*cancel)(ev_loop *loop, ev_op *op);
    void (*forget_fd)(ev_loop *loop, int fd);
    /* ev_fd_quiet (NULL: never known) */
    int (*fd_quiet)(ev_loop *loop, int fd);
    /* ev_bufs_init's part of the back end (NULL: nothing to do): 0 or -errno */
    int (*bufs_init)(ev_loop *loop);
    /* Waits up to timeout_ms (-1: forever) and runs the callbacks. */
    void (*wait)(ev_loop *loop, int timeout_ms);
};

struct ev_loop {
    const struct ev_backend *be;
    enum ev_engine engine;
    void *be_state;
    int stopping;
    uint64_t now_ms;
    void (*tick)(ev_loop *, void *);
    void *tick_arg;
    ev_timer **heap; /* 1-based binary min-heap on deadline */
    size_t heap_len, heap_cap;
    struct ev_stats stats;
    ev_op *done_head, *done_tail; /* finished without the kernel's help */
    int wake_fd;                  /* eventfd: ev_wake() writes, the back end waits on it */
    atomic_int wake_sent;         /* a write is on its way: later ev_wake()s need none */
    /* lent buffers (ev_bufs_init) */
    size_t buf_headroom, buf_size;
    void *buf_free; /* free blocks, linked through their first word, newest first */
    size_t buf_nfree;
};

extern const struct ev_backend ev_uring_backend;
extern const struct ev_backend ev_epoll_backend;

/* connect, send and splice_out wait for a socket to become writable; the
 * others for it to become readable. */
static inline int ev_is_write_side(const ev_op *op) {
    return op->kind == EVK_CONNECT || op->kind == EVK_SEND || op->kind == EVK_SPLICE_OUT;
}

/* The socket's pending error (SO_ERROR) as -errno, 0 when none: a connect's
 * outcome once the socket is writable. */
int ev_socket_error(int fd);
/* The back end saw wake_fd readable: empties it, so that the next ev_wake()
 * writes again. The tick of this iteration sees what the waker set. */
void ev_wake_drain(ev_loop *loop);

/* Does the syscall an op stands for, without blocking: result or -errno. A
 * lent recv takes its block from the free list and gives it back unless
 * bytes came. */
int ev_try_op(ev_loop *loop, ev_op *op);
/* Marks the op idle, counts its bytes and runs its callback. */
void ev_complete(ev_loop *loop, ev_op *op, int res);
/* An op that finished at once: its callback runs from ev_run_done(), never
 * inside the call that submitted it. */
void ev_queue_done(ev_loop *loop, ev_op *op, int res);
/* Runs the callbacks of the ops queued so far (not of those they queue). */
void ev_run_done(ev_loop *loop);

#endif
