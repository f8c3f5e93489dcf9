/* GET /status: the process, its clusters and every backend's view in the
 * latency table, as JSON (cJSON). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "accesslog.h"
#include "status.h"

static void add_time(cJSON *o, const char *key, int64_t ms) {
    if (!ms) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    char buf[40];
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(ms % 1000));
    cJSON_AddStringToObject(o, key, buf);
}

/* {"at": …, "why": …}, or null when it never happened. */
static void add_note(cJSON *o, const char *key, int64_t at_ms, const char *why) {
    if (!at_ms) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    cJSON *n = cJSON_AddObjectToObject(o, key);
    add_time(n, "at", at_ms);
    cJSON_AddStringToObject(n, "why", why);
}

static void add_ms(cJSON *o, const char *key, double us) {
    if (us <= 0)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, us / 1e3);
}

/* Outlier detection's view of the backend, and its share as weight × slow start. */
static void add_outlier(cJSON *b, const struct backend *be, const struct cluster_config *cc) {
    int64_t now = ev_clock_ms();
    int64_t until = atomic_load(&be->ejected_until);
    cJSON_AddBoolToObject(b, "ejected", until > now);
    if (until > now)
        cJSON_AddNumberToObject(b, "ejected_for_ms", (double)(until - now));
    else
        cJSON_AddNullToObject(b, "ejected_for_ms");
    cJSON_AddNumberToObject(b, "ejections", (double)atomic_load(&be->ejections));
    cJSON_AddNumberToObject(b, "consecutive_5xx", atomic_load(&be->consec_5xx));
    cJSON_AddNumberToObject(b, "consecutive_gateway_failures", atomic_load(&be->consec_gw));
    cJSON_AddNumberToObject(b, "error_share", backend_error_share(be, now));
    cJSON_AddNumberToObject(b, "weight", atomic_load(&be->weight));
    double w = atomic_load(&be->weight);
    double ramp = w > 0 ? backend_weight(be, cc->slow_start_ms, now) / w : 1.0;
    cJSON_AddNumberToObject(b, "slow_start", ramp); /* 1: at its full share */
}

static cJSON *backend_json(struct backend *be, const struct cluster_config *cc, int nworkers) {
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "address", be->name);
    if (be->origin[0]) cJSON_AddStringToObject(b, "name", be->origin);
    cJSON_AddBoolToObject(b, "healthy", atomic_load(&be->healthy));
    cJSON_AddNumberToObject(b, "consecutive_successes", atomic_load(&be->consec_ok));
    cJSON_AddNumberToObject(b, "consecutive_failures", atomic_load(&be->consec_fail));
    add_outlier(b, be, cc);
    add_ms(b, "last_probe_ms", atomic_load(&be->probe_us));
    add_ms(b, "ewma_ms", backend_ewma_us(be));
    cJSON_AddNumberToObject(b, "inflight", atomic_load(&be->inflight));
    cJSON_AddNumberToObject(b, "requests", (double)backend_requests(be, nworkers));
    cJSON_AddNumberToObject(b, "errors", (double)backend_failures(be, nworkers));
    int64_t changed, failed;
    char changed_why[128], failed_why[128];
    backend_notes(be, &changed, changed_why, &failed, failed_why, sizeof(changed_why));
    add_note(b, "last_transition", changed, changed_why);
    add_note(b, "last_failure", failed, failed_why);
    return b;
}

static void add_counts(const struct admin_view *v, cJSON *o, const struct cluster *lc) {
    struct cluster_sums sum;
    cluster_counters_sum(lc->per_worker, v->nworkers, &sum);
    cJSON_AddNumberToObject(o, "requests", (double)sum.requests);
    cJSON *r = cJSON_AddObjectToObject(o, "responses");
    for (int k = 0; k < 5; k++)
        cJSON_AddNumberToObject(r, lb_status_classes[k], (double)sum.responses[k]);
}

struct clusters_json {
    const struct admin_view *v;
    cJSON *list;
};

