/* Each strategy's choice on hand-built latency tables: ordinary cases, ties,
 * all unhealthy, a single backend, the backend to avoid; weights, slow
 * start, the failure penalty and the panic rule, as shares of many picks
 * (the random bits are a seeded generator: the counts are deterministic,
 * and the margins are many standard deviations wide all the same). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "ev.h"
#include "log.h"
#include "testing.h"

#define N 4

static struct backend backends_mem[N];
static struct backend *backends[N];
static struct cluster cluster = {.name = "c", .healthy_threshold = 2, .unhealthy_threshold = 2};

static void reset(void) {
    memset(backends_mem, 0, sizeof(backends_mem));
    for (int i = 0; i < N; i++) {
        backends[i] = &backends_mem[i];
        backends_mem[i].cluster = &cluster;
        atomic_store(&backends_mem[i].healthy, 1);
        atomic_store(&backends_mem[i].refs, 1);
        atomic_store(&backends_mem[i].weight, 1);
        pthread_mutex_init(&backends_mem[i].note_lock, NULL);
    }
}

/* The workers' generator (xorshift64*), not strategy.c's own xorshift: a
 * pick's random bits must not be the previous pick's draws. */
static uint64_t rng = 88172645463325252ull;
static uint64_t next_random(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static const enum strategy all_strategies[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST,
                                               STRATEGY_LEAST_OUTSTANDING, STRATEGY_ROUND_ROBIN,
                                               STRATEGY_RANDOM};
#define NSTRATEGIES (sizeof(all_strategies) / sizeof(all_strategies[0]))

#define PICKS 100000

/* How often each of rs[0..n) is chosen over many picks at now_ms; counts[n]
 * gets the picks that returned NULL. */
static void tally_backends(enum strategy s, struct backend *const *rs, size_t n, int picks,
                           int *counts, const struct backend *avoid, int64_t now_ms,
                           int slow_start_ms) {
    atomic_uint next = 0;
    memset(counts, 0, sizeof(int) * (n + 1));
    for (int i = 0; i < picks; i++) {
        struct pick pk = {.avoid = avoid,
                          .next = &next,
                          .rnd = next_random(),
                          .now_ms = now_ms,
                          .slow_start_ms = slow_start_ms};
        struct backend *be = strategy_pick(s, rs, n, &pk);
        size_t j = 0;
        while (j < n && rs[j] != be)
            j++;
        counts[j]++;
    }
}

/* How often each backend is chosen over many picks. */
static void tally(enum strategy s, int picks, int counts[N + 1], const struct backend *avoid) {
    tally_backends(s, backends, N, picks, counts, avoid, 1000, 0);
}

/* A share within tol of what is expected, naming the strategy when not. */
#define CHECK_SHARE(s, count, picks, expect, tol)                                                  \
    check_share(__FILE__, __LINE__, s, #count, count, picks, expect, tol)
static void check_share(const char *file, int line, enum strategy s, const char *what, int count,
                        int picks, double expect, double tol) {
    double got = (double)count / picks;
    if (fabs(got - expect) <= tol) {
        t_passed++;
    } else {
        t_failed++;
        fprintf(stderr, "%s:%d: %s: share of %s is %.4f, expected %.4f +- %.4f\n", file, line,
                strategy_name(s), what, got, expect, tol);
    }
}

/* A share at most max. */
#define CHECK_SHARE_BELOW(s, count, picks, max)                                                    \
    check_share_below(__FILE__, __LINE__, s, #count, count, picks, max)
static void check_share_below(const char *file, int line, enum strategy s, const char *what,
                              int count, int picks, double max) {
    double got = (double)count / picks;
    if (got <= max) {
        t_passed++;
    } else {
        t_failed++;
        fprintf(stderr, "%s:%d: %s: share of %s is %.4f, expected at most %.4f\n", file, line,
                strategy_name(s), what, got, max);
    }
}

static void test_all_unhealthy(void) {
    enum strategy all[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST, STRATEGY_LEAST_OUTSTANDING,
                           STRATEGY_ROUND_ROBIN, STRATEGY_RANDOM};
    reset();
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].healthy, 0);
    atomic_uint next = 0;
    struct pick pk = {.next = &next, .rnd = 1, .now_ms = 1000};
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++)
        CHECK(strategy_pick(all[k], backends, N, &pk) == NULL);
    CHECK(strategy_pick(STRATEGY_PEAK_EWMA, backends, 0, &pk) == NULL);
}

