/* Configuration: defaults, the JSON file, the flags and their errors. */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "testing.h"

#ifndef LB_VERSION
#define LB_VERSION "0.0.0"
#endif

/* The example of DESIGN.md, "Configuration". */
static const char *design_example =
    "{\n"
    "  \"listen\": \"0.0.0.0:8000\",\n"
    "  \"threads\": 2,\n"
    "  \"engine\": \"auto\",\n"
    "  \"admin\": \"127.0.0.1:9000\",\n"
    "  \"access_log\": \"-\",\n"
    "  \"limits\": {\"max_header_bytes\": 16384, \"max_headers\": 100, \"max_connections\": "
    "100000},\n"
    "  \"timeouts_ms\": {\"connect\": 1000, \"client_header\": 10000, \"idle\": 60000,\n"
    "                  \"backend_response\": 30000, \"drain\": 30000},\n"
    "  \"default_response\": {\"status\": 404, \"content_type\": \"text/plain\", \"body\": \"no "
    "route\\n\"},\n"
    "  \"clusters\": [{\n"
    "    \"name\": \"cluster1\",\n"
    "    \"path_prefix\": \"/cluster1\",\n"
    "    \"strip_prefix\": false,\n"
    "    \"strategy\": \"peak-ewma\",\n"
    "    \"backends\": [\"10.0.1.5:8000\", \"10.0.1.6:8000\"],\n"
    "    \"discovery\": {\"ec2\": {\"region\": \"us-east-1\",\n"
    "                          \"tags\": {\"Cluster\": \"cluster1\", \"Deployment\": "
    "\"lb-demo\"},\n"
    "                          \"port\": 8000, \"interval_s\": 15}},\n"
    "    \"health_check\": {\"path\": \"/health\", \"interval_ms\": 1000, \"timeout_ms\": 500,\n"
    "                     \"healthy_threshold\": 2, \"unhealthy_threshold\": 2,\n"
    "                     \"expect_status\": \"200-399\"},\n"
    "    \"retries\": 1\n"
    "  }],\n"
    "  \"cloudwatch\": {\"namespace\": \"CustomLB\", \"region\": \"us-east-1\", \"interval_s\": "
    "60,\n"
    "                 \"load_balancer\": \"app/lb-demo\"}\n"
    "}\n";

/* A config that differs from every default, to see each field read back. */
static const char *non_default =
    "{\"listen\": \"127.0.0.1:8081\", \"threads\": 7, \"engine\": \"epoll\","
    " \"admin\": \"9100\", \"access_log\": \"/tmp/access.log\", \"log_level\": \"debug\","
    " \"limits\": {\"max_header_bytes\": 2048, \"max_headers\": 50, \"max_connections\": 77},"
    " \"timeouts_ms\": {\"connect\": 11, \"client_header\": 12, \"idle\": 13,"
    "                   \"backend_response\": 14, \"drain\": 15},"
    " \"default_response\": {\"status\": 503, \"content_type\": \"application/json\","
    "                        \"body\": \"{\\\"error\\\":\\\"none\\\"}\"},"
    " \"clusters\": ["
    "  {\"name\": \"api-v2\", \"path_prefix\": \"/api/v2/\", \"strip_prefix\": true,"
    "   \"strategy\": \"round-robin\", \"backends\": [\"[::1]:9001\", \"localhost:9002\"],"
    "   \"health_check\": {\"path\": \"/ping?x=1\", \"interval_ms\": 200, \"timeout_ms\": 150,"
    "                     \"healthy_threshold\": 3, \"unhealthy_threshold\": 4,"
    "                     \"expect_status\": \"204\"},"
    "   \"retries\": 0},"
    "  {\"path_prefix\": \"/\", \"backends\": [\"127.0.0.1:9003\"],"
    "   \"health_check\": {\"interval_ms\": 300}},"
    "  {\"path_prefix\": \"/disc\", \"discovery\": {\"ec2\": {\"region\": \"eu-west-3\","
    "   \"tags\": {\"Cluster\": \"c2\"}}}}"
    " ],"
    " \"cloudwatch\": {\"region\": \"eu-west-3\"}"
    "}";

static void test_defaults(void) {
    struct proxy_config c;
    config_defaults(&c);
    CHECK_STR(c.listen_text, "0.0.0.0:8000");
    CHECK(c.listen.ss.ss_family == AF_INET);
    CHECK(net_addr_port(&c.listen) == 8000);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(c.threads == (n < 1 ? 1 : n > 1024 ? 1024 : n));
    CHECK(c.engine == EV_ENGINE_AUTO);
    CHECK(!c.admin_set);
    CHECK_STR(c.access_log, "");
    CHECK(c.log_level == LOG_INFO);
    CHECK(c.limits.max_header_bytes == 16384);
    CHECK(c.limits.max_headers == 100);
    CHECK(c.limits.max_connections == 100000);
    CHECK(c.timeouts_ms.connect == 1000);
    CHECK(c.timeouts_ms.client_header == 10000);
    CHECK(c.timeouts_ms.idle == 60000);
    CHECK(c.timeouts_ms.backend_response == 30000);
    CHECK(c.timeouts_ms.drain == 30000);
    CHECK(c.default_response.status == 404);
    CHECK_STR(c.default_response.content_type, "text/plain");
    CHECK_STR(c.default_response.body, "no route\n");
    CHECK(c.default_response.body_len == 9);
    CHECK(c.nclusters == 0 && c.clusters == NULL);
    CHECK(!c.cloudwatch.enabled);
    CHECK(!c.check_only);
    config_free(&c);
    config_free(&c); /* twice is harmless */
}

