#define _GNU_SOURCE
#include "balancer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ev.h"
#include "log.h"

/* How fast the EWMA forgets: a sample this old weighs 1/e. */
#define EWMA_TAU_MS 5000.0

/* ---- rows ---- */

static struct backend *row_new(const struct cluster_config *cc, int ci, size_t j, int nworkers) {
    struct backend *be = calloc(1, sizeof(*be));
    if (!be) return NULL;
    be->pools = calloc((size_t)nworkers + 1, sizeof(*be->pools));
    if (!be->pools) {
        free(be);
        return NULL;
    }
    be->addr = cc->backends[j].addr;
    snprintf(be->name, sizeof(be->name), "%s", cc->backends[j].text);
    be->cluster = cc;
    be->cluster_index = ci;
    atomic_init(&be->healthy, 1);
    atomic_init(&be->refs, 0);
    return be;
}

void backend_ref(struct backend *be) {
    atomic_fetch_add_explicit(&be->refs, 1, memory_order_relaxed);
}

void backend_unref(struct backend *be) {
    if (atomic_fetch_sub_explicit(&be->refs, 1, memory_order_acq_rel) == 1) {
        free(be->pools);
        free(be);
    }
}

/* ---- tables ---- */

static struct backend *find_row(const struct lb_table *t, const char *cluster, const char *name) {
    for (size_t i = 0; t && i < t->nclusters; i++) {
        if (strcmp(t->clusters[i].cfg->name, cluster)) continue;
        for (size_t j = 0; j < t->clusters[i].n; j++)
            if (!strcmp(t->clusters[i].rows[j]->name, name)) return t->clusters[i].rows[j];
    }
    return NULL;
}

static void table_free(struct lb_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nclusters; i++) {
        for (size_t j = 0; j < t->clusters[i].n; j++)
            backend_unref(t->clusters[i].rows[j]);
        free(t->clusters[i].rows);
    }
    free(t->clusters);
    free(t);
}

struct lb_table *lb_table_build(const struct proxy_config *cfg, const struct lb_table *reuse,
                                int nworkers) {
    struct lb_table *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*t->clusters));
    if (!t->clusters) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        struct cluster_rt *c = &t->clusters[i];
        c->cfg = cc;
        c->rows = calloc(cc->nbackends ? cc->nbackends : 1, sizeof(*c->rows));
        if (!c->rows) goto fail;
        t->nclusters = i + 1;
        for (size_t j = 0; j < cc->nbackends; j++) {
            struct backend *be = find_row(reuse, cc->name, cc->backends[j].text);
            if (be) {
                be->cluster = cc;
                be->cluster_index = (int)i;
            } else {
                be = row_new(cc, (int)i, j, nworkers);
            }
            if (!be) goto fail;
            backend_ref(be);
            c->rows[c->n++] = be;
        }
    }
    return t;
fail:
    table_free(t);
    return NULL;
}

int balancer_init(struct balancer *b, const struct proxy_config *cfg, int nworkers) {
    memset(b, 0, sizeof(*b));
    if (nworkers + 1 > LB_MAX_READERS) return -1;
    b->nreaders = nworkers + 1;
    struct lb_table *t = lb_table_build(cfg, NULL, nworkers);
    if (!t) return -1;
    atomic_store(&b->table, t);
    return 0;
}

void balancer_free(struct balancer *b) {
    table_free(atomic_load(&b->table));
    atomic_store(&b->table, NULL);
}

void balancer_quiescent(struct balancer *b, int id) {
    atomic_store_explicit(&b->seen[id], atomic_load_explicit(&b->epoch, memory_order_acquire),
                          memory_order_release);
}

static void mark_removed(const struct lb_table *old, const struct lb_table *next) {
    for (size_t i = 0; i < old->nclusters; i++)
        for (size_t j = 0; j < old->clusters[i].n; j++) {
            struct backend *be = old->clusters[i].rows[j];
            if (!find_row(next, be->cluster->name, be->name)) atomic_store(&be->removed, 1);
        }
}

