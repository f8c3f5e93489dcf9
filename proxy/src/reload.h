/* SIGHUP: the configuration read again and its clusters swapped in whole.
 * In-flight requests and keep-alive connections carry on; removed backends
 * finish what they have and get nothing new. Settings that belong to the
 * listeners and threads need a restart: the log says which. */
#ifndef LB_RELOAD_H
#define LB_RELOAD_H

#include "admin.h"
#include "discovery.h"
#include "dns.h"

struct reloader {
    int argc;
    char **argv;
    const struct proxy_config *boot; /* the start-up configuration, kept by the workers */
    struct proxy_config *current;    /* the clusters in force: boot until the first reload */
    struct balancer *bal;
    struct proxy_status *st;
    /* kicked after a reload: it may give them work (NULL: not running) */
    struct discovery *disc;
    struct dns *dns;
};

/* Reads the configuration again (the same flags, the same file) and applies
 * its clusters; a configuration that fails validation changes nothing.
 * Main thread only. 0 when applied. */
int reload_config(struct reloader *r);
void reloader_free(struct reloader *r);

#endif
