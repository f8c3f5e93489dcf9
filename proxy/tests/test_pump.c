/* The pump on a real loop, both engines, over loopback TCP (and a Unix
 * socket pair where a small send buffer is wanted): length mode moves
 * exactly its length, the buffered bytes first, and leaves the rest; chunked
 * bodies are re-encoded canonically or de-chunked; bad chunk framing ends
 * with -EBADMSG and nothing of the bad chunk delivered; a drain drops what
 * it reads and stops at its budget; an abort gives the ops back and done
 * runs once. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "pump.h"
#include "testing.h"

#define BUF_CAP 16384

struct fixture {
    ev_loop *loop;
    int src_peer, src; /* the test writes into src_peer; the pump reads src */
    int dst, dst_peer; /* the pump writes dst; the test reads dst_peer */
    ev_op rd, wr;
    struct iobuf in;
    struct pump p;
    ev_timer guard, later;
    int done_calls, err, stop_on_done;
};

/* What the ops' owner had bound before a pump took them. */
static int owner_token;
static void owner_cb(ev_op *op, int res) {
    (void)op;
    (void)res;
    CHECK(!"an op went to its owner while a pump held it");
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A connected loopback TCP pair. */
static void tcp_pair(int *a, int *b) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, len) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        abort();
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, len) < 0) abort();
    *b = accept(l, NULL, NULL);
    if (*b < 0) abort();
    close(l);
    set_nonblock(*a);
    set_nonblock(*b);
}

static void on_done(struct pump *p, int err) {
    struct fixture *f = p->owner;
    f->done_calls++;
    f->err = err;
    if (f->stop_on_done) ev_stop(f->loop);
}

static void on_guard(ev_timer *t) {
    struct fixture *f = t->ctx;
    ev_stop(f->loop);
}

static int setup(struct fixture *f, enum ev_engine e) {
    memset(f, 0, sizeof(*f));
    char why[256];
    f->loop = ev_loop_new(e, why, sizeof(why));
    if (!f->loop) {
        fprintf(stderr, "%s engine unavailable (%s): skipped\n", ev_engine_name(e), why);
        return -1;
    }
    tcp_pair(&f->src_peer, &f->src);
    tcp_pair(&f->dst, &f->dst_peer);
    ev_op_init(&f->rd, owner_cb, &owner_token);
    ev_op_init(&f->wr, owner_cb, &owner_token);
    f->in = (struct iobuf){.data = malloc(BUF_CAP), .cap = BUF_CAP};
    ev_timer_init(&f->guard, on_guard, f);
    pump_init(&f->p, f->loop, f, on_done, NULL);
    f->stop_on_done = 1;
    return 0;
}

static void teardown(struct fixture *f) {
    CHECK(!f->p.active);
    pump_free(&f->p);
    ev_timer_stop(f->loop, &f->guard);
    ev_timer_stop(f->loop, &f->later);
    int fds[] = {f->src_peer, f->src, f->dst, f->dst_peer};
    for (size_t i = 0; i < 4; i++) {
        ev_forget_fd(f->loop, fds[i]);
        close(fds[i]);
    }
    ev_loop_free(f->loop);
    free(f->in.data);
}

/* Runs the loop until done stops it (or ms pass). */
static void run(struct fixture *f, uint64_t ms) {
    ev_timer_start(f->loop, &f->guard, ms);
    ev_run(f->loop);
}

static void buffer(struct fixture *f, const char *s, size_t n) {
    memcpy(f->in.data, s, n);
    f->in.pos = 0;
    f->in.len = n;
}

static void feed(struct fixture *f, const void *s, size_t n) {
    const char *p = s;
    while (n) {
        ssize_t w = send(f->src_peer, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            poll(&(struct pollfd){.fd = f->src_peer, .events = POLLOUT}, 1, 100);
            continue;
        }
        if (w <= 0) abort();
        p += w;
        n -= (size_t)w;
    }
}

