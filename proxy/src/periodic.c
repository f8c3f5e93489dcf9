#include "periodic.h"

#include <time.h>

/* Waits out one interval; whether to go on (no stop asked). Lock held. */
static int wait_interval(struct periodic *p) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += p->interval_s;
    while (!p->stop && pthread_cond_timedwait(&p->wake, &p->lock, &until) == 0) {
    }
    return !p->stop;
}

static void *periodic_main(void *arg) {
    struct periodic *p = arg;
    pthread_mutex_lock(&p->lock);
    int go = p->run_at_start ? !p->stop : wait_interval(p);
    while (go) {
        pthread_mutex_unlock(&p->lock);
        p->run(p->arg);
        pthread_mutex_lock(&p->lock);
        go = wait_interval(p);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int periodic_start(struct periodic *p, int interval_s, int run_at_start, void (*run)(void *),
                   void *arg) {
    *p = (struct periodic){
        .run = run, .arg = arg, .interval_s = interval_s, .run_at_start = run_at_start};
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    int rc = pthread_create(&p->thread, NULL, periodic_main, p);
    if (!rc) return 0;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    return -rc;
}

void periodic_stop(struct periodic *p) {
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
}

enum outage_say outage_failed(struct outage *o, uint64_t now_ms, unsigned *calls) {
    *calls = 1;
    if (!o->failing) {
        *o = (struct outage){.failing = 1, .logged_ms = now_ms, .total = 1};
        return OUTAGE_STARTS;
    }
    o->total++;
    o->since++;
    if (now_ms - o->logged_ms < OUTAGE_LOG_MS) return OUTAGE_QUIET;
    *calls = o->since;
    o->since = 0;
    o->logged_ms = now_ms;
    return OUTAGE_GOES_ON;
}

int outage_over(struct outage *o) {
    int was = o->failing;
    o->failing = 0;
    return was;
}
