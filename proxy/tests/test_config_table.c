/* The configuration's table (config_table.h) drives every path: each row's
 * range error names it, the defaults are the table's, the reload diff follows
 * its reload column, --check prints every row; and the one integer parser. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_table.h"
#include "flags.h"
#include "testing.h"

#define B1 "\"path_prefix\": \"/a\", \"backends\": [\"10.0.0.1:80\"]"

/* {"a": {"b": VALUE}} for the key "a.b", after head (the members before it). */
static void nest(char *out, size_t n, const char *key, const char *value) {
    size_t len = 0, depth = 0;
    for (const char *k = key;; depth++) {
        size_t seg = strcspn(k, ".");
        len += (size_t)snprintf(out + len, n - len, "{\"%.*s\": ", (int)seg, k);
        if (!k[seg]) break;
        k += seg + 1;
    }
    len += (size_t)snprintf(out + len, n - len, "%s", value);
    for (size_t i = 0; i <= depth; i++)
        len += (size_t)snprintf(out + len, n - len, "}");
}

/* A value of the row's JSON type that its range or rules refuse. */
static int bad_value(const struct field *f, char *out, size_t n) {
    switch (f->type) {
    case FT_INT:
        if (f->hi < INT_MAX) return snprintf(out, n, "%lld", (long long)f->hi + 1), 1;
        return snprintf(out, n, "%lld", (long long)f->lo - 1), 1;
    case FT_BOOL: return snprintf(out, n, "5"), 1;
    case FT_CHOICE:
    case FT_STATUS: return snprintf(out, n, "\"bogus\""), 1;
    case FT_ADDR: return snprintf(out, n, "\"nohost:80\""), 1;
    case FT_SECTION: return snprintf(out, n, "5"), 1;
    case FT_STR: {
        size_t len = (size_t)snprintf(out, n, "\"");
        for (size_t i = 0; i < f->size && len + 2 < n; i++)
            out[len++] = 'x';
        snprintf(out + len, n - len, "\"");
        return 1;
    }
    default: return 0; /* custom rows: tested in test_config.c */
    }
}

static void expect_refused(const char *json, const char *path) {
    struct proxy_config c;
    char err[512] = "", want[160];
    config_defaults(&c);
    int rc = config_parse_json(&c, json, err, sizeof(err));
    snprintf(want, sizeof(want), "%s: ", path);
    if (rc != -1 || strncmp(err, want, strlen(want))) {
        fprintf(stderr, "%s: rc %d, error \"%s\"\n", json, rc, err);
        CHECK(0);
    } else {
        CHECK(1);
    }
    config_free(&c);
}

static void test_each_row_names_itself(void) {
    char value[1100], inner[1300], json[1600], path[160];
    for (size_t i = 0; i < config_table.n; i++) {
        const struct field *f = &config_table.f[i];
        if (!bad_value(f, value, sizeof(value))) continue;
        nest(json, sizeof(json), f->key, value);
        expect_refused(json, f->key);
    }
    for (size_t i = 0; i < cluster_table.n; i++) {
        const struct field *f = &cluster_table.f[i];
        if (!bad_value(f, value, sizeof(value)) || !strcmp(f->key, "path_prefix")) continue;
        nest(inner, sizeof(inner), f->key, value);
        inner[strlen(inner) - 1] = 0; /* "{KEY: VALUE" + the rest of the cluster */
        snprintf(json, sizeof(json), "{\"clusters\": [%s, " B1 "}]}", inner);
        snprintf(path, sizeof(path), "clusters[0].%s", f->key);
        expect_refused(json, path);
    }
}

static int load_rc(const char *flag, const char *value, char *err, size_t errlen) {
    char *argv[] = {(char *)"proxy", (char *)flag, (char *)value, NULL};
    struct proxy_config c;
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    int rc = config_load(&c, 3, argv, m);
    fclose(m);
    snprintf(err, errlen, "%s", text ? text : "");
    free(text);
    config_free(&c);
    return rc;
}

