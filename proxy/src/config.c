/* The proxy's configuration: defaults, then the --config JSON file, then the
 * flags. Everything is checked before anything starts; a bad value is reported
 * with the path of the field (or the flag) that holds it. */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"

#ifndef LB_VERSION
#define LB_VERSION "0.0.0"
#endif

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_TAGS         8
#define PATH_BUF         320

/* ---- small helpers ------------------------------------------------------ */

struct errbuf {
    char *s;
    size_t len;
};

static int errf(struct errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int errf(struct errbuf *e, const char *fmt, ...) {
    if (e->s && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->s, e->len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Appends s to out (of size n, holding *len bytes), truncating. */
static void append(char *out, size_t n, size_t *len, const char *s) {
    while (*s && *len + 1 < n)
        out[(*len)++] = *s++;
    out[*len] = 0;
}

/* "path.key", or "key" at the top level. */
static void join(char *out, size_t n, const char *path, const char *key) {
    size_t len = 0;
    out[0] = 0;
    append(out, n, &len, path);
    if (path[0]) append(out, n, &len, ".");
    append(out, n, &len, key);
}

/* "path[i]" */
static void join_index(char *out, size_t n, const char *path, size_t i) {
    char idx[32];
    size_t len = 0;
    snprintf(idx, sizeof(idx), "[%zu]", i);
    out[0] = 0;
    append(out, n, &len, path);
    append(out, n, &len, idx);
}

/* How a JSON value looks, for "expected X, got Y" messages. */
static const char *describe(const cJSON *it, char *buf, size_t n) {
    if (!it) return "nothing";
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        int r = snprintf(buf, n, "\"%.40s%s\"", s, strlen(s) > 40 ? "..." : "");
        (void)r;
        return buf;
    }
    if (cJSON_IsNumber(it)) {
        snprintf(buf, n, "%.15g", it->valuedouble);
        return buf;
    }
    if (cJSON_IsTrue(it)) return "true";
    if (cJSON_IsFalse(it)) return "false";
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "an unknown value";
}

static int has_ctl_or_space(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f) return 1;
    return 0;
}

static int has_ctl(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f) return 1;
    return 0;
}

static int get_int(const cJSON *it, const char *path, int lo, int hi, int *out, struct errbuf *e) {
    if (cJSON_IsNumber(it)) {
        double v = it->valuedouble;
        if (v >= lo && v <= hi && (double)(long long)v == v) {
            *out = (int)v;
            return 0;
        }
    }
    char g[64];
    if (lo == 1 && hi == INT_MAX)
        return errf(e, "%s: expected a positive integer, got %s", path, describe(it, g, sizeof(g)));
    return errf(e, "%s: expected an integer %d-%d, got %s", path, lo, hi,
                describe(it, g, sizeof(g)));
}

/* A string naming one of a set of choices: parse gives its value, or -1
 * when it names none; choices lists them for the message. */
static int get_choice(const cJSON *it, const char *path, int (*parse)(const char *),
                      const char *choices, int *out, struct errbuf *e) {
    int v = cJSON_IsString(it) ? parse(it->valuestring) : -1;
    if (v >= 0) {
        *out = v;
        return 0;
    }
    char g[64];
    return errf(e, "%s: expected %s, got %s", path, choices, describe(it, g, sizeof(g)));
}

static int get_string(const cJSON *it, const char *path, char *out, size_t outsz,
                      struct errbuf *e) {
    char g[64];
    if (!cJSON_IsString(it))
        return errf(e, "%s: expected a string, got %s", path, describe(it, g, sizeof(g)));
    size_t len = strlen(it->valuestring);
    if (len >= outsz) return errf(e, "%s: too long (at most %zu bytes)", path, outsz - 1);
    memcpy(out, it->valuestring, len + 1);
    return 0;
}

/* A "[HOST:]PORT" string; a bare port gets default_host. Its canonical
 * text goes to text. */
static int get_addr(const cJSON *it, const char *path, const char *default_host,
                    struct net_addr *out, char *text, size_t textsz, struct errbuf *e) {
    char g[64];
    const char *why;
    if (!cJSON_IsString(it))
        return errf(e, "%s: expected a \"[HOST:]PORT\" string, got %s", path,
                    describe(it, g, sizeof(g)));
    if (net_parse_addr(it->valuestring, default_host, out, &why))
        return errf(e, "%s: bad address %s: %s", path, describe(it, g, sizeof(g)), why);
    net_addr_str(out, text, textsz);
    return 0;
}

static int get_bool(const cJSON *it, const char *path, int *out, struct errbuf *e) {
    char g[64];
    if (!cJSON_IsBool(it))
        return errf(e, "%s: expected true or false, got %s", path, describe(it, g, sizeof(g)));
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return 0;
}

static int want_object(const cJSON *it, const char *path, struct errbuf *e) {
    char g[64];
    if (!cJSON_IsObject(it))
        return errf(e, "%s: expected an object, got %s", path, describe(it, g, sizeof(g)));
    return 0;
}

/* Every member of obj is one of known (NULL-terminated), and none repeats. */
static int check_fields(const cJSON *obj, const char *path, const char *const *known,
                        struct errbuf *e) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        char p[PATH_BUF];
        join(p, sizeof(p), path, c->string);
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++)
            ok = !strcmp(*k, c->string);
        if (!ok) return errf(e, "%s: unknown field", p);
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (!strcmp(d->string, c->string)) return errf(e, "%s: duplicate field", p);
    }
    return 0;
}