static void test_single_backend(void) {
    enum strategy all[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST, STRATEGY_LEAST_OUTSTANDING,
                           STRATEGY_ROUND_ROBIN, STRATEGY_RANDOM};
    reset();
    atomic_uint next = 0;
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        struct pick pk = {.next = &next, .rnd = next_random(), .now_ms = 1000};
        CHECK(strategy_pick(all[k], backends, 1, &pk) == backends[0]);
        /* the one to avoid is all there is: better a second try than none */
        pk.avoid = backends[0];
        CHECK(strategy_pick(all[k], backends, 1, &pk) == backends[0]);
    }
}

static void test_round_robin(void) {
    reset();
    atomic_store(&backends_mem[2].healthy, 0);
    int counts[N + 1];
    tally(STRATEGY_ROUND_ROBIN, 300, counts, NULL);
    CHECK(counts[0] == 100 && counts[1] == 100 && counts[3] == 100 && counts[2] == 0);
}

static void test_random(void) {
    reset();
    int counts[N + 1];
    tally(STRATEGY_RANDOM, 4000, counts, &backends_mem[1]);
    CHECK(counts[1] == 0);
    for (int i = 0; i < N; i++)
        if (i != 1) CHECK(counts[i] > 1100 && counts[i] < 1567);
}

static void test_least_outstanding(void) {
    reset();
    atomic_store(&backends_mem[0].inflight, 5);
    atomic_store(&backends_mem[1].inflight, 2);
    atomic_store(&backends_mem[2].inflight, 7);
    atomic_store(&backends_mem[3].inflight, 2);
    int counts[N + 1];
    tally(STRATEGY_LEAST_OUTSTANDING, 1000, counts, NULL);
    CHECK(counts[0] == 0 && counts[2] == 0);
    CHECK(counts[1] > 300 && counts[3] > 300); /* the tie is shared */
    tally(STRATEGY_LEAST_OUTSTANDING, 100, counts, &backends_mem[1]);
    CHECK(counts[3] == 100);
}

static void test_fastest(void) {
    reset();
    atomic_store(&backends_mem[0].probe_us, 900);
    atomic_store(&backends_mem[1].probe_us, 300);
    atomic_store(&backends_mem[2].probe_us, 0); /* never probed: last resort */
    atomic_store(&backends_mem[3].probe_us, 50000);
    int counts[N + 1];
    tally(STRATEGY_FASTEST, 100, counts, NULL);
    CHECK(counts[1] == 100);
    atomic_store(&backends_mem[1].healthy, 0);
    tally(STRATEGY_FASTEST, 100, counts, NULL);
    CHECK(counts[0] == 100);
    atomic_store(&backends_mem[0].probe_us, 50000); /* tie between 0 and 3 */
    tally(STRATEGY_FASTEST, 1000, counts, NULL);
    CHECK(counts[0] > 300 && counts[3] > 300 && counts[2] == 0);
}

