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
#include "http.h"
#include "pump.h"
#include "stats.h"

#define ACCEPTS_IN_FLIGHT 4

/* A connection to a backend, owned by one client while in use, else idle in
 * its worker's pool. */
struct upconn {
    int fd;
    struct backend *be;
    ev_op rd, wr;
    struct iobuf in;
    struct http_msg resp;
    int reused;
    uint64_t idle_since_ms;
    struct list in_slot; /* in its backend's pool slot, while idle */
    struct list in_lru;  /* in its worker's idle list, oldest first, while idle */
};

struct client;
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
    struct client *clients;             /* every open client connection */
    size_t nclients;
    int draining;
    uint64_t rng;
    struct worker_counters counters;
    struct alog_buf *alog; /* NULL: no access log */
    pthread_t thread;
    char engine_note[256];
} __attribute__((aligned(64))); /* workers side by side share no cache line */

/* Set by the main thread; workers read them in their tick. */
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

/* upstream.c: backend connections and their pools */
struct upconn *upconn_open(struct worker *w, struct backend *be);
/* A pooled connection to be that still looks alive, or NULL. */
struct upconn *pool_take(struct worker *w, struct backend *be);
void pool_put(struct worker *w, struct upconn *u);
void pool_close_all(struct worker *w);
/* Closes idle connections past their age or whose backend was removed. */
void pool_sweep(struct worker *w);
/* Closes and frees; its ops must be idle. */
void upconn_free(struct worker *w, struct upconn *u);

/* conn.c: client connections */
void client_accept(struct worker *w, int fd);
/* Closes the connections that wait for a request (drain). */
void clients_close_idle(struct worker *w);

#endif
