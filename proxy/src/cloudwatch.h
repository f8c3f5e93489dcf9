/* CloudWatch publishing of the proxy's counters (see cloudwatch.c). */
#ifndef LB_CLOUDWATCH_H
#define LB_CLOUDWATCH_H

#include "balancer.h"
#include "worker.h"

struct cloudwatch;

/* Starts the thread: PutMetricData every cfg->interval_s. NULL when it
 * cannot. */
struct cloudwatch *cloudwatch_start(const struct cloudwatch_config *cfg, struct balancer *b,
                                    struct worker *workers, int nworkers);
void cloudwatch_stop(struct cloudwatch *cw);

#endif
