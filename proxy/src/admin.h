/* The admin listener: GET /metrics (Prometheus text, metrics.h), GET
 * /status (JSON, status.h), GET /healthz. It runs on a thread and loop of its
 * own, reads the workers' counters and the latency table, and never touches
 * the data path. What the renderers read is declared here, with the
 * listener's own API. */
#ifndef LB_ADMIN_H
#define LB_ADMIN_H

#include <pthread.h>
#include <stdint.h>

#include "balancer.h"
#include "config.h"
#include "http.h"
#include "worker.h"

struct alog;

/* Process-wide facts for /status and /metrics, written by the main thread. */
struct proxy_status {
    int64_t started_ms;   /* wall clock */
    pthread_mutex_t lock; /* guards the reload notes */
    unsigned reloads, reloads_failed;
    int64_t reload_ms; /* the last attempt; 0: none */
    int reload_ok;
    char reload_msg[256];
};

/* What the admin thread may read (and the renderers render). */
struct admin_view {
    const struct proxy_config *cfg; /* the start-up configuration */
    struct balancer *bal;
    struct worker *workers;
    int nworkers;
    struct alog *alog; /* NULL: no access log */
    struct proxy_status *st;
};

struct admin;

/* Listens on cfg->admin and starts the thread (the table's reader
 * READER_ADMIN): 0 with *out set, or -errno with err filled. */
int admin_start(const struct admin_view *v, struct admin **out, char *err, size_t errlen);
void admin_stop(struct admin *a);

#endif
