/* CloudWatch: every interval_s, the counters' change since the last
 * successful publication sent with PutMetricData under the ALB metric names,
 * dimension TargetGroup (the cluster; "all" for the process-wide ones), from
 * a thread of its own. A failure is logged and the next interval sends the
 * change since the last success: nothing is lost, nothing waits on it. */
#define _GNU_SOURCE
#include "cloudwatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "aws.h"
#include "log.h"
#include "periodic.h"

#define DATUMS_PER_CALL 20 /* PutMetricData's long-standing limit */

/* The counters of one cluster, summed over the workers. */
struct cluster_totals {
    const struct lb_cluster *lc;
    struct cluster_sums s;
};

struct cloudwatch {
    struct cloudwatch_config cfg;
    struct balancer *bal;
    struct worker *workers;
    int nworkers;
    struct cluster_totals *last; /* as of the last successful publication */
    size_t nlast;
    struct worker_sums last_process;
    struct periodic thread;
    int failing;
};

struct datum {
    const char *name, *unit, *group;
    double value;
};

struct batch {
    struct datum d[DATUMS_PER_CALL];
    int n;
};

static const struct cluster_totals *last_of(const struct cloudwatch *cw,
                                            const struct lb_cluster *lc) {
    static const struct cluster_totals zero;
    for (size_t i = 0; i < cw->nlast; i++)
        if (cw->last[i].lc == lc) return &cw->last[i];
    return &zero;
}

static struct aws_form *form_new(const struct cloudwatch *cw) {
    struct aws_form *f = aws_form_new();
    if (f) aws_form_add(f, "Namespace", cw->cfg.namespace_);
    return f;
}

static int put(struct aws_client *c, const struct cloudwatch *cw, const struct batch *b, char *err,
               size_t errlen) {
    struct aws_form *f = form_new(cw);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < b->n; i++) {
        char key[64];
        int m = i + 1;
        snprintf(key, sizeof(key), "MetricData.member.%d.MetricName", m);
        aws_form_add(f, key, b->d[i].name);
        snprintf(key, sizeof(key), "MetricData.member.%d.Value", m);
        aws_form_addf(f, key, "%.6g", b->d[i].value);
        snprintf(key, sizeof(key), "MetricData.member.%d.Unit", m);
        aws_form_add(f, key, b->d[i].unit);
        snprintf(key, sizeof(key), "MetricData.member.%d.Dimensions.member.1.Name", m);
        aws_form_add(f, key, "TargetGroup");
        snprintf(key, sizeof(key), "MetricData.member.%d.Dimensions.member.1.Value", m);
        aws_form_add(f, key, b->d[i].group);
    }
    struct aws_error ae = {0};
    xmlDocPtr doc = aws_query(c, AWS_CLOUDWATCH, "PutMetricData", f, &ae);
    aws_form_free(f);
    if (!doc) {
        snprintf(err, errlen, "%s", ae.message);
        return -1;
    }
    xmlFreeDoc(doc);
    return 0;
}

/* Queues a datum, sending the batch when it is full; -1 once a send failed. */
static int add(struct aws_client *c, const struct cloudwatch *cw, struct batch *b, const char *name,
               const char *unit, const char *group, double value, char *err, size_t errlen) {
    b->d[b->n++] = (struct datum){name, unit, group, value};
    if (b->n < DATUMS_PER_CALL) return 0;
    int rc = put(c, cw, b, err, errlen);
    b->n = 0;
    return rc;
}

static void healthy_counts(struct balancer *bal, const struct lb_cluster *lc, int *up, int *down) {
    *up = *down = 0;
    /* a table cannot be swapped, so not freed, while the write lock is held */
    pthread_mutex_lock(&bal->write_lock);
    const struct lb_table *t = balancer_table(bal);
    for (size_t i = 0; i < t->nclusters; i++)
        if (t->clusters[i].id == lc)
            for (size_t j = 0; j < t->clusters[i].n; j++) {
                if (atomic_load(&t->clusters[i].rows[j]->healthy))
                    ++*up;
                else
                    ++*down;
            }
    pthread_mutex_unlock(&bal->write_lock);
}

#define ADD(name, unit, group, value)                                                              \
    do {                                                                                           \
        if (add(c, cw, b, name, unit, group, value, err, errlen) < 0) return -1;                   \
    } while (0)

