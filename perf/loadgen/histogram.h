/* A latency histogram with bounded memory and bounded relative error, in the
 * manner of HdrHistogram: values (microseconds) below 256 have a bucket each;
 * above, every power of two [2^e, 2^(e+1)) is cut into 128 equal buckets, so
 * a bucket is at most 1/128 of its values wide and the midpoint it reports is
 * within 0.4% of any value in it. 7424 buckets cover all of uint64_t (58 KiB).
 * Histograms of several threads merge by adding their counts. */
#ifndef LOADGEN_HISTOGRAM_H
#define LOADGEN_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)              /* 128 buckets per power of two */
#define HIST_LINEAR   (2u * HIST_SUB)                    /* values below 256 are exact */
#define HIST_BUCKETS  ((65u - HIST_SUB_BITS) * HIST_SUB) /* 7424: up to 2^64 - 1 */

struct histogram {
    uint64_t count;
    uint64_t min, max; /* exact; min is UINT64_MAX while empty */
    double sum;        /* exact up to 2^53: the mean */
    uint64_t buckets[HIST_BUCKETS];
};

void hist_init(struct histogram *h);
/* The bucket a value falls in, and the range [lo, hi] of that bucket. */
unsigned hist_index(uint64_t v);
uint64_t hist_bucket_lo(unsigned idx);
uint64_t hist_bucket_hi(unsigned idx);

static inline void hist_record(struct histogram *h, uint64_t v) {
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

/* Adds src's counts to dst. */
void hist_merge(struct histogram *dst, const struct histogram *src);
/* The p-th percentile (0 < p <= 100): the smallest recorded value at or below
 * which at least p% of the values lie, as its bucket's midpoint, kept inside
 * [min, max]. 0 when empty. */
double hist_percentile(const struct histogram *h, double p);
double hist_mean(const struct histogram *h);

#endif
