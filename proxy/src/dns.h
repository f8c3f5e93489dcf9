/* Backends given as DNS names ("app-1.internal:8000"): resolved at start and
 * every cluster's dns_refresh_s on a thread of its own (see dns.c), each
 * address a backend of its cluster. */
#ifndef LB_DNS_H
#define LB_DNS_H

#include <stddef.h>
#include <stdio.h>

#include "balancer.h"

struct dns;

/* The resolution at start, after balancer_new and before balancer_ready
 * (its backends swap in at once, at full share): every name of the
 * configuration; the table's reader READER_DNS. 0 with *out set (also when
 * no cluster has names: a reload may add some); -EINVAL when a name does not
 * resolve (a configuration error), each such name reported on stderr as
 * "proxy: clusters[0].backends[1]: cannot resolve ..." (or "--route PREFIX:
 * ..." for a name given in --route; argv tells which); -ENOMEM. err says
 * which. */
int dns_open(struct balancer *b, int argc, char **argv, struct dns **out, char *err, size_t errlen);
/* Starts the refresher: after balancer_ready and the readers (its table
 * changes wait for them). It follows the configuration in force, across
 * reloads. 0, or -errno with err filled. */
int dns_start(struct dns *d, char *err, size_t errlen);
/* Stops the thread, if started: before the workers stop, since each change
 * it makes waits for every reader of the table. NULL: nothing. */
void dns_stop(struct dns *d);
/* The configuration changed: its names are looked at now. NULL or not
 * started: nothing. */
void dns_kick(struct dns *d);
/* Stops it if need be and frees d (after the run: the balancer may be
 * freed next). NULL: nothing. */
void dns_free(struct dns *d);

/* For --check: resolves every name of cfg and writes one line per name
 * with its addresses, or why it does not resolve (also on stderr, as
 * dns_open does). The number of names that did not resolve. */
int dns_check(const struct proxy_config *cfg, int argc, char **argv, FILE *out);

#endif
