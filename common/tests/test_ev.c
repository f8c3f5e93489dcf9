/* The ev layer, against both engines: the rules ev.h states (callbacks never
 * run inside the submitting call, cancel semantics, several accepts parked on
 * one listener), each op's results, timers, and ev_wake() from another thread.
 * Every case runs on io_uring (skipped with a note where it is refused) and on
 * epoll. Sockets are socketpairs, pipes and 127.0.0.1 only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "ev.h"
#include "testing.h"

#define GUARD_MS 2000 /* no case waits longer for what it expects */

static enum ev_engine engine; /* under test */

/* ---- running a loop ---- */

struct until {
    const int *count; /* NULL: run until the guard */
    int target;
    int ticks;
};

struct guard {
    ev_loop *loop;
    ev_timer timer;
};

static void until_tick(ev_loop *loop, void *arg) {
    struct until *u = arg;
    u->ticks++;
    if (u->count && *u->count >= u->target) ev_stop(loop);
}

static void on_guard(ev_timer *t) {
    struct guard *g = t->ctx;
    ev_stop(g->loop);
}

/* Runs loop until *count reaches target, or for guard_ms: how many ticks ran. */
static int run_until(ev_loop *loop, const int *count, int target, unsigned guard_ms) {
    struct until u = {count, target, 0};
    struct guard g = {.loop = loop};
    ev_timer_init(&g.timer, on_guard, &g);
    ev_timer_start(loop, &g.timer, guard_ms);
    ev_set_tick(loop, until_tick, &u);
    ev_run(loop);
    ev_timer_stop(loop, &g.timer);
    ev_set_tick(loop, NULL, NULL);
    return u.ticks;
}

static int run_ms(ev_loop *loop, unsigned ms) {
    return run_until(loop, NULL, 0, ms);
}

static ev_loop *new_loop(void) {
    char why[256] = "";
    ev_loop *loop = ev_loop_new(engine, why, sizeof(why));
    if (!loop) {
        fprintf(stderr, "ev_loop_new(%s): %s\n", ev_engine_name(engine), why);
        abort();
    }
    CHECK(ev_loop_engine(loop) == engine);
    return loop;
}

/* ---- recording ops ---- */

struct rec {
    int calls, res;
    int ran_inline; /* a call came while the submitting call had not returned */
};

static int in_call; /* set around each submitting (or cancelling) call */

#define CALL(expr)                                                                                 \
    do {                                                                                           \
        in_call = 1;                                                                               \
        expr;                                                                                      \
        in_call = 0;                                                                               \
    } while (0)

static void on_rec(ev_op *op, int res) {
    struct rec *r = op->ctx;
    r->calls++;
    r->res = res;
    if (in_call) r->ran_inline = 1;
}

/* Runs until r's op completed, and a little longer (a second callback would
 * show): its result. */
static int result_of(ev_loop *loop, struct rec *r) {
    run_until(loop, &r->calls, 1, GUARD_MS);
    run_ms(loop, 20);
    CHECK(r->calls == 1);
    CHECK(!r->ran_inline);
    return r->res;
}

/* ---- sockets ---- */

static void unix_pair(int sv[2]) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) abort();
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) abort();
    return fd;
}

/* A socket bound to 127.0.0.1 on a port of the kernel's choice; listening
 * when backlog > 0, else bound only (a connect to it is refused). */
static int tcp_bound(int backlog, struct sockaddr_in *sa) {
    int fd = tcp_socket();
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(*sa);
    if (bind(fd, (struct sockaddr *)sa, len) < 0 || getsockname(fd, (struct sockaddr *)sa, &len))
        abort();
    if (backlog > 0 && listen(fd, backlog) < 0) abort();
    return fd;
}

/* A connected TCP pair over 127.0.0.1 (splice goes through TCP in the proxy). */
static void tcp_pair(int sv[2]) {
    struct sockaddr_in sa;
    int l = tcp_bound(1, &sa);
    sv[0] = tcp_socket();
    if (connect(sv[0], (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) abort();
    for (int i = 0; i < 1000 && (sv[1] = accept4(l, NULL, NULL, SOCK_NONBLOCK)) < 0; i++)
        usleep(1000);
    if (sv[1] < 0) abort();
    close(l);
}

static void close_all(ev_loop *loop, const int *fds, int n) {
    for (int i = 0; i < n; i++) {
        ev_forget_fd(loop, fds[i]);
        close(fds[i]);
    }
}

/* Reads exactly n bytes from a non-blocking fd, waiting up to GUARD_MS. */
static int read_n(int fd, char *buf, size_t n) {
    size_t got = 0;
    for (int i = 0; i < GUARD_MS && got < n; i++) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0 || errno != EAGAIN)
            break;
        else
            usleep(1000);
    }
    return got == n;
}

