#define _GNU_SOURCE
#include "reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void note(struct proxy_status *st, int ok, const char *msg) {
    pthread_mutex_lock(&st->lock);
    st->reloads++;
    st->reloads_failed += !ok;
    st->reload_ms = ev_wall_us() / 1000;
    st->reload_ok = ok;
    snprintf(st->reload_msg, sizeof(st->reload_msg), "%.*s", (int)sizeof(st->reload_msg) - 1,
             msg); /* cut to fit */
    pthread_mutex_unlock(&st->lock);
}

/* Logs each setting that changed but only takes effect after a restart (the
 * rows of config.c's table that a reload may not change). */
static void restart_notes(const struct proxy_config *boot, const struct proxy_config *next) {
    const char *names[32];
    size_t n = config_restart_diff(boot, next, names, sizeof(names) / sizeof(names[0]));
    for (size_t i = 0; i < n && i < sizeof(names) / sizeof(names[0]); i++)
        log_warn("SIGHUP: \"%s\" changed: it takes effect only after a restart", names[i]);
}

static int refuse(struct reloader *r, const char *why) {
    log_error("SIGHUP: configuration refused, the running one is kept: %s", why);
    note(r->st, 0, why);
    return -1;
}

int reload_config(struct reloader *r) {
    struct proxy_config *next = calloc(1, sizeof(*next));
    char msg[768];
    if (!next) return refuse(r, "out of memory");
    if (config_read(next, r->argc, r->argv, msg, sizeof(msg))) {
        refuse(r, msg[0] ? msg : "invalid configuration");
        config_free(next);
        free(next);
        return -1;
    }
    restart_notes(r->boot, next);

    int added, removed;
    if (balancer_set_config(r->bal, next, "SIGHUP", &added, &removed) < 0) {
        config_free(next);
        free(next);
        return refuse(r, "out of memory");
    }
    if (r->current != r->boot) {
        config_free(r->current);
        free(r->current);
    }
    r->current = next;
    discovery_kick(r->disc);
    dns_kick(r->dns);
    char summary[160];
    snprintf(summary, sizeof(summary), "%zu clusters, %d backends added, %d removed",
             next->nclusters, added, removed);
    log_info("SIGHUP: configuration reloaded: %s", summary);
    note(r->st, 1, summary);
    return 0;
}

void reloader_free(struct reloader *r) {
    if (r->current && r->current != r->boot) {
        config_free(r->current);
        free(r->current);
    }
    r->current = NULL;
}
