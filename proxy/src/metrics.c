/* GET /metrics: the Prometheus text exposition format (version 0.0.4).
 * Every family is declared with HELP and TYPE whether or not it has samples
 * yet; per-worker counters are summed here, when they are read. */
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "metrics.h"
#include "fmt.h"

static void family(struct sbuf *out, const char *name, const char *type, const char *help) {
    sbuf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample's integer value and the line's end; by hand, as a scrape writes
 * hundreds of them (printf was most of its cost). */
static void value_line(struct sbuf *out, uint64_t v) {
    char buf[24], *end = fmt_u64(buf, v);
    *end++ = '\n';
    sbuf_add(out, buf, (size_t)(end - buf));
}

/* A label value with the format's three escapes. */
static void label_value(struct sbuf *out, const char *s) {
    if (!strpbrk(s, "\\\"\n")) {
        sbuf_adds(out, s);
        return;
    }
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sbuf_addf(out, "\\%c", *s);
        else if (*s == '\n')
            sbuf_adds(out, "\\n");
        else
            sbuf_add(out, s, 1);
    }
}

/* name{cluster="c"[,key="value"]} — the series' name and labels. */
static void series(struct sbuf *out, const char *name, const char *cluster, const char *key,
                   const char *value) {
    sbuf_adds(out, name);
    sbuf_adds(out, "{");
    if (cluster) {
        sbuf_adds(out, "cluster=\"");
        label_value(out, cluster);
        sbuf_adds(out, key ? "\"," : "\"");
    }
    if (key && value) {
        sbuf_adds(out, key);
        sbuf_adds(out, "=\"");
        label_value(out, value);
        sbuf_adds(out, "\"");
    }
    sbuf_adds(out, "} ");
}

/* The buckets' "le" labels, made once per scrape. */
struct le_labels {
    char le[LB_HIST_BOUNDS + 1][LB_HIST_LE_LEN];
};

static void hist_series(struct sbuf *out, const char *name, const char *cluster,
                        const struct le_labels *labels, const uint64_t *buckets, uint64_t sum_us) {
    char bucket[96], sum[96], count[96];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    snprintf(sum, sizeof(sum), "%s_sum", name);
    snprintf(count, sizeof(count), "%s_count", name);
    uint64_t cum = 0;
    for (int i = 0; i <= LB_HIST_BOUNDS; i++) {
        cum += buckets[i];
        series(out, bucket, cluster, "le", labels->le[i]);
        value_line(out, cum);
    }
    series(out, sum, cluster, NULL, NULL);
    sbuf_addf(out, "%llu.%06llu\n", (unsigned long long)(sum_us / 1000000),
              (unsigned long long)(sum_us % 1000000));
    series(out, count, cluster, NULL, NULL);
    value_line(out, cum);
}

static void cluster_families(const struct admin_view *v, struct sbuf *out) {
    struct cluster **lcs;
    size_t n = balancer_clusters(v->bal, &lcs);
    struct cluster_sums *sums = calloc(n ? n : 1, sizeof(*sums));
    if (!sums) n = 0;
    for (size_t i = 0; i < n; i++)
        cluster_counters_sum(lcs[i]->per_worker, v->nworkers, &sums[i]);
    struct le_labels labels;
    for (int i = 0; i <= LB_HIST_BOUNDS; i++)
        lb_hist_le(i, labels.le[i]);

    family(out, "lb_requests_total", "counter",
           "Requests received, by cluster (\"none\": no route matched or the head was refused).");
    for (size_t i = 0; i < n; i++) {
        series(out, "lb_requests_total", lcs[i]->name, NULL, NULL);
        value_line(out, sums[i].requests);
    }
    family(out, "lb_responses_total", "counter", "Responses sent to clients, by status class.");
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 5; k++) {
            series(out, "lb_responses_total", lcs[i]->name, "code", lb_status_classes[k]);
            value_line(out, sums[i].responses[k]);
        }
    family(out, "lb_request_duration_seconds", "histogram",
           "From a request's first byte to its response's last byte.");
    for (size_t i = 0; i < n; i++)
        hist_series(out, "lb_request_duration_seconds", lcs[i]->name, &labels, sums[i].duration,
                    sums[i].duration_sum_us);
    family(out, "lb_backend_response_seconds", "histogram",
           "From the request sent to a backend to its response head.");
    for (size_t i = 0; i < n; i++)
        hist_series(out, "lb_backend_response_seconds", lcs[i]->name, &labels, sums[i].backend,
                    sums[i].backend_sum_us);
    free(sums);
    free(lcs);
}

/* One family of backend gauges or counters, as backend_family() writes it. */
struct backend_series {
    struct sbuf *out;
    const char *name;
    int nworkers;
    double (*value)(const struct backend *, int nworkers);
};

static void cluster_backend_series(const struct table_cluster *c, void *arg) {
    const struct backend_series *bs = arg;
    for (size_t j = 0; j < c->n; j++) {
        series(bs->out, bs->name, c->id->name, "backend", c->backends[j]->name);
        sbuf_addf(bs->out, "%.9g\n", bs->value(c->backends[j], bs->nworkers));
    }
}

/* name{cluster="c",backend="b"} value, for every backend of the current table. */
static void backend_family(const struct admin_view *v, struct sbuf *out, const char *name,
                           const char *type, const char *help,
                           double (*value)(const struct backend *, int nworkers)) {
    family(out, name, type, help);
    struct backend_series bs = {out, name, v->nworkers, value};
    balancer_each_cluster(v->bal, cluster_backend_series, &bs);
}