/* A timer that writes "late" to fd: data that comes after an op parked. */
struct late_write {
    ev_timer timer;
    int fd;
};

static void on_late_write(ev_timer *t) {
    struct late_write *lw = t->ctx;
    CHECK(write(lw->fd, "late", 4) == 4);
}

static void write_later(ev_loop *loop, struct late_write *lw, int fd, unsigned ms) {
    lw->fd = fd;
    ev_timer_init(&lw->timer, on_late_write, lw);
    ev_timer_start(loop, &lw->timer, ms);
}

/* ---- recv, send, connect, accept ---- */

static void test_recv_send(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    char buf[64];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CHECK(write(sv[1], "hello", 5) == 5);
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    CHECK(r.calls == 0 && ev_op_busy(&op));
    CHECK(result_of(loop, &r) == 5 && !memcmp(buf, "hello", 5));
    CHECK(!ev_op_busy(&op));

    r = (struct rec){0};
    CALL(ev_send(loop, &op, sv[0], "world!", 6));
    CHECK(r.calls == 0);
    CHECK(result_of(loop, &r) == 6);
    CHECK(read_n(sv[1], buf, 6) && !memcmp(buf, "world!", 6));
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

static void test_recv_parked(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    char buf[64];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    struct late_write lw;
    write_later(loop, &lw, sv[1], 20);
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    CHECK(result_of(loop, &r) == 4 && !memcmp(buf, "late", 4));

    r = (struct rec){0};
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    run_ms(loop, 20);
    CHECK(r.calls == 0 && ev_op_busy(&op)); /* nothing to read: it waits */
    shutdown(sv[1], SHUT_WR);
    CHECK(result_of(loop, &r) == 0); /* EOF */
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* Bytes and the FIN in one go, read short of the buffer: the EOF after them
 * still comes (no readiness edge follows the FIN's). */
static void test_recv_short_then_eof(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    tcp_pair(sv);
    char buf[64];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    run_ms(loop, 20); /* parked: the socket is watched */
    CHECK(write(sv[1], "abc", 3) == 3);
    shutdown(sv[1], SHUT_WR);
    run_ms(loop, 20);
    CHECK(result_of(loop, &r) == 3);
    r = (struct rec){0};
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    CHECK(result_of(loop, &r) == 0);
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

static void test_send_to_closed_peer(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    close(sv[1]);
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_send(loop, &op, sv[0], "x", 1));
    int res = result_of(loop, &r);
    CHECK(res == -EPIPE || res == -ECONNRESET); /* MSG_NOSIGNAL: no SIGPIPE */
    close_all(loop, sv, 1);
    ev_loop_free(loop);
}

static void test_connect(void) {
    ev_loop *loop = new_loop();
    struct sockaddr_in up, down;
    int fds[4] = {tcp_bound(8, &up), tcp_bound(0, &down), tcp_socket(), tcp_socket()};
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_connect(loop, &op, fds[2], (struct sockaddr *)&up, sizeof(up)));
    CHECK(r.calls == 0);
    CHECK(result_of(loop, &r) == 0);

    r = (struct rec){0};
    CALL(ev_connect(loop, &op, fds[3], (struct sockaddr *)&down, sizeof(down)));
    CHECK(r.calls == 0);
    CHECK(result_of(loop, &r) == -ECONNREFUSED);
    close_all(loop, fds, 4);
    ev_loop_free(loop);
}

#define PARKED 4

/* Several accepts wait on one listener; each gets a connection of its own. */
static void test_accepts_parked(void) {
    ev_loop *loop = new_loop();
    struct sockaddr_in sa;
    int l = tcp_bound(16, &sa);
    struct rec r[PARKED] = {{0}};
    ev_op op[PARKED];
    int done = 0;
    for (int i = 0; i < PARKED; i++) {
        ev_op_init(&op[i], on_rec, &r[i]);
        CALL(ev_accept(loop, &op[i], l));
    }
    run_ms(loop, 20);
    int clients[PARKED];
    for (int i = 0; i < PARKED; i++) {
        CHECK(r[i].calls == 0 && ev_op_busy(&op[i])); /* nobody to accept yet */
        clients[i] = tcp_socket();
        CHECK(connect(clients[i], (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS);
    }
    for (int n = 0; n < GUARD_MS / 10 && done < PARKED; n++) {
        run_ms(loop, 10);
        done = 0;
        for (int i = 0; i < PARKED; i++)
            done += r[i].calls;
    }
    CHECK(done == PARKED);
    for (int i = 0; i < PARKED; i++) {
        CHECK(r[i].calls == 1 && r[i].res >= 0 && !r[i].ran_inline);
        for (int j = 0; j < i; j++)
            CHECK(r[i].res != r[j].res);
        if (r[i].res >= 0) close(r[i].res);
    }
    close_all(loop, clients, PARKED);
    close_all(loop, &l, 1);
    ev_loop_free(loop);
}

/* A callback that submits an op which finishes at once: that op's callback
 * runs later too, not inside the submit. */
struct chain {
    ev_loop *loop;
    int fd;
    ev_op second;
    struct rec first_rec, second_rec;
};

static void on_first(ev_op *op, int res) {
    struct chain *ch = op->ctx;
    ch->first_rec.calls++;
    ch->first_rec.res = res;
    CALL(ev_send(ch->loop, &ch->second, ch->fd, "y", 1));
}

static void test_callback_submits(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    struct chain ch = {.loop = loop, .fd = sv[0]};
    ev_op first;
    ev_op_init(&first, on_first, &ch);
    ev_op_init(&ch.second, on_rec, &ch.second_rec);
    CHECK(write(sv[1], "x", 1) == 1);
    char buf[8];
    CALL(ev_recv(loop, &first, sv[0], buf, sizeof(buf)));
    CHECK(ch.first_rec.calls == 0);
    CHECK(result_of(loop, &ch.second_rec) == 1);
    CHECK(ch.first_rec.calls == 1 && ch.first_rec.res == 1);
    CHECK(read_n(sv[1], buf, 1) && buf[0] == 'y');
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* ---- splice ---- */

static void nonblocking_pipe(int p[2]) {
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) abort();
}

static void test_splice_in(void) {
    ev_loop *loop = new_loop();
    int sv[2], p[2];
    tcp_pair(sv);
    nonblocking_pipe(p);
    char buf[64];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CHECK(write(sv[1], "spliced", 7) == 7);
    usleep(10000); /* on the receiving side's queue */
    CALL(ev_splice_in(loop, &op, sv[0], p[1], 65536));
    CHECK(result_of(loop, &r) == 7);
    CHECK(read_n(p[0], buf, 7) && !memcmp(buf, "spliced", 7));

    r = (struct rec){0};
    struct late_write lw;
    write_later(loop, &lw, sv[1], 20);
    CALL(ev_splice_in(loop, &op, sv[0], p[1], 65536)); /* parks: nothing to read */
    CHECK(result_of(loop, &r) == 4);
    CHECK(read_n(p[0], buf, 4) && !memcmp(buf, "late", 4));

    r = (struct rec){0};
    shutdown(sv[1], SHUT_WR);
    CALL(ev_splice_in(loop, &op, sv[0], p[1], 65536));
    CHECK(result_of(loop, &r) == 0); /* EOF */
    int fds[] = {sv[0], sv[1], p[0], p[1]};
    close_all(loop, fds, 4);
    ev_loop_free(loop);
}

static void test_splice_out(void) {
    ev_loop *loop = new_loop();
    int sv[2], p[2];
    tcp_pair(sv);
    nonblocking_pipe(p);
    char buf[64];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CHECK(write(p[1], "outward", 7) == 7);
    CALL(ev_splice_out(loop, &op, p[0], sv[0], 7));
    CHECK(r.calls == 0);
    CHECK(result_of(loop, &r) == 7);
    CHECK(read_n(sv[1], buf, 7) && !memcmp(buf, "outward", 7));
    int fds[] = {sv[0], sv[1], p[0], p[1]};
    close_all(loop, fds, 4);
    ev_loop_free(loop);
}

/* ---- cancel ---- */

static void test_cancel_pending(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    char buf[8];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    run_ms(loop, 20); /* parked on the socket (epoll) or in the kernel (io_uring) */
    CHECK(r.calls == 0);
    CALL(ev_cancel(loop, &op));
    CALL(ev_cancel(loop, &op)); /* twice: still one callback */
    CHECK(r.calls == 0);
    CHECK(result_of(loop, &r) == -ECANCELED);
    CHECK(write(sv[1], "x", 1) == 1); /* nobody reads it now */
    run_ms(loop, 20);
    CHECK(r.calls == 1);
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* Cancelled before the loop ran it: the result, or -ECANCELED, once. */
static void test_cancel_racing_result(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    char buf[8];
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CHECK(write(sv[1], "abc", 3) == 3);
    CALL(ev_recv(loop, &op, sv[0], buf, sizeof(buf)));
    CALL(ev_cancel(loop, &op));
    int res = result_of(loop, &r);
    CHECK(res == 3 || res == -ECANCELED);
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

static void test_cancel_idle(void) {
    ev_loop *loop = new_loop();
    int sv[2];
    unix_pair(sv);
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    ev_cancel(loop, &op); /* never submitted */
    run_ms(loop, 20);
    CHECK(r.calls == 0 && !ev_op_busy(&op));
    CALL(ev_send(loop, &op, sv[0], "z", 1));
    CHECK(result_of(loop, &r) == 1);
    ev_cancel(loop, &op); /* completed: idle again */
    run_ms(loop, 20);
    CHECK(r.calls == 1);
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* ---- timers ---- */

#define NTIMERS 3

struct fired {
    ev_timer timer;
    uint64_t started_us, after_ms, fired_us;
    int *order, *next; /* where the firing's rank goes */
    int count, rearm;  /* firings; how many times the callback re-arms */
};

static void note_firing(struct fired *f) {
    f->fired_us = ev_clock_us();
    f->count++;
    if (f->order) *f->order = (*f->next)++;
    CHECK(!ev_timer_armed(&f->timer));                        /* disarmed before its callback */
    CHECK(f->fired_us - f->started_us >= f->after_ms * 1000); /* never early */
}

static void on_fired(ev_timer *t) {
    note_firing(t->ctx);
}

static void start_fired(ev_loop *loop, struct fired *f, uint64_t after_ms) {
    f->started_us = ev_clock_us();
    f->after_ms = after_ms;
    ev_timer_start(loop, &f->timer, after_ms);
}

static void test_timers_order(void) {
    ev_loop *loop = new_loop();
    static const uint64_t after[NTIMERS] = {30, 10, 20};
    int rank[NTIMERS] = {-1, -1, -1}, next = 0;
    struct fired f[NTIMERS];
    for (int i = 0; i < NTIMERS; i++) {
        f[i] = (struct fired){.order = &rank[i], .next = &next};
        ev_timer_init(&f[i].timer, on_fired, &f[i]);
        start_fired(loop, &f[i], after[i]);
        CHECK(ev_timer_armed(&f[i].timer));
    }
    run_until(loop, &next, NTIMERS, GUARD_MS);
    CHECK(rank[1] == 0 && rank[2] == 1 && rank[0] == 2);
    for (int i = 0; i < NTIMERS; i++)
        CHECK(f[i].count == 1);
    ev_loop_free(loop);
}

static void test_timer_stop_and_restart(void) {
    ev_loop *loop = new_loop();
    struct fired stopped = {0}, restarted = {0};
    ev_timer_init(&stopped.timer, on_fired, &stopped);
    ev_timer_init(&restarted.timer, on_fired, &restarted);
    start_fired(loop, &stopped, 10);
    ev_timer_stop(loop, &stopped.timer);
    ev_timer_stop(loop, &stopped.timer); /* twice: a no-op */
    CHECK(!ev_timer_armed(&stopped.timer));
    start_fired(loop, &restarted, 5);
    start_fired(loop, &restarted, 40); /* moves the deadline: one firing, at 40 ms */
    run_until(loop, &restarted.count, 1, GUARD_MS);
    run_ms(loop, 20);
    CHECK(stopped.count == 0);
    CHECK(restarted.count == 1);
    ev_loop_free(loop);
}

struct rearming {
    struct fired f;
    ev_loop *loop;
};

static void on_rearming(ev_timer *t) {
    struct rearming *ra = t->ctx;
    note_firing(&ra->f);
    if (ra->f.count < 3) start_fired(ra->loop, &ra->f, 10);
}

static void test_timer_rearm_from_callback(void) {
    ev_loop *loop = new_loop();
    struct rearming ra = {.loop = loop};
    ev_timer_init(&ra.f.timer, on_rearming, &ra);
    start_fired(loop, &ra.f, 10);
    run_until(loop, &ra.f.count, 3, GUARD_MS);
    run_ms(loop, 30);
    CHECK(ra.f.count == 3 && !ev_timer_armed(&ra.f.timer));
    ev_loop_free(loop);
}

/* ---- ev_wake ---- */

/* An idle loop sleeps: a run of 100 ms is the first iteration and the
 * guard's, no more. Wakes before the loop ran are one iteration. */
static void test_wake_coalesces(void) {
    ev_loop *loop = new_loop();
    CHECK(run_ms(loop, 100) == 2);
    for (int i = 0; i < 100; i++)
        ev_wake(loop);
    CHECK(run_ms(loop, 100) == 3);
    ev_wake(loop); /* and again once taken */
    CHECK(run_ms(loop, 100) == 3);
    ev_loop_free(loop);
}

struct waker {
    ev_loop *loop;
    atomic_int flag;  /* the round the waker is in: what the tick looks for */
    atomic_int seen;  /* the last round the tick saw */
    uint64_t sent_us; /* when the waker called ev_wake, this round */
    uint64_t took_us[2];
    int ticks;
};

static void sleep_ms(unsigned ms) {
    nanosleep(&(struct timespec){.tv_nsec = (long)ms * 1000000}, NULL);
}

static void *waker_main(void *arg) {
    struct waker *wk = arg;
    for (int round = 1; round <= 2; round++) {
        sleep_ms(50); /* the loop is asleep in its wait by now */
        wk->sent_us = ev_clock_us();
        atomic_store(&wk->flag, round);
        ev_wake(wk->loop);
        for (int i = 0; i < 2000 && atomic_load(&wk->seen) < round; i++)
            sleep_ms(1);
    }
    return NULL;
}

static void waker_tick(ev_loop *loop, void *arg) {
    struct waker *wk = arg;
    wk->ticks++;
    int round = atomic_load(&wk->flag);
    if (round <= atomic_load(&wk->seen)) return;
    wk->took_us[round - 1] = ev_clock_us() - wk->sent_us;
    atomic_store(&wk->seen, round);
    if (round == 2) ev_stop(loop);
}

static void test_wake_from_thread(void) {
    ev_loop *loop = new_loop();
    struct waker wk = {.loop = loop};
    struct guard g = {.loop = loop};
    ev_timer_init(&g.timer, on_guard, &g);
    ev_timer_start(loop, &g.timer, 5000);
    ev_set_tick(loop, waker_tick, &wk);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, waker_main, &wk) == 0);
    ev_run(loop);
    pthread_join(t, NULL);
    CHECK(atomic_load(&wk.seen) == 2);
    for (int i = 0; i < 2; i++)
        CHECK(wk.took_us[i] < 1000000);
    CHECK(wk.ticks <= 3); /* the first iteration and one per wake: no polling */
    printf("  %s: ev_wake from another thread took %llu us, then %llu us (%d ticks)\n",
           ev_engine_name(engine), (unsigned long long)wk.took_us[0],
           (unsigned long long)wk.took_us[1], wk.ticks);
    ev_timer_stop(loop, &g.timer);
    ev_loop_free(loop);
}

/* ---- lent buffers ---- */

#define LENT_HEADROOM 40 /* rounded up to 48 by the loop */
#define LENT_SIZE     4096

static ev_loop *new_lent_loop(void) {
    ev_loop *loop = new_loop();
    CHECK(ev_bufs_init(loop, LENT_HEADROOM, LENT_SIZE) == 0);
    CHECK(ev_buf_headroom(loop) == 48 && ev_buf_size(loop) == LENT_SIZE);
    return loop;
}

/* The block comes with the bytes, at its headroom, and only with bytes. */
static void test_recv_lent(void) {
    ev_loop *loop = new_lent_loop();
    int sv[2];
    tcp_pair(sv);
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_recv_lent(loop, &op, sv[0]));
    run_ms(loop, 20);
    CHECK(r.calls == 0 && ev_op_busy(&op)); /* waits, holding no block */
    CHECK(write(sv[1], "hello", 5) == 5);
    CHECK(result_of(loop, &r) == 5);
    char *block = ev_op_buf(&op);
    CHECK(block && !memcmp(block + ev_buf_headroom(loop), "hello", 5));
    ev_buf_put(loop, block);

    r = (struct rec){0};
    CALL(ev_recv_lent(loop, &op, sv[0]));
    shutdown(sv[1], SHUT_WR);
    CHECK(result_of(loop, &r) == 0 && !ev_op_buf(&op)); /* EOF: no block */
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* More reads complete at once than the ring has buffers: each gets a block
 * of its own, with its own bytes. */
enum { MANY = 300 };
static void test_recv_lent_many(void) {
    ev_loop *loop = new_lent_loop();
    static int sv[MANY][2];
    static struct rec r[MANY];
    static ev_op op[MANY];
    int done = 0;
    for (int i = 0; i < MANY; i++) {
        unix_pair(sv[i]);
        r[i] = (struct rec){0};
        ev_op_init(&op[i], on_rec, &r[i]);
        CALL(ev_recv_lent(loop, &op[i], sv[i][0]));
    }
    run_ms(loop, 10);
    for (int i = 0; i < MANY; i++)
        CHECK(dprintf(sv[i][1], "n%d", i) > 0);
    for (int i = 0; i < 200 && done < MANY; i++) {
        run_ms(loop, 10);
        done = 0;
        for (int j = 0; j < MANY; j++)
            done += r[j].calls;
    }
    CHECK(done == MANY);
    int right = 0;
    for (int i = 0; i < MANY; i++) {
        char want[16];
        int n = snprintf(want, sizeof(want), "n%d", i);
        char *block = ev_op_buf(&op[i]);
        right += r[i].res == n && block && !memcmp(block + ev_buf_headroom(loop), want, (size_t)n);
        ev_buf_put(loop, block);
        close_all(loop, sv[i], 2);
    }
    CHECK(right == MANY);
    ev_loop_free(loop);
}

static void test_recv_lent_cancel(void) {
    ev_loop *loop = new_lent_loop();
    int sv[2];
    unix_pair(sv);
    struct rec r = {0};
    ev_op op;
    ev_op_init(&op, on_rec, &r);
    CALL(ev_recv_lent(loop, &op, sv[0]));
    run_ms(loop, 20);
    CALL(ev_cancel(loop, &op));
    CHECK(result_of(loop, &r) == -ECANCELED && !ev_op_buf(&op));
    CHECK(write(sv[1], "x", 1) == 1); /* nobody reads it now */
    run_ms(loop, 20);
    CHECK(r.calls == 1);
    close_all(loop, sv, 2);
    ev_loop_free(loop);
}

/* ---- both engines ---- */

static void run_cases(void) {
    test_recv_send();
    test_recv_parked();
    test_recv_short_then_eof();
    test_send_to_closed_peer();
    test_connect();
    test_accepts_parked();
    test_callback_submits();
    test_splice_in();
    test_splice_out();
    test_cancel_pending();
    test_cancel_racing_result();
    test_cancel_idle();
    test_recv_lent();
    test_recv_lent_many();
    test_recv_lent_cancel();
    test_timers_order();
    test_timer_stop_and_restart();
    test_timer_rearm_from_callback();
    test_wake_coalesces();
    test_wake_from_thread();
}

int main(void) {
    static const enum ev_engine engines[] = {EV_ENGINE_URING, EV_ENGINE_EPOLL};
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        engine = engines[i];
        char why[256] = "";
        ev_loop *probe = ev_loop_new(engine, why, sizeof(why));
        if (!probe) {
            printf("%s refused (%s): its cases skipped\n", ev_engine_name(engine), why);
            continue;
        }
        ev_loop_free(probe);
        int failed = t_failed;
        run_cases();
        printf("%s: %s\n", ev_engine_name(engine), t_failed == failed ? "ok" : "FAILED");
    }
    return test_summary();
}
