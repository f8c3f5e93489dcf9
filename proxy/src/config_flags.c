/* The command line (common/flags): the flags of config.c's table, --route,
 * --config, --strategy and the commands. Flags override the file wherever
 * --config appears; each value is checked as it is read. Every message goes to
 * one sink and names its flag; config_load writes it as one line. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_table.h"
#include "flags.h"

#ifndef LB_VERSION
#define LB_VERSION "0.0.0"
#endif

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_FLAGS        32

/* The flags that are not a row of the table. */
static const struct {
    const char *name, *arg, *help;
} commands[] = {
    {"--route", "PREFIX=HOST:PORT[,HOST:PORT...]",
     "send PREFIX (on a segment boundary) to these backends; repeatable"},
    {"--config", "FILE", "read the JSON configuration; the other flags override it"},
    {"--strategy", "NAME", "fastest, peak-ewma (default), least-outstanding, round-robin, random"},
    {"--check", NULL, "validate the configuration, print what would run, exit"},
    {"--version", NULL, "print the version and exit"},
    {"--help", NULL, "print this help and exit"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage_line(FILE *out, const char *name, const char *arg, const char *help) {
    char left[64];
    snprintf(left, sizeof(left), "%s%s%s", name, arg ? " " : "", arg ? arg : "");
    fprintf(out, "  %-42s %s\n", left, help);
}

static void usage(FILE *out) {
    fprintf(out, "usage: proxy [options]\n");
    for (size_t i = 0; i < config_table.n; i++)
        if (config_table.f[i].flag)
            usage_line(out, config_table.f[i].flag, config_table.f[i].flag_arg,
                       config_table.f[i].help);
    for (size_t i = 0; i < NCOMMANDS; i++)
        usage_line(out, commands[i].name, commands[i].arg, commands[i].help);
}

struct flag_values {
    const char *config, *value[MAX_ROWS]; /* value: per row of config_table, NULL when not given */
    int check, strategy;                  /* strategy: -1 when not given */
    struct cluster_config *routes;        /* --route: defaults, a prefix and backends */
    size_t nroutes;
};

/* ---- --route PREFIX=HOST:PORT[,HOST:PORT...] --------------------------------- */

static int route_prefix(const char *v, const char *eq, const struct flag_values *f,
                        struct cluster_config *r, struct errbuf *e) {
    if (!eq || eq == v || !eq[1])
        return errf(e, "--route: expected PREFIX=HOST:PORT[,HOST:PORT...], got \"%s\"", v);
    size_t plen = (size_t)(eq - v);
    if (plen >= sizeof(r->path_prefix))
        return errf(e, "--route: prefix too long (at most %zu bytes)", sizeof(r->path_prefix) - 1);
    memcpy(r->path_prefix, v, plen);
    r->prefix_len = plen;
    const char *why = prefix_problem(r->path_prefix);
    if (why) return errf(e, "--route: prefix %s, got \"%s\"", why, r->path_prefix);
    for (size_t i = 0; i < f->nroutes; i++)
        if (!strcmp(f->routes[i].path_prefix, r->path_prefix))
            return errf(e, "--route: duplicate prefix \"%s\"", r->path_prefix);
    return 0;
}

/* The backend of len bytes at s, appended to r's. */
static int route_backend(const char *s, size_t len, struct cluster_config *r, struct errbuf *e) {
    struct backend_addr *b = r->backends;
    char text[sizeof(b[0].text) + 1];
    const char *why = len ? "too long" : "expected HOST:PORT";
    snprintf(text, sizeof(text), "%.*s", (int)(len < 80 ? len : 80), s);
    if (!len || len >= sizeof(text) || parse_backend(text, &b[r->nbackends], &why) < 0)
        return errf(e, "--route %s: bad address \"%s\": %s", r->path_prefix, text, why);
    for (size_t j = 0; j < r->nbackends; j++)
        if (same_backend(&b[j], &b[r->nbackends]))
            return errf(e, "--route %s: duplicate backend \"%s\"", r->path_prefix, text);
    r->nbackends++;
    return 0;
}

static int parse_route(const char *v, struct flag_values *f, struct errbuf *e) {
    const char *eq = strchr(v, '=');
    struct cluster_config r;
    cluster_defaults(&r);
    if (route_prefix(v, eq, f, &r, e)) return -1;
    size_t cap = 1;
    for (const char *s = eq + 1; *s; s++)
        cap += *s == ',';
    struct cluster_config *grown = realloc(f->routes, (f->nroutes + 1) * sizeof(*f->routes));
    if (grown) f->routes = grown;
    if (!grown || !(r.backends = calloc(cap, sizeof(*r.backends))))
        return errf(e, "--route: out of memory");
    for (const char *s = eq + 1;; s++) {
        size_t len = strcspn(s, ",");
        if (route_backend(s, len, &r, e)) {
            free(r.backends);
            return -1;
        }
        s += len;
        if (!*s) break;
    }
    f->routes[f->nroutes++] = r;
    return 0;
}

/* Replaces a configured cluster's backends, or adds the route's cluster. */
static int apply_route(struct proxy_config *cfg, struct cluster_config *r, struct errbuf *e) {
    struct cluster_config *grown;
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].path_prefix, r->path_prefix)) {
            free(cfg->clusters[i].backends);
            cfg->clusters[i].backends = r->backends;
            cfg->clusters[i].nbackends = r->nbackends;
            r->backends = NULL;
            return 0;
        }
    derive_name(r->path_prefix, r->name, sizeof(r->name));
    const char *why = name_problem(r->name);
    if (why)
        return errf(e, "--route %s: cluster name \"%s\" %s (name it in a --config file)",
                    r->path_prefix, r->name, why);
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, r->name))
            return errf(e,
                        "--route %s: cluster name \"%s\" is already used by the cluster for "
                        "\"%s\"",
                        r->path_prefix, r->name, cfg->clusters[i].path_prefix);
    if (!(grown = realloc(cfg->clusters, (cfg->nclusters + 1) * sizeof(*cfg->clusters))))
        return errf(e, "--route: out of memory");
    cfg->clusters = grown;
    cfg->clusters[cfg->nclusters++] = *r;
    r->backends = NULL; /* moved */
    return 0;
}

