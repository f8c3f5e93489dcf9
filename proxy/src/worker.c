/* Worker threads: each runs its own loop with its own SO_REUSEPORT listener. */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "accesslog.h"
#include "conn.h"
#include "inbuf.h"
#include "log.h"
#include "net.h"
#include "pump.h"
#include "upstream.h"

atomic_int g_draining;
atomic_int g_stop_now;
atomic_long g_connections;
atomic_long g_max_connections; /* main() sets it before any worker starts */

/* A listener out of descriptors (or kernel memory) pauses: its accepts wait
 * ACCEPT_PAUSE_MIN_MS, doubling up to ACCEPT_PAUSE_MAX_MS while they keep
 * failing, instead of failing again at once (a spin: the pending connection
 * keeps the listener ready). One log line per ACCEPT_LOG_EVERY_MS at most. */
#define ACCEPT_PAUSE_MIN_MS 10
#define ACCEPT_PAUSE_MAX_MS 1000
#define ACCEPT_LOG_EVERY_MS 10000
/* How often idle backend connections are checked for age; armed only while
 * the pool holds one, so an idle worker sleeps. */
#define POOL_SWEEP_MS 1000

static void on_accept(ev_op *op, int res);
static void on_accept_backoff(ev_timer *t);

uint64_t worker_random(struct worker *w) {
    /* xorshift64*: request ids and tie-breaks, not secrets */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ull;
}

void workers_sum(const struct worker *w, int n, struct worker_sums *out) {
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++)
        worker_counters_add(&w[i].counters, out);
}

/* A table swap waits for every worker's next quiescent point (its tick):
 * an idle worker is woken for it rather than polled. */
static void wake_loop(void *loop) {
    ev_wake(loop);
}

int worker_init(struct worker *w, int id, const struct proxy_config *cfg, struct balancer *bal) {
    memset(w, 0, sizeof(*w));
    list_init(&w->idle_lru);
    list_init(&w->clients);
    w->id = id;
    w->cfg = cfg;
    w->bal = bal;
    w->listen_fd = -1;
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || !w->rng)
        w->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(id + 1);
    w->loop = ev_loop_new(cfg->engine, w->engine_note, sizeof(w->engine_note));
    if (!w->loop) {
        log_error("cannot start the %s engine: %s", ev_engine_name(cfg->engine), w->engine_note);
        return -1;
    }
    int r = inbuf_setup(w->loop, cfg->limits.max_header_bytes, cfg->limits.max_headers);
    if (r < 0) {
        log_error("cannot set up the %s engine's buffers: %s",
                  ev_engine_name(ev_loop_engine(w->loop)), strerror(-r));
        return -1;
    }
    w->listen_fd = net_listen(&cfg->listen, 1, 4096);
    if (w->listen_fd < 0) {
        log_error("cannot listen on %s: %s", cfg->listen_text, strerror(-w->listen_fd));
        return -1;
    }
    for (int i = 0; i < ACCEPTS_IN_FLIGHT; i++)
        ev_op_init(&w->accept_op[i], on_accept, w);
    ev_timer_init(&w->accept_backoff, on_accept_backoff, w);
    balancer_set_waker(bal, id, wake_loop, w->loop);
    return 0;
}

void worker_fini(struct worker *w) {
    if (w->listen_fd >= 0) close(w->listen_fd);
    ev_loop_free(w->loop);
}

static int accepts_idle(const struct worker *w) {
    for (int i = 0; i < ACCEPTS_IN_FLIGHT; i++)
        if (ev_op_busy(&w->accept_op[i])) return 0;
    return 1;
}

/* Failures that the next accept would repeat until something is freed. */
static int accept_starved(int res) {
    return res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM;
}

/* Counts a refused accept; logs the count at most once per interval. */
static void accept_note_refusal(struct worker *w, int res) {
    uint64_t now = ev_now_ms(w->loop);
    w->accept_refusals++;
    if (w->accept_logged_ms && now - w->accept_logged_ms < ACCEPT_LOG_EVERY_MS) return;
    struct rlimit rl;
    char limit[32] = "?";
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        snprintf(limit, sizeof(limit), "%llu", (unsigned long long)rl.rlim_cur);
    if (!w->accept_logged_ms)
        log_warn("accept: %s (RLIMIT_NOFILE %s): listener paused, retrying in %u to %u ms",
                 strerror(-res), limit, ACCEPT_PAUSE_MIN_MS, ACCEPT_PAUSE_MAX_MS);
    else
        log_warn("accept: %s (RLIMIT_NOFILE %s): listener paused, %llu refusals in the last "
                 "%llu s",
                 strerror(-res), limit, (unsigned long long)w->accept_refusals,
                 (unsigned long long)((now - w->accept_logged_ms + 500) / 1000));
    w->accept_logged_ms = now ? now : 1;
    w->accept_refusals = 0;
}