static const cJSON *field(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

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

/* ---- names, prefixes, backends ------------------------------------------ */

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

static const char *level_name(int level) {
    if (level >= 0 && level < 4) return log_level_names[level];
    return "unknown";
}

static const char *prefix_problem(const char *p) {
    if (p[0] != '/') return "must start with \"/\"";
    if (strlen(p) >= sizeof(((struct cluster_config *)0)->path_prefix))
        return "too long (at most 255 bytes)";
    for (const char *s = p; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f || *s == '?' || *s == '#')
            return "must not contain spaces, control characters, \"?\" or \"#\"";
    return NULL;
}

static int name_char_ok(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_' || ch == '.' || ch == '/';
}

static const char *name_problem(const char *name) {
    if (!name[0]) return "must not be empty";
    if (strlen(name) >= sizeof(((struct cluster_config *)0)->name))
        return "too long (at most 63 bytes)";
    for (const char *s = name; *s; s++)
        if (!name_char_ok(*s))
            return "may hold only letters, digits, \"-\", \"_\", \".\" and \"/\"";
    if (!strcmp(name, "none")) return "\"none\" is reserved (it labels unrouted requests)";
    return NULL;
}

/* "/cluster1" -> "cluster1", "/api/v2/" -> "api/v2", "/" -> "root". */
static void derive_name(const char *prefix, char *out, size_t n) {
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
static int parse_backend(const char *s, struct backend_addr *b, const char **why) {
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

static int same_backend(const struct backend_addr *a, const struct backend_addr *b) {
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

static int region_ok(const char *r) {
    if (!r[0]) return 0;
    for (; *r; r++)
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-')) return 0;
    return 1;
}

/* ---- defaults and freeing ------------------------------------------------ */

/* app/<short hostname>, as an ALB's name reads (app/NAME/ID). */
static void default_load_balancer(char *out, size_t len) {
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0]) snprintf(host, sizeof(host), "proxy");
    host[strcspn(host, ".")] = '\0';
    snprintf(out, len, "app/%s", host);
}

static void cluster_defaults(struct cluster_config *c) {
    memset(c, 0, sizeof(*c));
    c->strategy = STRATEGY_PEAK_EWMA;
    snprintf(c->health.path, sizeof(c->health.path), "/health");
    c->health.interval_ms = 1000;
    c->health.timeout_ms = 500;
    c->health.healthy_threshold = 2;
    c->health.unhealthy_threshold = 2;
    c->health.expect_lo = 200;
    c->health.expect_hi = 399;
    c->discovery.port = 8000;
    c->discovery.interval_s = 15;
    c->retries = 1;
    c->outlier = (struct outlier_config){.enabled = 1,
                                         .consecutive_5xx = 5,
                                         .consecutive_gateway_failure = 3,
                                         .interval_ms = 1000,
                                         .base_ejection_ms = 30000,
                                         .max_ejection_percent = 50};
    snprintf(c->sticky.cookie, sizeof(c->sticky.cookie), "LBSTICKY");
    c->sticky.duration_s = 86400;
    c->dns_refresh_s = 30;
}

void config_defaults(struct proxy_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    const char *err;
    net_parse_addr("0.0.0.0:8000", NULL, &cfg->listen, &err);
    snprintf(cfg->listen_text, sizeof(cfg->listen_text), "0.0.0.0:8000");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
    cfg->engine = EV_ENGINE_AUTO;
    cfg->log_level = LOG_INFO;
    cfg->limits.max_header_bytes = 16384;
    cfg->limits.max_headers = 100;
    cfg->limits.max_connections = 100000;
    cfg->limits.min_body_rate_bps = 1024;
    cfg->desync_mode = DESYNC_DEFENSIVE;
    cfg->timeouts_ms.connect = 1000;
    cfg->timeouts_ms.client_header = 10000;
    cfg->timeouts_ms.idle = 60000;
    cfg->timeouts_ms.backend_response = 30000;
    cfg->timeouts_ms.drain = 30000;
    cfg->default_response.status = 404;
    snprintf(cfg->default_response.content_type, sizeof(cfg->default_response.content_type),
             "text/plain");
    cfg->default_response.body = strdup("no route\n");
    cfg->default_response.body_len = cfg->default_response.body ? 9 : 0;
    snprintf(cfg->cloudwatch.namespace_, sizeof(cfg->cloudwatch.namespace_), "CustomLB");
    cfg->cloudwatch.interval_s = 60;
    default_load_balancer(cfg->cloudwatch.load_balancer, sizeof(cfg->cloudwatch.load_balancer));
}

static void free_clusters(struct cluster_config *c, size_t n) {
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

/* ---- JSON ----------------------------------------------------------------- */

static int parse_health(const cJSON *o, const char *path, struct health_check *h,
                        struct errbuf *e) {
    static const char *const keys[] = {
        "path",          "interval_ms", "timeout_ms", "healthy_threshold", "unhealthy_threshold",
        "expect_status", NULL};
    char p[PATH_BUF], g[64];
    const cJSON *it;
    if (want_object(o, path, e) || check_fields(o, path, keys, e)) return -1;
    if ((it = field(o, "path"))) {
        join(p, sizeof(p), path, "path");
        if (get_string(it, p, h->path, sizeof(h->path), e)) return -1;
        if (h->path[0] != '/' || has_ctl_or_space(h->path))
            return errf(e, "%s: expected a path starting with \"/\" (no spaces), got %s", p,
                        describe(it, g, sizeof(g)));
    }
    if ((it = field(o, "interval_ms"))) {
        join(p, sizeof(p), path, "interval_ms");
        if (get_int(it, p, 1, INT_MAX, &h->interval_ms, e)) return -1;
    }
    int timeout_given = 0;
    if ((it = field(o, "timeout_ms"))) {
        join(p, sizeof(p), path, "timeout_ms");
        if (get_int(it, p, 1, INT_MAX, &h->timeout_ms, e)) return -1;
        timeout_given = 1;
    }
    if ((it = field(o, "healthy_threshold"))) {
        join(p, sizeof(p), path, "healthy_threshold");
        if (get_int(it, p, 1, INT_MAX, &h->healthy_threshold, e)) return -1;
    }
    if ((it = field(o, "unhealthy_threshold"))) {
        join(p, sizeof(p), path, "unhealthy_threshold");
        if (get_int(it, p, 1, INT_MAX, &h->unhealthy_threshold, e)) return -1;
    }
    if ((it = field(o, "expect_status"))) {
        join(p, sizeof(p), path, "expect_status");
        if (!cJSON_IsString(it) ||
            parse_status_range(it->valuestring, &h->expect_lo, &h->expect_hi) < 0)
            return errf(e, "%s: expected \"NNN\" or \"NNN-NNN\" within 100-599, got %s", p,
                        describe(it, g, sizeof(g)));
    }
    if (h->timeout_ms > h->interval_ms) {
        if (timeout_given) {
            join(p, sizeof(p), path, "timeout_ms");
            return errf(e, "%s: %d must not exceed interval_ms (%d)", p, h->timeout_ms,
                        h->interval_ms);
        }
        h->timeout_ms = h->interval_ms; /* a short interval shortens the default timeout */
    }
    return 0;
}

static int parse_ec2(const cJSON *o, const char *path, struct ec2_discovery *d, struct errbuf *e) {
    static const char *const keys[] = {"region", "tags", "port", "interval_s", NULL};
    char p[PATH_BUF], g[64];
    const cJSON *it;
    if (want_object(o, path, e) || check_fields(o, path, keys, e)) return -1;
    join(p, sizeof(p), path, "region");
    if (!(it = field(o, "region"))) return errf(e, "%s: required", p);
    if (get_string(it, p, d->region, sizeof(d->region), e)) return -1;
    if (!region_ok(d->region))
        return errf(e, "%s: expected a region name such as \"us-east-1\", got %s", p,
                    describe(it, g, sizeof(g)));
    join(p, sizeof(p), path, "tags");
    it = field(o, "tags");
    if (!it) return errf(e, "%s: required (an object of 1-%d string tags)", p, MAX_TAGS);
    if (!cJSON_IsObject(it) || !it->child || cJSON_GetArraySize(it) > MAX_TAGS)
        return errf(e, "%s: expected an object of 1-%d string tags, got %s", p, MAX_TAGS,
                    describe(it, g, sizeof(g)));
    d->ntags = 0;
    for (const cJSON *t = it->child; t; t = t->next) {
        char tp[PATH_BUF];
        join(tp, sizeof(tp), p, t->string);
        if (!t->string[0]) return errf(e, "%s: tag key must not be empty", p);
        if (strlen(t->string) >= sizeof(d->tag_keys[0]))
            return errf(e, "%s: tag key too long (at most %zu bytes)", tp,
                        sizeof(d->tag_keys[0]) - 1);
        for (int i = 0; i < d->ntags; i++)
            if (!strcmp(d->tag_keys[i], t->string)) return errf(e, "%s: duplicate field", tp);
        if (get_string(t, tp, d->tag_values[d->ntags], sizeof(d->tag_values[0]), e)) return -1;
        memcpy(d->tag_keys[d->ntags], t->string, strlen(t->string) + 1);
        d->ntags++;
    }
    if ((it = field(o, "port"))) {
        join(p, sizeof(p), path, "port");
        if (get_int(it, p, 1, 65535, &d->port, e)) return -1;
    }
    if ((it = field(o, "interval_s"))) {
        join(p, sizeof(p), path, "interval_s");
        if (get_int(it, p, 1, INT_MAX, &d->interval_s, e)) return -1;
    }
    d->enabled = 1;
    return 0;
}

static int parse_backends(const cJSON *arr, const char *path, struct cluster_config *c,
                          struct errbuf *e) {
    char p[PATH_BUF], g[64];
    if (!cJSON_IsArray(arr))
        return errf(e, "%s: expected an array of \"HOST:PORT\" strings, got %s", path,
                    describe(arr, g, sizeof(g)));
    size_t n = (size_t)cJSON_GetArraySize(arr);
    struct backend_addr *b = calloc(n ? n : 1, sizeof(*b));
    if (!b) return errf(e, "%s: out of memory", path);
    free(c->backends);
    c->backends = b;
    c->nbackends = 0;
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        join_index(p, sizeof(p), path, i);
        const char *why;
        if (!cJSON_IsString(it))
            return errf(e, "%s: expected a \"HOST:PORT\" string, got %s", p,
                        describe(it, g, sizeof(g)));
        if (parse_backend(it->valuestring, &b[i], &why) < 0)
            return errf(e, "%s: bad address %s: %s", p, describe(it, g, sizeof(g)), why);
        for (size_t j = 0; j < i; j++)
            if (same_backend(&b[j], &b[i]))
                return errf(e, "%s: duplicate backend %s (same as %s[%zu])", p,
                            describe(it, g, sizeof(g)), path, j);
        c->nbackends = i + 1;
    }
    return 0;
}

static int parse_outlier(const cJSON *o, const char *path, struct outlier_config *d,
                         struct errbuf *e) {
    static const char *const keys[] = {"consecutive_5xx",      "consecutive_gateway_failure",
                                       "interval_ms",          "base_ejection_ms",
                                       "max_ejection_percent", NULL};
    static const struct {
        const char *key;
        size_t off;
        int lo, hi;
    } ints[] = {
        {"consecutive_5xx", offsetof(struct outlier_config, consecutive_5xx), 0, 1000000},
        {"consecutive_gateway_failure",
         offsetof(struct outlier_config, consecutive_gateway_failure), 0, 1000000},
        {"interval_ms", offsetof(struct outlier_config, interval_ms), 1, 3600000},
        {"base_ejection_ms", offsetof(struct outlier_config, base_ejection_ms), 1, 3600000},
        {"max_ejection_percent", offsetof(struct outlier_config, max_ejection_percent), 0, 100},
    };
    char p[PATH_BUF];
    if (cJSON_IsFalse(o) || cJSON_IsNull(o)) {
        d->enabled = 0;
        return 0;
    }
    if (want_object(o, path, e) || check_fields(o, path, keys, e)) return -1;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        const cJSON *it = field(o, ints[i].key);
        join(p, sizeof(p), path, ints[i].key);
        if (it && get_int(it, p, ints[i].lo, ints[i].hi, (int *)((char *)d + ints[i].off), e))
            return -1;
    }
    d->enabled = 1;
    return 0;
}

static int parse_stickiness(const cJSON *o, const char *path, struct stickiness_config *s,
                            struct errbuf *e) {
    static const char *const keys[] = {"cookie", "duration_s", "secret", NULL};
    char p[PATH_BUF], g[64];
    const cJSON *it;
    if (cJSON_IsFalse(o) || cJSON_IsNull(o)) {
        s->enabled = 0;
        return 0;
    }
    if (want_object(o, path, e) || check_fields(o, path, keys, e)) return -1;
    if ((it = field(o, "cookie"))) {
        join(p, sizeof(p), path, "cookie");
        if (get_string(it, p, s->cookie, sizeof(s->cookie), e)) return -1;
        for (const char *c = s->cookie; *c; c++)
            if (!name_char_ok(*c))
                return errf(
                    e, "%s: expected a cookie name of letters, digits, '-', '_' or '.', got %s", p,
                    describe(it, g, sizeof(g)));
        if (!s->cookie[0]) return errf(e, "%s: must not be empty", p);
    }
    if ((it = field(o, "duration_s"))) {
        join(p, sizeof(p), path, "duration_s");
        if (get_int(it, p, 1, 7 * 86400 * 52, &s->duration_s, e)) return -1;
    }
    if ((it = field(o, "secret"))) {
        join(p, sizeof(p), path, "secret");
        if (get_string(it, p, s->secret, sizeof(s->secret), e)) return -1;
        if (strlen(s->secret) < 16) return errf(e, "%s: at least 16 characters", p);
    }
    s->enabled = 1;
    return 0;
}

static int parse_weights(const cJSON *o, const char *path, struct cluster_config *c,
                         struct errbuf *e) {
    char p[PATH_BUF];
    if (want_object(o, path, e)) return -1;
    size_t n = (size_t)cJSON_GetArraySize(o);
    struct backend_weight *w = calloc(n ? n : 1, sizeof(*w));
    if (!w) return errf(e, "%s: out of memory", path);
    free(c->weights);
    c->weights = w;
    c->nweights = 0;
    for (const cJSON *it = o->child; it; it = it->next) {
        struct backend_addr ba;
        const char *why = "";
        join(p, sizeof(p), path, it->string);
        if (parse_backend(it->string, &ba, &why) < 0)
            return errf(e, "%s: not a backend (\"HOST:PORT\"): %s", p, why);
        for (size_t j = 0; j < c->nweights; j++)
            if (!strcmp(w[j].backend, ba.text)) return errf(e, "%s: duplicate field", p);
        if (get_int(it, p, 0, 1000, &w[c->nweights].weight, e)) return -1;
        memcpy(w[c->nweights].backend, ba.text, sizeof(ba.text));
        c->nweights++;
    }
    return 0;
}

static int parse_cluster(const cJSON *o, const char *path, struct cluster_config *c,
                         struct errbuf *e) {
    static const char *const keys[] = {"name",          "path_prefix", "strip_prefix",
                                       "strategy",      "backends",    "discovery",
                                       "health_check",  "retries",     "outlier_detection",
                                       "slow_start_ms", "stickiness",  "weights",
                                       "dns_refresh_s", NULL};
    static const char *const discovery_keys[] = {"ec2", NULL};
    char p[PATH_BUF], g[64];
    const cJSON *it;
    const char *why;
    cluster_defaults(c);
    if (want_object(o, path, e) || check_fields(o, path, keys, e)) return -1;

    join(p, sizeof(p), path, "path_prefix");
    if (!(it = field(o, "path_prefix"))) return errf(e, "%s: required", p);
    if (get_string(it, p, c->path_prefix, sizeof(c->path_prefix), e)) return -1;
    if ((why = prefix_problem(c->path_prefix)))
        return errf(e, "%s: %s, got %s", p, why, describe(it, g, sizeof(g)));
    c->prefix_len = strlen(c->path_prefix);

    join(p, sizeof(p), path, "name");
    if ((it = field(o, "name"))) {
        if (!cJSON_IsString(it))
            return errf(e, "%s: expected a string, got %s", p, describe(it, g, sizeof(g)));
        if ((why = name_problem(it->valuestring)))
            return errf(e, "%s: %s, got %s", p, why, describe(it, g, sizeof(g)));
        memcpy(c->name, it->valuestring, strlen(it->valuestring) + 1);
    } else {
        derive_name(c->path_prefix, c->name, sizeof(c->name));
        if ((why = name_problem(c->name)))
            return errf(e, "%s: %s (derived from path_prefix; set \"name\")", p, why);
    }

    if ((it = field(o, "strip_prefix"))) {
        join(p, sizeof(p), path, "strip_prefix");
        if (get_bool(it, p, &c->strip_prefix, e)) return -1;
    }
    if ((it = field(o, "strategy"))) {
        join(p, sizeof(p), path, "strategy");
        int s = 0;
        if (get_choice(it, p, strategy_parse, STRATEGY_NAMES, &s, e)) return -1;
        c->strategy = (enum strategy)s;
        c->strategy_set = 1;
    }
    if ((it = field(o, "retries"))) {
        join(p, sizeof(p), path, "retries");
        if (get_int(it, p, 0, 5, &c->retries, e)) return -1;
    }
    if ((it = field(o, "health_check"))) {
        join(p, sizeof(p), path, "health_check");
        if (parse_health(it, p, &c->health, e)) return -1;
    }
    if ((it = field(o, "outlier_detection"))) {
        join(p, sizeof(p), path, "outlier_detection");
        if (parse_outlier(it, p, &c->outlier, e)) return -1;
    }
    if ((it = field(o, "slow_start_ms"))) {
        join(p, sizeof(p), path, "slow_start_ms");
        if (get_int(it, p, 0, 3600000, &c->slow_start_ms, e)) return -1;
    }
    if ((it = field(o, "stickiness"))) {
        join(p, sizeof(p), path, "stickiness");
        if (parse_stickiness(it, p, &c->sticky, e)) return -1;
    }
    if ((it = field(o, "weights"))) {
        join(p, sizeof(p), path, "weights");
        if (parse_weights(it, p, c, e)) return -1;
    }
    if ((it = field(o, "dns_refresh_s"))) {
        join(p, sizeof(p), path, "dns_refresh_s");
        if (get_int(it, p, 1, 86400, &c->dns_refresh_s, e)) return -1;
    }
    if ((it = field(o, "discovery"))) {
        join(p, sizeof(p), path, "discovery");
        if (want_object(it, p, e) || check_fields(it, p, discovery_keys, e)) return -1;
        const cJSON *ec2 = field(it, "ec2");
        char p2[PATH_BUF];
        join(p2, sizeof(p2), p, "ec2");
        if (ec2 && parse_ec2(ec2, p2, &c->discovery, e)) return -1;
    }
    join(p, sizeof(p), path, "backends");
    if ((it = field(o, "backends")) && parse_backends(it, p, c, e)) return -1;
    if (!c->nbackends && !c->discovery.enabled)
        return errf(e, "%s: at least one backend (or discovery.ec2) required", p);
    return 0;
}

static int parse_clusters(const cJSON *arr, const char *path, struct cluster_config **out,
                          size_t *nout, struct errbuf *e) {
    char p[PATH_BUF], g[64];
    if (!cJSON_IsArray(arr))
        return errf(e, "%s: expected an array, got %s", path, describe(arr, g, sizeof(g)));
    size_t n = (size_t)cJSON_GetArraySize(arr);
    struct cluster_config *c = calloc(n ? n : 1, sizeof(*c));
    if (!c) return errf(e, "%s: out of memory", path);
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        join_index(p, sizeof(p), path, i);
        if (parse_cluster(it, p, &c[i], e)) goto fail;
        for (size_t j = 0; j < i; j++) {
            char q[PATH_BUF];
            if (!strcmp(c[j].path_prefix, c[i].path_prefix)) {
                join(q, sizeof(q), p, "path_prefix");
                errf(e, "%s: duplicate prefix \"%s\" (also %s[%zu])", q, c[i].path_prefix, path, j);
                goto fail;
            }
            if (!strcmp(c[j].name, c[i].name)) {
                join(q, sizeof(q), p, "name");
                errf(e, "%s: duplicate name \"%s\" (also %s[%zu])", q, c[i].name, path, j);
                goto fail;
            }
        }
    }
    *out = c;
    *nout = n;
    return 0;
fail:
    free_clusters(c, n);
    return -1;
}

