/* GET /status: the process, its clusters and backends as JSON (status.c). */
#ifndef LB_STATUS_H
#define LB_STATUS_H

#include "admin.h"

/* The body, rendered from the counters as they are now. The caller is an
 * online reader of the balancer's table. */
void status_render(const struct admin_view *v, struct sbuf *out);

#endif
