/* awsctl status: the deployment's instances as EC2 sees them, and whether
 * each backend answers /health and the proxy routes to both clusters. */
#define _GNU_SOURCE
#include "awsctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEALTH_MS 3000

/* "ok", or what went wrong with GET http://ip:port/path. */
static bool probe(const char *ip, const char *path, char *out, size_t len) {
    char url[256], body[1024], err[512];
    snprintf(url, sizeof(url), "http://%s:%d%s", ip, APP_PORT, path);
    long status = http_get(url, HEALTH_MS, body, sizeof(body), err, sizeof(err));
    bool ok = status == 200 && strstr(body, "\"status\":\"ok\"");
    if (ok)
        copy_str(out, len, "ok");
    else if (status)
        snprintf(out, len, "HTTP %ld", status);
    else
        snprintf(out, len, "down (%s)", err);
    return ok;
}

static bool health(const struct instance *in, char *out, size_t len) {
    if (strcmp(in->state, "running") || !in->public_ip[0]) {
        copy_str(out, len, "-");
        return false;
    }
    if (strcmp(in->role, "proxy")) return probe(in->public_ip, "/health", out, len);
    char a[256], b[256];
    bool ok1 = probe(in->public_ip, "/cluster1/health", a, sizeof(a));
    bool ok2 = probe(in->public_ip, "/cluster2/health", b, sizeof(b));
    snprintf(out, len, "/cluster1 %s, /cluster2 %s", a, b);
    return ok1 && ok2;
}

/* The CloudWatch console's page of the proxies' metrics, under the
 * deployment's load balancer name. */
static void console_link(const struct state *st, char *out, size_t len) {
    char lb[160], host[96];
    push_load_balancer(st, lb, sizeof(lb));
    if (!strncmp(st->region, "cn-", 3))
        copy_str(host, sizeof(host), "console.amazonaws.cn");
    else if (!strncmp(st->region, "us-gov-", 7))
        copy_str(host, sizeof(host), "console.amazonaws-us-gov.com");
    else
        snprintf(host, sizeof(host), "%s.console.aws.amazon.com", st->region);
    snprintf(out, len,
             "https://%s/cloudwatch/home?region=%s#metricsV2:graph=~();search=%s;namespace=%s;"
             "dimensions=LoadBalancer",
             host, st->region, lb, CW_NAMESPACE);
}

int cmd_status(struct ctl *c) {
    struct state *st = c->st;
    struct instance *live = calloc(MAX_INSTANCES, sizeof(*live));
    int n = 0;
    if (!live || !instances_describe(c, "pending,running,shutting-down,stopping,stopped", live, &n,
                                     MAX_INSTANCES)) {
        free(live);
        return 1;
    }
    say("deployment %s in %s: %d instance(s)", st->name, st->region, n);
    if (n)
        say("%-20s %-8s %-9s %-10s %-14s %-16s %s", "INSTANCE", "ROLE", "CLUSTER", "TYPE", "STATE",
            "PUBLIC IP", "HEALTH");
    int backends = 0, healthy = 0, proxies = 0, proxies_ok = 0;
    for (int i = 0; i < n; i++) {
        const struct instance *in = &live[i];
        char h[600];
        bool ok = health(in, h, sizeof(h));
        bool proxy = !strcmp(in->role, "proxy");
        backends += !proxy;
        healthy += !proxy && ok;
        proxies += proxy;
        proxies_ok += proxy && ok;
        say("%-20s %-8s %-9s %-10s %-14s %-16s %s", in->id, in->role,
            *in->cluster ? in->cluster : "-", in->type, in->state,
            *in->public_ip ? in->public_ip : "-", h);
    }
    if (n) say("healthy: %d/%d backends, %d/%d proxy", healthy, backends, proxies_ok, proxies);
    for (int i = 0; i < n; i++)
        if (!strcmp(live[i].role, "proxy") && live[i].public_ip[0])
            say("http://%s:%d/cluster1 http://%s:%d/cluster2", live[i].public_ip, APP_PORT,
                live[i].public_ip, APP_PORT);
    char lb[160], link[512];
    push_load_balancer(st, lb, sizeof(lb));
    console_link(st, link, sizeof(link));
    say("cloudwatch: %s, LoadBalancer=%s: %s", CW_NAMESPACE, lb, link);
    free(live);
    return n && healthy == backends && proxies_ok == proxies ? 0 : 1;
}
