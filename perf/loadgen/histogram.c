#include "histogram.h"

#include <math.h>
#include <string.h>

void hist_init(struct histogram *h) {
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned hist_index(uint64_t v) {
    if (v < HIST_LINEAR) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* 2^e <= v, e >= 8 */
    unsigned shift = e - HIST_SUB_BITS;              /* bucket width 2^shift */
    return (shift << HIST_SUB_BITS) + (unsigned)(v >> shift);
}

uint64_t hist_bucket_lo(unsigned idx) {
    if (idx < HIST_LINEAR) return idx;
    unsigned shift = (idx >> HIST_SUB_BITS) - 1u;
    uint64_t sub = (idx & (HIST_SUB - 1u)) + HIST_SUB; /* 128..255 */
    return sub << shift;
}

uint64_t hist_bucket_hi(unsigned idx) {
    if (idx < HIST_LINEAR) return idx;
    unsigned shift = (idx >> HIST_SUB_BITS) - 1u;
    return hist_bucket_lo(idx) + ((uint64_t)1 << shift) - 1u;
}

void hist_merge(struct histogram *dst, const struct histogram *src) {
    if (!src->count) return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

double hist_percentile(const struct histogram *h, double p) {
    if (!h->count) return 0;
    if (p <= 0) return (double)h->min;
    if (p >= 100) return (double)h->max;
    /* rank: how many values must lie at or below the answer */
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t lo = hist_bucket_lo(i), hi = hist_bucket_hi(i);
            double mid = (double)lo + (double)(hi - lo) / 2.0;
            if (mid < (double)h->min) mid = (double)h->min;
            if (mid > (double)h->max) mid = (double)h->max;
            return mid;
        }
    }
    return (double)h->max;
}

double hist_mean(const struct histogram *h) {
    return h->count ? h->sum / (double)h->count : 0;
}
