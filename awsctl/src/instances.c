/* The deployment's instances: found by tag, launched spread over the
 * default subnets with deterministic client tokens, waited for, terminated. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define MAX_SUBNETS    16
#define PROFILE_WAIT_S 60 /* for EC2 to know a new instance profile */

/* What `up` launches: a cluster of backends, or the proxy. */
struct group {
    const char *key; /* "cluster1", "cluster2", "proxy" */
    const char *role, *cluster, *type;
    int count;
    bool profile; /* with the proxy's instance profile */
};

static void filter_values(struct aws_form *f, int n, const char *name, const char *csv) {
    char key[48];
    snprintf(key, sizeof(key), "Filter.%d.Name", n);
    aws_form_add(f, key, name);
    char *copy = strdup(csv), *save = NULL;
    int v = 0;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        snprintf(key, sizeof(key), "Filter.%d.Value.%d", n, ++v);
        aws_form_add(f, key, t);
    }
    free(copy);
}

static void parse_instance(xmlNodePtr item, struct instance *in) {
    memset(in, 0, sizeof(*in));
    copy_str(in->id, sizeof(in->id), aws_xml_text(item, "instanceId"));
    copy_str(in->type, sizeof(in->type), aws_xml_text(item, "instanceType"));
    copy_str(in->state, sizeof(in->state), aws_xml_text(item, "instanceState/name"));
    copy_str(in->subnet, sizeof(in->subnet), aws_xml_text(item, "subnetId"));
    copy_str(in->private_ip, sizeof(in->private_ip), aws_xml_text(item, "privateIpAddress"));
    copy_str(in->public_ip, sizeof(in->public_ip), aws_xml_text(item, "ipAddress"));
    copy_str(in->role, sizeof(in->role), aws_xml_tag(item, "Role"));
    copy_str(in->cluster, sizeof(in->cluster), aws_xml_tag(item, "Cluster"));
}

/* Appends the instances of a Describe/RunInstances reply's reservation item. */
static void collect(xmlNodePtr reservation, struct instance *out, int *n, int max) {
    AWS_XML_FOREACH(item, aws_xml_find(reservation, "instancesSet"), "item") {
        if (*n < max) parse_instance(item, &out[(*n)++]);
    }
}

bool instances_describe(struct ctl *c, const char *states, struct instance *out, int *n, int max) {
    char token[2048] = "";
    *n = 0;
    do {
        struct aws_form *f = aws_form_new();
        aws_form_filter(f, 1, "tag:Deployment", c->st->name);
        filter_values(f, 2, "instance-state-name", states);
        if (*token) aws_form_add(f, "NextToken", token);
        xmlDocPtr doc = ec2_read(c, "DescribeInstances", f);
        aws_form_free(f);
        if (!doc) return false;
        xmlNodePtr root = xmlDocGetRootElement(doc);
        AWS_XML_FOREACH(r, aws_xml_find(root, "reservationSet"), "item") {
            collect(r, out, n, max);
        }
        copy_str(token, sizeof(token), aws_xml_text(root, "nextToken"));
        xmlFreeDoc(doc);
    } while (*token);
    return true;
}

/* The state's instance list becomes the live ones, keeping host keys. */
static void merge(struct state *st, const struct instance *live, int n) {
    struct instance *old = malloc(sizeof(st->inst));
    int nold = st->ninst;
    if (old) memcpy(old, st->inst, sizeof(st->inst));
    st->ninst = 0;
    for (int i = 0; i < n; i++) {
        struct instance *in = &st->inst[st->ninst++];
        *in = live[i];
        for (int j = 0; old && j < nold; j++)
            if (!strcmp(old[j].id, in->id))
                copy_str(in->host_key, sizeof(in->host_key), old[j].host_key);
    }
    free(old);
}

/* ---- launch ---- */

struct subnet {
    char id[48], zone[48];
};

struct subnets {
    struct subnet s[MAX_SUBNETS];
    int n;
};

static int by_zone(const void *a, const void *b) {
    return strcmp(((const struct subnet *)a)->zone, ((const struct subnet *)b)->zone);
}

