#include "periodic.h"

#include "ev.h"

#include <time.h>

/* Waits delay_s seconds (0: until a kick, < 0: not at all); whether to go
 * on (no stop asked). Lock held. */
static int wait_next(struct periodic *p, int delay_s) {
    if (delay_s < 0) return !p->stop;
    struct timespec until = ev_timespec_in(CLOCK_MONOTONIC, (uint64_t)delay_s * 1000);
    int timed_out = 0;
    while (!p->stop && !p->kicked && !timed_out)
        timed_out = delay_s ? pthread_cond_timedwait(&p->wake, &p->lock, &until) != 0
                            : pthread_cond_wait(&p->wake, &p->lock) != 0;
    p->kicked = 0;
    return !p->stop;
}

static void *periodic_main(void *arg) {
    struct periodic *p = arg;
    int delay = p->first_s ? p->first_s : -1;
    pthread_mutex_lock(&p->lock);
    while (wait_next(p, delay)) {
        pthread_mutex_unlock(&p->lock);
        delay = p->run(p->arg);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int periodic_start(struct periodic *p, int first_s, periodic_fn run, void *arg) {
    *p = (struct periodic){.run = run, .arg = arg, .first_s = first_s};
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, &attr);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&p->thread, NULL, periodic_main, p);
    if (!rc) return 0;
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    return -rc;
}

void periodic_kick(struct periodic *p) {
    pthread_mutex_lock(&p->lock);
    p->kicked = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
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

int periodic_seconds_until(uint64_t due_ms, uint64_t now_ms) {
    if (due_ms <= now_ms + 1000) return 1;
    return (int)((due_ms - now_ms + 999) / 1000);
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
