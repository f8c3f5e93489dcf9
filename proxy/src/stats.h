/* Counters for /metrics and /status. Each worker has its own copy of every
 * counter, written only by that worker (a relaxed load and store: no locked
 * instruction, no shared cache line) and summed by the admin thread when it
 * is read. */
#ifndef LB_STATS_H
#define LB_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* Upper bounds of the latency histograms' buckets, in µs; one more bucket
 * counts what is above the last bound (+Inf). */
#define LB_HIST_BOUNDS 14
extern const uint32_t lb_hist_bounds_us[LB_HIST_BOUNDS];
/* Bucket i's "le" label, as /metrics writes it: its bound in seconds
 * ("0.0005" … "10"), then "+Inf". */
#define LB_HIST_LE_LEN 24
void lb_hist_le(int i, char out[LB_HIST_LE_LEN]);

struct lb_hist {
    /* not cumulative: each bucket its own range; the count is their sum, so
     * a reader never sees a count that disagrees with the buckets */
    atomic_ullong bucket[LB_HIST_BOUNDS + 1];
    atomic_ullong sum_us;
};

/* What one worker counted for one cluster. */
struct cluster_counters {
    atomic_ullong requests;
    atomic_ullong responses[5];     /* 1xx .. 5xx */
    atomic_ullong own_responses[5]; /* of which the proxy made itself (404, 502, 503 …) */
    struct lb_hist duration;        /* request start to the response's last byte */
    struct lb_hist backend;         /* request sent to the backend's response head */
} __attribute__((aligned(64)));

enum lb_error {
    ERR_BAD_REQUEST,        /* 400: malformed or smuggling attempt */
    ERR_CLIENT_TIMEOUT,     /* 408 */
    ERR_HEADER_TOO_LARGE,   /* 431 */
    ERR_NO_HEALTHY_BACKEND, /* 503 */
    ERR_BACKEND_CONNECT,    /* a connect refused or timed out */
    ERR_BACKEND_RESET,      /* closed or reset before or during its response */
    ERR_BACKEND_MALFORMED,  /* a response head that does not parse */
    ERR_BACKEND_TIMEOUT,    /* 504 */
    ERR_CLIENT_ABORT,       /* the client left before its response was complete */
    ERR_RETRY,              /* a request sent again to another backend */
    ERR_COUNT
};
extern const char *const lb_error_names[ERR_COUNT];

/* Why a request was sent again (lb_retries_total{reason}). */
enum lb_retry {
    RETRY_CONNECT,               /* the connect was refused or timed out */
    RETRY_RESET_BEFORE_RESPONSE, /* reset or closed before a complete response head */
    RETRY_STALE_CONNECTION,      /* a pooled keep-alive connection was found closed */
    RETRY_COUNT
};
extern const char *const lb_retry_names[RETRY_COUNT];
extern const char *const lb_status_classes[5]; /* "1xx" .. "5xx" */

/* Requests by desync class (enum desync_class in http.h: compliant,
 * acceptable, ambiguous, severe). */
#define LB_DESYNC_CLASSES 4

/* What one worker counted for the whole process. */
struct worker_counters {
    atomic_ullong connections; /* accepted */
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong copied_bytes; /* body bytes that passed through user space */
    atomic_ullong errors[ERR_COUNT];
    atomic_ullong retries[RETRY_COUNT];
    atomic_ullong desync[LB_DESYNC_CLASSES];
};

/* Only the owning thread calls these. */
static inline void ctr_add(atomic_ullong *c, uint64_t n) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t ctr_get(const atomic_ullong *c) {
    return atomic_load_explicit(c, memory_order_relaxed);
}

void hist_observe(struct lb_hist *h, uint64_t us);

/* What the readers (/metrics, /status, CloudWatch) see: the counters of
 * every worker added up. A histogram's count is the sum of its buckets. */
struct cluster_sums {
    uint64_t requests, responses[5], own_responses[5];
    uint64_t duration[LB_HIST_BOUNDS + 1], duration_sum_us, duration_count;
    uint64_t backend[LB_HIST_BOUNDS + 1], backend_sum_us, backend_count;
};
void cluster_counters_sum(const struct cluster_counters *per_worker, int nworkers,
                          struct cluster_sums *out);

struct worker_sums {
    uint64_t connections, bytes_in, bytes_out, copied_bytes, errors[ERR_COUNT],
        retries[RETRY_COUNT];
    uint64_t desync[LB_DESYNC_CLASSES];
};
/* Adds one worker's counters to out. */
void worker_counters_add(const struct worker_counters *c, struct worker_sums *out);

#endif