static int cluster_datums(struct aws_client *c, const struct cloudwatch *cw, struct batch *b,
                          const struct cluster_totals *now, char *err, size_t errlen) {
    static const char *const target[5] = {NULL, "HTTPCode_Target_2XX_Count",
                                          "HTTPCode_Target_3XX_Count", "HTTPCode_Target_4XX_Count",
                                          "HTTPCode_Target_5XX_Count"};
    const struct cluster_sums *is = &now->s, *was = &last_of(cw, now->lc)->s;
    const char *g = now->lc->name;
    ADD("RequestCount", "Count", g, (double)(is->requests - was->requests));
    for (int k = 1; k < 5; k++)
        ADD(target[k], "Count", g,
            (double)((is->responses[k] - is->own_responses[k]) -
                     (was->responses[k] - was->own_responses[k])));
    ADD("HTTPCode_ELB_4XX_Count", "Count", g,
        (double)(is->own_responses[3] - was->own_responses[3]));
    ADD("HTTPCode_ELB_5XX_Count", "Count", g,
        (double)(is->own_responses[4] - was->own_responses[4]));
    uint64_t n = is->backend_count - was->backend_count;
    if (n)
        ADD("TargetResponseTime", "Seconds", g,
            (is->backend_sum_us - was->backend_sum_us) / 1e6 / n);
    if (now->lc != cw->bal->unrouted) {
        int up, down;
        healthy_counts(cw->bal, now->lc, &up, &down);
        ADD("HealthyHostCount", "Count", g, up);
        ADD("UnHealthyHostCount", "Count", g, down);
    }
    return 0;
}

static int process_datums(struct aws_client *c, const struct cloudwatch *cw, struct batch *b,
                          const struct worker_sums *now, char *err, size_t errlen) {
    const struct worker_sums *was = &cw->last_process;
    ADD("ActiveConnectionCount", "Count", "all", (double)atomic_load(&g_connections));
    ADD("NewConnectionCount", "Count", "all", (double)(now->connections - was->connections));
    ADD("ProcessedBytes", "Bytes", "all",
        (double)((now->bytes_in + now->bytes_out) - (was->bytes_in + was->bytes_out)));
    return 0;
}

static size_t snapshot(const struct cloudwatch *cw, struct cluster_totals **out,
                       struct worker_sums *p) {
    struct lb_cluster **lcs;
    size_t n = balancer_clusters(cw->bal, &lcs);
    *out = lcs ? calloc(n ? n : 1, sizeof(**out)) : NULL;
    for (size_t i = 0; *out && i < n; i++) {
        (*out)[i].lc = lcs[i];
        cluster_counters_sum(lcs[i]->per_worker, cw->nworkers, &(*out)[i].s);
    }
    free(lcs);
    workers_sum(cw->workers, cw->nworkers, p);
    return *out ? n : 0;
}

static int publish_all(struct cloudwatch *cw, const struct cluster_totals *now, size_t n,
                       const struct worker_sums *p, char *err, size_t errlen) {
    struct aws_client *c = aws_client_new(cw->cfg.region, err, errlen);
    if (!c) return -1;
    aws_client_set_timeouts(c, 2000, 5000);
    aws_client_set_retry(c, 2, 200, 1000);
    struct batch *b = calloc(1, sizeof(*b));
    int rc = b ? 0 : -1;
    for (size_t i = 0; !rc && i < n; i++)
        rc = cluster_datums(c, cw, b, &now[i], err, errlen);
    if (!rc) rc = process_datums(c, cw, b, p, err, errlen);
    if (!rc && b->n) rc = put(c, cw, b, err, errlen);
    free(b);
    aws_client_free(c);
    return rc;
}

static void publish(void *arg) {
    struct cloudwatch *cw = arg;
    struct cluster_totals *now;
    struct worker_sums p;
    char err[1200] = "out of memory";
    size_t n = snapshot(cw, &now, &p);
    if (!now || publish_all(cw, now, n, &p, err, sizeof(err)) < 0) {
        log_warn("cloudwatch: PutMetricData failed (the next interval sends this one's data "
                 "too): %s",
                 err);
        cw->failing = 1;
        free(now);
        return;
    }
    if (cw->failing) log_info("cloudwatch: PutMetricData works again");
    cw->failing = 0;
    free(cw->last);
    cw->last = now;
    cw->nlast = n;
    cw->last_process = p;
}

struct cloudwatch *cloudwatch_start(const struct cloudwatch_config *cfg, struct balancer *b,
                                    struct worker *workers, int nworkers) {
    struct cloudwatch *cw = calloc(1, sizeof(*cw));
    if (!cw) return NULL;
    cw->cfg = *cfg;
    cw->bal = b;
    cw->workers = workers;
    cw->nworkers = nworkers;
    if (periodic_start(&cw->thread, cfg->interval_s, 0, publish, cw) < 0) {
        free(cw);
        return NULL;
    }
    return cw;
}

void cloudwatch_stop(struct cloudwatch *cw) {
    if (!cw) return;
    periodic_stop(&cw->thread);
    free(cw->last);
    free(cw);
}
