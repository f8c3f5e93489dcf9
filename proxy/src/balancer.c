#define _GNU_SOURCE
#include "balancer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ev.h"
#include "log.h"
#include "route.h"

/* How fast the EWMA and the failure share forget: a sample this old weighs 1/e. */
#define EWMA_TAU_MS 5000.0
/* The failure share moves by 1/this of the way to each new answer. */
#define ERROR_WINDOW 32.0
/* Envoy's max_ejection_time default: an ejection never lasts longer (unless
 * base_ejection_ms alone is longer). */
#define MAX_EJECTION_MS 300000
/* A backend starting its slow start gets this share of its weight at once. */
#define SLOW_START_FLOOR 0.01

/* A writer waiting for its readers sleeps on the condvar at most this long
 * before it checks them again: they signal it as they pass, and the bound
 * keeps a wait that no signal ends short (and lets a slow one be logged). */
#define GRACE_RECHECK_MS 100
/* A grace period that lasts this long is logged (a reader that never passes
 * a quiescent point holds up every writer). */
#define GRACE_SLOW_MS 5000
/* A reader's `seen` while offline: no grace period waits for it. */
#define READER_OFFLINE UINT64_MAX

static void note(struct backend *be, int64_t *at, char *dst, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct lb_table {
    const struct proxy_config *cfg; /* the configuration it was built from */
    struct table_cluster *clusters; /* in cfg's order */
    size_t nclusters;
    uint64_t generation;
};

/* One reader's state, on a cache line of its own: only that reader writes
 * `seen`; the waker is set and used under the write lock. */
struct reader {
    atomic_ullong seen; /* the epoch at its last quiescent point, or READER_OFFLINE */
    void (*wake)(void *arg);
    void *wake_arg;
} __attribute__((aligned(64)));

/* The backends found for one cluster (by its name) one way: its names
 * resolved, or discovery's instances. */
struct found_set {
    char cluster[64];
    enum found_by by;
    struct backend_addr *addrs;
    size_t n;
};

struct balancer {
    _Atomic(struct lb_table *) table;
    int nworkers;
    /* what the table is built from; writers change them under write_lock */
    pthread_mutex_t write_lock; /* one table writer at a time */
    const struct proxy_config *cfg;
    struct found_set *found;
    size_t nfound;
    uint64_t generations; /* tables built */
    int started;          /* the readers may run: backends added from now on ramp up (slow start) */
    _Atomic(struct cluster *) clusters; /* every cluster ever built, newest first */
    struct cluster *unrouted;           /* "none": requests no route matched */
    /* the grace period (quiescent-state-based, as liburcu's QSBR flavour): a
     * swap bumps the epoch and waits until every online reader's seen
     * reaches it; readers signal `passed` when they move theirs */
    atomic_ullong epoch;
    pthread_mutex_t grace_lock;
    pthread_cond_t passed; /* on CLOCK_MONOTONIC */
    int nreaders;          /* the workers, then READER_OTHERS */
    struct reader *readers;
    /* balancer_set_tick_waker(): arg stored before fn, read after it */
    _Atomic(void (*)(void *)) tick_wake;
    void *_Atomic tick_wake_arg;
};

/* ---- backends ---- */

static struct backend *backend_new(struct cluster *lc, const struct backend_addr *ba, int nworkers,
                                   int healthy, int ramp) {
    struct backend *be = calloc(1, sizeof(*be));
    if (!be) return NULL;
    size_t bytes = sizeof(*be->slots) * (size_t)nworkers;
    be->slots = aligned_alloc(64, bytes ? bytes : sizeof(*be->slots));
    if (!be->slots) {
        free(be);
        return NULL;
    }
    memset(be->slots, 0, bytes);
    for (int i = 0; i < nworkers; i++)
        list_init(&be->slots[i].idle);
    be->addr = ba->addr;
    snprintf(be->name, sizeof(be->name), "%s", ba->text);
    snprintf(be->origin, sizeof(be->origin), "%s", ba->origin);
    be->cluster = lc;
    atomic_init(&be->healthy, healthy);
    atomic_init(&be->refs, 0);
    atomic_init(&be->weight, 1);
    /* a healthy newcomer ramps from now; an unhealthy one from its first pass */
    atomic_init(&be->joined_ms, ramp && healthy ? ev_clock_ms() : 0);
    pthread_mutex_init(&be->note_lock, NULL);
    return be;
}

void backend_ref(struct backend *be) {
    atomic_fetch_add_explicit(&be->refs, 1, memory_order_relaxed);
}

void backend_unref(struct backend *be) {
    if (atomic_fetch_sub_explicit(&be->refs, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_destroy(&be->note_lock);
        free(be->slots);
        free(be);
    }
}

/* ---- clusters ---- */

static struct cluster *cluster_new(const char *name, int nworkers) {
    struct cluster *lc = calloc(1, sizeof(*lc));
    if (!lc) return NULL;
    lc->per_worker = aligned_alloc(64, sizeof(*lc->per_worker) * (size_t)nworkers);
    if (!lc->per_worker) {
        free(lc);
        return NULL;
    }
    memset(lc->per_worker, 0, sizeof(*lc->per_worker) * (size_t)nworkers);
    snprintf(lc->name, sizeof(lc->name), "%s", name);
    pthread_mutex_init(&lc->eject_lock, NULL);
    return lc;
}

/* The registry's cluster of that name, created on first use. Writers only;
 * readers walk the list without a lock (it only grows, at its head). */
static struct cluster *cluster_get(struct balancer *b, const char *name) {
    struct cluster *head = atomic_load_explicit(&b->clusters, memory_order_acquire);
    for (struct cluster *lc = head; lc; lc = lc->next)
        if (!strcmp(lc->name, name)) return lc;
    struct cluster *lc = cluster_new(name, b->nworkers);
    if (!lc) return NULL;
    lc->next = head;
    atomic_store_explicit(&b->clusters, lc, memory_order_release);
    return lc;
}

static void cluster_set(struct cluster *lc, const struct cluster_config *cc) {
    atomic_store(&lc->healthy_threshold, cc->health.healthy_threshold);
    atomic_store(&lc->unhealthy_threshold, cc->health.unhealthy_threshold);
}

/* ---- tables ---- */

static struct backend *find_backend(const struct lb_table *t, const char *cluster,
                                    const char *name) {
    for (size_t i = 0; t && i < t->nclusters; i++) {
        if (strcmp(t->clusters[i].id->name, cluster)) continue;
        for (size_t j = 0; j < t->clusters[i].n; j++)
            if (!strcmp(t->clusters[i].backends[j]->name, name)) return t->clusters[i].backends[j];
    }
    return NULL;
}

static void table_free(struct lb_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nclusters; i++) {
        for (size_t j = 0; j < t->clusters[i].n; j++)
            backend_unref(t->clusters[i].backends[j]);
        free(t->clusters[i].backends);
    }
    free(t->clusters);
    free(t);
}

/* What was found for cc that way: names resolved, or discovery's instances
 * (only while cc still has names, or discovery). */
static const struct found_set *found_for(const struct balancer *b, const struct cluster_config *cc,
                                         enum found_by by) {
    int wanted = by == FOUND_BY_DISCOVERY ? cc->discovery.enabled : 0;
    for (size_t j = 0; by == FOUND_BY_DNS && j < cc->nbackends; j++)
        wanted |= cc->backends[j].is_name;
    for (size_t i = 0; wanted && i < b->nfound; i++)
        if (b->found[i].by == by && !strcmp(b->found[i].cluster, cc->name)) return &b->found[i];
    return NULL;
}

static size_t found_count(const struct found_set *fs) {
    return fs ? fs->n : 0;
}

static int has_addr(const struct table_cluster *c, const struct net_addr *a) {
    for (size_t j = 0; j < c->n; j++)
        if (net_addr_equal(&c->backends[j]->addr, a)) return 1;
    return 0;
}

/* Appends the backend for ba (reused from `reuse` or new) unless c has its
 * address already; its weight is the configuration's now. */
static int add_backend(struct balancer *b, struct table_cluster *c, const struct lb_table *reuse,
                       const struct backend_addr *ba, int healthy) {
    if (ba->is_name || has_addr(c, &ba->addr)) return 0;
    struct backend *be = find_backend(reuse, c->id->name, ba->text);
    if (!be) be = backend_new(c->id, ba, b->nworkers, healthy, b->started);
    if (!be) return -1;
    atomic_store(&be->weight, cluster_weight(c->cfg, ba->text, ba->origin[0] ? ba->origin : NULL));
    backend_ref(be);
    c->backends[c->n++] = be;
    return 0;
}

static int add_found(struct balancer *b, struct table_cluster *c, const struct lb_table *reuse,
                     const struct found_set *fs, int healthy) {
    for (size_t j = 0; fs && j < fs->n; j++)
        if (add_backend(b, c, reuse, &fs->addrs[j], healthy) < 0) return -1;
    return 0;
}

/* A new table for cfg (and the found sets of its clusters), reusing the
 * backends of `reuse` whose address and cluster name match (NULL: all new).
 * Backends from cfg start healthy, as HAProxy's servers do; found ones only
 * after their first successful checks. write_lock held. */
static struct lb_table *table_build(struct balancer *b, const struct proxy_config *cfg,
                                    const struct lb_table *reuse) {
    struct lb_table *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->cfg = cfg;
    t->generation = ++b->generations;
    t->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*t->clusters));
    if (!t->clusters) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        struct table_cluster *c = &t->clusters[i];
        c->cfg = cc;
        c->id = cluster_get(b, cc->name);
        const struct found_set *dns = found_for(b, cc, FOUND_BY_DNS);
        const struct found_set *ec2 = found_for(b, cc, FOUND_BY_DISCOVERY);
        size_t most = cc->nbackends + found_count(dns) + found_count(ec2) + 1;
        c->backends = calloc(most, sizeof(*c->backends));
        if (!c->id || !c->backends) goto fail;
        cluster_set(c->id, cc);
        t->nclusters = i + 1;
        for (size_t j = 0; j < cc->nbackends; j++)
            if (add_backend(b, c, reuse, &cc->backends[j], 1) < 0) goto fail;
        if (add_found(b, c, reuse, dns, 1) < 0 || add_found(b, c, reuse, ec2, 0) < 0) goto fail;
    }
    return t;