/* Leaves op idle (paused) and arms the backoff timer, unless it already runs
 * for another paused accept: one wait, and one doubling, per interval. */
static void accept_pause(struct worker *w, int res) {
    accept_note_refusal(w, res);
    if (ev_timer_armed(&w->accept_backoff)) return;
    uint32_t delay = w->accept_delay_ms ? w->accept_delay_ms : ACCEPT_PAUSE_MIN_MS;
    ev_timer_start(w->loop, &w->accept_backoff, delay);
    w->accept_delay_ms = delay * 2 > ACCEPT_PAUSE_MAX_MS ? ACCEPT_PAUSE_MAX_MS : delay * 2;
}

/* Re-arms every accept not in flight (outside a drain, only paused ones are
 * idle). */
static void on_accept_backoff(ev_timer *t) {
    struct worker *w = t->ctx;
    if (w->draining || w->listen_fd < 0) return;
    for (int i = 0; i < ACCEPTS_IN_FLIGHT; i++)
        if (!ev_op_busy(&w->accept_op[i])) ev_accept(w->loop, &w->accept_op[i], w->listen_fd);
}

static void on_accept(ev_op *op, int res) {
    struct worker *w = op->ctx;
    if (res >= 0) {
        w->accept_delay_ms = 0;
        long n = atomic_fetch_add_explicit(&g_connections, 1, memory_order_relaxed);
        if (w->draining || n >= atomic_load_explicit(&g_max_connections, memory_order_relaxed)) {
            atomic_fetch_sub_explicit(&g_connections, 1, memory_order_relaxed);
            close(res);
        } else {
            client_accept(w, res);
        }
    } else if (res != -ECANCELED && res != -EAGAIN && res != -ECONNABORTED && res != -EINTR &&
               !accept_starved(res)) {
        log_warn("accept: %s", strerror(-res));
    }
    if (w->draining || w->listen_fd < 0) return; /* idle: the drain closes the listener */
    if (accept_starved(res))
        accept_pause(w, res);
    else
        ev_accept(w->loop, op, w->listen_fd);
}

static void start_drain(struct worker *w) {
    w->draining = 1;
    ev_timer_stop(w->loop, &w->accept_backoff); /* paused accepts stay idle */
    for (int i = 0; i < ACCEPTS_IN_FLIGHT; i++)
        ev_cancel(w->loop, &w->accept_op[i]);
    clients_close_idle(w);
    pool_close_all(w);
}

/* The tick arms it again while the pool holds a connection. */
static void on_sweep(ev_timer *t) {
    pool_sweep(t->ctx);
}

/* Once per loop iteration. The main thread sets g_draining and g_stop_now,
 * then wakes the loop (ev_wake): an idle worker sleeps until then. */
static void tick(ev_loop *loop, void *arg) {
    struct worker *w = arg;
    balancer_quiescent(w->bal, w->id);
    if (w->alog) alog_tick(w->alog, ev_now_ms(loop));
    if (!ev_timer_armed(&w->sweep) && !list_empty(&w->idle_lru))
        ev_timer_start(loop, &w->sweep, POOL_SWEEP_MS);
    if (atomic_load_explicit(&g_stop_now, memory_order_relaxed)) {
        ev_stop(loop);
        return;
    }
    if (!w->draining && atomic_load_explicit(&g_draining, memory_order_relaxed)) start_drain(w);
    if (!w->draining || !accepts_idle(w)) return;
    if (w->listen_fd >= 0) {
        ev_forget_fd(loop, w->listen_fd);
        close(w->listen_fd);
        w->listen_fd = -1;
    }
    if (!w->nclients) {
        ev_timer_stop(loop, &w->sweep);
        ev_stop(loop);
    }
}

void *worker_main(void *arg) {
    struct worker *w = arg;
    ev_set_tick(w->loop, tick, w);
    ev_timer_init(&w->sweep, on_sweep, w);
    alog_set_loop(w->alog, w->loop);
    for (int i = 0; i < ACCEPTS_IN_FLIGHT; i++)
        ev_accept(w->loop, &w->accept_op[i], w->listen_fd);
    ev_run(w->loop);
    balancer_reader_offline(w->bal, w->id); /* a later table swap does not wait for it */
    pool_close_all(w);
    pump_thread_cleanup();
    return NULL;
}