/* ---- the scan ------------------------------------------------------------------ */

static void flag_lists(const char **with_value, const char **no_value) {
    size_t w = 0, n = 0;
    for (size_t i = 0; i < config_table.n; i++)
        if (config_table.f[i].flag) with_value[w++] = config_table.f[i].flag;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (commands[i].arg)
            with_value[w++] = commands[i].name;
        else
            no_value[n++] = commands[i].name;
    with_value[w] = no_value[n] = NULL;
}

/* A flag's value, checked now (so that the message names the flag) and
 * applied once the file is read. */
static int take_value(const char *name, const char *v, struct flag_values *f, struct errbuf *e) {
    struct proxy_config scratch = {0}; /* where a value is checked before the file is read */
    if (!*v) return errf(e, "%s: missing value", name);
    if (!strcmp(name, "--route")) return parse_route(v, f, e);
    if (!strcmp(name, "--config")) {
        f->config = v;
        if (strlen(v) < sizeof(scratch.config_path)) return 0;
        return errf(e, "--config: expected a file name of 1-%zu bytes",
                    sizeof(scratch.config_path) - 1);
    }
    if (!strcmp(name, "--strategy")) {
        f->strategy = strategy_parse(v);
        if (f->strategy >= 0) return 0;
        return errf(e, "--strategy: expected " STRATEGY_NAMES ", got \"%s\"", v);
    }
    for (size_t i = 0; i < config_table.n; i++) {
        const struct field *row = &config_table.f[i];
        if (!row->flag || strcmp(row->flag, name)) continue;
        f->value[i] = v;
        return field_set_text(row, &scratch, v, name, e);
    }
    return 0;
}

