/* io_uring back end: one SQE per op. An op that reports EAGAIN (splice always
 * goes this way first) waits on a POLL_ADD tagged with the op's address + 1
 * and is issued again once the descriptor is ready. A POLL_ADD tagged
 * WAKE_TAG waits on the loop's eventfd (ev_wake). Lent recvs select their
 * buffer from a provided-buffer ring (group BGID): the kernel picks one only
 * when bytes arrive, and the slot is refilled from the free list at once. */
#define _GNU_SOURCE
#include "ev_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <liburing.h>

/* OPF_OWN_BLOCK: a lent recv that reads into a block of its own (op->buf),
 * not one the ring selects: no ring, or the ring was empty (ENOBUFS). */
enum { OPF_POLLING = 1, OPF_CANCELLED = 2, OPF_OWN_BLOCK = 4 };

/* Entries of the provided-buffer ring (a power of two). It starts with
 * BUF_RING_START blocks and takes BUF_RING_GROW more each time a recv finds
 * it empty (that recv reads into a block of its own): about as many as the
 * recvs that complete in one batch, no more (a burst of misses at once
 * grows it by a few each, not by a fixed share of the maximum). */
#define BUF_RING       1024
#define BUF_RING_START 64
#define BUF_RING_GROW  4
#define BGID           0

struct ur_state {
    struct io_uring ring;         /* first: ring_of() */
    struct io_uring_buf_ring *br; /* NULL: none registered (kernels before 5.19) */
    void *lent[BUF_RING];         /* the block behind each buffer id, NULL: slot empty */
    unsigned nbids;               /* buffer ids given to the ring so far */
};

/* The eventfd poll's user_data: ops are aligned, so neither an op's address
 * nor its address + 1 (its poll) is 2. */
#define WAKE_TAG ((uintptr_t)2)

static struct ur_state *st(ev_loop *loop) {
    return loop->be_state;
}

static struct io_uring *ring_of(ev_loop *loop) {
    return &st(loop)->ring;
}

static const int needed_ops[] = {IORING_OP_ACCEPT,      IORING_OP_CONNECT, IORING_OP_RECV,
                                 IORING_OP_SEND,        IORING_OP_SPLICE,  IORING_OP_POLL_ADD,
                                 IORING_OP_ASYNC_CANCEL};

static int probe_ops(char *why, size_t why_len) {
    struct io_uring_probe *p = io_uring_get_probe();
    if (!p) {
        snprintf(why, why_len, "io_uring probe failed");
        return -1;
    }
    for (size_t i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
        if (!io_uring_opcode_supported(p, needed_ops[i])) {
            snprintf(why, why_len, "io_uring lacks opcode %d", needed_ops[i]);
            io_uring_free_probe(p);
            return -1;
        }
    }
    io_uring_free_probe(p);
    return 0;
}

static struct io_uring_sqe *sqe_get(ev_loop *loop) {
    struct io_uring *ring = ring_of(loop);
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    if (!sqe) abort(); /* the SQ was just emptied: cannot happen */
    return sqe;
}

/* Submitted with the next wait; no syscall of its own. */
static void arm_wake(ev_loop *loop) {
    struct io_uring_sqe *sqe = sqe_get(loop);
    io_uring_prep_poll_add(sqe, loop->wake_fd, POLLIN);
    io_uring_sqe_set_data(sqe, (void *)WAKE_TAG);
}

static int ur_init(ev_loop *loop, char *why, size_t why_len) {
    struct ur_state *s = calloc(1, sizeof(*s));
    struct io_uring *ring = s ? &s->ring : NULL;
    if (!s) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN,
                                .cq_entries = 16384};
    int r = io_uring_queue_init_params(1024, ring, &p);
    if (r == -EINVAL) { /* kernels before 5.19 lack COOP_TASKRUN */
        p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = 16384};
        r = io_uring_queue_init_params(1024, ring, &p);
    }
    if (r < 0) {
        snprintf(why, why_len, "io_uring_setup: %s", strerror(-r));
        free(s);
        return -1;
    }
    if (probe_ops(why, why_len) < 0) {
        io_uring_queue_exit(ring);
        free(s);
        return -1;
    }
    loop->be_state = s;
    arm_wake(loop);
    return 0;
}

