/* A worker thread: its loop, its listener, its clients and its pools of idle
 * backend connections. Nothing here is shared with other workers. */
#ifndef LB_WORKER_H
#define LB_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "balancer.h"
#include "config.h"
#include "ev.h"
#include "list.h"
#include "stats.h"

#define ACCEPTS_IN_FLIGHT 4

struct alog_buf;

struct worker {
    int id;
    ev_loop *loop;
    const struct proxy_config *cfg;
    struct balancer *bal;
    int listen_fd;
    ev_op accept_op[ACCEPTS_IN_FLIGHT]; /* idle while the listener is paused */
    ev_timer accept_backoff;            /* armed while the listener is paused */
    uint32_t accept_delay_ms;           /* the next pause; 0: accepts succeed */
    uint64_t accept_refusals;           /* failed accepts not yet logged */
    uint64_t accept_logged_ms;          /* when the last refusal line was logged; 0: never */
    struct list idle_lru;               /* every idle backend connection, oldest first */
    ev_timer sweep;                     /* closes idle connections too old to trust */
    struct list clients;                /* every open client connection (conn.c) */
    size_t nclients;
    int draining;
    uint64_t rng;
    struct worker_counters counters;
    struct alog_buf *alog; /* NULL: no access log */
    pthread_t thread;
    char engine_note[256];
} __attribute__((aligned(64))); /* workers side by side share no cache line */

/* Set by the main thread, which then wakes each worker's loop (ev_wake);
 * workers read them in their tick. */
extern atomic_int g_draining;
extern atomic_int g_stop_now;
extern atomic_long g_connections;
/* limits.max_connections capped by RLIMIT_NOFILE; set before the workers start. */
extern atomic_long g_max_connections;

int worker_init(struct worker *w, int id, const struct proxy_config *cfg, struct balancer *bal);
void *worker_main(void *arg);
void worker_fini(struct worker *w);
uint64_t worker_random(struct worker *w);
/* The counters of n workers added up (any thread). */
void workers_sum(const struct worker *w, int n, struct worker_sums *out);

#endif