/* Checks that span fields and flags, on the configuration as it will run. */
static int check_final(const struct proxy_config *cfg, struct errbuf *e) {
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

/* Parses json on top of cfg; on error cfg is left exactly as it was. */
static int parse_json(struct proxy_config *cfg, const char *json, int final, struct errbuf *e) {
    static const char *const keys[] = {
        "listen", "threads",     "engine",           "admin",    "access_log", "log_level",
        "limits", "timeouts_ms", "default_response", "clusters", "cloudwatch", "desync_mitigation",
        NULL};
    static const char *const limit_keys[] = {"max_header_bytes", "max_headers", "max_connections",
                                             "min_body_rate_bps", NULL};
    static const char *const timeout_keys[] = {"connect",          "client_header", "idle",
                                               "backend_response", "drain",         NULL};
    static const char *const response_keys[] = {"status", "content_type", "body", NULL};
    static const char *const cloudwatch_keys[] = {"namespace", "region", "interval_s",
                                                  "load_balancer", NULL};
    char p[PATH_BUF], g[64];
    const cJSON *it;
    struct proxy_config t = *cfg;
    char *body = NULL;
    struct cluster_config *clusters = NULL;
    size_t nclusters = 0;
    int have_clusters = 0;

    if (!json) return errf(e, "no configuration text");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        if (!end) return errf(e, "out of memory parsing JSON");
        int line = 1, col = 1;
        for (const char *s = json; s < end && *s; s++) {
            if (*s == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return errf(e, "invalid JSON at line %d, column %d", line, col);
    }
    if (!cJSON_IsObject(root)) {
        errf(e, "expected a JSON object at the top level, got %s", describe(root, g, sizeof(g)));
        goto fail;
    }
    if (check_fields(root, "", keys, e)) goto fail;

    if ((it = field(root, "listen")) &&
        get_addr(it, "listen", "0.0.0.0", &t.listen, t.listen_text, sizeof(t.listen_text), e))
        goto fail;
    if ((it = field(root, "threads")) && get_int(it, "threads", 1, 1024, &t.threads, e)) goto fail;
    if ((it = field(root, "engine")) &&
        get_choice(it, "engine", ev_engine_parse, "auto, uring or epoll", &t.engine, e))
        goto fail;
    if ((it = field(root, "admin"))) {
        if (get_addr(it, "admin", "127.0.0.1", &t.admin, t.admin_text, sizeof(t.admin_text), e))
            goto fail;
        t.admin_set = 1;
    }
    if ((it = field(root, "access_log"))) {
        if (get_string(it, "access_log", t.access_log, sizeof(t.access_log), e)) goto fail;
        if (has_ctl(t.access_log)) {
            errf(e, "access_log: must not contain control characters");
            goto fail;
        }
    }
    if ((it = field(root, "log_level")) &&
        get_choice(it, "log_level", log_level_parse, "error, warn, info or debug", &t.log_level, e))
        goto fail;
    if ((it = field(root, "limits"))) {
        const cJSON *o = it;
        if (want_object(o, "limits", e) || check_fields(o, "limits", limit_keys, e)) goto fail;
        if ((it = field(o, "max_header_bytes")) &&
            get_int(it, "limits.max_header_bytes", 1024, 1048576, &t.limits.max_header_bytes, e))
            goto fail;
        if ((it = field(o, "max_headers")) &&
            get_int(it, "limits.max_headers", 1, 10000, &t.limits.max_headers, e))
            goto fail;
        if ((it = field(o, "max_connections")) &&
            get_int(it, "limits.max_connections", 1, 10000000, &t.limits.max_connections, e))
            goto fail;
        if ((it = field(o, "min_body_rate_bps")) &&
            get_int(it, "limits.min_body_rate_bps", 0, INT_MAX, &t.limits.min_body_rate_bps, e))
            goto fail;
    }
    if ((it = field(root, "desync_mitigation")) &&
        get_choice(it, "desync_mitigation", desync_mode_parse, "defensive, strictest or monitor",
                   &t.desync_mode, e))
        goto fail;
    if ((it = field(root, "timeouts_ms"))) {
        const cJSON *o = it;
        int *dst[] = {&t.timeouts_ms.connect, &t.timeouts_ms.client_header, &t.timeouts_ms.idle,
                      &t.timeouts_ms.backend_response, &t.timeouts_ms.drain};
        if (want_object(o, "timeouts_ms", e) || check_fields(o, "timeouts_ms", timeout_keys, e))
            goto fail;
        for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]); i++) {
            join(p, sizeof(p), "timeouts_ms", timeout_keys[i]);
            if ((it = field(o, timeout_keys[i])) && get_int(it, p, 1, INT_MAX, dst[i], e))
                goto fail;
        }
    }
    if ((it = field(root, "default_response"))) {
        const cJSON *o = it;
        if (want_object(o, "default_response", e) ||
            check_fields(o, "default_response", response_keys, e))
            goto fail;
        if ((it = field(o, "status")) &&
            get_int(it, "default_response.status", 100, 599, &t.default_response.status, e))
            goto fail;
        if ((it = field(o, "content_type"))) {
            if (get_string(it, "default_response.content_type", t.default_response.content_type,
                           sizeof(t.default_response.content_type), e))
                goto fail;
            if (!t.default_response.content_type[0] || has_ctl(t.default_response.content_type)) {
                errf(e,
                     "default_response.content_type: expected a media type such as "
                     "\"text/plain\", got %s",
                     describe(it, g, sizeof(g)));
                goto fail;
            }
        }
        if ((it = field(o, "body"))) {
            if (!cJSON_IsString(it)) {
                errf(e, "default_response.body: expected a string, got %s",
                     describe(it, g, sizeof(g)));
                goto fail;
            }
            if (!(body = strdup(it->valuestring))) {
                errf(e, "default_response.body: out of memory");
                goto fail;
            }
            t.default_response.body = body;
            t.default_response.body_len = strlen(body);
        }
    }
    if ((it = field(root, "clusters"))) {
        if (parse_clusters(it, "clusters", &clusters, &nclusters, e)) goto fail;
        t.clusters = clusters;
        t.nclusters = nclusters;
        have_clusters = 1;
    }
    if ((it = field(root, "cloudwatch"))) {
        const cJSON *o = it;
        if (want_object(o, "cloudwatch", e) || check_fields(o, "cloudwatch", cloudwatch_keys, e))
            goto fail;
        if ((it = field(o, "namespace"))) {
            if (get_string(it, "cloudwatch.namespace", t.cloudwatch.namespace_,
                           sizeof(t.cloudwatch.namespace_), e))
                goto fail;
            if (!t.cloudwatch.namespace_[0] || has_ctl(t.cloudwatch.namespace_) ||
                !strncmp(t.cloudwatch.namespace_, "AWS/", 4)) {
                errf(e,
                     "cloudwatch.namespace: expected a non-empty name not starting with "
                     "\"AWS/\", got %s",
                     describe(it, g, sizeof(g)));
                goto fail;
            }
        }
        if ((it = field(o, "region"))) {
            if (get_string(it, "cloudwatch.region", t.cloudwatch.region,
                           sizeof(t.cloudwatch.region), e))
                goto fail;
            if (!region_ok(t.cloudwatch.region)) {
                errf(e, "cloudwatch.region: expected a region name such as \"us-east-1\", got %s",
                     describe(it, g, sizeof(g)));
                goto fail;
            }
        }
        if ((it = field(o, "interval_s")) &&
            get_int(it, "cloudwatch.interval_s", 1, INT_MAX, &t.cloudwatch.interval_s, e))
            goto fail;
        if ((it = field(o, "load_balancer"))) {
            if (get_string(it, "cloudwatch.load_balancer", t.cloudwatch.load_balancer,
                           sizeof(t.cloudwatch.load_balancer), e))
                goto fail;
            if (!t.cloudwatch.load_balancer[0] || has_ctl(t.cloudwatch.load_balancer)) {
                errf(e,
                     "cloudwatch.load_balancer: expected a non-empty name such as "
                     "\"app/lb-demo\", got %s",
                     describe(it, g, sizeof(g)));
                goto fail;
            }
        }
        t.cloudwatch.enabled = 1;
    }
    if (final && check_final(&t, e)) goto fail;

    cJSON_Delete(root);
    if (body) free(cfg->default_response.body);
    if (have_clusters) free_clusters(cfg->clusters, cfg->nclusters);
    *cfg = t;
    return 0;