static void test_strategy_names(void) {
    CHECK_STR(strategy_name(STRATEGY_PEAK_EWMA), "peak-ewma");
    CHECK_STR(strategy_name(STRATEGY_FASTEST), "fastest");
    CHECK_STR(strategy_name(STRATEGY_LEAST_OUTSTANDING), "least-outstanding");
    CHECK_STR(strategy_name(STRATEGY_ROUND_ROBIN), "round-robin");
    CHECK_STR(strategy_name(STRATEGY_RANDOM), "random");
    const char *all[] = {"peak-ewma", "fastest", "least-outstanding", "round-robin", "random"};
    for (int i = 0; i < 5; i++)
        CHECK(strategy_parse(all[i]) >= 0 &&
              !strcmp(strategy_name(strategy_parse(all[i])), all[i]));
    CHECK(strategy_parse("best") == -1);
    CHECK(strategy_parse("") == -1);
    CHECK(strategy_parse("Random") == -1);
}

static void test_design_example(void) {
    struct proxy_config c;
    char err[256] = "";
    config_defaults(&c);
    CHECK(config_parse_json(&c, design_example, err, sizeof(err)) == 0);
    CHECK_STR(err, "");
    CHECK_STR(c.listen_text, "0.0.0.0:8000");
    CHECK(net_addr_port(&c.listen) == 8000);
    CHECK(c.threads == 2);
    CHECK(c.engine == EV_ENGINE_AUTO);
    CHECK(c.admin_set);
    CHECK_STR(c.admin_text, "127.0.0.1:9000");
    CHECK(net_addr_port(&c.admin) == 9000);
    CHECK_STR(c.access_log, "-");
    CHECK(c.limits.max_header_bytes == 16384 && c.limits.max_headers == 100 &&
          c.limits.max_connections == 100000);
    CHECK(c.timeouts_ms.connect == 1000 && c.timeouts_ms.client_header == 10000 &&
          c.timeouts_ms.idle == 60000 && c.timeouts_ms.backend_response == 30000 &&
          c.timeouts_ms.drain == 30000);
    CHECK(c.default_response.status == 404);
    CHECK_STR(c.default_response.content_type, "text/plain");
    CHECK_STR(c.default_response.body, "no route\n");
    CHECK(c.default_response.body_len == 9);
    CHECK(c.nclusters == 1);
    if (c.nclusters == 1) {
        const struct cluster_config *k = &c.clusters[0];
        CHECK_STR(k->name, "cluster1");
        CHECK_STR(k->path_prefix, "/cluster1");
        CHECK(k->prefix_len == 9);
        CHECK(!k->strip_prefix);
        CHECK(k->strategy == STRATEGY_PEAK_EWMA && k->strategy_set);
        CHECK(k->nbackends == 2);
        if (k->nbackends == 2) {
            CHECK_STR(k->backends[0].text, "10.0.1.5:8000");
            CHECK_STR(k->backends[1].text, "10.0.1.6:8000");
            char buf[80];
            CHECK_STR(net_addr_str(&k->backends[1].addr, buf, sizeof(buf)), "10.0.1.6:8000");
        }
        CHECK(k->discovery.enabled);
        CHECK_STR(k->discovery.region, "us-east-1");
        CHECK(k->discovery.ntags == 2);
        CHECK_STR(k->discovery.tag_keys[0], "Cluster");
        CHECK_STR(k->discovery.tag_values[0], "cluster1");
        CHECK_STR(k->discovery.tag_keys[1], "Deployment");
        CHECK_STR(k->discovery.tag_values[1], "lb-demo");
        CHECK(k->discovery.port == 8000 && k->discovery.interval_s == 15);
        CHECK_STR(k->health.path, "/health");
        CHECK(k->health.interval_ms == 1000 && k->health.timeout_ms == 500);
        CHECK(k->health.healthy_threshold == 2 && k->health.unhealthy_threshold == 2);
        CHECK(k->health.expect_lo == 200 && k->health.expect_hi == 399);
        CHECK(k->retries == 1);
    }
    CHECK(c.cloudwatch.enabled);
    CHECK_STR(c.cloudwatch.namespace_, "CustomLB");
    CHECK_STR(c.cloudwatch.region, "us-east-1");
    CHECK(c.cloudwatch.interval_s == 60);
    CHECK_STR(c.cloudwatch.load_balancer, "app/lb-demo");

    /* The summary names what would run. */
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    config_print(&c, m);
    fclose(m);
    CHECK(strstr(text, "listen 0.0.0.0:8000\n") != NULL);
    CHECK(strstr(text, "threads 2\n") != NULL);
    CHECK(strstr(text, "engine auto\n") != NULL);
    CHECK(strstr(text, "cluster cluster1\n") != NULL);
    CHECK(strstr(text, "path_prefix /cluster1") != NULL);
    CHECK(strstr(text, "strategy peak-ewma") != NULL);
    CHECK(strstr(text, "backend 10.0.1.5:8000\n") != NULL);
    CHECK(strstr(text, "backend 10.0.1.6:8000\n") != NULL);
    CHECK(strstr(text, "health_check path=/health") != NULL);
    CHECK(strstr(text, "retries 1") != NULL);
    CHECK(strstr(text, "load_balancer=app/lb-demo\n") != NULL);
    CHECK(strstr(text, "default_response 404") != NULL);
    CHECK(strstr(text, "admin 127.0.0.1:9000") != NULL);
    CHECK(strstr(text, "access_log -") != NULL);
    free(text);
    config_free(&c);
}

