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
    snprintf(st->reload_msg, sizeof(st->reload_msg), "%s", msg);
    pthread_mutex_unlock(&st->lock);
}

/* Logs each setting that changed but only takes effect after a restart. */
static void restart_notes(const struct proxy_config *boot, const struct proxy_config *next) {
    struct {
        const char *what;
        int changed;
    } s[] = {
        {"listen", strcmp(boot->listen_text, next->listen_text)},
        {"threads", boot->threads != next->threads},
        {"engine", boot->engine != next->engine},
        {"admin", boot->admin_set != next->admin_set || strcmp(boot->admin_text, next->admin_text)},
        {"access_log", strcmp(boot->access_log, next->access_log)},
        {"log_level", boot->log_level != next->log_level},
        {"limits", memcmp(&boot->limits, &next->limits, sizeof(boot->limits))},
        {"timeouts_ms", memcmp(&boot->timeouts_ms, &next->timeouts_ms, sizeof(boot->timeouts_ms))},
        {"default_response",
         boot->default_response.status != next->default_response.status ||
             strcmp(boot->default_response.content_type, next->default_response.content_type) ||
             boot->default_response.body_len != next->default_response.body_len ||
             memcmp(boot->default_response.body, next->default_response.body,
                    boot->default_response.body_len)},
    };
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        if (s[i].changed)
            log_warn("SIGHUP: \"%s\" changed: it takes effect only after a restart", s[i].what);
}

static int in_table(const struct lb_table *t, const struct backend *be) {
    for (size_t i = 0; i < t->nclusters; i++)
        for (size_t j = 0; j < t->clusters[i].n; j++)
            if (t->clusters[i].rows[j] == be) return 1;
    return 0;
}

static const struct cluster_rt *find_cluster(const struct lb_table *t,
                                             const struct lb_cluster *id) {
    for (size_t i = 0; i < t->nclusters; i++)
        if (t->clusters[i].id == id) return &t->clusters[i];
    return NULL;
}

static void log_cluster_changes(const struct lb_table *old, const struct lb_table *next) {
    for (size_t i = 0; i < next->nclusters; i++) {
        const struct cluster_rt *c = &next->clusters[i], *was = find_cluster(old, c->id);
        if (!was)
            log_info("SIGHUP: cluster %s added (%s)", c->id->name, c->cfg->path_prefix);
        else if (was->cfg->strategy != c->cfg->strategy)
            log_info("SIGHUP: cluster %s: strategy %s -> %s", c->id->name,
                     strategy_name(was->cfg->strategy), strategy_name(c->cfg->strategy));
    }
    for (size_t i = 0; i < old->nclusters; i++)
        if (!find_cluster(next, old->clusters[i].id))
            log_info("SIGHUP: cluster %s removed", old->clusters[i].id->name);
}

/* Logs the clusters and backends that change; counts backends in and out. */
static void log_changes(const struct lb_table *old, const struct lb_table *next, int *added,
                        int *removed) {
    *added = *removed = 0;
    log_cluster_changes(old, next);
    for (size_t i = 0; i < next->nclusters; i++)
        for (size_t j = 0; j < next->clusters[i].n; j++)
            if (!in_table(old, next->clusters[i].rows[j])) {
                log_info("SIGHUP: backend %s joins cluster %s", next->clusters[i].rows[j]->name,
                         next->clusters[i].id->name);
                ++*added;
            }
    for (size_t i = 0; i < old->nclusters; i++)
        for (size_t j = 0; j < old->clusters[i].n; j++)
            if (!in_table(next, old->clusters[i].rows[j])) {
                log_info("SIGHUP: backend %s leaves cluster %s (draining what it has)",
                         old->clusters[i].rows[j]->name, old->clusters[i].id->name);
                ++*removed;
            }
}

static int refuse(struct reloader *r, const char *why) {
    log_error("SIGHUP: configuration refused, the running one is kept: %s", why);
    note(r->st, 0, why);
    return -1;
}

int reload_config(struct reloader *r) {
    struct proxy_config *next = calloc(1, sizeof(*next));
    char *msg = NULL;
    size_t len = 0;
    FILE *errors = open_memstream(&msg, &len);
    if (!next || !errors) {
        free(next);
        if (errors) fclose(errors);
        free(msg);
        return refuse(r, "out of memory");
    }
    int rc = config_load(next, r->argc, r->argv, errors);
    fclose(errors);
    if (rc) {
        while (len && msg[len - 1] == '\n')
            msg[--len] = 0;
        const char *why = strncmp(msg, "proxy: ", 7) ? msg : msg + 7;
        refuse(r, len ? why : "invalid configuration");
        free(msg);
        config_free(next);
        free(next);
        return -1;
    }
    free(msg);
    restart_notes(r->boot, next);

    struct balancer *b = r->bal;
    pthread_mutex_lock(&b->write_lock);
    struct lb_table *old = balancer_table(b);
    struct lb_table *t = lb_table_build(b, next, old);
    int added = 0, removed = 0;
    if (t) {
        log_changes(old, t, &added, &removed);
        balancer_swap(b, t); /* returns once no reader can see the old table */
    }
    pthread_mutex_unlock(&b->write_lock);
    if (!t) {
        config_free(next);
        free(next);
        return refuse(r, "out of memory");
    }
    if (r->current != r->boot) {
        config_free(r->current);
        free(r->current);
    }
    r->current = next;
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
