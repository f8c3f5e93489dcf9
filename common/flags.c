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

int flags_int(const char *v, long long min, long long max, long long *out) {
    if (!((*v >= '0' && *v <= '9') || (*v == '-' && min < 0))) return -1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end || errno || n < min || n > max) return -1;
    *out = n;
    return 0;
}

unsigned long long flags_uint(const char *flag, const char *v, unsigned long long min,
                              unsigned long long max) {
    long long n;
    if (flags_int(v, (long long)min, (long long)max, &n) < 0)
        flags_die("%s: expected an integer %llu-%llu, got \"%s\"", flag, min, max, v);
    return (unsigned long long)n;
}

static int listed(const char *const *list, const char *name) {
    for (; list && *list; list++)
        if (!strcmp(*list, name)) return 1;
    return 0;
}

int flags_scan(int argc, char **argv, int *i, const char *const *with_value,
               const char *const *no_value, const char **name, const char **val, char *err,
               size_t errlen) {
    static char buf[64];
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) return 0;
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    snprintf(buf, sizeof(buf), "%.*s", (int)len, arg);
    *name = buf;
    *val = NULL;
    if (len >= sizeof(buf) || (!listed(no_value, buf) && !listed(with_value, buf))) {
        snprintf(err, errlen, "unknown option %.*s", (int)(len < 200 ? len : 200), arg);
        return -1;
    }
    if (listed(no_value, buf)) {
        if (!eq) return 1;
        snprintf(err, errlen, "%s takes no value", buf);
        return -1;
    }
    if (eq)
        *val = eq + 1;
    else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2))
        *val = argv[++*i];
    else {
        snprintf(err, errlen, "%s: missing value", buf);
        return -1;
    }
    return 1;
}

const char *flags_next(int argc, char **argv, int *i, const char *const *with_value,
                       const char *const *no_value, const char **val) {
    const char *name;
    char err[256];
    int r = flags_scan(argc, argv, i, with_value, no_value, &name, val, err, sizeof(err));
    if (r < 0) flags_die("%s", err);
    return r ? name : NULL;
}