/* Everything the sink's peer can read until 100 ms pass without a byte. */
static size_t drain_fd(int fd, char *out, size_t cap) {
    size_t got = 0;
    while (got < cap && poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, 100) > 0) {
        ssize_t r = recv(fd, out + got, cap - got, MSG_DONTWAIT);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

static int ops_given_back(const struct fixture *f) {
    return f->rd.cb == owner_cb && f->rd.ctx == &owner_token && f->wr.cb == owner_cb &&
           f->wr.ctx == &owner_token && !ev_op_busy(&f->rd) && !ev_op_busy(&f->wr);
}

static void prepare(struct fixture *f, struct http_msg *chunked, int rechunk) {
    pump_prepare(&f->p, &f->rd, f->src, &f->in, &f->wr, f->dst, chunked, rechunk);
}

/* More buffered than the length: exactly the length goes, the rest stays in
 * the buffer, no read. */
static void test_length_from_buffer(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    buffer(&f, "0123456789NEXT", 14);
    prepare(&f, NULL, 0);
    pump_start(&f.p, 10);
    run(&f, 2000);
    char out[64];
    size_t n = drain_fd(f.dst_peer, out, sizeof(out));
    CHECK(f.done_calls == 1 && f.err == 0);
    CHECK(n == 10 && !memcmp(out, "0123456789", 10));
    CHECK(f.in.pos == 10 && f.in.len == 14);
    uint64_t moved, copied;
    pump_take_counts(&f.p, &moved, &copied);
    CHECK(moved == 10 && copied == 10);
    pump_take_counts(&f.p, &moved, &copied);
    CHECK(moved == 0 && copied == 0);
    CHECK(ops_given_back(&f) && pump_source_done(&f.p));
    teardown(&f);
}

/* The buffered bytes first, then the socket's (spliced) up to the length;
 * what the source sends beyond it stays unread in the socket. */
static void test_length_from_socket(enum ev_engine e) {
    enum { LEN = 60000, HEAD = 10 };
    struct fixture f;
    if (setup(&f, e) < 0) return;
    char *body = malloc(LEN + 8);
    for (size_t i = 0; i < LEN; i++)
        body[i] = (char)('a' + i % 23);
    memcpy(body + LEN, "EXTRA!!", 8);
    buffer(&f, body, HEAD);
    feed(&f, body + HEAD, LEN - HEAD + 7);
    prepare(&f, NULL, 0);
    pump_start(&f.p, LEN);
    run(&f, 5000);
    char *out = malloc(LEN + 64);
    size_t n = drain_fd(f.dst_peer, out, LEN + 64);
    CHECK(f.done_calls == 1 && f.err == 0);
    CHECK(n == LEN && !memcmp(out, body, LEN));
    uint64_t moved, copied;
    pump_take_counts(&f.p, &moved, &copied);
    CHECK(moved == LEN && copied >= HEAD);
    char rest[16];
    CHECK(recv(f.src, rest, sizeof(rest), MSG_DONTWAIT) == 7 && !memcmp(rest, "EXTRA!!", 7));
    CHECK(ops_given_back(&f));
    free(body);
    free(out);
    teardown(&f);
}

/* A body larger than two pipes, with a sink that stalls: the source fills
 * the second pipe while the first waits on the sink, and every byte arrives
 * in order. */
enum { BIG = 8 << 20 };
struct big_io {
    int fd;
    char *data;
    size_t n;
};

static void *feed_big(void *arg) {
    struct big_io *io = arg;
    size_t off = 0;
    while (off < io->n) {
        ssize_t w = send(io->fd, io->data + off, io->n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            poll(&(struct pollfd){.fd = io->fd, .events = POLLOUT}, 1, 1000);
            continue;
        }
        if (w <= 0) break;
        off += (size_t)w;
    }
    return NULL;
}

static void *read_big(void *arg) {
    struct big_io *io = arg;
    size_t got = 0;
    while (got < BIG && poll(&(struct pollfd){.fd = io->fd, .events = POLLIN}, 1, 2000) > 0) {
        ssize_t r = recv(io->fd, io->data + got, BIG - got, MSG_DONTWAIT);
        if (r <= 0) break;
        got += (size_t)r;
    }
    io->n = got;
    return NULL;
}

static void test_length_two_pipes(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    f.stop_on_done = 0;
    struct big_io in = {.fd = f.src_peer, .data = malloc(BIG), .n = BIG};
    struct big_io out = {.fd = f.dst_peer, .data = malloc(BIG)};
    for (size_t i = 0; i < BIG; i++)
        in.data[i] = (char)(i * 7 + i / 4093);
    pthread_t feeder, reader;
    CHECK(pthread_create(&feeder, NULL, feed_big, &in) == 0);
    prepare(&f, NULL, 0);
    pump_start(&f.p, BIG);
    run(&f, 300); /* nobody reads the sink: both pipes fill */
    /* one pipe waits on the sink while the other took what the source had */
    CHECK(f.p.pipes[0].piped > 0 && f.p.pipes[1].piped > 0);
    uint64_t moved, copied;
    pump_take_counts(&f.p, &moved, &copied);
    CHECK(f.p.received == moved + f.p.pipes[0].piped + f.p.pipes[1].piped);
    CHECK(pthread_create(&reader, NULL, read_big, &out) == 0);
    f.stop_on_done = 1;
    run(&f, 10000);
    pthread_join(feeder, NULL);
    pthread_join(reader, NULL);
    CHECK(f.done_calls == 1 && f.err == 0);
    CHECK(out.n == BIG && !memcmp(out.data, in.data, BIG));
    CHECK(ops_given_back(&f));
    free(in.data);
    free(out.data);
    teardown(&f);
}

/* The source closes before the length: a truncation, not an end. */
static void test_length_truncated(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    feed(&f, "abc", 3);
    shutdown(f.src_peer, SHUT_WR);
    prepare(&f, NULL, 0);
    pump_start(&f.p, 100);
    run(&f, 2000);
    CHECK(f.done_calls == 1 && f.err == -ECONNRESET && !f.p.failed_at_dst);
    CHECK(!pump_source_done(&f.p) && ops_given_back(&f));
    teardown(&f);
}

static void chunked_msg(struct http_msg *m) {
    const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    http_msg_init(m, HTTP_REQUEST, 100);
    if (http_parse_head(m, head, strlen(head), 0) != HTTP_HEAD_DONE || m->framing != BODY_CHUNKED)
        abort();
}

/* Extensions and trailers go; the first chunk buffered, the rest from the
 * socket (each span llhttp hands over is one chunk out). */
static const char chunked_body[] = "5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";

static void run_chunked(enum ev_engine e, int rechunk, const char *want) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    struct http_msg m;
    chunked_msg(&m);
    size_t first = strlen("5;ext=1\r\nhello\r\n");
    char rest[128];
    snprintf(rest, sizeof(rest), "%sNEXT", chunked_body + first); /* then the next message */
    buffer(&f, chunked_body, first);
    feed(&f, rest, strlen(rest));
    prepare(&f, &m, rechunk);
    pump_start(&f.p, PUMP_UNTIL_EOF);
    run(&f, 2000);
    char out[256];
    size_t n = drain_fd(f.dst_peer, out, sizeof(out));
    CHECK(f.done_calls == 1 && f.err == 0 && pump_source_done(&f.p));
    CHECK(n == strlen(want) && !memcmp(out, want, n));
    /* what followed the last chunk is left in the buffer, unread */
    CHECK(f.in.len - f.in.pos == 4 && !memcmp(f.in.data + f.in.pos, "NEXT", 4));
    CHECK(ops_given_back(&f));
    http_msg_free(&m);
    teardown(&f);
}

