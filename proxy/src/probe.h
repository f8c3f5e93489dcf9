/* The probe thread: active health checks of every backend, on its own
 * event loop, spread over each cluster's interval, measuring latency as it
 * goes (into the latency table's probe latency and EWMA). */
#ifndef LB_PROBE_H
#define LB_PROBE_H

#include "balancer.h"
#include "config.h"

struct prober;

/* Starts the thread; reader_id is its slot among the table's readers. */
struct prober *prober_start(struct balancer *b, const struct proxy_config *cfg, int reader_id);
void prober_stop(struct prober *p);

#endif
