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
        {"desync_mitigation", boot->desync_mode != next->desync_mode},
        {"cloudwatch", memcmp(&boot->cloudwatch, &next->cloudwatch, sizeof(boot->cloudwatch))},
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
