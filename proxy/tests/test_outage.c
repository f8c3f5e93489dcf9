/* The log lines of a call that fails for a while (periodic.h): one when it
 * starts, at most one a minute while it goes on, one when it is over. */
#include "periodic.h"

#include "testing.h"

int main(void) {
    struct outage o = {0};
    unsigned calls = 0;
    CHECK(!outage_over(&o)); /* a success with no outage says nothing */

    CHECK(outage_failed(&o, 1000, &calls) == OUTAGE_STARTS && calls == 1);
    /* a failure a second for 59 s: quiet */
    int quiet = 1;
    for (uint64_t t = 2000; t < 1000 + OUTAGE_LOG_MS; t += 1000)
        quiet &= outage_failed(&o, t, &calls) == OUTAGE_QUIET;
    CHECK(quiet);
    /* a minute after the first line: one line for the 59 quiet calls and itself */
    CHECK(outage_failed(&o, 1000 + OUTAGE_LOG_MS, &calls) == OUTAGE_GOES_ON && calls == 60);
    CHECK(outage_failed(&o, 2000 + OUTAGE_LOG_MS, &calls) == OUTAGE_QUIET);
    CHECK(outage_failed(&o, 1000 + 2 * OUTAGE_LOG_MS, &calls) == OUTAGE_GOES_ON && calls == 2);
    CHECK(o.total == 63);

    CHECK(outage_over(&o) && o.total == 63);
    CHECK(!outage_over(&o)); /* once */
    /* the next outage starts afresh */
    CHECK(outage_failed(&o, 5 * OUTAGE_LOG_MS, &calls) == OUTAGE_STARTS && calls == 1);
    CHECK(o.total == 1);
    return test_summary();
}
