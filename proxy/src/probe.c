#define _GNU_SOURCE
#include "probe.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "net.h"

/* A probe's latency enters the EWMA only when no answer has for this long:
 * live answers say more about a busy backend than one check a second (a
 * check on a fresh connection, from a thread of its own, reads slower). */
#define PROBE_SAMPLE_IDLE_MS 1000

struct probe {
    struct prober *pr;
    struct backend *be;     /* a reference is held */
    struct health_check hc; /* a copy: the table it came from may go before the probe */
    int fd;
    int running; /* a check in progress */
    ev_op rd, wr;
    ev_timer timer; /* next check, or the running check's deadline */
    char req[384];
    size_t req_len, sent;
    char buf[64];
    size_t got;
    uint64_t t0_us;    /* the check started */
    uint64_t t_req_us; /* connected: the request goes out */
};

struct prober {
    ev_loop *loop;
    struct balancer *b;
    int reader_id;
    const struct proxy_config *cfg;
    uint64_t generation; /* of the table the probes were made for; 0: none yet */
    struct probe *probes;
    size_t n;
    int rebuilding;
    ev_timer balancer_tick; /* armed while balancer_tick() has work ahead */
    atomic_int woken;       /* the balancer has work for it: an ejection or a table */
    atomic_int stop;
    pthread_t thread;
};

static void start_check(struct probe *p);

static void schedule(struct probe *p, uint64_t after_ms) {
    ev_timer_start(p->pr->loop, &p->timer, after_ms);
}

/* Ends a check: its ops must be idle (or become so) before the socket goes. */
static void end_check(struct probe *p, int ok, const char *why) {
    struct prober *pr = p->pr;
    ev_cancel(pr->loop, &p->rd);
    ev_cancel(pr->loop, &p->wr);
    if (p->running == 1) {
        /* From the request to its status line, like a live request on a pooled
         * connection: connect time would make idle backends look slower. */
        uint64_t us = ev_clock_us() - p->t_req_us;
        if (ok) {
            atomic_store_explicit(&p->be->probe_us, (unsigned)(us ? us : 1), memory_order_relaxed);
            backend_sample_idle(p->be, us, PROBE_SAMPLE_IDLE_MS);
        }
        backend_observe(p->be, ok, why);
        p->running = 2; /* finished, waiting for its ops */
    }
    if (ev_op_busy(&p->rd) || ev_op_busy(&p->wr)) return;
    ev_forget_fd(pr->loop, p->fd);
    close(p->fd);
    p->fd = -1;
    p->running = 0;
    if (pr->rebuilding) return;
    uint64_t spent_ms = (ev_clock_us() - p->t0_us) / 1000;
    uint64_t interval = (uint64_t)p->hc.interval_ms;
    schedule(p, spent_ms < interval ? interval - spent_ms : 0);
}

static void fail_errno(struct probe *p, const char *what, int res) {
    char why[96];
    snprintf(why, sizeof(why), "%s: %s", what, strerror(-res));
    end_check(p, 0, why);
}

static void on_recv(ev_op *op, int res) {
    struct probe *p = op->ctx;
    if (p->running != 1) {
        end_check(p, 0, NULL);
        return;
    }
    if (res <= 0) {
        if (res == 0)
            end_check(p, 0, "closed before a status line");
        else
            fail_errno(p, "recv", res);
        return;
    }
    p->got += (size_t)res;
    if (p->got < 12 && p->got < sizeof(p->buf)) {
        ev_recv(p->pr->loop, &p->rd, p->fd, p->buf + p->got, sizeof(p->buf) - p->got);
        return;
    }
    int status = 0;
    if (!memcmp(p->buf, "HTTP/1.", 7) && p->buf[8] == ' ') status = atoi(p->buf + 9);
    if (status < 100 || status > 599) {
        end_check(p, 0, "not an HTTP response");
        return;
    }
    char why[48];
    snprintf(why, sizeof(why), "status %d", status);
    end_check(p, status >= p->hc.expect_lo && status <= p->hc.expect_hi, why);
}

