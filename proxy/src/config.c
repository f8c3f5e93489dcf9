/* The proxy's configuration: its schema (one row per setting, below), the
 * defaults, the checks on values and the diff a reload logs. config_json.c
 * reads the --config file, config_flags.c the command line, config_print.c
 * writes --check's summary; all of them walk these tables. */
#define _GNU_SOURCE
#include "config_table.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ev.h"
#include "flags.h"
#include "log.h"

int errf(struct errbuf *e, const char *fmt, ...) {
    if (e->s && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->s, e->len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- names of choices --------------------------------------------------- */

static const char *const desync_modes[] = {"defensive", "strictest", "monitor"};
static const char *const log_levels[] = {"error", "warn", "info", "debug"};

const char *desync_mode_name(int mode) {
    return mode >= 0 && mode < 3 ? desync_modes[mode] : "?";
}

int desync_mode_parse(const char *s) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, desync_modes[i])) return i;
    return -1;
}

static const char *level_name(int level) {
    return level >= 0 && level < 4 ? log_levels[level] : "unknown";
}

static const char *engine_name(int e) {
    return ev_engine_name((enum ev_engine)e);
}

static const char *strategy_text(int s) {
    return strategy_name((enum strategy)s);
}

static const struct choices engines = {ev_engine_parse, engine_name, "auto, uring or epoll"};
static const struct choices levels = {log_level_parse, level_name, "error, warn, info or debug"};
static const struct choices desyncs = {desync_mode_parse, desync_mode_name,
                                       "defensive, strictest or monitor"};
static const struct choices strategies = {strategy_parse, strategy_text, STRATEGY_NAMES};

/* ---- what a string value may hold ---------------------------------------- */

static int has_ctl(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f) return 1;
    return 0;
}

static int name_char_ok(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '/';
}

const char *prefix_problem(const char *p) {
    if (p[0] != '/') return "must start with \"/\"";
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f || *s == '?' || *s == '#')
            return "must not contain spaces, control characters, \"?\" or \"#\"";
    return NULL;
}

const char *name_problem(const char *name) {
    if (!name[0]) return "must not be empty";
    for (const char *s = name; *s; s++)
        if (!name_char_ok(*s))
            return "may hold only letters, digits, \"-\", \"_\", \".\" and \"/\"";
    if (!strcmp(name, "none")) return "\"none\" is reserved (it labels unrouted requests)";
    return NULL;
}

static const char *no_ctl(const char *s) {
    return has_ctl(s) ? "must not contain control characters" : NULL;
}

static const char *health_path(const char *s) {
    int ok = s[0] == '/';
    for (; *s; s++)
        ok &= (unsigned char)*s > 0x20 && (unsigned char)*s != 0x7f;
    return ok ? NULL : "expected a path starting with \"/\" (no spaces)";
}

static const char *media_type(const char *s) {
    return s[0] && !has_ctl(s) ? NULL : "expected a media type such as \"text/plain\"";
}

static const char *cw_namespace(const char *s) {
    if (s[0] && !has_ctl(s) && strncmp(s, "AWS/", 4)) return NULL;
    return "expected a non-empty name not starting with \"AWS/\"";
}

static const char *region(const char *r) {
    const char *s = r;
    while ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-')
        s++;
    return r[0] && !*s ? NULL : "expected a region name such as \"us-east-1\"";
}

static const char *lb_name(const char *s) {
    return s[0] && !has_ctl(s) ? NULL : "expected a non-empty name such as \"app/lb-demo\"";
}

static const char *cookie_name(const char *s) {
    int ok = s[0] != 0;
    for (const char *c = s; *c; c++)
        ok &= name_char_ok(*c);
    return ok ? NULL : "expected a cookie name of letters, digits, '-', '_' or '.'";
}

static const char *secret(const char *s) {
    return strlen(s) >= 16 ? NULL : "at least 16 characters";
}

/* ---- the tables ------------------------------------------------------------ */

static const struct custom clusters_ops = {json_read_clusters, NULL, print_clusters, NULL};
static const struct custom backends_ops = {json_read_backends, NULL, print_backends, NULL};
static const struct custom weights_ops = {json_read_weights, NULL, print_weights, NULL};
static const struct custom tags_ops = {json_read_tags, NULL, print_tags, NULL};

static int set_body(void *obj, const char *text) {
    struct proxy_config *cfg = obj;
    free(cfg->default_response.body);
    cfg->default_response.body = strdup(text);
    cfg->default_response.body_len = cfg->default_response.body ? strlen(text) : 0;
    return cfg->default_response.body ? 0 : -1;
}