static void test_chunked(enum ev_engine e) {
    run_chunked(e, 1, "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
    run_chunked(e, 0, "helloabc");
}

/* A good chunk delivered, then a bad one: -EBADMSG, none of it out. */
static void test_bad_chunk(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    struct http_msg m;
    chunked_msg(&m);
    buffer(&f, "5\r\nhello\r\n", 10);
    feed(&f, "3\r\nabcXX\r\n0\r\n\r\n", 16); /* the data overruns its size */
    prepare(&f, &m, 1);
    pump_start(&f.p, PUMP_UNTIL_EOF);
    run(&f, 2000);
    char out[256];
    size_t n = drain_fd(f.dst_peer, out, sizeof(out));
    CHECK(f.done_calls == 1 && f.err == -EBADMSG && !f.p.failed_at_dst);
    CHECK(n == 10 && !memcmp(out, "5\r\nhello\r\n", 10));
    CHECK(!pump_source_done(&f.p) && ops_given_back(&f));
    http_msg_free(&m);
    teardown(&f);
    /* bad from its first bytes: pump_decode_buffered says so, nothing moved */
    chunked_msg(&m);
    struct iobuf in = {.data = "zz\r\n", .cap = 4, .len = 4};
    struct pump p;
    pump_init(&p, NULL, NULL, on_done, NULL);
    pump_prepare(&p, NULL, -1, &in, NULL, -1, &m, 1);
    CHECK(pump_decode_buffered(&p) == -EBADMSG && p.enc.len == 0);
    pump_free(&p);
    http_msg_free(&m);
}

/* A drain reads and drops its length, leaving what follows. */
static void test_drain_length(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    char body[500];
    memset(body, 'x', sizeof(body));
    buffer(&f, body, 50);
    feed(&f, body, sizeof(body));
    pump_prepare(&f.p, &f.rd, f.src, &f.in, NULL, -1, NULL, 0);
    pump_start_drain(&f.p, 300, 1000);
    run(&f, 2000);
    CHECK(f.done_calls == 1 && f.err == 0 && pump_source_done(&f.p));
    CHECK(f.p.received == 250); /* 50 buffered, 250 read */
    char rest[600];
    CHECK(drain_fd(f.src, rest, sizeof(rest)) == 250);
    CHECK(drain_fd(f.dst_peer, rest, sizeof(rest)) == 0);
    CHECK(ops_given_back(&f));
    teardown(&f);
}

/* A drain to the close stops at its budget. */
static void test_drain_budget(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    char body[5000];
    memset(body, 'y', sizeof(body));
    feed(&f, body, sizeof(body));
    pump_prepare(&f.p, &f.rd, f.src, &f.in, NULL, -1, NULL, 0);
    pump_start_drain(&f.p, PUMP_UNTIL_EOF, 1000);
    run(&f, 2000);
    CHECK(f.done_calls == 1 && f.err == -EMSGSIZE && f.p.received > 1000);
    CHECK(ops_given_back(&f));
    teardown(&f);
}

static void on_abort_timer(ev_timer *t) {
    struct fixture *f = t->ctx;
    CHECK(f->p.active && f->done_calls == 0);
    pump_abort(&f->p);
    pump_abort(&f->p); /* twice: still one done */
}

/* Aborted while it waits for its source, and while it waits for its sink
 * (a full send buffer): the pending op is cancelled, the ops go back to
 * their owner, done runs once. */
static void run_abort(enum ev_engine e, int at_sink) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    f.stop_on_done = 0;
    if (at_sink) { /* a Unix pair with a small send buffer that nobody reads */
        int sv[2], small = 4096;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) abort();
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
        close(f.dst);
        close(f.dst_peer);
        f.dst = sv[0];
        f.dst_peer = sv[1];
        memset(f.in.data, 'z', BUF_CAP);
        f.in.len = BUF_CAP;
    }
    prepare(&f, NULL, 0);
    pump_start(&f.p, 100000);
    ev_timer_init(&f.later, on_abort_timer, &f);
    ev_timer_start(f.loop, &f.later, 50);
    run(&f, 300); /* on past the abort: done must not run again */
    CHECK(f.done_calls == 1 && f.err == -ECANCELED);
    CHECK(ops_given_back(&f));
    pump_abort(&f.p); /* a finished pump: nothing */
    CHECK(f.done_calls == 1);
    teardown(&f);
}