/* The faults, warm-up and affinity fields: defaults, values, turning off. */
static void test_faults_fields(void) {
    struct proxy_config c;
    char err[256] = "";
    config_defaults(&c);
    CHECK(config_parse_json(
              &c,
              "{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": "
              "[\"10.0.0.1:80\", \"app-1.internal:8000\"]},"
              "{\"path_prefix\": \"/b\", \"backends\": [\"10.0.0.2:80\"],"
              " \"outlier_detection\": {\"consecutive_5xx\": 0, \"base_ejection_ms\": 500},"
              " \"slow_start_ms\": 2000, \"dns_refresh_s\": 5,"
              " \"stickiness\": {\"cookie\": \"S\", \"duration_s\": 60,"
              " \"secret\": \"0123456789abcdef\"},"
              " \"weights\": {\"10.0.0.2:80\": 3, \"10.0.0.9:80\": 0}},"
              "{\"path_prefix\": \"/c\", \"backends\": [\"10.0.0.3:80\"],"
              " \"outlier_detection\": false, \"stickiness\": {}}]}",
              err, sizeof(err)) == 0);
    if (err[0]) fprintf(stderr, "unexpected error: %s\n", err);
    CHECK(c.nclusters == 3);
    if (c.nclusters == 3) {
        const struct cluster_config *a = &c.clusters[0], *b = &c.clusters[1], *d = &c.clusters[2];
        CHECK(a->outlier.enabled && a->outlier.consecutive_5xx == 5 &&
              a->outlier.consecutive_gateway_failure == 3 && a->outlier.interval_ms == 1000 &&
              a->outlier.base_ejection_ms == 30000 && a->outlier.max_ejection_percent == 50);
        CHECK(a->slow_start_ms == 0 && !a->sticky.enabled && a->dns_refresh_s == 30);
        CHECK(!a->backends[0].is_name && a->backends[1].is_name);
        CHECK_STR(a->backends[1].text, "app-1.internal:8000");
        CHECK(b->outlier.enabled && b->outlier.consecutive_5xx == 0 &&
              b->outlier.base_ejection_ms == 500 && b->outlier.consecutive_gateway_failure == 3);
        CHECK(b->slow_start_ms == 2000 && b->dns_refresh_s == 5);
        CHECK(b->sticky.enabled && b->sticky.duration_s == 60);
        CHECK_STR(b->sticky.cookie, "S");
        CHECK(cluster_weight(b, "10.0.0.2:80", NULL) == 3);
        CHECK(cluster_weight(b, "10.0.0.9:80", NULL) == 0);
        CHECK(cluster_weight(b, "10.0.0.8:80", NULL) == 1);
        CHECK(!d->outlier.enabled);
        CHECK(d->sticky.enabled && d->sticky.duration_s == 86400);
        CHECK_STR(d->sticky.cookie, "LBSTICKY");
    }
    config_free(&c);
}

static void test_non_default(void) {
    struct proxy_config c;
    char err[256] = "";
    config_defaults(&c);
    CHECK(config_parse_json(&c, non_default, err, sizeof(err)) == 0);
    if (err[0]) fprintf(stderr, "unexpected error: %s\n", err);
    CHECK_STR(c.listen_text, "127.0.0.1:8081");
    CHECK(c.threads == 7);
    CHECK(c.engine == EV_ENGINE_EPOLL);
    CHECK(c.admin_set);
    CHECK_STR(c.admin_text, "127.0.0.1:9100"); /* a port alone is on loopback */
    CHECK_STR(c.access_log, "/tmp/access.log");
    CHECK(c.log_level == LOG_DEBUG);
    CHECK(c.limits.max_header_bytes == 2048 && c.limits.max_headers == 50 &&
          c.limits.max_connections == 77);
    CHECK(c.timeouts_ms.connect == 11 && c.timeouts_ms.client_header == 12 &&
          c.timeouts_ms.idle == 13 && c.timeouts_ms.backend_response == 14 &&
          c.timeouts_ms.drain == 15);
    CHECK(c.default_response.status == 503);
    CHECK_STR(c.default_response.content_type, "application/json");
    CHECK_STR(c.default_response.body, "{\"error\":\"none\"}");
    CHECK(c.default_response.body_len == strlen("{\"error\":\"none\"}"));
    CHECK(c.nclusters == 3);
    if (c.nclusters == 3) {
        const struct cluster_config *a = &c.clusters[0], *r = &c.clusters[1], *d = &c.clusters[2];
        CHECK_STR(a->name, "api-v2");
        CHECK_STR(a->path_prefix, "/api/v2/");
        CHECK(a->prefix_len == 8);
        CHECK(a->strip_prefix);
        CHECK(a->strategy == STRATEGY_ROUND_ROBIN && a->strategy_set);
        CHECK(a->nbackends == 2);
        CHECK(a->backends[0].addr.ss.ss_family == AF_INET6);
        CHECK_STR(a->backends[1].text, "localhost:9002");
        CHECK_STR(a->health.path, "/ping?x=1");
        CHECK(a->health.interval_ms == 200 && a->health.timeout_ms == 150);
        CHECK(a->health.healthy_threshold == 3 && a->health.unhealthy_threshold == 4);
        CHECK(a->health.expect_lo == 204 && a->health.expect_hi == 204);
        CHECK(a->retries == 0);
        CHECK(!a->discovery.enabled);

        CHECK_STR(r->name, "root"); /* "/" */
        CHECK(r->prefix_len == 1);
        CHECK(r->strategy == STRATEGY_PEAK_EWMA && !r->strategy_set);
        CHECK(r->retries == 1);
        CHECK_STR(r->health.path, "/health");
        /* a short interval shortens the default timeout */
        CHECK(r->health.interval_ms == 300 && r->health.timeout_ms == 300);

        CHECK_STR(d->name, "disc");
        CHECK(d->nbackends == 0);
        CHECK(d->discovery.enabled);
        CHECK_STR(d->discovery.region, "eu-west-3");
        CHECK(d->discovery.ntags == 1);
        CHECK(d->discovery.port == 8000 && d->discovery.interval_s == 15);
    }
    CHECK(c.cloudwatch.enabled);
    CHECK_STR(c.cloudwatch.namespace_, "CustomLB");
    CHECK_STR(c.cloudwatch.region, "eu-west-3");
    CHECK(c.cloudwatch.interval_s == 60);
    /* app/<short hostname> unless set */
    CHECK(!strncmp(c.cloudwatch.load_balancer, "app/", 4) && c.cloudwatch.load_balancer[4] &&
          !strchr(c.cloudwatch.load_balancer, '.'));
    config_free(&c);
}

