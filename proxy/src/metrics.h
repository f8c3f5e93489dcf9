/* GET /metrics: the Prometheus text exposition format (metrics.c). */
#ifndef LB_METRICS_H
#define LB_METRICS_H

#include "admin.h"

/* The body, rendered from the counters as they are now. The caller is an
 * online reader of the balancer's table. */
void metrics_render(const struct admin_view *v, struct sbuf *out);

#endif