fail:
    table_free(t);
    return NULL;
}

static int grace_init(struct balancer *b) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&b->passed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&b->grace_lock, NULL);
    b->nreaders = b->nworkers + READER_OTHERS;
    b->readers = aligned_alloc(64, sizeof(*b->readers) * (size_t)b->nreaders);
    if (rc || !b->readers) return -1;
    memset(b->readers, 0, sizeof(*b->readers) * (size_t)b->nreaders);
    /* workers read from their first event on; the others go online to read */
    for (int i = b->nworkers; i < b->nreaders; i++)
        atomic_init(&b->readers[i].seen, READER_OFFLINE);
    return 0;
}

struct balancer *balancer_new(const struct proxy_config *cfg, int nworkers) {
    struct balancer *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->nworkers = nworkers;
    b->cfg = cfg;
    pthread_mutex_init(&b->write_lock, NULL);
    int ok = grace_init(b) == 0 && (b->unrouted = cluster_get(b, "none")) != NULL;
    struct lb_table *t = ok ? table_build(b, cfg, NULL) : NULL;
    if (!t) {
        balancer_free(b);
        return NULL;
    }
    atomic_store(&b->table, t);
    return b;
}

void balancer_ready(struct balancer *b) {
    pthread_mutex_lock(&b->write_lock);
    b->started = 1;
    pthread_mutex_unlock(&b->write_lock);
}

