/* The probe thread: active health checks of every backend, on its own
 * event loop, spread over each cluster's interval, measuring latency as it
 * goes (into the latency table's probe latency and EWMA). */
#ifndef LB_PROBE_H
#define LB_PROBE_H

#include <stddef.h>

#include "balancer.h"
#include "config.h"

struct prober;

/* Starts the thread (the table's reader READER_PROBE): 0 with *out set, or
 * -errno with err filled. */
int prober_start(struct balancer *b, const struct proxy_config *cfg, struct prober **out, char *err,
                 size_t errlen);
void prober_stop(struct prober *p);

#endif