static void test_peak_ewma(void) {
    reset();
    for (int i = 0; i < N; i++)
        backend_sample(&backends_mem[i], 2000);
    backend_sample(&backends_mem[3], 50000); /* slower: the peak is taken at once */
    CHECK(backend_ewma_us(&backends_mem[3]) > 49000);
    int counts[N + 1];
    tally(STRATEGY_PEAK_EWMA, 3000, counts, NULL);
    CHECK(counts[3] == 0); /* in any pair with a fast one, the slow one loses */
    for (int i = 0; i < 3; i++)
        CHECK(counts[i] > 800);
    /* in-flight requests raise the score: a busy fast backend loses too */
    atomic_store(&backends_mem[0].inflight, 100);
    tally(STRATEGY_PEAK_EWMA, 3000, counts, NULL);
    CHECK(counts[0] == 0);
    CHECK(counts[3] > 0 && counts[3] < 600);
    /* equal backends share the load: no herding */
    reset();
    for (int i = 0; i < N; i++)
        backend_sample(&backends_mem[i], 300 + 100 * (uint64_t)i);
    tally(STRATEGY_PEAK_EWMA, 4000, counts, NULL);
    for (int i = 0; i < N; i++)
        CHECK(counts[i] > 700);
}

static void test_ewma_decays(void) {
    reset();
    backend_sample(&backends_mem[0], 50000);
    double peak = backend_ewma_us(&backends_mem[0]);
    backend_sample(&backends_mem[0], 1000); /* right after: barely moves */
    CHECK(backend_ewma_us(&backends_mem[0]) > peak * 0.95);
}

static void test_health_thresholds(void) {
    reset();
    struct backend *be = &backends_mem[0];
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

/* ---- weights ---- */

static void set_weights(int w0, int w1, int w2, int w3) {
    int w[N] = {w0, w1, w2, w3};
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].weight, w[i]);
}

/* Weights 3,1,1,1: half of the picks go to the first backend, a sixth to each
 * other one (100k picks: ±2% is over ten standard deviations). */
static void check_3111(enum strategy s, const int *counts) {
    CHECK_SHARE(s, counts[0], PICKS, 0.5, 0.02);
    for (int i = 1; i < N; i++)
        CHECK_SHARE(s, counts[i], PICKS, 1.0 / 6, 0.02);
    CHECK(counts[N] == 0);
}

static void test_weights(void) {
    int counts[N + 1];
    enum strategy plain[] = {STRATEGY_RANDOM, STRATEGY_ROUND_ROBIN};
    for (size_t k = 0; k < 2; k++) {
        reset();
        set_weights(3, 1, 1, 1);
        tally(plain[k], PICKS, counts, NULL);
        check_3111(plain[k], counts);
    }
    /* round-robin's weighted order is a low-discrepancy sequence: the shares
     * are exact within a few picks, over any stretch of them */
    tally(STRATEGY_ROUND_ROBIN, 600, counts, NULL);
    CHECK(abs(counts[0] - 300) <= 3 && abs(counts[1] - 100) <= 3 && abs(counts[3] - 100) <= 3);

    /* peak-ewma, equal EWMA and nothing in flight: the weighted first draw stands */
    reset();
    set_weights(3, 1, 1, 1);
    for (int i = 0; i < N; i++)
        backend_sample(&backends_mem[i], 2000);
    tally(STRATEGY_PEAK_EWMA, PICKS, counts, NULL);
    check_3111(STRATEGY_PEAK_EWMA, counts);
    /* ... and in flight per unit of weight: 3 on the heavy one is 1 each elsewhere */
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].inflight, i ? 1 : 3);
    tally(STRATEGY_PEAK_EWMA, PICKS, counts, NULL);
    check_3111(STRATEGY_PEAK_EWMA, counts);

    /* least-outstanding: nothing in flight anywhere, or the same per unit of
     * weight, is a tie, and ties go by weight */
    reset();
    set_weights(3, 1, 1, 1);
    tally(STRATEGY_LEAST_OUTSTANDING, PICKS, counts, NULL);
    check_3111(STRATEGY_LEAST_OUTSTANDING, counts);
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].inflight, i ? 2 : 6);
    tally(STRATEGY_LEAST_OUTSTANDING, PICKS, counts, NULL);
    check_3111(STRATEGY_LEAST_OUTSTANDING, counts);
    /* the same count everywhere is less per unit of weight on the heavy one */
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].inflight, 2);
    tally(STRATEGY_LEAST_OUTSTANDING, 1000, counts, NULL);
    CHECK(counts[0] == 1000);

    /* fastest ranks by probe latency per unit of weight: equal probes, the
     * heavy one; one 4x slower than the rest (more than its weight makes up),
     * the others share the tie evenly */
    reset();
    set_weights(3, 1, 1, 1);
    for (int i = 0; i < N; i++)
        atomic_store(&backends_mem[i].probe_us, 500);
    tally(STRATEGY_FASTEST, 1000, counts, NULL);
    CHECK(counts[0] == 1000);
    atomic_store(&backends_mem[0].probe_us, 2000);
    tally(STRATEGY_FASTEST, PICKS, counts, NULL);
    CHECK(counts[0] == 0);
    for (int i = 1; i < N; i++)
        CHECK_SHARE(STRATEGY_FASTEST, counts[i], PICKS, 1.0 / 3, 0.02);

    /* weight 0: no new requests, whatever else the backend has going for it */
    for (size_t k = 0; k < NSTRATEGIES; k++) {
        enum strategy s = all_strategies[k];
        reset();
        set_weights(0, 1, 1, 1);
        for (int i = 0; i < N; i++) {
            backend_sample(&backends_mem[i], i ? 5000 : 100);
            atomic_store(&backends_mem[i].probe_us, i ? 5000 : 100);
            atomic_store(&backends_mem[i].inflight, i ? 5 : 0);
        }
        CHECK(!backend_available(&backends_mem[0], 1000));
        tally(s, 3000, counts, NULL);
        CHECK(counts[0] == 0 && counts[N] == 0);
        /* not even as the last resort after the one to avoid */
        atomic_store(&backends_mem[2].healthy, 0);
        atomic_store(&backends_mem[3].healthy, 0);
        tally(s, 300, counts, &backends_mem[1]);
        CHECK(counts[1] == 300);
        /* nor in a panic (everything else ejected) */
        for (int i = 1; i < N; i++)
            atomic_store(&backends_mem[i].ejected_until, 1000000);
        tally(s, 300, counts, NULL);
        CHECK(counts[1] == 300);
        /* all weight 0: none */
        set_weights(0, 0, 0, 0);
        tally(s, 100, counts, NULL);
        CHECK(counts[N] == 100);
    }
}

