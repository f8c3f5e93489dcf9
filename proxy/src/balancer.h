/* Choosing a backend for a request. Round-robin for now, behind the small
 * interface the latency table will implement. */
#ifndef LB_BALANCER_H
#define LB_BALANCER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct backend {
    struct net_addr addr;
    char name[80];
    int cluster;
    int index; /* among all clusters' backends: the slot of its connection pools */
};

struct cluster_rt {
    const struct cluster_config *cfg;
    struct backend *backends;
    size_t n;
    atomic_uint next;
};

struct balancer {
    struct cluster_rt *clusters;
    size_t nclusters;
    size_t nbackends;
};

int balancer_init(struct balancer *b, const struct proxy_config *cfg);
void balancer_free(struct balancer *b);
/* The backend for the next request to cluster, other than avoid when there
 * is another; NULL when there is none to try. */
struct backend *balancer_pick(struct balancer *b, int cluster, const struct backend *avoid);
/* What happened to a request sent to be: ok, or a failure to connect, a
 * reset or a timeout (passive health). */
void balancer_report(struct balancer *b, struct backend *be, int ok, uint64_t latency_us);

#endif