static void ring_give(ev_loop *loop, unsigned bid, void *block) {
    struct ur_state *s = st(loop);
    s->lent[bid] = block;
    io_uring_buf_ring_add(s->br, (char *)block + loop->buf_headroom, (unsigned)loop->buf_size,
                          (unsigned short)bid, io_uring_buf_ring_mask(BUF_RING), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

/* n more buffer ids, each with a block: 0, or -ENOMEM. */
static int ring_grow(ev_loop *loop, unsigned n) {
    struct ur_state *s = st(loop);
    for (; n && s->nbids < BUF_RING; n--) {
        void *block = ev_buf_get(loop);
        if (!block) return -ENOMEM;
        ring_give(loop, s->nbids++, block);
    }
    return 0;
}

static int ur_bufs_init(ev_loop *loop) {
    struct ur_state *s = st(loop);
    size_t len = BUF_RING * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) return -errno;
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)br, .ring_entries = BUF_RING, .bgid = BGID};
    if (io_uring_register_buf_ring(&s->ring, &reg, 0) < 0) {
        munmap(br, len); /* before 5.19: every lent recv brings its own block */
        return 0;
    }
    s->br = br;
    io_uring_buf_ring_init(s->br);
    return ring_grow(loop, BUF_RING_START);
}

static void ur_fini(ev_loop *loop) {
    struct ur_state *s = st(loop);
    io_uring_queue_exit(&s->ring);
    if (s->br) {
        munmap(s->br, BUF_RING * sizeof(struct io_uring_buf));
        for (unsigned bid = 0; bid < BUF_RING; bid++)
            free(s->lent[bid]);
    }
    free(s);
}

/* A lent recv's CQE: takes the block the kernel selected, refilling its
 * slot (ev_complete gives back a block of the op's own that got no bytes). */
static void lent_done(ev_loop *loop, ev_op *op, int res, unsigned cqe_flags) {
    if (op->flags & OPF_OWN_BLOCK) return;
    if (!(cqe_flags & IORING_CQE_F_BUFFER)) return;
    unsigned bid = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    void *block = st(loop)->lent[bid];
    if (res <= 0) { /* consumed without bytes: straight back */
        ring_give(loop, bid, block);
        return;
    }
    op->buf = block;
    void *fresh = ev_buf_get(loop);
    if (fresh)
        ring_give(loop, bid, fresh);
    else
        st(loop)->lent[bid] = NULL; /* out of memory: the ring is one short */
}

/* A lent recv reads into a block of its own: 0, or -ENOMEM. */
static int own_block(ev_loop *loop, ev_op *op) {
    if (op->flags & OPF_OWN_BLOCK) return 0;
    op->buf = ev_buf_get(loop);
    if (!op->buf) return -ENOMEM;
    op->flags |= OPF_OWN_BLOCK;
    return 0;
}

static void arm_poll(ev_loop *loop, ev_op *op) {
    struct io_uring_sqe *sqe = sqe_get(loop);
    io_uring_prep_poll_add(sqe, op->fd, ev_is_write_side(op) ? POLLOUT : POLLIN);
    io_uring_sqe_set_data(sqe, (char *)op + 1);
    op->flags |= OPF_POLLING;
}