/* ---- slow start ---- */

#define JOINED 1000000
#define RAMP   10000

/* Row 0 joined at JOINED with a ramp of RAMP ms; the others at full weight 1. */
static void ramping(void) {
    reset();
    atomic_store(&backends_mem[0].joined_ms, JOINED);
    for (int i = 0; i < N; i++) {
        backend_sample(&backends_mem[i], 2000);
        atomic_store(&backends_mem[i].probe_us, 500);
    }
}

/* Row 0's share when its weight is `ramp` of the others'. */
static double ramp_share(double ramp) {
    return ramp / (ramp + N - 1);
}

static void test_slow_start(void) {
    int counts[N + 1];
    enum strategy shared[] = {STRATEGY_RANDOM, STRATEGY_ROUND_ROBIN, STRATEGY_PEAK_EWMA,
                              STRATEGY_LEAST_OUTSTANDING};
    for (size_t k = 0; k < sizeof(shared) / sizeof(shared[0]); k++) {
        enum strategy s = shared[k];
        ramping();
        /* 5% into the ramp: 5% of its weight, well below a quarter of its full share */
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED + RAMP / 20, RAMP);
        CHECK_SHARE(s, counts[0], PICKS, ramp_share(0.05), 0.01);
        CHECK((double)counts[0] / PICKS < 0.25 / 4);
        CHECK(counts[0] > 0);
        /* halfway: half its weight */
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED + RAMP / 2, RAMP);
        CHECK_SHARE(s, counts[0], PICKS, ramp_share(0.5), 0.02);
        /* at the end of the ramp and after: its full share */
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED + RAMP, RAMP);
        for (int i = 0; i < N; i++)
            CHECK_SHARE(s, counts[i], PICKS, 0.25, 0.02);
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED + 10 * RAMP, RAMP);
        CHECK_SHARE(s, counts[0], PICKS, 0.25, 0.02);
        /* just joined: a small share at once (the floor), not none */
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED, RAMP);
        CHECK(counts[0] > 0 && (double)counts[0] / PICKS < 0.01);
        /* slow start off: joined_ms means nothing */
        tally_backends(s, backends, N, PICKS, counts, NULL, JOINED + 1, 0);
        CHECK_SHARE(s, counts[0], PICKS, 0.25, 0.02);
    }
    /* the ramp is a weight: it combines with the configured one */
    ramping();
    atomic_store(&backends_mem[0].weight, 3);
    CHECK(fabs(backend_weight(&backends_mem[0], RAMP, JOINED + RAMP / 2) - 1.5) < 1e-9);
    CHECK(fabs(backend_weight(&backends_mem[0], RAMP, JOINED + RAMP) - 3) < 1e-9);
    CHECK(fabs(backend_weight(&backends_mem[1], RAMP, JOINED) - 1) < 1e-9);
    tally_backends(STRATEGY_RANDOM, backends, N, PICKS, counts, NULL, JOINED + RAMP / 2, RAMP);
    CHECK_SHARE(STRATEGY_RANDOM, counts[0], PICKS, 1.5 / 4.5, 0.02);

    /* fastest: probe latency per unit of weight, so a ramping backend of equal
     * latency loses until its ramp is over */
    ramping();
    tally_backends(STRATEGY_FASTEST, backends, N, 3000, counts, NULL, JOINED + RAMP / 2, RAMP);
    CHECK(counts[0] == 0);
    tally_backends(STRATEGY_FASTEST, backends, N, PICKS, counts, NULL, JOINED + RAMP, RAMP);
    CHECK_SHARE(STRATEGY_FASTEST, counts[0], PICKS, 0.25, 0.02);
}

