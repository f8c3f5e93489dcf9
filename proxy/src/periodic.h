/* A thread of its own that runs a function at a fixed interval, for the
 * proxy's background work that talks to AWS (discovery, CloudWatch): a
 * stop does not wait for the rest of an interval, only for a run under way. */
#ifndef LB_PERIODIC_H
#define LB_PERIODIC_H

#include <pthread.h>
#include <stdint.h>

struct periodic {
    void (*run)(void *arg);
    void *arg;
    int interval_s;
    int run_at_start; /* run once at once, before the first interval */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
};

/* Starts the thread: 0, or -errno (pthread_create's). */
int periodic_start(struct periodic *p, int interval_s, int run_at_start, void (*run)(void *),
                   void *arg);
void periodic_stop(struct periodic *p);

/* The log lines of a call that fails for a while (a cluster's discovery,
 * CloudWatch's publication): one when it starts failing, at most one a
 * minute while it fails (whatever the interval, retries included), one when
 * it works again. */
#define OUTAGE_LOG_MS 60000
struct outage {
    int failing;
    uint64_t logged_ms; /* monotonic: the last line */
    unsigned since;     /* failed calls not spoken for by a line yet */
    unsigned total;     /* failed calls in this outage */
};
enum outage_say { OUTAGE_QUIET, OUTAGE_STARTS, OUTAGE_GOES_ON };
/* A failed call at now_ms: what to log; *calls: the failed calls the line
 * speaks for (this one and those since the last line). */
enum outage_say outage_failed(struct outage *o, uint64_t now_ms, unsigned *calls);
/* A call that worked: whether it ends an outage (log it; o->total: how many
 * calls failed in it). */
int outage_over(struct outage *o);

#endif
