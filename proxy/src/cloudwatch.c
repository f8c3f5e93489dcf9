/* CloudWatch: every interval_s, the counters' change over the interval sent
 * with PutMetricData under the ALB's metric names and dimension layout, from
 * a thread of its own: per cluster LoadBalancer + TargetGroup
 * (targetgroup/<cluster>), for the whole proxy LoadBalancer alone, so that
 * the proxies sharing one load_balancer name add up as one load balancer.
 * TargetResponseTime is the latency histogram as a distribution.
 *
 * Each call's datums are accounted for on their own: a refused or failed
 * call is sent again as it was (same datums, same timestamp) at the next
 * intervals, MAX_RETRIES times at most, then dropped; a delivered one is
 * never sent again. At a stop, a last publication, within a deadline. */
#define _GNU_SOURCE
#include "cloudwatch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws.h"
#include "ev.h"
#include "log.h"
#include "periodic.h"

#define DATUMS_PER_CALL 20                   /* PutMetricData's long-standing limit */
#define MAX_RETRIES     3                    /* calls after the first, then dropped */
#define MAX_VALUES      (LB_HIST_BOUNDS + 1) /* one per bucket: under CloudWatch's 150 */

struct datum {
    const char *name, *unit;
    char group[80]; /* the TargetGroup value; "": the load balancer alone */
    double value;
    int nvalues; /* > 0: a distribution (values, counts and statistics), not a value */
    double values[MAX_VALUES], counts[MAX_VALUES];
    double samples, sum, min, max;
};

/* One call's datums, kept until delivered or given up. */
struct batch {
    struct batch *next;
    char stamp[32]; /* the end of the interval they measure (ISO 8601, UTC) */
    int failed;     /* calls that failed */
    int n;
    struct datum d[DATUMS_PER_CALL];
};

/* The counters of one cluster, summed over the workers, and its backends'
 * health (when it is in the table: a reload may have removed it). */
struct cluster_totals {
    const struct cluster *lc;
    struct cluster_sums s;
    int in_table, healthy, unhealthy;
};

struct snapshot {
    struct cluster_totals *c;
    size_t n;
    struct worker_sums p;
};

struct cloudwatch {
    struct cloudwatch_config cfg;
    struct balancer *bal;
    int reader_id;
    struct worker *workers;
    int nworkers;
    struct snapshot last; /* the counters at the end of the last interval */
    struct batch *queue;  /* undelivered, oldest first */
    struct periodic thread;
    atomic_int stopping;       /* the thread starts no further call */
    _Atomic uint64_t abort_ms; /* monotonic; 0: none. A call past it is abandoned */
    struct outage outage;
    unsigned long dropped; /* datums given up since the last line about it */
};

/* ---- the datums of one interval ---- */

struct builder {
    struct cloudwatch *cw;
    struct batch *b, **tail;
    char stamp[32];
    int oom;
};

static void iso_now(char *out, size_t len) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

/* The next datum of the interval, in a new batch when the last is full;
 * NULL when out of memory. */
static struct datum *new_datum(struct builder *bl, const char *name, const char *unit,
                               const char *group) {
    if (!bl->b || bl->b->n == DATUMS_PER_CALL) {
        struct batch *b = calloc(1, sizeof(*b));
        if (!b) {
            bl->oom = 1;
            return NULL;
        }
        memcpy(b->stamp, bl->stamp, sizeof(b->stamp));
        *bl->tail = b;
        bl->tail = &b->next;
        bl->b = b;
    }
    struct datum *d = &bl->b->d[bl->b->n++];
    d->name = name;
    d->unit = unit;
    snprintf(d->group, sizeof(d->group), "%s", group);
    return d;
}

static void add(struct builder *bl, const char *name, const char *unit, const char *group,
                double value) {
    struct datum *d = new_datum(bl, name, unit, group);
    if (d) d->value = value;
}

/* A bucket's value: its upper bound; the open last one's, its lower bound. */
static double bucket_s(int i) {
    return lb_hist_bounds_us[i < LB_HIST_BOUNDS ? i : LB_HIST_BOUNDS - 1] / 1e6;
}

/* TargetResponseTime from the backend-latency histogram's change: the
 * buckets as values and counts, the exact sum; minimum and maximum are the
 * bounds of the lowest and highest buckets used, so that they bracket every
 * sample (and the mean). None in an interval without backend responses: a
 * zero would be a sample. */