static void on_sent(ev_op *op, int res) {
    struct probe *p = op->ctx;
    if (p->running != 1) {
        end_check(p, 0, NULL);
        return;
    }
    if (res <= 0) {
        fail_errno(p, "send", res ? res : -EPIPE);
        return;
    }
    p->sent += (size_t)res;
    if (p->sent < p->req_len) {
        ev_send(p->pr->loop, &p->wr, p->fd, p->req + p->sent, p->req_len - p->sent);
        return;
    }
    p->rd.cb = on_recv;
    ev_recv(p->pr->loop, &p->rd, p->fd, p->buf, sizeof(p->buf));
}

static void on_connect(ev_op *op, int res) {
    struct probe *p = op->ctx;
    if (p->running != 1) {
        end_check(p, 0, NULL);
        return;
    }
    if (res < 0) {
        fail_errno(p, "connect", res);
        return;
    }
    p->wr.cb = on_sent;
    p->t_req_us = ev_clock_us();
    ev_send(p->pr->loop, &p->wr, p->fd, p->req, p->req_len);
}

static void on_timer(ev_timer *t) {
    struct probe *p = t->ctx;
    if (p->running == 1) {
        char why[48];
        snprintf(why, sizeof(why), "timeout after %d ms", p->hc.timeout_ms);
        end_check(p, 0, why);
    } else if (!p->running) {
        start_check(p);
    }
}

static void start_check(struct probe *p) {
    struct prober *pr = p->pr;
    p->t0_us = ev_clock_us();
    p->fd = net_socket_for(&p->be->addr);
    if (p->fd < 0) {
        log_warn("health check of %s: socket: %s", p->be->name, strerror(-p->fd));
        schedule(p, (uint64_t)p->hc.interval_ms);
        return;
    }
    p->running = 1;
    p->sent = p->got = 0;
    schedule(p, (uint64_t)p->hc.timeout_ms);
    p->wr.cb = on_connect;
    ev_connect(pr->loop, &p->wr, p->fd, (const struct sockaddr *)&p->be->addr.ss, p->be->addr.len);
}

static void free_probes(struct prober *pr) {
    for (size_t i = 0; i < pr->n; i++) {
        ev_timer_stop(pr->loop, &pr->probes[i].timer);
        backend_unref(pr->probes[i].be);
    }
    free(pr->probes);
    pr->probes = NULL;
    pr->n = 0;
}

static void probe_init(struct prober *pr, struct probe *p, struct backend *be,
                       const struct health_check *hc) {
    p->pr = pr;
    p->be = be;
    backend_ref(be);
    p->hc = *hc;
    p->fd = -1;
    ev_op_init(&p->rd, on_recv, p);
    ev_op_init(&p->wr, on_connect, p);
    ev_timer_init(&p->timer, on_timer, p);
    p->req_len = (size_t)snprintf(p->req, sizeof(p->req),
                                  "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: lb-probe\r\n"
                                  "Connection: close\r\n\r\n",
                                  hc->path, be->name);
}

static void count_backends(const struct table_cluster *c, void *arg) {
    *(size_t *)arg += c->n;
}

/* One probe per backend of c; its first checks are spread evenly over its
 * interval so they never all go at the same instant. */
static void add_probes(const struct table_cluster *c, void *arg) {
    struct prober *pr = arg;
    for (size_t j = 0; j < c->n; j++) {
        struct probe *p = &pr->probes[pr->n++];
        probe_init(pr, p, c->backends[j], &c->cfg->health);
        schedule(p, atomic_load(&p->be->first_pass) ? 0 : (uint64_t)p->hc.interval_ms * j / c->n);
    }
}

/* Probes for the current table's backends. Online. */
static int build_probes(struct prober *pr) {
    size_t n = 0;
    uint64_t generation = balancer_generation(pr->b);
    balancer_each_cluster(pr->b, count_backends, &n);
    pr->probes = calloc(n ? n : 1, sizeof(*pr->probes));
    if (!pr->probes) return -ENOMEM;
    balancer_each_cluster(pr->b, add_probes, pr);
    pr->generation = generation;
    return 0;
}

/* A new membership: the running checks finish (cancelled), then new probes.
 * Online. */