fail:
    cJSON_Delete(root);
    free(body);
    free_clusters(clusters, nclusters);
    return -1;
}

int config_parse_json(struct proxy_config *cfg, const char *json, char *err, size_t err_len) {
    struct errbuf e = {err, err_len};
    if (err && err_len) err[0] = 0;
    return parse_json(cfg, json, 1, &e);
}

/* ---- flags ---------------------------------------------------------------- */

enum opt_id {
    O_LISTEN,
    O_ROUTE,
    O_CONFIG,
    O_THREADS,
    O_ENGINE,
    O_STRATEGY,
    O_ADMIN,
    O_ACCESS_LOG,
    O_LOG_LEVEL,
    O_DESYNC,
    O_CHECK,
    O_VERSION,
    O_HELP,
    O_COUNT
};

static const struct {
    const char *name, *arg, *help;
} options[O_COUNT] = {
    [O_LISTEN] = {"listen", "[HOST:]PORT", "public listener (default 0.0.0.0:8000)"},
    [O_ROUTE] = {"route", "PREFIX=HOST:PORT[,HOST:PORT...]",
                 "send PREFIX (on a segment boundary) to these backends; repeatable"},
    [O_CONFIG] = {"config", "FILE", "read the JSON configuration; the other flags override it"},
    [O_THREADS] = {"threads", "N", "worker threads, 1-1024 (default: online CPUs)"},
    [O_ENGINE] = {"engine", "auto|uring|epoll", "I/O engine (default auto: io_uring, else epoll)"},
    [O_STRATEGY] = {"strategy", "NAME",
                    "fastest, peak-ewma (default), least-outstanding, round-robin, random"},
    [O_ADMIN] = {"admin", "[HOST:]PORT",
                 "admin listener: /metrics, /status, /healthz (host default 127.0.0.1)"},
    [O_ACCESS_LOG] = {"access-log", "FILE|-", "JSON access log, one line per request (- stdout)"},
    [O_LOG_LEVEL] = {"log-level", "error|warn|info|debug", "log verbosity (default info)"},
    [O_DESYNC] = {"desync-mitigation", "defensive|strictest|monitor",
                  "what non-compliant requests get (default defensive)"},
    [O_CHECK] = {"check", NULL, "validate the configuration, print what would run, exit"},
    [O_VERSION] = {"version", NULL, "print the version and exit"},
    [O_HELP] = {"help", NULL, "print this help and exit"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: proxy [options]\n");
    for (int i = 0; i < O_COUNT; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        fprintf(out, "  %-42s %s\n", left, options[i].help);
    }
}

/* Where config_load reports a bad flag or field: stderr at start-up, a
 * memory stream on reload. Only the main thread loads configurations. */
static FILE *errout;

struct route_flag {
    char prefix[256];
    struct backend_addr *backends;
    size_t n;
};

struct flag_values {
    const char *config;
    int listen_set, admin_set, check;
    struct net_addr listen, admin;
    int threads, engine, strategy, log_level, desync; /* -1: not given */
    const char *access_log;
    struct route_flag *routes;
    size_t nroutes;
};

static void free_routes(struct flag_values *f) {
    for (size_t i = 0; i < f->nroutes; i++)
        free(f->routes[i].backends);
    free(f->routes);
    f->routes = NULL;
    f->nroutes = 0;
}

/* "PREFIX=HOST:PORT[,HOST:PORT...]"; prints its own message. */
static int parse_route_flag(const char *v, struct flag_values *f) {
    const char *eq = strchr(v, '=');
    if (!eq || eq == v || !eq[1]) {
        fprintf(errout, "proxy: --route: expected PREFIX=HOST:PORT[,HOST:PORT...], got \"%s\"\n",
                v);
        return -1;
    }
    struct route_flag r = {0};
    size_t plen = (size_t)(eq - v);
    if (plen >= sizeof(r.prefix)) {
        fprintf(errout, "proxy: --route: prefix too long (at most %zu bytes)\n",
                sizeof(r.prefix) - 1);
        return -1;
    }
    memcpy(r.prefix, v, plen);
    r.prefix[plen] = 0;
    const char *why = prefix_problem(r.prefix);
    if (why) {
        fprintf(errout, "proxy: --route: prefix %s, got \"%s\"\n", why, r.prefix);
        return -1;
    }
    for (size_t i = 0; i < f->nroutes; i++)
        if (!strcmp(f->routes[i].prefix, r.prefix)) {
            fprintf(errout, "proxy: --route: duplicate prefix \"%s\"\n", r.prefix);
            return -1;
        }
    size_t cap = 1;
    for (const char *s = eq + 1; *s; s++)
        cap += *s == ',';
    r.backends = calloc(cap, sizeof(*r.backends));
    struct route_flag *grown = realloc(f->routes, (f->nroutes + 1) * sizeof(*f->routes));
    if (!r.backends || !grown) {
        free(r.backends);
        if (grown) f->routes = grown;
        fprintf(errout, "proxy: --route: out of memory\n");
        return -1;
    }
    f->routes = grown;
    const char *s = eq + 1;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char text[sizeof(r.backends[0].text) + 1];
        int ok = len > 0 && len < sizeof(text);
        if (ok) {
            memcpy(text, s, len);
            text[len] = 0;
            ok = parse_backend(text, &r.backends[r.n], &why) == 0;
        } else {
            why = len ? "too long" : "expected HOST:PORT";
            snprintf(text, sizeof(text), "%.*s", (int)(len < 80 ? len : 80), s);
        }
        if (!ok) {
            fprintf(errout, "proxy: --route %s: bad address \"%s\": %s\n", r.prefix, text, why);
            free(r.backends);
            return -1;
        }
        for (size_t j = 0; j < r.n; j++)
            if (same_backend(&r.backends[j], &r.backends[r.n])) {
                fprintf(errout, "proxy: --route %s: duplicate backend \"%s\"\n", r.prefix, text);
                free(r.backends);
                return -1;
            }
        r.n++;
        if (!comma) break;
        s = comma + 1;
    }
    f->routes[f->nroutes++] = r;
    return 0;
}