void balancer_swap(struct balancer *b, struct lb_table *next) {
    struct lb_table *old = atomic_exchange_explicit(&b->table, next, memory_order_acq_rel);
    if (!old) return;
    mark_removed(old, next);
    unsigned long long e = atomic_fetch_add_explicit(&b->epoch, 1, memory_order_acq_rel) + 1;
    /* Grace period: each worker's tick runs at least every 100 ms. */
    for (int i = 0; i < b->nreaders; i++)
        while (atomic_load_explicit(&b->seen[i], memory_order_acquire) < e)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    table_free(old);
}

/* ---- choosing ---- */

struct backend *balancer_pick(struct balancer *b, int cluster, const struct backend *avoid,
                              uint64_t rnd) {
    struct lb_table *t = balancer_table(b);
    if ((size_t)cluster >= t->nclusters) return NULL;
    struct cluster_rt *c = &t->clusters[cluster];
    struct backend *be = strategy_pick(c->cfg->strategy, c->rows, c->n, avoid, &c->next, rnd);
    if (!be) return NULL;
    backend_ref(be);
    atomic_fetch_add_explicit(&be->inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&be->requests, 1, memory_order_relaxed);
    return be;
}

void balancer_done(struct backend *be, enum outcome o, uint64_t latency_us, const char *why) {
    atomic_fetch_sub_explicit(&be->inflight, 1, memory_order_relaxed);
    if (o == OUTCOME_OK) backend_sample(be, latency_us);
    if (o == OUTCOME_FAILED) {
        atomic_fetch_add_explicit(&be->failures, 1, memory_order_relaxed);
        backend_observe(be, 0, why);
    }
    backend_unref(be);
}

/* ---- health and latency ---- */

static void transition(struct backend *be, int to, int count, const char *why) {
    int from = !to;
    if (!atomic_compare_exchange_strong(&be->healthy, &from, to)) return; /* someone else did */
    log_warn("backend %s (%s): %s -> %s (%d %s%s%s)", be->name, be->cluster->name,
             to ? "unhealthy" : "healthy", to ? "healthy" : "unhealthy", count,
             to ? "successful checks" : "failures", why ? ", last: " : "", why ? why : "");
}

void backend_observe(struct backend *be, int ok, const char *why) {
    const struct health_check *hc = &be->cluster->health;
    if (ok) {
        atomic_store_explicit(&be->consec_fail, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_ok, 1, memory_order_relaxed) + 1;
        if (k >= hc->healthy_threshold && !atomic_load(&be->healthy)) transition(be, 1, k, why);
    } else {
        atomic_store_explicit(&be->consec_ok, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_fail, 1, memory_order_relaxed) + 1;
        if (k >= hc->unhealthy_threshold && atomic_load(&be->healthy)) transition(be, 0, k, why);
    }
}

static uint64_t pack(float us, uint32_t ms) {
    uint32_t bits;
    memcpy(&bits, &us, sizeof(bits));
    return (uint64_t)bits << 32 | ms;
}

static float unpack_us(uint64_t v) {
    uint32_t bits = (uint32_t)(v >> 32);
    float us;
    memcpy(&us, &bits, sizeof(us));
    return us;
}

double backend_ewma_us(const struct backend *be) {
    return unpack_us(atomic_load_explicit(&be->ewma, memory_order_relaxed));
}

/* Peak EWMA: a sample above the average replaces it at once (slowness is
 * seen on the first slow answer); below it, it pulls the average down with a
 * weight that grows with the time since the last sample. */
void backend_sample(struct backend *be, uint64_t latency_us) {
    uint32_t now = (uint32_t)ev_clock_ms();
    float x = latency_us ? (float)latency_us : 1.0f;
    uint64_t old = atomic_load_explicit(&be->ewma, memory_order_relaxed);
    for (;;) {
        float avg = unpack_us(old);
        float next = x;
        if (avg > 0 && x < avg) {
            double w = exp(-(double)(uint32_t)(now - (uint32_t)old) / EWMA_TAU_MS);
            next = (float)(avg * w + x * (1.0 - w));
        }
        if (atomic_compare_exchange_weak_explicit(&be->ewma, &old, pack(next, now),
                                                  memory_order_relaxed, memory_order_relaxed))
            return;
    }
}