static int body_equal(const void *a, const void *b) {
    const struct proxy_config *x = a, *y = b;
    return x->default_response.body_len == y->default_response.body_len &&
           !memcmp(x->default_response.body, y->default_response.body,
                   x->default_response.body_len);
}

static const struct custom body_ops = {json_read_body, set_body, print_body, body_equal};

/* Rows of the struct T: JSON key, member, then what the type needs. */
#define OFF(m) offsetof(T, m)
#define INT(k, m, a, b, d, fl)                                                                     \
    .key = k, .type = FT_INT, .off = OFF(m), .lo = a, .hi = b, .def = d, .flags = fl
#define STR(k, m, chk, d, fl)                                                                      \
    .key = k, .type = FT_STR, .off = OFF(m), .size = sizeof(((T *)0)->m), .check = chk, .def = d,  \
    .flags = fl
#define CHOICE(k, m, c, d, fl)                                                                     \
    .key = k, .type = FT_CHOICE, .off = OFF(m), .choices = &c, .def = d, .flags = fl
#define ADDR(k, m, host_)                                                                          \
    .key = k, .type = FT_ADDR, .off = OFF(m), .text = OPT(T, m##_text), .host = host_
#define SECTION(k, fl)        .key = k, .type = FT_SECTION, .unset = "off", .flags = fl
#define CUSTOM(k, ops, fl)    .key = k, .type = FT_CUSTOM, .custom = &ops, .flags = fl
#define FLAG(name, arg, text) .flag = name, .flag_arg = arg, .help = text

#define T struct proxy_config
static const struct field config_fields[] = {
    {ADDR("listen", listen, "0.0.0.0"), .def = "0.0.0.0:8000",
     FLAG("--listen", "[HOST:]PORT", "public listener (default 0.0.0.0:8000)")},
    {INT("threads", threads, 1, 1024, NULL, 0), /* default: online CPUs */
     FLAG("--threads", "N", "worker threads, 1-1024 (default: online CPUs)")},
    {CHOICE("engine", engine, engines, "auto", 0),
     FLAG("--engine", "auto|uring|epoll", "I/O engine (default auto: io_uring, else epoll)")},
    {ADDR("admin", admin, "127.0.0.1"), .given = OPT(T, admin_set), .unset = "off",
     FLAG("--admin", "[HOST:]PORT",
          "admin listener: /metrics, /status, /healthz (host default 127.0.0.1)")},
    {STR("access_log", access_log, no_ctl, NULL, 0), .unset = "off",
     FLAG("--access-log", "FILE|-", "JSON access log, one line per request (- stdout)")},
    {CHOICE("log_level", log_level, levels, "info", 0),
     FLAG("--log-level", "error|warn|info|debug", "log verbosity (default info)")},
    {CHOICE("desync_mitigation", desync_mode, desyncs, "defensive", 0),
     FLAG("--desync-mitigation", "defensive|strictest|monitor",
          "what non-compliant requests get (default defensive)")},
    {SECTION("limits", 0)},
    {INT("limits.max_header_bytes", limits.max_header_bytes, 1024, 1048576, "16384", 0)},
    {INT("limits.max_headers", limits.max_headers, 1, 10000, "100", 0)},
    {INT("limits.max_connections", limits.max_connections, 1, 10000000, "100000", 0)},
    {INT("limits.min_body_rate_bps", limits.min_body_rate_bps, 0, INT_MAX, "1024", 0)},
    {SECTION("timeouts_ms", 0)},
    {INT("timeouts_ms.connect", timeouts_ms.connect, 1, INT_MAX, "1000", 0)},
    {INT("timeouts_ms.client_header", timeouts_ms.client_header, 1, INT_MAX, "10000", 0)},
    {INT("timeouts_ms.idle", timeouts_ms.idle, 1, INT_MAX, "60000", 0)},
    {INT("timeouts_ms.backend_response", timeouts_ms.backend_response, 1, INT_MAX, "30000", 0)},
    {INT("timeouts_ms.drain", timeouts_ms.drain, 1, INT_MAX, "30000", 0)},
    {SECTION("default_response", F_VALUES)},
    {INT("default_response.status", default_response.status, 100, 599, "404", 0)},
    {STR("default_response.content_type", default_response.content_type, media_type, "text/plain",
         0)},
    {CUSTOM("default_response.body", body_ops, 0), .def = "no route\n"},
    {CUSTOM("clusters", clusters_ops, F_RELOAD)},
    {SECTION("cloudwatch", 0), .given = OPT(T, cloudwatch.enabled)},
    {STR("cloudwatch.namespace", cloudwatch.namespace_, cw_namespace, "CustomLB", 0)},
    {STR("cloudwatch.region", cloudwatch.region, region, NULL, 0), .unset = "(from environment)"},
    {INT("cloudwatch.interval_s", cloudwatch.interval_s, 1, INT_MAX, "60", 0)},
    {STR("cloudwatch.load_balancer", cloudwatch.load_balancer, lb_name, NULL, 0)}, /* computed */
};
#undef T

/* A reload swaps the clusters whole: every row of theirs is F_RELOAD. */
#define R F_RELOAD
#define T struct cluster_config
static const struct field cluster_fields[] = {
    {STR("name", name, name_problem, NULL, R)}, /* default: from the prefix */
    {STR("path_prefix", path_prefix, prefix_problem, NULL, R)},
    {.key = "strip_prefix", .type = FT_BOOL, .off = OFF(strip_prefix), .flags = R},
    {CHOICE("strategy", strategy, strategies, "peak-ewma", R), .given = OPT(T, strategy_set)},
    {CUSTOM("backends", backends_ops, R)},
    {SECTION("discovery", R)},
    {SECTION("discovery.ec2", R), .given = OPT(T, discovery.enabled)},
    {STR("discovery.ec2.region", discovery.region, region, NULL, R)},
    {CUSTOM("discovery.ec2.tags", tags_ops, R)},
    {INT("discovery.ec2.port", discovery.port, 1, 65535, "8000", R)},
    {INT("discovery.ec2.interval_s", discovery.interval_s, 1, INT_MAX, "15", R)},
    {SECTION("health_check", R)},
    {STR("health_check.path", health.path, health_path, "/health", R)},
    {INT("health_check.interval_ms", health.interval_ms, 1, INT_MAX, "1000", R)},
    {INT("health_check.timeout_ms", health.timeout_ms, 1, INT_MAX, "500", R)},
    {INT("health_check.healthy_threshold", health.healthy_threshold, 1, INT_MAX, "2", R)},
    {INT("health_check.unhealthy_threshold", health.unhealthy_threshold, 1, INT_MAX, "2", R)},
    {.key = "health_check.expect_status",
     .type = FT_STATUS,
     .off = OFF(health.expect_lo),
     .def = "200-399",
     .flags = R},
    {INT("retries", retries, 0, 5, "1", R)},
    {SECTION("outlier_detection", R | F_OFFABLE), .given = OPT(T, outlier.enabled), .def = "on"},
    {INT("outlier_detection.consecutive_5xx", outlier.consecutive_5xx, 0, 1000000, "5", R)},
    {INT("outlier_detection.consecutive_gateway_failure", outlier.consecutive_gateway_failure, 0,
         1000000, "3", R)},
    {INT("outlier_detection.interval_ms", outlier.interval_ms, 1, 3600000, "1000", R)},
    {INT("outlier_detection.base_ejection_ms", outlier.base_ejection_ms, 1, 3600000, "30000", R)},
    {INT("outlier_detection.max_ejection_percent", outlier.max_ejection_percent, 0, 100, "50", R)},
    {INT("slow_start_ms", slow_start_ms, 0, 3600000, NULL, R)},
    {SECTION("stickiness", R | F_OFFABLE), .given = OPT(T, sticky.enabled)},
    {STR("stickiness.cookie", sticky.cookie, cookie_name, "LBSTICKY", R)},
    {INT("stickiness.duration_s", sticky.duration_s, 1, 7 * 86400 * 52, "86400", R)},
    {STR("stickiness.secret", sticky.secret, secret, NULL, R | F_SECRET), .unset = "(generated)"},
    {CUSTOM("weights", weights_ops, R)},
    {INT("dns_refresh_s", dns_refresh_s, 1, 86400, "30", R)},
};
#undef T
#undef R

/* ---- rows: find, set, compare ---------------------------------------------- */

const struct field *table_find(const struct table *t, const char *key, size_t len) {
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->f[i].key) == len && !strncmp(t->f[i].key, key, len)) return &t->f[i];
    return NULL;
}