/* ---- the panic rule ---- */

static void test_panic(void) {
    int counts[N + 1];
    for (size_t k = 0; k < NSTRATEGIES; k++) {
        enum strategy s = all_strategies[k];
        reset();
        for (int i = 0; i < N; i++) {
            backend_sample(&backends_mem[i], 2000);
            atomic_store(&backends_mem[i].probe_us, 500);
        }
        /* an ejected backend is out while anything else is available */
        atomic_store(&backends_mem[1].ejected_until, 2000);
        CHECK(!backend_available(&backends_mem[1], 1000));
        CHECK(backend_available(&backends_mem[1], 2000)); /* over at ejected_until */
        tally(s, 3000, counts, NULL);
        CHECK(counts[1] == 0 && counts[N] == 0);
        /* all but one ejected: that one, however it compares */
        atomic_store(&backends_mem[0].ejected_until, 2000);
        atomic_store(&backends_mem[2].ejected_until, 2000);
        atomic_store(&backends_mem[3].probe_us, 50000);
        backend_sample(&backends_mem[3], 90000);
        atomic_store(&backends_mem[3].inflight, 50);
        tally(s, 300, counts, NULL);
        CHECK(counts[3] == 300);
        /* all available ones ejected: the healthy ejected ones serve (better
         * an outlier than a 503), never the unhealthy */
        reset();
        for (int i = 0; i < N; i++) {
            backend_sample(&backends_mem[i], 2000);
            atomic_store(&backends_mem[i].probe_us, 500);
            atomic_store(&backends_mem[i].ejected_until, i < 2 ? 0 : 2000);
        }
        atomic_store(&backends_mem[0].healthy, 0);
        atomic_store(&backends_mem[1].healthy, 0);
        tally(s, 10000, counts, NULL);
        CHECK(counts[N] == 0 && counts[0] == 0 && counts[1] == 0);
        CHECK(counts[2] > 0 && counts[3] > 0);
        if (s != STRATEGY_FASTEST && s != STRATEGY_LEAST_OUTSTANDING) {
            CHECK_SHARE(s, counts[2], 10000, 0.5, 0.05);
        }
        /* the avoided one too when it is all there is */
        atomic_store(&backends_mem[3].healthy, 0);
        tally(s, 300, counts, &backends_mem[2]);
        CHECK(counts[2] == 300);
        /* every backend ejected and healthy */
        reset();
        for (int i = 0; i < N; i++) {
            backend_sample(&backends_mem[i], 2000);
            atomic_store(&backends_mem[i].probe_us, 500);
            atomic_store(&backends_mem[i].ejected_until, 2000);
        }
        tally(s, 4000, counts, NULL);
        CHECK(counts[N] == 0);
        for (int i = 0; i < N; i++)
            CHECK(counts[i] > 500);
        /* and nothing healthy at all: none */
        for (int i = 0; i < N; i++)
            atomic_store(&backends_mem[i].healthy, 0);
        tally(s, 100, counts, NULL);
        CHECK(counts[N] == 100);
    }
}

