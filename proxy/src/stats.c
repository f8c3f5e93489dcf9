#include "stats.h"

#include <stdio.h>
#include <string.h>

const uint32_t lb_hist_bounds_us[LB_HIST_BOUNDS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

void lb_hist_le(int i, char out[LB_HIST_LE_LEN]) {
    if (i >= LB_HIST_BOUNDS) {
        snprintf(out, LB_HIST_LE_LEN, "+Inf");
        return;
    }
    uint32_t us = lb_hist_bounds_us[i];
    int n = snprintf(out, LB_HIST_LE_LEN, "%u.%06u", us / 1000000, us % 1000000);
    while (out[n - 1] == '0') /* the shortest decimal: 0.0025, 1, 2.5 */
        out[--n] = 0;
    if (out[n - 1] == '.') out[n - 1] = 0;
}

const char *const lb_error_names[ERR_COUNT] = {
    [ERR_BAD_REQUEST] = "bad_request",
    [ERR_CLIENT_TIMEOUT] = "client_timeout",
    [ERR_HEADER_TOO_LARGE] = "header_too_large",
    [ERR_NO_HEALTHY_BACKEND] = "no_healthy_backend",
    [ERR_BACKEND_CONNECT] = "backend_connect",
    [ERR_BACKEND_RESET] = "backend_reset",
    [ERR_BACKEND_MALFORMED] = "backend_malformed",
    [ERR_BACKEND_TIMEOUT] = "backend_timeout",
    [ERR_CLIENT_ABORT] = "client_abort",
    [ERR_RETRY] = "retry",
};

const char *const lb_retry_names[RETRY_COUNT] = {
    [RETRY_CONNECT] = "connect",
    [RETRY_RESET_BEFORE_RESPONSE] = "reset_before_response",
    [RETRY_STALE_CONNECTION] = "stale_connection",
};

const char *const lb_status_classes[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

void hist_observe(struct lb_hist *h, uint64_t us) {
    int i = 0;
    while (i < LB_HIST_BOUNDS && us > lb_hist_bounds_us[i])
        i++;
    ctr_add(&h->bucket[i], 1);
    ctr_add(&h->sum_us, us);
}

/* Adds h to buckets and *sum_us; returns how many samples it holds. */
static uint64_t hist_add(const struct lb_hist *h, uint64_t *buckets, uint64_t *sum_us) {
    uint64_t n = 0;
    for (int i = 0; i <= LB_HIST_BOUNDS; i++) {
        uint64_t b = ctr_get(&h->bucket[i]);
        buckets[i] += b;
        n += b;
    }
    *sum_us += ctr_get(&h->sum_us);
    return n;
}

void cluster_counters_sum(const struct cluster_counters *per_worker, int nworkers,
                          struct cluster_sums *out) {
    memset(out, 0, sizeof(*out));
    for (int w = 0; w < nworkers; w++) {
        const struct cluster_counters *c = &per_worker[w];
        out->requests += ctr_get(&c->requests);
        for (int k = 0; k < 5; k++) {
            out->responses[k] += ctr_get(&c->responses[k]);
            out->own_responses[k] += ctr_get(&c->own_responses[k]);
        }
        out->duration_count += hist_add(&c->duration, out->duration, &out->duration_sum_us);
        out->backend_count += hist_add(&c->backend, out->backend, &out->backend_sum_us);
    }
}

void worker_counters_add(const struct worker_counters *c, struct worker_sums *out) {
    out->connections += ctr_get(&c->connections);
    out->bytes_in += ctr_get(&c->bytes_in);
    out->bytes_out += ctr_get(&c->bytes_out);
    out->copied_bytes += ctr_get(&c->copied_bytes);
    for (int k = 0; k < ERR_COUNT; k++)
        out->errors[k] += ctr_get(&c->errors[k]);
    for (int k = 0; k < RETRY_COUNT; k++)
        out->retries[k] += ctr_get(&c->retries[k]);
    for (int k = 0; k < LB_DESYNC_CLASSES; k++)
        out->desync[k] += ctr_get(&c->desync[k]);
}
