/* Outlier detection through the balancer's public API, on a real balancer
 * built from a hand-made configuration, single-threaded: the consecutive
 * 5xx and gateway failure counts, the cap on ejections, the multiplier and
 * its decay, readmission by balancer_tick and by the active checks, and
 * that live failures never touch `healthy`. Every request is picked before
 * it is answered, as the workers do. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer.h"
#include "ev.h"
#include "log.h"
#include "testing.h"

struct fixture {
    struct proxy_config cfg;
    struct balancer *b;
    struct cluster *lc;
    struct backend *const *backends;
    size_t n;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

/* The DESIGN's defaults. */
static struct outlier_config defaults(void) {
    return (struct outlier_config){.enabled = 1,
                                   .consecutive_5xx = 5,
                                   .consecutive_gateway_failure = 3,
                                   .interval_ms = 1000,
                                   .base_ejection_ms = 30000,
                                   .max_ejection_percent = 50};
}

static void keep_cluster(const struct table_cluster *c, void *arg) {
    struct fixture *f = arg;
    f->lc = c->id;
    f->backends = c->backends;
    f->n = c->n;
}

/* One cluster of n backends; the active checks' thresholds are 3 failures
 * down, 2 passes up. No probe thread, no admin thread. */
static void setup(struct fixture *f, size_t n, struct outlier_config od, int slow_start_ms) {
    memset(f, 0, sizeof(*f));
    f->cfg.nclusters = 1;
    f->cfg.clusters = calloc(1, sizeof(*f->cfg.clusters));
    struct cluster_config *cc = &f->cfg.clusters[0];
    snprintf(cc->name, sizeof(cc->name), "c");
    cc->health = (struct health_check){.healthy_threshold = 2, .unhealthy_threshold = 3};
    cc->outlier = od;
    cc->slow_start_ms = slow_start_ms;
    cc->backends = calloc(n, sizeof(*cc->backends));
    for (size_t i = 0; i < n; i++) {
        struct backend_addr *ba = &cc->backends[cc->nbackends++];
        const char *err;
        snprintf(ba->text, sizeof(ba->text), "127.0.0.1:%zu", 9201 + i);
        if (net_parse_addr(ba->text, NULL, &ba->addr, &err) < 0) abort();
    }
    if (!(f->b = balancer_new(&f->cfg, 1))) abort();
    balancer_ready(f->b);
    balancer_each_cluster(f->b, keep_cluster, f); /* worker 0, online; nothing swaps */
    if (f->n != n) abort();
}

static void teardown(struct fixture *f) {
    for (size_t i = 0; i < f->n; i++)
        CHECK(atomic_load(&f->backends[i]->inflight) == 0);
    balancer_free(f->b);
    free(f->cfg.clusters[0].backends);
    free(f->cfg.clusters);
}

/* A request to backend i (picked by name, as stickiness does) answered so:
 * whether it went there (an unavailable backend's name falls back to the
 * strategy; that request ends neutral). */
static int answer(struct fixture *f, size_t i, enum outcome o, int status) {
    struct backend *be = f->backends[i];
    struct backend *got = balancer_pick(f->b, f->lc, NULL, be->name, next_random(), 0);
    CHECK(got != NULL);
    if (!got) return 0;
    balancer_done(f->b, got, got == be ? o : OUTCOME_NEUTRAL, status, 1000, "test failure", 0);
    return got == be;
}

static void answer_n(struct fixture *f, size_t i, int times, enum outcome o, int status) {
    for (int k = 0; k < times; k++)
        CHECK(answer(f, i, o, status));
}

static int ejected(const struct fixture *f, size_t i) {
    return backend_ejected(f->backends[i], (int64_t)ev_clock_ms());
}

static size_t ejected_count(const struct fixture *f) {
    size_t out = 0;
    for (size_t i = 0; i < f->n; i++)
        out += ejected(f, i);
    return out;
}

static unsigned long long ejections(const struct fixture *f, size_t i) {
    return atomic_load(&f->backends[i]->ejections);
}

/* Whether the backend's last health note says `what`. */
static int noted(const struct fixture *f, size_t i, const char *what) {
    int64_t changed, failed;
    char changed_why[128], failed_why[128];
    backend_notes(f->backends[i], &changed, changed_why, &failed, failed_why, sizeof(changed_why));
    return changed > 0 && strstr(changed_why, what) != NULL;
}