/* JSON that must be refused, and the text the error must hold. */
static void expect_error(const char *json, const char *want, int line) {
    struct proxy_config c;
    char err[512] = "";
    config_defaults(&c);
    int rc = config_parse_json(&c, json, err, sizeof(err));
    if (rc != -1 || !strstr(err, want)) {
        fprintf(stderr, "line %d: rc %d, error \"%s\", want \"%s\"\n", line, rc, err, want);
        CHECK(0);
    } else {
        CHECK(1);
    }
    /* nothing applied */
    CHECK(c.nclusters == 0 && c.threads > 0 && c.default_response.status == 404);
    CHECK_STR(c.default_response.body, "no route\n");
    config_free(&c);
}
#define BAD(json, want) expect_error(json, want, __LINE__)

#define B1 "\"backends\": [\"10.0.0.1:80\"]"

static void test_errors(void) {
    /* invalid JSON */
    BAD("", "invalid JSON");
    BAD("{\"threads\": 2,}", "invalid JSON at line 1");
    BAD("{\n\"threads\": 2\n", "invalid JSON at line 3");
    BAD("{} x", "invalid JSON");
    BAD("[1]", "expected a JSON object");
    /* unknown and repeated fields, wrong types */
    BAD("{\"bogus\": 1}", "bogus: unknown field");
    BAD("{\"Listen\": \"8000\"}", "Listen: unknown field");
    BAD("{\"threads\": 2, \"threads\": 3}", "threads: duplicate field");
    BAD("{\"limits\": {\"max_body\": 1}}", "limits.max_body: unknown field");
    BAD("{\"timeouts_ms\": {\"write\": 1}}", "timeouts_ms.write: unknown field");
    BAD("{\"default_response\": {\"code\": 404}}", "default_response.code: unknown field");
    BAD("{\"cloudwatch\": {\"dimension\": \"x\"}}", "cloudwatch.dimension: unknown field");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 ", \"bogus\": 1}]}",
        "clusters[0].bogus: unknown field");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"method\": \"GET\"}}]}",
        "clusters[0].health_check.method: unknown field");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"gcp\": {}}}]}",
        "clusters[0].discovery.gcp: unknown field");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {\"a\": \"b\"}, \"filters\": 1}}}]}",
        "clusters[0].discovery.ec2.filters: unknown field");
    BAD("{\"limits\": 5}", "limits: expected an object");
    BAD("{\"clusters\": {}}", "clusters: expected an array");
    BAD("{\"clusters\": [5]}", "clusters[0]: expected an object");
    /* numbers */
    BAD("{\"threads\": \"2\"}", "threads: expected an integer 1-1024");
    BAD("{\"threads\": 0}", "threads: expected an integer 1-1024");
    BAD("{\"threads\": 1025}", "threads: expected an integer 1-1024");
    BAD("{\"threads\": 2.5}", "threads: expected an integer 1-1024, got 2.5");
    BAD("{\"timeouts_ms\": {\"connect\": 0}}", "timeouts_ms.connect: expected a positive integer");
    BAD("{\"timeouts_ms\": {\"idle\": -5}}", "timeouts_ms.idle: expected a positive integer");
    BAD("{\"timeouts_ms\": {\"drain\": 1e12}}", "timeouts_ms.drain: expected a positive integer");
    BAD("{\"timeouts_ms\": {\"connect\": 1.5}}",
        "timeouts_ms.connect: expected a positive integer");
    BAD("{\"timeouts_ms\": {\"connect\": null}}", "timeouts_ms.connect: expected a positive");
    BAD("{\"limits\": {\"max_header_bytes\": 1023}}",
        "limits.max_header_bytes: expected an integer 1024-1048576");
    BAD("{\"limits\": {\"max_header_bytes\": 1048577}}", "limits.max_header_bytes");
    BAD("{\"limits\": {\"max_headers\": 0}}", "limits.max_headers: expected an integer 1-10000");
    BAD("{\"limits\": {\"max_headers\": 10001}}", "limits.max_headers");
    BAD("{\"limits\": {\"max_connections\": 0}}", "limits.max_connections");
    BAD("{\"default_response\": {\"status\": 99}}",
        "default_response.status: expected an integer 100-599");
    BAD("{\"default_response\": {\"status\": 600}}", "default_response.status");
    BAD("{\"default_response\": {\"body\": 5}}", "default_response.body: expected a string");
    BAD("{\"default_response\": {\"content_type\": \"a\\r\\nX: y\"}}",
        "default_response.content_type");
    BAD("{\"cloudwatch\": {\"interval_s\": 0}}", "cloudwatch.interval_s");
    BAD("{\"cloudwatch\": {\"namespace\": \"AWS/ELB\"}}", "cloudwatch.namespace");
    BAD("{\"cloudwatch\": {\"region\": \"US East\"}}", "cloudwatch.region");
    /* names of things */
    BAD("{\"engine\": \"fast\"}", "engine: expected auto, uring or epoll, got \"fast\"");
    BAD("{\"engine\": 1}", "engine: expected auto, uring or epoll");
    BAD("{\"log_level\": \"loud\"}", "log_level: expected error, warn, info or debug");
    BAD("{\"access_log\": 1}", "access_log: expected a string");
    /* addresses */
    BAD("{\"listen\": \"1.2.3.4:0\"}", "listen: bad address \"1.2.3.4:0\"");
    BAD("{\"listen\": \"70000\"}", "listen: bad address");
    BAD("{\"listen\": \"example.com:80\"}", "listen: bad address");
    BAD("{\"listen\": 8000}", "listen: expected a \"[HOST:]PORT\" string");
    BAD("{\"admin\": \"x:9000\"}", "admin: bad address \"x:9000\"");
    BAD("{\"listen\": \"8000\", \"admin\": \"0.0.0.0:8000\"}", "admin: ");
    BAD("{\"admin\": \"8000\"}", "admin: "); /* 127.0.0.1:8000 vs the default 0.0.0.0:8000 */
    /* clusters */
    BAD("{\"clusters\": [{" B1 "}]}", "clusters[0].path_prefix: required");
    BAD("{\"clusters\": [{\"path_prefix\": \"cluster1\", " B1 "}]}",
        "clusters[0].path_prefix: must start with \"/\"");
    BAD("{\"clusters\": [{\"path_prefix\": \"\", " B1 "}]}", "clusters[0].path_prefix: must start");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a b\", " B1 "}]}", "clusters[0].path_prefix");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a?b\", " B1 "}]}", "clusters[0].path_prefix");
    BAD("{\"clusters\": [{\"path_prefix\": 5, " B1 "}]}",
        "clusters[0].path_prefix: expected a string");
    BAD("{\"clusters\": [{\"path_prefix\": \"/cluster1\", " B1 "},"
        " {\"path_prefix\": \"/cluster1\", \"name\": \"other\", " B1 "}]}",
        "clusters[1].path_prefix: duplicate prefix \"/cluster1\"");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": \"x\", " B1 "},"
        " {\"path_prefix\": \"/b\", \"name\": \"x\", " B1 "}]}",
        "clusters[1].name: duplicate name \"x\"");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": \"b\", " B1 "},"
        " {\"path_prefix\": \"/b\", " B1 "}]}",
        "clusters[1].name: duplicate name \"b\""); /* derived from the prefix */
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": \"\", " B1 "}]}",
        "clusters[0].name: must not be empty");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": \"a b\", " B1 "}]}",
        "clusters[0].name: may hold only");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": 1, " B1 "}]}",
        "clusters[0].name: expected a string");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": "
        "\"a123456789012345678901234567890123456789012345678901234567890123\", " B1 "}]}",
        "clusters[0].name: too long");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"name\": \"none\", " B1 "}]}",
        "clusters[0].name: \"none\" is reserved");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\"}]}",
        "clusters[0].backends: at least one backend (or discovery.ec2) required");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": []}]}",
        "clusters[0].backends: at least one backend (or discovery.ec2) required");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": \"10.0.0.1:80\"}]}",
        "clusters[0].backends: expected an array");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.2:80\", "
        "\"10.0.0.1\"]}]}",
        "clusters[0].backends[1]: bad address \"10.0.0.1\": expected HOST:PORT");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"back_end.local:80\"]}]}",
        "clusters[0].backends[0]: bad address \"back_end.local:80\"");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"-app.local:80\"]}]}",
        "clusters[0].backends[0]: bad address");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"app.local:0\"]}]}",
        "clusters[0].backends[0]: bad address");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"app.local:80\", "
        "\"APP.local:80\"]}]}",
        "clusters[0].backends[1]: duplicate backend");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"outlier_detection\": {\"consecutive_5xx\": -1}}]}",
        "clusters[0].outlier_detection.consecutive_5xx: expected an integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"outlier_detection\": {\"max_ejection_percent\": 101}}]}",
        "clusters[0].outlier_detection.max_ejection_percent: expected an integer 0-100");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"outlier_detection\": {\"base_ejection\": 1}}]}",
        "clusters[0].outlier_detection.base_ejection: unknown field");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"slow_start_ms\": \"30s\"}]}",
        "clusters[0].slow_start_ms: expected an integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"weights\": {\"10.0.0.1:80\": 1001}}]}",
        "clusters[0].weights.10.0.0.1:80: expected an integer 0-1000");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"weights\": {\"nope\": 2}}]}",
        "clusters[0].weights.nope: not a backend");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"stickiness\": {\"secret\": \"short\"}}]}",
        "clusters[0].stickiness.secret: at least 16 characters");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"], "
        "\"stickiness\": {\"cookie\": \"a b\"}}]}",
        "clusters[0].stickiness.cookie: expected a cookie name");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:0\"]}]}",
        "clusters[0].backends[0]: bad address");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [8000]}]}",
        "clusters[0].backends[0]: expected a \"HOST:PORT\" string");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"127.0.0.1:81\", "
        "\"localhost:81\"]}]}",
        "clusters[0].backends[1]: duplicate backend");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"backends\": [\"127.0.0.1:8000\"]}]}",
        "clusters[0].backends[0]: \"127.0.0.1:8000\" is the proxy's own listen address");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 ", \"strip_prefix\": \"yes\"}]}",
        "clusters[0].strip_prefix: expected true or false");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 ", \"strategy\": \"best\"}]}",
        "clusters[0].strategy: expected fastest, peak-ewma");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 ", \"retries\": 6}]}",
        "clusters[0].retries: expected an integer 0-5");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 ", \"retries\": -1}]}",
        "clusters[0].retries");
    /* health checks */
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"interval_ms\": \"1000\"}}]}",
        "clusters[0].health_check.interval_ms: expected a positive integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"timeout_ms\": 0}}]}",
        "clusters[0].health_check.timeout_ms: expected a positive integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"interval_ms\": 100, \"timeout_ms\": 200}}]}",
        "clusters[0].health_check.timeout_ms: 200 must not exceed interval_ms");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"healthy_threshold\": 0}}]}",
        "clusters[0].health_check.healthy_threshold: expected a positive integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"unhealthy_threshold\": 0}}]}",
        "clusters[0].health_check.unhealthy_threshold");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1
        ", \"health_check\": {\"path\": \"health\"}}]}",
        "clusters[0].health_check.path: expected a path starting with \"/\"");
    const char *bad_expect[] = {"\"200-\"", "\"399-200\"",    "\"099\"", "\"600\"",
                                "200",      "\"2000\"",       "\"abc\"", "\"200-600\"",
                                "\"\"",     "\"200-300-400\""};
    for (size_t i = 0; i < sizeof(bad_expect) / sizeof(bad_expect[0]); i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"clusters\": [{\"path_prefix\": \"/a\", " B1
                 ", \"health_check\": {\"expect_status\": %s}}]}",
                 bad_expect[i]);
        BAD(json, "clusters[0].health_check.expect_status: expected \"NNN\" or \"NNN-NNN\"");
    }
    /* discovery */
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"tags\": {\"a\": "
        "\"b\"}}}}]}",
        "clusters[0].discovery.ec2.region: required");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": 1, "
        "\"tags\": {\"a\": \"b\"}}}}]}",
        "clusters[0].discovery.ec2.region: expected a string");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\"}}}]}",
        "clusters[0].discovery.ec2.tags: required");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {}}}}]}",
        "clusters[0].discovery.ec2.tags: expected an object of 1-8 string tags");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {\"a\":\"1\",\"b\":\"1\",\"c\":\"1\",\"d\":\"1\",\"e\":\"1\","
        "\"f\":\"1\",\"g\":\"1\",\"h\":\"1\",\"i\":\"1\"}}}}]}",
        "clusters[0].discovery.ec2.tags: expected an object of 1-8 string tags");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {\"Cluster\": 1}}}}]}",
        "clusters[0].discovery.ec2.tags.Cluster: expected a string");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {\"a\": \"b\"}, \"port\": 70000}}}]}",
        "clusters[0].discovery.ec2.port: expected an integer 1-65535");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {\"ec2\": {\"region\": "
        "\"us-east-1\", \"tags\": {\"a\": \"b\"}, \"interval_s\": 0}}}]}",
        "clusters[0].discovery.ec2.interval_s: expected a positive integer");
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", \"discovery\": {}}]}",
        "clusters[0].backends: at least one backend");
    /* the second cluster's error names the second cluster */
    BAD("{\"clusters\": [{\"path_prefix\": \"/a\", " B1 "}, {\"path_prefix\": \"/b\", " B1
        ", \"retries\": 9}]}",
        "clusters[1].retries");
}