void balancer_free(struct balancer *b) {
    if (!b) return;
    table_free(atomic_load(&b->table));
    struct cluster *lc = atomic_load(&b->clusters);
    while (lc) {
        struct cluster *next = lc->next;
        free(lc->per_worker);
        pthread_mutex_destroy(&lc->eject_lock);
        free(lc);
        lc = next;
    }
    for (size_t i = 0; i < b->nfound; i++)
        free(b->found[i].addrs);
    free(b->found);
    free(b->readers);
    pthread_cond_destroy(&b->passed);
    pthread_mutex_destroy(&b->grace_lock);
    pthread_mutex_destroy(&b->write_lock);
    free(b);
}

size_t balancer_clusters(struct balancer *b, struct cluster ***out) {
    size_t n = 0;
    struct cluster *head = atomic_load_explicit(&b->clusters, memory_order_acquire);
    for (struct cluster *lc = head; lc; lc = lc->next)
        n++;
    *out = calloc(n ? n : 1, sizeof(**out));
    if (!*out) return 0;
    size_t i = n;
    for (struct cluster *lc = head; lc; lc = lc->next)
        (*out)[--i] = lc;
    return n;
}

struct cluster *balancer_unrouted(const struct balancer *b) {
    return b->unrouted;
}

/* ---- readers and the grace period ---- */

static struct lb_table *current(struct balancer *b) {
    return atomic_load_explicit(&b->table, memory_order_acquire);
}

int balancer_reader_id(const struct balancer *b, enum balancer_reader r) {
    return b->nworkers + (int)r;
}

/* A reader passed the epoch a writer waits for. */
static void signal_writer(struct balancer *b) {
    pthread_mutex_lock(&b->grace_lock);
    pthread_cond_signal(&b->passed);
    pthread_mutex_unlock(&b->grace_lock);
}

void balancer_reader_online(struct balancer *b, int id) {
    /* Dekker with table_swap(), all four accesses seq_cst (no fences: TSan
     * does not model them): this store of seen, then this load of the table;
     * the writer's exchange of the table, then its loads of seen. Either the
     * writer sees this reader online, or this load sees the new table, and
     * the reader's later (acquire) loads see no older one. */
    atomic_store(&b->readers[id].seen, atomic_load(&b->epoch));
    (void)atomic_load(&b->table);
}

void balancer_reader_offline(struct balancer *b, int id) {
    uint64_t was = atomic_exchange(&b->readers[id].seen, READER_OFFLINE);
    /* a writer may wait for the epoch this reader had not reached */
    if (was != READER_OFFLINE && was != atomic_load(&b->epoch)) signal_writer(b);
}

void balancer_quiescent(struct balancer *b, int id) {
    struct reader *r = &b->readers[id];
    uint64_t e = atomic_load_explicit(&b->epoch, memory_order_acquire);
    uint64_t seen = atomic_load_explicit(&r->seen, memory_order_relaxed);
    /* the epoch moves only when a writer starts waiting: most calls end here */
    if (seen == e || seen == READER_OFFLINE) return;
    atomic_store_explicit(&r->seen, e, memory_order_release);
    signal_writer(b);
}