void *field_ptr(const struct field *f, const void *obj) {
    return (char *)obj + f->off;
}

int field_given(const struct field *f, const void *obj) {
    return !f->given || *(const int *)((const char *)obj + f->given - 1);
}

void field_mark_given(const struct field *f, void *obj, int on) {
    if (f->given) *(int *)((char *)obj + f->given - 1) = on;
}

char *field_text(const struct field *f, const void *obj) {
    return (char *)obj + f->text - 1;
}

/* "\"text\"", cut at 40 bytes, for "got ..." in messages. */
const char *describe_text(const char *s, char *buf, size_t n) {
    snprintf(buf, n, "\"%.40s%s\"", s, strlen(s) > 40 ? "..." : "");
    return buf;
}

int field_expected(const struct field *f, const char *name, const char *got, struct errbuf *e) {
    char want[64];
    switch (f->type) {
    case FT_INT:
        if (f->lo == 1 && f->hi == INT_MAX)
            snprintf(want, sizeof(want), "a positive integer");
        else
            snprintf(want, sizeof(want), "an integer %d-%d", f->lo, f->hi);
        break;
    case FT_BOOL: snprintf(want, sizeof(want), "true or false"); break;
    case FT_CHOICE: return errf(e, "%s: expected %s, got %s", name, f->choices->list, got);
    case FT_ADDR: snprintf(want, sizeof(want), "a \"[HOST:]PORT\" string"); break;
    case FT_STATUS: snprintf(want, sizeof(want), "\"NNN\" or \"NNN-NNN\" within 100-599"); break;
    case FT_SECTION: snprintf(want, sizeof(want), "an object"); break;
    default: snprintf(want, sizeof(want), "a string");
    }
    return errf(e, "%s: expected %s, got %s", name, want, got);
}

