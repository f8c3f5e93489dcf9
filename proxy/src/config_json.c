/* The --config file: JSON (cJSON) read against the tables of config.c. Every
 * object is checked for unknown and repeated fields; every error names the
 * path of the field, e.g. "clusters[0].health_check.interval_ms". */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "config_table.h"

#define MAX_TAGS 8
#define PATH_BUF 320

/* "path.key", or "key" at the top level. */
static void join(char *out, size_t n, const char *path, const char *key) {
    snprintf(out, n, "%s%s%s", path, path[0] ? "." : "", key);
}

/* How a JSON value looks, for "expected X, got Y" messages. */
static const char *describe(const cJSON *it, char *buf, size_t n) {
    if (cJSON_IsString(it)) return describe_text(it->valuestring, buf, n);
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

static int read_object(const struct table *t, const char *prefix, const cJSON *o, const char *path,
                       void *obj, unsigned char *given, struct errbuf *e);

/* One value; t and given only for a section. */
static int read_field(const struct table *t, const struct field *f, const cJSON *it,
                      const char *path, void *obj, unsigned char *given, struct errbuf *e) {
    char g[64];
    switch (f->type) {
    case FT_SECTION:
        if ((f->flags & F_OFFABLE) && (cJSON_IsFalse(it) || cJSON_IsNull(it))) {
            field_mark_given(f, obj, 0);
            return 0;
        }
        field_mark_given(f, obj, 1);
        return read_object(t, f->key, it, path, obj, given, e);
    case FT_CUSTOM: return f->custom->read(it, path, obj, e);
    case FT_INT:
        if (cJSON_IsNumber(it)) return field_set_number(f, obj, it->valuedouble, path, e);
        break;
    case FT_BOOL:
        if (cJSON_IsBool(it)) return *(int *)field_ptr(f, obj) = cJSON_IsTrue(it), 0;
        break;
    default:
        if (!cJSON_IsString(it)) break;
        if (field_set_text(f, obj, it->valuestring, path, e)) return -1;
        field_mark_given(f, obj, 1);
        return 0;
    }
    return field_expected(f, path, describe(it, g, sizeof(g)), e);
}

/* The members of o, the object at path whose rows in t are under prefix. */
static int read_object(const struct table *t, const char *prefix, const cJSON *o, const char *path,
                       void *obj, unsigned char *given, struct errbuf *e) {
    char g[64];
    if (!cJSON_IsObject(o))
        return errf(e, "%s: expected an object, got %s", path, describe(o, g, sizeof(g)));
    for (const cJSON *m = o->child; m; m = m->next) {
        char p[PATH_BUF], key[PATH_BUF];
        join(p, sizeof(p), path, m->string);
        join(key, sizeof(key), prefix, m->string);
        const struct field *f = strchr(m->string, '.') ? NULL : table_find(t, key, strlen(key));
        if (!f) return errf(e, "%s: unknown field", p);
        for (const cJSON *d = o->child; d != m; d = d->next)
            if (!strcmp(d->string, m->string)) return errf(e, "%s: duplicate field", p);
        given[f - t->f] = 1;
        if (read_field(t, f, m, p, obj, given, e)) return -1;
    }
    return 0;
}

/* ---- the rows with readers of their own ----------------------------------- */

static int read_cluster(const cJSON *it, const char *path, struct cluster_config *c,
                        struct errbuf *e) {
    unsigned char given[MAX_ROWS] = {0};
    cluster_defaults(c);
    return read_object(&cluster_table, "", it, path, c, given, e) ||
           cluster_table.finish(c, given, path, e);
}

static int unique_cluster(const struct cluster_config *c, size_t i, const char *path,
                          struct errbuf *e) {
    for (size_t j = 0; j < i; j++) {
        if (!strcmp(c[j].path_prefix, c[i].path_prefix))
            return errf(e, "%s[%zu].path_prefix: duplicate prefix \"%s\" (also %s[%zu])", path, i,
                        c[i].path_prefix, path, j);
        if (!strcmp(c[j].name, c[i].name))
            return errf(e, "%s[%zu].name: duplicate name \"%s\" (also %s[%zu])", path, i, c[i].name,
                        path, j);
    }
    return 0;
}

int json_read_clusters(const cJSON *arr, const char *path, void *obj, struct errbuf *e) {
    struct proxy_config *cfg = obj;
    char p[PATH_BUF], g[64];
    if (!cJSON_IsArray(arr))
        return errf(e, "%s: expected an array, got %s", path, describe(arr, g, sizeof(g)));
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    struct cluster_config *c = calloc(n ? n : 1, sizeof(*c));
    if (!c) return errf(e, "%s: out of memory", path);
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (read_cluster(it, p, &c[i], e) || unique_cluster(c, i, path, e)) {
            free_clusters(c, n);
            return -1;
        }
    }
    cfg->clusters = c; /* the caller frees the clusters this replaces */
    cfg->nclusters = n;
    return 0;
}