/* The last of `times` answers ejects backend i for `ms`: its ejected_until is
 * that long after the clock just before and just after. */
static void check_ejects(struct fixture *f, size_t i, enum outcome o, int status, int ms) {
    int64_t before = (int64_t)ev_clock_ms();
    CHECK(answer(f, i, o, status));
    int64_t after = (int64_t)ev_clock_ms();
    int64_t until = atomic_load(&f->backends[i]->ejected_until);
    CHECK(until >= before + ms && until <= after + ms);
    CHECK(ejected(f, i));
}

static void sleep_ms(int ms) {
    nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL);
}

/* Sleeps until the backend's ejection is over (by the clock; tick not called). */
static void outlast(const struct fixture *f, size_t i) {
    int64_t until = atomic_load(&f->backends[i]->ejected_until);
    while ((int64_t)ev_clock_ms() <= until)
        sleep_ms(2);
}

/* ---- consecutive gateway failures ---- */

static void test_gateway_failures(void) {
    struct fixture f;
    setup(&f, 4, defaults(), 0);
    /* two, a success, two: the success started the count again */
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    answer_n(&f, 0, 1, OUTCOME_OK, 200);
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 0) && ejections(&f, 0) == 0);
    CHECK(atomic_load(&f.backends[0]->consec_gw) == 2);
    CHECK(atomic_load(&f.backends[0]->ejected_until) == 0);
    /* the third in a row: out for base_ejection_ms */
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 30000);
    CHECK(ejections(&f, 0) == 1 && atomic_load(&f.backends[0]->times_ejected) == 1);
    CHECK(atomic_load(&f.backends[0]->consec_gw) == 0 &&
          atomic_load(&f.backends[0]->consec_5xx) == 0);
    CHECK(atomic_load(&f.backends[0]->healthy) == 1); /* ejected, not unhealthy */
    CHECK(noted(&f, 0, "gateway"));
    for (size_t i = 1; i < f.n; i++)
        CHECK(!ejected(&f, i) && ejections(&f, i) == 0);
    /* out of every pick, by name too (the cookie falls back to the strategy) */
    int hit = 0;
    for (int k = 0; k < 1000; k++) {
        struct backend *be = balancer_pick(f.b, f.lc, NULL, NULL, next_random(), 0);
        hit += be == f.backends[0];
        balancer_done(f.b, be, OUTCOME_OK, 200, 1000, NULL, 0);
    }
    CHECK(hit == 0);
    CHECK(!answer(&f, 0, OUTCOME_OK, 200));

    /* requests in flight when it is ejected: their failures do not eject it
     * again nor make it longer */
    struct backend *held[5];
    for (int k = 0; k < 5; k++) {
        held[k] = balancer_pick(f.b, f.lc, NULL, f.backends[1]->name, next_random(), 0);
        CHECK(held[k] == f.backends[1]);
    }
    CHECK(atomic_load(&f.backends[1]->inflight) == 5);
    for (int k = 0; k < 3; k++)
        balancer_done(f.b, held[k], OUTCOME_FAILED, 0, 0, "reset", 0);
    CHECK(ejected(&f, 1) && ejections(&f, 1) == 1);
    int64_t until = atomic_load(&f.backends[1]->ejected_until);
    for (int k = 3; k < 5; k++)
        balancer_done(f.b, held[k], OUTCOME_FAILED, 0, 0, "reset", 0);
    CHECK(ejections(&f, 1) == 1 && atomic_load(&f.backends[1]->ejected_until) == until);
    CHECK(atomic_load(&f.backends[1]->times_ejected) == 1);

    /* a request that ended for reasons not the backend's neither counts
     * nor resets */
    answer_n(&f, 2, 2, OUTCOME_FAILED, 0);
    answer_n(&f, 2, 1, OUTCOME_NEUTRAL, 0);
    CHECK(atomic_load(&f.backends[2]->consec_gw) == 2);
    teardown(&f);

    /* the same with nothing but the gateway detector between: F F N F ejects */
    setup(&f, 4, defaults(), 0);
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    answer_n(&f, 0, 1, OUTCOME_NEUTRAL, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 30000);
    teardown(&f);
}