static void test_abort(enum ev_engine e) {
    run_abort(e, 0);
    run_abort(e, 1);
}

/* Whether the source side is what it waits for. */
static void test_waits_for_source(enum ev_engine e) {
    struct fixture f;
    if (setup(&f, e) < 0) return;
    f.stop_on_done = 0;
    prepare(&f, NULL, 0);
    CHECK(!pump_waits_for_source(&f.p));
    pump_start(&f.p, 10);
    CHECK(pump_waits_for_source(&f.p));
    pump_abort(&f.p);
    run(&f, 100);
    CHECK(f.done_calls == 1 && !pump_waits_for_source(&f.p));
    teardown(&f);
}

int main(void) {
    log_init("test_pump", LOG_ERROR);
    enum ev_engine engines[] = {EV_ENGINE_URING, EV_ENGINE_EPOLL};
    for (size_t i = 0; i < 2; i++) {
        enum ev_engine e = engines[i];
        test_length_from_buffer(e);
        test_length_from_socket(e);
        test_length_two_pipes(e);
        test_length_truncated(e);
        test_chunked(e);
        test_bad_chunk(e);
        test_drain_length(e);
        test_drain_budget(e);
        test_abort(e);
        test_waits_for_source(e);
    }
    pump_thread_cleanup();
    return test_summary();
}