/* ---- the failure penalty (backends of a real balancer: answers go through balancer_done) ---- */

static struct proxy_config pcfg;
static struct balancer *bal;

static void add_backend(struct cluster_config *cc, const char *text) {
    const char *err;
    struct backend_addr *b = &cc->backends[cc->nbackends++];
    snprintf(b->text, sizeof(b->text), "%s", text);
    if (net_parse_addr(text, NULL, &b->addr, &err) < 0) abort();
}

static void first_cluster(const struct table_cluster *c, void *arg) {
    const struct table_cluster **first = arg;
    if (!*first) *first = c;
}

/* One cluster of N backends, outlier detection off: only the penalty acts.
 * The test is worker 0, online from the start; nothing swaps the table. */
static const struct table_cluster *bal_setup(void) {
    memset(&pcfg, 0, sizeof(pcfg));
    pcfg.nclusters = 1;
    pcfg.clusters = calloc(1, sizeof(*pcfg.clusters));
    struct cluster_config *cc = &pcfg.clusters[0];
    snprintf(cc->name, sizeof(cc->name), "c");
    cc->health = (struct health_check){.healthy_threshold = 2, .unhealthy_threshold = 2};
    cc->backends = calloc(N, sizeof(*cc->backends));
    for (int i = 0; i < N; i++) {
        char text[32];
        snprintf(text, sizeof(text), "127.0.0.1:%d", 9101 + i);
        add_backend(cc, text);
    }
    if (!(bal = balancer_new(&pcfg, 1))) abort();
    balancer_ready(bal);
    const struct table_cluster *c = NULL;
    balancer_each_cluster(bal, first_cluster, &c);
    if (!c) abort();
    return c;
}

static void bal_teardown(const struct table_cluster *c) {
    for (size_t i = 0; i < c->n; i++)
        CHECK(atomic_load(&c->backends[i]->inflight) == 0);
    balancer_free(bal);
    free(pcfg.clusters[0].backends);
    free(pcfg.clusters);
}

/* One request to be (picked by name, as stickiness does) and its answer. */
static void answer(struct backend *be, enum outcome o, int status, uint64_t latency_us) {
    struct backend *got = balancer_pick(bal, be->cluster, NULL, be->name, next_random(), 0);
    CHECK(got == be);
    if (got) balancer_done(bal, got, got == be ? o : OUTCOME_NEUTRAL, status, latency_us, "t", 0);
}

