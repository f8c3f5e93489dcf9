/* The latency histogram: bucket bounds, percentiles within 1% of the exact
 * ones on known distributions, merging. */
#include "histogram.h"
#include "testing.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double uniform01(void) { /* xorshift64*, (0, 1) */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return ((double)((rng * 2685821657736338717ull) >> 11) + 0.5) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The exact p-th percentile of sorted values: the smallest value with at
 * least p% at or below it. */
static uint64_t exact(const uint64_t *sorted, size_t n, double p) {
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

static int within(double got, double want, double rel) {
    if (want == 0) return got == 0;
    return fabs(got - want) <= rel * want;
}

static const double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99};

/* Records vals, then checks each percentile, the mean, min and max. */
static void check_distribution(const char *name, uint64_t *vals, size_t n) {
    struct histogram *h = malloc(sizeof(*h));
    hist_init(h);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        hist_record(h, vals[i]);
        sum += (double)vals[i];
    }
    qsort(vals, n, sizeof(*vals), cmp_u64);
    CHECK(h->count == n);
    CHECK(h->min == vals[0]);
    CHECK(h->max == vals[n - 1]);
    CHECK(within(hist_mean(h), sum / (double)n, 1e-9));
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double got = hist_percentile(h, ps[i]);
        uint64_t want = exact(vals, n, ps[i]);
        if (!within(got, (double)want, 0.01))
            fprintf(stderr, "%s: p%g = %.1f, exact %llu\n", name, ps[i], got,
                    (unsigned long long)want);
        CHECK(within(got, (double)want, 0.01));
    }
    CHECK(hist_percentile(h, 100) == (double)vals[n - 1]);
    free(h);
}

static void test_buckets(void) {
    /* every value lies in its bucket, buckets are at most 1/128 of their
     * values wide, and indices grow with the value */
    unsigned last = 0;
    for (uint64_t v = 0; v < 200000; v++) {
        unsigned i = hist_index(v);
        if (hist_bucket_lo(i) > v || hist_bucket_hi(i) < v || i < last) {
            CHECK(!"bucket bounds");
            return;
        }
        if (v >= HIST_LINEAR && (hist_bucket_hi(i) - hist_bucket_lo(i) + 1) * 128 > v) {
            CHECK(!"bucket too wide");
            return;
        }
        last = i;
    }
    for (uint64_t v = 1; v; v <<= 1) {
        unsigned i = hist_index(v), j = hist_index(v - 1), k = hist_index(v + v / 3);
        CHECK(i < HIST_BUCKETS && j <= i && k >= i);
        CHECK(hist_bucket_lo(i) <= v && hist_bucket_hi(i) >= v);
    }
    CHECK(hist_index(UINT64_MAX) == HIST_BUCKETS - 1);
    CHECK(hist_bucket_hi(HIST_BUCKETS - 1) == UINT64_MAX);
    for (uint64_t v = 0; v < HIST_LINEAR; v++)
        CHECK(hist_bucket_lo(hist_index(v)) == v && hist_bucket_hi(hist_index(v)) == v);
}

static void test_empty(void) {
    struct histogram h;
    hist_init(&h);
    CHECK(hist_percentile(&h, 50) == 0);
    CHECK(hist_mean(&h) == 0);
    CHECK(h.count == 0);
}

int main(void) {
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof(*v));

    test_buckets();
    test_empty();

    /* uniform on [1, 100000] us */
    for (size_t i = 0; i < N; i++)
        v[i] = 1 + (uint64_t)(uniform01() * 100000);
    check_distribution("uniform", v, N);

    /* exponential, mean 2 ms */
    for (size_t i = 0; i < N; i++)
        v[i] = (uint64_t)(-log(uniform01()) * 2000.0);
    check_distribution("exponential", v, N);

    /* constant */
    for (size_t i = 0; i < N; i++)
        v[i] = 12345;
    check_distribution("constant", v, N);

    /* small values: exact below 256 */
    for (size_t i = 0; i < N; i++)
        v[i] = (uint64_t)(uniform01() * 256);
    check_distribution("small", v, N);

    /* log-uniform from 1 us to 1e9 us (about 17 minutes) */
    for (size_t i = 0; i < N; i++)
        v[i] = (uint64_t)exp(uniform01() * log(1e9));
    check_distribution("log-uniform to 1e9", v, N);

    /* large values near 1e9 */
    for (size_t i = 0; i < N; i++)
        v[i] = 900000000 + (uint64_t)(uniform01() * 100000000);
    check_distribution("large", v, N);

    /* merge: four histograms of parts equal one of the whole */
    struct histogram *whole = malloc(sizeof(*whole)), *parts = malloc(4 * sizeof(*parts)),
                     *merged = malloc(sizeof(*merged));
    hist_init(whole);
    hist_init(merged);
    for (int k = 0; k < 4; k++)
        hist_init(&parts[k]);
    for (size_t i = 0; i < N; i++) {
        /* a different distribution per part */
        uint64_t x = (uint64_t)(-log(uniform01()) * (500.0 * (double)(1 + i % 4)));
        hist_record(whole, x);
        hist_record(&parts[i % 4], x);
    }
    for (int k = 0; k < 4; k++)
        hist_merge(merged, &parts[k]);
    struct histogram empty;
    hist_init(&empty);
    hist_merge(merged, &empty);
    CHECK(merged->count == whole->count);
    CHECK(merged->min == whole->min);
    CHECK(merged->max == whole->max);
    CHECK(within(hist_mean(merged), hist_mean(whole), 1e-12));
    CHECK(!memcmp(merged->buckets, whole->buckets, sizeof(whole->buckets)));
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        CHECK(hist_percentile(merged, ps[i]) == hist_percentile(whole, ps[i]));
    /* merging into an empty one keeps min right */
    struct histogram *one = malloc(sizeof(*one));
    hist_init(one);
    hist_merge(one, &parts[2]);
    CHECK(one->min == parts[2].min && one->max == parts[2].max);

    free(one);
    free(whole);
    free(parts);
    free(merged);
    free(v);
    return test_summary();
}