/* ---- consecutive 5xx, and which answers count as what ---- */

static void test_5xx(void) {
    struct fixture f;
    setup(&f, 4, defaults(), 0);
    /* 404s are answers: they never count, and they reset */
    answer_n(&f, 2, 50, OUTCOME_OK, 404);
    CHECK(!ejected(&f, 2) && atomic_load(&f.backends[2]->consec_5xx) == 0);
    answer_n(&f, 2, 4, OUTCOME_OK, 500);
    answer_n(&f, 2, 1, OUTCOME_OK, 404);
    answer_n(&f, 2, 4, OUTCOME_OK, 500);
    CHECK(!ejected(&f, 2) && ejections(&f, 2) == 0);
    CHECK(atomic_load(&f.backends[2]->consec_5xx) == 4);
    CHECK(atomic_load(&f.backends[2]->consec_gw) == 0); /* a 500 is no gateway failure */
    answer_n(&f, 2, 1, OUTCOME_OK, 200);
    /* five 500s in a row */
    answer_n(&f, 0, 4, OUTCOME_OK, 500);
    CHECK(!ejected(&f, 0));
    check_ejects(&f, 0, OUTCOME_OK, 500, 30000);
    CHECK(ejections(&f, 0) == 1 && noted(&f, 0, "5xx"));
    /* a 503 is a gateway failure as well as a 5xx: three eject */
    answer_n(&f, 1, 2, OUTCOME_OK, 503);
    CHECK(!ejected(&f, 1));
    check_ejects(&f, 1, OUTCOME_OK, 503, 30000);
    CHECK(ejections(&f, 1) == 1 && noted(&f, 1, "gateway"));
    teardown(&f);

    setup(&f, 4, defaults(), 0);
    /* 502 and 504 too */
    answer_n(&f, 0, 2, OUTCOME_OK, 502);
    check_ejects(&f, 0, OUTCOME_OK, 504, 30000);
    CHECK(noted(&f, 0, "gateway"));
    /* a 500 between gateway failures starts the gateway count again, not
     * the 5xx one: 503 503 500 503 503 is five 5xx in a row */
    answer_n(&f, 1, 2, OUTCOME_OK, 503);
    answer_n(&f, 1, 1, OUTCOME_OK, 500);
    answer_n(&f, 1, 1, OUTCOME_OK, 503);
    CHECK(!ejected(&f, 1));
    CHECK(atomic_load(&f.backends[1]->consec_gw) == 1 &&
          atomic_load(&f.backends[1]->consec_5xx) == 4);
    check_ejects(&f, 1, OUTCOME_OK, 503, 30000);
    CHECK(noted(&f, 1, "5xx"));
    teardown(&f);

    /* a connection failure is a 5xx too: F F 500 500 500 */
    setup(&f, 4, defaults(), 0);
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    answer_n(&f, 0, 2, OUTCOME_OK, 500);
    CHECK(!ejected(&f, 0));
    check_ejects(&f, 0, OUTCOME_OK, 500, 30000);
    CHECK(noted(&f, 0, "5xx"));
    teardown(&f);

    /* each detector can be off (0) */
    struct outlier_config od = defaults();
    od.consecutive_5xx = 0;
    setup(&f, 4, od, 0);
    answer_n(&f, 0, 50, OUTCOME_OK, 500);
    CHECK(!ejected(&f, 0) && ejections(&f, 0) == 0);
    answer_n(&f, 1, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 1, OUTCOME_FAILED, 0, 30000);
    teardown(&f);
    od = defaults();
    od.consecutive_gateway_failure = 0;
    setup(&f, 4, od, 0);
    answer_n(&f, 0, 4, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 0));
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 30000);
    CHECK(noted(&f, 0, "5xx"));
    teardown(&f);
    /* and the whole of it */
    od = defaults();
    od.enabled = 0;
    setup(&f, 4, od, 0);
    answer_n(&f, 0, 50, OUTCOME_FAILED, 0);
    answer_n(&f, 1, 50, OUTCOME_OK, 503);
    CHECK(ejected_count(&f) == 0 && ejections(&f, 0) == 0 && ejections(&f, 1) == 0);
    teardown(&f);
}

