/* The balancer's table and its readers (balancer.h).
 *
 * Membership swaps under concurrent readers: worker-like threads pick and
 * release backends, and a rare reader walks the table online, while a writer
 * swaps tables (adding and removing a backend each time). Run by the ASan
 * and ThreadSanitizer builds, it fails on a use after free or a data race;
 * here it checks that every pick lands on a backend of a table that was
 * current during the reader's critical section and that backends are freed
 * exactly when unused.
 *
 * Then the reader API (what an online reader sees) and the grace period's
 * wait: prompt with wakers, prompt when an idle reader without one passes its
 * quiescent point (signalled, not found at a re-check), not held up by an
 * offline reader, held up by an online one until it goes offline. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer.h"
#include "ev.h"
#include "log.h"
#include "testing.h"

#define READERS 3
#define SWAPS   300

static struct balancer *bal;
static atomic_int stop;
static atomic_long picks, bad_backends, walks;
static struct cluster *cluster; /* the one cluster, the same across swaps */
static struct proxy_config cfg[2];

static void add_backend(struct cluster_config *cc, const char *text) {
    const char *err;
    struct backend_addr *b = &cc->backends[cc->nbackends++];
    snprintf(b->text, sizeof(b->text), "%s", text);
    if (net_parse_addr(text, NULL, &b->addr, &err) < 0) abort();
}

static void make_config(struct proxy_config *pc, int variant) {
    memset(pc, 0, sizeof(*pc));
    pc->nclusters = 1;
    pc->clusters = calloc(1, sizeof(*pc->clusters));
    struct cluster_config *cc = &pc->clusters[0];
    snprintf(cc->name, sizeof(cc->name), "c");
    snprintf(cc->path_prefix, sizeof(cc->path_prefix), "/c");
    cc->strategy = STRATEGY_PEAK_EWMA;
    cc->health = (struct health_check){.healthy_threshold = 2, .unhealthy_threshold = 2};
    cc->backends = calloc(3, sizeof(*cc->backends));
    add_backend(cc, "127.0.0.1:9001");
    add_backend(cc, "127.0.0.1:9002");
    add_backend(cc, variant ? "127.0.0.1:9004" : "127.0.0.1:9003");
}

static void free_config(struct proxy_config *pc) {
    free(pc->clusters[0].backends);
    free(pc->clusters);
}

/* The current table's cluster, copied for the checks. */
struct seen_cluster {
    int calls;
    struct cluster *id;
    const struct cluster_config *cfg;
    struct backend *first;
    size_t n;
    int names_ok;
};

static void see_cluster(const struct table_cluster *c, void *arg) {
    struct seen_cluster *s = arg;
    s->calls++;
    s->id = c->id;
    s->cfg = c->cfg;
    s->first = c->n ? c->backends[0] : NULL;
    s->n = c->n;
    s->names_ok = 1;
    for (size_t j = 0; j < c->n; j++)
        s->names_ok &= !strncmp(c->backends[j]->name, "127.0.0.1:900", 13);
}

static struct seen_cluster look(int reader) {
    struct seen_cluster s = {0};
    balancer_reader_online(bal, reader);
    balancer_each_cluster(bal, see_cluster, &s);
    balancer_reader_offline(bal, reader);
    return s;
}

static int swap_to(int variant) {
    return balancer_set_config(bal, &cfg[variant], "test", NULL, NULL);
}

static void *picker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t rnd = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 50; i++) {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            struct backend *be = balancer_pick(bal, cluster, NULL, NULL, rnd, id);
            if (!be || strncmp(be->name, "127.0.0.1:900", 13)) atomic_fetch_add(&bad_backends, 1);
            if (be) balancer_done(bal, be, OUTCOME_OK, 200, 100 + rnd % 1000, NULL, id);
            atomic_fetch_add(&picks, 1);
        }
        balancer_quiescent(bal, id);
    }
    return NULL;
}

/* A reader that goes online only to read, as discovery and CloudWatch do. */
static void *walker(void *arg) {
    (void)arg;
    int id = balancer_reader_id(bal, READER_CLOUDWATCH);
    while (!atomic_load(&stop)) {
        struct seen_cluster s = look(id);
        if (s.calls != 1 || s.n != 3 || !s.names_ok) atomic_fetch_add(&bad_backends, 1);
        atomic_fetch_add(&walks, 1);
    }
    return NULL;
}

