/* The strategies: which available backend of a cluster gets the next request.
 *
 * Every strategy honours weights, and slow start is a weight like the
 * others (backend_weight()). The latency-aware ones (peak-ewma, fastest,
 * least-outstanding) count a backend's recent failures as slow answers, so a
 * backend that fails fast never looks like the fastest: the failure share
 * (0..1, over about the last 32 answers and 5 s) above ERROR_SHARE_FREE,
 * squared and scaled to 0..1, adds up to FAILURE_PENALTY_US to the latency
 * they rank by, or FAILURE_PENALTY_INFLIGHT requests to the count. A busy
 * backend's sporadic failures cost it nothing; one that fails most of its
 * answers loses nearly all of its traffic before outlier detection ejects
 * it. */
#include "strategy.h"

#include <float.h>
#include <string.h>

#include "balancer.h"

#define FAILURE_PENALTY_US       1e6
#define FAILURE_PENALTY_INFLIGHT 1000.0
/* A failure share up to this costs nothing: sporadic failures (a reset in
 * a hundred, a burst of a few) must not move traffic. */
#define ERROR_SHARE_FREE 0.2

/* b must score this much lower than a to win over it */
#define SCORE_TOLERANCE 1.25

/* Latencies under this are all "fast": differences below a LAN round trip
 * are measurement noise (a fresh probe connection versus a warm pooled one),
 * and ranking on them would send every request to one of equal backends. */
#define EWMA_FLOOR_US 1000.0
/* Nor does a score win by less than this: one answer a scheduling hiccup
 * delayed by a few milliseconds is kept by the peak for seconds, and would
 * override the weights at low load (2 ms still let 3:1 drift to 0.71). */
#define SCORE_NOISE_US 5000.0

/* 1/φ: steps of it mod 1 spread evenly over [0, 1) (weighted round-robin). */
#define GOLDEN 0.6180339887498949

struct choice {
    const struct pick *pk;
    const struct backend *avoid;
    int panic; /* nothing available: healthy backends count though ejected */
    uint64_t rnd;
};

static int eligible(const struct choice *ch, const struct backend *be) {
    if (be == ch->avoid) return 0;
    if (!ch->panic) return backend_available(be, ch->pk->now_ms);
    return atomic_load_explicit(&be->healthy, memory_order_relaxed) &&
           atomic_load_explicit(&be->weight, memory_order_relaxed) > 0;
}

static double weight_of(const struct choice *ch, const struct backend *be) {
    return backend_weight(be, ch->pk->slow_start_ms, ch->pk->now_ms);
}

/* A fresh uniform draw in [0, 1) (xorshift on the pick's random bits). */
static double draw(struct choice *ch) {
    ch->rnd ^= ch->rnd << 13;
    ch->rnd ^= ch->rnd >> 7;
    ch->rnd ^= ch->rnd << 17;
    return (double)(ch->rnd >> 11) * 0x1.0p-53;
}

struct census {
    size_t k;     /* eligible backends */
    double total; /* their weights */
    int equal;    /* all of the same weight */
};

static struct census count(struct choice *ch, struct backend *const *backends, size_t n) {
    struct census c = {0, 0, 1};
    double first = -1;
    for (size_t i = 0; i < n; i++) {
        if (!eligible(ch, backends[i])) continue;
        double w = weight_of(ch, backends[i]);
        if (first < 0) first = w;
        c.equal &= w == first;
        c.total += w;
        c.k++;
    }
    return c;
}

/* Who may be chosen: the available backends but avoid; when that leaves none,
 * avoid is allowed back (a second try on the same backend beats none); when
 * none is available at all, the healthy backends though ejected (Envoy's panic:
 * better an outlier than a 503), again avoid last. */
static struct census settle_choice(struct choice *ch, struct backend *const *backends, size_t n) {
    const struct backend *avoid = ch->avoid;
    struct census c = {0, 0, 1};
    for (int panic = 0; panic < 2 && !c.k; panic++) {
        ch->panic = panic;
        ch->avoid = avoid;
        c = count(ch, backends, n);
        if (!c.k && avoid) {
            ch->avoid = NULL;
            c = count(ch, backends, n);
        }
    }
    return c;
}

/* The k-th eligible backend (k < count). */
static struct backend *nth(const struct choice *ch, struct backend *const *backends, size_t n,
                           size_t k) {
    for (size_t i = 0; i < n; i++)
        if (eligible(ch, backends[i]) && k-- == 0) return backends[i];
    return NULL;
}

/* The eligible backend at u (in [0, 1)) of the weights laid end to end, other
 * than `skip` (whose weight is left out of total by the caller). */
static struct backend *at_weight(const struct choice *ch, struct backend *const *backends, size_t n,
                                 double u, double total, const struct backend *skip) {
    double x = u * total;
    struct backend *last = NULL;
    for (size_t i = 0; i < n; i++) {
        if (backends[i] == skip || !eligible(ch, backends[i])) continue;
        last = backends[i];
        x -= weight_of(ch, backends[i]);
        if (x < 0) return backends[i];
    }
    return last; /* rounding */
}