void balancer_set_waker(struct balancer *b, int reader_id, void (*wake)(void *arg), void *arg) {
    pthread_mutex_lock(&b->write_lock);
    b->readers[reader_id].wake = wake;
    b->readers[reader_id].wake_arg = arg;
    pthread_mutex_unlock(&b->write_lock);
}

static int reader_behind(struct balancer *b, int i, uint64_t e) {
    return atomic_load(&b->readers[i].seen) < e; /* READER_OFFLINE is never behind */
}

/* The first reader that has not passed epoch e, or -1. */
static int first_behind(struct balancer *b, uint64_t e) {
    for (int i = 0; i < b->nreaders; i++)
        if (reader_behind(b, i, e)) return i;
    return -1;
}

/* Waits until every online reader passed epoch e: each one behind is woken
 * once, then the writer sleeps on `passed` (signalled by the readers),
 * re-checking every GRACE_RECHECK_MS. write_lock held. */
static void grace_period(struct balancer *b, uint64_t e) {
    for (int i = 0; i < b->nreaders; i++)
        if (b->readers[i].wake && reader_behind(b, i, e))
            b->readers[i].wake(b->readers[i].wake_arg);
    uint64_t t0 = ev_clock_ms();
    int logged = 0, late;
    pthread_mutex_lock(&b->grace_lock);
    while ((late = first_behind(b, e)) >= 0) {
        struct timespec until = ev_timespec_in(CLOCK_MONOTONIC, GRACE_RECHECK_MS);
        pthread_cond_timedwait(&b->passed, &b->grace_lock, &until);
        if (!logged && ev_clock_ms() - t0 >= GRACE_SLOW_MS) {
            log_warn("table swap: reader %d has passed no quiescent point for %d ms", late,
                     GRACE_SLOW_MS);
            logged = 1;
        }
    }
    pthread_mutex_unlock(&b->grace_lock);
}

static void mark_removed(const struct lb_table *old, const struct lb_table *next) {
    for (size_t i = 0; i < old->nclusters; i++)
        for (size_t j = 0; j < old->clusters[i].n; j++) {
            struct backend *be = old->clusters[i].backends[j];
            if (!find_backend(next, be->cluster->name, be->name)) atomic_store(&be->removed, 1);
        }
}

static void wake_ticker(struct balancer *b) {
    void (*wake)(void *) = atomic_load(&b->tick_wake);
    if (wake) wake(atomic_load(&b->tick_wake_arg));
}

/* Publishes next and, after the grace period, frees the old table (backends
 * still in use live on until their last reference goes). write_lock held. */
static void table_swap(struct balancer *b, struct lb_table *next) {
    struct lb_table *old = atomic_exchange(&b->table, next);
    mark_removed(old, next);
    wake_ticker(b);   /* new backends get their checks now */
    if (b->started) { /* else no reader yet */
        uint64_t e = atomic_fetch_add(&b->epoch, 1) + 1;
        grace_period(b, e); /* its loads of seen are seq_cst: see balancer_reader_online() */
    }
    table_free(old);
}

void balancer_each_cluster(struct balancer *b, void (*fn)(const struct table_cluster *c, void *arg),
                           void *arg) {
    const struct lb_table *t = current(b);
    for (size_t i = 0; i < t->nclusters; i++)
        fn(&t->clusters[i], arg);
}

const struct proxy_config *balancer_config(struct balancer *b) {
    return current(b)->cfg;
}

uint64_t balancer_generation(struct balancer *b) {
    return current(b)->generation;
}

/* ---- writers ---- */

static int in_table(const struct lb_table *t, const struct backend *be) {
    for (size_t i = 0; i < t->nclusters; i++)
        for (size_t j = 0; j < t->clusters[i].n; j++)
            if (t->clusters[i].backends[j] == be) return 1;
    return 0;
}

/* The table's cluster with that identity, or NULL. */
static struct table_cluster *cluster_in(const struct lb_table *t, const struct cluster *id) {
    for (size_t i = 0; i < t->nclusters; i++)
        if (t->clusters[i].id == id) return &t->clusters[i];
    return NULL;
}

static void log_cluster_changes(const struct lb_table *old, const struct lb_table *next,
                                const char *why) {
    for (size_t i = 0; i < next->nclusters; i++) {
        const struct table_cluster *c = &next->clusters[i], *was = cluster_in(old, c->id);
        if (!was)
            log_info("%s: cluster %s added (%s)", why, c->id->name, c->cfg->path_prefix);
        else if (was->cfg->strategy != c->cfg->strategy)
            log_info("%s: cluster %s: strategy %s -> %s", why, c->id->name,
                     strategy_name(was->cfg->strategy), strategy_name(c->cfg->strategy));
    }
    for (size_t i = 0; i < old->nclusters; i++)
        if (!cluster_in(next, old->clusters[i].id))
            log_info("%s: cluster %s removed", why, old->clusters[i].id->name);
}

