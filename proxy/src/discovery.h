/* EC2 discovery of backends, on a thread of its own (see discovery.c). */
#ifndef LB_DISCOVERY_H
#define LB_DISCOVERY_H

#include <stddef.h>

#include "balancer.h"

struct discovery;

/* Starts the thread (the table's reader READER_DISCOVERY); it follows the
 * clusters with discovery.ec2 in the configuration in force, across
 * reloads. 0 with *out set, or -errno with err filled. */
int discovery_start(struct balancer *b, struct discovery **out, char *err, size_t errlen);
/* Stops it: before the workers stop, since each change it makes waits for
 * every reader of the table. */
void discovery_stop(struct discovery *d);
/* The configuration changed: its clusters are looked at now, not at the
 * next due job (there may be none). NULL: nothing. */
void discovery_kick(struct discovery *d);

#endif
