/* EC2 discovery: for every cluster with discovery.ec2, DescribeInstances
 * filtered by its tags and instance-state-name=running every interval_s, on
 * a thread of its own. What it finds joins the latency table (unhealthy
 * until its first successful checks); what is gone is drained. A failed call
 * (an error, a timeout, a body that is not XML or not a
 * DescribeInstancesResponse) keeps the last known set: a captive portal's
 * page must not read as "no instances". */
#define _GNU_SOURCE
#include "discovery.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "aws.h"
#include "ev.h"
#include "log.h"
#include "periodic.h"

#define MAX_FOUND 1024

/* What the thread knows of one cluster between two reloads. */
struct job {
    char cluster[64];
    struct ec2_discovery ec2;
    uint64_t due_ms;
    struct outage outage;
};

struct discovery {
    struct balancer *bal;
    int reader_id;
    struct job *jobs;
    size_t njobs;
    struct backend_addr *buf; /* MAX_FOUND addresses, for each call's answer */
    struct periodic thread;
    atomic_int stopping; /* a call in flight is abandoned: a stop waits for none */
};

static struct job *job_for(struct discovery *d, const char *cluster) {
    for (size_t i = 0; i < d->njobs; i++)
        if (!strcmp(d->jobs[i].cluster, cluster)) return &d->jobs[i];
    return NULL;
}

/* The clusters with discovery in the configuration in force now (a reload
 * may have changed them); keeps the schedule of those still there. */
static void refresh_jobs(struct discovery *d) {
    balancer_reader_online(d->bal, d->reader_id);
    const struct proxy_config *cfg = balancer_config(d->bal);
    struct job *jobs = calloc(cfg->nclusters + 1, sizeof(*jobs));
    size_t n = 0;
    for (size_t i = 0; jobs && i < cfg->nclusters; i++) {
        const struct cluster_config *cc = &cfg->clusters[i];
        if (!cc->discovery.enabled) continue;
        struct job *was = job_for(d, cc->name), *j = &jobs[n++];
        if (was) *j = *was;
        snprintf(j->cluster, sizeof(j->cluster), "%s", cc->name);
        j->ec2 = cc->discovery;
    }
    balancer_reader_offline(d->bal, d->reader_id);
    if (!jobs) return;
    free(d->jobs);
    d->jobs = jobs;
    d->njobs = n;
}

static struct aws_form *describe_form(const struct ec2_discovery *e, const char *next_token) {
    struct aws_form *f = aws_form_new();
    if (!f) return NULL;
    int k = 1;
    for (int t = 0; t < e->ntags; t++) {
        char name[160];
        snprintf(name, sizeof(name), "tag:%s", e->tag_keys[t]);
        aws_form_filter(f, k++, name, e->tag_values[t]);
    }
    aws_form_filter(f, k, "instance-state-name", "running");
    if (next_token) aws_form_add(f, "NextToken", next_token);
    return f;
}

/* Whether doc is EC2's answer: the root element, a request id and the
 * reservation set (empty when nothing matches, but there); else why not. */
static int is_describe_reply(xmlDocPtr doc, char *why, size_t whylen) {
    xmlNodePtr root = xmlDocGetRootElement(doc);
    const char *id = aws_xml_text(root, "requestId");
    if (!root || strcmp((const char *)root->name, "DescribeInstancesResponse"))
        snprintf(why, whylen, "the reply is not a DescribeInstancesResponse but a <%.64s> document",
                 root ? (const char *)root->name : "");
    else if (!id || !id[0])
        snprintf(why, whylen, "the DescribeInstancesResponse has no requestId");
    else if (!aws_xml_find(root, "reservationSet"))
        snprintf(why, whylen, "the DescribeInstancesResponse has no reservationSet");
    else
        return 1;
    return 0;
}

/* Appends the running instances of one reply page; the page's NextToken
 * (copied into next, "" when none). */
static void collect(xmlDocPtr doc, int port, struct backend_addr *out, size_t *n, char *next,
                    size_t next_len) {
    xmlNodePtr root = xmlDocGetRootElement(doc);
    AWS_XML_FOREACH(res, aws_xml_find(root, "reservationSet"), "item") {
        AWS_XML_FOREACH(inst, aws_xml_find(res, "instancesSet"), "item") {
            const char *ip = aws_xml_text(inst, "privateIpAddress");
            const char *state = aws_xml_text(inst, "instanceState/name");
            if (!ip || !ip[0] || (state && strcmp(state, "running")) || *n >= MAX_FOUND) continue;
            struct backend_addr *ba = &out[*n];
            const char *why;
            snprintf(ba->text, sizeof(ba->text), "%s:%d", ip, port);
            if (net_parse_addr(ba->text, NULL, &ba->addr, &why) == 0) ++*n;
        }
    }
    const char *token = aws_xml_text(root, "nextToken");
    snprintf(next, next_len, "%s", token ? token : "");
}

