/* Each strategy's choice on hand-built latency tables: ordinary cases, ties,
 * all unhealthy, a single backend, the backend to avoid. */
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "testing.h"

#define N 4

static struct backend rows_mem[N];
static struct backend *rows[N];
static struct lb_cluster cluster = {.name = "c", .healthy_threshold = 2, .unhealthy_threshold = 2};

static void reset(void) {
    memset(rows_mem, 0, sizeof(rows_mem));
    for (int i = 0; i < N; i++) {
        rows[i] = &rows_mem[i];
        rows_mem[i].cluster = &cluster;
        atomic_store(&rows_mem[i].healthy, 1);
        atomic_store(&rows_mem[i].refs, 1);
        atomic_store(&rows_mem[i].weight, 1);
        pthread_mutex_init(&rows_mem[i].note_lock, NULL);
    }
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* How often each row is chosen over many picks. */
static void tally(enum strategy s, int picks, int counts[N], const struct backend *avoid) {
    atomic_uint next = 0;
    memset(counts, 0, sizeof(int) * N);
    for (int i = 0; i < picks; i++) {
        struct pick pk = {.avoid = avoid, .next = &next, .rnd = next_random(), .now_ms = 1000};
        struct backend *be = strategy_pick(s, rows, N, &pk);
        if (be) counts[be - rows_mem]++;
    }
}

static void test_all_unhealthy(void) {
    enum strategy all[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST, STRATEGY_LEAST_OUTSTANDING,
                           STRATEGY_ROUND_ROBIN, STRATEGY_RANDOM};
    reset();
    for (int i = 0; i < N; i++)
        atomic_store(&rows_mem[i].healthy, 0);
    atomic_uint next = 0;
    struct pick pk = {.next = &next, .rnd = 1, .now_ms = 1000};
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++)
        CHECK(strategy_pick(all[k], rows, N, &pk) == NULL);
    CHECK(strategy_pick(STRATEGY_PEAK_EWMA, rows, 0, &pk) == NULL);
}

static void test_single_backend(void) {
    enum strategy all[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST, STRATEGY_LEAST_OUTSTANDING,
                           STRATEGY_ROUND_ROBIN, STRATEGY_RANDOM};
    reset();
    atomic_uint next = 0;
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        struct pick pk = {.next = &next, .rnd = next_random(), .now_ms = 1000};
        CHECK(strategy_pick(all[k], rows, 1, &pk) == rows[0]);
        /* the one to avoid is all there is: better a second try than none */
        pk.avoid = rows[0];
        CHECK(strategy_pick(all[k], rows, 1, &pk) == rows[0]);
    }
}

static void test_round_robin(void) {
    reset();
    atomic_store(&rows_mem[2].healthy, 0);
    int counts[N];
    tally(STRATEGY_ROUND_ROBIN, 300, counts, NULL);
    CHECK(counts[0] == 100 && counts[1] == 100 && counts[3] == 100 && counts[2] == 0);
}

static void test_random(void) {
    reset();
    int counts[N];
    tally(STRATEGY_RANDOM, 4000, counts, &rows_mem[1]);
    CHECK(counts[1] == 0);
    for (int i = 0; i < N; i++)
        if (i != 1) CHECK(counts[i] > 1100 && counts[i] < 1567);
}

static void test_least_outstanding(void) {
    reset();
    atomic_store(&rows_mem[0].inflight, 5);
    atomic_store(&rows_mem[1].inflight, 2);
    atomic_store(&rows_mem[2].inflight, 7);
    atomic_store(&rows_mem[3].inflight, 2);
    int counts[N];
    tally(STRATEGY_LEAST_OUTSTANDING, 1000, counts, NULL);
    CHECK(counts[0] == 0 && counts[2] == 0);
    CHECK(counts[1] > 300 && counts[3] > 300); /* the tie is shared */
    tally(STRATEGY_LEAST_OUTSTANDING, 100, counts, &rows_mem[1]);
    CHECK(counts[3] == 100);
}

static void test_fastest(void) {
    reset();
    atomic_store(&rows_mem[0].probe_us, 900);
    atomic_store(&rows_mem[1].probe_us, 300);
    atomic_store(&rows_mem[2].probe_us, 0); /* never probed: last resort */
    atomic_store(&rows_mem[3].probe_us, 50000);
    int counts[N];
    tally(STRATEGY_FASTEST, 100, counts, NULL);
    CHECK(counts[1] == 100);
    atomic_store(&rows_mem[1].healthy, 0);
    tally(STRATEGY_FASTEST, 100, counts, NULL);
    CHECK(counts[0] == 100);
    atomic_store(&rows_mem[0].probe_us, 50000); /* tie between 0 and 3 */
    tally(STRATEGY_FASTEST, 1000, counts, NULL);
    CHECK(counts[0] > 300 && counts[3] > 300 && counts[2] == 0);
}

static void test_peak_ewma(void) {
    reset();
    for (int i = 0; i < N; i++)
        backend_sample(&rows_mem[i], 2000);
    backend_sample(&rows_mem[3], 50000); /* slower: the peak is taken at once */
    CHECK(backend_ewma_us(&rows_mem[3]) > 49000);
    int counts[N];
    tally(STRATEGY_PEAK_EWMA, 3000, counts, NULL);
    CHECK(counts[3] == 0); /* in any pair with a fast one, the slow one loses */
    for (int i = 0; i < 3; i++)
        CHECK(counts[i] > 800);
    /* in-flight requests raise the score: a busy fast backend loses too */
    atomic_store(&rows_mem[0].inflight, 100);
    tally(STRATEGY_PEAK_EWMA, 3000, counts, NULL);
    CHECK(counts[0] == 0);
    CHECK(counts[3] > 0 && counts[3] < 600);
    /* equal backends share the load: no herding */
    reset();
    for (int i = 0; i < N; i++)
        backend_sample(&rows_mem[i], 300 + 100 * (uint64_t)i);
    tally(STRATEGY_PEAK_EWMA, 4000, counts, NULL);
    for (int i = 0; i < N; i++)
        CHECK(counts[i] > 700);
}

static void test_ewma_decays(void) {
    reset();
    backend_sample(&rows_mem[0], 50000);
    double peak = backend_ewma_us(&rows_mem[0]);
    backend_sample(&rows_mem[0], 1000); /* right after: barely moves */
    CHECK(backend_ewma_us(&rows_mem[0]) > peak * 0.95);
}

static void test_health_thresholds(void) {
    reset();
    struct backend *be = &rows_mem[0];
    backend_observe(be, 0, "x");
    CHECK(atomic_load(&be->healthy) == 1); /* 1 failure < 2 */
    backend_observe(be, 1, "ok");
    backend_observe(be, 0, "x");
    CHECK(atomic_load(&be->healthy) == 1); /* not consecutive */
    backend_observe(be, 0, "x");
    CHECK(atomic_load(&be->healthy) == 0);
    backend_observe(be, 1, "ok");
    CHECK(atomic_load(&be->healthy) == 0);
    backend_observe(be, 1, "ok");
    CHECK(atomic_load(&be->healthy) == 1);
}

int main(void) {
    test_all_unhealthy();
    test_single_backend();
    test_round_robin();
    test_random();
    test_least_outstanding();
    test_fastest();
    test_peak_ewma();
    test_ewma_decays();
    test_health_thresholds();
    return test_summary();
}
