/* Membership swaps under concurrent readers: worker-like threads pick and
 * release backends while a writer swaps tables (adding and removing a
 * backend each time). Run by the ASan and ThreadSanitizer builds, it fails
 * on a use after free or a data race; here it checks that every pick lands
 * on a row of a table that was current during the reader's critical section
 * and that rows are freed exactly when unused. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "testing.h"

#define READERS 3
#define SWAPS   300

static struct balancer bal;
static atomic_int stop;
static atomic_long picks, bad_rows;
static struct cluster *cluster; /* the one cluster, the same across swaps */

static void add_backend(struct cluster_config *cc, const char *text) {
    const char *err;
    struct backend_addr *b = &cc->backends[cc->nbackends++];
    snprintf(b->text, sizeof(b->text), "%s", text);
    if (net_parse_addr(text, NULL, &b->addr, &err) < 0) abort();
}

static void make_config(struct proxy_config *cfg, int variant) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->nclusters = 1;
    cfg->clusters = calloc(1, sizeof(*cfg->clusters));
    struct cluster_config *cc = &cfg->clusters[0];
    snprintf(cc->name, sizeof(cc->name), "c");
    cc->strategy = STRATEGY_PEAK_EWMA;
    cc->health = (struct health_check){.healthy_threshold = 2, .unhealthy_threshold = 2};
    cc->backends = calloc(3, sizeof(*cc->backends));
    add_backend(cc, "127.0.0.1:9001");
    add_backend(cc, "127.0.0.1:9002");
    add_backend(cc, variant ? "127.0.0.1:9004" : "127.0.0.1:9003");
}

static void free_config(struct proxy_config *cfg) {
    free(cfg->clusters[0].backends);
    free(cfg->clusters);
}

static void *reader(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t rnd = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 50; i++) {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            struct backend *be = balancer_pick(&bal, cluster, NULL, NULL, rnd, id);
            if (!be || strncmp(be->name, "127.0.0.1:900", 13)) atomic_fetch_add(&bad_rows, 1);
            if (be) balancer_done(&bal, be, OUTCOME_OK, 200, 100 + rnd % 1000, NULL, id);
            atomic_fetch_add(&picks, 1);
        }
        balancer_quiescent(&bal, id);
    }
    return NULL;
}

int main(void) {
    struct proxy_config cfg[2];
    make_config(&cfg[0], 0);
    make_config(&cfg[1], 1);
    /* threads 0..READERS are the workers; no probe thread, no admin thread */
    CHECK(balancer_init(&bal, &cfg[0], READERS + 1) == 0);
    balancer_reader_offline(&bal, BALANCER_PROBE(&bal));
    balancer_reader_offline(&bal, BALANCER_ADMIN(&bal));
    balancer_ready(&bal);
    cluster = balancer_table(&bal)->clusters[0].id;
    pthread_t t[READERS + 1];
    for (int i = 0; i <= READERS; i++)
        pthread_create(&t[i], NULL, reader, (void *)(intptr_t)i);

    struct backend *kept = balancer_table(&bal)->clusters[0].rows[0];
    backend_ref(kept); /* held like a request in flight across all swaps */
    for (int i = 0; i < SWAPS; i++) {
        struct lb_table *next = lb_table_build(&bal, &cfg[(i + 1) % 2], balancer_table(&bal));
        CHECK(next != NULL);
        if (next) balancer_swap(&bal, next);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i <= READERS; i++)
        pthread_join(t[i], NULL);

    struct lb_table *last = balancer_table(&bal);
    CHECK(last->clusters[0].n == 3);
    CHECK(last->clusters[0].rows[0] == kept); /* rows are reused across swaps */
    CHECK(last->clusters[0].id == cluster);
    CHECK(!atomic_load(&kept->removed));
    CHECK(atomic_load(&kept->inflight) == 0);
    CHECK(atomic_load(&bad_rows) == 0);
    CHECK(atomic_load(&picks) > 0);
    printf("%ld picks during %d swaps\n", atomic_load(&picks), SWAPS);
    backend_unref(kept);
    balancer_free(&bal);
    free_config(&cfg[0]);
    free_config(&cfg[1]);
    return test_summary();
}
