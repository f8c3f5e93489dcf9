/* ev: a completion-based event loop with two back ends.
 *
 * Callers submit operations (accept, connect, recv, send, splice) and get one
 * callback per operation with its result (bytes, new fd, 0, or -errno). The
 * io_uring back end maps each operation onto one SQE; the epoll back end tries
 * the syscall at once and parks it on the descriptor's readiness when it
 * would block. Callbacks never run inside the submitting call, so the code
 * above (protocol state machines) is written once for both.
 *
 * Rules for callers: at most one read-side op (recv, splice_in) and one
 * write-side op (connect, send, splice_out) pending per socket (several
 * accepts may wait on one listener); splice_in only into an empty pipe (the
 * loop waits on the socket, not the pipe); an op must stay allocated until
 * its callback ran; call ev_forget_fd() before close() on a descriptor that
 * had ops. A loop belongs to one thread: only ev_wake() may be called from
 * another.
 *
 * Kept small on purpose: ops are embedded in their owner (no allocation per
 * op), and both engines keep the same rules, pinned by common/tests/test_ev.c. */
#ifndef LB_EV_H
#define LB_EV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

enum ev_engine { EV_ENGINE_AUTO, EV_ENGINE_URING, EV_ENGINE_EPOLL };

typedef struct ev_loop ev_loop;
typedef struct ev_op ev_op;
typedef void (*ev_cb)(ev_op *op, int res);

enum ev_op_state { EV_OP_IDLE, EV_OP_PENDING, EV_OP_DONE };

struct ev_op {
    ev_cb cb;
    void *ctx;
    /* private to the loop */
    uint8_t kind;
    uint8_t state;
    uint8_t flags;
    int fd, fd_out;
    int res;
    void *buf;
    size_t len;
    const struct sockaddr *addr;
    socklen_t addrlen;
    ev_op *next;
};

typedef struct ev_timer ev_timer;
struct ev_timer {
    void (*cb)(ev_timer *t);
    void *ctx;
    uint64_t deadline_ms;
    size_t heap_idx; /* 0: not armed */
};

/* Creates a loop. AUTO tries io_uring and falls back to epoll; *why_fallback
 * (when not NULL) then says why io_uring could not be used. */
ev_loop *ev_loop_new(enum ev_engine want, char *why_fallback, size_t why_len);
void ev_loop_free(ev_loop *loop);
enum ev_engine ev_loop_engine(const ev_loop *loop);
const char *ev_engine_name(enum ev_engine e);
/* Parses "auto", "uring" or "epoll"; -1 when unknown. */
int ev_engine_parse(const char *s);

/* Runs until ev_stop() (which ends this run: the loop may run again); tick
 * (if set) runs once per iteration. An iteration ends when an op completes,
 * a timer is due or ev_wake() is called, and only then: an idle loop sleeps,
 * so a thread that sets a flag for the tick to see calls ev_wake() after. */
void ev_run(ev_loop *loop);
void ev_stop(ev_loop *loop);
/* From any thread: a loop blocked in its wait returns and runs an iteration
 * (its tick sees what the caller stored before the call). Wakes that come
 * before the loop took the first are one; a loop that nobody wakes pays
 * nothing for it. */
void ev_wake(ev_loop *loop);
void ev_set_tick(ev_loop *loop, void (*tick)(ev_loop *, void *), void *arg);
/* Monotonic milliseconds, refreshed once per iteration. */
uint64_t ev_now_ms(const ev_loop *loop);
uint64_t ev_clock_ms(void);
uint64_t ev_clock_us(void);
/* Wall-clock (CLOCK_REALTIME) microseconds since the epoch, for logs. */
int64_t ev_wall_us(void);
/* clock's time ms milliseconds from now, for the timed waits of threads
 * (pthread_cond_timedwait, pthread_timedjoin_np). */
struct timespec ev_timespec_in(clockid_t clock, uint64_t ms);

static inline void ev_op_init(ev_op *op, ev_cb cb, void *ctx) {
    *op = (ev_op){.cb = cb, .ctx = ctx};
}
static inline int ev_op_busy(const ev_op *op) {
    return op->state != EV_OP_IDLE;
}

void ev_accept(ev_loop *loop, ev_op *op, int listen_fd);
void ev_connect(ev_loop *loop, ev_op *op, int fd, const struct sockaddr *sa, socklen_t len);
void ev_recv(ev_loop *loop, ev_op *op, int fd, void *buf, size_t len);
void ev_send(ev_loop *loop, ev_op *op, int fd, const void *buf, size_t len);

/* Lent buffers: a read that takes a buffer only once bytes are there, so an
 * idle connection holds none. A buffer is one block of headroom + size bytes
 * (the headroom is the caller's, for what it keeps beside the bytes); reads
 * land at block + headroom. io_uring lends them from a provided-buffer ring,
 * epoll from the loop's free list once the socket is readable. */
/* Once per loop, before the first ev_recv_lent. 0 or -errno. */
int ev_bufs_init(ev_loop *loop, size_t headroom, size_t size);
size_t ev_buf_headroom(const ev_loop *loop);
size_t ev_buf_size(const ev_loop *loop);
/* Reads up to ev_buf_size() bytes into a lent block. Result > 0: the block is
 * the caller's (ev_op_buf()), to give back with ev_buf_put(); otherwise no
 * block came with it. */
void ev_recv_lent(ev_loop *loop, ev_op *op, int fd);
static inline void *ev_op_buf(const ev_op *op) {
    return op->buf;
}
/* A block from the free list (NULL when out of memory), and back. */
void *ev_buf_get(ev_loop *loop);
void ev_buf_put(ev_loop *loop, void *block);
/* Socket to pipe, and pipe to socket. Result: bytes moved, 0 at EOF. */
void ev_splice_in(ev_loop *loop, ev_op *op, int sock, int pipe_w, size_t len);
void ev_splice_out(ev_loop *loop, ev_op *op, int pipe_r, int sock, size_t len);
/* Asks a pending op to finish early; its callback then gets -ECANCELED (or
 * its real result if it completed first). No-op on an idle op. */
void ev_cancel(ev_loop *loop, ev_op *op);
void ev_forget_fd(ev_loop *loop, int fd);
/* 1 when the loop knows fd has nothing to read and reported no FIN or error
 * since (epoll: no edge since a recv said EAGAIN or came back short), 0
 * when it does not know (io_uring). Costs no syscall. */
int ev_fd_quiet(ev_loop *loop, int fd);

void ev_timer_init(ev_timer *t, void (*cb)(ev_timer *), void *ctx);
void ev_timer_start(ev_loop *loop, ev_timer *t, uint64_t after_ms);
void ev_timer_stop(ev_loop *loop, ev_timer *t);
static inline int ev_timer_armed(const ev_timer *t) {
    return t->heap_idx != 0;
}

/* Counters of bytes moved, per loop, for the exit summary. */
struct ev_stats {
    uint64_t splice_ops, splice_bytes, recv_bytes, send_bytes;
    uint64_t bufs_allocated;  /* lent blocks allocated: a busy loop reuses them */
    uint64_t bufs_ring_empty; /* lent recvs that found io_uring's buffer ring empty */
};
const struct ev_stats *ev_loop_stats(const ev_loop *loop);

#endif
