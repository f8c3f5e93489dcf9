/* EC2 discovery of backends, on a thread of its own (see discovery.c). */
#ifndef LB_DISCOVERY_H
#define LB_DISCOVERY_H

#include "balancer.h"

struct discovery;

/* Starts the thread; it follows the clusters with discovery.ec2 in the
 * configuration in force (b->cfg), across reloads. NULL when it cannot. */
struct discovery *discovery_start(struct balancer *b);
/* Stops it: before the workers stop, since each change it makes waits for
 * every reader of the table. */
void discovery_stop(struct discovery *d);

#endif