/* The default subnets of the default VPC, in zone order. */
static bool default_subnets(struct ctl *c, struct subnets *s) {
    struct aws_form *f = aws_form_new();
    aws_form_filter(f, 1, "default-for-az", "true");
    aws_form_filter(f, 2, "vpc-id", c->st->vpc_id);
    xmlDocPtr doc = ec2_read(c, "DescribeSubnets", f);
    aws_form_free(f);
    if (!doc) return false;
    s->n = 0;
    AWS_XML_FOREACH(item, aws_xml_find(xmlDocGetRootElement(doc), "subnetSet"), "item") {
        if (s->n == MAX_SUBNETS) break;
        copy_str(s->s[s->n].id, sizeof(s->s[0].id), aws_xml_text(item, "subnetId"));
        copy_str(s->s[s->n].zone, sizeof(s->s[0].zone), aws_xml_text(item, "availabilityZone"));
        s->n++;
    }
    xmlFreeDoc(doc);
    qsort(s->s, (size_t)s->n, sizeof(s->s[0]), by_zone);
    if (!s->n) fail("no default subnets in %s (%s)", c->st->vpc_id, c->st->region);
    return s->n > 0;
}

static bool in_group(const struct instance *in, const struct group *g) {
    return !strcmp(in->role, g->role) && !strcmp(in->cluster, g->cluster);
}

static int by_id(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The same launch (deployment, its epoch, group, subnet, count and the
 * instances it already has) always gets the same token, so a repeated `up`
 * after a lost reply or an interruption gets the first launch back. */
static void client_token(const struct state *st, const struct group *g, const char *subnet,
                         int count, char *out, size_t len) {
    const char *ids[MAX_INSTANCES] = {NULL};
    int n = 0;
    for (int i = 0; i < st->ninst; i++)
        if (in_group(&st->inst[i], g)) ids[n++] = st->inst[i].id;
    qsort(ids, (size_t)n, sizeof(ids[0]), by_id);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char h[32];
    unsigned int hl = 0;
    char head[512];
    int hn =
        snprintf(head, sizeof(head), "%s|%s|%s|%s|%d", st->name, st->epoch, g->key, subnet, count);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, head, (size_t)hn);
    for (int i = 0; i < n; i++)
        EVP_DigestUpdate(md, ids[i], strlen(ids[i]) + 1);
    EVP_DigestFinal_ex(md, h, &hl);
    EVP_MD_CTX_free(md);
    int w = snprintf(out, len, "awsctl-");
    for (int i = 0; i < 16 && (size_t)w + 3 <= len; i++)
        w += snprintf(out + w, len - (size_t)w, "%02x", h[i]);
}

/* RunInstances. A new instance profile takes seconds to reach EC2 (IAM is
 * eventually consistent), which until then refuses it as an invalid
 * parameter: that is retried with backoff for PROFILE_WAIT_S. */
static enum mut launch(struct ctl *c, struct aws_form *f, const char *what, bool profile,
                       xmlDocPtr *doc) {
    static const char *const unknown_profile[] = {"InvalidParameterValue", NULL};
    double start = now_s(), pause = 1;
    for (;;) {
        enum mut m = ec2_mutate(c, "RunInstances", f, what,
                                profile && !c->dry_run ? unknown_profile : NULL, doc);
        if (m != MUT_TOLERATED) return m;
        if (!strstr(c->err.message, "iamInstanceProfile") ||
            now_s() - start + pause > PROFILE_WAIT_S) {
            fail("%s (RunInstances): %s", what, c->err.message);
            return MUT_FAILED;
        }
        say("instance profile %s is not known to EC2 yet: retrying in %.0f s", c->st->iam_profile,
            pause);
        sleep_s(pause);
        pause = pause * 2 > 10 ? 10 : pause * 2;
    }
}

