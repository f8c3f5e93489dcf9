/* The pools of idle backend connections, with real sockets to a listener on
 * 127.0.0.1 standing in for a backend: a live connection is reused, one the
 * backend closed (or wrote to) is not, nor one past its age; a backend's
 * slot holds at most its cap; the sweep closes the old and those of removed
 * backends; a drain or a removed backend closes what is put back. "Closed"
 * is seen where a backend sees it: at its end of the socket. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "ev.h"
#include "log.h"
#include "testing.h"
#include "upstream.h"
#include "worker.h"

#define NBACKENDS 2

struct fixture {
    struct proxy_config cfg;
    struct balancer *b;
    struct worker w;
    struct backend *be[NBACKENDS];
    int listen_fd[NBACKENDS];
};

static int listen_any(struct sockaddr_in *sa) {
    socklen_t len = sizeof(*sa);
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)sa, len) < 0 || listen(fd, 512) < 0 ||
        getsockname(fd, (struct sockaddr *)sa, &len) < 0)
        abort();
    return fd;
}

static void keep_backends(const struct table_cluster *c, void *arg) {
    struct fixture *f = arg;
    if (c->n != NBACKENDS) abort();
    for (size_t i = 0; i < NBACKENDS; i++)
        f->be[i] = c->backends[i];
}

/* One cluster of NBACKENDS listening backends, one worker (id 0) on an
 * epoll loop; no probe, no admin thread. */
static void setup(struct fixture *f) {
    memset(f, 0, sizeof(*f));
    f->cfg.limits.max_headers = 100;
    f->cfg.nclusters = 1;
    f->cfg.clusters = calloc(1, sizeof(*f->cfg.clusters));
    struct cluster_config *cc = &f->cfg.clusters[0];
    snprintf(cc->name, sizeof(cc->name), "c");
    cc->health = (struct health_check){.healthy_threshold = 2, .unhealthy_threshold = 3};
    cc->backends = calloc(NBACKENDS, sizeof(*cc->backends));
    for (size_t i = 0; i < NBACKENDS; i++) {
        struct sockaddr_in sa;
        f->listen_fd[i] = listen_any(&sa);
        struct backend_addr *ba = &cc->backends[cc->nbackends++];
        const char *err;
        snprintf(ba->text, sizeof(ba->text), "127.0.0.1:%u", ntohs(sa.sin_port));
        if (net_parse_addr(ba->text, NULL, &ba->addr, &err) < 0) abort();
    }
    if (!(f->b = balancer_new(&f->cfg, 1))) abort();
    balancer_ready(f->b);
    balancer_each_cluster(f->b, keep_backends, f); /* worker 0, online; nothing swaps */
    f->w.cfg = &f->cfg;
    f->w.bal = f->b;
    f->w.loop = ev_loop_new(EV_ENGINE_EPOLL, NULL, 0);
    if (!f->w.loop) abort();
    list_init(&f->w.idle_lru);
}

static void teardown(struct fixture *f) {
    pool_close_all(&f->w);
    for (size_t i = 0; i < NBACKENDS; i++) {
        CHECK(f->be[i]->slots[0].n == 0 && list_empty(&f->be[i]->slots[0].idle));
        close(f->listen_fd[i]);
    }
    CHECK(list_empty(&f->w.idle_lru));
    ev_loop_free(f->w.loop);
    balancer_free(f->b);
    free(f->cfg.clusters[0].backends);
    free(f->cfg.clusters);
}

/* A connection to backend i, connected; *peer is the backend's end. */
static struct upconn *open_to(struct fixture *f, size_t i, int *peer) {
    struct backend *be = f->be[i];
    struct upconn *u = upconn_open(&f->w, be);
    if (!u) abort();
    int r = connect(u->fd, (const struct sockaddr *)&be->addr.ss, be->addr.len);
    if (r < 0 && errno != EINPROGRESS) abort();
    poll(&(struct pollfd){.fd = u->fd, .events = POLLOUT}, 1, 1000);
    *peer = accept(f->listen_fd[i], NULL, NULL);
    if (*peer < 0) abort();
    return u;
}

/* Whether the backend's end of a connection sees it closed: EOF, or a reset
 * where bytes it sent were left unread. */
static int closed_at_backend(int peer) {
    char c;
    if (poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 1000) <= 0) return 0;
    ssize_t r = recv(peer, &c, 1, MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

static int still_open_at_backend(int peer) {
    return poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 0) == 0;
}

static size_t idle_count(struct fixture *f) {
    size_t n = 0;
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &f->w.idle_lru) n++;
    return n;
}

/* Put back, taken again: the same connection, marked reused, its buffer
 * and response parser reset; a second take finds nothing. */
static void test_reuse(void) {
    struct fixture f;
    setup(&f);
    int peer;
    struct upconn *u = open_to(&f, 0, &peer);
    u->in.len = 7;
    u->in.pos = 3;
    pool_put(&f.w, u);
    CHECK(f.be[0]->slots[0].n == 1 && idle_count(&f) == 1);
    CHECK(pool_take(&f.w, f.be[1]) == NULL); /* another backend's slot */
    struct upconn *got = pool_take(&f.w, f.be[0]);
    CHECK(got == u && got->reused && got->in.pos == 0 && got->in.len == 0);
    CHECK(f.be[0]->slots[0].n == 0 && idle_count(&f) == 0);
    CHECK(pool_take(&f.w, f.be[0]) == NULL);
    CHECK(still_open_at_backend(peer));
    upconn_free(&f.w, u);
    CHECK(closed_at_backend(peer));
    close(peer);
    teardown(&f);
}