static void add_cluster(const struct table_cluster *c, void *arg) {
    const struct clusters_json *cj = arg;
    const struct admin_view *v = cj->v;
    cJSON *o = cJSON_CreateObject();
    int healthy = 0;
    cJSON_AddStringToObject(o, "name", c->id->name);
    cJSON_AddStringToObject(o, "path_prefix", c->cfg->path_prefix);
    cJSON_AddStringToObject(o, "strategy", strategy_name(c->cfg->strategy));
    add_counts(v, o, c->id);
    cJSON *list = cJSON_AddArrayToObject(o, "backends");
    for (size_t j = 0; j < c->n; j++) {
        healthy += atomic_load(&c->backends[j]->healthy);
        cJSON_AddItemToArray(list, backend_json(c->backends[j], c->cfg, v->nworkers));
    }
    cJSON_AddNumberToObject(o, "healthy_backends", healthy);
    cJSON_AddItemToArray(cj->list, o);
}

static void add_reload(const struct admin_view *v, cJSON *root) {
    struct proxy_status *st = v->st;
    cJSON *r = cJSON_AddObjectToObject(root, "reload");
    pthread_mutex_lock(&st->lock);
    cJSON_AddNumberToObject(r, "count", st->reloads);
    cJSON_AddNumberToObject(r, "failed", st->reloads_failed);
    if (st->reload_ms) {
        cJSON *last = cJSON_AddObjectToObject(r, "last");
        add_time(last, "at", st->reload_ms);
        cJSON_AddBoolToObject(last, "ok", st->reload_ok);
        cJSON_AddStringToObject(last, "message", st->reload_msg);
    } else {
        cJSON_AddNullToObject(r, "last");
    }
    pthread_mutex_unlock(&st->lock);
}

static void add_process(const struct admin_view *v, cJSON *root) {
    int64_t now = ev_wall_us() / 1000;
    cJSON_AddStringToObject(root, "version", LB_VERSION);
    cJSON_AddNumberToObject(root, "pid", getpid());
    add_time(root, "started", v->st->started_ms);
    cJSON_AddNumberToObject(root, "uptime_s", (double)(now - v->st->started_ms) / 1e3);
    cJSON_AddBoolToObject(root, "draining", atomic_load(&g_draining));
    cJSON_AddStringToObject(root, "engine", ev_engine_name(ev_loop_engine(v->workers[0].loop)));
    cJSON_AddNumberToObject(root, "threads", v->nworkers);
    cJSON_AddStringToObject(root, "listen", v->cfg->listen_text);
    cJSON *conns = cJSON_AddObjectToObject(root, "connections");
    struct worker_sums sum;
    workers_sum(v->workers, v->nworkers, &sum);
    cJSON_AddNumberToObject(conns, "active", (double)atomic_load(&g_connections));
    cJSON_AddNumberToObject(conns, "total", (double)sum.connections);
    cJSON *retries = cJSON_AddObjectToObject(root, "retries");
    for (int k = 0; k < RETRY_COUNT; k++)
        cJSON_AddNumberToObject(retries, lb_retry_names[k], (double)sum.retries[k]);
    cJSON *unrouted = cJSON_AddObjectToObject(root, "unrouted");
    add_counts(v, unrouted, balancer_unrouted(v->bal));
    cJSON *log = cJSON_AddObjectToObject(root, "access_log");
    if (v->alog) {
        cJSON_AddStringToObject(log, "path", v->cfg->access_log);
        cJSON_AddNumberToObject(log, "dropped", (double)alog_dropped(v->alog));
    } else {
        cJSON_AddNullToObject(log, "path");
    }
    add_reload(v, root);
}

void status_render(const struct admin_view *v, struct sbuf *out) {
    cJSON *root = cJSON_CreateObject();
    add_process(v, root);
    struct clusters_json cj = {v, cJSON_AddArrayToObject(root, "clusters")};
    balancer_each_cluster(v->bal, add_cluster, &cj);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text) {
        sbuf_adds(out, text);
        sbuf_adds(out, "\n");
    }
    free(text);
}
