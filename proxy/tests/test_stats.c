/* The counters' helpers (stats.h): histogram buckets and their "le"
 * labels, which /metrics has always written as below (dashboards and
 * recording rules match them as strings). */
#include "stats.h"

#include "testing.h"

static void test_le_labels(void) {
    static const char *const want[LB_HIST_BOUNDS + 1] = {
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
        "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf",
    };
    for (int i = 0; i <= LB_HIST_BOUNDS; i++) {
        char le[LB_HIST_LE_LEN];
        lb_hist_le(i, le);
        CHECK_STR(le, want[i]);
    }
}

/* A sample on a bound counts in that bound's bucket; above the last, in +Inf. */
static void test_buckets(void) {
    static struct lb_hist h;
    hist_observe(&h, 0);
    hist_observe(&h, lb_hist_bounds_us[0]);
    hist_observe(&h, lb_hist_bounds_us[0] + 1);
    hist_observe(&h, lb_hist_bounds_us[LB_HIST_BOUNDS - 1] + 1);
    CHECK(ctr_get(&h.bucket[0]) == 2);
    CHECK(ctr_get(&h.bucket[1]) == 1);
    CHECK(ctr_get(&h.bucket[LB_HIST_BOUNDS]) == 1);
    CHECK(ctr_get(&h.sum_us) ==
          2 * lb_hist_bounds_us[0] + 1 + lb_hist_bounds_us[LB_HIST_BOUNDS - 1] + 1);
    struct cluster_counters c[2] = {0};
    hist_observe(&c[0].backend, 100);
    hist_observe(&c[1].backend, 3000);
    struct cluster_sums sum;
    cluster_counters_sum(c, 2, &sum);
    CHECK(sum.backend_count == 2 && sum.backend_sum_us == 3100);
    CHECK(sum.backend[0] == 1 && sum.backend[3] == 1);
}

int main(void) {
    test_le_labels();
    test_buckets();
    return test_summary();
}