/* "NNN" or "NNN-NNN" */
static int parse_status_range(const char *s, int *lo, int *hi) {
    const char *digits = "0123456789";
    size_t n = strlen(s);
    if ((n != 3 && n != 7) || strspn(s, digits) != 3 ||
        (n == 7 && (s[3] != '-' || strspn(s + 4, digits) != 3)))
        return -1;
    *lo = atoi(s);
    *hi = n == 7 ? atoi(s + 4) : *lo;
    return *lo >= 100 && *hi <= 599 && *lo <= *hi ? 0 : -1;
}

static int set_string(const struct field *f, char *dst, const char *text, const char *name,
                      struct errbuf *e) {
    char g[64];
    const char *why;
    if (strlen(text) >= f->size)
        return errf(e, "%s: too long (at most %zu bytes)", name, f->size - 1);
    if (f->check && (why = f->check(text))) {
        if (f->flags & F_SECRET) return errf(e, "%s: %s", name, why);
        return errf(e, "%s: %s, got %s", name, why, describe_text(text, g, sizeof(g)));
    }
    memcpy(dst, text, strlen(text) + 1);
    return 0;
}

static int set_addr(const struct field *f, void *obj, const char *text, const char *name,
                    struct errbuf *e) {
    char g[64];
    const char *why;
    struct net_addr *a = field_ptr(f, obj);
    if (net_parse_addr(text, f->host, a, &why))
        return errf(e, "%s: bad address %s: %s", name, describe_text(text, g, sizeof(g)), why);
    net_addr_str(a, field_text(f, obj), sizeof(((struct proxy_config *)0)->listen_text));
    return 0;
}

int field_set_text(const struct field *f, void *obj, const char *text, const char *name,
                   struct errbuf *e) {
    int *i = field_ptr(f, obj);
    long long n;
    char g[64];
    switch (f->type) {
    case FT_STR: return set_string(f, field_ptr(f, obj), text, name, e);
    case FT_ADDR: return set_addr(f, obj, text, name, e);
    case FT_CUSTOM: return f->custom->set(obj, text) ? errf(e, "%s: out of memory", name) : 0;
    case FT_SECTION: field_mark_given(f, obj, 1); return 0;
    case FT_INT:
        if (flags_int(text, f->lo, f->hi, &n) == 0) return *i = (int)n, 0;
        break;
    case FT_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "false")) return *i = text[0] == 't', 0;
        break;
    case FT_CHOICE:
        if ((n = f->choices->parse(text)) >= 0) return *i = (int)n, 0;
        break;
    case FT_STATUS:
        if (parse_status_range(text, &i[0], &i[1]) == 0) return 0;
        break;
    }
    return field_expected(f, name, describe_text(text, g, sizeof(g)), e);
}