static bool run(struct ctl *c, const struct group *g, const char *subnet, int count) {
    struct state *st = c->st;
    char token[64], what[256], name[192];
    client_token(st, g, subnet, count, token, sizeof(token));
    snprintf(what, sizeof(what), "launch %d %s (%s) in %s", count, g->type, g->key, subnet);
    snprintf(name, sizeof(name), "%s-%s", st->name, g->key);
    struct aws_form *f = aws_form_new();
    aws_form_add(f, "ImageId", st->ami);
    aws_form_add(f, "InstanceType", g->type);
    aws_form_addf(f, "MinCount", "%d", count);
    aws_form_addf(f, "MaxCount", "%d", count);
    if (!c->key_pending) aws_form_add(f, "KeyName", st->key_name);
    aws_form_add(f, "SubnetId", subnet);
    if (!c->sg_pending) aws_form_add(f, "SecurityGroupId.1", st->sg_id);
    bool profile = g->profile && !c->profile_pending;
    if (profile) aws_form_add(f, "IamInstanceProfile.Name", st->iam_profile);
    aws_form_add(f, "ClientToken", token);
    const char *extra[] = {"Name",     name, "Role", g->role, *g->cluster ? "Cluster" : NULL,
                           g->cluster, NULL};
    ec2_tags(f, 1, "instance", st->name, extra);
    xmlDocPtr doc = NULL;
    enum mut m = launch(c, f, what, profile, &doc);
    aws_form_free(f);
    if (m != MUT_DONE) return m == MUT_WOULD;
    struct instance *got = calloc(MAX_INSTANCES, sizeof(*got));
    int n = 0;
    if (got) collect(xmlDocGetRootElement(doc), got, &n, MAX_INSTANCES);
    xmlFreeDoc(doc);
    for (int i = 0; i < n && st->ninst < MAX_INSTANCES; i++)
        if (!state_find(st, got[i].id)) st->inst[st->ninst++] = got[i];
    free(got);
    say("launched %d %s (%s) in %s", n, g->type, g->key, subnet);
    return ctl_save(c);
}

/* Launches what group g lacks: per subnet, the instances that a spread of
 * g->count over the subnets puts there, less those already there; what g has
 * elsewhere (or beyond its spread) is taken off the last subnets' share. */
static bool launch_group(struct ctl *c, const struct group *g, const struct subnets *s) {
    int want[MAX_SUBNETS] = {0}, have[MAX_SUBNETS] = {0}, total = 0, placed = 0;
    for (int k = 0; k < g->count; k++)
        want[k % s->n]++;
    for (int i = 0; i < c->st->ninst; i++) {
        const struct instance *in = &c->st->inst[i];
        if (!in_group(in, g)) continue;
        total++;
        for (int j = 0; j < s->n; j++)
            if (!strcmp(in->subnet, s->s[j].id)) have[j]++;
    }
    if (total > g->count)
        say("%s has %d instances, more than the %d asked for: the others stay (awsctl down "
            "removes them all)",
            g->key, total, g->count);
    for (int j = 0; j < s->n; j++)
        placed += have[j] < want[j] ? have[j] : want[j];
    int extra = total - placed;
    for (int j = s->n - 1; j >= 0; j--) {
        int need = want[j] > have[j] ? want[j] - have[j] : 0;
        int take = extra < need ? extra : need;
        want[j] = need - take;
        extra -= take;
    }
    for (int j = 0; j < s->n; j++)
        if (want[j] > 0 && !run(c, g, s->s[j].id, want[j])) return false;
    return true;
}

bool instances_launch(struct ctl *c, const struct up_opts *o) {
    struct instance *live = calloc(MAX_INSTANCES, sizeof(*live));
    int n = 0;
    bool ok = live && instances_describe(c, "pending,running", live, &n, MAX_INSTANCES);
    if (ok) {
        merge(c->st, live, n);
        if (n) say("found %d instance(s) of %s already pending or running", n, c->st->name);
    }
    free(live);
    struct subnets s;
    if (!ok || !ctl_save(c) || !default_subnets(c, &s)) return false;
    const struct group groups[] = {
        {"cluster1", "backend", "cluster1", "t2.micro", o->micro, false},
        {"cluster2", "backend", "cluster2", "t2.large", o->large, false},
        {"proxy", "proxy", "", o->lb_type, 1, true},
    };
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        if (!launch_group(c, &groups[i], &s)) return false;
    return true;
}

/* ---- waiting ---- */

/* Refreshes the state's instances from EC2; false (printed) when one has
 * gone away or stopped, which only another `up` can mend. */
static bool refresh(struct ctl *c, int *running) {
    struct state *st = c->st;
    struct instance *live = calloc(MAX_INSTANCES, sizeof(*live));
    int n = 0;
    bool ok =
        live && instances_describe(c, "pending,running,shutting-down,terminated,stopping,stopped",
                                   live, &n, MAX_INSTANCES);
    *running = 0;
    for (int i = 0; ok && i < n; i++) {
        struct instance *in = state_find(st, live[i].id);
        if (!in) continue;
        char key[sizeof(in->host_key)];
        copy_str(key, sizeof(key), in->host_key);
        *in = live[i];
        copy_str(in->host_key, sizeof(in->host_key), key);
        if (!strcmp(in->state, "running")) {
            (*running)++;
        } else if (strcmp(in->state, "pending")) {
            fail("instance %s (%s %s) is %s: run awsctl up again to replace it", in->id, in->role,
                 in->cluster, in->state);
            ok = false;
        }
    }
    free(live);
    return ok;
}