/* Logs the clusters and backends that change; counts backends in and out. */
static void log_changes(const struct lb_table *old, const struct lb_table *next, const char *why,
                        int *added, int *removed) {
    int in = 0, out = 0;
    log_cluster_changes(old, next, why);
    for (size_t i = 0; i < next->nclusters; i++)
        for (size_t j = 0; j < next->clusters[i].n; j++)
            if (!in_table(old, next->clusters[i].backends[j])) {
                log_info("%s: backend %s joins cluster %s", why,
                         next->clusters[i].backends[j]->name, next->clusters[i].id->name);
                in++;
            }
    for (size_t i = 0; i < old->nclusters; i++)
        for (size_t j = 0; j < old->clusters[i].n; j++)
            if (!in_table(next, old->clusters[i].backends[j])) {
                log_info("%s: backend %s leaves cluster %s (draining what it has)", why,
                         old->clusters[i].backends[j]->name, old->clusters[i].id->name);
                out++;
            }
    if (added) *added = in;
    if (removed) *removed = out;
}

/* A cluster with nothing healthy serves again on its newcomers' first
 * passing check, not after healthy_threshold of them: replacing a
 * cluster's only instance costs one probe. */
static void fast_admit(const struct lb_table *old, const struct lb_table *next) {
    for (size_t i = 0; i < next->nclusters; i++) {
        const struct table_cluster *c = &next->clusters[i];
        int healthy = 0;
        for (size_t j = 0; j < c->n; j++)
            healthy |= atomic_load(&c->backends[j]->healthy);
        for (size_t j = 0; !healthy && j < c->n; j++)
            if (!in_table(old, c->backends[j])) atomic_store(&c->backends[j]->first_pass, 1);
    }
}

/* Builds from b->cfg and b->found and swaps in; write_lock held. */
static int rebuild(struct balancer *b, const char *why, int *added, int *removed) {
    struct lb_table *old = current(b);
    struct lb_table *t = table_build(b, b->cfg, old);
    if (!t) return -ENOMEM;
    log_changes(old, t, why, added, removed);
    fast_admit(old, t);
    table_swap(b, t); /* returns once no reader can see the old table */
    return 0;
}

int balancer_set_config(struct balancer *b, const struct proxy_config *cfg, const char *why,
                        int *added, int *removed) {
    pthread_mutex_lock(&b->write_lock);
    const struct proxy_config *was = b->cfg;
    b->cfg = cfg;
    int rc = rebuild(b, why, added, removed);
    if (rc < 0) b->cfg = was;
    pthread_mutex_unlock(&b->write_lock);
    return rc;
}

static int same_set(const struct found_set *fs, const struct backend_addr *addrs, size_t n) {
    if (fs->n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fs->addrs[i].text, addrs[i].text)) return 0;
    return 1;
}

/* The found set of that cluster and way, added empty when new. */
static struct found_set *found_slot(struct balancer *b, const char *cluster, enum found_by by) {
    for (size_t i = 0; i < b->nfound; i++)
        if (b->found[i].by == by && !strcmp(b->found[i].cluster, cluster)) return &b->found[i];
    struct found_set *grown = realloc(b->found, (b->nfound + 1) * sizeof(*grown));
    if (!grown) return NULL;
    b->found = grown;
    struct found_set *fs = &b->found[b->nfound++];
    memset(fs, 0, sizeof(*fs));
    snprintf(fs->cluster, sizeof(fs->cluster), "%s", cluster);
    fs->by = by;
    return fs;
}

int balancer_set_found(struct balancer *b, const char *cluster, enum found_by by,
                       const struct backend_addr *addrs, size_t n, const char *why) {
    pthread_mutex_lock(&b->write_lock);
    struct found_set *fs = found_slot(b, cluster, by);
    int rc = -ENOMEM;
    if (fs && same_set(fs, addrs, n)) {
        rc = 0;
    } else if (fs) {
        struct backend_addr *copy = malloc((n ? n : 1) * sizeof(*copy));
        if (copy) {
            memcpy(copy, addrs, n * sizeof(*copy));
            struct found_set was = *fs;
            fs->addrs = copy;
            fs->n = n;
            rc = rebuild(b, why, NULL, NULL);
            if (rc < 0) *fs = was;
            free(rc < 0 ? copy : was.addrs);
        }
    }
    pthread_mutex_unlock(&b->write_lock);
    return rc;
}

/* ---- choosing ---- */

struct cluster *balancer_route(struct balancer *b, const char *target, size_t len,
                               const struct cluster_config **cc) {
    struct lb_table *t = current(b);
    int i = route_match(t->cfg, target, len);
    if (i < 0) return NULL;
    if (cc) *cc = t->clusters[i].cfg;
    return t->clusters[i].id;
}