/* ---- the cap ---- */

/* Every backend fails `times` times in a row (those still available). */
static void fail_all(struct fixture *f, int times) {
    for (size_t i = 0; i < f->n; i++)
        for (int k = 0; k < times && !ejected(f, i); k++)
            CHECK(answer(f, i, OUTCOME_FAILED, 0));
}

static void test_cap(void) {
    struct fixture f;
    struct outlier_config od = defaults();
    /* 4 backends, 50%: 2 */
    setup(&f, 4, od, 0);
    fail_all(&f, 10);
    CHECK(ejected_count(&f) == 2);
    CHECK(ejected(&f, 0) && ejected(&f, 1) && !ejected(&f, 2) && !ejected(&f, 3));
    unsigned long long total = 0;
    for (size_t i = 0; i < f.n; i++)
        total += ejections(&f, i);
    CHECK(total == 2);
    fail_all(&f, 10); /* still failing: still 2 */
    CHECK(ejected_count(&f) == 2);
    teardown(&f);
    /* 1 backend: never */
    setup(&f, 1, od, 0);
    answer_n(&f, 0, 100, OUTCOME_FAILED, 0);
    answer_n(&f, 0, 100, OUTCOME_OK, 500);
    CHECK(!ejected(&f, 0) && ejections(&f, 0) == 0);
    teardown(&f);
    od.max_ejection_percent = 100;
    setup(&f, 1, od, 0);
    answer_n(&f, 0, 100, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 0) && ejections(&f, 0) == 0);
    teardown(&f);
    /* 2 backends, 50%: 1 */
    od.max_ejection_percent = 50;
    setup(&f, 2, od, 0);
    fail_all(&f, 10);
    CHECK(ejected_count(&f) == 1);
    teardown(&f);
    /* 5 backends, 50%: 2 (never more than the percentage: 3 would be 60%) */
    setup(&f, 5, od, 0);
    fail_all(&f, 10);
    CHECK(ejected_count(&f) == 2);
    teardown(&f);
    /* 3 backends, 100%: 2 (one always stays) */
    od.max_ejection_percent = 100;
    setup(&f, 3, od, 0);
    fail_all(&f, 10);
    CHECK(ejected_count(&f) == 2);
    teardown(&f);
    /* 3 backends, 100%, two of them down by the active checks: the one
     * left is the last available, never ejected */
    setup(&f, 3, od, 0);
    for (int k = 0; k < 3; k++) {
        backend_observe(f.backends[1], 0, "check failed");
        backend_observe(f.backends[2], 0, "check failed");
    }
    CHECK(!atomic_load(&f.backends[1]->healthy) && !atomic_load(&f.backends[2]->healthy));
    answer_n(&f, 0, 30, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 0) && ejections(&f, 0) == 0);
    teardown(&f);
    /* max_ejection_percent 0: none */
    od.max_ejection_percent = 0;
    setup(&f, 4, od, 0);
    fail_all(&f, 10);
    CHECK(ejected_count(&f) == 0);
    teardown(&f);
    /* the cap frees up as ejections end: with one of two back, the other
     * may go (the 2-backend cluster after the first one's time) */
    od = defaults();
    od.base_ejection_ms = 50;
    setup(&f, 2, od, 0);
    answer_n(&f, 0, 3, OUTCOME_FAILED, 0);
    CHECK(ejected(&f, 0));
    answer_n(&f, 1, 3, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 1));
    outlast(&f, 0);
    balancer_tick(f.b);
    answer_n(&f, 1, 3, OUTCOME_FAILED, 0);
    CHECK(ejected(&f, 1) && !ejected(&f, 0));
    teardown(&f);
}

/* ---- the multiplier, readmission ---- */