static void list_waiting(const struct state *st, const bool *ssh_ok, char *out, size_t len) {
    size_t w = 0;
    out[0] = '\0';
    for (int i = 0; i < st->ninst && w + 64 < len; i++) {
        const struct instance *in = &st->inst[i];
        if (ssh_ok[i]) continue;
        w += (size_t)snprintf(out + w, len - w, "%s%s (%s)", w ? ", " : "", in->id,
                              strcmp(in->state, "running") ? in->state : "no ssh yet");
    }
}

bool instances_wait_ready(struct ctl *c, long timeout_s, int port) {
    struct state *st = c->st;
    bool ssh_ok[MAX_INSTANCES] = {false};
    double start = now_s(), pause = 0.5, last_print = 0;
    char last[128] = "";
    for (;;) {
        int running = 0, ssh = 0;
        if (!refresh(c, &running)) return false;
        for (int i = 0; i < st->ninst; i++) {
            struct instance *in = &st->inst[i];
            if (!ssh_ok[i] && !strcmp(in->state, "running") && in->public_ip[0])
                ssh_ok[i] = ssh_banner(in->public_ip, port, 1500);
            ssh += ssh_ok[i];
        }
        char line[128];
        snprintf(line, sizeof(line), "waiting: %d/%d running, %d/%d ssh", running, st->ninst, ssh,
                 st->ninst);
        double t = now_s() - start;
        if (strcmp(line, last) || t - last_print >= 15) {
            say("%s (%.0f s)", line, t);
            copy_str(last, sizeof(last), line);
            last_print = t;
        }
        if (!ctl_save(c)) return false;
        if (ssh == st->ninst) return true;
        if (t + pause > (double)timeout_s) {
            char waiting[2048];
            list_waiting(st, ssh_ok, waiting, sizeof(waiting));
            fail("timed out after %ld s (--wait-timeout) waiting for %s; run awsctl up again "
                 "to continue",
                 timeout_s, waiting);
            return false;
        }
        sleep_s(pause);
        pause = pause * 1.5 > 5 ? 5 : pause * 1.5;
    }
}

/* ---- terminating ---- */

static bool terminate_batch(struct ctl *c, const struct instance *live, int n) {
    struct aws_form *f = aws_form_new();
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof(key), "InstanceId.%d", i + 1);
        aws_form_add(f, key, live[i].id);
    }
    char what[64];
    snprintf(what, sizeof(what), "terminate %d instance(s)", n);
    static const char *const gone[] = {"InvalidInstanceID.NotFound", NULL};
    enum mut m = ec2_mutate(c, "TerminateInstances", f, what, gone, NULL);
    aws_form_free(f);
    return m != MUT_FAILED;
}

bool instances_terminate(struct ctl *c, long timeout_s) {
    struct instance *live = calloc(MAX_INSTANCES, sizeof(*live));
    const char *alive = "pending,running,shutting-down,stopping,stopped";
    int n = 0, total = -1;
    double start = now_s(), pause = 0.5;
    bool ok = live != NULL;
    char last[64] = "";
    while (ok && (ok = instances_describe(c, alive, live, &n, MAX_INSTANCES))) {
        if (total < 0) {
            total = n;
            if (n) say("terminating %d instance(s) of %s", n, c->st->name);
        }
        int to_stop = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(live[i].state, "shutting-down")) live[to_stop++] = live[i];
        if (to_stop && !(ok = terminate_batch(c, live, to_stop))) break;
        char line[64];
        snprintf(line, sizeof(line), "terminating: %d/%d terminated", total - n, total);
        if (total && strcmp(line, last)) say("%s (%.0f s)", line, now_s() - start);
        copy_str(last, sizeof(last), line);
        if (!n) break;
        if (now_s() - start + pause > (double)timeout_s) {
            fail("timed out after %ld s waiting for %d instance(s) to terminate; run awsctl down "
                 "again",
                 timeout_s, n);
            ok = false;
            break;
        }
        sleep_s(pause);
        pause = pause * 1.5 > 5 ? 5 : pause * 1.5;
    }
    ok = ok && n == 0;
    free(live);
    if (ok) c->st->ninst = 0;
    return ok;
}