const struct cluster_config *balancer_cluster_config(struct balancer *b,
                                                     const struct cluster *cluster) {
    const struct table_cluster *c = cluster ? cluster_in(current(b), cluster) : NULL;
    return c ? c->cfg : NULL;
}

/* The backend of the cluster named `name`, when it is available. */
static struct backend *named_backend(const struct table_cluster *c, const char *name, int64_t now) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->backends[i]->name, name))
            return backend_available(c->backends[i], now) ? c->backends[i] : NULL;
    return NULL;
}

struct backend *balancer_pick(struct balancer *b, const struct cluster *cluster,
                              const struct backend *avoid, const char *prefer, uint64_t rnd,
                              int worker) {
    struct table_cluster *c = cluster_in(current(b), cluster);
    if (!c) return NULL; /* removed by a reload since the request was routed */
    int64_t now = ev_clock_ms();
    struct backend *be = prefer ? named_backend(c, prefer, now) : NULL;
    if (!be) {
        struct pick pk = {.avoid = avoid,
                          .next = &c->next,
                          .rnd = rnd,
                          .now_ms = now,
                          .slow_start_ms = c->cfg->slow_start_ms};
        be = strategy_pick(c->cfg->strategy, c->backends, c->n, &pk);
    }
    if (!be) return NULL;
    backend_ref(be);
    atomic_fetch_add_explicit(&be->inflight, 1, memory_order_relaxed);
    ctr_add(&be->slots[worker].requests, 1);
    return be;
}

/* ---- outlier detection ---- */

static int ejection_ms(const struct outlier_config *od, int times) {
    long long ms = (long long)od->base_ejection_ms * times;
    long long cap = od->base_ejection_ms > MAX_EJECTION_MS ? od->base_ejection_ms : MAX_EJECTION_MS;
    return (int)(ms < cap ? ms : cap);
}

/* Whether ejecting be keeps the cluster within its cap: at most
 * max_ejection_percent of its backends out at once, and another available. */
static int may_eject(const struct table_cluster *c, const struct backend *be, int64_t now) {
    size_t out = 0, others = 0;
    for (size_t i = 0; i < c->n; i++) {
        out += backend_ejected(c->backends[i], now);
        others += c->backends[i] != be && backend_available(c->backends[i], now);
    }
    return others > 0 && (out + 1) * 100 <= c->n * (size_t)c->cfg->outlier.max_ejection_percent;
}

/* An ejection that is over: logged, and the backend's slow start runs from
 * its end (picks took it back at that instant already). */
static void readmit(struct backend *be) {
    int64_t until = atomic_load(&be->ejected_until);
    if (!until || !atomic_compare_exchange_strong(&be->ejected_until, &until, (int64_t)0)) return;
    /* (its counts started again at the ejection, and what it answered since
     * it came back counts: the tick may come after its first answers) */
    atomic_store(&be->joined_ms, until);
    note(be, &be->changed_ms, be->changed_why, "readmitted after its ejection");
    log_info("backend %s (%s): readmitted (ejection %d over)", be->name, be->cluster->name,
             atomic_load(&be->times_ejected));
}

static void eject(struct balancer *b, struct backend *be, const char *what, int count,
                  const char *why) {
    struct cluster *lc = be->cluster;
    const struct table_cluster *c = cluster_in(current(b), lc);
    if (!c) return;
    const struct outlier_config *od = &c->cfg->outlier;
    int64_t now = ev_clock_ms();
    pthread_mutex_lock(&lc->eject_lock);
    if (!backend_ejected(be, now))
        readmit(be); /* over, and failing again before the tick noticed: in that order */
    /* the counts start again either way: the next decision after as many failures */
    atomic_store(&be->consec_5xx, 0);
    atomic_store(&be->consec_gw, 0);
    if (!backend_ejected(be, now) && may_eject(c, be, now)) {
        int times = atomic_fetch_add(&be->times_ejected, 1) + 1;
        int ms = ejection_ms(od, times);
        atomic_store(&be->ejected_until, now + ms);
        atomic_fetch_add(&be->ejections, 1);
        note(be, &be->changed_ms, be->changed_why, "ejected for %d ms after %d %s%s%s", ms, count,
             what, why ? ", last: " : "", why ? why : "");
        log_warn("backend %s (%s): ejected for %d ms (%d %s%s%s; ejection %d)", be->name, lc->name,
                 ms, count, what, why ? ", last: " : "", why ? why : "", times);
        wake_ticker(b); /* its readmission needs a tick */
    } else if (!backend_ejected(be, now)) {
        log_debug("backend %s (%s): %d %s, not ejected: the cluster is at its ejection cap",
                  be->name, lc->name, count, what);
    }
    pthread_mutex_unlock(&lc->eject_lock);
}

