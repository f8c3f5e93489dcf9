/* The configuration's schema, shared by config.c (defaults, validation, the
 * reload diff), config_json.c, config_flags.c and config_print.c. Each setting
 * is one row: its JSON path, type, range, default, whether a reload applies it
 * and its flag, as nginx's ngx_command_t and HAProxy's keyword lists are. */
#ifndef LB_CONFIG_TABLE_H
#define LB_CONFIG_TABLE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* Where a bad value is reported: "NAME: what is wrong", NAME the field's
 * path ("clusters[0].health_check.interval_ms") or its flag ("--threads"). */
struct errbuf {
    char *s;
    size_t len;
};
int errf(struct errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum field_type {
    FT_INT,     /* int within [lo, hi] */
    FT_BOOL,    /* int, 0 or 1 */
    FT_STR,     /* char[size]; check says what is wrong with a value, if anything */
    FT_CHOICE,  /* int: one of choices */
    FT_ADDR,    /* struct net_addr, with its canonical text */
    FT_STATUS,  /* int[2]: "NNN" or "NNN-NNN", within 100-599 */
    FT_SECTION, /* an object of the rows whose key it prefixes */
    FT_CUSTOM,  /* read, set, printed and compared by its own functions */
};

#define F_RELOAD  1u /* a SIGHUP applies a change (else it needs a restart) */
#define F_SECRET  2u /* never printed or echoed in a message */
#define F_OFFABLE 4u /* FT_SECTION: false or null turns it off */
#define F_VALUES  8u /* FT_SECTION: printed as values alone, without their keys */

struct choices {
    int (*parse)(const char *); /* -1 when s names none */
    const char *(*name)(int);
    const char *list; /* for messages: "auto, uring or epoll" */
};

/* A row whose value is not one of the types above; obj is the whole struct. */
struct custom {
    int (*read)(const cJSON *it, const char *path, void *obj, struct errbuf *e);
    int (*set)(void *obj, const char *text); /* the default; NULL: none */
    /* Whole lines at the top of a table; the value alone (indent NULL) in a section's line. */
    void (*print)(const void *obj, FILE *out, const char *indent);
    int (*equal)(const void *a, const void *b); /* NULL: never compared (F_RELOAD rows) */
};

/* Offsets of optional members are stored plus one: 0 means none. */
#define OPT(type, member) (offsetof(type, member) + 1)

struct field {
    const char *key; /* JSON path from the table's root: "timeouts_ms.connect" */
    enum field_type type;
    size_t off, size; /* where it lives in its struct, and its size (strings) */
    int lo, hi;       /* FT_INT */
    const char *def;  /* the default, written as a flag's value; NULL: zero (or computed) */
    unsigned flags;
    size_t given;      /* OPT: an int set to 1 when the JSON or a flag gives it (a section: on) */
    size_t text;       /* OPT, FT_ADDR: where its canonical text goes (char[80]) */
    const char *unset; /* printed for an empty string, an unset address or a section off */
    const char *host;  /* FT_ADDR: the host of a bare port */
    const struct choices *choices;
    const char *(*check)(const char *s); /* FT_STR */
    const struct custom *custom;
    const char *flag, *flag_arg, *help; /* its command-line flag, if any */
};

#define MAX_ROWS 64 /* per table: the readers' "given" bytes, the flags' values */

struct table {
    const struct field *f;
    size_t n;
    /* After a JSON object of this table was read: cross-field checks. given
     * has one byte per row, set for each row the JSON held. */
    int (*finish)(void *obj, const unsigned char *given, const char *path, struct errbuf *e);
};

extern const struct table config_table;  /* struct proxy_config */
extern const struct table cluster_table; /* struct cluster_config */

/* config.c */
const struct field *table_find(const struct table *t, const char *key, size_t len);
void table_defaults(const struct table *t, void *obj);
/* Where f lives in obj (like strchr, the const of obj is the caller's to keep). */
void *field_ptr(const struct field *f, const void *obj);
char *field_text(const struct field *f, const void *obj); /* FT_ADDR's text */
int field_given(const struct field *f, const void *obj);  /* 1 as well when f has no given */
/* A value given as text (a flag, a default, a JSON string) set into obj; else
 * -1 with e naming name. */
int field_set_text(const struct field *f, void *obj, const char *text, const char *name,
                   struct errbuf *e);
int field_set_number(const struct field *f, void *obj, double v, const char *name,
                     struct errbuf *e);
int field_expected(const struct field *f, const char *name, const char *got, struct errbuf *e);
void field_mark_given(const struct field *f, void *obj, int on);
int field_equal(const struct field *f, const void *a, const void *b);
const char *describe_text(const char *s, char *buf, size_t n);
const char *prefix_problem(const char *p);
const char *name_problem(const char *name);
void derive_name(const char *prefix, char *out, size_t n);
int parse_backend(const char *s, struct backend_addr *b, const char **why);
int same_backend(const struct backend_addr *a, const struct backend_addr *b);
void cluster_defaults(struct cluster_config *c);
void free_clusters(struct cluster_config *c, size_t n);
int check_final(const struct proxy_config *cfg, struct errbuf *e);

/* config_json.c: the readers of the custom rows */
int json_read_clusters(const cJSON *it, const char *path, void *obj, struct errbuf *e);
int json_read_backends(const cJSON *it, const char *path, void *obj, struct errbuf *e);
int json_read_weights(const cJSON *it, const char *path, void *obj, struct errbuf *e);
int json_read_tags(const cJSON *it, const char *path, void *obj, struct errbuf *e);
int json_read_body(const cJSON *it, const char *path, void *obj, struct errbuf *e);
/* Parses json on top of cfg; on error cfg is left exactly as it was. */
int json_parse(struct proxy_config *cfg, const char *json, int final, struct errbuf *e);

/* config_print.c */
void print_table(const struct table *t, const void *obj, FILE *out, const char *indent);
void print_clusters(const void *obj, FILE *out, const char *indent);
void print_backends(const void *obj, FILE *out, const char *indent);
void print_weights(const void *obj, FILE *out, const char *indent);
void print_tags(const void *obj, FILE *out, const char *indent);
void print_body(const void *obj, FILE *out, const char *indent);

#endif