static void test_no_partial_apply(void) {
    struct proxy_config c;
    char err[256];
    config_defaults(&c);
    CHECK(config_parse_json(&c, design_example, err, sizeof(err)) == 0);
    /* valid fields before the bad one must not show */
    CHECK(config_parse_json(&c,
                            "{\"threads\": 9, \"default_response\": {\"body\": \"x\"},"
                            " \"clusters\": [{\"path_prefix\": \"/z\", " B1 "}],"
                            " \"timeouts_ms\": {\"connect\": 0}}",
                            err, sizeof(err)) == -1);
    CHECK(strstr(err, "timeouts_ms.connect") != NULL);
    CHECK(c.threads == 2);
    CHECK_STR(c.default_response.body, "no route\n");
    CHECK(c.nclusters == 1 && !strcmp(c.clusters[0].name, "cluster1"));
    CHECK(c.timeouts_ms.connect == 1000);
    /* a later valid text replaces the clusters and keeps what it does not name */
    CHECK(config_parse_json(&c,
                            "{\"clusters\": [{\"path_prefix\": \"/z\", " B1 "},"
                            " {\"path_prefix\": \"/api/\", " B1 "}]}",
                            err, sizeof(err)) == 0);
    CHECK(c.threads == 2);
    CHECK(c.nclusters == 2);
    if (c.nclusters == 2) {
        CHECK_STR(c.clusters[0].name, "z");
        CHECK_STR(c.clusters[1].name, "api"); /* trailing slash dropped from the name */
        CHECK_STR(c.clusters[1].path_prefix, "/api/");
    }
    /* integral floats are integers; a config with nothing is fine */
    CHECK(config_parse_json(&c, "{\"threads\": 3.0}", err, sizeof(err)) == 0 && c.threads == 3);
    CHECK(config_parse_json(&c, "{}", err, sizeof(err)) == 0 && c.threads == 3);
    CHECK(config_parse_json(&c, "{\"clusters\": []}", err, sizeof(err)) == 0 && c.nclusters == 0);
    CHECK(config_parse_json(&c, "{\"listen\": \"[::1]:8080\"}", err, sizeof(err)) == 0 &&
          c.listen.ss.ss_family == AF_INET6 && !strcmp(c.listen_text, "[::1]:8080"));
    CHECK(config_parse_json(&c, "{\"listen\": \"9090\"}", err, sizeof(err)) == 0 &&
          !strcmp(c.listen_text, "0.0.0.0:9090"));
    config_free(&c);
}