static void follow_table(struct prober *pr) {
    if (balancer_generation(pr->b) == pr->generation && !pr->rebuilding) return;
    if (!pr->rebuilding) {
        pr->rebuilding = 1;
        for (size_t i = 0; i < pr->n; i++) {
            struct probe *p = &pr->probes[i];
            ev_timer_stop(pr->loop, &p->timer);
            if (p->running) {
                p->running = 2; /* abandoned, not failed: nothing to record */
                end_check(p, 0, NULL);
            }
        }
    }
    for (size_t i = 0; i < pr->n; i++)
        if (pr->probes[i].running) return;
    free_probes(pr);
    pr->rebuilding = 0;
    if (build_probes(pr) < 0) log_error("health checks: out of memory");
}

/* Readmissions and decay now, and the timer for the next time they are
 * due, if any: an idle prober has only its checks' timers. Online. */
static void balancer_work(struct prober *pr) {
    int64_t next = balancer_tick(pr->b);
    ev_timer_stop(pr->loop, &pr->balancer_tick);
    if (next >= 0) ev_timer_start(pr->loop, &pr->balancer_tick, (uint64_t)next);
}

static void tick(ev_loop *loop, void *arg) {
    struct prober *pr = arg;
    if (atomic_load(&pr->stop)) {
        ev_stop(loop);
        return;
    }
    /* online only here: an idle prober never holds up a table swap */
    balancer_reader_online(pr->b, pr->reader_id);
    follow_table(pr);
    if (atomic_exchange(&pr->woken, 0)) balancer_work(pr);
    balancer_reader_offline(pr->b, pr->reader_id);
}

static void on_balancer_tick(ev_timer *t) {
    struct prober *pr = t->ctx;
    balancer_reader_online(pr->b, pr->reader_id);
    balancer_work(pr);
    balancer_reader_offline(pr->b, pr->reader_id);
}

/* The balancer's tick waker (any thread): the next iteration's tick does
 * the work. */
static void prober_wake(void *arg) {
    struct prober *pr = arg;
    atomic_store(&pr->woken, 1);
    ev_wake(pr->loop);
}

static void *prober_main(void *arg) {
    struct prober *pr = arg;
    ev_run(pr->loop);
    for (size_t i = 0; i < pr->n; i++) {
        struct probe *p = &pr->probes[i];
        if (p->fd >= 0) {
            ev_forget_fd(pr->loop, p->fd);
            close(p->fd);
        }
    }
    free_probes(pr);
    return NULL;
}

int prober_start(struct balancer *b, const struct proxy_config *cfg, struct prober **out, char *err,
                 size_t errlen) {
    struct prober *pr = calloc(1, sizeof(*pr));
    *out = NULL;
    if (!pr) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char why[256] = "";
    pr->b = b;
    pr->cfg = cfg;
    pr->reader_id = balancer_reader_id(b, READER_PROBE);
    errno = 0;
    if (!(pr->loop = ev_loop_new(cfg->engine, why, sizeof(why)))) {
        int e = errno ? errno : ENOMEM;
        snprintf(err, errlen, "cannot create its event loop: %s", why[0] ? why : strerror(e));
        free(pr);
        return -e;
    }
    ev_set_tick(pr->loop, tick, pr); /* the first tick makes the probes */
    ev_timer_init(&pr->balancer_tick, on_balancer_tick, pr);
    atomic_init(&pr->woken, 1);
    balancer_set_tick_waker(b, prober_wake, pr);
    int rc = pthread_create(&pr->thread, NULL, prober_main, pr);
    if (rc) {
        snprintf(err, errlen, "cannot start its thread: %s", strerror(rc));
        balancer_set_tick_waker(b, NULL, NULL);
        ev_loop_free(pr->loop);
        free(pr);
        return -rc;
    }
    *out = pr;
    return 0;
}

void prober_stop(struct prober *pr) {
    if (!pr) return;
    balancer_set_tick_waker(pr->b, NULL, NULL);
    atomic_store(&pr->stop, 1);
    ev_wake(pr->loop);
    pthread_join(pr->thread, NULL);
    ev_loop_free(pr->loop);
    free(pr);
}