static void add_latency(struct builder *bl, const char *group, const struct cluster_sums *is,
                        const struct cluster_sums *was) {
    uint64_t n = is->backend_count - was->backend_count;
    if (!n) return;
    struct datum *d = new_datum(bl, "TargetResponseTime", "Seconds", group);
    if (!d) return;
    int lo = -1, hi = -1;
    for (int i = 0; i < MAX_VALUES; i++) {
        uint64_t k = is->backend[i] - was->backend[i];
        if (!k) continue;
        d->values[d->nvalues] = bucket_s(i);
        d->counts[d->nvalues++] = (double)k;
        if (lo < 0) lo = i;
        hi = i;
    }
    d->samples = (double)n;
    d->sum = (double)(is->backend_sum_us - was->backend_sum_us) / 1e6;
    d->min = lo ? lb_hist_bounds_us[lo - 1] / 1e6 : 0; /* the lowest bucket's lower bound */
    d->max = bucket_s(hi);
}

static const struct cluster_sums *sums_in(const struct snapshot *s, const struct cluster *lc) {
    static const struct cluster_sums zero;
    for (size_t i = 0; i < s->n; i++)
        if (s->c[i].lc == lc) return &s->c[i].s;
    return &zero;
}

/* A target group's datums: a cluster in the table, or one a reload removed
 * whose last requests ended in this interval. */
static void add_cluster(struct builder *bl, const struct cluster_totals *now,
                        const struct cluster_sums *was) {
    static const char *const target[5] = {NULL, "HTTPCode_Target_2XX_Count",
                                          "HTTPCode_Target_3XX_Count", "HTTPCode_Target_4XX_Count",
                                          "HTTPCode_Target_5XX_Count"};
    const struct cluster_sums *is = &now->s;
    if (!now->in_table && is->requests == was->requests) return;
    char g[80];
    snprintf(g, sizeof(g), "targetgroup/%s", now->lc->name);
    add(bl, "RequestCount", "Count", g, (double)(is->requests - was->requests));
    for (int k = 1; k < 5; k++)
        add(bl, target[k], "Count", g,
            (double)((is->responses[k] - is->own_responses[k]) -
                     (was->responses[k] - was->own_responses[k])));
    add_latency(bl, g, is, was);
    add(bl, "HealthyHostCount", "Count", g, now->healthy);
    add(bl, "UnHealthyHostCount", "Count", g, now->unhealthy);
}

/* The load balancer's datums: every request, routed or not. */
static void add_load_balancer(struct builder *bl, const struct snapshot *now) {
    const struct snapshot *last = &bl->cw->last;
    uint64_t requests = 0, elb4 = 0, elb5 = 0;
    for (size_t i = 0; i < now->n; i++) {
        const struct cluster_sums *is = &now->c[i].s, *was = sums_in(last, now->c[i].lc);
        requests += is->requests - was->requests;
        elb4 += is->own_responses[3] - was->own_responses[3];
        elb5 += is->own_responses[4] - was->own_responses[4];
    }
    const struct worker_sums *p = &now->p, *q = &last->p;
    add(bl, "RequestCount", "Count", "", (double)requests);
    add(bl, "HTTPCode_ELB_4XX_Count", "Count", "", (double)elb4);
    add(bl, "HTTPCode_ELB_5XX_Count", "Count", "", (double)elb5);
    add(bl, "ActiveConnectionCount", "Count", "", (double)atomic_load(&g_connections));
    add(bl, "NewConnectionCount", "Count", "", (double)(p->connections - q->connections));
    add(bl, "ProcessedBytes", "Bytes", "",
        (double)((p->bytes_in + p->bytes_out) - (q->bytes_in + q->bytes_out)));
}

static void count_hosts(const struct table_cluster *c, void *arg) {
    struct snapshot *s = arg;
    for (size_t i = 0; i < s->n; i++) {
        struct cluster_totals *ct = &s->c[i];
        if (ct->lc != c->id) continue;
        ct->in_table = 1;
        for (size_t j = 0; j < c->n; j++) {
            int healthy = atomic_load(&c->backends[j]->healthy);
            ct->healthy += healthy;
            ct->unhealthy += !healthy;
        }
    }
}

static int take_snapshot(struct cloudwatch *cw, struct snapshot *s) {
    struct cluster **lcs;
    s->n = balancer_clusters(cw->bal, &lcs);
    s->c = lcs ? calloc(s->n ? s->n : 1, sizeof(*s->c)) : NULL;
    for (size_t i = 0; s->c && i < s->n; i++) {
        s->c[i].lc = lcs[i];
        cluster_counters_sum(lcs[i]->per_worker, cw->nworkers, &s->c[i].s);
    }
    free(lcs);
    if (s->c) {
        balancer_reader_online(cw->bal, cw->reader_id);
        balancer_each_cluster(cw->bal, count_hosts, s);
        balancer_reader_offline(cw->bal, cw->reader_id);
    }
    workers_sum(cw->workers, cw->nworkers, &s->p);
    return s->c ? 0 : -1;
}