static double be_healthy(const struct backend *be, int nworkers) {
    (void)nworkers;
    return atomic_load(&be->healthy);
}
static double be_ewma_s(const struct backend *be, int nworkers) {
    (void)nworkers;
    return backend_ewma_us(be) / 1e6;
}
static double be_probe_s(const struct backend *be, int nworkers) {
    (void)nworkers;
    return atomic_load(&be->probe_us) / 1e6;
}
static double be_inflight(const struct backend *be, int nworkers) {
    (void)nworkers;
    return atomic_load(&be->inflight);
}
static double be_requests(const struct backend *be, int nworkers) {
    return (double)backend_requests(be, nworkers);
}
static double be_failures(const struct backend *be, int nworkers) {
    return (double)backend_failures(be, nworkers);
}

static double be_ejected(const struct backend *be, int nworkers) {
    (void)nworkers;
    return backend_ejected(be, ev_clock_ms());
}
static double be_ejections(const struct backend *be, int nworkers) {
    (void)nworkers;
    return (double)atomic_load(&be->ejections);
}
static double be_error_share(const struct backend *be, int nworkers) {
    (void)nworkers;
    return backend_error_share(be, ev_clock_ms());
}

static void backend_families(const struct admin_view *v, struct sbuf *out) {
    backend_family(v, out, "lb_backend_healthy", "gauge", "1 when the backend is healthy.",
                   be_healthy);
    backend_family(v, out, "lb_backend_latency_seconds", "gauge",
                   "Peak-EWMA of the backend's latency (probes and live responses).", be_ewma_s);
    backend_family(v, out, "lb_backend_probe_latency_seconds", "gauge",
                   "Latency of the last successful health check (0: none yet).", be_probe_s);
    backend_family(v, out, "lb_backend_inflight", "gauge", "Requests in flight to the backend.",
                   be_inflight);
    backend_family(v, out, "lb_backend_requests_total", "counter",
                   "Requests sent to the backend (retries included).", be_requests);
    backend_family(v, out, "lb_backend_failures_total", "counter",
                   "Live requests the backend failed (refused, reset, timed out, garbage).",
                   be_failures);
    backend_family(v, out, "lb_backend_ejected", "gauge",
                   "1 while outlier detection keeps the backend out of rotation.", be_ejected);
    backend_family(v, out, "lb_backend_ejections_total", "counter",
                   "Times outlier detection ejected the backend.", be_ejections);
    backend_family(v, out, "lb_backend_error_share", "gauge",
                   "Share of its recent live answers that failed (5xx or gateway failure), "
                   "decaying over about 5 s: what the latency-aware strategies penalise.",
                   be_error_share);
}

static void process_families(const struct admin_view *v, struct sbuf *out) {
    struct worker_sums sum;
    workers_sum(v->workers, v->nworkers, &sum);
    family(out, "lb_errors_total", "counter", "Errors, by kind.");
    for (int k = 0; k < ERR_COUNT; k++) {
        series(out, "lb_errors_total", NULL, "kind", lb_error_names[k]);
        value_line(out, sum.errors[k]);
    }
    family(out, "lb_retries_total", "counter",
           "Requests sent again to another backend, by reason (connect, reset_before_response, "
           "stale_connection).");
    for (int k = 0; k < RETRY_COUNT; k++) {
        series(out, "lb_retries_total", NULL, "reason", lb_retry_names[k]);
        value_line(out, sum.retries[k]);
    }
    family(out, "lb_desync_requests_total", "counter",
           "Requests by desync mitigation class (compliant, acceptable, ambiguous, severe).");
    for (int k = 0; k < DESYNC_CLASSES; k++) {
        series(out, "lb_desync_requests_total", NULL, "class", desync_class_names[k]);
        value_line(out, sum.desync[k]);
    }
    family(out, "lb_connections_active", "gauge", "Client connections open now.");
    sbuf_addf(out, "lb_connections_active %ld\n", atomic_load(&g_connections));
    family(out, "lb_connections_total", "counter", "Client connections accepted.");
    sbuf_addf(out, "lb_connections_total %llu\n", (unsigned long long)sum.connections);
    family(out, "lb_bytes_total", "counter",
           "Bytes from clients (in) and to clients (out), heads and bodies.");
    series(out, "lb_bytes_total", NULL, "direction", "in");
    value_line(out, sum.bytes_in);
    series(out, "lb_bytes_total", NULL, "direction", "out");
    value_line(out, sum.bytes_out);
    family(out, "lb_access_log_dropped_total", "counter",
           "Access log lines dropped because the writer fell behind.");
    sbuf_addf(out, "lb_access_log_dropped_total %llu\n",
              (unsigned long long)(v->alog ? alog_dropped(v->alog) : 0));

    pthread_mutex_lock(&v->st->lock);
    unsigned ok = v->st->reloads - v->st->reloads_failed, failed = v->st->reloads_failed;
    pthread_mutex_unlock(&v->st->lock);
    family(out, "lb_config_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.");
    series(out, "lb_config_reloads_total", NULL, "result", "ok");
    sbuf_addf(out, "%u\n", ok);
    series(out, "lb_config_reloads_total", NULL, "result", "failed");
    sbuf_addf(out, "%u\n", failed);
    family(out, "lb_draining", "gauge", "1 while the proxy drains before exiting.");
    sbuf_addf(out, "lb_draining %d\n", atomic_load(&g_draining) ? 1 : 0);
    family(out, "lb_start_time_seconds", "gauge", "When the process started (Unix time).");
    sbuf_addf(out, "lb_start_time_seconds %.3f\n", v->st->started_ms / 1e3);
    family(out, "lb_build_info", "gauge", "The proxy's version.");
    series(out, "lb_build_info", NULL, "version", LB_VERSION);
    sbuf_adds(out, "1\n");
}

void metrics_render(const struct admin_view *v, struct sbuf *out) {
    cluster_families(v, out);
    backend_families(v, out);
    process_families(v, out);
}