static void test_failure_penalty(void) {
    int counts[N + 1];
    enum strategy ranked[] = {STRATEGY_PEAK_EWMA, STRATEGY_FASTEST, STRATEGY_LEAST_OUTSTANDING};
    const struct table_cluster *c = bal_setup();
    CHECK(c->n == N && !c->cfg->outlier.enabled);
    struct backend *const *r = c->backends;
    /* backend 0 answers in 100 µs where the others take 20 ms; probes alike */
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 20; k++)
            answer(r[i], OUTCOME_OK, 200, i ? 20000 : 100);
        atomic_store(&r[i]->probe_us, i ? 20000 : 100);
    }
    CHECK(backend_error_share(r[0], (int64_t)ev_clock_ms()) == 0);
    tally_backends(STRATEGY_FASTEST, r, N, 1000, counts, NULL, (int64_t)ev_clock_ms(), 0);
    CHECK(counts[0] == 1000); /* fast and well: all of fastest's traffic */
    tally_backends(STRATEGY_PEAK_EWMA, r, N, PICKS, counts, NULL, (int64_t)ev_clock_ms(), 0);
    CHECK((double)counts[0] / PICKS > 0.4); /* and most of peak-ewma's */

    /* then its last 40 answers are 5xx, as fast as ever: a fast failure must
     * not look fast */
    for (int k = 0; k < 40; k++)
        answer(r[0], OUTCOME_OK, 500, 100);
    int64_t now = (int64_t)ev_clock_ms();
    CHECK(backend_error_share(r[0], now) > 0.6);
    CHECK(backend_error_share(r[1], now) == 0);
    CHECK(backend_ewma_us(r[0]) < 200); /* still the lowest EWMA of the cluster */
    for (int i = 1; i < N; i++)
        CHECK(backend_ewma_us(r[0]) < backend_ewma_us(r[i]));
    for (size_t k = 0; k < 3; k++) {
        tally_backends(ranked[k], r, N, PICKS, counts, NULL, now, 0);
        CHECK_SHARE_BELOW(ranked[k], counts[0], PICKS, 0.05);
        CHECK(counts[N] == 0);
    }
    /* equal probes: the same */
    for (int i = 0; i < N; i++)
        atomic_store(&r[i]->probe_us, 500);
    tally_backends(STRATEGY_FASTEST, r, N, PICKS, counts, NULL, now, 0);
    CHECK_SHARE_BELOW(STRATEGY_FASTEST, counts[0], PICKS, 0.05);
    /* random and round-robin do not rank: they keep sending it its share
     * (outlier detection is what takes it out) */
    tally_backends(STRATEGY_RANDOM, r, N, PICKS, counts, NULL, now, 0);
    CHECK_SHARE(STRATEGY_RANDOM, counts[0], PICKS, 0.25, 0.02);
    /* live failures (resets, timeouts) count as much as 5xx */
    atomic_store(&r[1]->errors, 0);
    for (int k = 0; k < 40; k++)
        answer(r[1], OUTCOME_FAILED, 0, 0);
    now = (int64_t)ev_clock_ms(); /* the share is stamped with the clock of its last answer */
    CHECK(backend_error_share(r[1], now) > 0.6);
    CHECK(atomic_load(&r[1]->healthy) == 1); /* health is the probes' */
    tally_backends(STRATEGY_LEAST_OUTSTANDING, r, N, PICKS, counts, NULL, now, 0);
    CHECK_SHARE_BELOW(STRATEGY_LEAST_OUTSTANDING, counts[1], PICKS, 0.05);
    /* 404s are answers, not failures */
    atomic_store(&r[2]->errors, 0);
    for (int k = 0; k < 20; k++)
        answer(r[2], OUTCOME_OK, 404, 5000);
    CHECK(backend_error_share(r[2], now) == 0);
    /* the share forgets: with the EWMA's time constant (5 s), and with each good answer */
    CHECK(backend_error_share(r[0], now + 5000) < backend_error_share(r[0], now) * 0.4);
    double before = backend_error_share(r[0], now);
    answer(r[0], OUTCOME_OK, 200, 100);
    CHECK(backend_error_share(r[0], (int64_t)ev_clock_ms()) < before);
    bal_teardown(c);

    /* a single failure among many successes (1 in 100), followed by more of
     * them, leaves a share within a few % of the others' under peak-ewma */
    c = bal_setup();
    r = c->backends;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 100; k++)
            answer(r[i], OUTCOME_OK, i == 0 && k == 50 ? 502 : 200, 2000);
    now = (int64_t)ev_clock_ms();
    tally_backends(STRATEGY_PEAK_EWMA, r, N, PICKS, counts, NULL, now, 0);
    for (int i = 0; i < N; i++)
        CHECK_SHARE(STRATEGY_PEAK_EWMA, counts[i], PICKS, 0.25, 0.03);
    /* least-outstanding: the residue of that failure (a share of 2e-4, a
     * penalty of 3e-5 requests) loses it every tie of equal counts in flight */
    tally_backends(STRATEGY_LEAST_OUTSTANDING, r, N, PICKS, counts, NULL, now, 0);
    CHECK(fabs((double)counts[0] / PICKS - 0.25) < 0.03);
    /* ... and only a success clears it: with none, the share decays to 0 only
     * when its float underflows (~500 s) */
    tally_backends(STRATEGY_LEAST_OUTSTANDING, r, N, PICKS, counts, NULL, now + 60000, 0);
    CHECK(fabs((double)counts[0] / PICKS - 0.25) < 0.03);
    bal_teardown(c);

    /* the same single failure as its latest answer: a share of 1/8 at once,
     * a penalty of 15.6 ms, and with 2 ms answers it loses every pair for
     * ~10 s (DESIGN: sporadic failures on a busy backend never take it out) */
    c = bal_setup();
    r = c->backends;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 100; k++)
            answer(r[i], OUTCOME_OK, i == 0 && k == 99 ? 502 : 200, 2000);
    now = (int64_t)ev_clock_ms();
    CHECK(backend_error_share(r[0], now) < 0.13);
    tally_backends(STRATEGY_PEAK_EWMA, r, N, PICKS, counts, NULL, now, 0);
    CHECK(fabs((double)counts[0] / PICKS - 0.25) < 0.05);
    tally_backends(STRATEGY_PEAK_EWMA, r, N, PICKS, counts, NULL, now + 20000, 0);
    CHECK_SHARE(STRATEGY_PEAK_EWMA, counts[0], PICKS, 0.25, 0.03); /* back 20 s later */
    bal_teardown(c);
}

