/* The latency table and choosing a backend.
 *
 * One row per backend: health (active checks only), the outlier detection's
 * consecutive live failures and ejection, last probe latency, a peak-EWMA of
 * latency (probes and live responses), a share of recent live answers that
 * failed, weight and slow start, requests in flight. Workers read and update rows with atomics
 * only. The table (which rows each cluster has) is published through one pointer: a new membership
 * is swapped in whole, and the old table is freed after a grace period in
 * which every worker passed a quiescent point (its loop's tick). Rows are
 * reference counted, so a request or a pooled connection keeps its row. */
#ifndef LB_BALANCER_H
#define LB_BALANCER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "config.h"
#include "list.h"
#include "stats.h"
#include "strategy.h"

struct upconn;

/* One per cluster name for the life of the process (a cluster removed by a
 * reload and added again continues its counters): the identity a request
 * keeps across table swaps, its per-worker counters, and the thresholds its
 * rows judge health by (updated by a reload). */
struct cluster {
    char name[64];
    struct cluster *next; /* the balancer's registry */
    atomic_int healthy_threshold, unhealthy_threshold;
    struct cluster_counters *per_worker; /* one per worker */
    pthread_mutex_t eject_lock;          /* one ejection decision at a time (the cap) */
    int64_t decayed_ms;                  /* the probe thread's last multiplier decay */
};

/* A worker's part of a row: its idle keep-alive connections to the
 * backend and its counts. Only that worker writes it (the admin thread reads
 * the counts); each on its own cache line. */
struct row_slot {
    struct list idle; /* idle connections (upconn.in_slot), newest first */
    int n;
    atomic_ullong requests, failures;
} __attribute__((aligned(64)));

struct backend {
    struct net_addr addr;
    char name[80]; /* "10.0.1.5:8000" */
    struct cluster *cluster;
    atomic_int refs;    /* the tables holding it, requests in flight, pooled connections */
    atomic_int removed; /* no longer in the current table */
    atomic_int healthy; /* by the active checks */
    atomic_int consec_ok, consec_fail; /* probes */
    atomic_int consec_5xx, consec_gw;  /* live answers, reset by a success */
    atomic_llong ejected_until;        /* monotonic ms; 0: not ejected */
    atomic_int times_ejected;          /* the next ejection lasts base × this + 1 */
    atomic_ullong ejections;           /* in all */
    atomic_int weight;      /* the cluster's "weights"; 1 unless set; 0: no new requests */
    atomic_llong joined_ms; /* slow start runs from here (monotonic ms); 0: none */
    atomic_int first_pass;  /* joined a cluster with nothing healthy: checked at once,
                               serves on its first passing check */
    atomic_int inflight;
    atomic_uint probe_us;   /* last successful probe's latency; 0: none yet */
    atomic_ullong ewma;     /* packed: float µs << 32 | stamp ms */
    atomic_ullong errors;   /* packed: float share of recent live answers that failed | stamp */
    struct row_slot *slots; /* one per worker */
    /* for /status: the last health transition and the last failure */
    pthread_mutex_t note_lock;
    int64_t changed_ms, failed_ms; /* wall clock; 0: never */
    char changed_why[128], failed_why[128];
    char origin[80]; /* the DNS name it was resolved from, or "" */
};

/* Outlier detection's ejection: out of rotation until then. */
static inline int backend_ejected(const struct backend *be, int64_t now_ms) {
    return atomic_load_explicit(&be->ejected_until, memory_order_relaxed) > now_ms;
}

struct table_cluster {
    struct cluster *id;
    const struct cluster_config *cfg;
    struct backend **rows;
    size_t n;
    atomic_uint next; /* round-robin position */
};

struct lb_table {
    const struct proxy_config *cfg; /* the configuration it was built from */
    struct table_cluster *clusters; /* in cfg's order */
    size_t nclusters;
};

#define LB_MAX_READERS 1024

/* Where backends come from besides the configuration's list. */
enum found_by {
    FOUND_BY_DNS,       /* the cluster's names resolved: rows start healthy, as listed ones */
    FOUND_BY_DISCOVERY, /* EC2: rows start unhealthy, serve after their first checks */
};

/* The backends found for one cluster, by its name, one way. */
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
    const struct proxy_config *cfg;
    struct found_set *found;
    size_t nfound;
    _Atomic(struct cluster *) clusters; /* every cluster ever built, newest first */
    struct cluster *unrouted;           /* "none": requests no route matched */
    pthread_mutex_t write_lock;         /* one table writer at a time */
    int nreaders; /* the workers, then the probe thread, then the admin thread */
    int started;  /* the readers may run: rows added from now on ramp up (slow start) */
    atomic_ullong epoch;
    /* the epoch each reader last saw at a quiescent point */
    atomic_ullong seen[LB_MAX_READERS];
};

/* Builds the table from cfg's clusters for nworkers workers (each with a
 * pool slot in every row); readers are the workers (ids 0..nworkers-1), the
 * probe thread (BALANCER_PROBE) and the admin thread (BALANCER_ADMIN). */