/* ---- config_from_args ---------------------------------------------------- */

static char out_text[8192], err_text[8192];

static void slurp(FILE *f, char *buf, size_t len) {
    fflush(f);
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* Runs config_from_args with stdout and stderr captured. */
static int run_args(struct proxy_config *c, const char *const *args) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"proxy";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    FILE *o = tmpfile(), *e = tmpfile();
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(fileno(o), 1);
    dup2(fileno(e), 2);
    int rc = config_from_args(c, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    slurp(o, out_text, sizeof(out_text));
    slurp(e, err_text, sizeof(err_text));
    return rc;
}

static int args_rc(const char *const *args) {
    struct proxy_config c;
    int rc = run_args(&c, args);
    config_free(&c);
    return rc;
}
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static char *write_temp(const char *text) {
    static char paths[8][64];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 64, "/tmp/lb_test_config_XXXXXX");
    int fd = mkstemp(p);
    if (fd < 0) return NULL;
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        close(fd);
        return NULL;
    }
    close(fd);
    return p;
}

static int one_line(const char *s) {
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '\n' && !memchr(s, '\n', n - 1);
}

static void test_args_basic(void) {
    struct proxy_config c;
    CHECK(run_args(&c, ARGS("--listen", "9000")) == 0);
    CHECK_STR(c.listen_text, "0.0.0.0:9000");
    CHECK(c.nclusters == 0);
    CHECK_STR(err_text, "");
    config_free(&c);

    CHECK(run_args(&c, (const char *const[]){NULL}) == 0);
    CHECK_STR(c.listen_text, "0.0.0.0:8000");
    config_free(&c);

    CHECK(run_args(&c, ARGS("--listen=127.0.0.1:9001", "--threads=3", "--engine", "epoll",
                            "--admin", "9002", "--access-log", "-", "--log-level=warn", "--check",
                            "--route", "/cluster1=127.0.0.1:9101,127.0.0.1:9102",
                            "--route=/cluster2=localhost:9201", "--strategy", "round-robin")) == 0);
    CHECK_STR(err_text, "");
    CHECK_STR(c.listen_text, "127.0.0.1:9001");
    CHECK(c.threads == 3);
    CHECK(c.engine == EV_ENGINE_EPOLL);
    CHECK(c.admin_set);
    CHECK_STR(c.admin_text, "127.0.0.1:9002");
    CHECK_STR(c.access_log, "-");
    CHECK(c.log_level == LOG_WARN);
    CHECK(c.check_only);
    CHECK(c.nclusters == 2);
    if (c.nclusters == 2) {
        CHECK_STR(c.clusters[0].name, "cluster1");
        CHECK_STR(c.clusters[0].path_prefix, "/cluster1");
        CHECK(c.clusters[0].prefix_len == 9);
        CHECK(c.clusters[0].nbackends == 2);
        CHECK_STR(c.clusters[0].backends[1].text, "127.0.0.1:9102");
        CHECK(c.clusters[0].strategy == STRATEGY_ROUND_ROBIN);
        CHECK_STR(c.clusters[0].health.path, "/health"); /* default health checks */
        CHECK(c.clusters[0].health.interval_ms == 1000 && c.clusters[0].retries == 1);
        CHECK_STR(c.clusters[1].name, "cluster2");
        CHECK(c.clusters[1].nbackends == 1);
        CHECK(c.clusters[1].strategy == STRATEGY_ROUND_ROBIN);
    }
    config_free(&c);

    CHECK(run_args(&c, ARGS("--route", "/=127.0.0.1:9101")) == 0);
    CHECK(c.nclusters == 1 && !strcmp(c.clusters[0].name, "root"));
    CHECK(c.nclusters == 1 && c.clusters[0].strategy == STRATEGY_PEAK_EWMA);
    config_free(&c);
}