int json_read_backends(const cJSON *arr, const char *path, void *obj, struct errbuf *e) {
    struct cluster_config *c = obj;
    char p[PATH_BUF], g[64];
    if (!cJSON_IsArray(arr))
        return errf(e, "%s: expected an array of \"HOST:PORT\" strings, got %s", path,
                    describe(arr, g, sizeof(g)));
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    struct backend_addr *b = calloc(n ? n : 1, sizeof(*b));
    if (!b) return errf(e, "%s: out of memory", path);
    free(c->backends);
    c->backends = b;
    c->nbackends = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        const char *why;
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
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

int json_read_weights(const cJSON *o, const char *path, void *obj, struct errbuf *e) {
    struct cluster_config *c = obj;
    static const struct field weight = {.key = "weight", .type = FT_INT, .lo = 0, .hi = 1000};
    char p[PATH_BUF], g[64];
    if (!cJSON_IsObject(o))
        return errf(e, "%s: expected an object, got %s", path, describe(o, g, sizeof(g)));
    struct backend_weight *w = calloc((size_t)cJSON_GetArraySize(o) + 1, sizeof(*w));
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
        if (read_field(NULL, &weight, it, p, &w[c->nweights].weight, NULL, e)) return -1;
        memcpy(w[c->nweights].backend, ba.text, sizeof(ba.text));
        c->nweights++;
    }
    return 0;
}

int json_read_tags(const cJSON *it, const char *p, void *obj, struct errbuf *e) {
    struct ec2_discovery *d = &((struct cluster_config *)obj)->discovery;
    static const struct field value = {
        .key = "tag", .type = FT_STR, .size = sizeof(d->tag_values[0])};
    char g[64];
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
        if (read_field(NULL, &value, t, tp, d->tag_values[d->ntags], NULL, e)) return -1;
        memcpy(d->tag_keys[d->ntags], t->string, strlen(t->string) + 1);
        d->ntags++;
    }
    return 0;
}

int json_read_body(const cJSON *it, const char *path, void *obj, struct errbuf *e) {
    struct proxy_config *cfg = obj;
    char g[64];
    if (!cJSON_IsString(it))
        return errf(e, "%s: expected a string, got %s", path, describe(it, g, sizeof(g)));
    char *body = strdup(it->valuestring);
    if (!body) return errf(e, "%s: out of memory", path);
    cfg->default_response.body = body; /* the caller frees the body this replaces */
    cfg->default_response.body_len = strlen(body);
    return 0;
}

/* ---- the whole text ----------------------------------------------------------- */

/* Frees what cfg holds that keep does not share. */
static void free_unshared(struct proxy_config *cfg, const struct proxy_config *keep) {
    if (cfg->default_response.body != keep->default_response.body) free(cfg->default_response.body);
    if (cfg->clusters != keep->clusters) free_clusters(cfg->clusters, cfg->nclusters);
}

static int parse_error(const char *json, const char *end, struct errbuf *e) {
    int line = 1, col = 1;
    if (!end) return errf(e, "out of memory parsing JSON");
    for (const char *s = json; s < end && *s; s++) {
        col = *s == '\n' ? 1 : col + 1;
        line += *s == '\n';
    }
    return errf(e, "invalid JSON at line %d, column %d", line, col);
}

int json_parse(struct proxy_config *cfg, const char *json, int final, struct errbuf *e) {
    unsigned char given[MAX_ROWS] = {0};
    char g[64];
    const char *end = NULL;
    if (!json) return errf(e, "no configuration text");
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) return parse_error(json, end, e);
    struct proxy_config t = *cfg;
    int rc = -1;
    if (!cJSON_IsObject(root))
        errf(e, "expected a JSON object at the top level, got %s", describe(root, g, sizeof(g)));
    else if (!read_object(&config_table, "", root, "", &t, given, e))
        rc = final ? check_final(&t, e) : 0;
    cJSON_Delete(root);
    if (rc) {
        free_unshared(&t, cfg);
        return -1;
    }
    free_unshared(cfg, &t);
    *cfg = t;
    return 0;
}

int config_parse_json(struct proxy_config *cfg, const char *json, char *err, size_t err_len) {
    struct errbuf e = {err, err_len};
    if (err && err_len) err[0] = 0;
    return json_parse(cfg, json, 1, &e);
}