static int parse_int_flag(const char *v, int lo, int hi, int *out) {
    if (!((*v >= '0' && *v <= '9') || *v == '-')) return -1; /* no blanks, no "+" */
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*end || errno || n < lo || n > hi) return -1;
    *out = (int)n;
    return 0;
}

static char *read_file(const char *path, int *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = errno;
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        *err = ENOMEM;
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= MAX_CONFIG_BYTES) {
                *err = EFBIG;
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                *err = ENOMEM;
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                *err = errno ? errno : EIO;
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    buf[len] = 0;
    if (strlen(buf) != len) {
        free(buf);
        *err = EILSEQ; /* a NUL byte: not a JSON text */
        return NULL;
    }
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* Applies --route: replace a configured cluster's backends, or add a cluster. */
static int apply_route(struct proxy_config *cfg, struct route_flag *r) {
    for (size_t i = 0; i < cfg->nclusters; i++) {
        struct cluster_config *c = &cfg->clusters[i];
        if (strcmp(c->path_prefix, r->prefix)) continue;
        free(c->backends);
        c->backends = r->backends;
        c->nbackends = r->n;
        r->backends = NULL;
        r->n = 0;
        return 0;
    }
    struct cluster_config c;
    cluster_defaults(&c);
    memcpy(c.path_prefix, r->prefix, sizeof(c.path_prefix));
    c.prefix_len = strlen(c.path_prefix);
    derive_name(c.path_prefix, c.name, sizeof(c.name));
    const char *why = name_problem(c.name);
    if (why) {
        fprintf(errout, "proxy: --route %s: cluster name \"%s\" %s (name it in a --config file)\n",
                r->prefix, c.name, why);
        return -1;
    }
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, c.name)) {
            fprintf(errout,
                    "proxy: --route %s: cluster name \"%s\" is already used by the cluster "
                    "for \"%s\"\n",
                    r->prefix, c.name, cfg->clusters[i].path_prefix);
            return -1;
        }
    struct cluster_config *grown =
        realloc(cfg->clusters, (cfg->nclusters + 1) * sizeof(*cfg->clusters));
    if (!grown) {
        fprintf(errout, "proxy: --route: out of memory\n");
        return -1;
    }
    cfg->clusters = grown;
    c.backends = r->backends;
    c.nbackends = r->n;
    r->backends = NULL;
    r->n = 0;
    cfg->clusters[cfg->nclusters++] = c;
    return 0;
}