static void test_args_errors(void) {
    CHECK(args_rc(ARGS("--threads", "x")) == 2);
    CHECK_STR(err_text, "proxy: --threads: expected an integer 1-1024, got \"x\"\n");
    CHECK(args_rc(ARGS("--threads=0")) == 2);
    CHECK(args_rc(ARGS("--threads", "1025")) == 2);
    CHECK(args_rc(ARGS("--threads", "4x")) == 2);
    CHECK(args_rc(ARGS("--foo")) == 2);
    CHECK_STR(err_text, "proxy: unknown option --foo (see --help)\n");
    CHECK(args_rc(ARGS("--foo=1")) == 2);
    CHECK_STR(err_text, "proxy: unknown option --foo (see --help)\n");
    CHECK(args_rc(ARGS("-l", "8000")) == 2);
    CHECK(strstr(err_text, "unknown option -l") != NULL);
    CHECK(args_rc(ARGS("8000")) == 2);
    CHECK(strstr(err_text, "unexpected argument \"8000\"") != NULL);
    CHECK(args_rc(ARGS("--listen")) == 2);
    CHECK(strstr(err_text, "--listen: missing value") != NULL && one_line(err_text));
    CHECK(args_rc(ARGS("--listen", "--threads", "2")) == 2);
    CHECK(strstr(err_text, "--listen: missing value") != NULL);
    CHECK(args_rc(ARGS("--listen", "nohost:80")) == 2);
    CHECK(strstr(err_text, "proxy: --listen: bad address \"nohost:80\"") != NULL);
    CHECK(args_rc(ARGS("--admin", "99999")) == 2);
    CHECK(strstr(err_text, "proxy: --admin: bad address") != NULL);
    CHECK(args_rc(ARGS("--engine", "kqueue")) == 2);
    CHECK(strstr(err_text, "proxy: --engine:") != NULL && one_line(err_text));
    CHECK(args_rc(ARGS("--strategy", "best")) == 2);
    CHECK(strstr(err_text, "proxy: --strategy:") != NULL);
    CHECK(args_rc(ARGS("--log-level", "loud")) == 2);
    CHECK(strstr(err_text, "proxy: --log-level:") != NULL);
    CHECK(args_rc(ARGS("--access-log=")) == 2);
    CHECK(args_rc(ARGS("--check=yes")) == 2);
    CHECK(strstr(err_text, "--check takes no value") != NULL);
    CHECK(args_rc(ARGS("--route", "/a")) == 2);
    CHECK(strstr(err_text, "proxy: --route: expected PREFIX=HOST:PORT") != NULL);
    CHECK(args_rc(ARGS("--route", "a=127.0.0.1:80")) == 2);
    CHECK(strstr(err_text, "must start with \"/\"") != NULL);
    CHECK(args_rc(ARGS("--route", "/a=127.0.0.1:80,10.0.0.1")) == 2);
    CHECK_STR(err_text, "proxy: --route /a: bad address \"10.0.0.1\": expected HOST:PORT\n");
    CHECK(args_rc(ARGS("--route", "/a=127.0.0.1:80,")) == 2);
    CHECK(args_rc(ARGS("--route", "/a=127.0.0.1:80,127.0.0.1:80")) == 2);
    CHECK(strstr(err_text, "duplicate backend") != NULL);
    CHECK(args_rc(ARGS("--route", "/a=127.0.0.1:80", "--route", "/a=127.0.0.1:81")) == 2);
    CHECK(strstr(err_text, "duplicate prefix \"/a\"") != NULL);
    CHECK(args_rc(ARGS("--route", "/a=127.0.0.1:8000")) == 2); /* itself: a loop */
    CHECK(strstr(err_text, "proxy's own listen address") != NULL && one_line(err_text));
    CHECK(args_rc(ARGS("--admin", "0.0.0.0:8000")) == 2);
    CHECK(strstr(err_text, "proxy: admin: ") != NULL);
    CHECK(args_rc(ARGS("--config", "/nonexistent/lb.json")) == 2);
    CHECK_STR(err_text, "proxy: config /nonexistent/lb.json: No such file or directory\n");
    CHECK(args_rc(ARGS("--config", "/tmp")) == 2);
    CHECK(strstr(err_text, "proxy: config /tmp: ") != NULL && one_line(err_text));
}