static void test_swaps_under_readers(void) {
    /* threads 0..READERS are the workers, and one rare reader */
    bal = balancer_new(&cfg[0], READERS + 1);
    CHECK(bal != NULL);
    balancer_ready(bal);
    int me = balancer_reader_id(bal, READER_ADMIN); /* the test reads as the admin thread */
    struct seen_cluster first = look(me);
    cluster = first.id;
    pthread_t t[READERS + 2];
    for (int i = 0; i <= READERS; i++)
        pthread_create(&t[i], NULL, picker, (void *)(intptr_t)i);
    pthread_create(&t[READERS + 1], NULL, walker, NULL);

    struct backend *kept = first.first;
    backend_ref(kept); /* held like a request in flight across all swaps */
    for (int i = 0; i < SWAPS; i++)
        CHECK(swap_to((i + 1) % 2) == 0);
    atomic_store(&stop, 1);
    for (int i = 0; i <= READERS + 1; i++)
        pthread_join(t[i], NULL);

    struct seen_cluster last = look(me);
    CHECK(last.n == 3);
    CHECK(last.first == kept); /* backends are reused across swaps */
    CHECK(last.id == cluster);
    CHECK(!atomic_load(&kept->removed));
    CHECK(atomic_load(&kept->inflight) == 0);
    CHECK(atomic_load(&bad_backends) == 0);
    CHECK(atomic_load(&picks) > 0);
    CHECK(atomic_load(&walks) > 0);
    printf("%ld picks and %ld walks during %d swaps\n", atomic_load(&picks), atomic_load(&walks),
           SWAPS);
    backend_unref(kept);
    balancer_free(bal);
}

static uint64_t generation(int reader) {
    balancer_reader_online(bal, reader);
    uint64_t g = balancer_generation(bal);
    balancer_reader_offline(bal, reader);
    return g;
}

/* What an online reader sees: the current table's clusters, configuration
 * and generation, and the registry of every cluster. */
static void test_reader_api(void) {
    bal = balancer_new(&cfg[0], 1);
    balancer_reader_offline(bal, 0); /* no worker runs */
    balancer_ready(bal);
    int me = balancer_reader_id(bal, READER_ADMIN);
    CHECK(me == 1 + READER_ADMIN);
    uint64_t gen = generation(me);
    CHECK(generation(me) == gen); /* no swap, no change */
    struct seen_cluster s = look(me);
    CHECK(s.calls == 1 && s.n == 3 && s.cfg == &cfg[0].clusters[0] && s.names_ok);
    CHECK_STR(s.id->name, "c");
    balancer_reader_online(bal, me);
    CHECK(balancer_config(bal) == &cfg[0]);
    const struct cluster_config *cc = NULL;
    CHECK(balancer_route(bal, "/c/x", 4, &cc) == s.id && cc == &cfg[0].clusters[0]);
    CHECK(balancer_route(bal, "/d", 2, NULL) == NULL);
    CHECK(balancer_cluster_config(bal, s.id) == &cfg[0].clusters[0]);
    balancer_reader_offline(bal, me);

    CHECK(swap_to(1) == 0);
    CHECK(generation(me) != gen);
    struct seen_cluster t = look(me);
    CHECK(t.id == s.id && t.first == s.first && t.cfg == &cfg[1].clusters[0]);
    balancer_reader_online(bal, me);
    CHECK(balancer_config(bal) == &cfg[1]);
    balancer_reader_offline(bal, me);

    /* a new found set is a new table (not wanted here: cfg[1] has no
     * discovery); the same set again changes nothing */
    struct backend_addr found = {0};
    const char *err;
    snprintf(found.text, sizeof(found.text), "127.0.0.1:9005");
    CHECK(net_parse_addr(found.text, NULL, &found.addr, &err) == 0);
    gen = generation(me);
    CHECK(balancer_set_found(bal, "c", FOUND_BY_DISCOVERY, &found, 1, "test") == 0);
    CHECK(generation(me) != gen);
    CHECK(look(me).n == 3);
    gen = generation(me);
    CHECK(balancer_set_found(bal, "c", FOUND_BY_DISCOVERY, &found, 1, "test") == 0);
    CHECK(generation(me) == gen);

    /* the registry: every cluster ever built, "none" first, any thread */
    struct cluster **all;
    size_t len = balancer_clusters(bal, &all);
    CHECK(len == 2 && all[0] == balancer_unrouted(bal) && all[1] == s.id);
    CHECK_STR(all[0]->name, "none");
    free(all);
    balancer_free(bal);
}

/* ---- the grace period's wait ---- */

static uint64_t now_us(void) {
    return ev_clock_us();
}

/* A reader blocked in its loop as an idle worker is: it passes a quiescent
 * point when woken (by its waker or the test), or after idle_ms. */
struct idle_reader {
    int id;
    int idle_ms;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int woken, stop;
    atomic_int wakes;           /* calls of its waker */
    _Atomic uint64_t passed_us; /* its last quiescent point */
    pthread_t thread;
};

static void *idle_main(void *arg) {
    struct idle_reader *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += r->idle_ms / 1000;
        until.tv_nsec += (long)(r->idle_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!r->woken && !r->stop)
            if (pthread_cond_timedwait(&r->cond, &r->lock, &until)) break;
        r->woken = 0;
        pthread_mutex_unlock(&r->lock);
        atomic_store(&r->passed_us, now_us());
        balancer_quiescent(bal, r->id);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    balancer_reader_offline(bal, r->id);
    return NULL;
}

