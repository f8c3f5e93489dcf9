#define _GNU_SOURCE
#include "balancer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ev.h"
#include "log.h"
#include "route.h"

/* How fast the EWMA forgets: a sample this old weighs 1/e. */
#define EWMA_TAU_MS 5000.0

/* ---- rows ---- */

static struct backend *row_new(struct lb_cluster *lc, const struct backend_addr *ba, int nworkers) {
    struct backend *be = calloc(1, sizeof(*be));
    if (!be) return NULL;
    be->pools = calloc((size_t)nworkers + 1, sizeof(*be->pools));
    if (!be->pools) {
        free(be);
        return NULL;
    }
    be->addr = ba->addr;
    snprintf(be->name, sizeof(be->name), "%s", ba->text);
    be->cluster = lc;
    atomic_init(&be->healthy, 1);
    atomic_init(&be->refs, 0);
    pthread_mutex_init(&be->note_lock, NULL);
    return be;
}

void backend_ref(struct backend *be) {
    atomic_fetch_add_explicit(&be->refs, 1, memory_order_relaxed);
}

void backend_unref(struct backend *be) {
    if (atomic_fetch_sub_explicit(&be->refs, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_destroy(&be->note_lock);
        free(be->pools);
        free(be);
    }
}

/* ---- clusters ---- */

static struct lb_cluster *cluster_new(const char *name, int nworkers) {
    struct lb_cluster *lc = calloc(1, sizeof(*lc));
    if (!lc) return NULL;
    lc->per_worker = aligned_alloc(64, sizeof(*lc->per_worker) * (size_t)nworkers);
    if (!lc->per_worker) {
        free(lc);
        return NULL;
    }
    memset(lc->per_worker, 0, sizeof(*lc->per_worker) * (size_t)nworkers);
    snprintf(lc->name, sizeof(lc->name), "%s", name);
    return lc;
}

/* The registry's cluster of that name, created on first use. Writers only;
 * readers walk the list without a lock (it only grows, at its head). */
static struct lb_cluster *cluster_get(struct balancer *b, const char *name) {
    struct lb_cluster *head = atomic_load_explicit(&b->clusters, memory_order_acquire);
    for (struct lb_cluster *lc = head; lc; lc = lc->next)
        if (!strcmp(lc->name, name)) return lc;
    struct lb_cluster *lc = cluster_new(name, b->nworkers);
    if (!lc) return NULL;
    lc->next = head;
    atomic_store_explicit(&b->clusters, lc, memory_order_release);
    return lc;
}

static void cluster_set(struct lb_cluster *lc, const struct cluster_config *cc) {
    atomic_store(&lc->healthy_threshold, cc->health.healthy_threshold);
    atomic_store(&lc->unhealthy_threshold, cc->health.unhealthy_threshold);
}

/* ---- tables ---- */

static struct backend *find_row(const struct lb_table *t, const char *cluster, const char *name) {
    for (size_t i = 0; t && i < t->nclusters; i++) {
        if (strcmp(t->clusters[i].id->name, cluster)) continue;
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

struct lb_table *lb_table_build(struct balancer *b, const struct proxy_config *cfg,
                                const struct lb_table *reuse) {
    struct lb_table *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->cfg = cfg;
    t->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*t->clusters));
    if (!t->clusters) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        struct cluster_rt *c = &t->clusters[i];
        c->cfg = cc;
        c->id = cluster_get(b, cc->name);
        c->rows = calloc(cc->nbackends ? cc->nbackends : 1, sizeof(*c->rows));
        if (!c->id || !c->rows) goto fail;
        cluster_set(c->id, cc);
        t->nclusters = i + 1;
        for (size_t j = 0; j < cc->nbackends; j++) {
            struct backend *be = find_row(reuse, cc->name, cc->backends[j].text);
            if (!be) be = row_new(c->id, &cc->backends[j], b->nworkers);
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
    if (nworkers + 2 > LB_MAX_READERS) return -1;
    b->nworkers = nworkers;
    b->nreaders = nworkers + 2;
    pthread_mutex_init(&b->write_lock, NULL);
    b->unrouted = cluster_get(b, "none");
    struct lb_table *t = b->unrouted ? lb_table_build(b, cfg, NULL) : NULL;
    if (!t) {
        balancer_free(b);
        return -1;
    }
    atomic_store(&b->table, t);
    return 0;
}

void balancer_free(struct balancer *b) {
    table_free(atomic_load(&b->table));
    atomic_store(&b->table, NULL);
    struct lb_cluster *lc = atomic_load(&b->clusters);
    while (lc) {
        struct lb_cluster *next = lc->next;
        free(lc->per_worker);
        free(lc);
        lc = next;
    }
    atomic_store(&b->clusters, NULL);
    pthread_mutex_destroy(&b->write_lock);
}

void balancer_reader_offline(struct balancer *b, int id) {
    atomic_store(&b->seen[id], ~0ull);
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

struct lb_cluster *balancer_route(struct balancer *b, const char *target, size_t len,
                                  const struct cluster_config **cc) {
    struct lb_table *t = balancer_table(b);
    int i = route_match(t->cfg, target, len);
    if (i < 0) return NULL;
    if (cc) *cc = t->clusters[i].cfg;
    return t->clusters[i].id;
}

static struct cluster_rt *find_cluster(struct lb_table *t, const struct lb_cluster *id) {
    for (size_t i = 0; i < t->nclusters; i++)
        if (t->clusters[i].id == id) return &t->clusters[i];
    return NULL;
}

struct backend *balancer_pick(struct balancer *b, const struct lb_cluster *cluster,
                              const struct backend *avoid, uint64_t rnd) {
    struct cluster_rt *c = find_cluster(balancer_table(b), cluster);
    if (!c) return NULL; /* removed by a reload since the request was routed */
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

static void note(struct backend *be, int64_t *at, char *dst, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void note(struct backend *be, int64_t *at, char *dst, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&be->note_lock);
    *at = ev_wall_us() / 1000;
    vsnprintf(dst, sizeof(be->changed_why), fmt, ap);
    pthread_mutex_unlock(&be->note_lock);
    va_end(ap);
}

void backend_notes(struct backend *be, int64_t *changed_ms, char *changed_why, int64_t *failed_ms,
                   char *failed_why, size_t len) {
    pthread_mutex_lock(&be->note_lock);
    *changed_ms = be->changed_ms;
    *failed_ms = be->failed_ms;
    snprintf(changed_why, len, "%s", be->changed_why);
    snprintf(failed_why, len, "%s", be->failed_why);
    pthread_mutex_unlock(&be->note_lock);
}

static void transition(struct backend *be, int to, int count, const char *why) {
    int from = !to;
    if (!atomic_compare_exchange_strong(&be->healthy, &from, to)) return; /* someone else did */
    note(be, &be->changed_ms, be->changed_why, "%s after %d %s%s%s", to ? "healthy" : "unhealthy",
         count, to ? "successful checks" : "failures", why ? ", last: " : "", why ? why : "");
    log_warn("backend %s (%s): %s -> %s (%d %s%s%s)", be->name, be->cluster->name,
             to ? "unhealthy" : "healthy", to ? "healthy" : "unhealthy", count,
             to ? "successful checks" : "failures", why ? ", last: " : "", why ? why : "");
}

void backend_observe(struct backend *be, int ok, const char *why) {
    const struct lb_cluster *lc = be->cluster;
    if (ok) {
        atomic_store_explicit(&be->consec_fail, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_ok, 1, memory_order_relaxed) + 1;
        if (k >= atomic_load_explicit(&lc->healthy_threshold, memory_order_relaxed) &&
            !atomic_load(&be->healthy))
            transition(be, 1, k, why);
    } else {
        if (why) note(be, &be->failed_ms, be->failed_why, "%s", why);
        atomic_store_explicit(&be->consec_ok, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_fail, 1, memory_order_relaxed) + 1;
        if (k >= atomic_load_explicit(&lc->unhealthy_threshold, memory_order_relaxed) &&
            atomic_load(&be->healthy))
            transition(be, 0, k, why);
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