static void test_args_help_version(void) {
    CHECK(args_rc(ARGS("--help")) == 1);
    const char *flags[] = {"--listen",    "--route",    "--config",  "--threads",
                           "--engine",    "--strategy", "--admin",   "--access-log",
                           "--log-level", "--check",    "--version", "--help"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        CHECK(strstr(out_text, flags[i]) != NULL);
    CHECK_STR(err_text, "");
    CHECK(args_rc(ARGS("--listen", "9000", "--help")) == 1);
    CHECK(args_rc(ARGS("--version")) == 1);
    CHECK(!strncmp(out_text, "proxy ", 6) && one_line(out_text));
    CHECK(strstr(out_text, LB_VERSION) != NULL);
}

static void test_args_with_config(void) {
    const char *cfg_text =
        "{\"threads\": 2, \"listen\": \"8100\", \"admin\": \"9100\", \"log_level\": \"error\","
        " \"clusters\": ["
        "  {\"name\": \"one\", \"path_prefix\": \"/cluster1\", \"strategy\": \"least-outstanding\","
        "   \"backends\": [\"10.0.1.5:8000\", \"10.0.1.6:8000\"], \"retries\": 3,"
        "   \"health_check\": {\"path\": \"/hc\", \"interval_ms\": 2000}},"
        "  {\"path_prefix\": \"/cluster2\", \"backends\": [\"10.0.2.5:8000\"]}"
        " ]}";
    char *path = write_temp(cfg_text);
    CHECK(path != NULL);
    if (!path) return;
    struct proxy_config c;

    /* the config alone */
    CHECK(run_args(&c, ARGS("--config", path)) == 0);
    CHECK_STR(c.config_path, path);
    CHECK(c.threads == 2 && !strcmp(c.listen_text, "0.0.0.0:8100") && c.log_level == LOG_ERROR);
    CHECK(c.nclusters == 2);
    config_free(&c);

    /* flags override the file wherever --config appears */
    CHECK(run_args(&c, ARGS("--threads", "5", "--log-level=debug", "--config", path, "--listen",
                            "8200", "--strategy", "random", "--route", "/cluster1=127.0.0.1:7001",
                            "--route", "/new=127.0.0.1:7002")) == 0);
    CHECK_STR(err_text, "");
    CHECK(c.threads == 5);
    CHECK(c.log_level == LOG_DEBUG);
    CHECK_STR(c.listen_text, "0.0.0.0:8200");
    CHECK_STR(c.admin_text, "127.0.0.1:9100"); /* from the file, not overridden */
    CHECK(c.nclusters == 3);
    if (c.nclusters == 3) {
        const struct cluster_config *one = &c.clusters[0], *two = &c.clusters[1],
                                    *added = &c.clusters[2];
        /* --route replaced the backends and kept the rest */
        CHECK_STR(one->name, "one");
        CHECK(one->nbackends == 1);
        CHECK_STR(one->backends[0].text, "127.0.0.1:7001");
        CHECK(one->strategy == STRATEGY_LEAST_OUTSTANDING); /* set in the file: kept */
        CHECK(one->retries == 3);
        CHECK_STR(one->health.path, "/hc");
        CHECK(one->health.interval_ms == 2000);
        /* untouched cluster without a strategy in the file takes --strategy */
        CHECK_STR(two->name, "cluster2");
        CHECK(two->nbackends == 1 && !strcmp(two->backends[0].text, "10.0.2.5:8000"));
        CHECK(two->strategy == STRATEGY_RANDOM);
        /* a new prefix makes a new default cluster */
        CHECK_STR(added->name, "new");
        CHECK_STR(added->path_prefix, "/new");
        CHECK(added->strategy == STRATEGY_RANDOM);
        CHECK(added->retries == 1 && added->health.interval_ms == 1000);
    }
    config_free(&c);

    /* a --route whose generated name is taken by another prefix */
    CHECK(run_args(&c, ARGS("--config", path, "--route", "/one=127.0.0.1:7003")) == 2);
    CHECK(strstr(err_text, "cluster name \"one\"") != NULL && one_line(err_text));
    config_free(&c);

    /* a bad flag value after a good config is still refused */
    CHECK(args_rc(ARGS("--config", path, "--threads", "x")) == 2);

    /* errors inside the file name the file and the field */
    char *bad = write_temp("{\"clusters\": [{\"path_prefix\": \"/a\","
                           " \"backends\": [\"10.0.0.2:80\", \"10.0.0.1\"]}]}");
    CHECK(bad != NULL);
    if (bad) {
        char want[256];
        snprintf(want, sizeof(want),
                 "proxy: config %s: clusters[0].backends[1]: bad address \"10.0.0.1\": expected "
                 "HOST:PORT\n",
                 bad);
        CHECK(args_rc(ARGS("--config", bad)) == 2);
        CHECK_STR(err_text, want);
        unlink(bad);
    }
    char *badjson = write_temp("{\"threads\": 2,,}");
    if (badjson) {
        CHECK(args_rc(ARGS("--config", badjson)) == 2);
        CHECK(strstr(err_text, "invalid JSON") != NULL && one_line(err_text));
        unlink(badjson);
    }
    /* the file's admin on the public port is fine once --listen moves the listener */
    char *clash = write_temp("{\"admin\": \"0.0.0.0:8000\"}");
    if (clash) {
        CHECK(args_rc(ARGS("--config", clash)) == 2);
        CHECK(args_rc(ARGS("--config", clash, "--listen", "8001")) == 0);
        unlink(clash);
    }
    unlink(path);
}

int main(void) {
    test_faults_fields();
    test_defaults();
    test_strategy_names();
    test_design_example();
    test_non_default();
    test_errors();
    test_no_partial_apply();
    test_args_basic();
    test_args_errors();
    test_args_help_version();
    test_args_with_config();
    return test_summary();
}