/* 0 to run, 1 when --help or --version printed, 2 with e filled. */
static int scan_args(int argc, char **argv, struct flag_values *f, struct errbuf *e) {
    const char *with_value[MAX_FLAGS], *no_value[MAX_FLAGS], *name, *v;
    char err[256];
    flag_lists(with_value, no_value);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = flags_scan(argc, argv, &i, with_value, no_value, &name, &v, err, sizeof(err));
        if (r <= 0) {
            if (r < 0)
                errf(e, "%s (see --help)", err);
            else if (a[0] == '-' && a[1] && a[1] != '-')
                errf(e, "unknown option %s (see --help)", a);
            else
                errf(e, "unexpected argument \"%s\" (see --help)", a);
            return 2;
        }
        if (!strcmp(name, "--version")) {
            printf("proxy %s\n", LB_VERSION);
            return 1;
        }
        if (!strcmp(name, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(name, "--check"))
            f->check = 1;
        else if (take_value(name, v, f, e))
            return 2;
    }
    return 0;
}

/* ---- the file -------------------------------------------------------------------- */

/* The whole file, NUL-terminated; NULL with *err an errno value. */
static char *read_file(const char *path, int *err) {
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = 0;
    *err = f ? 0 : errno;
    if (f && fstat(fileno(f), &st) == 0 && st.st_size > MAX_CONFIG_BYTES)
        *err = EFBIG;
    else if (f && (n = getdelim(&buf, &cap, '\0', f)) > 0 && !buf[n - 1])
        *err = EILSEQ; /* a NUL byte: not a JSON text */
    else if (f && n < 0 && ferror(f))
        *err = errno ? errno : EIO;
    if (f) fclose(f);
    if (!*err && n < 0) { /* an empty file */
        free(buf);
        if (!(buf = calloc(1, 1))) *err = ENOMEM;
    }
    if (*err) free(buf);
    return *err ? NULL : buf;
}

static int load_file(struct proxy_config *cfg, const char *path, struct errbuf *e) {
    int err = 0;
    char *text = read_file(path, &err), msg[512] = "";
    struct errbuf je = {msg, sizeof(msg)};
    if (!text)
        return errf(e, "config %s: %s", path,
                    err == EILSEQ ? "contains a NUL byte" : strerror(err));
    int r = json_parse(cfg, text, 0, &je);
    free(text);
    if (r < 0) return errf(e, "config %s: %s", path, msg);
    snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", path);
    return 0;
}

/* ---- the whole -------------------------------------------------------------------- */

static int load(struct proxy_config *cfg, int argc, char **argv, struct flag_values *f,
                struct errbuf *e) {
    struct errbuf none = {NULL, 0};
    int rc = scan_args(argc, argv, f, e);
    if (rc) return rc;
    if (f->config && load_file(cfg, f->config, e)) return 2;
    for (size_t i = 0; i < config_table.n; i++)
        if (f->value[i]) {
            field_set_text(&config_table.f[i], cfg, f->value[i], "", &none); /* checked */
            field_mark_given(&config_table.f[i], cfg, 1);
        }
    cfg->check_only = f->check;
    for (size_t i = 0; i < f->nroutes; i++)
        if (apply_route(cfg, &f->routes[i], e)) return 2;
    for (size_t i = 0; f->strategy >= 0 && i < cfg->nclusters; i++)
        if (!cfg->clusters[i].strategy_set) cfg->clusters[i].strategy = (enum strategy)f->strategy;
    return check_final(cfg, e) ? 2 : 0;
}

int config_read(struct proxy_config *cfg, int argc, char **argv, char *err, size_t errlen) {
    struct flag_values f = {.strategy = -1};
    struct errbuf e = {err, errlen};
    if (err && errlen) err[0] = 0;
    config_defaults(cfg);
    int rc = load(cfg, argc, argv, &f, &e);
    free_clusters(f.routes, f.nroutes);
    return rc;
}

int config_load(struct proxy_config *cfg, int argc, char **argv, FILE *errors) {
    char msg[768];
    int rc = config_read(cfg, argc, argv, msg, sizeof(msg));
    if (rc == 2) fprintf(errors, "proxy: %s\n", msg);
    return rc;
}

int config_from_args(struct proxy_config *cfg, int argc, char **argv) {
    return config_load(cfg, argc, argv, stderr);
}