int config_from_args(struct proxy_config *cfg, int argc, char **argv) {
    return config_load(cfg, argc, argv, stderr);
}

int config_load(struct proxy_config *cfg, int argc, char **argv, FILE *errors) {
    errout = errors;
    struct flag_values f = {
        .threads = -1, .engine = -1, .strategy = -1, .log_level = -1, .desync = -1};
    const char *why;
    int rc = 2;
    config_defaults(cfg);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !strcmp(a, "-") || !strcmp(a, "--")) {
            fprintf(errout, "proxy: unexpected argument \"%s\" (see --help)\n", a);
            goto out;
        }
        if (a[1] != '-') {
            fprintf(errout, "proxy: unknown option %s (see --help)\n", a);
            goto out;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int id = -1;
        for (int k = 0; k < O_COUNT && id < 0; k++)
            if (strlen(options[k].name) == nlen && !strncmp(options[k].name, name, nlen)) id = k;
        if (id < 0) {
            fprintf(errout, "proxy: unknown option --%.*s (see --help)\n", (int)nlen, name);
            goto out;
        }
        const char *flag = options[id].name, *v = NULL;
        if (options[id].arg) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2))
                v = argv[++i];
            else {
                fprintf(errout, "proxy: --%s: missing value (%s)\n", flag, options[id].arg);
                goto out;
            }
        } else if (eq) {
            fprintf(errout, "proxy: --%s takes no value\n", flag);
            goto out;
        }
        switch (id) {
        case O_LISTEN:
            if (net_parse_addr(v, "0.0.0.0", &f.listen, &why) < 0) {
                fprintf(errout, "proxy: --listen: bad address \"%s\": %s\n", v, why);
                goto out;
            }
            f.listen_set = 1;
            break;
        case O_ADMIN:
            if (net_parse_addr(v, "127.0.0.1", &f.admin, &why) < 0) {
                fprintf(errout, "proxy: --admin: bad address \"%s\": %s\n", v, why);
                goto out;
            }
            f.admin_set = 1;
            break;
        case O_ROUTE:
            if (parse_route_flag(v, &f) < 0) goto out;
            break;
        case O_CONFIG:
            if (strlen(v) >= sizeof(cfg->config_path) || !v[0]) {
                fprintf(errout, "proxy: --config: expected a file name of 1-%zu bytes\n",
                        sizeof(cfg->config_path) - 1);
                goto out;
            }
            f.config = v;
            break;
        case O_THREADS:
            if (parse_int_flag(v, 1, 1024, &f.threads) < 0) {
                fprintf(errout, "proxy: --threads: expected an integer 1-1024, got \"%s\"\n", v);
                goto out;
            }
            break;
        case O_ENGINE:
            if ((f.engine = ev_engine_parse(v)) < 0) {
                fprintf(errout, "proxy: --engine: expected auto, uring or epoll, got \"%s\"\n", v);
                goto out;
            }
            break;
        case O_STRATEGY:
            if ((f.strategy = strategy_parse(v)) < 0) {
                fprintf(errout, "proxy: --strategy: expected " STRATEGY_NAMES ", got \"%s\"\n", v);
                goto out;
            }
            break;
        case O_ACCESS_LOG:
            if (!v[0] || strlen(v) >= sizeof(cfg->access_log) || has_ctl(v)) {
                fprintf(errout, "proxy: --access-log: expected a file name or -, got \"%s\"\n", v);
                goto out;
            }
            f.access_log = v;
            break;
        case O_LOG_LEVEL:
            if ((f.log_level = log_level_parse(v)) < 0) {
                fprintf(errout,
                        "proxy: --log-level: expected error, warn, info or debug, got \"%s\"\n", v);
                goto out;
            }
            break;
        case O_DESYNC:
            if ((f.desync = desync_mode_parse(v)) < 0) {
                fprintf(errout,
                        "proxy: --desync-mitigation: expected defensive, strictest or monitor, "
                        "got \"%s\"\n",
                        v);
                goto out;
            }
            break;
        case O_CHECK: f.check = 1; break;
        case O_VERSION:
            printf("proxy %s\n", LB_VERSION);
            rc = 1;
            goto out;
        case O_HELP:
            usage(stdout);
            rc = 1;
            goto out;
        }
    }

    if (f.config) {
        int err = 0;
        char *text = read_file(f.config, &err);
        if (!text) {
            fprintf(errout, "proxy: config %s: %s\n", f.config,
                    err == EILSEQ ? "contains a NUL byte" : strerror(err));
            goto out;
        }
        char msg[512];
        struct errbuf e = {msg, sizeof(msg)};
        msg[0] = 0;
        int r = parse_json(cfg, text, 0, &e);
        free(text);
        if (r < 0) {
            fprintf(errout, "proxy: config %s: %s\n", f.config, msg);
            goto out;
        }
        snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", f.config);
    }

    if (f.listen_set) {
        cfg->listen = f.listen;
        net_addr_str(&cfg->listen, cfg->listen_text, sizeof(cfg->listen_text));
    }
    if (f.admin_set) {
        cfg->admin = f.admin;
        cfg->admin_set = 1;
        net_addr_str(&cfg->admin, cfg->admin_text, sizeof(cfg->admin_text));
    }
    if (f.threads > 0) cfg->threads = f.threads;
    if (f.engine >= 0) cfg->engine = f.engine;
    if (f.log_level >= 0) cfg->log_level = f.log_level;
    if (f.desync >= 0) cfg->desync_mode = f.desync;
    if (f.access_log) snprintf(cfg->access_log, sizeof(cfg->access_log), "%s", f.access_log);
    if (f.check) cfg->check_only = 1;
    for (size_t i = 0; i < f.nroutes; i++)
        if (apply_route(cfg, &f.routes[i]) < 0) goto out;
    if (f.strategy >= 0)
        for (size_t i = 0; i < cfg->nclusters; i++)
            if (!cfg->clusters[i].strategy_set)
                cfg->clusters[i].strategy = (enum strategy)f.strategy;

    char msg[512];
    struct errbuf e = {msg, sizeof(msg)};
    if (check_final(cfg, &e) < 0) {
        fprintf(errout, "proxy: %s\n", msg);
        goto out;
    }
    rc = 0;