/* Queues the interval that ends now: its datums join the undelivered ones. */
static void measure(struct cloudwatch *cw) {
    struct snapshot now;
    if (take_snapshot(cw, &now) < 0) {
        log_error("cloudwatch: out of memory: this interval is counted in the next one");
        return;
    }
    struct builder bl = {.cw = cw, .tail = &cw->queue};
    while (*bl.tail)
        bl.tail = &(*bl.tail)->next;
    iso_now(bl.stamp, sizeof(bl.stamp));
    for (size_t i = 0; i < now.n; i++)
        if (now.c[i].lc != balancer_unrouted(cw->bal))
            add_cluster(&bl, &now.c[i], sums_in(&cw->last, now.c[i].lc));
    add_load_balancer(&bl, &now);
    if (bl.oom) log_error("cloudwatch: out of memory: some datums of %s are not sent", bl.stamp);
    free(cw->last.c);
    cw->last = now;
}

/* ---- sending ---- */

/* MetricData.member.m.FIELD=value */
static void member(struct aws_form *f, int m, const char *field, const char *value) {
    char key[96];
    snprintf(key, sizeof(key), "MetricData.member.%d.%s", m, field);
    aws_form_add(f, key, value);
}

static void member_num(struct aws_form *f, int m, const char *field, double v) {
    char num[40];
    snprintf(num, sizeof(num), "%.15g", v);
    member(f, m, field, num);
}

static void form_datum(struct aws_form *f, int m, const struct datum *d, const char *lb,
                       const char *stamp) {
    member(f, m, "MetricName", d->name);
    member(f, m, "Unit", d->unit);
    member(f, m, "Timestamp", stamp);
    member(f, m, "Dimensions.member.1.Name", "LoadBalancer");
    member(f, m, "Dimensions.member.1.Value", lb);
    if (d->group[0]) {
        member(f, m, "Dimensions.member.2.Name", "TargetGroup");
        member(f, m, "Dimensions.member.2.Value", d->group);
    }
    if (!d->nvalues) {
        member_num(f, m, "Value", d->value);
        return;
    }
    member_num(f, m, "StatisticValues.SampleCount", d->samples);
    member_num(f, m, "StatisticValues.Sum", d->sum);
    member_num(f, m, "StatisticValues.Minimum", d->min);
    member_num(f, m, "StatisticValues.Maximum", d->max);
    for (int i = 0; i < d->nvalues; i++) {
        char field[32];
        snprintf(field, sizeof(field), "Values.member.%d", i + 1);
        member_num(f, m, field, d->values[i]);
        snprintf(field, sizeof(field), "Counts.member.%d", i + 1);
        member_num(f, m, field, d->counts[i]);
    }
}

