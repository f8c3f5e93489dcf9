/* A thread of its own that runs a function at a fixed interval, for the
 * proxy's background work that talks to AWS (discovery, CloudWatch): a
 * stop does not wait for the rest of an interval, only for a run under way. */
#ifndef LB_PERIODIC_H
#define LB_PERIODIC_H

#include <pthread.h>

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

/* Starts the thread: 0, or -1 when it cannot. */
int periodic_start(struct periodic *p, int interval_s, int run_at_start, void (*run)(void *),
                   void *arg);
void periodic_stop(struct periodic *p);

#endif
