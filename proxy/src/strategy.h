/* The strategies: which available backend of a cluster gets the next
 * request (strategy.c). Their names are the configuration's spelling. */
#ifndef LB_STRATEGY_H
#define LB_STRATEGY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct backend;

enum strategy {
    STRATEGY_PEAK_EWMA, /* the default */
    STRATEGY_FASTEST,
    STRATEGY_LEAST_OUTSTANDING,
    STRATEGY_ROUND_ROBIN,
    STRATEGY_RANDOM,
};
#define STRATEGY_NAMES "fastest, peak-ewma, least-outstanding, round-robin or random"

const char *strategy_name(enum strategy s);
int strategy_parse(const char *s); /* -1 when unknown */

/* One choice over one cluster's backends. */
struct pick {
    const struct backend *avoid; /* not this one, unless it is the only one available */
    atomic_uint *next;           /* round-robin position */
    uint64_t rnd;
    int64_t now_ms;
    int slow_start_ms;
};
/* Available: healthy, not ejected, weight above 0. */
int backend_available(const struct backend *be, int64_t now_ms);
struct backend *strategy_pick(enum strategy s, struct backend *const *backends, size_t n,
                              const struct pick *pk);

#endif