int balancer_init(struct balancer *b, const struct proxy_config *cfg, int nworkers);
#define BALANCER_PROBE(b) ((b)->nworkers)
#define BALANCER_ADMIN(b) ((b)->nworkers + 1)
/* Called before the readers start: tables built until then (the one from
 * the configuration, names resolved at start) swap in at once, and their
 * rows are at full share from the start; later ones have slow start. */
void balancer_ready(struct balancer *b);
/* A reader that will never run (no admin listener): grace periods skip it. */
void balancer_reader_offline(struct balancer *b, int id);
void balancer_free(struct balancer *b);
/* Every cluster ever built, oldest first ("none" first of all), in an array
 * the caller frees; their count (0 when out of memory). Any thread. */
size_t balancer_clusters(struct balancer *b, struct cluster ***out);
static inline struct lb_table *balancer_table(struct balancer *b) {
    return atomic_load_explicit(&b->table, memory_order_acquire);
}
/* Publishes a new table and, after the grace period, releases the old one
 * (rows still in use live on until their last reference goes). Writers
 * build and swap under write_lock; this blocks until every reader passed a
 * quiescent point. */
void balancer_swap(struct balancer *b, struct lb_table *next);
/* Reader `id` holds no table pointer across this call. */
void balancer_quiescent(struct balancer *b, int id);
/* A new table for cfg (and the found sets of its clusters with discovery),
 * reusing the rows of `reuse` whose address and cluster name match (NULL:
 * all new). Rows from cfg start healthy, as HAProxy's servers do; found
 * ones only after their first successful checks. Writers only. */
struct lb_table *lb_table_build(struct balancer *b, const struct proxy_config *cfg,
                                const struct lb_table *reuse);
/* Writers. Each builds a table from the configuration and the found sets,
 * logs the clusters and backends that change (tagged with `why`), swaps it
 * in and counts rows added and removed (either pointer may be NULL).
 * -1: out of memory, nothing changed. */
int balancer_set_config(struct balancer *b, const struct proxy_config *cfg, const char *why,
                        int *added, int *removed);
/* The backends a discovery found for a cluster now (copied); no change, no
 * swap. */
int balancer_set_found(struct balancer *b, const char *cluster, enum found_by by,
                       const struct backend_addr *addrs, size_t n, const char *why);

/* The cluster unrouted requests are counted in ("none"). Any thread. */
static inline struct cluster *balancer_unrouted(const struct balancer *b) {
    return b->unrouted;
}

/* The cluster whose path_prefix matches target in the current table, or
 * NULL; *cc (when given) gets its configuration, valid until the caller's
 * next quiescent point. */
struct cluster *balancer_route(struct balancer *b, const char *target, size_t len,
                               const struct cluster_config **cc);

/* The configuration of that cluster in the current table, or NULL; valid
 * until the caller's next quiescent point. */
const struct cluster_config *balancer_cluster_config(struct balancer *b,
                                                     const struct cluster *cluster);

void backend_ref(struct backend *be);
void backend_unref(struct backend *be);

/* The backend for the next request to cluster: the one named `prefer`
 * (stickiness) when it is in the cluster and available, else the
 * strategy's choice, other than avoid when another available one exists;
 * NULL when none is. Counts it in flight and takes a reference: pair with
 * balancer_done(). */
struct backend *balancer_pick(struct balancer *b, const struct cluster *cluster,
                              const struct backend *avoid, const char *prefer, uint64_t rnd,
                              int worker);

enum outcome {
    OUTCOME_OK,      /* answered with `status`: latency_us is its time to first byte */
    OUTCOME_FAILED,  /* refused, reset, timed out, garbage: a gateway failure */
    OUTCOME_NEUTRAL, /* ended for reasons not the backend's (client left) */
};
/* How a request to be ended, from a worker: latency, the failure share and
 * the outlier detection's consecutive counts (which may eject it). */
void balancer_done(struct balancer *b, struct backend *be, enum outcome o, int status,
                   uint64_t latency_us, const char *why, int worker);
/* The probe thread, every 100 ms or so: readmissions are logged and start
 * their slow start, and ejection multipliers decay. */
void balancer_tick(struct balancer *b);
/* Requests sent to the backend, and live ones it failed, over all workers. */
uint64_t backend_requests(const struct backend *be, int nworkers);
uint64_t backend_failures(const struct backend *be, int nworkers);

/* An active check's result (the probe thread). A backend it takes from
 * unhealthy to healthy is readmitted if ejected, and ramps up. */
void backend_observe(struct backend *be, int ok, const char *why);
/* Copies the /status notes: what changed health last and the last failure. */
void backend_notes(struct backend *be, int64_t *changed_ms, char *changed_why, int64_t *failed_ms,
                   char *failed_why, size_t len);
void backend_sample(struct backend *be, uint64_t latency_us);
/* The same, only when the EWMA has had no sample for idle_ms. */
void backend_sample_idle(struct backend *be, uint64_t latency_us, uint32_t idle_ms);
double backend_ewma_us(const struct backend *be);
/* The share of its recent live answers that failed (5xx or gateway
 * failure), decaying with the EWMA's time constant: 0..1. */
double backend_error_share(const struct backend *be, int64_t now_ms);
/* The row's weight now: its configured weight, scaled by its slow start. */
double backend_weight(const struct backend *be, int slow_start_ms, int64_t now_ms);

#endif
