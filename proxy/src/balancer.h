/* The latency table and choosing a backend.
 *
 * One row per backend: health, consecutive check results, last probe
 * latency, a peak-EWMA of latency (probes and live responses), requests in
 * flight. Workers read and update rows with atomics only. The table (which
 * rows each cluster has) is published through one pointer: a new membership
 * is swapped in whole, and the old table is freed after a grace period in
 * which every worker passed a quiescent point (its loop's tick). Rows are
 * reference counted, so a request or a pooled connection keeps its row. */
#ifndef LB_BALANCER_H
#define LB_BALANCER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct upconn;

/* A worker's idle keep-alive connections to one backend. */
struct idle_pool {
    struct upconn *head;
    int n;
};

struct backend {
    struct net_addr addr;
    char name[80]; /* "10.0.1.5:8000" */
    const struct cluster_config *cluster;
    int cluster_index;
    atomic_int refs;    /* the tables holding it, requests in flight, pooled connections */
    atomic_int removed; /* no longer in the current table */
    atomic_int healthy;
    atomic_int consec_ok, consec_fail;
    atomic_int inflight;
    atomic_uint probe_us; /* last successful probe's latency; 0: none yet */
    atomic_ullong ewma;   /* packed: float µs << 32 | stamp ms */
    atomic_ullong requests, failures;
    struct idle_pool *pools; /* one per worker, touched only by that worker */
};

struct cluster_rt {
    const struct cluster_config *cfg;
    struct backend **rows;
    size_t n;
    atomic_uint next; /* round-robin position */
};

struct lb_table {
    struct cluster_rt *clusters;
    size_t nclusters;
};

#define LB_MAX_READERS 1024

struct balancer {
    _Atomic(struct lb_table *) table;
    int nreaders; /* the workers, then the probe thread */
    atomic_ullong epoch;
    /* the epoch each reader last saw at a quiescent point */
    atomic_ullong seen[LB_MAX_READERS];
};

/* Builds the table from cfg's clusters for nworkers workers (each with a
 * pool slot in every row); readers are the workers (ids 0..nworkers-1) and
 * the probe thread (id nworkers). */
int balancer_init(struct balancer *b, const struct proxy_config *cfg, int nworkers);
void balancer_free(struct balancer *b);
static inline struct lb_table *balancer_table(struct balancer *b) {
    return atomic_load_explicit(&b->table, memory_order_acquire);
}
/* Publishes a new table and, after the grace period, releases the old one
 * (rows still in use live on until their last reference goes). Called by
 * one writer at a time; blocks until every reader passed a quiescent point. */
void balancer_swap(struct balancer *b, struct lb_table *next);
/* Reader `id` holds no table pointer across this call. */
void balancer_quiescent(struct balancer *b, int id);
/* A new table for cfg, reusing the rows of `reuse` whose address and cluster
 * name match (NULL: all new). */
struct lb_table *lb_table_build(const struct proxy_config *cfg, const struct lb_table *reuse,
                                int nworkers);

void backend_ref(struct backend *be);
void backend_unref(struct backend *be);

/* The backend for the next request to cluster, other than avoid when
 * another healthy one exists; NULL when none is healthy. Counts it in
 * flight and takes a reference: pair with balancer_done(). */
struct backend *balancer_pick(struct balancer *b, int cluster, const struct backend *avoid,
                              uint64_t rnd);

enum outcome {
    OUTCOME_OK,      /* answered: latency_us is its time to first byte */
    OUTCOME_FAILED,  /* refused, reset, timed out, garbage: passive health */
    OUTCOME_NEUTRAL, /* ended for reasons not the backend's (client left) */
};
void balancer_done(struct backend *be, enum outcome o, uint64_t latency_us, const char *why);

/* Health, from the probe thread and from live requests. */
void backend_observe(struct backend *be, int ok, const char *why);
void backend_sample(struct backend *be, uint64_t latency_us);
double backend_ewma_us(const struct backend *be);

/* strategy.c: the choice itself, over one cluster's rows. */
struct backend *strategy_pick(enum strategy s, struct backend *const *rows, size_t n,
                              const struct backend *avoid, atomic_uint *next, uint64_t rnd);

#endif
