#include "flags.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog = "lb";

void flags_init(const char *program) {
    prog = program;
}

void flags_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    exit(2);
}

unsigned long long flags_uint(const char *flag, const char *v, unsigned long long min,
                              unsigned long long max) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *v == '-' || *v == '+' || *end || errno || n < min || n > max)
        flags_die("%s: invalid value '%s' (expected an integer from %llu to %llu)", flag, v, min,
                  max);
    return n;
}

static int listed(const char *const *list, const char *name) {
    for (; list && *list; list++)
        if (!strcmp(*list, name)) return 1;
    return 0;
}

const char *flags_next(int argc, char **argv, int *i, const char *const *with_value,
                       const char *const *no_value, const char **val) {
    static char name[64];
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) return NULL;
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof(name)) flags_die("unknown flag '%s'", arg);
    memcpy(name, arg, len);
    name[len] = 0;
    *val = NULL;
    if (listed(no_value, name)) {
        if (eq) flags_die("%s takes no value", name);
        return name;
    }
    if (!listed(with_value, name)) flags_die("unknown flag '%s'", name);
    if (eq)
        *val = eq + 1;
    else if (*i + 1 < argc)
        *val = argv[++*i];
    else
        flags_die("%s needs a value", name);
    return name;
}