/* The packed stamps are ms of ev_clock_ms() mod 2^32, and workers race: one
 * reads the clock, another stamps a backend with the next ms, then the first
 * reads or updates that backend. An age "below 0" must count as 0, not as 49
 * days. */
static void test_stamp_ahead(void) {
    const struct table_cluster *c = bal_setup();
    struct backend *const *r = c->backends;
    for (int k = 0; k < 40; k++)
        answer(r[0], OUTCOME_FAILED, 0, 0);
    uint32_t stamp = (uint32_t)atomic_load(&r[0]->errors);
    double share = backend_error_share(r[0], stamp);
    CHECK(share > 0.6);
    CHECK(backend_error_share(r[0], (int64_t)stamp - 1) > share * 0.99);
    /* a failure recorded with a clock behind the stamp */
    uint64_t v = atomic_load(&r[0]->errors);
    atomic_store(&r[0]->errors, (v & 0xffffffff00000000ull) | (uint32_t)(ev_clock_ms() + 5));
    answer(r[0], OUTCOME_FAILED, 0, 0);
    CHECK(backend_error_share(r[0], (int64_t)ev_clock_ms() + 1) > share);
    /* the peak EWMA too: a fast sample replaces it whole */
    backend_sample(r[1], 50000);
    v = atomic_load(&r[1]->ewma);
    atomic_store(&r[1]->ewma, (v & 0xffffffff00000000ull) | (uint32_t)(ev_clock_ms() + 5));
    backend_sample(r[1], 1000);
    CHECK(backend_ewma_us(r[1]) > 45000);
    bal_teardown(c);
}

int main(void) {
    log_init("test_strategy", LOG_ERROR);
    test_all_unhealthy();
    test_single_backend();
    test_round_robin();
    test_random();
    test_least_outstanding();
    test_fastest();
    test_peak_ewma();
    test_ewma_decays();
    test_health_thresholds();
    test_weights();
    test_slow_start();
    test_panic();
    test_failure_penalty();
    test_stamp_ahead();
    return test_summary();
}