/* A live answer's part in outlier detection (Envoy's consecutive 5xx and
 * consecutive gateway failure): `gateway` for a connect failure, reset,
 * timeout or garbage, or a 502-504; `fivexx` for any 5xx or gateway
 * failure; neither for a success, which resets both counts. */
static void count_outcome(struct balancer *b, struct backend *be, int fivexx, int gateway,
                          const char *why) {
    if (!fivexx) {
        if (atomic_load_explicit(&be->consec_5xx, memory_order_relaxed))
            atomic_store_explicit(&be->consec_5xx, 0, memory_order_relaxed);
        if (atomic_load_explicit(&be->consec_gw, memory_order_relaxed))
            atomic_store_explicit(&be->consec_gw, 0, memory_order_relaxed);
        return;
    }
    /* answers to requests sent before its ejection do not count towards the next */
    if (backend_ejected(be, ev_clock_ms())) return;
    int n5 = atomic_fetch_add(&be->consec_5xx, 1) + 1;
    int ng = gateway ? atomic_fetch_add(&be->consec_gw, 1) + 1 : 0;
    if (!gateway) atomic_store(&be->consec_gw, 0);
    const struct table_cluster *c = cluster_in(current(b), be->cluster);
    if (!c || !c->cfg->outlier.enabled) return;
    const struct outlier_config *od = &c->cfg->outlier;
    if (od->consecutive_gateway_failure && ng >= od->consecutive_gateway_failure)
        eject(b, be, "consecutive gateway failures", ng, why);
    else if (od->consecutive_5xx && n5 >= od->consecutive_5xx)
        eject(b, be, "consecutive 5xx", n5, why);
}

static void error_sample(struct backend *be, int failed);

void balancer_done(struct balancer *b, struct backend *be, enum outcome o, int status,
                   uint64_t latency_us, const char *why, int worker) {
    atomic_fetch_sub_explicit(&be->inflight, 1, memory_order_relaxed);
    if (o != OUTCOME_NEUTRAL) {
        int failed = o == OUTCOME_FAILED || status >= 500;
        int gateway = o == OUTCOME_FAILED || (status >= 502 && status <= 504);
        char said[32];
        if (o == OUTCOME_OK && failed) {
            snprintf(said, sizeof(said), "answered %d", status);
            why = said;
        }
        if (!failed) backend_sample(be, latency_us);
        error_sample(be, failed);
        if (o == OUTCOME_FAILED) {
            ctr_add(&be->slots[worker].failures, 1);
            if (why) note(be, &be->failed_ms, be->failed_why, "%s", why);
        }
        count_outcome(b, be, failed, gateway, why);
    }
    backend_unref(be);
}

/* Readmits backends whose ejection is over (picks took them back at that
 * instant; this logs it), and decays the
 * multiplier of backends that stayed in and failed nothing for an interval. */
static void earliest(int64_t *next, int64_t at) {
    if (*next < 0 || at < *next) *next = at;
}

/* Readmissions and decay in one cluster; *next: when it needs the next
 * tick (kept when it needs none). */
static void tick_cluster(const struct table_cluster *c, int64_t now, int64_t *next) {
    const struct outlier_config *od = &c->cfg->outlier;
    int decay = now - c->id->decayed_ms >= od->interval_ms;
    if (decay) c->id->decayed_ms = now;
    for (size_t i = 0; i < c->n; i++) {
        struct backend *be = c->backends[i];
        int64_t until = atomic_load(&be->ejected_until);
        if (until && until <= now) {
            readmit(be);
        } else if (decay && !until && atomic_load(&be->times_ejected) > 0 &&
                   now - atomic_load(&be->joined_ms) >= od->interval_ms &&
                   !atomic_load(&be->consec_5xx) && !atomic_load(&be->consec_gw)) {
            /* only after a whole interval back in: the tick comes the moment
             * an ejection ends, and an interval begun while it was out is
             * not one it stayed in */
            atomic_fetch_sub(&be->times_ejected, 1);
        }
        if (until > now) earliest(next, until);
        if (atomic_load(&be->times_ejected) > 0)
            earliest(next, c->id->decayed_ms + od->interval_ms);
    }
}

int64_t balancer_tick(struct balancer *b) {
    const struct lb_table *t = current(b);
    int64_t now = ev_clock_ms(), next = -1;
    for (size_t i = 0; i < t->nclusters; i++)
        tick_cluster(&t->clusters[i], now, &next);
    return next < 0 ? -1 : next > now ? next - now : 1;
}

void balancer_set_tick_waker(struct balancer *b, void (*wake)(void *arg), void *arg) {
    atomic_store(&b->tick_wake_arg, arg);
    atomic_store(&b->tick_wake, wake);
}

uint64_t backend_requests(const struct backend *be, int nworkers) {
    uint64_t n = 0;
    for (int i = 0; i < nworkers; i++)
        n += ctr_get(&be->slots[i].requests);
    return n;
}

