/* Shared between ev.c and its two back ends; not for users of the loop. */
#ifndef LB_EV_INTERNAL_H
#define LB_EV_INTERNAL_H

#include "ev.h"

enum ev_kind { EVK_ACCEPT = 1, EVK_CONNECT, EVK_RECV, EVK_SEND, EVK_SPLICE_IN, EVK_SPLICE_OUT };

struct ev_backend {
    const char *name;
    int (*init)(ev_loop *loop, char *why, size_t why_len);
    void (*fini)(ev_loop *loop);
    void (*submit)(ev_loop *loop, ev_op *op);
    void (*cancel)(ev_loop *loop, ev_op *op);
    void (*forget_fd)(ev_loop *loop, int fd);
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
};

extern const struct ev_backend ev_uring_backend;
extern const struct ev_backend ev_epoll_backend;

/* Does the syscall an op stands for, without blocking: result or -errno. */
int ev_try_op(ev_op *op);
/* Marks the op idle, counts its bytes and runs its callback. */
void ev_complete(ev_loop *loop, ev_op *op, int res);
/* An op that finished at once: its callback runs from ev_run_done(), never
 * inside the call that submitted it. */
void ev_queue_done(ev_loop *loop, ev_op *op, int res);
/* Runs the callbacks of the ops queued so far (not of those they queue). */
void ev_run_done(ev_loop *loop);

#endif