static void test_multiplier(void) {
    struct fixture f;
    struct outlier_config od = defaults();
    od.base_ejection_ms = 50;
    od.interval_ms = 60000; /* no decay in this part */
    setup(&f, 4, od, 10000);
    struct backend *be = f.backends[0];
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 50);
    int64_t until = atomic_load(&be->ejected_until);
    /* a tick before the time readmits nothing */
    balancer_tick(f.b);
    CHECK(atomic_load(&be->ejected_until) == until && ejected(&f, 0));
    outlast(&f, 0);
    CHECK(!ejected(&f, 0));                          /* out of the picks' way already */
    CHECK(atomic_load(&be->ejected_until) == until); /* until the tick */
    CHECK(atomic_load(&be->joined_ms) == 0);
    balancer_tick(f.b);
    CHECK(atomic_load(&be->ejected_until) == 0);
    CHECK(atomic_load(&be->joined_ms) == until); /* its slow start runs from the end */
    CHECK(atomic_load(&be->times_ejected) == 1);
    CHECK(noted(&f, 0, "readmitted"));
    /* back with slow start: a small weight at first */
    CHECK(backend_weight(be, 10000, (int64_t)ev_clock_ms()) < 0.1);
    CHECK(backend_weight(be, 10000, until + 10000) == 1);
    /* the second ejection lasts 2 x base, the third 3 x */
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 100);
    CHECK(atomic_load(&be->times_ejected) == 2 && ejections(&f, 0) == 2);
    outlast(&f, 0);
    balancer_tick(f.b);
    CHECK(atomic_load(&be->ejected_until) == 0);
    answer_n(&f, 0, 2, OUTCOME_OK, 503);
    check_ejects(&f, 0, OUTCOME_OK, 503, 150);
    CHECK(atomic_load(&be->times_ejected) == 3 && ejections(&f, 0) == 3);
    teardown(&f);

    /* the multiplier decays by one every interval in which the backend stays in
     * and its counts are clear */
    od.interval_ms = 20;
    setup(&f, 4, od, 0);
    be = f.backends[0];
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 50);
    balancer_tick(f.b); /* ejected: no decay */
    CHECK(atomic_load(&be->times_ejected) == 1);
    outlast(&f, 0);
    balancer_tick(f.b); /* readmits */
    CHECK(atomic_load(&be->ejected_until) == 0 && atomic_load(&be->times_ejected) == 1);
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    sleep_ms(25);
    balancer_tick(f.b); /* failing again: no decay */
    CHECK(atomic_load(&be->times_ejected) == 1);
    answer_n(&f, 0, 1, OUTCOME_OK, 200);
    sleep_ms(25);
    balancer_tick(f.b);
    CHECK(atomic_load(&be->times_ejected) == 0);
    sleep_ms(25);
    balancer_tick(f.b); /* not below 0 */
    CHECK(atomic_load(&be->times_ejected) == 0);
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 50); /* 1 x base again */
    teardown(&f);

    /* an ejection never lasts longer than 300 s, unless base alone does
     * (the ejection's end brought forward: the clock cannot be) */
    int bases[] = {200000, 400000}, second[] = {300000, 400000};
    for (int k = 0; k < 2; k++) {
        od = defaults();
        od.base_ejection_ms = bases[k];
        setup(&f, 4, od, 0);
        be = f.backends[0];
        answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
        check_ejects(&f, 0, OUTCOME_FAILED, 0, bases[k]);
        atomic_store(&be->ejected_until, (int64_t)ev_clock_ms() - 1);
        balancer_tick(f.b);
        CHECK(atomic_load(&be->ejected_until) == 0);
        answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
        check_ejects(&f, 0, OUTCOME_FAILED, 0, second[k]);
        teardown(&f);
    }
}

/* ---- the active checks ---- */

