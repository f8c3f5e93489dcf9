/* The strategies: which healthy row of a cluster gets the next request. */
#include "balancer.h"

static int eligible(const struct backend *be, const struct backend *avoid) {
    return be != avoid && atomic_load_explicit(&be->healthy, memory_order_relaxed);
}

/* How many rows are eligible; when only `avoid` is healthy it is allowed
 * back: a second try on the same backend beats none. */
static size_t count_eligible(struct backend *const *rows, size_t n, const struct backend **avoid) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += eligible(rows[i], *avoid);
    if (!k && *avoid && atomic_load_explicit(&(*avoid)->healthy, memory_order_relaxed)) {
        *avoid = NULL;
        k = 1;
    }
    return k;
}

/* The k-th eligible row (k < count). */
static struct backend *nth_eligible(struct backend *const *rows, size_t n,
                                    const struct backend *avoid, size_t k) {
    for (size_t i = 0; i < n; i++)
        if (eligible(rows[i], avoid) && k-- == 0) return rows[i];
    return NULL;
}

/* b must score this much lower than a to win over it */
#define SCORE_TOLERANCE 1.25

/* Latencies under this are all "fast": differences below a LAN round trip
 * are measurement noise (a fresh probe connection versus a warm pooled one),
 * and ranking on them would send every request to one of equal backends. */
#define EWMA_FLOOR_US 1000.0

static double peak_ewma_score(const struct backend *be) {
    double ewma = backend_ewma_us(be);
    int inflight = atomic_load_explicit(&be->inflight, memory_order_relaxed);
    return (ewma > EWMA_FLOOR_US ? ewma : EWMA_FLOOR_US) * (inflight + 1);
}

/* The eligible row with the lowest in-flight count (or probe latency); ties
 * are broken uniformly at random (reservoir sampling over the tied rows). */
static struct backend *lowest(struct backend *const *rows, size_t n, const struct backend *avoid,
                              uint64_t rnd, int by_probe) {
    struct backend *best = NULL;
    uint64_t best_v = UINT64_MAX;
    unsigned ties = 0;
    for (size_t i = 0; i < n; i++) {
        struct backend *be = rows[i];
        if (!eligible(be, avoid)) continue;
        uint64_t v = by_probe ? atomic_load_explicit(&be->probe_us, memory_order_relaxed)
                              : (uint64_t)atomic_load_explicit(&be->inflight, memory_order_relaxed);
        if (by_probe && !v) v = UINT64_MAX - 1; /* not probed yet: last */
        if (!best || v < best_v) {
            best = be;
            best_v = v;
            ties = 1;
        } else if (v == best_v) {
            rnd ^= rnd << 13; /* xorshift: a fresh draw per tie */
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            if (rnd % ++ties == 0) best = be;
        }
    }
    return best;
}

struct backend *strategy_pick(enum strategy s, struct backend *const *rows, size_t n,
                              const struct backend *avoid, atomic_uint *next, uint64_t rnd) {
    size_t k = count_eligible(rows, n, &avoid);
    if (!k) return NULL;
    switch (s) {
    case STRATEGY_ROUND_ROBIN: {
        unsigned i = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
        return nth_eligible(rows, n, avoid, i % k);
    }
    case STRATEGY_RANDOM: return nth_eligible(rows, n, avoid, rnd % k);
    case STRATEGY_LEAST_OUTSTANDING: return lowest(rows, n, avoid, rnd, 0);
    case STRATEGY_FASTEST: return lowest(rows, n, avoid, rnd, 1);
    case STRATEGY_PEAK_EWMA:
    default: {
        /* power of two choices: two distinct random rows, the lower score wins */
        struct backend *a = nth_eligible(rows, n, avoid, rnd % k);
        if (k == 1) return a;
        size_t j = (rnd >> 32) % (k - 1);
        if (j >= rnd % k) j++;
        struct backend *b = nth_eligible(rows, n, avoid, j);
        /* Scores within the noise of a latency measurement count as equal, and
         * then the random first choice stands: equal backends share the load
         * even one request at a time. */
        return peak_ewma_score(b) * SCORE_TOLERANCE < peak_ewma_score(a) ? b : a;
    }
    }
}