int field_set_number(const struct field *f, void *obj, double v, const char *name,
                     struct errbuf *e) {
    char g[64];
    if (f->type == FT_INT && v >= f->lo && v <= f->hi && (double)(long long)v == v) {
        *(int *)field_ptr(f, obj) = (int)v;
        return 0;
    }
    snprintf(g, sizeof(g), "%.15g", v);
    return field_expected(f, name, g, e);
}

int field_equal(const struct field *f, const void *a, const void *b) {
    const int *x = field_ptr(f, a), *y = field_ptr(f, b);
    switch (f->type) {
    case FT_STR: return !strcmp(field_ptr(f, a), field_ptr(f, b));
    case FT_ADDR:
        return !strcmp(field_text(f, a), field_text(f, b)) &&
               field_given(f, a) == field_given(f, b);
    case FT_CUSTOM: return !f->custom->equal || f->custom->equal(a, b);
    case FT_SECTION: return field_given(f, a) == field_given(f, b);
    case FT_STATUS: return x[0] == y[0] && x[1] == y[1];
    default: return *x == *y;
    }
}

void table_defaults(const struct table *t, void *obj) {
    struct errbuf none = {NULL, 0};
    for (size_t i = 0; i < t->n; i++)
        if (t->f[i].def) field_set_text(&t->f[i], obj, t->f[i].def, t->f[i].key, &none);
}

size_t config_restart_diff(const struct proxy_config *a, const struct proxy_config *b,
                           const char **names, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < config_table.n; i++) {
        const struct field *f = &config_table.f[i];
        if ((f->flags & F_RELOAD) || field_equal(f, a, b)) continue;
        const char *top = table_find(&config_table, f->key, strcspn(f->key, "."))->key;
        if (n && names[n - 1] == top) continue; /* a section's rows are adjacent */
        if (n < max) names[n++] = top;
    }
    return n;
}

/* ---- defaults and freeing ------------------------------------------------ */

/* app/<short hostname>, as an ALB's name reads (app/NAME/ID). */
static void default_load_balancer(char *out, size_t len) {
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0]) snprintf(host, sizeof(host), "proxy");
    host[strcspn(host, ".")] = '\0';
    snprintf(out, len, "app/%s", host);
}

void cluster_defaults(struct cluster_config *c) {
    memset(c, 0, sizeof(*c));
    table_defaults(&cluster_table, c);
}

void config_defaults(struct proxy_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    table_defaults(&config_table, cfg);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
    default_load_balancer(cfg->cloudwatch.load_balancer, sizeof(cfg->cloudwatch.load_balancer));
}

void free_clusters(struct cluster_config *c, size_t n) {
    if (!c) return;
    for (size_t i = 0; i < n; i++) {
        free(c[i].backends);
        free(c[i].weights);
    }
    free(c);
}

void config_free(struct proxy_config *cfg) {
    if (!cfg) return;
    free_clusters(cfg->clusters, cfg->nclusters);
    cfg->clusters = NULL;
    cfg->nclusters = 0;
    free(cfg->default_response.body);
    cfg->default_response.body = NULL;
    cfg->default_response.body_len = 0;
}

/* ---- clusters and backends ------------------------------------------------ */

/* "/cluster1" -> "cluster1", "/api/v2/" -> "api/v2", "/" -> "root". */
void derive_name(const char *prefix, char *out, size_t n) {
    const char *s = prefix;
    while (*s == '/')
        s++;
    size_t len = strlen(s);
    while (len && s[len - 1] == '/')
        len--;
    if (!len) {
        snprintf(out, n, "root");
        return;
    }
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < n; i++)
        out[j++] = name_char_ok(s[i]) ? s[i] : '_';
    out[j] = 0;
}

/* A DNS name as RFC 1123 allows it: labels of letters, digits and hyphens,
 * not starting or ending with a hyphen, at least one letter somewhere (so
 * that a mistyped address is not taken for a name). */
