/* Hand-written formatting for hot paths (responses, log lines, metrics),
 * where printf's parsing of its format costs more than the output: each
 * writes at p, which must have room, and returns the end. */
#ifndef LB_FMT_H
#define LB_FMT_H

#include <stdint.h>
#include <string.h>

static inline char *fmt_put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

/* A string literal, without its NUL. */
#define FMT_LIT(p, lit) fmt_put((p), (lit), sizeof(lit) - 1)

/* v in decimal: at most 20 bytes. */
static inline char *fmt_u64(char *p, uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

#endif
