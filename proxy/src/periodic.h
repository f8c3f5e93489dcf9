/* A thread of its own that runs a function on a schedule the function
 * returns, for the proxy's background work that talks to AWS or DNS
 * (discovery, CloudWatch, names): a stop does not wait for the rest of an
 * interval, only for a run under way, and a thread with nothing to do sleeps
 * until it is kicked (a reload), never waking to poll. */
#ifndef LB_PERIODIC_H
#define LB_PERIODIC_H

#include <pthread.h>
#include <stdint.h>

/* One run: the seconds until the next one, or 0 for none until a kick. */
typedef int (*periodic_fn)(void *arg);

struct periodic {
    periodic_fn run;
    void *arg;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int first_s;
    int stop, kicked;
};

/* Starts the thread; its first run comes after first_s seconds (0: at
 * once). 0, or -errno (pthread_create's). */
int periodic_start(struct periodic *p, int first_s, periodic_fn run, void *arg);
/* Runs it again now (after the run under way, if any): any thread. */
void periodic_kick(struct periodic *p);
void periodic_stop(struct periodic *p);
/* Whole seconds from now_ms until due_ms (monotonic), at least 1. */
int periodic_seconds_until(uint64_t due_ms, uint64_t now_ms);

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