static int cmp_addr(const void *a, const void *b) {
    return strcmp(((const struct backend_addr *)a)->text, ((const struct backend_addr *)b)->text);
}

static bool stopping(void *arg) {
    struct discovery *d = arg;
    return atomic_load(&d->stopping);
}

/* DescribeInstances, every page: 0 with the addresses sorted, or -1 with
 * err filled. */
static int describe(struct discovery *d, const struct ec2_discovery *e, struct backend_addr *out,
                    size_t *n, char *err, size_t errlen) {
    struct aws_client *c = aws_client_new(e->region, err, errlen);
    if (!c) return -1;
    aws_client_set_timeouts(c, 2000, 5000);
    aws_client_set_retry(c, 2, 200, 1000);
    aws_client_set_quiet_retries(c, true); /* run_job logs, rate-limited */
    aws_client_set_abort(c, stopping, d);
    char token[1024] = "";
    int rc = 0;
    *n = 0;
    do {
        struct aws_form *f = describe_form(e, token[0] ? token : NULL);
        struct aws_error ae = {0};
        xmlDocPtr doc = f ? aws_query(c, AWS_EC2, "DescribeInstances", f, &ae) : NULL;
        aws_form_free(f);
        if (!doc) {
            snprintf(err, errlen, "%s", f ? ae.message : "out of memory");
            rc = -1;
            break;
        }
        if (!is_describe_reply(doc, err, errlen)) {
            xmlFreeDoc(doc);
            rc = -1;
            break;
        }
        collect(doc, e->port, out, n, token, sizeof(token));
        xmlFreeDoc(doc);
    } while (token[0]);
    aws_client_free(c);
    qsort(out, *n, sizeof(*out), cmp_addr);
    return rc;
}

static void log_failure(struct job *j, const char *err) {
    unsigned calls;
    switch (outage_failed(&j->outage, ev_clock_ms(), &calls)) {
    case OUTAGE_STARTS:
        log_warn("discovery %s: DescribeInstances failed, keeping the last known backends: %s",
                 j->cluster, err);
        break;
    case OUTAGE_GOES_ON:
        log_warn("discovery %s: DescribeInstances still failing (%u failed calls since the last "
                 "line), keeping the last known backends: %s",
                 j->cluster, calls, err);
        break;
    case OUTAGE_QUIET: break;
    }
}

static void run_job(struct discovery *d, struct job *j, struct backend_addr *buf) {
    char err[1200], why[96];
    size_t n;
    if (describe(d, &j->ec2, buf, &n, err, sizeof(err)) < 0) {
        if (!atomic_load(&d->stopping)) log_failure(j, err);
        return;
    }
    if (outage_over(&j->outage))
        log_info("discovery %s: DescribeInstances works again (%u failed calls)", j->cluster,
                 j->outage.total);
    snprintf(why, sizeof(why), "discovery %s", j->cluster);
    if (balancer_set_found(d->bal, j->cluster, FOUND_BY_DISCOVERY, buf, n, why) < 0)
        log_error("discovery %s: out of memory", j->cluster);
}

/* One pass: the jobs due now; the seconds until the next is due, or 0
 * when there is none (a reload that adds one kicks the thread). */
static int discover(void *arg) {
    struct discovery *d = arg;
    refresh_jobs(d);
    uint64_t now = ev_clock_ms(), next = 0;
    for (size_t i = 0; i < d->njobs; i++) {
        struct job *j = &d->jobs[i];
        if (now >= j->due_ms) {
            run_job(d, j, d->buf);
            j->due_ms = ev_clock_ms() + (uint64_t)j->ec2.interval_s * 1000;
        }
        if (!next || j->due_ms < next) next = j->due_ms;
    }
    return next ? periodic_seconds_until(next, ev_clock_ms()) : 0;
}

int discovery_start(struct balancer *b, struct discovery **out, char *err, size_t errlen) {
    struct discovery *d = calloc(1, sizeof(*d));
    *out = NULL;
    if (!d || !(d->buf = calloc(MAX_FOUND, sizeof(*d->buf)))) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    d->bal = b;
    d->reader_id = balancer_reader_id(b, READER_DISCOVERY);
    int rc = periodic_start(&d->thread, 0, discover, d);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start its thread: %s", strerror(-rc));
        free(d->buf);
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void discovery_kick(struct discovery *d) {
    if (d) periodic_kick(&d->thread);
}

void discovery_stop(struct discovery *d) {
    if (!d) return;
    atomic_store(&d->stopping, 1);
    periodic_stop(&d->thread);
    free(d->buf);
    free(d->jobs);
    free(d);
}
