#include "stats.h"

const uint32_t lb_hist_bounds_us[LB_HIST_BOUNDS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

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

void hist_observe(struct lb_hist *h, uint64_t us) {
    int i = 0;
    while (i < LB_HIST_BOUNDS && us > lb_hist_bounds_us[i])
        i++;
    ctr_add(&h->bucket[i], 1);
    ctr_add(&h->sum_us, us);
}