uint64_t backend_failures(const struct backend *be, int nworkers) {
    uint64_t n = 0;
    for (int i = 0; i < nworkers; i++)
        n += ctr_get(&be->slots[i].failures);
    return n;
}

/* ---- health and latency ---- */

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
    if (to) {
        /* back from down: a new start, as far as outlier detection knows */
        atomic_store(&be->ejected_until, 0);
        atomic_store(&be->times_ejected, 0);
        atomic_store(&be->consec_5xx, 0);
        atomic_store(&be->consec_gw, 0);
        atomic_store(&be->joined_ms, ev_clock_ms());
    }
    note(be, &be->changed_ms, be->changed_why, "%s after %d %s%s%s", to ? "healthy" : "unhealthy",
         count, to ? "successful checks" : "failed checks", why ? ", last: " : "", why ? why : "");
    log_warn("backend %s (%s): %s -> %s (%d %s%s%s)", be->name, be->cluster->name,
             to ? "unhealthy" : "healthy", to ? "healthy" : "unhealthy", count,
             to ? "successful checks" : "failed checks", why ? ", last: " : "", why ? why : "");
}

void backend_observe(struct backend *be, int ok, const char *why) {
    const struct cluster *lc = be->cluster;
    if (ok) {
        atomic_store_explicit(&be->consec_fail, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_ok, 1, memory_order_relaxed) + 1;
        int need = atomic_load(&be->first_pass)
                       ? 1
                       : atomic_load_explicit(&lc->healthy_threshold, memory_order_relaxed);
        if (k >= need && !atomic_load(&be->healthy)) transition(be, 1, k, why);
        atomic_store(&be->first_pass, 0);
    } else {
        if (why) note(be, &be->failed_ms, be->failed_why, "%s", why);
        atomic_store_explicit(&be->consec_ok, 0, memory_order_relaxed);
        int k = atomic_fetch_add_explicit(&be->consec_fail, 1, memory_order_relaxed) + 1;
        if (k >= atomic_load_explicit(&lc->unhealthy_threshold, memory_order_relaxed) &&
            atomic_load(&be->healthy))
            transition(be, 0, k, why);
    }
}

/* How old a packed value's stamp is at now: 0 when another thread stamped
 * it a millisecond later than this one's clock read. */
static uint32_t age_ms(uint32_t now, uint64_t v) {
    int32_t age = (int32_t)(now - (uint32_t)v);
    return age > 0 ? (uint32_t)age : 0;
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
            double w = exp(-(double)age_ms(now, old) / EWMA_TAU_MS);
            next = (float)(avg * w + x * (1.0 - w));
        }
        if (atomic_compare_exchange_weak_explicit(&be->ewma, &old, pack(next, now),
                                                  memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

void backend_sample_idle(struct backend *be, uint64_t latency_us, uint32_t idle_ms) {
    uint64_t v = atomic_load_explicit(&be->ewma, memory_order_relaxed);
    if (!v || age_ms((uint32_t)ev_clock_ms(), v) >= idle_ms) backend_sample(be, latency_us);
}

/* The failure share: decays toward 0 with time, and moves 1/ERROR_WINDOW of
 * the way to each answer (1: failed, 0: not). */
static float error_decayed(uint64_t v, uint32_t now) {
    return (float)(unpack_us(v) * exp(-(double)age_ms(now, v) / EWMA_TAU_MS));
}

static void error_sample(struct backend *be, int failed) {
    uint32_t now = (uint32_t)ev_clock_ms();
    uint64_t old = atomic_load_explicit(&be->errors, memory_order_relaxed);
    for (;;) {
        float e = error_decayed(old, now);
        float next = e + ((failed ? 1.0f : 0.0f) - e) / (float)ERROR_WINDOW;
        if (!failed && next < 1e-4f) next = 0;
        if (atomic_compare_exchange_weak_explicit(&be->errors, &old, pack(next, now),
                                                  memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

double backend_error_share(const struct backend *be, int64_t now_ms) {
    uint64_t v = atomic_load_explicit(&be->errors, memory_order_relaxed);
    return v ? error_decayed(v, (uint32_t)now_ms) : 0.0;
}

double backend_weight(const struct backend *be, int slow_start_ms, int64_t now_ms) {
    double w = atomic_load_explicit(&be->weight, memory_order_relaxed);
    int64_t joined = atomic_load_explicit(&be->joined_ms, memory_order_relaxed);
    if (slow_start_ms > 0 && joined > 0 && now_ms - joined < slow_start_ms) {
        double ramp = (double)(now_ms - joined) / slow_start_ms;
        w *= ramp > SLOW_START_FLOOR ? ramp : SLOW_START_FLOOR;
    }
    return w;
}

int backend_available(const struct backend *be, int64_t now_ms) {
    return atomic_load_explicit(&be->healthy, memory_order_relaxed) &&
           !backend_ejected(be, now_ms) &&
           atomic_load_explicit(&be->weight, memory_order_relaxed) > 0;
}
