#include "balancer.h"

#include <stdio.h>
#include <stdlib.h>

int balancer_init(struct balancer *b, const struct proxy_config *cfg) {
    *b = (struct balancer){0};
    b->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*b->clusters));
    if (!b->clusters) return -1;
    b->nclusters = cfg->nclusters;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        struct cluster_rt *c = &b->clusters[i];
        c->cfg = cc;
        c->n = cc->nbackends;
        c->backends = calloc(c->n ? c->n : 1, sizeof(*c->backends));
        if (!c->backends) return -1;
        for (size_t j = 0; j < c->n; j++) {
            struct backend *be = &c->backends[j];
            be->addr = cc->backends[j].addr;
            snprintf(be->name, sizeof(be->name), "%s", cc->backends[j].text);
            be->cluster = (int)i;
            be->index = (int)b->nbackends++;
        }
    }
    return 0;
}

void balancer_free(struct balancer *b) {
    for (size_t i = 0; i < b->nclusters; i++)
        free(b->clusters[i].backends);
    free(b->clusters);
    *b = (struct balancer){0};
}

struct backend *balancer_pick(struct balancer *b, int cluster, const struct backend *avoid) {
    struct cluster_rt *c = &b->clusters[cluster];
    if (!c->n) return NULL;
    unsigned i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
    struct backend *be = &c->backends[i % c->n];
    if (be == avoid && c->n > 1) be = &c->backends[(i + 1) % c->n];
    return be;
}

void balancer_report(struct balancer *b, struct backend *be, int ok, uint64_t latency_us) {
    (void)b;
    (void)be;
    (void)ok;
    (void)latency_us;
}