static void poke(struct idle_reader *r) {
    pthread_mutex_lock(&r->lock);
    r->woken = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void waker(void *arg) {
    struct idle_reader *r = arg;
    atomic_fetch_add(&r->wakes, 1);
    poke(r);
}

static void idle_start(struct idle_reader *r, int id, int idle_ms) {
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->idle_ms = idle_ms;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    pthread_create(&r->thread, NULL, idle_main, r);
}

static void idle_stop(struct idle_reader *r) {
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
}

/* A swap on a thread of its own, to watch it wait. */
struct swapper {
    int variant;
    atomic_int done;
    _Atomic uint64_t done_us;
    pthread_t thread;
};

static void *swapper_main(void *arg) {
    struct swapper *s = arg;
    if (swap_to(s->variant) != 0) abort();
    atomic_store(&s->done_us, now_us());
    atomic_store(&s->done, 1);
    return NULL;
}

static void swap_start(struct swapper *s, int variant) {
    memset(s, 0, sizeof(*s));
    s->variant = variant;
    pthread_create(&s->thread, NULL, swapper_main, s);
}

/* Idle workers with wakers: each swap wakes each of them once and returns
 * at once, long before any would pass a quiescent point of its own accord. */
static void test_wakers(void) {
    enum { W = 4, ROUNDS = 20 };
    bal = balancer_new(&cfg[0], W);
    balancer_ready(bal);
    struct idle_reader r[W];
    for (int i = 0; i < W; i++) {
        idle_start(&r[i], i, 5000);
        balancer_set_waker(bal, i, waker, &r[i]);
    }
    uint64_t t0 = now_us();
    for (int k = 0; k < ROUNDS; k++)
        CHECK(swap_to((k + 1) % 2) == 0);
    uint64_t spent_ms = (now_us() - t0) / 1000;
    printf("%d swaps with %d idle readers with wakers: %llu ms\n", ROUNDS, W,
           (unsigned long long)spent_ms);
    CHECK(spent_ms < 1000);
    for (int i = 0; i < W; i++) {
        CHECK(atomic_load(&r[i].wakes) == ROUNDS); /* once per swap, never more */
        idle_stop(&r[i]);
    }
    balancer_free(bal);
}

/* An idle reader without a waker: the swap waits for it, and returns as
 * soon as it passes its quiescent point (it signals the writer), not at the
 * writer's next re-check (100 ms). */
static void test_idle_reader_without_waker(void) {
    bal = balancer_new(&cfg[0], 1);
    balancer_ready(bal);
    struct idle_reader r;
    idle_start(&r, 0, 5000);
    for (int k = 0; k < 3; k++) {
        struct swapper s;
        swap_start(&s, (k + 1) % 2);
        struct timespec ms30 = {.tv_nsec = 30 * 1000000L};
        nanosleep(&ms30, NULL);
        CHECK(!atomic_load(&s.done)); /* it waits for the reader */
        uint64_t poked = now_us();
        poke(&r);
        pthread_join(s.thread, NULL);
        uint64_t lag_ms = (atomic_load(&s.done_us) - poked) / 1000;
        printf("swap returned %llu ms after the idle reader was woken\n",
               (unsigned long long)lag_ms);
        CHECK(atomic_load(&r.passed_us) >= poked);
        CHECK(lag_ms < 50);
    }
    idle_stop(&r);
    balancer_free(bal);
}

/* An offline reader holds up nothing; an online one holds up the swap
 * until it goes offline, and then sees the new table. */
static void test_offline_reader(void) {
    bal = balancer_new(&cfg[0], 2);
    balancer_ready(bal);
    balancer_reader_offline(bal, 0); /* a worker that never runs its loop */
    balancer_reader_offline(bal, 1);
    uint64_t t0 = now_us();
    CHECK(swap_to(1) == 0);
    CHECK((now_us() - t0) / 1000 < 50);

    int me = balancer_reader_id(bal, READER_DISCOVERY);
    balancer_reader_online(bal, me);
    uint64_t gen = balancer_generation(bal);
    struct seen_cluster s = {0};
    balancer_each_cluster(bal, see_cluster, &s);
    struct swapper sw;
    swap_start(&sw, 0);
    struct timespec ms30 = {.tv_nsec = 30 * 1000000L};
    nanosleep(&ms30, NULL);
    CHECK(!atomic_load(&sw.done)); /* what this reader read is still there */
    CHECK(s.n == 3 && s.names_ok);
    uint64_t left = now_us();
    balancer_reader_offline(bal, me);
    pthread_join(sw.thread, NULL);
    CHECK((atomic_load(&sw.done_us) - left) / 1000 < 50);
    balancer_reader_online(bal, me);
    CHECK(balancer_generation(bal) != gen);
    CHECK(balancer_config(bal) == &cfg[0]);
    balancer_reader_offline(bal, me);
    balancer_free(bal);
}

int main(void) {
    log_init("test_balancer", LOG_ERROR);
    make_config(&cfg[0], 0);
    make_config(&cfg[1], 1);
    test_swaps_under_readers();
    test_reader_api();
    test_wakers();
    test_idle_reader_without_waker();
    test_offline_reader();
    free_config(&cfg[0]);
    free_config(&cfg[1]);
    return test_summary();
}