out:
    free_routes(&f);
    return rc;
}

/* ---- summary ---------------------------------------------------------------- */

static const char *const desync_modes[] = {"defensive", "strictest", "monitor"};

const char *desync_mode_name(int mode) {
    return mode >= 0 && mode < 3 ? desync_modes[mode] : "?";
}

int desync_mode_parse(const char *s) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, desync_modes[i])) return i;
    return -1;
}

void config_print(const struct proxy_config *cfg, FILE *out) {
    fprintf(out, "listen %s\n", cfg->listen_text);
    fprintf(out, "threads %d\n", cfg->threads);
    fprintf(out, "engine %s\n", ev_engine_name((enum ev_engine)cfg->engine));
    fprintf(out, "log_level %s\n", level_name(cfg->log_level));
    if (cfg->config_path[0]) fprintf(out, "config %s\n", cfg->config_path);
    fprintf(out, "admin %s\n", cfg->admin_set ? cfg->admin_text : "off");
    fprintf(out, "access_log %s\n",
            !cfg->access_log[0]             ? "off"
            : !strcmp(cfg->access_log, "-") ? "- (stdout)"
                                            : cfg->access_log);
    fprintf(out,
            "limits max_header_bytes=%d max_headers=%d max_connections=%d min_body_rate_bps=%d\n",
            cfg->limits.max_header_bytes, cfg->limits.max_headers, cfg->limits.max_connections,
            cfg->limits.min_body_rate_bps);
    fprintf(out, "desync_mitigation %s\n", desync_mode_name(cfg->desync_mode));
    fprintf(out, "timeouts_ms connect=%d client_header=%d idle=%d backend_response=%d drain=%d\n",
            cfg->timeouts_ms.connect, cfg->timeouts_ms.client_header, cfg->timeouts_ms.idle,
            cfg->timeouts_ms.backend_response, cfg->timeouts_ms.drain);
    fprintf(out, "default_response %d %s (%zu bytes)\n", cfg->default_response.status,
            cfg->default_response.content_type, cfg->default_response.body_len);
    if (!cfg->nclusters) fprintf(out, "clusters none: every request gets the default response\n");
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const struct cluster_config *c = &cfg->clusters[i];
        fprintf(out, "cluster %s\n", c->name);
        fprintf(out, "  path_prefix %s%s\n", c->path_prefix, c->strip_prefix ? " (stripped)" : "");
        fprintf(out, "  strategy %s\n", strategy_name(c->strategy));
        fprintf(out, "  retries %d\n", c->retries);
        for (size_t j = 0; j < c->nbackends; j++) {
            const struct backend_addr *ba = &c->backends[j];
            int w = cluster_weight(c, ba->text, NULL);
            fprintf(out, "  backend %s%s", ba->text, ba->is_name ? " (DNS name)" : "");
            if (w != 1) fprintf(out, " weight=%d", w);
            fputc('\n', out);
        }
        if (c->outlier.enabled)
            fprintf(out,
                    "  outlier_detection consecutive_5xx=%d consecutive_gateway_failure=%d "
                    "interval_ms=%d base_ejection_ms=%d max_ejection_percent=%d\n",
                    c->outlier.consecutive_5xx, c->outlier.consecutive_gateway_failure,
                    c->outlier.interval_ms, c->outlier.base_ejection_ms,
                    c->outlier.max_ejection_percent);
        else
            fprintf(out, "  outlier_detection off\n");
        if (c->slow_start_ms) fprintf(out, "  slow_start_ms %d\n", c->slow_start_ms);
        if (c->sticky.enabled)
            fprintf(out, "  stickiness cookie=%s duration_s=%d secret=%s\n", c->sticky.cookie,
                    c->sticky.duration_s, c->sticky.secret[0] ? "(configured)" : "(generated)");
        if (c->discovery.enabled) {
            fprintf(out,
                    "  discovery ec2 region=%s port=%d interval_s=%d tags=", c->discovery.region,
                    c->discovery.port, c->discovery.interval_s);
            for (int t = 0; t < c->discovery.ntags; t++)
                fprintf(out, "%s%s=%s", t ? "," : "", c->discovery.tag_keys[t],
                        c->discovery.tag_values[t]);
            fputc('\n', out);
        }
        fprintf(out,
                "  health_check path=%s interval_ms=%d timeout_ms=%d healthy=%d unhealthy=%d "
                "expect=%d-%d\n",
                c->health.path, c->health.interval_ms, c->health.timeout_ms,
                c->health.healthy_threshold, c->health.unhealthy_threshold, c->health.expect_lo,
                c->health.expect_hi);
    }
    if (cfg->cloudwatch.enabled)
        fprintf(out, "cloudwatch namespace=%s region=%s interval_s=%d load_balancer=%s\n",
                cfg->cloudwatch.namespace_,
                cfg->cloudwatch.region[0] ? cfg->cloudwatch.region : "(from environment)",
                cfg->cloudwatch.interval_s, cfg->cloudwatch.load_balancer);
}
