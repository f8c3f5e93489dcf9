/* --check's summary: every row of config.c's tables, in their order. A
 * top-level setting is a line "key value", a section one line
 * "section key=value ...", a cluster a block under "cluster NAME". */
#include <string.h>

#include "config_table.h"

static void print_value(const struct field *f, const void *obj, FILE *out) {
    const int *i = field_ptr(f, obj);
    const char *s = field_ptr(f, obj);
    switch (f->type) {
    case FT_INT: fprintf(out, "%d", *i); break;
    case FT_BOOL: fputs(*i ? "true" : "false", out); break;
    case FT_CHOICE: fputs(f->choices->name(*i), out); break;
    case FT_STATUS: fprintf(out, "%d-%d", i[0], i[1]); break;
    case FT_CUSTOM: f->custom->print(obj, out, NULL); break;
    case FT_ADDR: fputs(field_given(f, obj) ? field_text(f, obj) : f->unset, out); break;
    default:
        if (s[0] && (f->flags & F_SECRET)) s = "(configured)";
        fputs(s[0] || !f->unset ? s : f->unset, out);
    }
}

/* The rows directly under section row k, on one line. */
static void print_section(const struct table *t, size_t k, const void *obj, FILE *out,
                          const char *indent) {
    const struct field *sec = &t->f[k];
    size_t len = strlen(sec->key);
    int any = 0;
    for (size_t i = k + 1; i < t->n; i++) {
        const char *key = t->f[i].key;
        if (strncmp(key, sec->key, len) || key[len] != '.') break;
        if (t->f[i].type == FT_SECTION || strchr(key + len + 1, '.'))
            continue; /* a section of its own */
        if (!any++) fprintf(out, "%s%s", indent, sec->key);
        if (!field_given(sec, obj)) break;
        fprintf(out, " %s%s", sec->flags & F_VALUES ? "" : key + len + 1,
                sec->flags & F_VALUES ? "" : "=");
        print_value(&t->f[i], obj, out);
    }
    if (any && !field_given(sec, obj)) fprintf(out, " %s", sec->unset);
    if (any) fputc('\n', out);
}

void print_table(const struct table *t, const void *obj, FILE *out, const char *indent) {
    for (size_t i = 0; i < t->n; i++) {
        const struct field *f = &t->f[i];
        if (f->type == FT_SECTION) {
            print_section(t, i, obj, out, indent);
        } else if (strchr(f->key, '.')) {
            continue; /* printed with its section */
        } else if (f->type == FT_CUSTOM) {
            f->custom->print(obj, out, indent);
        } else {
            fprintf(out, "%s%s ", indent, f->key);
            print_value(f, obj, out);
            fputc('\n', out);
        }
    }
}

void print_clusters(const void *obj, FILE *out, const char *indent) {
    const struct proxy_config *cfg = obj;
    if (!cfg->nclusters)
        fprintf(out, "%sclusters none: every request gets the default response\n", indent);
    for (size_t i = 0; i < cfg->nclusters; i++) {
        fprintf(out, "%scluster %s\n", indent, cfg->clusters[i].name);
        print_table(&cluster_table, &cfg->clusters[i], out, "  ");
    }
}

void print_backends(const void *obj, FILE *out, const char *indent) {
    const struct cluster_config *c = obj;
    for (size_t j = 0; j < c->nbackends; j++)
        fprintf(out, "%sbackend %s%s\n", indent, c->backends[j].text,
                c->backends[j].is_name ? " (DNS name)" : "");
}

void print_weights(const void *obj, FILE *out, const char *indent) {
    const struct cluster_config *c = obj;
    if (!c->nweights) return;
    fprintf(out, "%sweights", indent);
    for (size_t j = 0; j < c->nweights; j++)
        fprintf(out, " %s=%d", c->weights[j].backend, c->weights[j].weight);
    fputc('\n', out);
}

void print_tags(const void *obj, FILE *out, const char *indent) {
    const struct ec2_discovery *d = &((const struct cluster_config *)obj)->discovery;
    (void)indent;
    for (int t = 0; t < d->ntags; t++)
        fprintf(out, "%s%s=%s", t ? "," : "", d->tag_keys[t], d->tag_values[t]);
}

void print_body(const void *obj, FILE *out, const char *indent) {
    (void)indent;
    fprintf(out, "(%zu bytes)", ((const struct proxy_config *)obj)->default_response.body_len);
}

void config_print(const struct proxy_config *cfg, FILE *out) {
    if (cfg->config_path[0]) fprintf(out, "config %s\n", cfg->config_path);
    print_table(&config_table, cfg, out, "");
}