static int put(struct aws_client *c, const struct cloudwatch *cw, const struct batch *b, char *err,
               size_t errlen) {
    struct aws_form *f = aws_form_new();
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    aws_form_add(f, "Namespace", cw->cfg.namespace_);
    for (int i = 0; i < b->n; i++)
        form_datum(f, i + 1, &b->d[i], cw->cfg.load_balancer, b->stamp);
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

static bool past_abort(void *arg) {
    struct cloudwatch *cw = arg;
    uint64_t at = atomic_load(&cw->abort_ms);
    return at && ev_clock_ms() >= at;
}

/* Whether another call may start: on the thread, not once a stop is asked;
 * at the last publication (final), not past the deadline. */
static int may_call(struct cloudwatch *cw, int final) {
    return final ? !past_abort(cw) : !atomic_load(&cw->stopping);
}

/* Caps a call's timeouts to what is left before the deadline, if any. */
static void fit_timeouts(struct aws_client *c, struct cloudwatch *cw) {
    long connect = 2000, total = 5000;
    uint64_t at = atomic_load(&cw->abort_ms), now = ev_clock_ms();
    if (at) {
        long left = at > now ? (long)(at - now) : 1;
        if (connect > left) connect = left;
        if (total > left) total = left;
    }
    aws_client_set_timeouts(c, connect, total);
}

/* One call per queued batch, oldest first: delivered ones are freed, failed
 * ones kept for the next interval unless they have had their retries.
 * 0 when every call made was delivered (err: the first failure's reason). */
static int send_queue(struct cloudwatch *cw, int final, char *err, size_t errlen) {
    struct aws_client *c = aws_client_new(cw->cfg.region, err, errlen);
    if (c) {
        aws_client_set_retry(c, 2, 200, 1000);
        aws_client_set_quiet_retries(c, true); /* publish() logs, rate-limited */
        aws_client_set_abort(c, past_abort, cw);
    }
    int rc = 0;
    char why[1200];
    for (struct batch **bp = &cw->queue, *b; (b = *bp) && may_call(cw, final);) {
        if (c) fit_timeouts(c, cw);
        if (c && put(c, cw, b, why, sizeof(why)) == 0) {
            *bp = b->next;
            free(b);
            continue;
        }
        if (!rc && c) snprintf(err, errlen, "%s", why);
        rc = -1;
        if (++b->failed <= MAX_RETRIES) {
            bp = &b->next;
            continue;
        }
        cw->dropped += (unsigned long)b->n;
        *bp = b->next;
        free(b);
    }
    aws_client_free(c);
    return rc;
}

static void drop_note(struct cloudwatch *cw, char *out, size_t len) {
    if (cw->dropped)
        snprintf(out, len, "; %lu datums dropped after %d retries", cw->dropped, MAX_RETRIES);
    else
        out[0] = '\0';
    cw->dropped = 0;
}

static void log_outcome(struct cloudwatch *cw, int rc, const char *err) {
    char note[96];
    unsigned calls;
    if (!rc) {
        if (!outage_over(&cw->outage)) return;
        drop_note(cw, note, sizeof(note));
        log_info("cloudwatch: PutMetricData works again (%u publications failed)%s",
                 cw->outage.total, note);
        return;
    }
    switch (outage_failed(&cw->outage, ev_clock_ms(), &calls)) {
    case OUTAGE_STARTS:
        drop_note(cw, note, sizeof(note));
        log_warn("cloudwatch: PutMetricData failed (what was not delivered is sent again at the "
                 "next intervals, %d times at most)%s: %s",
                 MAX_RETRIES, note, err);
        break;
    case OUTAGE_GOES_ON:
        drop_note(cw, note, sizeof(note));
        log_warn("cloudwatch: PutMetricData still failing (%u publications since the last "
                 "line)%s: %s",
                 calls, note, err);
        break;
    case OUTAGE_QUIET: break;
    }
}

static int publish(void *arg) {
    struct cloudwatch *cw = arg;
    char err[1200] = "";
    measure(cw);
    int rc = send_queue(cw, 0, err, sizeof(err));
    /* a call a stop cut short is not an outage: the last publication says
     * what became of its datums */
    if (!atomic_load(&cw->stopping) || !rc) log_outcome(cw, rc, err);
    return cw->cfg.interval_s;
}

int cloudwatch_start(const struct cloudwatch_config *cfg, struct balancer *b,
                     struct worker *workers, int nworkers, struct cloudwatch **out, char *err,
                     size_t errlen) {
    struct cloudwatch *cw = calloc(1, sizeof(*cw));
    *out = NULL;
    if (!cw) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    cw->cfg = *cfg;
    cw->bal = b;
    cw->reader_id = balancer_reader_id(b, READER_CLOUDWATCH);
    cw->workers = workers;
    cw->nworkers = nworkers;
    int rc = periodic_start(&cw->thread, cfg->interval_s, publish, cw);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start its thread: %s", strerror(-rc));
        free(cw);
        return rc;
    }
    *out = cw;
    return 0;
}

static unsigned long queued(const struct cloudwatch *cw) {
    unsigned long n = 0;
    for (const struct batch *b = cw->queue; b; b = b->next)
        n += (unsigned long)b->n;
    return n;
}

/* The last publication: what the interval counted so far, and what is still
 * undelivered, in the time left. */
static void last_publication(struct cloudwatch *cw, uint64_t deadline_ms) {
    char err[1200] = "", note[96];
    measure(cw);
    if (ev_clock_ms() >= deadline_ms) {
        drop_note(cw, note, sizeof(note));
        log_warn("cloudwatch: no time left in the drain for a last publication: %lu datums not "
                 "sent%s",
                 queued(cw), note);
        return;
    }
    int rc = send_queue(cw, 1, err, sizeof(err));
    drop_note(cw, note, sizeof(note));
    if (!rc && !cw->queue && !note[0]) {
        log_info("cloudwatch: last publication delivered");
        return;
    }
    log_warn("cloudwatch: last publication: %lu datums not delivered%s%s%s", queued(cw), note,
             err[0] ? ": " : "", err);
}

static void stop(struct cloudwatch *cw, uint64_t deadline_ms) {
    atomic_store(&cw->stopping, 1);
    atomic_store(&cw->abort_ms, deadline_ms ? deadline_ms : 1);
    periodic_stop(&cw->thread);
    if (deadline_ms) last_publication(cw, deadline_ms);
    while (cw->queue) {
        struct batch *b = cw->queue;
        cw->queue = b->next;
        free(b);
    }
    free(cw->last.c);
    free(cw);
}

void cloudwatch_stop_flush(struct cloudwatch *cw, uint64_t deadline_ms) {
    if (cw) stop(cw, deadline_ms ? deadline_ms : 1);
}

void cloudwatch_stop(struct cloudwatch *cw) {
    if (cw) stop(cw, 0);
}