static int dns_name_ok(const char *h, size_t len) {
    int alpha = 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (ch == '.') {
            if (!label || h[i - 1] == '-') return 0;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-'))
            return 0;
        if (ch == '-' && !label) return 0;
        alpha |= (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        if (++label > 63) return 0;
    }
    return len && len < 254 && label && h[len - 1] != '-' && alpha;
}

/* "HOST:PORT" with a numeric host, or a DNS name resolved later (dns.c). */
int parse_backend(const char *s, struct backend_addr *b, const char **why) {
    if (strlen(s) >= sizeof(b->text)) {
        *why = "too long";
        return -1;
    }
    memcpy(b->text, s, strlen(s) + 1);
    if (net_parse_addr(s, NULL, &b->addr, why) == 0) return 0;
    const char *colon = strrchr(s, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || !dns_name_ok(s, (size_t)(colon - s)) || !colon[1] || *end || port < 1 ||
        port > 65535)
        return -1; /* net_parse_addr's reason stands */
    b->is_name = 1;
    return 0;
}

int same_backend(const struct backend_addr *a, const struct backend_addr *b) {
    if (a->is_name || b->is_name) return !strcasecmp(a->text, b->text);
    return net_addr_equal(&a->addr, &b->addr);
}

int cluster_weight(const struct cluster_config *c, const char *backend, const char *name) {
    for (size_t i = 0; i < c->nweights; i++)
        if (!strcmp(c->weights[i].backend, backend) ||
            (name && !strcmp(c->weights[i].backend, name)))
            return c->weights[i].weight;
    return 1;
}

/* What a cluster's fields say together: a prefix, a name (from the prefix
 * unless given), a health timeout within its interval, somewhere to find
 * backends. */
static int cluster_finish(void *obj, const unsigned char *given, const char *path,
                          struct errbuf *e) {
    struct cluster_config *c = obj;
    const char *why;
    if (!c->path_prefix[0]) return errf(e, "%s.path_prefix: required", path);
    c->prefix_len = strlen(c->path_prefix);
    if (!c->name[0]) {
        derive_name(c->path_prefix, c->name, sizeof(c->name));
        if ((why = name_problem(c->name)))
            return errf(e, "%s.name: %s (derived from path_prefix; set \"name\")", path, why);
    }
    if (c->health.timeout_ms > c->health.interval_ms) {
        const char *timeout = "health_check.timeout_ms";
        if (given[table_find(&cluster_table, timeout, strlen(timeout)) - cluster_table.f])
            return errf(e, "%s.health_check.timeout_ms: %d must not exceed interval_ms (%d)", path,
                        c->health.timeout_ms, c->health.interval_ms);
        c->health.timeout_ms = c->health.interval_ms; /* a short interval shortens the default */
    }
    if (c->discovery.enabled && !c->discovery.region[0])
        return errf(e, "%s.discovery.ec2.region: required", path);
    if (c->discovery.enabled && !c->discovery.ntags)
        return errf(e, "%s.discovery.ec2.tags: required (an object of 1-8 string tags)", path);
    if (!c->nbackends && !c->discovery.enabled)
        return errf(e, "%s.backends: at least one backend (or discovery.ec2) required", path);
    return 0;
}

_Static_assert(sizeof(config_fields) / sizeof(config_fields[0]) <= MAX_ROWS, "MAX_ROWS");
_Static_assert(sizeof(cluster_fields) / sizeof(cluster_fields[0]) <= MAX_ROWS, "MAX_ROWS");
const struct table config_table = {config_fields, sizeof(config_fields) / sizeof(config_fields[0]),
                                   NULL};
const struct table cluster_table = {
    cluster_fields, sizeof(cluster_fields) / sizeof(cluster_fields[0]), cluster_finish};

/* ---- checks across fields and flags --------------------------------------- */

static int addr_is_wildcard(const struct net_addr *a) {
    if (a->ss.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
}

static int addr_is_loopback(const struct net_addr *a) {
    if (a->ss.ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
}

/* On the configuration as it will run: the admin listener and the backends
 * are not the public listener. */
int check_final(const struct proxy_config *cfg, struct errbuf *e) {
    if (cfg->admin_set && net_addr_port(&cfg->admin) == net_addr_port(&cfg->listen) &&
        (net_addr_equal(&cfg->admin, &cfg->listen) || addr_is_wildcard(&cfg->admin) ||
         addr_is_wildcard(&cfg->listen)))
        return errf(e, "admin: %s would share the public listener's port (listen %s)",
                    cfg->admin_text, cfg->listen_text);
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *c = &cfg->clusters[i];
        for (size_t j = 0; j < c->nbackends; j++) {
            const struct net_addr *b = &c->backends[j].addr;
            if (net_addr_port(b) != net_addr_port(&cfg->listen)) continue;
            if (net_addr_equal(b, &cfg->listen) ||
                (addr_is_wildcard(&cfg->listen) && (addr_is_loopback(b) || addr_is_wildcard(b))))
                return errf(e,
                            "clusters[%zu].backends[%zu]: \"%s\" is the proxy's own listen "
                            "address %s (requests would loop)",
                            i, j, c->backends[j].text, cfg->listen_text);
        }
    }
    return 0;
}