/* The backend closed it, or sent bytes nobody asked for: not reused, and
 * closed; the next (live) one in the slot is taken instead. */
static void test_dead_not_reused(void) {
    struct fixture f;
    setup(&f);
    int live_peer, closed_peer, chatty_peer;
    struct upconn *live = open_to(&f, 0, &live_peer);
    struct upconn *closed = open_to(&f, 0, &closed_peer);
    struct upconn *chatty = open_to(&f, 0, &chatty_peer);
    pool_put(&f.w, live);
    pool_put(&f.w, closed);
    pool_put(&f.w, chatty); /* newest first: chatty, closed, live */
    close(closed_peer);
    CHECK(send(chatty_peer, "x", 1, 0) == 1);
    poll(&(struct pollfd){.fd = closed->fd, .events = POLLIN}, 1, 1000);
    poll(&(struct pollfd){.fd = chatty->fd, .events = POLLIN}, 1, 1000);
    CHECK(pool_take(&f.w, f.be[0]) == live);
    CHECK(f.be[0]->slots[0].n == 0 && idle_count(&f) == 0);
    CHECK(closed_at_backend(chatty_peer));
    upconn_free(&f.w, live);
    close(live_peer);
    close(chatty_peer);
    teardown(&f);
}

/* Idle for longer than the age limit: neither taken nor kept by the sweep;
 * a younger one is. */
static void test_age(void) {
    struct fixture f;
    setup(&f);
    int old_peer, young_peer, swept_peer;
    struct upconn *old = open_to(&f, 0, &old_peer);
    pool_put(&f.w, old);
    old->idle_since_ms = ev_now_ms(f.w.loop) - POOL_MAX_AGE_MS;
    CHECK(pool_take(&f.w, f.be[0]) == NULL);
    CHECK(closed_at_backend(old_peer));
    struct upconn *swept = open_to(&f, 0, &swept_peer);
    struct upconn *young = open_to(&f, 1, &young_peer);
    pool_put(&f.w, swept);
    pool_put(&f.w, young);
    swept->idle_since_ms = ev_now_ms(f.w.loop) - POOL_MAX_AGE_MS;
    young->idle_since_ms = ev_now_ms(f.w.loop) - POOL_MAX_AGE_MS + 1000;
    pool_sweep(&f.w);
    CHECK(closed_at_backend(swept_peer) && still_open_at_backend(young_peer));
    CHECK(f.be[0]->slots[0].n == 0 && f.be[1]->slots[0].n == 1 && idle_count(&f) == 1);
    CHECK(pool_take(&f.w, f.be[1]) == young);
    upconn_free(&f.w, young);
    close(old_peer);
    close(young_peer);
    close(swept_peer);
    teardown(&f);
}

/* A slot keeps POOL_MAX_IDLE connections; one more is closed at once. */
static void test_cap(void) {
    struct fixture f;
    setup(&f);
    int peers[POOL_MAX_IDLE + 1];
    struct upconn *u[POOL_MAX_IDLE + 1];
    for (size_t i = 0; i <= POOL_MAX_IDLE; i++)
        u[i] = open_to(&f, 0, &peers[i]);
    for (size_t i = 0; i <= POOL_MAX_IDLE; i++)
        pool_put(&f.w, u[i]);
    CHECK(f.be[0]->slots[0].n == POOL_MAX_IDLE && idle_count(&f) == POOL_MAX_IDLE);
    CHECK(closed_at_backend(peers[POOL_MAX_IDLE]));
    CHECK(still_open_at_backend(peers[0]) && still_open_at_backend(peers[POOL_MAX_IDLE - 1]));
    /* the other backend's slot is its own */
    int other_peer;
    pool_put(&f.w, open_to(&f, 1, &other_peer));
    CHECK(f.be[1]->slots[0].n == 1);
    pool_close_all(&f.w);
    CHECK(closed_at_backend(peers[0]) && closed_at_backend(other_peer));
    for (size_t i = 0; i <= POOL_MAX_IDLE; i++)
        close(peers[i]);
    close(other_peer);
    teardown(&f);
}

/* A removed backend's idle connections go at the next sweep, and one put
 * back for it is closed; so is every one put back during a drain. */
static void test_removed_and_drain(void) {
    struct fixture f;
    setup(&f);
    int idle_peer, late_peer, kept_peer, drain_peer;
    struct upconn *idle = open_to(&f, 0, &idle_peer);
    struct upconn *kept = open_to(&f, 1, &kept_peer);
    struct upconn *late = open_to(&f, 0, &late_peer);
    pool_put(&f.w, idle);
    pool_put(&f.w, kept);
    atomic_store(&f.be[0]->removed, 1);
    pool_sweep(&f.w);
    CHECK(closed_at_backend(idle_peer) && still_open_at_backend(kept_peer));
    CHECK(f.be[0]->slots[0].n == 0 && f.be[1]->slots[0].n == 1);
    pool_put(&f.w, late);
    CHECK(closed_at_backend(late_peer) && f.be[0]->slots[0].n == 0);
    f.w.draining = 1;
    pool_put(&f.w, open_to(&f, 1, &drain_peer));
    CHECK(closed_at_backend(drain_peer) && f.be[1]->slots[0].n == 1);
    atomic_store(&f.be[0]->removed, 0);
    close(idle_peer);
    close(late_peer);
    close(kept_peer);
    close(drain_peer);
    teardown(&f);
}

int main(void) {
    log_init("test_upstream", LOG_ERROR);
    test_reuse();
    test_dead_not_reused();
    test_age();
    test_cap();
    test_removed_and_drain();
    return test_summary();
}
