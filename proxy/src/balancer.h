/* The latency table and choosing a backend.
 *
 * Per backend: health (active checks only), the outlier detection's
 * consecutive live failures and ejection, last probe latency, a peak-EWMA of
 * latency (probes and live responses), a share of recent live answers that
 * failed, weight and slow start, requests in flight. Workers read and update
 * them with atomics only. The table (which backends each cluster has) is
 * published through one pointer: a new membership is swapped in whole, and the
 * old table is freed after a grace period in which every reader passed a
 * quiescent point or went offline. Backends are reference counted, so a
 * request or a pooled connection keeps its backend across swaps.
 *
 * Every thread reads the table the same way (the reader API below): online,
 * it may use what it read until its next quiescent point or until it goes
 * offline. Writers (reload, discovery, DNS) alone take the write lock. */
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
 * backends' health is judged by (updated by a reload). Its configuration is a
 * struct cluster_config, its entry in one table a struct table_cluster. */
struct cluster {
    char name[64];
    struct cluster *next; /* the balancer's registry */
    atomic_int healthy_threshold, unhealthy_threshold;
    struct cluster_counters *per_worker; /* one per worker */
    pthread_mutex_t eject_lock;          /* one ejection decision at a time (the cap) */
    int64_t decayed_ms;                  /* the probe thread's last multiplier decay */
};

/* A worker's part of a backend: its idle keep-alive connections to it and
 * its counts. Only that worker writes it (the admin
 * thread reads the counts); each on its own cache line. */
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

/* A cluster's entry in one table: its configuration there and its backends.
 * Readers see it through balancer_each_cluster(), valid while they are
 * online. */
struct table_cluster {
    struct cluster *id;
    const struct cluster_config *cfg;
    struct backend **backends;
    size_t n;
    atomic_uint next; /* balancer_pick's round-robin position */
};

/* Where backends come from besides the configuration's list. */
enum found_by {
    FOUND_BY_DNS,       /* the cluster's names resolved: they start healthy, as listed ones */
    FOUND_BY_DISCOVERY, /* EC2: they start unhealthy, serve after their first checks */
};

struct balancer; /* opaque: the table, its readers and what writers build it from */

/* Builds the table from cfg's clusters for nworkers workers (each with a
 * pool slot in every backend). NULL when out of memory. */
struct balancer *balancer_new(const struct proxy_config *cfg, int nworkers);
/* Called before the readers start: tables built until then (the one from
 * the configuration, names resolved at start) swap in at once, and their
 * backends are at full share from the start; later ones have slow start. */
void balancer_ready(struct balancer *b);
void balancer_free(struct balancer *b);

/* ---- readers ----
 *
 * Each reading thread has an id: the workers 0..nworkers-1, the others
 * balancer_reader_id(). A reader reads the table only while online, and
 * what it read (a table_cluster, a cluster_config, a backend without a
 * reference of its own) stays valid until its next balancer_quiescent() or
 * balancer_reader_offline(). Workers start online (their loops pass
 * quiescent points in each iteration); the other readers start offline and
 * go online only for a read. A thread is never online while it writes:
 * the writer would wait for itself. */
enum balancer_reader {
    READER_PROBE,
    READER_ADMIN,
    READER_DISCOVERY,
    READER_DNS,
    READER_CLOUDWATCH,
    READER_OTHERS /* their count */
};
int balancer_reader_id(const struct balancer *b, enum balancer_reader r);
void balancer_reader_online(struct balancer *b, int id);
/* A reader that holds nothing it read: grace periods do not wait for it. */
void balancer_reader_offline(struct balancer *b, int id);
/* Reader `id` (online) holds nothing it read before this call. Costs a load
 * and a compare unless a writer waits for this reader. */
void balancer_quiescent(struct balancer *b, int id);
/* How a writer that waits for reader `id` wakes it when it is idle (a
 * worker blocked in its event loop): called at most once per table swap,
 * from the writer's thread, for a reader that has not passed its quiescent
 * point yet. NULL: none; the writer then waits until the reader passes one
 * of its own accord. */
void balancer_set_waker(struct balancer *b, int reader_id, void (*wake)(void *arg), void *arg);

/* Calls fn for each cluster of the current table, in the configuration's
 * order. Online readers. */
void balancer_each_cluster(struct balancer *b, void (*fn)(const struct table_cluster *c, void *arg),
                           void *arg);
/* The configuration the current table was built from. Online readers. */
const struct proxy_config *balancer_config(struct balancer *b);
/* A number that changes with each table swapped in (a new membership).
 * Online readers. */
uint64_t balancer_generation(struct balancer *b);

/* Every cluster ever built, oldest first ("none" first of all), in an array
 * the caller frees; their count (0 when out of memory). Any thread, online
 * or not: clusters live as long as the balancer. */
size_t balancer_clusters(struct balancer *b, struct cluster ***out);
/* The cluster unrouted requests are counted in ("none"). Any thread. */
struct cluster *balancer_unrouted(const struct balancer *b);

/* ---- writers ---- */

/* Each builds a table from the configuration and the found sets, logs the
 * clusters and backends that change (tagged with `why`), swaps it in and
 * counts backends added and removed (either pointer may be NULL). They return
 * once no reader can see the old table. -ENOMEM: nothing changed. */
int balancer_set_config(struct balancer *b, const struct proxy_config *cfg, const char *why,
                        int *added, int *removed);
/* The backends a discovery found for a cluster now (copied); no change, no
 * swap. */
int balancer_set_found(struct balancer *b, const char *cluster, enum found_by by,
                       const struct backend_addr *addrs, size_t n, const char *why);

/* ---- the data path (workers, online) ---- */

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
/* The probe thread (online): readmissions are logged and start their slow
 * start, and ejection multipliers decay. Returns the milliseconds until it
 * is needed again, or -1 when nothing is ejected or decaying: then the
 * next ejection calls the tick waker. */
int64_t balancer_tick(struct balancer *b);
/* How the balancer tells the probe thread, which sleeps between its timers,
 * that it has work: an ejection (on a worker) whose readmission needs a
 * tick, or a new table (on a writer) whose backends need checks. The waker
 * must stay valid as long as the workers and writers run. */
void balancer_set_tick_waker(struct balancer *b, void (*wake)(void *arg), void *arg);
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
/* The backend's weight now: its configured weight, scaled by its slow start. */
double backend_weight(const struct backend *be, int slow_start_ms, int64_t now_ms);

#endif
