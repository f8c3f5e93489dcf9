/* CloudWatch publishing of the proxy's counters (see cloudwatch.c). */
#ifndef LB_CLOUDWATCH_H
#define LB_CLOUDWATCH_H

#include <stddef.h>
#include <stdint.h>

#include "balancer.h"
#include "worker.h"

struct cloudwatch;

/* Starts the thread (the table's reader READER_CLOUDWATCH): PutMetricData
 * every cfg->interval_s. 0 with *out set, or -errno with err filled. */
int cloudwatch_start(const struct cloudwatch_config *cfg, struct balancer *b,
                     struct worker *workers, int nworkers, struct cloudwatch **out, char *err,
                     size_t errlen);
/* Stops it at once: a call in flight is abandoned, nothing more is sent. */
void cloudwatch_stop(struct cloudwatch *cw);
/* Stops it with a last publication (what was counted since the last one,
 * and what is still undelivered), finished or abandoned by deadline_ms
 * (ev_clock_ms()); a call in flight may go on until then. */
void cloudwatch_stop_flush(struct cloudwatch *cw, uint64_t deadline_ms);

#endif
