/* epoll back end: each op is tried at once; one that would block waits,
 * parked on its descriptor, for the edge-triggered readiness that lets it
 * go on. Finished ops run their callbacks from a queue, never inline.
 *
 * Each side of a descriptor remembers whether it may be ready (HAProxy's
 * speculative I/O): a side that said EAGAIN, or a recv that came back short
 * of its length (the socket emptied), is not ready until epoll says so, and
 * an op on it is parked without a syscall that would only say EAGAIN. An
 * edge comes with every arrival after that point, so nothing is missed; once
 * the peer's FIN (or an error) was reported, only EAGAIN counts. */
#define _GNU_SOURCE
#include "ev_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

/* Ops waiting on a descriptor, per side; several accepts may wait on one
 * listener, so each side is a list. */
struct fd_slot {
    ev_op *rd, *wr;
    uint8_t registered;
    uint8_t rd_idle, wr_idle; /* known not ready: wait for epoll's word */
    uint8_t hup;              /* epoll said RDHUP, HUP or ERR: no edge comes after that one */
};

struct ep_state {
    int epfd;
    struct fd_slot *slots;
    size_t nslots;
    ev_loop *loop;
};

static struct ep_state *st(ev_loop *loop) {
    return loop->be_state;
}

static int ep_init(ev_loop *loop, char *why, size_t why_len) {
    struct ep_state *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        snprintf(why, why_len, "epoll_create1: %s", strerror(errno));
        free(s);
        return -1;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.fd = loop->wake_fd};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, loop->wake_fd, &e) < 0) {
        snprintf(why, why_len, "epoll_ctl(eventfd): %s", strerror(errno));
        close(s->epfd);
        free(s);
        return -1;
    }
    s->loop = loop;
    loop->be_state = s;
    return 0;
}

static void ep_fini(ev_loop *loop) {
    struct ep_state *s = st(loop);
    close(s->epfd);
    free(s->slots);
    free(s);
}

static struct fd_slot *slot_for(struct ep_state *s, int fd) {
    if ((size_t)fd >= s->nslots) {
        size_t n = s->nslots ? s->nslots : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct fd_slot *p = realloc(s->slots, n * sizeof(*p));
        if (!p) abort(); /* an op we cannot park would hang forever */
        memset(p + s->nslots, 0, (n - s->nslots) * sizeof(*p));
        s->slots = p;
        s->nslots = n;
    }
    return &s->slots[fd];
}

static void queue_done(struct ep_state *s, ev_op *op, int res) {
    ev_queue_done(s->loop, op, res);
}

static void park(struct ep_state *s, ev_op *op) {
    struct fd_slot *slot = slot_for(s, op->fd);
    if (!slot->registered) {
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                .data.fd = op->fd};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, op->fd, &e) < 0 && errno != EEXIST) {
            queue_done(s, op, -errno);
            return;
        }
        slot->registered = 1;
    }
    ev_op **head = ev_is_write_side(op) ? &slot->wr : &slot->rd;
    op->next = *head;
    *head = op;
}

static int is_recv(const ev_op *op) {
    return op->kind == EVK_RECV || op->kind == EVK_RECV_LENT;
}

static void attempt(struct ep_state *s, ev_op *op) {
    int write_side = ev_is_write_side(op);
    struct fd_slot *slot = (size_t)op->fd < s->nslots ? &s->slots[op->fd] : NULL;
    if (slot && slot->registered && (write_side ? slot->wr_idle : slot->rd_idle)) {
        park(s, op);
        return;
    }
    int r = ev_try_op(s->loop, op);
    /* (a short recv after the peer's FIN was reported: the 0 that follows
     * would wait for an edge that already came) */
    int short_io = r > 0 && (size_t)r < op->len && (is_recv(op) || op->kind == EVK_SEND);
    if (r == -EAGAIN || (short_io && !(slot && slot->hup))) {
        slot = slot_for(s, op->fd);
        if (write_side)
            slot->wr_idle = 1;
        else
            slot->rd_idle = 1;
    }
    if (r == -EAGAIN)
        park(s, op);
    else
        queue_done(s, op, r);
}

static void ep_submit(ev_loop *loop, ev_op *op) {
    attempt(st(loop), op);
}

static void ep_cancel(ev_loop *loop, ev_op *op) {
    struct ep_state *s = st(loop);
    if ((size_t)op->fd >= s->nslots) return;
    struct fd_slot *slot = &s->slots[op->fd];
    for (ev_op **pp = ev_is_write_side(op) ? &slot->wr : &slot->rd; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            queue_done(s, op, -ECANCELED);
            return;
        }
    }
    /* not parked: already queued with its result */
}

static void ep_forget_fd(ev_loop *loop, int fd) {
    struct ep_state *s = st(loop);
    if ((size_t)fd < s->nslots) s->slots[fd] = (struct fd_slot){0};
}

static int ep_fd_quiet(ev_loop *loop, int fd) {
    struct ep_state *s = st(loop);
    if ((size_t)fd >= s->nslots) return 0;
    const struct fd_slot *slot = &s->slots[fd];
    return slot->registered && slot->rd_idle && !slot->hup;
}

static void retry_all(struct ep_state *s, ev_op *list) {
    while (list) {
        ev_op *next = list->next;
        attempt(s, list);
        list = next;
    }
}

static void on_ready(struct ep_state *s, int fd, uint32_t events) {
    if ((size_t)fd >= s->nslots) return;
    struct fd_slot *slot = &s->slots[fd];
    int err = events & (EPOLLERR | EPOLLHUP);
    if (err || (events & EPOLLRDHUP)) slot->hup = 1;
    if (err || (events & (EPOLLIN | EPOLLRDHUP))) slot->rd_idle = 0;
    if (err || (events & EPOLLOUT)) slot->wr_idle = 0;
    if (slot->rd && (err || (events & (EPOLLIN | EPOLLRDHUP)))) {
        ev_op *list = slot->rd;
        slot->rd = NULL;
        retry_all(s, list);
    }
    /* the slot may have moved: attempt() can grow the table */
    slot = &s->slots[fd];
    if (slot->wr && (err || (events & EPOLLOUT))) {
        ev_op *list = slot->wr;
        slot->wr = NULL;
        retry_all(s, list);
    }
}

static void ep_wait(ev_loop *loop, int timeout_ms) {
    struct ep_state *s = st(loop);
    struct epoll_event evs[256];
    int n = epoll_wait(s->epfd, evs, 256, timeout_ms);
    loop->now_ms = ev_clock_ms();
    for (int i = 0; i < n; i++) {
        if (evs[i].data.fd == loop->wake_fd)
            ev_wake_drain(loop);
        else
            on_ready(s, evs[i].data.fd, evs[i].events);
    }
    /* Only what is queued now: ops finishing at once while these run go to
     * the next round, after epoll has had its say. */
    ev_run_done(loop);
}

const struct ev_backend ev_epoll_backend = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .submit = ep_submit,
    .cancel = ep_cancel,
    .forget_fd = ep_forget_fd,
    .fd_quiet = ep_fd_quiet,
    .wait = ep_wait,
};
