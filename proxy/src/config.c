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

#define P(m)            offsetof(struct proxy_config, m)
#define PS(m)           P(m), .size = sizeof(((struct proxy_config *)0)->m)
#define POSITIVE        .lo = 1, .hi = INT_MAX
#define SECTION(k)      .key = k, .type = FT_SECTION
#define INT(k, m)       .key = k, .type = FT_INT, .off = P(m)
#define STR(k, m)       .key = k, .type = FT_STR, .off = PS(m)
#define CHOICE(k, m, c) .key = k, .type = FT_CHOICE, .off = P(m), .choices = &c

static const struct field config_fields[] = {
    {.key = "listen",
     .type = FT_ADDR,
     .off = P(listen),
     .text = OPT(struct proxy_config, listen_text),
     .def = "0.0.0.0:8000",
     .host = "0.0.0.0",
     .flag = "--listen",
     .flag_arg = "[HOST:]PORT",
     .help = "public listener (default 0.0.0.0:8000)"},
    {INT("threads", threads), .lo = 1, .hi = 1024, .flag = "--threads", .flag_arg = "N",
     .help = "worker threads, 1-1024 (default: online CPUs)"},
    {CHOICE("engine", engine, engines), .def = "auto", .flag = "--engine",
     .flag_arg = "auto|uring|epoll", .help = "I/O engine (default auto: io_uring, else epoll)"},
    {.key = "admin",
     .type = FT_ADDR,
     .off = P(admin),
     .text = OPT(struct proxy_config, admin_text),
     .given = OPT(struct proxy_config, admin_set),
     .host = "127.0.0.1",
     .unset = "off",
     .flag = "--admin",
     .flag_arg = "[HOST:]PORT",
     .help = "admin listener: /metrics, /status, /healthz (host default 127.0.0.1)"},
    {STR("access_log", access_log), .check = no_ctl, .unset = "off", .flag = "--access-log",
     .flag_arg = "FILE|-", .help = "JSON access log, one line per request (- stdout)"},
    {CHOICE("log_level", log_level, levels), .def = "info", .flag = "--log-level",
     .flag_arg = "error|warn|info|debug", .help = "log verbosity (default info)"},
    {CHOICE("desync_mitigation", desync_mode, desyncs), .def = "defensive",
     .flag = "--desync-mitigation", .flag_arg = "defensive|strictest|monitor",
     .help = "what non-compliant requests get (default defensive)"},
    {SECTION("limits")},
    {INT("limits.max_header_bytes", limits.max_header_bytes), .lo = 1024, .hi = 1048576,
     .def = "16384"},
    {INT("limits.max_headers", limits.max_headers), .lo = 1, .hi = 10000, .def = "100"},
    {INT("limits.max_connections", limits.max_connections), .lo = 1, .hi = 10000000,
     .def = "100000"},
    {INT("limits.min_body_rate_bps", limits.min_body_rate_bps), .lo = 0, .hi = INT_MAX,
     .def = "1024"},
    {SECTION("timeouts_ms")},
    {INT("timeouts_ms.connect", timeouts_ms.connect), POSITIVE, .def = "1000"},
    {INT("timeouts_ms.client_header", timeouts_ms.client_header), POSITIVE, .def = "10000"},
    {INT("timeouts_ms.idle", timeouts_ms.idle), POSITIVE, .def = "60000"},
    {INT("timeouts_ms.backend_response", timeouts_ms.backend_response), POSITIVE, .def = "30000"},
    {INT("timeouts_ms.drain", timeouts_ms.drain), POSITIVE, .def = "30000"},
    {SECTION("default_response"), .flags = F_VALUES},
    {INT("default_response.status", default_response.status), .lo = 100, .hi = 599, .def = "404"},
    {STR("default_response.content_type", default_response.content_type), .check = media_type,
     .def = "text/plain"},
    {.key = "default_response.body", .type = FT_CUSTOM, .custom = &body_ops, .def = "no route\n"},
    {.key = "clusters", .type = FT_CUSTOM, .custom = &clusters_ops, .flags = F_RELOAD},
    {SECTION("cloudwatch"), .given = OPT(struct proxy_config, cloudwatch.enabled), .unset = "off"},
    {STR("cloudwatch.namespace", cloudwatch.namespace_), .check = cw_namespace, .def = "CustomLB"},
    {STR("cloudwatch.region", cloudwatch.region), .check = region, .unset = "(from environment)"},
    {INT("cloudwatch.interval_s", cloudwatch.interval_s), POSITIVE, .def = "60"},
    {STR("cloudwatch.load_balancer", cloudwatch.load_balancer), .check = lb_name},
};

#undef P
#undef PS
#define P(m)  offsetof(struct cluster_config, m)
#define PS(m) P(m), .size = sizeof(((struct cluster_config *)0)->m)
#define R     .flags = F_RELOAD