static void test_each_flag_names_itself(void) {
    int flags = 0;
    for (size_t i = 0; i < config_table.n; i++) {
        const struct field *f = &config_table.f[i];
        char err[512], want[80];
        if (!f->flag) continue;
        flags++;
        CHECK(load_rc(f->flag, "\x01", err, sizeof(err)) == 2);
        snprintf(want, sizeof(want), "proxy: %s: ", f->flag);
        if (strncmp(err, want, strlen(want))) fprintf(stderr, "%s: \"%s\"\n", f->flag, err);
        CHECK(!strncmp(err, want, strlen(want)));
        CHECK(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
    }
    CHECK(flags == 7);
}

/* config_defaults and cluster_defaults hold what the table's column says. */
static void test_defaults_are_the_tables(void) {
    struct proxy_config c, row;
    struct cluster_config k, krow;
    struct errbuf e = {NULL, 0};
    config_defaults(&c);
    for (size_t i = 0; i < config_table.n; i++) {
        const struct field *f = &config_table.f[i];
        if (!f->def) continue;
        memset(&row, 0, sizeof(row));
        CHECK(field_set_text(f, &row, f->def, f->key, &e) == 0);
        if (!field_equal(f, &c, &row)) fprintf(stderr, "default of %s differs\n", f->key);
        CHECK(field_equal(f, &c, &row));
        config_free(&row);
    }
    cluster_defaults(&k);
    for (size_t i = 0; i < cluster_table.n; i++) {
        const struct field *f = &cluster_table.f[i];
        if (!f->def) continue;
        memset(&krow, 0, sizeof(krow));
        CHECK(field_set_text(f, &krow, f->def, f->key, &e) == 0);
        CHECK(field_equal(f, &k, &krow));
    }
    /* a few, spelled out, so that a wrong column fails here too */
    CHECK(k.outlier.enabled && !k.sticky.enabled && !k.strategy_set && !k.discovery.enabled);
    CHECK(k.health.expect_lo == 200 && k.health.expect_hi == 399 && k.dns_refresh_s == 30);
    CHECK(c.desync_mode == DESYNC_DEFENSIVE && c.limits.min_body_rate_bps == 1024);
    CHECK(!c.admin_set && !c.cloudwatch.enabled && !strncmp(c.cloudwatch.load_balancer, "app/", 4));
    config_free(&c);
}

static size_t diff(const char *json_a, const char *json_b, const char **names) {
    struct proxy_config a, b;
    char err[256];
    config_defaults(&a);
    config_defaults(&b);
    CHECK(config_parse_json(&a, json_a, err, sizeof(err)) == 0);
    CHECK(config_parse_json(&b, json_b, err, sizeof(err)) == 0);
    size_t n = config_restart_diff(&a, &b, names, 8);
    config_free(&a);
    config_free(&b);
    return n;
}

static void test_reload_diff(void) {
    const char *names[8];
    const char *one = "{\"threads\": 2, \"clusters\": [{" B1 "}]}";
    CHECK(diff(one, one, names) == 0);
    /* restart-only rows are named; a changed cluster (F_RELOAD) is not */
    CHECK(diff(one,
               "{\"threads\": 3, \"clusters\": [{" B1 ", \"retries\": 3},"
               " {\"path_prefix\": \"/b\", \"backends\": [\"10.0.0.2:80\"]}]}",
               names) == 1);
    CHECK_STR(names[0], "threads");
    CHECK(diff(one, "{\"threads\": 2}", names) == 0);
    /* two rows of one section: the section once */
    CHECK(diff("{}", "{\"timeouts_ms\": {\"idle\": 5, \"connect\": 6}, \"admin\": \"9001\"}",
               names) == 2);
    CHECK_STR(names[0], "admin");
    CHECK_STR(names[1], "timeouts_ms");
    CHECK(diff("{}", "{\"default_response\": {\"body\": \"other\"}}", names) == 1);
    CHECK_STR(names[0], "default_response");
    CHECK(diff("{}", "{\"cloudwatch\": {}}", names) == 1);
    CHECK_STR(names[0], "cloudwatch");
    CHECK(diff("{}", "{\"listen\": \"8001\", \"log_level\": \"debug\"}", names) == 2);
    CHECK_STR(names[0], "listen");
    CHECK_STR(names[1], "log_level");
}

/* The line of text that starts with head ("limits "), or NULL. */
static const char *line_of(const char *text, const char *head, char *buf, size_t n) {
    for (const char *s = text; s && *s; s = strchr(s, '\n'), s = s ? s + 1 : NULL)
        if (!strncmp(s, head, strlen(head))) {
            snprintf(buf, n, "%.*s", (int)strcspn(s, "\n"), s);
            return buf;
        }
    return NULL;
}

static void check_printed(const struct table *t, const char *text, const char *indent) {
    char head[96], line[512], leaf[96];
    for (size_t i = 0; i < t->n; i++) {
        const struct field *f = &t->f[i];
        const char *dot = strrchr(f->key, '.');
        if (f->type == FT_CUSTOM || f->type == FT_SECTION) continue; /* with their rows */
        if (!dot) {
            snprintf(head, sizeof(head), "%s%s ", indent, f->key);
            CHECK(line_of(text, head, line, sizeof(line)) != NULL);
            continue;
        }
        snprintf(head, sizeof(head), "%s%.*s ", indent, (int)(dot - f->key), f->key);
        snprintf(leaf, sizeof(leaf), " %s=", dot + 1);
        int found = line_of(text, head, line, sizeof(line)) && strstr(line, leaf);
        if (!found && !strstr(head, "default_response")) fprintf(stderr, "no %s%s\n", head, leaf);
        CHECK(found || strstr(head, "default_response")); /* printed as values alone */
    }
}

static void test_check_prints_every_row(void) {
    struct proxy_config c;
    char err[256], *text = NULL;
    size_t len = 0;
    config_defaults(&c);
    CHECK(config_parse_json(&c,
                            "{\"admin\": \"9001\", \"cloudwatch\": {}, \"clusters\": [{" B1
                            ", \"stickiness\": {\"secret\": \"0123456789abcdef\"},"
                            " \"weights\": {\"10.0.0.1:80\": 2},"
                            " \"discovery\": {\"ec2\": {\"region\": \"us-east-1\","
                            " \"tags\": {\"Cluster\": \"a\"}}}}]}",
                            err, sizeof(err)) == 0);
    FILE *m = open_memstream(&text, &len);
    config_print(&c, m);
    fclose(m);
    check_printed(&config_table, text, "");
    check_printed(&cluster_table, text, "  ");
    CHECK(strstr(text, "default_response 404 text/plain (9 bytes)\n") != NULL);
    CHECK(strstr(text, "  backend 10.0.0.1:80\n") != NULL);
    CHECK(strstr(text, "  weights 10.0.0.1:80=2\n") != NULL);
    CHECK(strstr(text, " tags=Cluster=a") != NULL);
    CHECK(strstr(text, "secret=(configured)") != NULL && !strstr(text, "0123456789abcdef"));
    free(text);
    config_free(&c);
}

/* config_read: config_load's message, in a buffer and without "proxy: ". */
static void test_config_read(void) {
    char *bad[] = {(char *)"proxy", (char *)"--threads", (char *)"x", NULL};
    char *good[] = {(char *)"proxy", (char *)"--threads", (char *)"3", NULL};
    char err[256];
    struct proxy_config c;
    CHECK(config_read(&c, 3, bad, err, sizeof(err)) == 2);
    CHECK_STR(err, "--threads: expected an integer 1-1024, got \"x\"");
    config_free(&c);
    CHECK(config_read(&c, 3, good, err, sizeof(err)) == 0 && c.threads == 3);
    CHECK_STR(err, "");
    config_free(&c);
}

/* The file reader: a NUL byte and an empty file are refused, naming the file. */
static void test_config_file(void) {
    char path[] = "/tmp/lb-config-XXXXXX", err[512], want[600];
    int fd = mkstemp(path);
    char *argv[] = {(char *)"proxy", (char *)"--config", path, NULL};
    struct proxy_config c;
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, "{}\0{}", 5) == 5);
    CHECK(config_read(&c, 3, argv, err, sizeof(err)) == 2);
    snprintf(want, sizeof(want), "config %s: contains a NUL byte", path);
    CHECK_STR(err, want);
    config_free(&c);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(config_read(&c, 3, argv, err, sizeof(err)) == 2);
    CHECK(strstr(err, "invalid JSON at line 1") != NULL);
    config_free(&c);
    CHECK(pwrite(fd, "{\"threads\": 4}", 14, 0) == 14);
    CHECK(config_read(&c, 3, argv, err, sizeof(err)) == 0 && c.threads == 4);
    CHECK_STR(c.config_path, path);
    config_free(&c);
    close(fd);
    unlink(path);
}

/* flags_int: the one integer parser, for the proxy's flags and flags_uint. */
static void test_flags_int(void) {
    long long v = 0;
    CHECK(flags_int("42", 0, 100, &v) == 0 && v == 42);
    CHECK(flags_int("0", 0, 100, &v) == 0 && v == 0);
    CHECK(flags_int("-3", -5, 5, &v) == 0 && v == -3);
    const char *bad[] = {"", "+1", " 1", "1 ", "1x", "-1", "101", "99999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(flags_int(bad[i], 0, 100, &v) == -1);
}

int main(void) {
    test_each_row_names_itself();
    test_each_flag_names_itself();
    test_defaults_are_the_tables();
    test_reload_diff();
    test_check_prints_every_row();
    test_config_read();
    test_config_file();
    test_flags_int();
    return test_summary();
}