static double penalty(const struct choice *ch, const struct backend *be) {
    double e = backend_error_share(be, ch->pk->now_ms) - ERROR_SHARE_FREE;
    return e > 0 ? e * e / ((1 - ERROR_SHARE_FREE) * (1 - ERROR_SHARE_FREE)) : 0;
}

/* What each latency-aware strategy ranks by: lower is better. */
static double least_outstanding_key(const struct choice *ch, const struct backend *be) {
    double inflight = atomic_load_explicit(&be->inflight, memory_order_relaxed);
    return inflight / weight_of(ch, be) + penalty(ch, be) * FAILURE_PENALTY_INFLIGHT;
}

static double fastest_key(const struct choice *ch, const struct backend *be) {
    unsigned probe = atomic_load_explicit(&be->probe_us, memory_order_relaxed);
    if (!probe) return DBL_MAX; /* not probed yet: last */
    return (probe + penalty(ch, be) * FAILURE_PENALTY_US) / weight_of(ch, be);
}

/* Peak-EWMA's cost: latency (with the failure penalty) times the load,
 * the load being requests in flight per unit of weight. */
static double peak_ewma_score(const struct choice *ch, const struct backend *be) {
    double ewma = backend_ewma_us(be);
    double inflight = atomic_load_explicit(&be->inflight, memory_order_relaxed);
    double latency =
        (ewma > EWMA_FLOOR_US ? ewma : EWMA_FLOOR_US) + penalty(ch, be) * FAILURE_PENALTY_US;
    return latency * (1.0 + inflight / weight_of(ch, be));
}

/* The eligible backend with the lowest key; ties go to one of the tied backends
 * with a chance proportional to its weight (weighted reservoir sampling). */
static struct backend *lowest(struct choice *ch, struct backend *const *backends, size_t n,
                              double (*key)(const struct choice *, const struct backend *)) {
    struct backend *best = NULL;
    double best_v = 0, tied = 0;
    for (size_t i = 0; i < n; i++) {
        struct backend *be = backends[i];
        if (!eligible(ch, be)) continue;
        double v = key(ch, be), w = weight_of(ch, be);
        if (!best || v < best_v) {
            best = be;
            best_v = v;
            tied = w;
        } else if (v == best_v) {
            tied += w;
            if (draw(ch) * tied < w) best = be;
        }
    }
    return best;
}

static struct backend *peak_ewma(struct choice *ch, struct backend *const *backends, size_t n,
                                 const struct census *c) {
    /* power of two choices: two distinct backends drawn by weight, the lower score wins */
    struct backend *a = at_weight(ch, backends, n, draw(ch), c->total, NULL);
    if (c->k == 1) return a;
    struct backend *b = at_weight(ch, backends, n, draw(ch), c->total - weight_of(ch, a), a);
    if (!b) return a;
    /* Scores within the noise of a latency measurement count as equal, and
     * then the random first choice stands: equal backends share the load
     * even one request at a time. */
    double sa = peak_ewma_score(ch, a), sb = peak_ewma_score(ch, b);
    return sb * SCORE_TOLERANCE < sa && sa - sb > SCORE_NOISE_US ? b : a;
}

static struct backend *round_robin(struct choice *ch, struct backend *const *backends, size_t n,
                                   const struct census *c) {
    unsigned i = atomic_fetch_add_explicit(ch->pk->next, 1, memory_order_relaxed);
    if (c->equal) return nth(ch, backends, n, i % c->k);
    double u = (double)i * GOLDEN;
    return at_weight(ch, backends, n, u - (double)(uint64_t)u, c->total, NULL);
}

struct backend *strategy_pick(enum strategy s, struct backend *const *backends, size_t n,
                              const struct pick *pk) {
    struct choice ch = {.pk = pk, .avoid = pk->avoid, .rnd = pk->rnd | 1};
    struct census c = settle_choice(&ch, backends, n);
    if (!c.k) return NULL;
    switch (s) {
    case STRATEGY_ROUND_ROBIN: return round_robin(&ch, backends, n, &c);
    case STRATEGY_RANDOM: return at_weight(&ch, backends, n, draw(&ch), c.total, NULL);
    case STRATEGY_LEAST_OUTSTANDING: return lowest(&ch, backends, n, least_outstanding_key);
    case STRATEGY_FASTEST: return lowest(&ch, backends, n, fastest_key);
    case STRATEGY_PEAK_EWMA:
    default: return peak_ewma(&ch, backends, n, &c);
    }
}

static const char *const strategy_names[] = {
    [STRATEGY_PEAK_EWMA] = "peak-ewma",
    [STRATEGY_FASTEST] = "fastest",
    [STRATEGY_LEAST_OUTSTANDING] = "least-outstanding",
    [STRATEGY_ROUND_ROBIN] = "round-robin",
    [STRATEGY_RANDOM] = "random",
};
#define NSTRATEGIES (sizeof(strategy_names) / sizeof(strategy_names[0]))

const char *strategy_name(enum strategy s) {
    if ((size_t)s < NSTRATEGIES) return strategy_names[s];
    return "unknown";
}

int strategy_parse(const char *s) {
    if (!s) return -1;
    for (size_t i = 0; i < NSTRATEGIES; i++)
        if (!strcmp(s, strategy_names[i])) return (int)i;
    return -1;
}