static const struct field cluster_fields[] = {
    {STR("name", name), .check = name_problem, R},
    {STR("path_prefix", path_prefix), .check = prefix_problem, R},
    {.key = "strip_prefix", .type = FT_BOOL, .off = P(strip_prefix), R},
    {CHOICE("strategy", strategy, strategies), .given = OPT(struct cluster_config, strategy_set),
     .def = "peak-ewma", R},
    {.key = "backends", .type = FT_CUSTOM, .custom = &backends_ops, R},
    {SECTION("discovery"), R},
    {SECTION("discovery.ec2"), .given = OPT(struct cluster_config, discovery.enabled),
     .unset = "off", R},
    {STR("discovery.ec2.region", discovery.region), .check = region, R},
    {.key = "discovery.ec2.tags", .type = FT_CUSTOM, .custom = &tags_ops, R},
    {INT("discovery.ec2.port", discovery.port), .lo = 1, .hi = 65535, .def = "8000", R},
    {INT("discovery.ec2.interval_s", discovery.interval_s), POSITIVE, .def = "15", R},
    {SECTION("health_check"), R},
    {STR("health_check.path", health.path), .check = health_path, .def = "/health", R},
    {INT("health_check.interval_ms", health.interval_ms), POSITIVE, .def = "1000", R},
    {INT("health_check.timeout_ms", health.timeout_ms), POSITIVE, .def = "500", R},
    {INT("health_check.healthy_threshold", health.healthy_threshold), POSITIVE, .def = "2", R},
    {INT("health_check.unhealthy_threshold", health.unhealthy_threshold), POSITIVE, .def = "2", R},
    {.key = "health_check.expect_status",
     .type = FT_STATUS,
     .off = P(health.expect_lo),
     .def = "200-399",
     R},
    {INT("retries", retries), .lo = 0, .hi = 5, .def = "1", R},
    {SECTION("outlier_detection"), .given = OPT(struct cluster_config, outlier.enabled),
     .def = "on", .unset = "off", .flags = F_RELOAD | F_OFFABLE},
    {INT("outlier_detection.consecutive_5xx", outlier.consecutive_5xx), .lo = 0, .hi = 1000000,
     .def = "5", R},
    {INT("outlier_detection.consecutive_gateway_failure", outlier.consecutive_gateway_failure),
     .lo = 0, .hi = 1000000, .def = "3", R},
    {INT("outlier_detection.interval_ms", outlier.interval_ms), .lo = 1, .hi = 3600000,
     .def = "1000", R},
    {INT("outlier_detection.base_ejection_ms", outlier.base_ejection_ms), .lo = 1, .hi = 3600000,
     .def = "30000", R},
    {INT("outlier_detection.max_ejection_percent", outlier.max_ejection_percent), .lo = 0,
     .hi = 100, .def = "50", R},
    {INT("slow_start_ms", slow_start_ms), .lo = 0, .hi = 3600000, R},
    {SECTION("stickiness"), .given = OPT(struct cluster_config, sticky.enabled), .unset = "off",
     .flags = F_RELOAD | F_OFFABLE},
    {STR("stickiness.cookie", sticky.cookie), .check = cookie_name, .def = "LBSTICKY", R},
    {INT("stickiness.duration_s", sticky.duration_s), .lo = 1, .hi = 7 * 86400 * 52, .def = "86400",
     R},
    {STR("stickiness.secret", sticky.secret), .check = secret, .unset = "(generated)",
     .flags = F_RELOAD | F_SECRET},
    {.key = "weights", .type = FT_CUSTOM, .custom = &weights_ops, R},
    {INT("dns_refresh_s", dns_refresh_s), .lo = 1, .hi = 86400, .def = "30", R},
};

static int cluster_finish(void *obj, const unsigned char *given, const char *path,
                          struct errbuf *e);

const struct table config_table = {config_fields, sizeof(config_fields) / sizeof(config_fields[0]),
                                   NULL};
const struct table cluster_table = {
    cluster_fields, sizeof(cluster_fields) / sizeof(cluster_fields[0]), cluster_finish};

/* ---- rows: find, set, compare ---------------------------------------------- */

const struct field *table_find(const struct table *t, const char *key, size_t len) {
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->f[i].key) == len && !strncmp(t->f[i].key, key, len)) return &t->f[i];
    return NULL;
}

size_t table_index(const struct table *t, const char *key) {
    return (size_t)(table_find(t, key, strlen(key)) - t->f);
}

void *field_ptr(const struct field *f, void *obj) {
    return (char *)obj + f->off;
}

const void *field_cptr(const struct field *f, const void *obj) {
    return (const char *)obj + f->off;
}

void field_mark_given(const struct field *f, void *obj, int on) {
    if (f->given) *(int *)((char *)obj + f->given - 1) = on;
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

static int parse_status_range(const char *s, int *lo, int *hi) {
    int v[2], n = 0;
    for (;;) {
        if (n == 2) return -1;
        for (int i = 0; i < 3; i++)
            if (s[i] < '0' || s[i] > '9') return -1;
        v[n++] = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        s += 3;
        if (!*s) break;
        if (*s != '-') return -1;
        s++;
    }
    if (n == 1) v[1] = v[0];
    if (v[0] < 100 || v[1] > 599 || v[0] > v[1]) return -1;
    *lo = v[0];
    *hi = v[1];
    return 0;
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
    net_addr_str(a, (char *)obj + f->text - 1, sizeof(((struct proxy_config *)0)->listen_text));
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
    const int *x = field_cptr(f, a), *y = field_cptr(f, b);
    switch (f->type) {
    case FT_STR: return !strcmp(field_cptr(f, a), field_cptr(f, b));
    case FT_ADDR:
        return !strcmp((const char *)a + f->text - 1, (const char *)b + f->text - 1) &&
               (!f->given || *(const int *)((const char *)a + f->given - 1) ==
                                 *(const int *)((const char *)b + f->given - 1));
    case FT_CUSTOM: return !f->custom->equal || f->custom->equal(a, b);
    case FT_SECTION:
        return !f->given || *(const int *)((const char *)a + f->given - 1) ==
                                *(const int *)((const char *)b + f->given - 1);
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
        if (given[table_index(&cluster_table, "health_check.timeout_ms")])
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