static void test_observe(void) {
    struct fixture f;
    setup(&f, 3, defaults(), 0);
    struct backend *be = f.backends[0];
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 30000);
    int64_t until = atomic_load(&be->ejected_until);
    /* passing checks of a healthy backend do not end its ejection */
    for (int k = 0; k < 5; k++)
        backend_observe(be, 1, "ok");
    CHECK(atomic_load(&be->ejected_until) == until && atomic_load(&be->times_ejected) == 1);
    /* down after the cluster's unhealthy_threshold (3) failed checks */
    backend_observe(be, 0, "check failed");
    backend_observe(be, 0, "check failed");
    CHECK(atomic_load(&be->healthy) == 1);
    backend_observe(be, 0, "check failed");
    CHECK(atomic_load(&be->healthy) == 0);
    CHECK(atomic_load(&be->ejected_until) == until); /* still ejected too */
    /* up after healthy_threshold (2) passes: readmitted, the multiplier reset */
    backend_observe(be, 1, "ok");
    CHECK(atomic_load(&be->healthy) == 0);
    int64_t before = (int64_t)ev_clock_ms();
    backend_observe(be, 1, "ok");
    int64_t after = (int64_t)ev_clock_ms();
    CHECK(atomic_load(&be->healthy) == 1);
    CHECK(atomic_load(&be->ejected_until) == 0 && !ejected(&f, 0));
    CHECK(atomic_load(&be->times_ejected) == 0);
    CHECK(atomic_load(&be->consec_gw) == 0 && atomic_load(&be->consec_5xx) == 0);
    CHECK(atomic_load(&be->joined_ms) >= before && atomic_load(&be->joined_ms) <= after);
    CHECK(noted(&f, 0, "healthy after 2 successful checks"));
    CHECK(ejections(&f, 0) == 1); /* the total stays */
    /* in the picks again */
    CHECK(answer(&f, 0, OUTCOME_OK, 200));
    /* and the next ejection is a first one */
    answer_n(&f, 0, 2, OUTCOME_FAILED, 0);
    check_ejects(&f, 0, OUTCOME_FAILED, 0, 30000);
    CHECK(atomic_load(&be->times_ejected) == 1);
    teardown(&f);

    /* the counts a check starts from: the live ones before it went down are gone */
    setup(&f, 3, defaults(), 0);
    be = f.backends[1];
    answer_n(&f, 1, 2, OUTCOME_FAILED, 0);
    for (int k = 0; k < 3; k++)
        backend_observe(be, 0, "check failed");
    for (int k = 0; k < 2; k++)
        backend_observe(be, 1, "ok");
    CHECK(atomic_load(&be->healthy) == 1 && atomic_load(&be->consec_gw) == 0);
    answer_n(&f, 1, 2, OUTCOME_FAILED, 0);
    CHECK(!ejected(&f, 1));
    teardown(&f);
}

/* ---- live failures and health ---- */

static void test_live_failures_keep_health(void) {
    struct fixture f;
    /* the only backend, outlier detection on: never ejected, never down */
    setup(&f, 1, defaults(), 0);
    answer_n(&f, 0, 100, OUTCOME_FAILED, 0);
    CHECK(atomic_load(&f.backends[0]->healthy) == 1 && !ejected(&f, 0));
    CHECK(backend_failures(f.backends[0], 1) == 100 && backend_requests(f.backends[0], 1) == 100);
    int64_t changed, failed;
    char changed_why[128], failed_why[128];
    backend_notes(f.backends[0], &changed, changed_why, &failed, failed_why, sizeof(failed_why));
    CHECK(failed > 0 && changed == 0);
    CHECK_STR(failed_why, "test failure");
    teardown(&f);
    /* outlier detection off */
    struct outlier_config od = defaults();
    od.enabled = 0;
    setup(&f, 2, od, 0);
    answer_n(&f, 0, 100, OUTCOME_FAILED, 0);
    answer_n(&f, 1, 100, OUTCOME_OK, 503);
    CHECK(atomic_load(&f.backends[0]->healthy) == 1 && atomic_load(&f.backends[1]->healthy) == 1);
    CHECK(ejected_count(&f) == 0);
    CHECK(backend_failures(f.backends[0], 1) == 100);
    CHECK(backend_failures(f.backends[1], 1) == 0); /* answers, though 5xx */
    teardown(&f);
    /* on, two backends: ejected, still healthy */
    setup(&f, 2, defaults(), 0);
    for (int k = 0; k < 100; k++)
        answer(&f, 0, OUTCOME_FAILED, 0);
    CHECK(ejected(&f, 0) && atomic_load(&f.backends[0]->healthy) == 1);
    CHECK(ejections(&f, 0) == 1);
    teardown(&f);
}

int main(void) {
    log_init("test_outlier", LOG_ERROR);
    test_gateway_failures();
    test_5xx();
    test_cap();
    test_multiplier();
    test_observe();
    test_live_failures_keep_health();
    return test_summary();
}