static void issue(ev_loop *loop, ev_op *op) {
    if ((op->kind == EVK_SPLICE_IN || op->kind == EVK_SPLICE_OUT) && !(op->flags & OPF_POLLING)) {
        /* IORING_OP_SPLICE always runs on an io-wq thread, and on a socket
         * with nothing to read it only says EAGAIN: try it here first, and
         * hand it to the ring (poll, then splice) only when it would block. */
        int r = ev_try_op(loop, op);
        if (r != -EAGAIN) {
            ev_queue_done(loop, op, r);
            return;
        }
        arm_poll(loop, op);
        return;
    }
    op->flags &= (uint8_t)~OPF_POLLING;
    struct io_uring_sqe *sqe = sqe_get(loop);
    switch (op->kind) {
    case EVK_ACCEPT:
        io_uring_prep_accept(sqe, op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case EVK_CONNECT: io_uring_prep_connect(sqe, op->fd, op->addr, op->addrlen); break;
    case EVK_RECV: io_uring_prep_recv(sqe, op->fd, op->buf, op->len, 0); break;
    case EVK_RECV_LENT:
        if (op->flags & OPF_OWN_BLOCK) {
            io_uring_prep_recv(sqe, op->fd, (char *)op->buf + loop->buf_headroom, op->len, 0);
        } else {
            io_uring_prep_recv(sqe, op->fd, NULL, op->len, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = BGID;
        }
        break;
    case EVK_SEND: io_uring_prep_send(sqe, op->fd, op->buf, op->len, MSG_NOSIGNAL); break;
    case EVK_SPLICE_IN:
        io_uring_prep_splice(sqe, op->fd, -1, op->fd_out, -1, (unsigned)op->len,
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        break;
    case EVK_SPLICE_OUT:
        io_uring_prep_splice(sqe, op->fd_out, -1, op->fd, -1, (unsigned)op->len,
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
}

static void ur_submit(ev_loop *loop, ev_op *op) {
    op->flags = 0;
    if (op->kind == EVK_RECV_LENT && !st(loop)->br && own_block(loop, op) < 0) {
        ev_queue_done(loop, op, -ENOMEM);
        return;
    }
    issue(loop, op);
}

static void ur_cancel(ev_loop *loop, ev_op *op) {
    if (op->flags & OPF_CANCELLED) return;
    op->flags |= OPF_CANCELLED;
    struct io_uring_sqe *sqe = sqe_get(loop);
    io_uring_prep_cancel(sqe, (op->flags & OPF_POLLING) ? (char *)op + 1 : (void *)op, 0);
    io_uring_sqe_set_data(sqe, NULL);
}

static void ur_forget_fd(ev_loop *loop, int fd) {
    (void)loop;
    (void)fd;
}

static void on_poll_done(ev_loop *loop, ev_op *op, int res) {
    if (res < 0 || (op->flags & OPF_CANCELLED)) {
        ev_complete(loop, op, res < 0 ? res : -ECANCELED);
        return;
    }
    if (op->kind == EVK_CONNECT) {
        ev_complete(loop, op, ev_socket_error(op->fd));
        return;
    }
    issue(loop, op);
}

static void on_cqe(ev_loop *loop, uintptr_t data, int res, unsigned cqe_flags) {
    if (!data) return;
    if (data == WAKE_TAG) {
        ev_wake_drain(loop);
        arm_wake(loop);
        return;
    }
    ev_op *op = (ev_op *)(data & ~(uintptr_t)1);
    if (data & 1) {
        on_poll_done(loop, op, res);
        return;
    }
    if (op->kind == EVK_RECV_LENT) {
        lent_done(loop, op, res, cqe_flags);
        if (res == -ENOBUFS && !(op->flags & OPF_CANCELLED)) {
            loop->stats.bufs_ring_empty++;
            ring_grow(loop, BUF_RING_GROW);
            /* every ring buffer is out at once: this one brings its own */
            if (own_block(loop, op) < 0) {
                ev_complete(loop, op, -ENOMEM);
                return;
            }
            issue(loop, op);
            return;
        }
    }
    int again =
        res == -EAGAIN || (op->kind == EVK_CONNECT && (res == -EINPROGRESS || res == -EALREADY));
    if (again && !(op->flags & OPF_CANCELLED)) {
        arm_poll(loop, op);
        return;
    }
    ev_complete(loop, op, res == -EAGAIN ? -ECANCELED : res);
}

static void ur_wait(ev_loop *loop, int timeout_ms) {
    struct io_uring *ring = ring_of(loop);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    io_uring_submit_and_wait_timeout(ring, &cqe, 1, timeout_ms < 0 ? NULL : &ts, NULL);
    loop->now_ms = ev_clock_ms();
    struct io_uring_cqe *batch[256];
    uintptr_t data[256];
    int res[256];
    unsigned flags[256];
    unsigned n = io_uring_peek_batch_cqe(ring, batch, 256);
    for (unsigned i = 0; i < n; i++) {
        data[i] = (uintptr_t)io_uring_cqe_get_data(batch[i]);
        res[i] = batch[i]->res;
        flags[i] = batch[i]->flags;
    }
    io_uring_cq_advance(ring, n);
    for (unsigned i = 0; i < n; i++)
        on_cqe(loop, data[i], res[i], flags[i]);
    ev_run_done(loop);
}

const struct ev_backend ev_uring_backend = {
    .name = "uring",
    .init = ur_init,
    .fini = ur_fini,
    .submit = ur_submit,
    .cancel = ur_cancel,
    .forget_fd = ur_forget_fd,
    .bufs_init = ur_bufs_init,
    .wait = ur_wait,
};
