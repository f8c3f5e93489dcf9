/* Routing: longest path_prefix on a segment boundary. */
#include "route.h"

#include <stdlib.h>
#include <string.h>

#include "testing.h"

static struct proxy_config make(const char *const *prefixes) {
    struct proxy_config c;
    config_defaults(&c);
    size_t n = 0;
    while (prefixes[n])
        n++;
    c.clusters = calloc(n ? n : 1, sizeof(*c.clusters));
    c.nclusters = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(c.clusters[i].path_prefix, sizeof(c.clusters[i].path_prefix), "%s", prefixes[i]);
        c.clusters[i].prefix_len = strlen(prefixes[i]);
        snprintf(c.clusters[i].name, sizeof(c.clusters[i].name), "c%zu", i);
    }
    return c;
}

static int m(const struct proxy_config *c, const char *target) {
    return route_match(c, target, strlen(target));
}

static int pm(const char *prefix, const char *path) {
    return route_prefix_matches(prefix, strlen(prefix), path, strlen(path));
}

static void test_prefix_matches(void) {
    CHECK(pm("/cluster1", "/cluster1"));
    CHECK(pm("/cluster1", "/cluster1/"));
    CHECK(pm("/cluster1", "/cluster1/x"));
    CHECK(pm("/cluster1", "/cluster1?q"));
    CHECK(pm("/cluster1", "/cluster1#f"));
    CHECK(!pm("/cluster1", "/cluster10"));
    CHECK(!pm("/cluster1", "/cluster1x/y"));
    CHECK(!pm("/cluster1", "/cluster"));
    CHECK(!pm("/cluster1", "/Cluster1")); /* paths are case-sensitive */
    CHECK(!pm("/cluster1", "/other/cluster1"));
    CHECK(pm("/api/", "/api/x"));
    CHECK(pm("/api/", "/api/"));
    CHECK(!pm("/api/", "/api"));
    CHECK(!pm("/api/", "/apix"));
    CHECK(pm("/", "/"));
    CHECK(pm("/", "/anything/at/all?x"));
    CHECK(!pm("", "/x"));
    /* the lengths are what count, not NUL termination */
    CHECK(route_prefix_matches("/cluster1XYZ", 9, "/cluster1/x", 11));
    CHECK(!route_prefix_matches("/cluster1", 9, "/cluster1/x", 8));
    CHECK(route_prefix_matches("/cluster1", 9, "/cluster10", 9));
}

static void test_match(void) {
    const char *p[] = {"/cluster1", "/cluster2", "/api", "/api/v2", "/static/", NULL};
    struct proxy_config c = make(p);
    CHECK(m(&c, "/cluster1") == 0);
    CHECK(m(&c, "/cluster1/x") == 0);
    CHECK(m(&c, "/cluster1?q") == 0);
    CHECK(m(&c, "/cluster1?q=/cluster2") == 0);
    CHECK(m(&c, "/cluster2/a/b") == 1);
    CHECK(m(&c, "/cluster10") == -1);
    CHECK(m(&c, "/cluster") == -1);
    CHECK(m(&c, "/") == -1);
    CHECK(m(&c, "/other") == -1);
    /* longest prefix wins, whatever the order */
    CHECK(m(&c, "/api") == 2);
    CHECK(m(&c, "/api/v1/x") == 2);
    CHECK(m(&c, "/api/v2") == 3);
    CHECK(m(&c, "/api/v2/users?id=1") == 3);
    CHECK(m(&c, "/api/v20") == 2);
    CHECK(m(&c, "/static/a.css") == 4);
    CHECK(m(&c, "/static") == -1);
    /* absolute-form */
    CHECK(m(&c, "http://example.com/cluster2/x") == 1);
    CHECK(m(&c, "HTTP://example.com:8080/api/v2?x") == 3);
    CHECK(m(&c, "https://example.com/cluster1") == 0);
    CHECK(m(&c, "http://example.com") == -1);
    CHECK(m(&c, "http://example.com/cluster10") == -1);
    CHECK(m(&c, "http:///cluster1") == -1); /* no authority */
    /* neither form */
    CHECK(m(&c, "*") == -1);
    CHECK(m(&c, "") == -1);
    CHECK(m(&c, "example.com:443") == -1);
    CHECK(m(&c, "cluster1") == -1);
    CHECK(m(&c, "ftp://example.com/cluster1") == -1);
    /* only len bytes are looked at */
    CHECK(route_match(&c, "/cluster1/x", 5) == -1);
    CHECK(route_match(&c, "/api/v2", 4) == 2);
    config_free(&c);
}

static void test_catch_all(void) {
    const char *p[] = {"/", "/cluster1", NULL};
    struct proxy_config c = make(p);
    CHECK(m(&c, "/") == 0);
    CHECK(m(&c, "/cluster10") == 0);
    CHECK(m(&c, "/anything?x") == 0);
    CHECK(m(&c, "/cluster1/x") == 1);
    CHECK(m(&c, "http://h") == 0); /* absolute-form without a path is "/" */
    CHECK(m(&c, "http://h?q") == 0);
    CHECK(m(&c, "*") == -1);
    config_free(&c);
}

static void test_no_clusters(void) {
    const char *p[] = {NULL};
    struct proxy_config c = make(p);
    CHECK(m(&c, "/") == -1);
    CHECK(m(&c, "/cluster1") == -1);
    config_free(&c);
}

/* The clusters of a parsed configuration route as configured. */
static void test_from_config(void) {
    struct proxy_config c;
    char err[256];
    config_defaults(&c);
    CHECK(config_parse_json(&c,
                            "{\"clusters\": ["
                            " {\"path_prefix\": \"/cluster1\", \"backends\": [\"10.0.1.5:8000\"]},"
                            " {\"path_prefix\": \"/cluster2\", \"backends\": [\"10.0.2.5:8000\"]}"
                            "]}",
                            err, sizeof(err)) == 0);
    CHECK(m(&c, "/cluster1") == 0);
    CHECK(m(&c, "/cluster2/") == 1);
    CHECK(m(&c, "/cluster3") == -1);
    config_free(&c);
}

int main(void) {
    test_prefix_matches();
    test_match();
    test_catch_all();
    test_no_clusters();
    test_from_config();
    return test_summary();
}
